"""The JSON API's routes and answers, independent of any HTTP server.

``POST /v1/executions`` takes a whole execution; ``POST /v1/executions/open``,
``/v1/executions/{id}/events`` and ``/v1/executions/{id}/finish`` build one over many
requests, from any process. :meth:`JsonApi.handle` answers one request (method, path,
headers, body) with an :class:`Answer`; a server that must not block splits it in two:
:meth:`JsonApi.accept` (validates and enqueues, on a worker thread) and
:meth:`JsonApi.acknowledge` (a future that resolves once the records are durable).

Answers (JSON): 201 for a whole or opened execution, 200 for events and a finish, once
every record is committed to PostgreSQL or fsynced into the writer's spool (``"stored":
"postgresql"`` or ``"spool"``; ``"redis"`` when only processes were added to an open
execution). Events that do not validate are left out and listed in ``rejected`` with their
path and fields; the rest is stored. Errors carry ``{"code", "message"}`` (google.rpc codes,
as the OTLP routes): 400 for a body that is not JSON or a malformed execution or process
field (``errors`` names each; nothing is stored), or when every event was rejected and
nothing else was stored; 404 for an unknown route or execution; 405 for another method; 415
for another content type; 422 for an ``Idempotency-Key`` reused with another body; 503 with
``Retry-After`` while Redis is unreachable or when the records could not be made durable.
Transport rules (token, size, compression, backpressure) are the server's.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

from pgtrail.jsonapi import EXECUTIONS_PATH
from pgtrail.jsonapi.ack import DEFAULT_TIMEOUT_S, Durability, SharedFlush
from pgtrail.jsonapi.bodies import (
    AppendIn,
    BodyError,
    ExecutionIn,
    FieldError,
    FinishIn,
    OpenIn,
    RejectedEvent,
    parse_body,
)
from pgtrail.jsonapi.idempotency import (
    HEADER,
    Derivation,
    InvalidKeyError,
    KeyReusedError,
    KeyStore,
    KeyStoreUnavailableError,
    body_fingerprint,
    parse_key,
)
from pgtrail.jsonapi.records import (
    NotFoundError,
    Stamp,
    Stored,
    UnavailableError,
    append,
    finish,
    open_execution,
    store_whole,
)
from pgtrail.shared_state import database_namespace
from pgtrail.trail import Trail

log = logging.getLogger("pgtrail")

WHOLE_ROUTE = EXECUTIONS_PATH
"""A whole execution at once."""
OPEN_ROUTE = f"{EXECUTIONS_PATH}/open"
"""Opens an execution that later requests add to."""
EVENTS_ROUTE = f"{EXECUTIONS_PATH}/{{execution_id}}/events"
"""Adds processes and events to an execution."""
FINISH_ROUTE = f"{EXECUTIONS_PATH}/{{execution_id}}/finish"
"""Finishes an execution."""
ROUTES = frozenset({WHOLE_ROUTE, OPEN_ROUTE, EVENTS_ROUTE, FINISH_ROUTE})
"""Every route, as metrics label them."""
JSON = "application/json"
RETRY_AFTER_S = 5
"""Seconds a client is asked to wait before retrying a 503."""
DEFAULT_LOOKUP_TIMEOUT_S = 1.0
"""Longest wait for a finished execution's stored row (see :meth:`pgtrail.Trail.join`)."""

# google.rpc.Code values, as the OTLP routes answer them.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_UNIMPLEMENTED = 12
_INTERNAL = 13
_UNAVAILABLE = 14


@dataclass(frozen=True)
class Answer:
    """An HTTP answer."""

    status: int
    """The status code."""
    body: bytes
    """The body, JSON."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers besides Content-Type and Content-Length."""
    content_type: str = JSON
    """The body's media type."""


@dataclass(frozen=True)
class Route:
    """A path matched to one of :data:`ROUTES`."""

    name: str
    """The route, e.g. :data:`EVENTS_ROUTE`."""
    execution_id: uuid.UUID | None
    """The execution the path names, or None."""


@dataclass(frozen=True)
class Pending:
    """A request whose records are enqueued: its answer, once they are durable."""

    status: int
    """The status to answer when they are."""
    document: dict[str, Any]
    """The answer's body, without ``stored``."""
    writes: bool
    """Whether records went to the writer (else the answer needs no wait)."""
    after_durable: Callable[[], None] | None
    """What to do once they are durable, or None."""
    on_answer: Callable[[Answer], None] | None = None
    """Called with the answer once it is known (keeps it for the key's retries), or None."""

    def answer(self, durability: Durability | None) -> Answer:
        """The answer, given what the flush achieved.

        Args:
            durability: What the flush the request waited for achieved; None when the
                request wrote nothing to the writer.
        """
        if durability is None:
            return _json(self.status, {**self.document, "stored": "redis"})
        if not durability.durable:
            message = (
                f"the records are not confirmed durable ({durability.reason}); retry: a "
                "retry with the same Idempotency-Key or ids stores nothing twice"
            )
            extra = {"execution_id": self.document.get("execution_id")}
            return _error(
                HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, message, retry=True, **extra
            )
        stored = "spool" if durability.spooled else "postgresql"
        return _json(self.status, {**self.document, "stored": stored})


def handles(path: str) -> bool:
    """Whether ``path`` belongs to the JSON API.

    Args:
        path: The request's path, without its query.
    """
    return path == EXECUTIONS_PATH or path.startswith(EXECUTIONS_PATH + "/")


def route_name(path: str) -> str | None:
    """The route ``path`` takes, as metrics label it; None for no route of the API.

    Args:
        path: The request's path, without its query.
    """
    try:
        return _match(path).name
    except _Refused:
        return None


def _match(path: str) -> Route:
    """The route ``path`` takes (one trailing slash is ignored); 404 for no route."""
    trimmed = path[:-1] if path.endswith("/") and path != "/" else path
    if trimmed == WHOLE_ROUTE:
        return Route(WHOLE_ROUTE, None)
    if trimmed == OPEN_ROUTE:
        return Route(OPEN_ROUTE, None)
    parts = trimmed.removeprefix(EXECUTIONS_PATH + "/").split("/")
    if len(parts) == 2 and parts[1] in ("events", "finish") and trimmed.startswith(EXECUTIONS_PATH):
        try:
            execution_id = uuid.UUID(parts[0])
        except ValueError:
            raise _Refused(
                HTTPStatus.NOT_FOUND, _NOT_FOUND, f"{parts[0]!r} is not an execution id"
            ) from None
        return Route(EVENTS_ROUTE if parts[1] == "events" else FINISH_ROUTE, execution_id)
    routes = ", ".join(sorted(ROUTES))
    raise _Refused(HTTPStatus.NOT_FOUND, _NOT_FOUND, f"{path!r} not found; the routes: {routes}")


class _Refused(Exception):
    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.answer = _error(status, code, message, **extra)


class JsonApi:
    """The JSON API over one client.

    Args:
        trail: The client records go to; its Redis holds open executions and idempotency
            keys, its writer decides when an answer may be given.
        ack_timeout_s: Longest wait for the records to be durable before answering 503.
        lookup_timeout_s: Longest wait for a finished execution's stored row when events are
            added to it.
    """

    def __init__(
        self,
        trail: Trail,
        *,
        ack_timeout_s: float = DEFAULT_TIMEOUT_S,
        lookup_timeout_s: float = DEFAULT_LOOKUP_TIMEOUT_S,
    ) -> None:
        self.trail = trail
        self.lookup_timeout_s = lookup_timeout_s
        self.acks = SharedFlush(trail, ack_timeout_s)
        settings = trail.settings
        self.keys = KeyStore(trail.redis, database_namespace(settings.dsn, settings.db_schema))

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answers one request, once its records are durable (blocks until then).

        Args:
            method: The HTTP method.
            path: The path, without its query.
            headers: The request's headers by lower-case name.
            body: The body, decompressed.
        """
        accepted = self.accept(method, path, headers, body)
        if isinstance(accepted, Answer):
            return accepted
        return self.acknowledge(accepted).result()

    def acknowledge(self, pending: Pending) -> concurrent.futures.Future[Answer]:
        """The answer of an accepted request, once its records are durable.

        Args:
            pending: What :meth:`accept` returned.
        """
        answered: concurrent.futures.Future[Answer] = concurrent.futures.Future()

        def done(flushed: concurrent.futures.Future[Durability]) -> None:
            try:
                answer = pending.answer(flushed.result())
                if pending.on_answer is not None:
                    pending.on_answer(answer)
            except Exception:  # the request must get an answer whatever happened
                log.exception("pgtrail: JSON API acknowledgement failed")
                message = "internal error; see the receiver's log"
                answer = _error(HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL, message)
            answered.set_result(answer)

        self.acks.request(pending.after_durable).add_done_callback(done)
        return answered

    def accept(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer | Pending:
        """Validates a request and enqueues its records; does not wait for the writer.

        Args:
            method: The HTTP method.
            path: The path, without its query.
            headers: The request's headers by lower-case name.
            body: The body, decompressed.

        Returns:
            The answer when there is nothing to wait for (an error, an opened execution, a
            retry whose first attempt succeeded), else what :meth:`acknowledge` needs.
        """
        try:
            route = _match(path)
            if method != "POST":
                raise _Refused(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    _UNIMPLEMENTED,
                    f"{route.name} takes POST",
                    headers={"Allow": "POST"},
                )
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != JSON:
                raise _Refused(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    _INVALID_ARGUMENT,
                    f"Content-Type {media or '(none)'!r} is not supported; send {JSON}",
                )
            return self._accept(route, _parse_json(body), headers, body)
        except _Refused as refused:
            return refused.answer
        except BodyError as exc:
            errors = [_field(e) for e in exc.errors] or [{"field": "body", "message": exc.message}]
            return _error(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, exc.message, errors=errors)
        except InvalidKeyError as exc:
            return _error(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, str(exc))
        except KeyReusedError as exc:
            return _error(HTTPStatus.UNPROCESSABLE_ENTITY, _INVALID_ARGUMENT, str(exc))
        except NotFoundError as exc:
            return _error(HTTPStatus.NOT_FOUND, _NOT_FOUND, str(exc))
        except (UnavailableError, KeyStoreUnavailableError) as exc:
            message = f"{exc}; nothing was stored, retry later"
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, _UNAVAILABLE, message, retry=True)
        except Exception:  # never a traceback to the client
            log.exception("pgtrail: JSON API request failed")
            message = "internal error; see the receiver's log"
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL, message)

    def _accept(
        self, route: Route, document: Any, headers: Mapping[str, str], body: bytes
    ) -> Answer | Pending:
        # The structure is validated before the key is remembered: a corrected body may
        # then be sent with the same key.
        parsed: ExecutionIn | OpenIn | AppendIn | FinishIn
        if route.name == WHOLE_ROUTE:
            parsed = parse_body(ExecutionIn, document)
        elif route.name == OPEN_ROUTE:
            parsed = parse_body(OpenIn, document)
        elif route.name == EVENTS_ROUTE:
            parsed = parse_body(AppendIn, document)
        else:
            parsed = parse_body(FinishIn, document)
        key = parse_key(headers.get(HEADER))
        scope = route.name if route.execution_id is None else f"{route.name}:{route.execution_id}"
        clock = self.trail.clock()
        if clock.tzinfo is None:
            clock = clock.replace(tzinfo=dt.UTC)
        if key is None:
            stamp = Stamp(clock, False, None, clock)
            keep: Callable[[Answer], None] | None = None
        else:
            fingerprint = body_fingerprint(body)
            first = self.keys.first_use(scope, key, fingerprint, clock)
            if first.status is not None and first.answer is not None:
                return Answer(first.status, first.answer, {"Idempotent-Replayed": "true"})
            stamp = Stamp(first.at, True, Derivation(scope, key), clock)

            def keep(answer: Answer) -> None:
                if answer.status < 300:
                    self.keys.remember(scope, key, first, fingerprint, answer.status, answer.body)

        try:
            stored = self._store(route, parsed, stamp)
        except (BodyError, NotFoundError):
            if key is not None:  # nothing was stored: the key stays free for a corrected body
                self.keys.release(scope, key)
            raise
        pending = self._pending(route, stored, keep)
        if isinstance(pending, Pending) and not pending.writes:
            answer = pending.answer(None)
            if keep is not None:
                keep(answer)
            return answer
        return pending

    def _store(
        self, route: Route, parsed: ExecutionIn | OpenIn | AppendIn | FinishIn, stamp: Stamp
    ) -> Stored:
        trail, execution_id = self.trail, route.execution_id
        if isinstance(parsed, ExecutionIn):
            return store_whole(trail, parsed, stamp)
        if isinstance(parsed, OpenIn):
            return open_execution(trail, parsed, stamp)
        assert execution_id is not None  # the path of both routes below names one
        if isinstance(parsed, FinishIn):
            return finish(trail, execution_id, parsed, stamp, self.lookup_timeout_s)
        return append(trail, execution_id, parsed, stamp, self.lookup_timeout_s)

    def _pending(
        self, route: Route, stored: Stored, keep: Callable[[Answer], None] | None
    ) -> Answer | Pending:
        document: dict[str, Any] = {"execution_id": str(stored.execution_id)}
        document.update(stored.details)
        if route.name != OPEN_ROUTE:
            document["accepted"] = {"events": stored.events, "processes": stored.processes}
            document["rejected"] = [_rejected(r) for r in stored.rejected]
        nothing_kept = not stored.events and not stored.processes
        if route.name == EVENTS_ROUTE and stored.rejected and nothing_kept:
            message = f"every event was rejected ({len(stored.rejected)}); nothing was stored"
            return _error(
                HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, message, rejected=document["rejected"]
            )
        created = route.name in (WHOLE_ROUTE, OPEN_ROUTE)
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        return Pending(status, document, stored.writes, stored.after_durable, keep)


def _parse_json(body: bytes) -> Any:
    """The body's JSON document: orjson's reading, else the standard library's (which takes
    lone surrogates in strings, as Python's own writer does: the writer then cleans and
    marks them), never NaN or infinities.

    Raises:
        _Refused: The body is not JSON (400).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first = exc
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        message = f"the body is not valid JSON: {first}"
        raise _Refused(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, message) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _field(error: FieldError) -> dict[str, str]:
    return {"field": error.field, "message": error.message}


def _rejected(event: RejectedEvent) -> dict[str, Any]:
    return {
        "path": event.path,
        "index": event.index,
        "errors": [_field(e) for e in event.errors],
    }


def _json(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Answer:
    return Answer(int(status), orjson.dumps(document), dict(headers or {}))


def _error(
    status: int,
    code: int,
    message: str,
    *,
    retry: bool = False,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Answer:
    sent = dict(headers or {})
    if retry:
        sent["Retry-After"] = str(RETRY_AFTER_S)
    return _json(status, {"code": code, "message": message, **extra}, sent)
