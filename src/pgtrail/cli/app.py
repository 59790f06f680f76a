"""The root typer application and the options every command shares."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pgtrail.config import Settings
from pgtrail.errors import PgtrailError

app = typer.Typer(
    name="pgtrail",
    help="PostgreSQL-native structured logging for LLM agent systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def root(
    ctx: typer.Context,
    dsn: Annotated[
        str | None, typer.Option(help="PostgreSQL DSN (default: $PGTRAIL_DSN, else libpq's)")
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Schema of the pgtrail tables (default: $PGTRAIL_SCHEMA)")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL (default: $PGTRAIL_REDIS_URL)")
    ] = None,
) -> None:
    """pgtrail: logs of LLM agent systems, in your PostgreSQL."""
    try:
        ctx.obj = Settings.from_env(dsn=dsn, db_schema=schema, redis_url=redis_url)
    except PgtrailError as exc:
        fail(str(exc))


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the root callback."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints an error for a person and exits with ``code``."""
    # Messages carry server and user text: "[/x]" in them is not markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point; turns pgtrail errors into messages, not tracebacks."""
    try:
        app()
    except PgtrailError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
