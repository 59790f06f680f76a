"""``pgtrail otlp serve``: the OpenTelemetry (OTLP/HTTP) trace receiver."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.config import ENV_OTLP_TOKEN
from pgtrail.durations import parse_duration
from pgtrail.errors import PgtrailError
from pgtrail.otlp import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from pgtrail.trail import Trail

otlp_app = typer.Typer(help="OpenTelemetry in: receive OTLP traces into the four tables.")
app.add_typer(otlp_app, name="otlp")


def _seconds(text: str, option: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@otlp_app.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; loopback unless you expose it on purpose")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=ENV_OTLP_TOKEN,
            help="Require 'Authorization: Bearer TOKEN' (default: $PGTRAIL_OTLP_TOKEN)",
            show_default=False,
        ),
    ] = None,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body, in MiB (compressed or not)")
    ] = DEFAULT_MAX_BODY_BYTES / 1024 / 1024,
    grace: Annotated[
        str, typer.Option(help="Finalise a trace this long after its root span arrives")
    ] = "10s",
    idle: Annotated[
        str, typer.Option(help="Finalise a trace whose root never arrived after this idle time")
    ] = "10m",
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port",
            help="Share the port with other `pgtrail otlp serve --reuse-port` processes "
            "(one per core)",
        ),
    ] = False,
) -> None:
    """Receive OTLP/HTTP traces (protobuf or JSON) on /v1/traces and write them to pgtrail.

    Point OTEL_EXPORTER_OTLP_ENDPOINT at http://HOST:PORT. Runs until interrupted; on
    SIGINT or SIGTERM it finalises the traces whose root has arrived and flushes.
    """
    settings = settings_of(ctx)
    if settings.redis_url is None:
        fail("the OTLP receiver needs Redis: traces are assembled there (set PGTRAIL_REDIS_URL)")
    grace_s = _seconds(grace, "--grace")
    idle_s = _seconds(idle, "--idle")
    from pgtrail.otlp.server import serve  # loads protobuf and redis: only this command

    signal.signal(signal.SIGTERM, _interrupt)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        console.print(
            f"[yellow]warning:[/] listening on {host} with no bearer token; anyone who can "
            "reach this port can write logs"
        )
    try:
        with Trail(settings) as trail:
            serve(
                trail,
                host=host,
                port=port,
                token=token,
                max_body_bytes=int(max_body_mb * 1024 * 1024),
                grace_s=grace_s,
                idle_s=idle_s,
                reuse_port=reuse_port,
                on_ready=lambda r: console.print(
                    f"pgtrail OTLP receiver on {r.endpoint}"
                    + (" (bearer token required)" if r.token else ""),
                    highlight=False,
                    soft_wrap=True,
                ),
            )
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    except PgtrailError as exc:
        fail(str(exc))
