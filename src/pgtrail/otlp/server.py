"""The OTLP/HTTP trace receiver: ``POST /v1/traces``, protobuf or JSON, gzip or not.

It answers as the OTLP/HTTP specification says: 200 with an ``ExportTraceServiceResponse``
(with ``partial_success`` when some spans were left out), 400 with a ``google.rpc.Status``
saying why a body could not be decoded (nothing of it is stored), 401 for a missing or wrong
bearer token, 413 above the size limit, 415 for a content type or encoding it does not speak,
and 503 (which exporters retry) while Redis, where traces assemble, is unreachable.

Spans are handed to the :class:`~pgtrail.otlp.assemble.TraceAssembler`; finished traces go
to the writer, whose queue spills to its on-disk spool under load or while PostgreSQL is
away, so backpressure never drops a span.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from pgtrail.errors import OtlpDecodeError
from pgtrail.otlp import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from pgtrail.otlp.assemble import (
    DEFAULT_GRACE_S,
    DEFAULT_IDLE_S,
    AssemblyUnavailableError,
    Finaliser,
    Mapper,
    TraceAssembler,
)
from pgtrail.otlp.decode import Decoded, decode_json, decode_protobuf
from pgtrail.otlp.mapping import MappingOptions
from pgtrail.trail import Trail

log = logging.getLogger("pgtrail")

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = {PROTOBUF, "application/protobuf"}
_RETRY_AFTER_S = 5

# google.rpc.Code values carried in the error bodies.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_RESOURCE_EXHAUSTED = 8
_UNIMPLEMENTED = 12
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16


class _Refusal(Exception):
    """A request answered with an error status."""

    def __init__(
        self, status: HTTPStatus, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class ReceiverStats:
    """Counters since the receiver started."""

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    refused: int = 0


class OtlpReceiver:
    """An OTLP/HTTP trace receiver feeding ``trail``.

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
    ) -> None:
        self.trail = trail
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.stats = ReceiverStats()
        self._stats_lock = threading.Lock()
        self.assembler = TraceAssembler(trail, grace_s=grace_s, options=options, mapper=mapper)
        self.finaliser = Finaliser(
            self.assembler, idle_s=idle_s, interval_s=min(0.5, max(0.05, grace_s / 4))
        )
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), _Handler, bind_and_activate=False)
        self._httpd.allow_reuse_port = reuse_port
        try:
            self._httpd.server_bind()
            self._httpd.server_activate()
        except OSError:
            self._httpd.server_close()
            raise
        self._httpd.receiver = self
        self._thread: threading.Thread | None = None
        self._started = False

    @property
    def host(self) -> str:
        """The address listened on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        """The URL exporters send traces to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{TRACES_PATH}"

    def serve_forever(self) -> None:
        """Serves on this thread until :meth:`shutdown` is called from another."""
        self._started = True
        self.finaliser.start()
        self._httpd.serve_forever(poll_interval=0.2)

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

    def shutdown(self) -> None:
        """Stops serving, finalises the traces whose root arrived, and flushes the writer."""
        if self._started:  # shutdown() waits for a serve_forever() loop that must exist
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(30)
        self.finaliser.stop(finalise_rooted=True)
        self.trail.flush()
        self.assembler.close()

    # -- one request -----------------------------------------------------------------------

    def export(self, body: bytes, content_type: str) -> tuple[int, str]:
        """Decodes and holds one request's spans; returns (rejected spans, first reason).

        Raises:
            OtlpDecodeError: The body is not an OTLP trace request; nothing was held.
            AssemblyUnavailableError: Redis is unreachable; nothing was held.
        """
        decoded: Decoded = decode_protobuf(body) if content_type != JSON else decode_json(body)
        accepted = self.assembler.accept(decoded.spans)
        with self._stats_lock:
            self.stats.spans_accepted += accepted
            self.stats.spans_rejected += decoded.rejected
        return decoded.rejected, decoded.reason

    def _count_refusal(self) -> None:
        with self._stats_lock:
            self.stats.refused += 1

    def _count_request(self) -> None:
        with self._stats_lock:
            self.stats.requests += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: OtlpReceiver


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    server_version = "pgtrail-otlp"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("pgtrail otlp: %s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.split("?")[0] in ("/", "/health"):
            self._send(HTTPStatus.OK, "text/plain", b"pgtrail OTLP receiver\n")
        elif self.path.split("?")[0] == TRACES_PATH:
            self._refuse(
                _Refusal(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    _UNIMPLEMENTED,
                    f"{TRACES_PATH} takes POST",
                    {"Allow": "POST"},
                ),
                JSON,
            )
        else:
            self._refuse(_not_found(self.path), JSON)

    def do_POST(self) -> None:
        receiver = self.server.receiver
        receiver._count_request()
        content_type = _media_type(self.headers.get("Content-Type", ""))
        answer_type = PROTOBUF if content_type in _PROTOBUF_TYPES else JSON
        try:
            if self.path.split("?")[0] != TRACES_PATH:
                raise _not_found(self.path)
            self._check_token(receiver.token)
            if content_type not in _PROTOBUF_TYPES and content_type != JSON:
                raise _Refusal(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    _INVALID_ARGUMENT,
                    f"Content-Type {content_type or '(none)'!r} is not supported; "
                    f"send {PROTOBUF} or {JSON}",
                )
            body = self._body(receiver.max_body_bytes)
            try:
                rejected, reason = receiver.export(body, JSON if content_type == JSON else PROTOBUF)
            except OtlpDecodeError as exc:
                raise _Refusal(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, str(exc)) from None
            except AssemblyUnavailableError as exc:
                raise _Refusal(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    _UNAVAILABLE,
                    f"traces cannot be assembled right now ({exc}); retry later",
                    {"Retry-After": str(_RETRY_AFTER_S)},
                ) from None
        except _Refusal as refusal:
            receiver._count_refusal()
            self._refuse(refusal, answer_type)
            return
        except Exception:  # never a traceback to the client, never a dead connection
            log.exception("pgtrail: OTLP request failed")
            receiver._count_refusal()
            self._refuse(
                _Refusal(
                    HTTPStatus.INTERNAL_SERVER_ERROR, 13, "internal error; see the receiver's log"
                ),
                answer_type,
            )
            return
        self._send(HTTPStatus.OK, answer_type, _success_body(answer_type, rejected, reason))

    def _check_token(self, token: str | None) -> None:
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise _Refusal(
                HTTPStatus.UNAUTHORIZED,
                _UNAUTHENTICATED,
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="pgtrail"'},
            )

    def _body(self, limit: int) -> bytes:
        """The request body, read within ``limit`` bytes and decompressed within it too."""
        too_large = _Refusal(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            _RESOURCE_EXHAUSTED,
            f"request body larger than the {limit:,}-byte limit",
        )
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "deflate"):
            self.close_connection = True
            raise _Refusal(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _INVALID_ARGUMENT,
                f"Content-Encoding {encoding!r} is not supported; use gzip or none",
            )
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = self._chunked(limit, too_large)
        else:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                self.close_connection = True
                raise _Refusal(
                    HTTPStatus.LENGTH_REQUIRED, _INVALID_ARGUMENT, "Content-Length is required"
                )
            try:
                length = int(length_header)
            except ValueError:
                self.close_connection = True
                raise _Refusal(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "Content-Length is not a number"
                ) from None
            if length > limit:
                self.close_connection = True  # the unread body must not become the next request
                raise too_large
            raw = self.rfile.read(length) if length > 0 else b""
            if len(raw) != length:
                self.close_connection = True
                raise _Refusal(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "body shorter than Content-Length"
                )
        if encoding in ("gzip", "deflate"):
            return _decompress(raw, encoding, limit, too_large)
        return raw

    def _chunked(self, limit: int, too_large: _Refusal) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _Refusal(
                    HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, "malformed chunked body"
                ) from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise too_large
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _refuse(self, refusal: _Refusal, answer_type: str) -> None:
        if refusal.status >= 500:
            log.warning("pgtrail otlp: %d %s", refusal.status, refusal.message)
        else:
            log.info("pgtrail otlp: %d %s", refusal.status, refusal.message)
        body = _status_body(answer_type, refusal.code, refusal.message)
        self._send(refusal.status, answer_type, body, refusal.headers)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _not_found(path: str) -> _Refusal:
    return _Refusal(
        HTTPStatus.NOT_FOUND, _NOT_FOUND, f"{path.split('?')[0]!r} not found; use {TRACES_PATH}"
    )


def _media_type(header: str) -> str:
    return header.split(";")[0].strip().lower()


def _decompress(raw: bytes, encoding: str, limit: int, too_large: _Refusal) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise _Refusal(
            HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, f"body is not valid {encoding}: {exc}"
        ) from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise too_large
    if not inflater.eof:
        raise _Refusal(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, f"{encoding} body is truncated")
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
    # Field 1 (code, varint) and field 2 (message, length-delimited) of google.rpc.Status.
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def serve(
    trail: Trail,
    *,
    on_ready: Callable[[OtlpReceiver], None] | None = None,
    **options: Any,
) -> None:
    """Runs a receiver on this thread until interrupted, then shuts it down cleanly."""
    receiver = OtlpReceiver(trail, **options).start()
    if on_ready is not None:
        on_ready(receiver)
    try:
        while receiver.serving:
            receiver.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.shutdown()
