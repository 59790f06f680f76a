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
import math
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pgtrail.ids import new_span_id
from pgtrail.writer.redact import as_pseudonym
from pgtrail.writer.sanitize import Sanitizer, dumps

if TYPE_CHECKING:
    from types import ModuleType

    import redis

    from pgtrail.config import Settings
    from pgtrail.trail import Trail
    from pgtrail.writer.redact import Redactor

log = logging.getLogger("pgtrail")

TTL_S = 7 * 24 * 3600
_REDIS_RETRY_S = 5.0

REDIS_ERRORS: tuple[type[Exception], ...] = (OSError,)
"""What a failing Redis call raises; complete once the client is first made."""

REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (OSError,)
"""The part of :data:`REDIS_ERRORS` that means Redis cannot be reached (connection, timeout).

Only these turn Redis off for a while: a command Redis or the client refuses because of one
bad value (``DataError``, ``ResponseError``, an encoding error) says nothing about the
connection, and must not cost every other execution its correlation.
"""

# What goes to Redis is cleaned like what goes to PostgreSQL (one sanitiser, non-strict: the
# strict check of the same values happens on the caller's thread, before they get here).
_CLEAN = Sanitizer()


def _import_redis() -> ModuleType:
    # redis-py takes over a second to import (it loads its asyncio client too); commands that
    # never touch Redis should not pay for it.
    global REDIS_ERRORS, REDIS_DOWN_ERRORS
    import redis

    REDIS_ERRORS = (redis.RedisError, OSError)
    REDIS_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
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
    # Joined: whether the execution was open in Redis at the join (its root merges what is
    # pushed there), and the records of this process's steps that could not be pushed.
    shared: bool = True
    unmerged: list[dict[str, Any]] = field(default_factory=list)
    # The id as the writer stores it. Records are stamped with this string, not the UUID
    # object: a stamp of plain values leaves the garbage collector's lists at its first pass,
    # which matters while thousands of records wait in the queue.
    execution_hex: str = field(init=False)

    def __post_init__(self) -> None:
        self.execution_hex = self.execution_id.hex

    def meta(self, redactor: Redactor | None = None) -> dict[str, str]:
        """The Redis hash of an open execution, every value cleaned by the sanitiser.

        Args:
            redactor: When redaction is on: the workflow and the context are redacted too,
                as in the execution's row (the ids are identifiers, kept).
        """
        meta = {
            "workflow": clean_text(self.workflow, "workflow"),
            "tenant_id": clean_text(self.tenant_id, "tenant_id") or "default",
            "user_id": clean_text(self.user_id, "user_id"),
            "session_id": clean_text(self.session_id, "session_id"),
            "context": clean_json_text(self.context, "context"),
            "parent_execution_id": clean_text(self.parent_execution_id, "parent_execution_id"),
            "started_at": self.started_at.isoformat(),
            "root_span_id": clean_text(self.root_span.span_id, "span_id"),
        }
        if redactor is not None:
            meta["workflow"] = redactor.redact_text(meta["workflow"])
            meta["context"] = clean_json_text(redactor.redact_json(self.context), "context")
        return meta


def clean_text(value: object, field: str) -> str:
    """``value`` as the sanitiser stores it in a ``text`` column; ``""`` for None."""
    text, _ = _CLEAN.text(value, field)
    return text or ""


def clean_json_text(value: object, field: str) -> str:
    """``value`` as the sanitiser stores it in a ``jsonb`` column, as JSON text."""
    clean, _ = _CLEAN.json(value, field)
    return dumps(clean)


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
    """Adds ``traceparent`` for the current execution and process to ``headers``.

    Args:
        headers: A mutable mapping of header names to values; returned as given (and the
            failure logged) when it cannot take the header, except in strict mode.
    """
    state, span = current()
    if state is None:
        return headers
    try:
        span_id = (span or state.root_span).span_id
        headers["traceparent"] = f"00-{state.execution_id.hex}-{span_id}-01"
    except Exception:
        if state.trail.settings.strict:
            raise
        if "inject" not in _lookup_reported:
            _lookup_reported.add("inject")
            log.exception("pgtrail: inject failed; the headers carry no traceparent (said once)")
    return headers


def extract(headers: MutableMapping[str, str] | dict[str, str]) -> TraceContext | None:
    """Reads a ``traceparent`` header (any case); None when absent or malformed."""
    try:
        value = next(
            (v for k, v in headers.items() if isinstance(k, str) and k.lower() == "traceparent"),
            None,
        )
    except Exception:  # not a mapping, or one whose items() fails: no trace context
        return None
    if not value or not isinstance(value, str):
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

    def __init__(self, url: str | None, prefix: str, redactor: Redactor | None = None) -> None:
        self.url = url
        self.prefix = prefix
        # Set when redaction is on: what an execution's processes tell Redis is redacted
        # before it is sent, as it would be before it is stored.
        self.redactor = redactor
        self._client: redis.Redis | None = None
        self._down_until = 0.0
        self._warned = False
        self._refused: set[str] = set()
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
            try:
                self._client = _import_redis().Redis.from_url(
                    self.url, socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True
                )
            except Exception as exc:  # an unusable URL: as good as unreachable
                self.failed(OSError(f"{type(exc).__name__}: {exc}"))
                return None
        return self._client

    def failed(self, exc: Exception) -> None:
        """Notes a failed Redis call; only an unreachable Redis turns Redis off for a while.

        Args:
            exc: What the call raised. A connection error or timeout backs every call off
                for a few seconds (said once); anything else (a value Redis or the client
                refused) is said once per kind and leaves Redis on.
        """
        if not isinstance(exc, REDIS_DOWN_ERRORS):
            key = type(exc).__name__
            if key not in self._refused:
                self._refused.add(key)
                log.error("pgtrail: Redis refused a command (%s: %s); Redis stays on", key, exc)
            return
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
            meta = state.meta(self.redactor)
            pipe.hset(self.key(state.execution_id), mapping=cast("Mapping[Any, Any]", meta))
            pipe.expire(self.key(state.execution_id), TTL_S)
            pipe.zadd(f"{self.prefix}open", {str(state.execution_id): time.time()})
            pipe.execute()
        except Exception as exc:
            self.failed(exc)

    def load(self, execution_id: uuid.UUID) -> dict[str, str] | None:
        """The metadata of an open execution, or None (unknown, finished, or Redis down)."""
        client = self.client()
        if client is None:
            return None
        try:
            meta: dict[str, str] = client.hgetall(self.key(execution_id))  # type: ignore[assignment]
        except Exception as exc:
            self.failed(exc)
            return None
        return meta or None

    def push_spans(
        self, execution_id: uuid.UUID, records: list[dict[str, Any]], *, only_open: bool = False
    ) -> bool:
        """Appends finished process records; False when they could not be stored.

        Args:
            execution_id: The execution they belong to.
            records: Process records (:meth:`Span.record`), cleaned before they are sent.
            only_open: Also False when the execution's row was already claimed (its root
                will not read them any more): checked in the same transaction as the push.
        """
        client = self.client()
        if client is None or not records:
            return False
        try:
            pipe = client.pipeline(transaction=only_open)
            key = self.key(execution_id, ":procs")
            if only_open:
                pipe.exists(self.key(execution_id, ":final"))
            if self.redactor is not None:
                records = self.redactor.redact_processes(records)
            pipe.rpush(key, *[clean_json_text(r, "processes_executed") for r in records])
            pipe.expire(key, TTL_S)
            pipe.zadd(f"{self.prefix}open", {str(execution_id): time.time()}, xx=True)
            replies = pipe.execute()
        except Exception as exc:
            self.failed(exc)
            return False
        # Pushed after the claim, they would stay unread until their TTL: the caller keeps
        # them for a row of their own instead.
        return not (only_open and replies[0])

    def spans(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        """Process records pushed by every process of this execution."""
        client = self.client()
        if client is None:
            return []
        try:
            raw: list[str] = client.lrange(self.key(execution_id, ":procs"), 0, -1)  # type: ignore[assignment]
        except Exception as exc:
            self.failed(exc)
            return []
        return [record for item in raw if (record := _process_record(item)) is not None]

    def claim_final(self, execution_id: uuid.UUID) -> bool:
        """True for the one caller allowed to write the execution's row (or Redis down)."""
        client = self.client()
        if client is None:
            return True
        try:
            return bool(client.set(self.key(execution_id, ":final"), "1", nx=True, ex=TTL_S))
        except Exception as exc:
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
        except Exception as exc:
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
        except Exception as exc:
            self.failed(exc)
            return []
        return [found for i in ids if (found := _uuid_or_none(i)) is not None]

    def reset_after_fork(self) -> None:
        """Drops the parent's socket."""
        self._client = None

    def close(self) -> None:
        """Closes the connection."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:
                self.failed(exc)
            self._client = None


def _process_record(raw: str) -> dict[str, Any] | None:
    """One process record pushed to Redis; None when it is not one (never raises)."""
    try:
        record = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("span_id"), str)
        and isinstance(record.get("started_at"), str)
    ):
        return None
    return record


def _uuid_or_none(raw: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


@dataclass(frozen=True)
class Identity:
    """Who a joined execution belongs to, and where that was learnt."""

    tenant_id: str
    user_id: str | None
    session_id: str | None
    workflow: str | None
    source: str
    """``redis`` (open), ``database`` (its stored row), ``join`` (the arguments), ``unknown``."""


_STORED_SQL = """
SELECT tenant_id, user_id, session_id, workflow
FROM logs_execution
WHERE execution_id = %(id)s AND created_at >= %(since)s AND created_at < %(until)s
ORDER BY (event_type = 'execution_finalized') DESC, created_at
LIMIT 1
"""
_RECENT_DAYS = 7


def _windows(execution_id: uuid.UUID, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """``created_at`` ranges to search, narrowest first: each prunes the day partitions.

    A root's row is created at the time its UUIDv7 holds (pgtrail makes the id from it), so
    the days around that time hold it; an id of the caller's own (``execution_id=``) is
    looked for over the last week.
    """
    windows = []
    if execution_id.version == 7:
        at = dt.datetime.fromtimestamp((execution_id.int >> 80) / 1000, dt.UTC)
        if now - dt.timedelta(days=3650) < at < now + dt.timedelta(days=1):
            windows.append((at - dt.timedelta(days=1), at + dt.timedelta(days=1)))
    windows.append((now - dt.timedelta(days=_RECENT_DAYS), now + dt.timedelta(days=1)))
    return windows


def _lookup(settings: Settings, execution_id: uuid.UUID, timeout_s: float) -> Identity | None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(settings.dsn).get("options") or ""
    options = (
        f"{given} -c search_path={settings.db_schema},public "
        f"-c statement_timeout={max(1, int(timeout_s * 1000))}"
    ).strip()
    # libpq waits at least 2 s to connect whatever is asked; the caller waits no longer
    # than timeout_s in any case (see stored_identity).
    with psycopg.connect(
        settings.dsn, autocommit=True, connect_timeout=max(2, math.ceil(timeout_s)), options=options
    ) as conn:
        now = dt.datetime.now(dt.UTC)
        for since, until in _windows(execution_id, now):
            row = conn.execute(
                _STORED_SQL, {"id": execution_id, "since": since, "until": until}
            ).fetchone()
            if row is not None:
                tenant, user, session, workflow = row
                if settings.user_hmac_key:
                    user = as_pseudonym(user)  # written hashed: not to be hashed again
                return Identity(tenant or "default", user, session, workflow, "database")
    return None


def stored_identity(
    settings: Settings, execution_id: uuid.UUID, timeout_s: float
) -> Identity | None:
    """Tenant, user and session of an execution's stored row; None when not found in time.

    Args:
        settings: Where the rows are (``dsn``, ``db_schema``).
        execution_id: The execution whose ``logs_execution`` row is looked up.
        timeout_s: Longest wait, in seconds. The look-up runs on a thread of its own, so
            the caller never waits longer, whatever the network does; it never raises (a
            failure is said once in the log, and counts as not found).
    """
    found: list[Identity | None] = []
    problem: list[str] = []
    done = threading.Event()

    def look() -> None:
        try:
            found.append(_lookup(settings, execution_id, timeout_s))
        except Exception as exc:
            problem.append(f"{type(exc).__name__}: {exc}")
        finally:
            done.set()

    threading.Thread(target=look, name="pgtrail-join-lookup", daemon=True).start()
    if not done.wait(timeout_s):
        problem.append(f"no answer within {timeout_s:g} s")
    if problem:
        key = problem[0].split(":")[0]
        if key not in _lookup_reported:
            _lookup_reported.add(key)
            log.error(
                "pgtrail: could not look up execution %s in PostgreSQL (%s); said once",
                execution_id,
                problem[0],
            )
        return None
    return found[0] if found else None


_lookup_reported: set[str] = set()


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
