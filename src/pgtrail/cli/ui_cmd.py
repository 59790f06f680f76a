"""``pgtrail ui``: the read-only web UI, served from your PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.cli.report_cmds import QueriesOption, TenantOption, TimeoutOption
from pgtrail.errors import PgtrailError
from pgtrail.read import sandbox

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
AUTO_TOKEN = "auto"  # noqa: S105  (the word that asks for a fresh token, not a secret)


@app.command("ui")
def ui_command(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; anything but loopback needs --token or --trust-proxy"
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            help="Every request must carry this token (at least 16 characters); "
            "`auto` makes one and prints the link that carries it"
        ),
    ] = None,
    trust_proxy: Annotated[
        bool,
        typer.Option(
            "--trust-proxy",
            help="Serve a non-loopback address without a token because a reverse proxy in "
            "front of it authenticates every request",
        ),
    ] = False,
    tenant: TenantOption = None,
    timeout_ms: TimeoutOption = None,
    queries: QueriesOption = None,
) -> None:
    """Serve the read-only web UI: overview, executions, traces, journeys, sessions, agents,
    saved reports and ad-hoc SQL, each page with a JSON twin (.json)."""
    # uvicorn and Jinja2 load only for this command.
    from pgtrail import db
    from pgtrail.ui.app import UiApp
    from pgtrail.ui.reading import Reader
    from pgtrail.ui.server import build_server, check_listen, loopback_hosts, new_token

    settings = settings_of(ctx)
    chosen = new_token() if token == AUTO_TOKEN else token
    try:
        check_listen(host, chosen, trust_proxy)
        with db.connect(settings) as conn:
            problem = sandbox.problem(conn)
    except PgtrailError as exc:
        fail(str(exc))
    if problem is not None:
        fail(problem)
    reader = Reader(settings, tenant=tenant, timeout_ms=timeout_ms)
    guarded = chosen is not None or trust_proxy
    ui = UiApp(
        reader,
        token=chosen,
        allowed_hosts=frozenset() if guarded else loopback_hosts(port),
        queries=tuple(Path(q) for q in queries or ()),
    )
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{port}/"
    if chosen is not None:
        link += f"?token={chosen}"
    scope = f" (tenant {tenant} only)" if tenant is not None else ""
    console.print(f"pgtrail ui{scope}: open {link}", highlight=False, soft_wrap=True)
    console.print("read-only; stop with Ctrl-C", style="dim", highlight=False)
    build_server(ui, host, port).run()
