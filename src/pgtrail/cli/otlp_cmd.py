"""``pgtrail otlp serve``: the OpenTelemetry (OTLP/HTTP and OTLP/gRPC) trace receiver."""

from __future__ import annotations

import math
import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.config import ENV_OTLP_TOKEN
from pgtrail.durations import parse_duration
from pgtrail.errors import PgtrailError
from pgtrail.otlp import DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT

if TYPE_CHECKING:  # the server loads protobuf, redis, uvicorn and grpc: only when serving
    from pgtrail.otlp.server import OtlpReceiver

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
    port: Annotated[int, typer.Option(min=0, max=65535, help="OTLP/HTTP TCP port")] = DEFAULT_PORT,
    grpc_port: Annotated[
        int, typer.Option(min=0, max=65535, help="OTLP/gRPC TCP port (0 picks a free one)")
    ] = DEFAULT_GRPC_PORT,
    no_grpc: Annotated[
        bool, typer.Option("--no-grpc", help="Serve OTLP/HTTP only, no gRPC port")
    ] = False,
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
    durable: Annotated[
        bool,
        typer.Option(
            "--durable/--no-durable",
            help="Answer an export only once its spans are committed to the span journal in "
            "PostgreSQL (--no-durable: once Redis holds them; faster, but a receiver killed "
            "or a Redis restarted empty before the trace is written loses it)",
        ),
    ] = True,
    shutdown_timeout: Annotated[
        str,
        typer.Option(help="On SIGTERM or SIGINT, how long requests in flight get to finish"),
    ] = "30s",
) -> None:
    """Receive OTLP traces into pgtrail: OTLP/HTTP (protobuf or JSON) on
    /v1/traces, and OTLP/gRPC on --grpc-port unless --no-grpc.

    Point OTEL_EXPORTER_OTLP_ENDPOINT at http://HOST:PORT, or for gRPC at
    http://HOST:GRPC_PORT with OTEL_EXPORTER_OTLP_PROTOCOL=grpc. Runs until
    interrupted; on SIGINT or SIGTERM it stops accepting, finishes the requests
    and calls in flight (a second signal stops waiting), finalises the traces
    whose root has arrived and flushes.
    """
    settings = settings_of(ctx)
    if settings.redis_url is None:
        fail("the OTLP receiver needs Redis: traces are assembled there (set PGTRAIL_REDIS_URL)")
    grace_s = _seconds(grace, "--grace")
    idle_s = _seconds(idle, "--idle")
    # Loads protobuf, redis and uvicorn: only this command.
    from pgtrail.otlp.grpc_server import GrpcListenError
    from pgtrail.otlp.server import ServerLimits, raise_descriptor_limit, serve
    from pgtrail.trail import Trail

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
    # Each connection holds a descriptor (gRPC's as many again); the writer, Redis and the
    # spool need some more.
    servers = 1 if no_grpc else 2
    raise_descriptor_limit(servers * (max_connections + export_threads) + 256)

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
                grpc_port=None if no_grpc else grpc_port,
                durable=durable,
                on_ready=_say_ready,
            )
    except GrpcListenError as exc:
        fail(f"{exc} (choose another --grpc-port, or --no-grpc)")
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    except PgtrailError as exc:
        fail(str(exc))


def _say_ready(receiver: OtlpReceiver) -> None:
    grpc = receiver.grpc
    console.print(
        f"pgtrail OTLP receiver on {receiver.endpoint}"
        + ("" if grpc is None else f" and OTLP/gRPC on {grpc.endpoint}")
        + (" (bearer token required)" if receiver.token else ""),
        highlight=False,
        soft_wrap=True,
    )
