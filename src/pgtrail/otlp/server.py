"""The OTLP/HTTP trace receiver: ``POST /v1/traces``, protobuf or JSON, gzip or not.

It answers as the OTLP/HTTP specification says: 200 with an ``ExportTraceServiceResponse``
(with ``partial_success`` when some spans were left out), 400 with a ``google.rpc.Status``
saying why a body could not be decoded (nothing of it is stored), 401 for a missing or wrong
bearer token, 413 above the size limit, 415 for a content type or encoding it does not speak,
and the retryable codes with a ``Retry-After`` header: 429 while the receiver is busy (too
many exports waiting, or the writer's queue full) and 503 while Redis, where traces
assemble, is unreachable.

``GET /health`` answers 200 while spans can be taken and 503 while Redis is unreachable
(a JSON body saying what is up when the request accepts ``application/json``), and
``GET /metrics`` the receiver's and the writer's counters in Prometheus text format.

With ``grpc_port`` the receiver also serves OTLP/gRPC (:mod:`pgtrail.otlp.grpc_server`),
which reaches it through the :class:`~pgtrail.otlp.intake.Intake` methods below: one
decoder, one token, one bound on exports in progress, one set of counters, one journal.

The HTTP server is uvicorn (widely used in production, h11 parser with strict request
framing) running a plain ASGI application. Its limits: a connection must send a request's
headers within ``header_timeout_s`` of opening or of its first byte, and the body within
``body_timeout_s``; an idle kept-alive connection is closed after ``keep_alive_s``; at most
``max_connections`` connections and requests are served at once (more get 503) and
``max_pending_exports`` exports wait for a worker (more get 429). A refused request's body
is read and dropped when it is small, else the connection is closed, so it is never parsed
as the next request. On shutdown it stops accepting, finishes the requests in flight,
finalises the traces whose root has arrived and flushes the writer.

Spans are handed to the :class:`~pgtrail.otlp.assemble.TraceAssembler`; finished traces go
to the writer, whose queue spills to its on-disk spool under load or while PostgreSQL is
away, so backpressure never drops a span.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import hmac
import logging
import math
import resource
import signal
import socket
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import FrameType
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pgtrail.errors import JournalUnavailableError, OtlpDecodeError, ReceiverBusyError
from pgtrail.jsonapi import api as json_api
from pgtrail.otlp import (
    BUSY_RETRY_AFTER_S,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    UNAVAILABLE_RETRY_AFTER_S,
)
from pgtrail.otlp.assemble import (
    DEFAULT_GRACE_S,
    DEFAULT_IDLE_S,
    AssemblyUnavailableError,
    Finaliser,
    Mapper,
    TraceAssembler,
)
from pgtrail.otlp.decode import Decoded, decode_json, decode_protobuf
from pgtrail.otlp.grpc_server import GrpcServer
from pgtrail.otlp.intake import PROTOBUF, Accepted
from pgtrail.otlp.journal import JournalCounts
from pgtrail.otlp.mapping import MappingOptions
from pgtrail.otlp.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pgtrail.otlp.metrics import ReceiverMetrics, render
from pgtrail.otlp.protowire import bytes_field, varint_field
from pgtrail.shared_state import TraceBuffer, database_namespace
from pgtrail.trail import Trail
from pgtrail.writer.flusher import WriterMetrics

log = logging.getLogger("pgtrail")

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
_ROUTES = frozenset({TRACES_PATH, HEALTH_PATH, METRICS_PATH, "/", *json_api.ROUTES})
_OTHER_ROUTE = "other"  # every unknown path under one label: clients cannot grow the series
_PROBE_TIMEOUT_S = 3.0
JSON = "application/json"
_PROTOBUF_TYPES = {PROTOBUF, "application/protobuf"}

DEFAULT_HEADER_TIMEOUT_S = 10.0
"""Seconds a connection has to send a request's headers."""
DEFAULT_BODY_TIMEOUT_S = 30.0
"""Seconds a request has to send its body once its headers arrived."""
DEFAULT_KEEP_ALIVE_S = 5
"""Seconds an idle kept-alive connection stays open."""
DEFAULT_MAX_CONNECTIONS = 1000
"""Connections (and requests) served at once; requests beyond get 503."""
DEFAULT_MAX_PENDING_EXPORTS = 256
"""Exports decoding, assembling or waiting for a worker; more get 429."""
DEFAULT_EXPORT_THREADS = 16
"""Worker threads that decode bodies and hand spans to Redis."""
DEFAULT_BACKLOG = 2048
"""Connections the kernel queues before the server accepts them."""
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
"""Largest request line plus headers."""
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
"""Seconds requests in flight get to finish at shutdown."""

# google.rpc.Code values carried in the error bodies.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_RESOURCE_EXHAUSTED = 8
_INTERNAL = 13
_UNIMPLEMENTED = 12
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
_DEADLINE_EXCEEDED = 4

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Refusal(Exception):
    """A request answered with an error status."""

    def __init__(
        self,
        status: HTTPStatus,
        code: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.close = close


class _Disconnected(Exception):
    """The client went away before its request was read."""


@dataclass(frozen=True)
class Probe:
    """What Redis and the span journal answered."""

    traces_pending: int | None
    """Open traces in Redis, or None when Redis did not answer."""
    journal: JournalCounts | None
    """The journal's counts, or None when it did not answer or the receiver is not durable."""
    journal_up: bool | None
    """Whether the journal answered; None when the receiver is not durable."""


@dataclass
class ReceiverStats:
    """Counters since the receiver started.

    ``requests`` and ``refused`` count ``POST`` requests (all, and those answered with an
    error); ``responses`` counts every answer by (route, status code), routes other than the
    receiver's own counted as ``other``. ``spans_rejected`` counts spans left out of
    accepted requests (``partial_success``), ``spans_unheld`` those decoded but not held
    because Redis was unreachable.
    """

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    refused: int = 0
    spans_unheld: int = 0
    spans_unjournalled: int = 0
    responses: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerLimits:
    """The HTTP server's timeouts and bounds.

    Args:
        header_timeout_s: Seconds a connection has to send a request's headers, counted
            from the connection's opening or from the request's first byte.
        body_timeout_s: Seconds a request has to send its whole body.
        keep_alive_s: Seconds an idle kept-alive connection stays open (whole seconds).
        max_connections: Connections and requests served at once; requests beyond get 503.
        max_pending_exports: Exports decoding, assembling or queued for a worker; beyond
            that requests get 429 with ``Retry-After``.
        export_threads: Worker threads that decode bodies and hand spans to Redis.
        backlog: Connections the kernel queues before the server accepts them.
        max_header_bytes: Largest request line plus headers.
        shutdown_timeout_s: Seconds requests in flight get to finish at shutdown.
    """

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_pending_exports: int = DEFAULT_MAX_PENDING_EXPORTS
    export_threads: int = DEFAULT_EXPORT_THREADS
    backlog: int = DEFAULT_BACKLOG
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S


class OtlpReceiver:
    """An OTLP/HTTP (and, with ``grpc_port``, OTLP/gRPC) trace receiver feeding ``trail``.

    Args:
        trail: The writer rows are enqueued into.
        host: Address to listen on (loopback by default: expose it on purpose).
        port: TCP port; 0 picks a free one (see :attr:`port`).
        token: When set, requests must carry ``Authorization: Bearer <token>``.
        max_body_bytes: Largest request body accepted, compressed or not.
        grace_s: How long after its root span a trace is finalised.
        idle_s: How long a trace whose root never arrives waits before it is finalised.
        reuse_port: Let several receiver processes listen on the same port (the kernel
            spreads connections; traces assemble in Redis, so any process may finish any).
        options: Which attributes name the user, tenant and session (see
            :class:`~pgtrail.otlp.mapping.MappingOptions`).
        mapper: Span mapping to use instead of the default one.
        limits: The HTTP server's timeouts and bounds (see :class:`ServerLimits`).
        queue_depth: Returns how many records wait in the writer's queue; while it is at
            the writer's ``queue_size`` requests get 429. By default the length of
            ``trail``'s own queue (:attr:`pgtrail.Trail.queued`).
        durable: Commit every accepted span to the span journal in PostgreSQL before
            answering (:mod:`pgtrail.otlp.journal`): a 200 then means the spans will be
            stored whatever happens to this process or to Redis, and while PostgreSQL is
            unreachable exports get 503. With False a 200 means held in Redis only.
        grpc_port: Also serve OTLP/gRPC on this port of ``host`` (0 picks a free one, see
            :attr:`grpc_port`); None serves HTTP only. The gRPC server
            (:mod:`pgtrail.otlp.grpc_server`) shares the token, the body limit, the bound on
            exports in progress, the counters and the journal; it listens with
            ``reuse_port`` too, serves at most ``limits.max_connections`` calls at once
            and has ``limits.export_threads`` worker threads of its own.
    """

    def __init__(
        self,
        trail: Trail,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        grace_s: float = DEFAULT_GRACE_S,
        idle_s: float = DEFAULT_IDLE_S,
        reuse_port: bool = False,
        options: MappingOptions | None = None,
        mapper: Mapper | None = None,
        limits: ServerLimits | None = None,
        queue_depth: Callable[[], int] | None = None,
        durable: bool = True,
        grpc_port: int | None = None,
    ) -> None:
        self.trail = trail
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.limits = limits or ServerLimits()
        self.queue_depth = queue_depth if queue_depth is not None else self._queued
        self.stats = ReceiverStats()
        self._stats_lock = threading.Lock()
        self._pending = 0  # exports decoding, assembling or queued: touched on the loop only
        self._elsewhere = 0  # the same for exports of other transports (gRPC), under the lock
        self._elsewhere_lock = threading.Lock()
        self.assembler = TraceAssembler(
            trail, grace_s=grace_s, options=options, mapper=mapper, durable=durable
        )
        self.finaliser = Finaliser(
            self.assembler, idle_s=idle_s, interval_s=min(0.5, max(0.05, grace_s / 4))
        )
        # Health and metrics ask Redis on a connection and a thread of their own: a probe
        # never waits behind exports, and after the first one its connection is already
        # open when the process runs short of descriptors.
        settings = trail.settings
        self._probe_buffer = TraceBuffer(
            str(settings.redis_url),
            settings.redis_prefix,
            namespace=database_namespace(settings.dsn, settings.db_schema),
        )
        self._prober = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pgtrail-otlp-probe"
        )
        self._probe_future: asyncio.Future[Probe] | None = None  # touched on the loop only
        self._socket = _listen(host, port, reuse_port=reuse_port, backlog=self.limits.backlog)
        self._address: tuple[str, int] = self._socket.getsockname()[:2]
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.limits.export_threads, thread_name_prefix="pgtrail-otlp-export"
        )
        self._server = _Server(
            uvicorn.Config(
                self._asgi,
                http=_protocol_class(self.limits.header_timeout_s),
                loop="asyncio",
                interface="asgi3",
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                proxy_headers=False,
                server_header=False,
                headers=[("Server", "pgtrail-otlp")],
                limit_concurrency=self.limits.max_connections,
                backlog=self.limits.backlog,
                timeout_keep_alive=self.limits.keep_alive_s,
                timeout_graceful_shutdown=math.ceil(self.limits.shutdown_timeout_s),
                h11_max_incomplete_event_size=self.limits.max_header_bytes,
            )
        )
        self._thread: threading.Thread | None = None
        self._ran = threading.Event()  # set once a serving loop has ended
        self._started = False
        self.grpc: GrpcServer | None = None
        """The OTLP/gRPC server, when ``grpc_port`` was given."""
        if grpc_port is not None:
            try:
                self.grpc = GrpcServer(
                    self,
                    host=host,
                    port=grpc_port,
                    max_message_bytes=max_body_bytes,
                    export_threads=self.limits.export_threads,
                    max_calls=self.limits.max_connections,
                    reuse_port=reuse_port,
                    shutdown_timeout_s=self.limits.shutdown_timeout_s,
                )
            except BaseException:
                self._socket.close()
                self._workers.shutdown(wait=False)
                self._prober.shutdown(wait=False)
                self._probe_buffer.close()
                raise

    @property
    def host(self) -> str:
        """The address listened on."""
        return str(self._address[0])

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._address[1])

    @property
    def endpoint(self) -> str:
        """The URL exporters send traces to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{TRACES_PATH}"

    @property
    def grpc_port(self) -> int | None:
        """The OTLP/gRPC port listened on, or None when gRPC is not served."""
        return None if self.grpc is None else self.grpc.port

    def serve_forever(self) -> None:
        """Serves on this thread until :meth:`stop` or :meth:`shutdown` is called from another
        (or a signal handler); the gRPC server, if any, on a thread of its own."""
        self._started = True
        self.finaliser.start()
        if self.grpc is not None:
            self.grpc.start()
        self._prober.submit(self._probe_now)  # opens the probe's connections early
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._ran.set()

    def start(self) -> OtlpReceiver:
        """Serves on a background thread."""
        self._started = True
        self._thread = threading.Thread(
            target=self.serve_forever, name="pgtrail-otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    @property
    def serving(self) -> bool:
        """True while the background thread serves."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the background thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, *, force: bool = False) -> None:
        """Asks the server to stop: no new connections, requests in flight finish.

        Safe from a signal handler; :meth:`shutdown` does the rest.

        Args:
            force: Stop waiting for the requests in flight too.
        """
        self._server.should_exit = True
        if force:
            self._server.force_exit = True
        if self.grpc is not None:
            self.grpc.stop(force=force)

    def shutdown(self) -> None:
        """Stops serving, lets the requests (and gRPC calls) in flight finish, finalises the
        traces whose root arrived, and flushes the writer."""
        self.stop()
        if self._started:
            self._ran.wait(self.limits.shutdown_timeout_s + 5)
        if self._thread is not None:
            self._thread.join(5)
        self._socket.close()
        if self.grpc is not None:
            self.grpc.close()  # drained alongside HTTP: both were asked to stop above
        self._workers.shutdown(wait=True)
        self.finaliser.stop(finalise_rooted=True)
        self.trail.flush()
        self.assembler.close()
        self._prober.shutdown(wait=False, cancel_futures=True)
        self._probe_buffer.close()

    # -- health and metrics ----------------------------------------------------------------

    def metrics(self, probe: Probe) -> ReceiverMetrics:
        """A snapshot of the receiver's counters.

        Args:
            probe: What Redis and the span journal answered (see :class:`Probe`).
        """
        with self._stats_lock:
            stats = self.stats
            return ReceiverMetrics(
                responses=dict(stats.responses),
                spans_accepted=stats.spans_accepted,
                spans_refused={
                    "invalid": stats.spans_rejected,
                    "redis_unavailable": stats.spans_unheld,
                    "journal_unavailable": stats.spans_unjournalled,
                },
                exports_in_progress=self.exports_in_progress,
                redis_up=probe.traces_pending is not None,
                traces_pending=probe.traces_pending,
                journal=probe.journal,
                journal_up=probe.journal_up,
            )

    def _probe_now(self) -> Probe:
        """Asks Redis and the span journal how they are (on the probe thread)."""
        try:
            pending: int | None = self._probe_buffer.pending()
        except AssemblyUnavailableError as exc:
            log.debug("pgtrail otlp: Redis probe failed: %s", exc)
            pending = None
        if not self.assembler.durable:
            return Probe(traces_pending=pending, journal=None, journal_up=None)
        try:
            counts = self.assembler.journal_counts()
        except AssemblyUnavailableError as exc:
            log.debug("pgtrail otlp: journal probe failed: %s", exc)
            return Probe(traces_pending=pending, journal=None, journal_up=False)
        return Probe(traces_pending=pending, journal=counts, journal_up=True)

    async def _ask(self) -> Probe:
        """What Redis and the journal answer; down when they do not within a few seconds.

        Requests arriving while a probe runs share its answer: a crowd of health checks
        against a silent Redis costs one probe, not one thread each.
        """
        if self._probe_future is None or self._probe_future.done():
            self._probe_future = asyncio.wrap_future(self._prober.submit(self._probe_now))
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                return await asyncio.shield(self._probe_future)
        except (TimeoutError, RuntimeError):  # RuntimeError: the prober is shut down
            return Probe(
                traces_pending=None,
                journal=None,
                journal_up=False if self.assembler.durable else None,
            )

    async def _health(self, headers: dict[str, str], send: Send) -> None:
        """``GET /health``: 200 while spans can be taken, 503 while Redis or (when durable)
        the span journal in PostgreSQL is unreachable, or the gRPC server (when there is
        one) has stopped serving.

        Like every ``GET`` route it asks for no token, whatever ``token`` is: load balancers
        and orchestrators probe without credentials, and the answer holds no span content,
        only what is up. The receiver listens on loopback unless told otherwise; when it
        listens wider, so does this.

        Without the journal, PostgreSQL being away is reported (``"postgresql":
        "spooling"``) but is no 503: the writer keeps the rows in its spool. The body is
        JSON when the request accepts ``application/json``, else plain text naming what is
        down.
        """
        probe = await self._ask()
        grpc = None if self.grpc is None else "up" if self.grpc.serving else "down"
        body = _health_body(probe, self.trail.metrics(), grpc)
        status = HTTPStatus.OK if body["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
        if JSON in headers.get("accept", "").lower():
            await _send(send, status, JSON, orjson.dumps(body))
            return
        down = [name for name in ("redis", "postgresql", "grpc") if body.get(name) == "down"]
        text = f"pgtrail OTLP receiver: {' and '.join(down)} down\n" if down else ""
        await _send(send, status, "text/plain", (text or "pgtrail OTLP receiver\n").encode())

    async def _metrics(self, send: Send) -> None:
        """``GET /metrics``: the receiver's and the writer's counters, Prometheus text format.

        No token, like ``/health`` and for the same reasons: scrapers probe without
        credentials and the page holds counts, never span content.
        """
        receiver = self.metrics(await self._ask())
        page = render(receiver, self.trail.metrics())
        await _send(send, HTTPStatus.OK, METRICS_CONTENT_TYPE, page)

    def _count_response(self, path: str, status: int) -> None:
        route = path if path in _ROUTES else json_api.route_name(path) or _OTHER_ROUTE
        with self._stats_lock:
            responses = self.stats.responses
            responses[route, status] = responses.get((route, status), 0) + 1

    # -- one request -----------------------------------------------------------------------

    def export(self, body: bytes, content_type: str) -> Accepted:
        """Decodes and holds one request's spans; returns what became of them.

        When the receiver is durable it returns once the spans are committed to the span
        journal: an answer of success may follow.

        Args:
            body: The request body, decompressed.
            content_type: ``application/json`` for OTLP/JSON; anything else is protobuf.

        Raises:
            OtlpDecodeError: The body is not an OTLP trace request; nothing was held.
            AssemblyUnavailableError: Redis (or, a :class:`JournalUnavailableError`, the span
                journal) is unreachable; nothing was held.
        """
        decoded: Decoded = decode_protobuf(body) if content_type != JSON else decode_json(body)
        try:
            accepted = self.assembler.accept(decoded.spans)
        except JournalUnavailableError:
            with self._stats_lock:
                self.stats.spans_unjournalled += len(decoded.spans)
            raise
        except AssemblyUnavailableError:
            with self._stats_lock:
                self.stats.spans_unheld += len(decoded.spans)
            raise
        with self._stats_lock:
            self.stats.spans_accepted += accepted
            self.stats.spans_rejected += decoded.rejected
        return Accepted(rejected=decoded.rejected, reason=decoded.reason)

    def _export_raw(self, raw: bytes, encoding: str, content_type: str) -> Accepted:
        """Decompresses (on a worker thread, like decoding: both take CPU) and exports."""
        if encoding in ("gzip", "deflate"):
            raw = _decompress(raw, encoding, self.max_body_bytes)
        return self.export(raw, content_type)

    # -- the door for other transports (pgtrail.otlp.intake.Intake) -------------------------

    def authorised(self, authorization: str) -> bool:
        """Whether an ``Authorization`` value carries the receiver's bearer token.

        Always True when the receiver has no token.

        Args:
            authorization: The value as sent (``Bearer <token>``), empty when none was.
        """
        if self.token is None:
            return True
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    @property
    def exports_in_progress(self) -> int:
        """Exports decoding, assembling or waiting for a worker now, over every transport."""
        return self._pending + self._elsewhere

    def busy_reason(self) -> str | None:
        """Why the receiver takes no more exports now, or None when it takes them.

        It is busy while ``limits.max_pending_exports`` exports are in progress (HTTP and
        gRPC together) or the writer's queue is full.
        """
        pending = self.exports_in_progress
        if pending >= self.limits.max_pending_exports:
            return f"{pending} exports are being handled already; retry later"
        if self.queue_depth is not None:
            depth = self.queue_depth()
            if depth >= self.trail.settings.queue_size:
                return f"the writer's queue is full ({depth:,} records); retry later"
        return None

    def begin_export(self) -> None:
        """Takes a place among the exports in progress for another transport's export;
        :meth:`end_export` gives it back.

        Raises:
            ReceiverBusyError: The receiver is busy (see :meth:`busy_reason`); nothing
                was taken.
        """
        with self._elsewhere_lock:
            reason = self.busy_reason()
            if reason is not None:
                raise ReceiverBusyError(reason, BUSY_RETRY_AFTER_S)
            self._elsewhere += 1

    def end_export(self) -> None:
        """Gives back the place :meth:`begin_export` took (from any thread)."""
        with self._elsewhere_lock:
            self._elsewhere -= 1

    def count_answer(self, route: str, code: int, *, refused: bool) -> None:
        """Counts one request another transport answered, in :attr:`stats` and ``/metrics``.

        Args:
            route: The ``route`` label it is counted under (``grpc``).
            code: The status code answered (for gRPC, its numeric status code).
            refused: It was answered with an error.
        """
        with self._stats_lock:
            stats = self.stats
            stats.requests += 1
            stats.refused += int(refused)
            stats.responses[route, code] = stats.responses.get((route, code), 0) + 1

    def _count_refusal(self) -> None:
        with self._stats_lock:
            self.stats.refused += 1

    def _count_request(self) -> None:
        with self._stats_lock:
            self.stats.requests += 1

    # -- the ASGI application ------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"])

        async def counted(message: Message) -> None:
            # Counted as the answer starts: before the client can see it, so a scrape that
            # follows an answer always includes it.
            if message["type"] == "http.response.start":
                self._count_response(path, int(message["status"]))
            await send(message)

        await self._route(scope, path, receive, counted)

    async def _route(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        method = str(scope["method"])
        if method == "POST":
            await self._post(path, headers, receive, send)
            return
        if method in ("GET", "HEAD") and path == HEALTH_PATH:
            await self._health(headers, send)
            return
        if method in ("GET", "HEAD") and path == METRICS_PATH:
            await self._metrics(send)
            return
        if method in ("GET", "HEAD") and path == "/":
            await _send(send, HTTPStatus.OK, "text/plain", b"pgtrail OTLP receiver\n")
            return
        refusal: _Refusal
        if path == TRACES_PATH:
            refusal = _Refusal(
                HTTPStatus.METHOD_NOT_ALLOWED,
                _UNIMPLEMENTED,
                f"{TRACES_PATH} takes POST",
                {"Allow": "POST"},
            )
        else:
            refusal = _not_found(path)
        await self._refuse(send, refusal, JSON, headers, receive, body_read=False)

    async def _post(self, path: str, headers: dict[str, str], receive: Receive, send: Send) -> None:
        self._count_request()
        if json_api.handles(path):  # executions as plain JSON: see _post_json below
            await _post_json(self, path, headers, receive, send)
            return
        content_type = _media_type(headers.get("content-type", ""))
        answer_type = PROTOBUF if content_type in _PROTOBUF_TYPES else JSON
        body_read = False
        try:
            if path != TRACES_PATH:
                raise _not_found(path)
            self._check_token(headers.get("authorization", ""))
            if content_type not in _PROTOBUF_TYPES and content_type != JSON:
                raise _Refusal(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    _INVALID_ARGUMENT,
                    f"Content-Type {content_type or '(none)'!r} is not supported; "
                    f"send {PROTOBUF} or {JSON}",
                )
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "", "gzip", "deflate"):
                raise _Refusal(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    _INVALID_ARGUMENT,
                    f"Content-Encoding {encoding!r} is not supported; use gzip or none",
                    close=True,
                )
            raw = await self._body(headers, receive)
            body_read = True
            self._check_busy()  # after the body: a refused one leaves the connection usable
            self._pending += 1
            try:
                accepted = await self._run_export(
                    raw, encoding, JSON if content_type == JSON else PROTOBUF
                )
            finally:
                self._pending -= 1
        except _Disconnected:
            return
        except _Refusal as refusal:
            self._count_refusal()
            await self._refuse(send, refusal, answer_type, headers, receive, body_read=body_read)
            return
        except Exception:  # never a traceback to the client, never a dead connection
            log.exception("pgtrail: OTLP request failed")
            self._count_refusal()
            failure = _Refusal(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                _INTERNAL,
                "internal error; see the receiver's log",
                close=not body_read,
            )
            await self._refuse(send, failure, answer_type, headers, receive, body_read=True)
            return
        body = _success_body(answer_type, accepted.rejected, accepted.reason)
        await _send(send, HTTPStatus.OK, answer_type, body)

    async def _run_export(self, raw: bytes, encoding: str, content_type: str) -> Accepted:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._workers, self._export_raw, raw, encoding, content_type
            )
        except OtlpDecodeError as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, str(exc)) from None
        except JournalUnavailableError as exc:
            raise _Refusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                _UNAVAILABLE,
                f"spans cannot be made durable right now ({exc}); retry later",
                {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
            ) from None
        except AssemblyUnavailableError as exc:
            raise _Refusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                _UNAVAILABLE,
                f"traces cannot be assembled right now ({exc}); retry later",
                {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
            ) from None

    def _check_token(self, given: str) -> None:
        if not self.authorised(given):
            raise _Refusal(
                HTTPStatus.UNAUTHORIZED,
                _UNAUTHENTICATED,
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="pgtrail"'},
            )

    def _check_busy(self) -> None:
        reason = self.busy_reason()
        if reason is not None:
            raise _Refusal(
                HTTPStatus.TOO_MANY_REQUESTS,
                _RESOURCE_EXHAUSTED,
                reason,
                {"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )

    def _queued(self) -> int:
        return self.trail.queued

    def _too_large(self) -> _Refusal:
        return _Refusal(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            _RESOURCE_EXHAUSTED,
            f"request body larger than the {self.max_body_bytes:,}-byte limit",
            close=True,
        )

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        """The request body as sent, within the size limit and the body deadline."""
        limit = self.max_body_bytes
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            length = headers.get("content-length")
            if length is None:
                raise _Refusal(
                    HTTPStatus.LENGTH_REQUIRED,
                    _INVALID_ARGUMENT,
                    "Content-Length is required",
                    close=True,
                )
            if _length(length) > limit:
                raise self._too_large()
        parts: list[bytes] = []
        total = 0
        async for chunk in self._chunks(receive):
            total += len(chunk)
            if total > limit:
                raise self._too_large()
            parts.append(chunk)
        return b"".join(parts)

    async def _chunks(self, receive: Receive) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; a body slower than the deadline is refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refusal(
                    HTTPStatus.REQUEST_TIMEOUT,
                    _DEADLINE_EXCEEDED,
                    f"the body did not arrive within {self.limits.body_timeout_s:g} s",
                    close=True,
                ) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def _discard_body(self, headers: dict[str, str], receive: Receive) -> bool:
        """Reads and drops a refused request's body when small; True when it was read whole
        (the connection may serve the next request)."""
        if "100-continue" in headers.get("expect", "").lower():
            return False  # the client waits for a go-ahead it will not get
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return False
        try:
            length = _length(headers.get("content-length", "0"))
        except _Refusal:
            return False
        if length > self.max_body_bytes:
            return False
        if length == 0:
            return True
        try:
            async for _chunk in self._chunks(receive):
                pass
        except (_Refusal, _Disconnected):
            return False
        return True

    async def _refuse(
        self,
        send: Send,
        refusal: _Refusal,
        answer_type: str,
        headers: dict[str, str],
        receive: Receive,
        *,
        body_read: bool,
    ) -> None:
        if refusal.status >= 500:
            log.warning("pgtrail otlp: %d %s", refusal.status, refusal.message)
        else:
            log.info("pgtrail otlp: %d %s", refusal.status, refusal.message)
        close = refusal.close
        if not close and not body_read:
            close = not await self._discard_body(headers, receive)
        extra = dict(refusal.headers)
        if close:
            extra["Connection"] = "close"
        body = _status_body(answer_type, refusal.code, refusal.message)
        await _send(send, refusal.status, answer_type, body, extra)


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signals to :func:`serve` (which finalises after it)."""

    out_of_descriptors_said = -math.inf

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self.loop_exception)
        await super().serve(sockets)

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Says "out of descriptors" once in a while, not once per refused accept.

        Out of descriptors, asyncio logs a traceback for every connection waiting in the
        backlog (thousands under a flood), pauses accepting for a second, and at shutdown
        each pending resumption fails on the closed socket.
        """
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            now = loop.time()
            if now - self.out_of_descriptors_said >= 10:
                self.out_of_descriptors_said = now
                log.warning(
                    "pgtrail otlp: cannot accept connections: %s; retrying every second "
                    "(raise the open-file limit or lower --max-connections)",
                    exc.strerror,
                )
            return
        if isinstance(exc, ValueError) and self.should_exit:
            log.debug("pgtrail otlp: at shutdown: %s", context.get("message"))
            return
        loop.default_exception_handler(context)


_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _protocol_class(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn's keep-alive timer only runs between requests and any byte cancels it, so a
    client sending headers a byte at a time would hold its connection for ever.
    """

    class HeaderDeadlineProtocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self.header_timer is None and self.conn.their_state is h11.IDLE:
                self.arm_header_timer()  # the first byte of a request
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self.cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.cancel_header_timer()
            super().connection_lost(exc)

        def arm_header_timer(self) -> None:
            self.cancel_header_timer()
            self.header_timer = self.loop.call_later(header_timeout_s, self.headers_overdue)

        def cancel_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_overdue(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info(
                    "pgtrail otlp: closed a connection that sent no complete headers in %g s",
                    header_timeout_s,
                )
                self.transport.close()

    return HeaderDeadlineProtocol


def _listen(host: str, port: int, *, reuse_port: bool, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio disables Nagle only on sockets that name it, and with
    # Nagle a body written after its headers waits out the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined with commas."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


async def _send(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    # Names keep their case on the wire (h11 writes them as given), as clients may show them.
    raw = [
        (b"Content-Type", content_type.encode()),
        (b"Content-Length", str(len(body)).encode()),
    ]
    raw += [(k.encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": int(status), "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def raise_descriptor_limit(needed: int) -> int:
    """Raises this process's open-file limit towards ``needed`` (up to the hard limit).

    Args:
        needed: Descriptors wanted: connections plus what the writer and Redis use.

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def _length(header: str) -> int:
    """A Content-Length value (h11 has refused differing repeats and non-numbers)."""
    try:
        return int(header.split(",")[0].strip())
    except ValueError:
        raise _Refusal(
            HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "Content-Length is not a number", close=True
        ) from None


def _not_found(path: str) -> _Refusal:
    return _Refusal(
        HTTPStatus.NOT_FOUND, _NOT_FOUND, f"{path.split('?')[0]!r} not found; use {TRACES_PATH}"
    )


def _media_type(header: str) -> str:
    return header.split(";")[0].strip().lower()


def _decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    """A gzip body (every member of it) or a deflate one, inflated within ``limit`` bytes."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    too_large = _Refusal(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        _RESOURCE_EXHAUSTED,
        f"request body larger than the {limit:,}-byte limit",
    )
    out = bytearray()
    data = raw
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise _Refusal(
                HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, f"body is not valid {encoding}: {exc}"
            ) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large
        if not inflater.eof:
            raise _Refusal(
                HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, f"{encoding} body is truncated"
            )
        data = inflater.unused_data
        # gzip allows several members one after the other (RFC 1952 2.2); deflate one stream.
        if encoding != "gzip" or not data:
            return bytes(out)


def _health_body(probe: Probe, writer: WriterMetrics, grpc: str | None) -> dict[str, Any]:
    """What ``/health`` says in JSON: overall status, then each dependency, then the gRPC
    server's state (``up`` or ``down``; absent when gRPC is not served)."""
    redis_up = probe.traces_pending is not None
    if probe.journal_up is None:  # not durable: the writer's spool rides out PostgreSQL
        postgresql = "up" if writer.postgresql_up else "spooling"
    else:
        postgresql = "up" if probe.journal_up else "down"
    ok = redis_up and postgresql != "down" and grpc != "down"
    body: dict[str, Any] = {
        "status": "ok" if ok else "unavailable",
        "redis": "up" if redis_up else "down",
        "postgresql": postgresql,
        "spool_files": writer.spool_files,
        "queue_depth": writer.queue_depth,
    }
    if probe.journal is not None:
        body["journal_spans"] = probe.journal.waiting
        body["journal_stuck_spans"] = probe.journal.stuck
    if grpc is not None:
        body["grpc"] = grpc
    return body


def _success_body(answer_type: str, rejected: int, reason: str) -> bytes:
    if answer_type == JSON:
        if not rejected:
            return b"{}"
        partial = {"rejectedSpans": str(rejected), "errorMessage": reason}
        return orjson.dumps({"partialSuccess": partial})
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = reason
    encoded: bytes = response.SerializeToString()
    return encoded


def _status_body(answer_type: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (code, message) in the request's encoding."""
    if answer_type == JSON:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    # Field 1 (code) and field 2 (message) of google.rpc.Status.
    return varint_field(1, code) + bytes_field(2, text)


def serve(
    trail: Trail,
    *,
    on_ready: Callable[[OtlpReceiver], None] | None = None,
    **options: Any,
) -> None:
    """Runs a receiver until SIGTERM or SIGINT, then shuts it down cleanly.

    The first signal stops accepting and lets the requests in flight finish; a second one
    stops waiting for them. Then the traces whose root arrived are finalised and the writer
    is flushed.

    Args:
        trail: The writer rows are enqueued into.
        on_ready: Called with the receiver once it listens.
        **options: Keyword arguments of :class:`OtlpReceiver`.
    """
    receiver = OtlpReceiver(trail, **options)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        receiver.stop(force=stopping.is_set())
        stopping.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for handled in (signal.SIGTERM, signal.SIGINT):
            previous[handled] = signal.signal(handled, on_signal)
    try:
        receiver.start()
        if on_ready is not None:
            on_ready(receiver)
        while receiver.serving:
            receiver.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.shutdown()
        for handled, handler in previous.items():
            signal.signal(handled, handler)


# -- the JSON API (pgtrail.jsonapi) on the same port ---------------------------------------------

_json_apis: weakref.WeakKeyDictionary[OtlpReceiver, json_api.JsonApi] = weakref.WeakKeyDictionary()
_json_apis_lock = threading.Lock()


def json_api_of(receiver: OtlpReceiver) -> json_api.JsonApi:
    """The receiver's JSON API (``/v1/executions``), made on its first use.

    Args:
        receiver: The receiver serving it.
    """
    with _json_apis_lock:
        api = _json_apis.get(receiver)
        if api is None:
            api = _json_apis[receiver] = json_api.JsonApi(receiver.trail)
        return api


async def _post_json(
    receiver: OtlpReceiver, path: str, headers: dict[str, str], receive: Receive, send: Send
) -> None:
    """A ``POST`` under ``/v1/executions``: behind the receiver's token, size limit,
    compression and backpressure, as a trace export is; validating and enqueueing run on
    the export workers, and the wait for durability on the loop (a flush shared with the
    requests waiting beside it), so no worker is held while the writer writes."""
    body_read = False
    try:
        receiver._check_token(headers.get("authorization", ""))
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "deflate"):
            raise _Refusal(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _INVALID_ARGUMENT,
                f"Content-Encoding {encoding!r} is not supported; use gzip or none",
                close=True,
            )
        raw = await receiver._body(headers, receive)
        body_read = True
        receiver._check_busy()
        receiver._pending += 1
        try:
            api = json_api_of(receiver)
            work = functools.partial(_json_accept, api, receiver.max_body_bytes, path, headers)
            loop = asyncio.get_running_loop()
            accepted = await loop.run_in_executor(receiver._workers, work, raw, encoding)
            if isinstance(accepted, json_api.Pending):
                accepted = await asyncio.wrap_future(api.acknowledge(accepted))
        finally:
            receiver._pending -= 1
    except _Disconnected:
        return
    except _Refusal as refusal:
        receiver._count_refusal()
        await receiver._refuse(send, refusal, JSON, headers, receive, body_read=body_read)
        return
    except Exception:  # never a traceback to the client, never a dead connection
        log.exception("pgtrail: JSON API request failed")
        receiver._count_refusal()
        failure = _Refusal(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            _INTERNAL,
            "internal error; see the receiver's log",
            close=not body_read,
        )
        await receiver._refuse(send, failure, JSON, headers, receive, body_read=True)
        return
    if accepted.status >= 400:
        receiver._count_refusal()
    await _send(send, accepted.status, accepted.content_type, accepted.body, dict(accepted.headers))


def _json_accept(
    api: json_api.JsonApi,
    limit: int,
    path: str,
    headers: dict[str, str],
    raw: bytes,
    encoding: str,
) -> json_api.Answer | json_api.Pending:
    """On a worker: inflates the body, validates it and enqueues its records."""
    if encoding in ("gzip", "deflate"):
        raw = _decompress(raw, encoding, limit)
    return api.accept("POST", path, headers, raw)
