"""``pgtrail sweep`` and ``pgtrail spool replay``: the writer's maintenance commands."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.durations import parse_duration
from pgtrail.writer.spool import DAMAGED, Spool

if TYPE_CHECKING:  # the writer, its pool and Redis: loaded by the commands that use them
    from pgtrail.trail import Trail

spool_app = typer.Typer(help="The on-disk spool of batches that could not reach PostgreSQL.")
app.add_typer(spool_app, name="spool")


@app.command("sweep")
def sweep_command(
    ctx: typer.Context,
    idle: Annotated[str, typer.Option(help="Finalise executions idle this long (e.g. 30m)")] = "1h",
) -> None:
    """Finalise executions left open in Redis (their process died) as abandoned.

    OpenTelemetry traces idle as long are finalised too (abandoned when their root span
    never arrived).
    """
    settings = settings_of(ctx)
    if settings.redis_url is None:
        fail("sweep needs Redis: open executions are held there (set PGTRAIL_REDIS_URL)")
    try:
        idle_s = parse_duration(idle).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--idle") from exc
    from pgtrail.trail import Trail

    with Trail(settings, sync=True) as trail:
        swept = trail.sweep(idle_s)
        traces = _finalise_idle_traces(trail, idle_s)
    console.print(f"{len(swept)} execution(s) finalised as abandoned")
    for execution_id in swept:
        console.print(f"  {execution_id}", highlight=False)
    if traces:
        console.print(f"{len(traces)} OpenTelemetry trace(s) finalised")
        for execution_id in traces:
            console.print(f"  {execution_id}", highlight=False)


def _finalise_idle_traces(trail: Trail, idle_s: float) -> list[uuid.UUID]:
    """OpenTelemetry traces held in Redis with no new span for ``idle_s``, after the ones a
    receiver lost are taken back from its span journal."""
    from pgtrail.otlp.assemble import TraceAssembler

    assembler = TraceAssembler(trail)
    try:
        assembler.recover_stranded()
        return [done.execution_id for done in assembler.finalise_idle(idle_s)]
    finally:
        assembler.close()


@spool_app.command("replay")
def replay_command(
    ctx: typer.Context,
    spool_dir: Annotated[
        Path | None, typer.Option(help="Spool folder (default: $PGTRAIL_SPOOL_DIR)")
    ] = None,
) -> None:
    """Write spooled batches to PostgreSQL; events already stored are skipped, not doubled."""
    settings = settings_of(ctx)
    if spool_dir is not None:
        settings = settings.model_copy(update={"spool_dir": spool_dir})
    spool = Spool(settings.spool_dir)
    files = spool.files()
    if not files:
        console.print(f"spool {settings.spool_dir} is empty")
        return
    from pgtrail.trail import Trail

    with Trail(settings, sync=True) as trail:
        replayed = trail.replay_spool()
        stats = trail.stats
        left = len(spool.files())
    damaged = stats.damaged_files
    done = len(files) - left - damaged - stats.busy_files
    console.print(f"{replayed} row(s) replayed from {max(done, 0)} batch file(s)")
    if stats.rejected:
        console.print(f"[yellow]{stats.rejected} row(s) refused (see the log)[/]")
    if damaged:
        console.print(
            f"[yellow]{damaged} damaged file(s) moved to {spool.directory / DAMAGED} "
            "(see the log for each file and why)[/]"
        )
    if stats.busy_files:
        console.print(
            f"{stats.busy_files} batch file(s) were being replayed by another process at the "
            "same time: left to it"
        )
    if stats.last_error is not None and left > stats.busy_files:
        fail(f"{left} batch file(s) could not be replayed: {stats.last_error}")


@spool_app.command("status")
def status_command(
    ctx: typer.Context,
    spool_dir: Annotated[Path | None, typer.Option(help="Spool folder")] = None,
) -> None:
    """How many batches and rows wait in the spool."""
    folder = spool_dir or settings_of(ctx).spool_dir
    spool = Spool(folder)
    console.print(f"{len(spool.files())} batch file(s), {spool.pending_rows()} row(s) in {folder}")
