"""``pgtrail retention``: drop partitions past the window, blank bodies past a shorter one."""

from __future__ import annotations

from typing import Annotated

import typer

from pgtrail import db
from pgtrail.cli.app import app, console, err_console, fail, settings_of
from pgtrail.errors import PgtrailError
from pgtrail.ops import partitions, retention


@app.command("retention")
def retention_command(
    ctx: typer.Context,
    keep: Annotated[
        str | None,
        typer.Option(help="Delete rows older than this (whole daily partitions), e.g. 28d"),
    ] = None,
    keep_payloads: Annotated[
        str | None,
        typer.Option(
            help="Blank prompt/completion bodies and long particular_data strings older than "
            "this, e.g. 7d; cost, token and latency figures stay"
        ),
    ] = None,
    keep_rollups: Annotated[
        str | None,
        typer.Option(
            help="Delete rollup hours (cost, token, latency and outcome history) older than "
            "this, e.g. 400d; without it they are kept for ever"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would happen; change nothing")
    ] = False,
    days_ahead: Annotated[
        int, typer.Option(min=1, max=366, help="Daily partitions to create after today")
    ] = partitions.DAYS_AHEAD,
    max_field_chars: Annotated[
        int,
        typer.Option(
            min=retention.MIN_MAX_FIELD_CHARS,
            help="With --keep-payloads: particular_data strings longer than this are blanked",
        ),
    ] = retention.DEFAULT_MAX_FIELD_CHARS,
) -> None:
    """Apply retention (run it daily from cron); also creates the partitions ahead."""
    settings = settings_of(ctx)
    try:
        keep_window = retention.parse_window("--keep", keep) if keep else None
        payload_window = (
            retention.parse_window("--keep-payloads", keep_payloads) if keep_payloads else None
        )
        rollup_window = (
            retention.parse_window("--keep-rollups", keep_rollups) if keep_rollups else None
        )
        with db.connect(settings) as conn:
            report = retention.run(
                conn,
                keep=keep_window,
                keep_payloads=payload_window,
                keep_rollups=rollup_window,
                dry_run=dry_run,
                days_ahead=days_ahead,
                max_field_chars=max_field_chars,
            )
    except PgtrailError as exc:
        fail(str(exc))
    _print(report, days_ahead)
    if report.busy:
        err_console.print(
            f"[yellow]warning:[/] {len(report.busy)} partition(s) stayed locked by other work "
            f"and were left for the next run: {', '.join(report.busy)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _print(report: retention.RetentionReport, days_ahead: int) -> None:
    def verb(now: str, done: str) -> str:
        return f"would {now}" if report.dry_run else done

    if report.dry_run:
        _say("dry run: nothing is changed")
    if report.keep_from is not None:
        _say(f"keeping rows from {report.keep_from:%Y-%m-%d %H:%M} UTC on")
        _say(
            f"{verb('drop', 'dropped')} {len(report.dropped)} partition(s) holding "
            f"{report.rows_dropped} row(s)"
        )
        for table in sorted({d.table for d in report.dropped}):
            mine = sorted((d for d in report.dropped if d.table == table), key=lambda d: d.upper)
            span = mine[0].name if len(mine) == 1 else f"{mine[0].name} .. {mine[-1].name}"
            rows = sum(d.rows for d in mine)
            _say(f"  {table}: {len(mine)} partition(s), {span}, {rows} row(s)")
        _say(
            f"{verb('delete', 'deleted')} {report.default_rows_deleted} row(s) past the window "
            "from the DEFAULT partitions"
        )
    if report.payloads_from is not None:
        _say(f"keeping bodies from {report.payloads_from:%Y-%m-%d %H:%M} UTC on")
        _say(
            f"{verb('blank', 'blanked')} {report.payloads_blanked} LLM payload(s), "
            f"{report.prompts_blanked} prompt body(ies) no call in the window uses, and long "
            f"strings in the particular_data of {report.fields_blanked} row(s)"
        )
    if report.rollups_from is not None:
        _say(f"keeping rollup hours from {report.rollups_from:%Y-%m-%d %H:%M} UTC on")
        _say(f"{verb('delete', 'deleted')} {report.rollup_rows_deleted} rollup row(s)")
    _say(
        f"{verb('create', 'created')} {report.partitions_created} partition(s) "
        f"({days_ahead} day(s) ahead)"
    )


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)
