"""``pgtrail migrate``: apply the schema files; ``migrate status``: show where we are."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgtrail.cli.app import app, console, err_console, settings_of
from pgtrail.db import mask_dsn
from pgtrail.errors import DatabaseUnavailableError
from pgtrail.ops import migrate as migrations


@app.command("migrate")
def migrate_command(
    ctx: typer.Context,
    action: Annotated[
        str | None, typer.Argument(help="'status' to show applied and pending files")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would run")] = False,
) -> None:
    """Apply pending schema migrations, once each, in order, under an advisory lock."""
    settings = settings_of(ctx)
    if action not in (None, "status"):
        raise typer.BadParameter(f"unknown action {action!r}; use 'pgtrail migrate status'")
    if action == "status":
        _print_status(ctx)
        return
    if dry_run:
        _dry_run(ctx)
        return
    target = mask_dsn(settings.dsn)
    applied = migrations.migrate(
        settings,
        on_apply=lambda m, secs: console.print(
            f"applied [bold]{m.file_name}[/] in {secs * 1000:.0f} ms", highlight=False
        ),
    )
    if not applied:
        console.print(f"schema is up to date at {target} (schema {settings.db_schema})")
    else:
        console.print(f"{len(applied)} migration(s) applied to {target}")


def _dry_run(ctx: typer.Context) -> None:
    settings = settings_of(ctx)
    files = migrations.load_migrations()
    try:
        pending = migrations.migrate(settings, dry_run=True)
    except DatabaseUnavailableError as exc:
        err_console.print(f"[yellow]warning:[/] {exc}", highlight=False)
        console.print(f"schema files shipped ({files[0].path.parent}):")
        for m in files:
            console.print(f"  {m.file_name}  sha256 {m.checksum[:12]}", highlight=False)
        return
    if not pending:
        console.print("dry run: nothing to apply; the schema is up to date")
        return
    console.print(f"dry run: {len(pending)} migration(s) would be applied:")
    for m in pending:
        console.print(f"  {m.file_name}  sha256 {m.checksum[:12]}", highlight=False)


def _print_status(ctx: typer.Context) -> None:
    states = migrations.status(settings_of(ctx))
    table = Table("version", "name", "state", "applied at")
    colour = {"applied": "green", "pending": "yellow", "edited": "red", "unknown": "red"}
    for s in states:
        table.add_row(
            f"{s.version:04d}", s.name, f"[{colour[s.state]}]{s.state}[/]", s.applied_at or ""
        )
    console.print(table)
