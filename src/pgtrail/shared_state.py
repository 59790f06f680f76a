"""Everything pgtrail keeps in Redis, and how it behaves when Redis fails.

Each open execution is a hash of its metadata, a list of finished process records and an
entry in a sorted set of open executions by last activity (for ``pgtrail sweep``); the
sampling decision of an execution is a key of its own. Every key lives :data:`TTL_S`; a
connection error turns Redis off for a few seconds (the callers run single-process
meanwhile), and any other Redis error costs only the command that raised it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pgtrail.errors import AssemblyUnavailableError, PgtrailError
from pgtrail.ids import uuid_or_none
from pgtrail.writer.sanitize import Sanitizer, compact_json

if TYPE_CHECKING:
    from types import ModuleType

    import redis

    from pgtrail.context import ExecutionState
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


def clean_text(value: object, field: str) -> str:
    """``value`` as the sanitiser stores it in a ``text`` column; ``""`` for None."""
    text, _ = _CLEAN.text(value, field)
    return text or ""


def clean_json_text(value: object, field: str) -> str:
    """``value`` as the sanitiser stores it in a ``jsonb`` column, as JSON text."""
    clean, _ = _CLEAN.json(value, field)
    return compact_json(clean)


def execution_meta(state: ExecutionState, redactor: Redactor | None = None) -> dict[str, str]:
    """The Redis hash of an open execution, every value cleaned by the sanitiser.

    Args:
        state: The open execution.
        redactor: When redaction is on: the workflow and the context are redacted too,
            as in the execution's row (the ids are identifiers, kept).
    """
    meta = {
        "workflow": clean_text(state.workflow, "workflow"),
        "tenant_id": clean_text(state.tenant_id, "tenant_id") or "default",
        "user_id": clean_text(state.user_id, "user_id"),
        "session_id": clean_text(state.session_id, "session_id"),
        "context": clean_json_text(state.context, "context"),
        "parent_execution_id": clean_text(state.parent_execution_id, "parent_execution_id"),
        "started_at": state.started_at.isoformat(),
        "root_span_id": clean_text(state.root_span.span_id, "span_id"),
    }
    if redactor is not None:
        meta["workflow"] = redactor.redact_text(meta["workflow"])
        meta["context"] = clean_json_text(redactor.redact_json(state.context), "context")
    return meta


def execution_key(prefix: str, execution_id: uuid.UUID | str, suffix: str = "") -> str:
    """The Redis key of an execution's state.

    Args:
        prefix: The key prefix (``redis_prefix``).
        execution_id: The execution.
        suffix: ``""`` for its metadata hash, ``":procs"``, ``":final"`` or ``":sampling"``.
    """
    return f"{prefix}ex:{execution_id}{suffix}"


@dataclass(frozen=True)
class OpenExecution:
    """An execution still open in Redis, as ``pgtrail check`` reads it."""

    execution_id: uuid.UUID
    workflow: str
    tenant_id: str
    user_id: str | None
    session_id: str | None
    started_at: dt.datetime
    last_activity: dt.datetime
    """When one of its processes last told Redis something."""


def open_executions(url: str, prefix: str, *, limit: int = 10_000) -> list[OpenExecution]:
    """The executions open in Redis (started, not yet finalised or swept), oldest first.

    Unlike :class:`RedisState`, which lets an application run on without Redis, this is a
    question that needs an answer: a Redis that cannot be reached raises.

    Args:
        url: The Redis URL (``redis_url``).
        prefix: The key prefix (``redis_prefix``).
        limit: How many to read at most, by oldest activity.

    Raises:
        PgtrailError: Redis could not be reached or refused the commands (the message never
            holds the URL, which may carry a password).
    """
    client = _import_redis().Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=10.0, decode_responses=True
    )
    try:
        listed = cast(
            "list[tuple[str, float]]",
            client.zrange(f"{prefix}open", 0, limit - 1, withscores=True),
        )
        pipe = client.pipeline(transaction=False)
        for raw_id, _ in listed:
            pipe.hgetall(execution_key(prefix, raw_id))
        metas = cast("list[dict[str, str]]", pipe.execute())
    except REDIS_ERRORS as exc:
        raise PgtrailError(
            f"Redis (redis_url) could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        client.close()
    found = []
    for (raw_id, active), meta in zip(listed, metas, strict=True):
        execution_id = uuid_or_none(raw_id)
        started = _timestamp(meta.get("started_at")) if meta else None
        if execution_id is None or started is None:
            continue  # its metadata expired or was never written: nothing to say about it
        found.append(
            OpenExecution(
                execution_id,
                meta.get("workflow") or "unnamed",
                meta.get("tenant_id") or "default",
                meta.get("user_id") or None,
                meta.get("session_id") or None,
                started,
                dt.datetime.fromtimestamp(active, dt.UTC),
            )
        )
    return found


def _timestamp(raw: str | None) -> dt.datetime | None:
    try:
        at = dt.datetime.fromisoformat(raw or "")
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


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
        return execution_key(self.prefix, execution_id, suffix)

    def open(self, state: ExecutionState) -> None:
        """Publishes a new execution so other processes can join it."""
        client = self.client()
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            meta = execution_meta(state, self.redactor)
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

    def set_sampling(self, execution_id: uuid.UUID, decision: str) -> None:
        """Shares an execution's sampling decision (``in:RATE``, ``out:RATE`` or
        ``keep:RATE:REASON``) with the processes that join it.

        Args:
            execution_id: The execution.
            decision: The decision, as :class:`pgtrail.writer.sampling.Sampler` writes it.
        """
        client = self.client()
        if client is None:
            return
        try:
            client.set(self.key(execution_id, ":sampling"), decision, ex=TTL_S)
        except REDIS_ERRORS as exc:
            self.failed(exc)

    def sampling(self, execution_id: uuid.UUID, *, forget: bool = False) -> str | None:
        """An execution's shared sampling decision, or None (none shared, or Redis down).

        Args:
            execution_id: The execution.
            forget: Delete it in the same round trip (its execution has ended).
        """
        client = self.client()
        if client is None:
            return None
        key = self.key(execution_id, ":sampling")
        try:
            if forget:
                pipe = client.pipeline(transaction=True)
                pipe.get(key)
                pipe.delete(key)
                value = pipe.execute()[0]
            else:
                value = client.get(key)
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return None
        return value if isinstance(value, str) else None

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
        return [found for i in ids if (found := uuid_or_none(i)) is not None]

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


# -- OpenTelemetry traces being assembled --------------------------------------------------------

# Stores a trace's spans unless it was finalised already; then returns its final marker.
# KEYS: spans hash, final marker, open zset, due zset.
# ARGV: trace id, now, ttl, due time or "", then span id / span pairs.
_ACCEPT = """
local final = redis.call('get', KEYS[2])
if final then return final end
for i = 5, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('expire', KEYS[1], ARGV[3])
redis.call('zadd', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] ~= '' then redis.call('zadd', KEYS[4], ARGV[4], ARGV[1]) end
return false
"""

# Claims a trace for finalising (exactly one caller wins) and takes its spans, each after
# its span id (so that a span that cannot be read back can still be named).
# KEYS as above; ARGV: trace id, ttl.
_CLAIM = """
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zrem', KEYS[4], ARGV[1])
if not redis.call('set', KEYS[2], '{}', 'NX', 'EX', ARGV[2]) then return false end
local spans = redis.call('hgetall', KEYS[1])
redis.call('del', KEYS[1])
return spans
"""


def database_namespace(dsn: str, db_schema: str) -> str:
    """The namespace of the OpenTelemetry trace buffer for one target database and schema.

    Receivers that share a Redis and a key prefix but write to different databases (or
    schemas) must never finalise each other's traces, while receivers writing to the same
    one (scaled out, ``--reuse-port``, several hosts) must share theirs. The namespace is the
    first 12 hex digits of a SHA-256 of the DSN's host, port and database name and of
    ``db_schema``; the password and every other connection parameter stay out of it. Absent
    parts take libpq's defaults (``PGHOST``, ``PGPORT``, ``PGDATABASE``, ``PGUSER``, port
    5432, the database named after the user), and host names are compared case-insensitively,
    so the same database is one namespace however its DSN is spelled, as long as it names the
    same host: ``localhost`` and ``127.0.0.1`` are two namespaces.

    Args:
        dsn: The libpq connection string or URL of the database (``Settings.dsn``).
        db_schema: The schema the logs tables live in (``Settings.db_schema``).

    Returns:
        12 lower-case hex digits.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts: dict[str, Any] = conninfo_to_dict(dsn)
    except ProgrammingError:  # not a DSN: no connection will work; still never the password
        parts = {}
    host = str(parts.get("host") or parts.get("hostaddr") or os.environ.get("PGHOST") or "")
    port = str(parts.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(parts.get("user") or os.environ.get("PGUSER") or _os_user())
    dbname = str(parts.get("dbname") or os.environ.get("PGDATABASE") or user)
    identity = "\0".join((host.strip().lower(), port.strip(), dbname, db_schema))
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (libpq would fail the same way)
        return ""


@dataclass(frozen=True)
class HeldSpan:
    """One span of a trace, as the buffer holds it."""

    span_id: str
    """The span, as 16 hex digits."""
    blob: bytes
    """Its serialised form."""


@dataclass(frozen=True)
class HeldTrace:
    """Spans of one trace to hold until the trace is complete."""

    trace_id: str
    """The trace, as 32 hex digits."""
    due_at: float | None
    """When to finalise it (its root arrived: now plus the grace period), or None."""
    spans: list[HeldSpan]
    """Its spans."""


class TraceBuffer:
    """The spans of open OpenTelemetry traces, held in Redis until each trace is complete.

    Per trace: a hash of its spans by span id (a span delivered twice is held once) and, once
    finalised, a marker of the ids it was stored under (for spans that arrive late); two
    sorted sets say which traces are open (by last span) and which are due (root arrived).
    Every key lives :data:`TTL_S`.

    Unlike :class:`RedisState`, which lets an application run on without Redis, this buffer
    is the receiver's only store before PostgreSQL: every failure raises
    :class:`~pgtrail.errors.AssemblyUnavailableError`, so that a sender is asked to retry
    rather than told its spans are kept.

    Every key carries the namespace of the target database (see
    :func:`database_namespace`): ``{prefix}otlp:t:{namespace}:{trace id}:spans`` and
    ``...:final`` per trace, ``{prefix}otlp:open:{namespace}`` and
    ``{prefix}otlp:due:{namespace}`` for the sorted sets.

    Args:
        url: The Redis URL.
        prefix: The key prefix (``redis_prefix``); the buffer's keys are under ``otlp:``.
        namespace: The target database's namespace, from :func:`database_namespace`:
            buffers with different namespaces never see each other's traces.
    """

    def __init__(self, url: str, prefix: str, *, namespace: str) -> None:
        redis = _import_redis()
        self._prefix = f"{prefix}otlp:"
        self.namespace = namespace
        self._client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0)
        self._accept = self._client.register_script(_ACCEPT)
        self._claim = self._client.register_script(_CLAIM)

    def _keys(self, trace_id: str) -> list[str]:
        trace = f"{self._prefix}t:{self.namespace}:{trace_id}"
        return [
            f"{trace}:spans",
            f"{trace}:final",
            f"{self._prefix}open:{self.namespace}",
            f"{self._prefix}due:{self.namespace}",
        ]

    def hold(self, traces: list[HeldTrace], now: float) -> list[bytes | None]:
        """Holds each trace's spans, unless it was finalised already.

        Args:
            traces: The spans to hold, by trace.
            now: The current time (seconds since the epoch): the traces' last activity.

        Returns:
            For each trace in order: None when its spans are held, else the marker of the
            finalised trace (its spans were not held).

        Raises:
            AssemblyUnavailableError: Redis could not be reached or refused the commands.
        """
        try:
            pipe = self._client.pipeline(transaction=False)
            for trace in traces:
                args: list[Any] = [trace.trace_id, now, TTL_S, trace.due_at or ""]
                for span in trace.spans:
                    args += [span.span_id, span.blob]
                self._accept(keys=self._keys(trace.trace_id), args=args, client=pipe)
            return cast("list[bytes | None]", pipe.execute())
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc

    def ready(self, *, due: bool, max_score: float, limit: int) -> list[str]:
        """Trace ids to finalise: due ones (root arrived) or open ones, oldest first.

        Args:
            due: True for traces whose root arrived, False for every open trace.
            max_score: The latest due time (or last activity) to include.
            limit: How many to return at most.

        Raises:
            AssemblyUnavailableError: Redis could not be reached.
        """
        key = f"{self._prefix}{'due' if due else 'open'}:{self.namespace}"
        try:
            ids = self._client.zrangebyscore(key, "-inf", max_score, start=0, num=limit)
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc
        return [raw.decode() for raw in cast("list[bytes]", ids)]

    def claim(self, trace_ids: list[str]) -> list[list[HeldSpan]]:
        """Claims traces for finalising and takes their spans; exactly one caller wins each.

        Args:
            trace_ids: The traces to claim.

        Returns:
            For each trace in order: its spans, or an empty list when another finaliser won.

        Raises:
            AssemblyUnavailableError: Redis could not be reached.
        """
        try:
            pipe = self._client.pipeline(transaction=False)
            for trace_id in trace_ids:
                self._claim(keys=self._keys(trace_id), args=[trace_id, TTL_S], client=pipe)
            claimed = pipe.execute()
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc
        return [_held_spans(spans) if spans else [] for spans in claimed]

    def mark_final(self, markers: dict[str, str]) -> None:
        """Records each finalised trace's ids, for the spans that arrive late.

        Args:
            markers: Trace id to its marker (JSON of the ids it was stored under).

        Raises:
            AssemblyUnavailableError: Redis could not be reached.
        """
        if not markers:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for trace_id, marker in markers.items():
                pipe.set(self._keys(trace_id)[1], marker, xx=True, keepttl=True)
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc

    def open_among(self, trace_ids: list[str]) -> set[str]:
        """Which of ``trace_ids`` are open (spans held, not yet claimed by a finaliser).

        Raises:
            AssemblyUnavailableError: Redis could not be reached.
        """
        key = f"{self._prefix}open:{self.namespace}"
        try:
            pipe = self._client.pipeline(transaction=False)
            for trace_id in trace_ids:
                pipe.zscore(key, trace_id)
            scores = pipe.execute()
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc
        return {t for t, score in zip(trace_ids, scores, strict=True) if score is not None}

    def pending(self) -> int:
        """How many traces are open (held, not yet finalised) in this namespace.

        Raises:
            AssemblyUnavailableError: Redis could not be reached.
        """
        try:
            count = self._client.zcard(f"{self._prefix}open:{self.namespace}")
        except REDIS_ERRORS as exc:
            raise AssemblyUnavailableError(f"Redis unavailable: {exc}") from exc
        return int(cast("int", count))

    def close(self) -> None:
        """Closes the Redis connection."""
        self._client.close()


def _held_spans(flat: list[bytes]) -> list[HeldSpan]:
    """The spans of a claimed trace, from Redis's flat field, value, field, value... reply."""
    return [
        HeldSpan(flat[i].decode(errors="replace"), flat[i + 1]) for i in range(0, len(flat) - 1, 2)
    ]
