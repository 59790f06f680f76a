"""``pgtrail rollup``: merge the rollups' partial rows, or rebuild a range from raw rows."""

from __future__ import annotations

from typing import Annotated

import typer

from pgtrail import db
from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.errors import PgtrailError
from pgtrail.ops import rollups
from pgtrail.read.reports import parse_timestamptz


@app.command("rollup")
def rollup_command(
    ctx: typer.Context,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Recompute the hours of --since..--until from raw rows instead"
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="With --rebuild: start of the range, e.g. 7d or 2026-11-01"),
    ] = None,
    until: Annotated[
        str, typer.Option(help="With --rebuild: end of the range (exclusive)")
    ] = "now",
) -> None:
    """Refresh the rollups (run it every few minutes from cron or pg_cron).

    Reports are exact without it: every inserted call is in the rollups at once. It merges
    each hour's partial rows so reports read one row per hour and key.
    """
    settings = settings_of(ctx)
    if since is not None and not rebuild:
        fail("--since and --until go with --rebuild")
    try:
        with db.connect(settings) as conn:
            if rebuild:
                if since is None:
                    fail("--rebuild needs --since (and optionally --until)")
                run = rollups.rebuild(conn, parse_timestamptz(since), parse_timestamptz(until))
            else:
                run = rollups.compact(conn)
            held = rollups.state(conn)
    except PgtrailError as exc:
        fail(str(exc))
    if run.rebuilt_from is not None and run.rebuilt_until is not None:
        console.print(
            f"rebuilt {run.rebuilt_from:%Y-%m-%d %H:%M} to {run.rebuilt_until:%Y-%m-%d %H:%M} "
            f"UTC from raw rows: {run.rows_written} rollup row(s) in {run.elapsed_ms:.0f} ms",
            highlight=False,
        )
    else:
        console.print(
            f"merged into {run.rows_written} rollup row(s) in {run.elapsed_ms:.0f} ms",
            highlight=False,
        )
    first = f"{held.first_hour:%Y-%m-%d %H:%M} UTC" if held.first_hour else "none"
    console.print(
        f"rollups: {held.rows} row(s), {held.partial_rows} partial, from {first}, "
        f"{held.total_bytes / 1e6:.1f} MB",
        highlight=False,
    )
