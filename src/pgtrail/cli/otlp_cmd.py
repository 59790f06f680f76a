"""``pgtrail otlp serve``: the OpenTelemetry (OTLP/HTTP) trace receiver."""

from __future__ import annotations

import math
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


def _positive(text: str, option: str) -> float:
    seconds = _seconds(text, option)
    if seconds <= 0:
        raise typer.BadParameter("must be more than zero", param_hint=option)
    return seconds


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
    header_timeout: Annotated[
        str,
        typer.Option(
            help="Close a connection that has not sent a request's headers this long after "
            "opening or after the request's first byte"
        ),
    ] = "10s",
    body_timeout: Annotated[
        str, typer.Option(help="Answer 408 and close when a body takes longer than this")
    ] = "30s",
    keep_alive: Annotated[
        str, typer.Option(help="Close an idle kept-alive connection after this (whole seconds)")
    ] = "5s",
    max_connections: Annotated[
        int,
        typer.Option(
            min=1, help="Connections and requests served at once; requests beyond get 503"
        ),
    ] = 1000,
    max_pending: Annotated[
        int,
        typer.Option(
            min=1,
            help="Exports being decoded or handed to Redis at once; beyond, 429 with Retry-After",
        ),
    ] = 256,
    export_threads: Annotated[
        int, typer.Option(min=1, help="Threads that decode bodies and hand spans to Redis")
    ] = 16,
    backlog: Annotated[
        int, typer.Option(min=1, help="Connections the kernel queues before they are accepted")
    ] = 2048,
    max_header_kb: Annotated[
        int, typer.Option(min=1, help="Largest request line plus headers, in KiB")
    ] = 64,
    shutdown_timeout: Annotated[
        str,
        typer.Option(help="On SIGTERM or SIGINT, how long requests in flight get to finish"),
    ] = "30s",
) -> None:
    """Receive OTLP/HTTP traces (protobuf or JSON) on /v1/traces and write them to pgtrail.

    Point OTEL_EXPORTER_OTLP_ENDPOINT at http://HOST:PORT. Runs until interrupted; on
    SIGINT or SIGTERM it stops accepting, finishes the requests in flight (a second signal
    stops waiting), finalises the traces whose root has arrived and flushes.
    """
    settings = settings_of(ctx)
    if settings.redis_url is None:
        fail("the OTLP receiver needs Redis: traces are assembled there (set PGTRAIL_REDIS_URL)")
    grace_s = _seconds(grace, "--grace")
    idle_s = _seconds(idle, "--idle")
    # Loads protobuf, redis and uvicorn: only this command.
    from pgtrail.otlp.server import ServerLimits, raise_descriptor_limit, serve

    limits = ServerLimits(
        header_timeout_s=_positive(header_timeout, "--header-timeout"),
        body_timeout_s=_positive(body_timeout, "--body-timeout"),
        keep_alive_s=max(1, math.ceil(_positive(keep_alive, "--keep-alive"))),
        max_connections=max_connections,
        max_pending_exports=max_pending,
        export_threads=export_threads,
        backlog=backlog,
        max_header_bytes=max_header_kb * 1024,
        shutdown_timeout_s=_positive(shutdown_timeout, "--shutdown-timeout"),
    )
    # Each connection holds a descriptor; the writer, Redis and the spool need some more.
    raise_descriptor_limit(max_connections + export_threads + 256)

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
                limits=limits,
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
