"""``pgtrail partitions``: create daily partitions ahead and rehome stray rows."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import psycopg
import typer

from pgtrail import db
from pgtrail.cli.app import app, console, settings_of
from pgtrail.ops import partitions
from pgtrail.tables import LOG_TABLES


@app.command("partitions")
def partitions_command(
    ctx: typer.Context,
    days_ahead: Annotated[
        int, typer.Option(min=1, max=366, help="Days after today to cover")
    ] = partitions.DAYS_AHEAD,
) -> None:
    """Create the daily partitions for today and the days ahead (run it daily from cron)."""
    settings = settings_of(ctx)
    with db.connect(settings) as conn:
        created = partitions.ensure_ahead(conn, days_ahead)
        created += _rehome_stray_rows(conn)
        ahead = partitions.days_ahead(conn)
    console.print(f"{created} partition(s) created; covered {ahead} day(s) ahead")


def _rehome_stray_rows(conn: psycopg.Connection[Any]) -> int:
    """Gives rows sitting in DEFAULT partitions a day partition when their day is in range."""
    created = 0
    for table in LOG_TABLES:
        row = conn.execute(
            f"SELECT min(created_at), max(created_at) FROM {table}_default"
        ).fetchone()
        if not row or row[0] is None:
            continue
        first: dt.datetime = row[0]
        last: dt.datetime = row[1]
        window = partitions.clamp_window(
            first.astimezone(dt.UTC).date(), last.astimezone(dt.UTC).date()
        )
        if window:
            created += partitions.ensure(conn, *window)
    return created
