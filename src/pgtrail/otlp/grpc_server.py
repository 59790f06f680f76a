"""The OTLP/gRPC trace receiver: ``TraceService/Export`` beside the HTTP one.

One method is served, ``/opentelemetry.proto.collector.trace.v1.TraceService/Export``,
through a generic handler that takes the request as raw bytes: the receiver's own protobuf
decoder reads it, so a span maps, is refused or is cleaned exactly as it is over HTTP. The
server reaches the receiver only through :class:`~pgtrail.otlp.intake.Intake`: the same
bearer token (metadata ``authorization: Bearer <token>``), the same bound on exports in
progress (shared with HTTP), the same counters, and an OK only after the spans are durable.

Answers, as the OTLP specification asks:

- OK with an ``ExportTraceServiceResponse``, with ``partial_success`` when spans were left out;
- ``INVALID_ARGUMENT`` when the request is not an OTLP trace export (nothing of it is held);
- ``UNAUTHENTICATED`` for a missing or wrong token;
- ``RESOURCE_EXHAUSTED`` while the receiver is busy, with ``RetryInfo`` (the specification
  makes it retryable only then), and from gRPC itself above the size limit (the receiver's
  body limit, checked after decompression too) or beyond ``max_calls`` calls at once;
- ``UNAVAILABLE`` (retryable) while Redis or the span journal in PostgreSQL is unreachable.

Every answer the handler gives is counted under the ``grpc`` route of ``/metrics`` by its
numeric status code; the refusals gRPC makes itself (size, calls at once) happen before the
handler and are not.

``RetryInfo`` travels in ``google.rpc.retryinfo-bin`` (read by the OpenTelemetry Python
SDK) and inside a ``google.rpc.Status`` in ``grpc-status-details-bin`` (read by the
Collector's exporter and by gRPC's status helpers). gzip-compressed requests are inflated
by gRPC.

Why grpc.aio on a loop of its own, not the thread-per-call ``grpc.server``: the threaded
server hands a call to a worker before its message has arrived, so a slow sender would hold
an export thread. Here a call costs a coroutine until its message is complete; only then is
it counted among the exports in progress (or refused as busy at once) and decoded on one of
``export_threads`` worker threads of its own, so a burst on one transport cannot take the
other's workers. The loop runs on its own thread, apart from the HTTP server's, so neither
waits on the other.

Stopping is like HTTP's: no new calls, those in flight get ``shutdown_timeout_s`` to finish
(a second, forced stop cancels them: an export already journalled is then retried by the
client and stored once, its ids being deterministic).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import NoReturn

import grpc
import grpc.aio

from pgtrail.errors import AssemblyUnavailableError, OtlpDecodeError, ReceiverBusyError
from pgtrail.otlp import DEFAULT_GRPC_PORT, DEFAULT_HOST, UNAVAILABLE_RETRY_AFTER_S
from pgtrail.otlp.intake import PROTOBUF, Accepted, Intake
from pgtrail.otlp.protowire import bytes_field, varint_field

log = logging.getLogger("pgtrail")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
"""The gRPC service OTLP trace exporters call."""
METHOD = "Export"
"""Its one method."""
ROUTE = "grpc"
"""The ``route`` label gRPC calls are counted under in ``/metrics``."""
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
"""Trailing metadata carrying a ``google.rpc.RetryInfo``."""
STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing metadata carrying the whole ``google.rpc.Status``, details included."""

_RETRY_INFO_TYPE = b"type.googleapis.com/google.rpc.RetryInfo"
_KEEPALIVE_MS = 60_000  # pings an idle connection, so a vanished client's calls end
_KEEPALIVE_TIMEOUT_MS = 20_000


class GrpcListenError(OSError):
    """The gRPC port cannot be listened on; the message names the address."""


@dataclass(frozen=True)
class _Answer:
    """An error status for one call."""

    code: grpc.StatusCode
    message: str
    retry_after_s: float | None = None


class GrpcServer:
    """An OTLP/gRPC trace server in front of a receiver.

    The port is bound when it is made (so :attr:`port` is known and a busy port fails
    here); calls are served from :meth:`start` on.

    Args:
        intake: The receiver spans are handed to.
        host: Address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).
        max_message_bytes: Largest request accepted, compressed or not; larger ones get
            ``RESOURCE_EXHAUSTED`` from gRPC.
        export_threads: Worker threads that decode requests and hand spans to Redis.
        max_calls: Calls served at once, their messages still arriving or not; gRPC
            answers ``RESOURCE_EXHAUSTED`` beyond.
        reuse_port: Let several receiver processes listen on the same port.
        shutdown_timeout_s: Seconds calls in flight get to finish when it stops.
    """

    def __init__(
        self,
        intake: Intake,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_GRPC_PORT,
        max_message_bytes: int,
        export_threads: int,
        max_calls: int,
        reuse_port: bool = False,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        self.intake = intake
        self.host = host
        self.shutdown_timeout_s = shutdown_timeout_s
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=export_threads, thread_name_prefix="pgtrail-otlp-grpc"
        )
        self._loop = asyncio.new_event_loop()
        self._stop_asked = asyncio.Event()
        self._stopping: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            # gRPC shares ports by default; like the HTTP server, only when asked.
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ]
        # A grpc.aio server belongs to the loop it is made on: made on its own, here.
        try:
            self._server, self._port = self._loop.run_until_complete(
                self._bind(options, port, max_calls)
            )
        except BaseException:
            self._workers.shutdown(wait=False)
            self._loop.close()
            raise

    async def _bind(
        self, options: list[tuple[str, int]], port: int, max_calls: int
    ) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_calls)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(self._export)}
        )
        server.add_generic_rpc_handlers((handler,))
        address = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:  # gRPC says only "Failed to bind", and logs the cause itself
            await server.stop(None)
            raise GrpcListenError(
                f"cannot listen on {address} for OTLP/gRPC: the port is taken or the address"
                " is not this host's"
            ) from None
        return server, bound

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._port

    @property
    def endpoint(self) -> str:
        """What exporters are given as ``OTEL_EXPORTER_OTLP_ENDPOINT`` for gRPC."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def serving(self) -> bool:
        """True while its thread serves."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Serves on a thread of its own; returns once calls are taken."""
        if self._thread is not None or self._closed:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="pgtrail-otlp-grpc-server", daemon=True
        )
        self._thread.start()
        ready.wait(10)

    def stop(self, *, force: bool = False) -> None:
        """Asks the server to stop: no new calls; those in flight finish.

        Safe from a signal handler; :meth:`close` waits for the end.

        Args:
            force: Cancel the calls in flight too.
        """
        try:
            self._loop.call_soon_threadsafe(self._ask_stop, force)
        except RuntimeError:  # the loop is closed: stopped already
            return

    def close(self) -> None:
        """Stops, lets the calls in flight finish and releases the port and the threads."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.stop()
            self._thread.join(self.shutdown_timeout_s + 5)
        else:
            self._loop.run_until_complete(self._server.stop(None))
        self._workers.shutdown(wait=True)
        if not self._loop.is_running():
            self._loop.close()

    # -- on the server's loop --------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(ready))
        except Exception:
            log.exception("pgtrail otlp: the gRPC server failed")
        finally:
            ready.set()
            left = asyncio.all_tasks(self._loop)
            for task in left:
                task.cancel()
            if left:
                self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))

    async def _serve(self, ready: threading.Event) -> None:
        await self._server.start()
        ready.set()
        await self._stop_asked.wait()
        await self._server.stop(self.shutdown_timeout_s)
        await asyncio.gather(*self._stopping)

    def _ask_stop(self, force: bool) -> None:
        if force and self._stop_asked.is_set():
            # The most restrictive grace wins: in-flight calls are cancelled now.
            task = self._loop.create_task(self._server.stop(None))
            self._stopping.add(task)
        self._stop_asked.set()

    async def _export(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        """One ``Export`` call: the token, a place among the exports, then the export."""
        answer = await self._answer(request, context)
        if isinstance(answer, _Answer):
            await self._refuse(answer, context)
        self.intake.count_answer(ROUTE, grpc.StatusCode.OK.value[0], refused=False)
        return export_response(answer)

    async def _refuse(
        self, answer: _Answer, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> NoReturn:
        """Ends the call with ``answer``'s status (counted first, like HTTP's answers)."""
        self.intake.count_answer(ROUTE, answer.code.value[0], refused=True)
        if answer.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
            log.warning("pgtrail otlp: gRPC %s %s", answer.code.name, answer.message)
        else:
            log.info("pgtrail otlp: gRPC %s %s", answer.code.name, answer.message)
        trailing: tuple[tuple[str, str | bytes], ...] = ()
        if answer.retry_after_s is not None:
            info = retry_info(answer.retry_after_s)
            status = status_details(answer.code.value[0], answer.message, info)
            trailing = ((RETRY_INFO_KEY, info), (STATUS_DETAILS_KEY, status))
        await context.abort(answer.code, answer.message, trailing)

    async def _answer(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> Accepted | _Answer:
        metadata = context.invocation_metadata() or ()
        authorization = ", ".join(
            str(value) for key, value in metadata if key.lower() == "authorization"
        )
        if not self.intake.authorised(authorization):
            return _Answer(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            self.intake.begin_export()
        except ReceiverBusyError as exc:
            return _Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
        try:
            work = self._workers.submit(self.intake.export, request, PROTOBUF)
        except RuntimeError:  # the workers are shut down: the server is stopping
            self.intake.end_export()
            return _Answer(grpc.StatusCode.UNAVAILABLE, "the receiver is stopping", 1.0)
        # Given back when the worker is done, not when the call is: a cancelled call's
        # export still runs, and still counts.
        work.add_done_callback(lambda _: self.intake.end_export())
        try:
            return await asyncio.wrap_future(work)
        except OtlpDecodeError as exc:
            return _Answer(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AssemblyUnavailableError as exc:  # Redis, or the journal (a subclass)
            return _Answer(
                grpc.StatusCode.UNAVAILABLE,
                f"spans cannot be held durably right now ({exc}); retry later",
                UNAVAILABLE_RETRY_AFTER_S,
            )
        except Exception:  # never a traceback to the client
            log.exception("pgtrail: OTLP gRPC export failed")
            return _Answer(grpc.StatusCode.INTERNAL, "internal error; see the receiver's log")


def export_response(accepted: Accepted) -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` when spans were left out.

    Args:
        accepted: What became of the request.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if accepted.rejected:
        response.partial_success.rejected_spans = accepted.rejected
        response.partial_success.error_message = accepted.reason
    encoded: bytes = response.SerializeToString()
    return encoded


def retry_info(seconds: float) -> bytes:
    """A ``google.rpc.RetryInfo`` asking to wait ``seconds``, encoded.

    Args:
        seconds: The delay (``retry_delay``).
    """
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    duration = varint_field(1, whole) + (varint_field(2, nanos) if nanos else b"")
    return bytes_field(1, duration)


def status_details(code: int, message: str, *details: bytes) -> bytes:
    """A ``google.rpc.Status`` with ``RetryInfo`` details (each wrapped in an ``Any``), encoded.

    Args:
        code: The numeric gRPC status code.
        message: The status message.
        *details: Encoded ``google.rpc.RetryInfo`` messages.
    """
    out = varint_field(1, code) + bytes_field(2, message.encode())
    for detail in details:
        out += bytes_field(3, bytes_field(1, _RETRY_INFO_TYPE) + bytes_field(2, detail))
    return out
