"""Which execution and process we are in, here and across processes.

In-process, two context variables hold the current execution and the current process
(span); they follow ``await`` and asyncio tasks. Across processes, Redis holds each open
execution: a hash of its metadata, a list of finished process records, and a sorted set of
open executions by last activity (for ``pgtrail sweep``). W3C ``traceparent`` headers carry
the execution id (as the trace id) and the current span between services.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pgtrail.ids import new_span_id

if TYPE_CHECKING:
    from types import ModuleType

    import redis

    from pgtrail.trail import Trail

log = logging.getLogger("pgtrail")

TTL_S = 7 * 24 * 3600
_REDIS_RETRY_S = 5.0

REDIS_ERRORS: tuple[type[Exception], ...] = (OSError,)
"""What a failing Redis call raises; complete once the client is first made."""


def _import_redis() -> ModuleType:
    # redis-py takes over a second to import (it loads its asyncio client too); commands that
    # never touch Redis should not pay for it.
    global REDIS_ERRORS
    import redis

    REDIS_ERRORS = (redis.RedisError, OSError)
    return redis


@dataclass
class Span:
    """One process (step) of an execution."""

    span_id: str
    parent_span_id: str | None
    name: str
    nesting_level: int
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    status: str = "running"
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """The element stored in ``processes_executed``."""
        duration = None
        if self.ended_at is not None:
            duration = max(0, round((self.ended_at - self.started_at).total_seconds() * 1000))
        return {
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "nesting_level": self.nesting_level,
            "started_at": self.started_at.isoformat(),
            "duration_ms": duration,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class ExecutionState:
    """An execution as this process sees it: opened here (root) or joined."""

    trail: Trail
    execution_id: uuid.UUID
    workflow: str
    tenant_id: str
    user_id: str | None
    session_id: str | None
    context: dict[str, Any]
    parent_execution_id: uuid.UUID | None
    started_at: dt.datetime
    is_root: bool
    root_span: Span
    spans: list[Span] = field(default_factory=list)
    open_spans: list[Span] = field(default_factory=list)
    status: str = "success"
    error: str | None = None
    llm_context: dict[str, Any] = field(default_factory=dict)
    # ``llm_context`` as JSON object members, added to each LLM record's particular_data;
    # None when it is not clean JSON (the writer then cleans the dictionary itself).
    llm_members: str | None = None
    # The id as the writer stores it. Records are stamped with this string, not the UUID
    # object: a stamp of plain values leaves the garbage collector's lists at its first pass,
    # which matters while thousands of records wait in the queue.
    execution_hex: str = field(init=False)

    def __post_init__(self) -> None:
        self.execution_hex = self.execution_id.hex

    def meta(self) -> dict[str, str]:
        """The Redis hash of an open execution."""
        return {
            "workflow": self.workflow,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id or "",
            "session_id": self.session_id or "",
            "context": json.dumps(self.context, default=str),
            "parent_execution_id": str(self.parent_execution_id or ""),
            "started_at": self.started_at.isoformat(),
            "root_span_id": self.root_span.span_id,
        }


_execution: contextvars.ContextVar[ExecutionState | None] = contextvars.ContextVar(
    "pgtrail_execution", default=None
)
_span: contextvars.ContextVar[Span | None] = contextvars.ContextVar("pgtrail_span", default=None)

# Threads do not inherit context variables. A thread started inside an execution finds it
# here when it is the only one open in the process; with several open, we do not guess.
_open_lock = threading.Lock()
_open: dict[uuid.UUID, ExecutionState] = {}


def current() -> tuple[ExecutionState | None, Span | None]:
    """The current execution and process, or (None, None)."""
    state = _execution.get()
    if state is not None:
        return state, _span.get()
    with _open_lock:
        if len(_open) == 1:
            only = next(iter(_open.values()))
            return only, (only.open_spans[-1] if only.open_spans else only.root_span)
    return None, None


def activate(state: ExecutionState, span: Span) -> tuple[contextvars.Token[Any], ...]:
    """Makes ``state``/``span`` current; returns the tokens that undo it."""
    with _open_lock:
        _open[state.execution_id] = state
    return _execution.set(state), _span.set(span)


def deactivate(state: ExecutionState, tokens: tuple[contextvars.Token[Any], ...]) -> None:
    """Undoes :func:`activate`."""
    exec_token, span_token = tokens
    try:
        _span.reset(span_token)
        _execution.reset(exec_token)
    except ValueError:  # closed from another context (a generator finalised elsewhere)
        _span.set(None)
        _execution.set(None)
    with _open_lock:
        _open.pop(state.execution_id, None)


def push_span(span: Span) -> contextvars.Token[Span | None]:
    """Enters a process."""
    return _span.set(span)


def pop_span(token: contextvars.Token[Span | None]) -> None:
    """Leaves a process."""
    try:
        _span.reset(token)
    except ValueError:
        _span.set(None)


def new_child(parent: Span, name: str, at: dt.datetime) -> Span:
    """A process nested one level under ``parent``."""
    return Span(new_span_id(), parent.span_id, name, parent.nesting_level + 1, at)


# -- W3C trace context --------------------------------------------------------------------


@dataclass(frozen=True)
class TraceContext:
    """What a ``traceparent`` header carries: the execution and the calling process."""

    execution_id: uuid.UUID
    parent_span_id: str | None


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds ``traceparent`` for the current execution and process to ``headers``."""
    state, span = current()
    if state is None:
        return headers
    span_id = (span or state.root_span).span_id
    headers["traceparent"] = f"00-{state.execution_id.hex}-{span_id}-01"
    return headers


def extract(headers: MutableMapping[str, str] | dict[str, str]) -> TraceContext | None:
    """Reads a ``traceparent`` header (any case); None when absent or malformed."""
    value = next((v for k, v in headers.items() if k.lower() == "traceparent"), None)
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        execution_id = uuid.UUID(hex=parts[1])
        int(parts[2], 16)
    except ValueError:
        return None
    if execution_id.int == 0 or parts[2] == "0" * 16:
        return None
    return TraceContext(execution_id, parts[2])


# -- Redis-held open executions -------------------------------------------------------------


class RedisState:
    """Open executions in Redis; every operation degrades to a no-op when Redis is down."""

    def __init__(self, url: str | None, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client: redis.Redis | None = None
        self._down_until = 0.0
        self._warned = False
        if url is None:
            log.info("pgtrail: Redis is off; single-process mode (executions cannot be joined)")

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def client(self) -> redis.Redis | None:
        """The Redis client, or None while Redis is off or recently failed."""
        if self.url is None or time.monotonic() < self._down_until:
            return None
        if self._client is None:
            self._client = _import_redis().Redis.from_url(
                self.url, socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True
            )
        return self._client

    def failed(self, exc: Exception) -> None:
        """Notes a Redis failure: calls back off for a while and it is said once."""
        self._down_until = time.monotonic() + _REDIS_RETRY_S
        if not self._warned:
            self._warned = True
            log.warning(
                "pgtrail: Redis at %s unavailable (%s); logging goes on in single-process mode",
                self.url,
                exc,
            )

    def key(self, execution_id: uuid.UUID | str, suffix: str = "") -> str:
        """The Redis key of an execution's state (``suffix`` picks one of its parts)."""
        return f"{self.prefix}ex:{execution_id}{suffix}"

    def open(self, state: ExecutionState) -> None:
        """Publishes a new execution so other processes can join it."""
        client = self.client()
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hset(self.key(state.execution_id), mapping=cast("Mapping[Any, Any]", state.meta()))
            pipe.expire(self.key(state.execution_id), TTL_S)
            pipe.zadd(f"{self.prefix}open", {str(state.execution_id): time.time()})
            pipe.execute()
        except REDIS_ERRORS as exc:
            self.failed(exc)

    def load(self, execution_id: uuid.UUID) -> dict[str, str] | None:
        """The metadata of an open execution, or None (unknown, finished, or Redis down)."""
        client = self.client()
        if client is None:
            return None
        try:
            meta: dict[str, str] = client.hgetall(self.key(execution_id))  # type: ignore[assignment]
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return None
        return meta or None

    def push_spans(self, execution_id: uuid.UUID, records: list[dict[str, Any]]) -> bool:
        """Appends finished process records; False when they could not be stored."""
        client = self.client()
        if client is None or not records:
            return False
        try:
            pipe = client.pipeline(transaction=False)
            key = self.key(execution_id, ":procs")
            pipe.rpush(key, *[json.dumps(r, default=str) for r in records])
            pipe.expire(key, TTL_S)
            pipe.zadd(f"{self.prefix}open", {str(execution_id): time.time()}, xx=True)
            pipe.execute()
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return False
        return True

    def spans(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        """Process records pushed by every process of this execution."""
        client = self.client()
        if client is None:
            return []
        try:
            raw: list[str] = client.lrange(self.key(execution_id, ":procs"), 0, -1)  # type: ignore[assignment]
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return []
        return [json.loads(item) for item in raw]

    def claim_final(self, execution_id: uuid.UUID) -> bool:
        """True for the one caller allowed to write the execution's row (or Redis down)."""
        client = self.client()
        if client is None:
            return True
        try:
            return bool(client.set(self.key(execution_id, ":final"), "1", nx=True, ex=TTL_S))
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return True

    def forget(self, execution_id: uuid.UUID) -> None:
        """Removes a finalised execution (its ``:final`` marker stays until its TTL)."""
        client = self.client()
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            pipe.delete(self.key(execution_id), self.key(execution_id, ":procs"))
            pipe.zrem(f"{self.prefix}open", str(execution_id))
            pipe.execute()
        except REDIS_ERRORS as exc:
            self.failed(exc)

    def idle(self, older_than_s: float) -> list[uuid.UUID]:
        """Open executions with no activity for ``older_than_s`` seconds."""
        client = self.client()
        if client is None:
            return []
        try:
            ids: list[str] = client.zrangebyscore(  # type: ignore[assignment]
                f"{self.prefix}open", "-inf", time.time() - older_than_s
            )
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return []
        return [uuid.UUID(i) for i in ids]

    def reset_after_fork(self) -> None:
        """Drops the parent's socket."""
        self._client = None

    def close(self) -> None:
        """Closes the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None


def merge_process_records(records: list[dict[str, Any]], root_span_id: str) -> list[dict[str, Any]]:
    """One record per span (finished beats running), in start order, levels from the tree."""
    by_span: dict[str, dict[str, Any]] = {}
    for record in records:
        known = by_span.get(record["span_id"])
        if known is None or (
            known.get("status") == "running" and record.get("status") != "running"
        ):
            by_span[record["span_id"]] = record
    parents = {sid: rec.get("parent_span_id") for sid, rec in by_span.items()}

    def level(span_id: str) -> int:
        depth, current_id, seen = 0, span_id, set()
        while current_id != root_span_id:
            parent = parents.get(current_id)
            if parent is None or parent in seen:
                # A parent this execution never recorded (another service's span): one level
                # below its own recorded level, at least under the root.
                return max(depth + 1, int(by_span[span_id].get("nesting_level") or 1))
            seen.add(current_id)
            current_id = parent
            depth += 1
        return depth

    merged = sorted(by_span.values(), key=lambda r: (r["started_at"], r["nesting_level"]))
    for record in merged:
        record["nesting_level"] = level(record["span_id"])
    return merged


def json_dict(raw: str | None) -> dict[str, Any]:
    """A JSON object held in Redis metadata, or ``{}`` when absent or not an object."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
