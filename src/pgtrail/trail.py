"""``Trail``, the client: executions, processes, and the ``log_*`` helpers.

``log_*`` calls stamp the record (event id, time, the ids of the current execution and
process) and append it to an in-memory queue; they never wait on the network and, outside
strict mode, never raise. Everything else happens in the background flusher.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import decimal
import functools
import inspect
import logging
import math
import os
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, ParamSpec, TypeVar, overload

from psycopg_pool import ConnectionPool

from pgtrail import correlation
from pgtrail.config import Settings
from pgtrail.correlation import ExecutionState, RedisState, Span, TraceContext
from pgtrail.errors import NoActiveExecutionError, PgtrailError, ValidationError
from pgtrail.ids import execution_event_id, new_span_id, uuid7
from pgtrail.models import AgentEvent
from pgtrail.tables import AGENT, EXECUTION, JOURNEY, LLM
from pgtrail.writer.flusher import Flusher, FlushStats
from pgtrail.writer.freeze import (
    CONTEXT,
    CONTEXT_MEMBERS,
    DATA_JSON,
    PAYLOAD_JSON,
    frozen_dict,
    members,
)
from pgtrail.writer.records import Stamp
from pgtrail.writer.redact import Redactor
from pgtrail.writer.sampling import Sampler, SamplingConfig
from pgtrail.writer.sanitize import Sanitizer, safe_repr, safe_str
from pgtrail.writer.sink import PgSink, Sink

log = logging.getLogger("pgtrail")

P = ParamSpec("P")
R = TypeVar("R")

JOINED_EVENT = "execution_joined"
"""``event_type`` of the ``logs_execution`` row of a join's processes that could not reach
the execution's own row (see :meth:`Trail.join`)."""

_live_trails: weakref.WeakSet[Trail] = weakref.WeakSet()
_reported: set[str] = set()
_NUMBERS = ("input_cost", "output_cost", "total_cost", "duration_ms")
_DEFAULT_LOOKUP_S = 1.0
_Tokens = tuple[Any, ...]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _report_once(key: str, message: str, exc: BaseException | None = None) -> None:
    if key not in _reported:
        _reported.add(key)
        log.error(message, exc_info=exc)


def _strict_now() -> bool:
    """Strict mode of the current execution's client, else of any live client."""
    state, _ = correlation.current()
    if state is not None:
        return state.trail.settings.strict
    return any(t.settings.strict for t in _live_trails)


def _swallow(entry: str, exc: Exception, strict: bool) -> None:
    """The one guard of each public entry point: raises ``exc`` in strict mode, else reports.

    Reported once per entry point and kind of failure, with its traceback: a bad value
    logged in a loop must not flood the application's log.
    """
    if strict:
        raise exc
    _report_once(
        f"failed:{entry}:{type(exc).__qualname__}",
        f"pgtrail: {entry} failed ({type(exc).__qualname__}: {safe_str(exc)[:500]}); "
        "the application goes on (said once)",
        exc,
    )


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, even one whose ``__str__`` raises."""
    return f"{type(exc).__name__}: {safe_str(exc)}"


def _seconds(value: object) -> float:
    """A positive finite number of seconds, else the default look-up time."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    return _DEFAULT_LOOKUP_S


def _check_finite(args: dict[str, Any]) -> None:
    """Strict mode: a NaN or infinite cost or duration raises (it would be stored as null)."""
    for key in _NUMBERS:
        value = args.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"{key}: {value!r} is not a finite number")
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            raise ValidationError(f"{key}: Decimal({str(value)!r}) is not a finite number")


class Execution:
    """Handle of an open execution: its id, nested processes, and its outcome."""

    def __init__(self, state: ExecutionState) -> None:
        self._state = state

    @property
    def execution_id(self) -> uuid.UUID:
        return self._state.execution_id

    def process(self, name: str) -> _ProcessScope:
        """Marks a nested step; nest ``with`` blocks to nest processes."""
        return self._state.trail.process(name)

    def fail(self, error: str) -> None:
        """Marks the execution as failed without raising.

        Args:
            error: What went wrong; a non-string is stored as its ``str()``.
        """
        self._state.status = "error"
        self._state.error = error if isinstance(error, str) else safe_str(error)

    def abandon(self, reason: str | None = None) -> None:
        """Marks the execution as abandoned (the user walked away).

        Args:
            reason: Why, or None; a non-string is stored as its ``str()``.
        """
        self._state.status = "abandoned"
        self._state.error = (
            reason if reason is None or isinstance(reason, str) else safe_str(reason)
        )

    def traceparent(self) -> str:
        """A W3C ``traceparent`` value that lets another service join this execution."""
        headers: dict[str, str] = {}
        correlation.inject(headers)
        return headers.get(
            "traceparent", f"00-{self.execution_id.hex}-{self._state.root_span.span_id}-01"
        )


class Trail:
    """The pgtrail client. Create one per process; it is cheap until the first write.

    Args:
        settings: Full settings; by default read from ``PGTRAIL_*`` variables.
        sync: Write on ``flush()``, at execution end and when a batch fills, on the
            caller's thread, instead of in the background (for scripts and tests).
        clock: Source of timestamps (aware datetimes); a simulation passes its own.
        pool: A psycopg pool to borrow instead of creating one; it is never closed here.
        sink: Where batches go instead of PostgreSQL; :func:`pgtrail.testing.record`
            passes one that keeps them in memory.
        **overrides: Any :class:`Settings` field, e.g. ``dsn=...``, ``redis_url=None``, or
            sampling: ``sample_rates={"001 Main": 0.1}``, ``default_sample_rate=1.0``,
            ``sample_keep_cost_usd=0.5`` (see :mod:`pgtrail.writer.sampling`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        sync: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
        pool: ConnectionPool | None = None,
        sink: Sink | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_env()
        if overrides:  # an explicit None (e.g. redis_url=None) turns a setting off
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        self.settings = settings
        self.clock = clock or _utc_now
        self.redis = RedisState(
            settings.redis_url, settings.redis_prefix, Redactor() if settings.redact else None
        )
        self._flusher = Flusher(
            settings,
            sink if sink is not None else PgSink(settings, pool),
            background=not sync,
            on_flush=self._push_pending_spans,
        )
        self._sampler = Sampler(
            SamplingConfig(
                rates=settings.sample_rates,
                default_rate=settings.default_sample_rate,
                cost_threshold=settings.sample_keep_cost_usd,
                hold_records=settings.sample_hold_records,
                hold_s=settings.sample_hold_s,
                hold_total=settings.sample_hold_total,
            ),
            self._flusher.submit,
            self.redis,
            self._flusher.preparer.prices,
        )
        self._pending_spans: list[tuple[uuid.UUID, dict[str, Any]]] = []
        self._clean = Sanitizer(max_field_chars=settings.max_field_chars)
        self._strict_clean = Sanitizer(max_field_chars=settings.max_field_chars, strict=True)
        self.unmerged_processes = 0
        """Processes of joined executions that could not reach the execution's row (they
        are stored as ``execution_joined`` rows instead: see :meth:`join`)."""
        self._closed = False
        _live_trails.add(self)

    # -- executions and processes --------------------------------------------------------

    def _set_llm_context(self, state: ExecutionState, context: dict[str, Any]) -> None:
        """What every LLM record of ``state`` adds to its particular_data."""
        state.llm_context = context
        state.llm_members = members(context, self.settings.max_field_chars)

    @contextlib.contextmanager
    def execution(
        self,
        workflow: str,
        *,
        user_id: str | None = None,
        tenant_id: str = "default",
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        parent_execution_id: uuid.UUID | None = None,
        execution_id: uuid.UUID | None = None,
    ) -> Iterator[Execution]:
        """Opens an execution (one request or workflow run); its root process is ``workflow``.

        On exit one ``logs_execution`` row is written with every process of the execution,
        including those that other processes appended after joining it. An exception of the
        application's inside the block marks the execution ``error`` and propagates as it
        is. Outside strict mode nothing here raises into the application: bad values are
        cleaned (or replaced, as said below) and said once in the log; in strict mode each of
        them raises :class:`~pgtrail.errors.ValidationError` when the block is entered.

        Args:
            workflow: Name of the root process, e.g. ``"001 Main"``; a non-string is stored as
                its ``str()``, None as ``"unnamed"``.
            user_id: The user, or None; an int is stored as its decimal text, another
                non-string as its ``str()``.
            tenant_id: The tenant; None or ``""`` is ``"default"``, a non-string its ``str()``.
            session_id: The session, or None; a non-string is stored as its ``str()``.
            context: Execution-wide facts (tier, language, feature...), a dict; any other
                value is stored as ``{"value": ...}``.
            parent_execution_id: The execution that started this one, or None; a value that
                is not a UUID (or its text) is dropped.
            execution_id: The id to use instead of a new UUIDv7; a value that is not a UUID
                (or its text) is replaced by a new id.
        """
        state, tokens = self._open_execution(
            workflow, user_id, tenant_id, session_id, context, parent_execution_id, execution_id
        )
        failure: BaseException | None = None
        try:
            yield Execution(state)
        except BaseException as exc:
            failure = exc
            state.status = "error"
            state.error = state.error if state.error is not None else _describe(exc)
            raise
        finally:
            self._close_execution(state, tokens, failure)

    def _open_execution(
        self,
        workflow: object,
        user_id: object,
        tenant_id: object,
        session_id: object,
        context: object,
        parent_execution_id: object,
        execution_id: object,
    ) -> tuple[ExecutionState, _Tokens | None]:
        """The open, current execution; a detached one (and a report) when opening failed."""
        try:
            if self.settings.strict:
                self._check_strict(workflow, tenant_id, user_id, session_id, context)
            started = self._now()
            ctx = self._context(context)
            name = self._identity(workflow, "workflow") or "unnamed"
            root = Span(new_span_id(), None, name, 0, started)
            state = ExecutionState(
                trail=self,
                execution_id=self._uuid(execution_id, "execution_id")
                or uuid7(int(started.timestamp() * 1000)),
                workflow=name,
                tenant_id=self._identity(tenant_id, "tenant_id") or "default",
                user_id=self._identity(user_id, "user_id"),
                session_id=self._identity(session_id, "session_id"),
                context=ctx,
                parent_execution_id=self._uuid(parent_execution_id, "parent_execution_id"),
                started_at=started,
                is_root=True,
                root_span=root,
                spans=[root],
            )
            self._set_llm_context(state, {"workflow": name, "feature": ctx.get("feature")})
            self.redis.open(state)
            self._sampler.begin(state.execution_id, name, opened_here=True)
            return state, correlation.activate(state, root)
        except Exception as exc:
            _swallow("execution", exc, self.settings.strict)
            return self._detached(), None

    def _close_execution(
        self, state: ExecutionState, tokens: _Tokens | None, failure: BaseException | None
    ) -> None:
        if tokens is None:
            return
        try:
            correlation.deactivate(state, tokens)
            root = state.root_span
            root.ended_at = self._now()
            root.status = "error" if state.status == "error" else "success"
            root.error = state.error if state.status == "error" else None
            self._finalise(state)
        except Exception as exc:
            # Never replaces the application's own exception, even in strict mode.
            _swallow("execution", exc, self.settings.strict and failure is None)

    def _detached(self) -> ExecutionState:
        """An execution that is not current: what a block gets when opening it failed."""
        now = _utc_now()
        root = Span(new_span_id(), None, "unnamed", 0, now)
        return ExecutionState(
            trail=self,
            execution_id=uuid7(),
            workflow="unnamed",
            tenant_id="default",
            user_id=None,
            session_id=None,
            context={},
            parent_execution_id=None,
            started_at=now,
            is_root=False,
            root_span=root,
            shared=False,
        )

    def _check_strict(
        self,
        workflow: object,
        tenant_id: object,
        user_id: object,
        session_id: object,
        context: object,
    ) -> None:
        """Strict mode: every value that would be cleaned or replaced raises instead."""
        if workflow is None or workflow == "":
            raise ValidationError("field 'workflow': an execution needs a workflow name")
        for field, value in (
            ("workflow", workflow),
            ("tenant_id", tenant_id),
            ("user_id", user_id),
            ("session_id", session_id),
        ):
            if value is not None and not (field == "user_id" and type(value) is int):
                self._strict_clean.text(value, field)
        if context is not None:
            if type(context) is not dict:
                raise ValidationError(
                    f"field 'context': expected a dict, got {type(context).__qualname__}"
                )
            self._strict_clean.json(context, "context")

    def _identity(self, value: object, field: str) -> str | None:
        """An id or name as text: strings stay as given (the writer cleans, cuts and marks them)."""
        if value is None or type(value) is str:
            return value
        if type(value) is int and abs(value) < 10**18:
            return str(value)
        text, problems = self._clean.text(value, field)
        _report_once(
            f"identity:{field}:{type(value).__qualname__}",
            f"pgtrail: {problems[0] if problems else field}; stored as text (said once)",
        )
        return text

    def _uuid(self, value: object, field: str) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(value if isinstance(value, str) else "")
        except (ValueError, TypeError):
            if self.settings.strict:
                raise ValidationError(
                    f"field {field!r}: not a UUID: {safe_repr(value)[:100]}"
                ) from None
            _report_once(
                f"uuid:{field}",
                f"pgtrail: {field} {safe_repr(value)[:100]} is not a UUID; ignored (said once)",
            )
            return None

    def _context(self, context: object) -> dict[str, Any]:
        if context is None:
            return {}
        if isinstance(context, dict):
            return dict(context)
        return {"value": context}

    @contextlib.contextmanager
    def join(
        self,
        target: uuid.UUID | str | MutableMapping[str, str] | TraceContext,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        lookup_timeout_s: float = _DEFAULT_LOOKUP_S,
    ) -> Iterator[Execution]:
        """Joins an execution opened elsewhere, by id, traceparent value, or headers.

        Events logged inside carry the execution's ids, and its tenant, user and session,
        which are never guessed. They come, in this order, from Redis (the execution is
        open), from the execution's stored row in ``logs_execution`` (it finished: found by
        id, looked up in the partitions of the days around the time in its UUIDv7, then the
        last week), or from ``tenant_id``, ``user_id`` and ``session_id``. Values found
        win over the arguments (a difference is said in the log). When none of them is
        known the events are still stored, under tenant ``default`` with no user or session,
        and that is said once in the log.

        Processes marked inside are appended to the execution's row when the root writes it
        (through Redis). Those that cannot get there (Redis unreachable, or the execution
        already finished) are not lost: when the join ends they are written as a
        ``logs_execution`` row of the join's own, with ``event_type`` ``execution_joined``,
        the same execution id, its own event id and no ``finalized_at``. A second row
        rather than an update of the first: the writer only appends (``COPY``, replayable
        from the spool), the root's row may not be written yet, and the step view
        ``logs_execution_step`` and ``pgtrail trace`` read every row of an execution id
        (readers of "the" row order by ``finalized_at``, so they keep the root's). How many
        processes went that way is counted in :attr:`unmerged_processes` and said once.

        An exception of the application's inside the block propagates as it is. Outside
        strict mode nothing here raises into the application (failures are said once in
        the log); in strict mode a target that names no execution and identity values that
        would be cleaned raise.

        Args:
            target: The execution id (a UUID or its text), a ``traceparent`` value, or
                headers holding one. Anything else joins a new execution id (said once).
            tenant_id: The tenant to store events under when neither Redis nor PostgreSQL
                knows the execution; a non-string is stored as its ``str()``.
            user_id: The user, on the same terms as ``tenant_id``.
            session_id: The session, on the same terms as ``tenant_id``.
            lookup_timeout_s: Longest wait, in seconds, for the execution's stored row; the
                look-up runs beside the caller's thread and is abandoned after that. A
                value that is not a positive finite number uses 1 second.
        """
        state, tokens, owns_sampling = self._open_join(
            target, tenant_id, user_id, session_id, lookup_timeout_s
        )
        failure: BaseException | None = None
        try:
            yield Execution(state)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._close_join(state, tokens, owns_sampling, failure)

    def _open_join(
        self,
        target: object,
        tenant_id: object,
        user_id: object,
        session_id: object,
        lookup_timeout_s: object,
    ) -> tuple[ExecutionState, _Tokens | None, bool]:
        try:
            if self.settings.strict:
                for field, value in (
                    ("tenant_id", tenant_id),
                    ("user_id", user_id),
                    ("session_id", session_id),
                ):
                    if value is not None and not (field == "user_id" and type(value) is int):
                        self._strict_clean.text(value, field)
            trace = self._join_target(target)
            meta = self.redis.load(trace.execution_id) or {}
            given = (
                self._identity(tenant_id, "tenant_id"),
                self._identity(user_id, "user_id"),
                self._identity(session_id, "session_id"),
            )
            found = self._joined_identity(trace.execution_id, meta, given, lookup_timeout_s)
            started = self._now()
            workflow = found.workflow or "joined"
            parent_span = trace.parent_span_id or meta.get("root_span_id") or None
            anchor = Span(parent_span or new_span_id(), None, workflow, 0, started)
            state = ExecutionState(
                trail=self,
                execution_id=trace.execution_id,
                workflow=workflow,
                tenant_id=found.tenant_id,
                user_id=found.user_id,
                session_id=found.session_id,
                context=correlation.json_dict(meta.get("context")),
                parent_execution_id=None,
                started_at=started,
                is_root=False,
                root_span=anchor,
                shared=bool(meta),
            )
            self._set_llm_context(
                state, {"workflow": state.workflow, "feature": state.context.get("feature")}
            )
            owns = self._sampler.begin(state.execution_id, state.workflow, opened_here=False)
            return state, correlation.activate(state, anchor), owns
        except Exception as exc:
            _swallow("join", exc, self.settings.strict)
            return self._detached(), None, False

    def _join_target(self, target: object) -> TraceContext:
        try:
            return _trace_context(target)  # type: ignore[arg-type]
        except Exception as exc:
            if self.settings.strict:
                raise
            fresh = TraceContext(uuid7(), None)
            _report_once(
                f"join-target:{type(exc).__qualname__}",
                f"pgtrail: join({safe_repr(target)[:100]}) names no execution ({safe_str(exc)}); "
                f"its events go to a new execution {fresh.execution_id} (said once)",
            )
            return fresh

    def _joined_identity(
        self,
        execution_id: uuid.UUID,
        meta: dict[str, str],
        given: tuple[str | None, str | None, str | None],
        timeout_s: object,
    ) -> correlation.Identity:
        """Tenant, user and session of a joined execution: Redis, its row, or the arguments."""
        if meta:
            found: correlation.Identity | None = correlation.Identity(
                meta.get("tenant_id") or "default",
                meta.get("user_id") or None,
                meta.get("session_id") or None,
                meta.get("workflow") or None,
                "redis",
            )
        else:
            found = correlation.stored_identity(self.settings, execution_id, _seconds(timeout_s))
        if found is None:
            if any(v is not None for v in given):
                return correlation.Identity(given[0] or "default", given[1], given[2], None, "join")
            _report_once(
                f"join:{execution_id}",
                f"pgtrail: execution {execution_id} is neither open in Redis nor stored, and "
                "join() was given no tenant_id, user_id or session_id; its events are stored "
                "under tenant 'default' with no user or session",
            )
            return correlation.Identity("default", None, None, None, "unknown")
        for field, value, known in zip(
            ("tenant_id", "user_id", "session_id"),
            given,
            (found.tenant_id, found.user_id, found.session_id),
            strict=True,
        ):
            if value is not None and value != known:
                _report_once(
                    f"join-differs:{execution_id}:{field}",
                    f"pgtrail: join({execution_id}) was given {field}={safe_repr(value)[:100]} "
                    f"but the execution ({found.source}) has {known!r}; the execution's is used",
                )
        return found

    def _close_join(
        self,
        state: ExecutionState,
        tokens: _Tokens | None,
        owns_sampling: bool,
        failure: BaseException | None,
    ) -> None:
        if tokens is None:
            return
        try:
            correlation.deactivate(state, tokens)
            failed = failure is not None or state.status == "error"
            if owns_sampling:
                self._sampler.end(state.execution_id, error=failed)
            if failure is not None and state.error is None:
                state.error = _describe(failure)
            self._reconcile(state, "error" if failed else "success")
        except Exception as exc:
            # Never replaces the application's own exception, even in strict mode.
            _swallow("join", exc, self.settings.strict and failure is None)

    def _reconcile(self, state: ExecutionState, status: str) -> None:
        """The join's processes that did not reach the execution's row get a row of their own."""
        if not state.unmerged:
            return
        if self.redis.load(state.execution_id) and self.redis.push_spans(
            state.execution_id, state.unmerged, only_open=True
        ):
            state.unmerged = []  # Redis is back and the execution still open: its root merges
            return
        anchor = state.root_span
        processes = correlation.merge_process_records(state.unmerged, anchor.span_id)
        self.unmerged_processes += len(processes)
        _report_once(
            f"unmerged:{id(self)}",
            f"pgtrail: {len(processes)} process(es) of joined execution {state.execution_id} "
            "could not reach its row (Redis unreachable, or the execution already finished); "
            f"stored as a '{JOINED_EVENT}' row of logs_execution (counted in "
            "Trail.unmerged_processes; said once)",
        )
        error = state.error if status == "error" else None
        self.enqueue_execution(state, processes, status, error, self._now())
        state.unmerged = []

    @overload
    def process(self, name: str) -> _ProcessScope: ...
    @overload
    def process(self, name: Callable[P, R]) -> Callable[P, R]: ...

    def process(self, name: str | Callable[P, R]) -> _ProcessScope | Callable[P, R]:
        """A nested step: ``with trail.process("021 Send message"):`` or as a decorator.

        Args:
            name: The step's name, or the function to decorate (its ``__qualname__`` names
                the step). A name that is not clean text is cleaned where it is stored (strict
                mode raises when the step starts); a function that cannot be wrapped is
                returned as it is, and said once in the log.
        """
        if callable(name):
            try:
                label = getattr(name, "__qualname__", None)
                return _ProcessScope(self, label if isinstance(label, str) else safe_repr(name))(
                    name
                )
            except Exception as exc:
                _swallow("process", exc, self.settings.strict)
                return name
        return _ProcessScope(self, name)

    def _enter_process(self, name: str) -> tuple[ExecutionState, Span, Any] | None:
        state, parent = correlation.current()
        if state is None:
            self._no_execution(f"process {safe_repr(name)}")
            return None
        if state.trail.settings.strict:
            self._strict_clean.text(name, "process")
        span = correlation.new_child(parent or state.root_span, name, self._now())
        state.spans.append(span)
        state.open_spans.append(span)
        return state, span, correlation.push_span(span)

    def _exit_process(
        self, entered: tuple[ExecutionState, Span, Any], exc: BaseException | None
    ) -> None:
        state, span, token = entered
        correlation.pop_span(token)
        span.ended_at = self._now()
        span.status = "error" if exc is not None else "success"
        span.error = None if exc is None else _describe(exc)
        with contextlib.suppress(ValueError):
            state.open_spans.remove(span)
        if state.is_root:
            if self.redis.enabled:  # published in the background, for `pgtrail sweep`
                self._pending_spans.append((state.execution_id, span.record()))
        else:
            # A joined execution's row is written by its root, which reads these from Redis;
            # pushed now so they are there when the root finalises. What cannot get there is
            # kept for the join's own row (see `join`).
            record = span.record()
            pushed = state.shared and self.redis.push_spans(
                state.execution_id, [record], only_open=True
            )
            if not pushed:
                state.unmerged.append(record)

    def _finalise(self, state: ExecutionState) -> None:
        # Held records of a sampled-out execution go out first, whole or without bodies.
        sampling = self._sampler.end(state.execution_id, error=state.status == "error")
        records = [s.record() for s in state.spans]
        if self.redis.enabled:
            if not self.redis.claim_final(state.execution_id):
                return  # `pgtrail sweep` finalised it already
            records += self.redis.spans(state.execution_id)
        self._pending_spans = [p for p in self._pending_spans if p[0] != state.execution_id]
        processes = correlation.merge_process_records(records, state.root_span.span_id)
        finalized = state.root_span.ended_at or self._now()
        self.enqueue_execution(state, processes, state.status, state.error, finalized, sampling)
        self.redis.forget(state.execution_id)

    @property
    def sampler(self) -> Sampler:
        """This client's sampling: every record of an execution is routed through it."""
        return self._sampler

    def enqueue_execution(
        self,
        state: ExecutionState,
        processes: list[dict[str, Any]],
        status: str,
        error: str | None,
        finalized: dt.datetime,
        sampling: dict[str, Any] | None = None,
    ) -> None:
        """Queues the ``logs_execution`` row of ``state`` (the seam the OTLP assembler uses).

        Args:
            state: The execution; a root's row, or a join's own ``execution_joined`` row.
            processes: Every process of the execution in start order, as stored.
            status: ``success``, ``error`` or ``abandoned``.
            error: What went wrong, or None.
            finalized: When it ended (its duration is counted to here).
            sampling: The sampling decision to record in ``particular_data``, or None.
        """
        stamp: Stamp = (
            execution_event_id(state.execution_id),
            state.execution_id,
            state.started_at,
            state.tenant_id,
            state.user_id,
            state.session_id,
            state.root_span.span_id,
        )
        duration = round((finalized - state.started_at).total_seconds() * 1000)
        args: dict[str, Any] = {
            "workflow": state.workflow,
            "parent_execution_id": state.parent_execution_id,
            "status": status,
            "error": error,
            "processes": processes,
            "context": state.context,
            "finalized_at": finalized,
            "duration_ms": max(0, duration),
        }
        if sampling is not None:
            args["sampling"] = sampling
        if not state.is_root:
            # A join's own row (see `join`): an event id of its own, and no finalisation
            # time, so that readers of "the" row of the execution pick the root's.
            stamp = (None, *stamp[1:])
            args["event_type"] = JOINED_EVENT
            args["finalized_at"] = None
        self._flusher.submit((EXECUTION, stamp, args))
        if not self._flusher.background:
            self._flusher.flush()

    def _push_pending_spans(self) -> None:
        """Publishes the root processes' finished steps (so a sweep can rebuild them)."""
        pending, self._pending_spans = self._pending_spans, []
        grouped: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for execution_id, record in pending:
            grouped.setdefault(execution_id, []).append(record)
        for execution_id, records in grouped.items():
            self.redis.push_spans(execution_id, records)

    def sweep(self, idle_s: float) -> list[uuid.UUID]:
        """Finalises executions idle in Redis for ``idle_s`` seconds as ``abandoned``."""
        swept = []
        for execution_id in self.redis.idle(idle_s):
            meta = self.redis.load(execution_id)
            if not self.redis.claim_final(execution_id):
                self.redis.forget(execution_id)
                continue
            records = self.redis.spans(execution_id)
            if meta:
                started = dt.datetime.fromisoformat(meta["started_at"])
                root = Span(meta["root_span_id"], None, meta["workflow"], 0, started)
                state = ExecutionState(
                    trail=self,
                    execution_id=execution_id,
                    workflow=meta["workflow"],
                    tenant_id=meta.get("tenant_id") or "default",
                    user_id=meta.get("user_id") or None,
                    session_id=meta.get("session_id") or None,
                    context=correlation.json_dict(meta.get("context")),
                    parent_execution_id=_uuid_or_none(meta.get("parent_execution_id")),
                    started_at=started,
                    is_root=True,
                    root_span=root,
                )
                last = max(
                    (dt.datetime.fromisoformat(r["started_at"]) for r in records), default=started
                )
                root.ended_at = last
                root.status = "abandoned"
                processes = correlation.merge_process_records(
                    [root.record(), *records], root.span_id
                )
                self.enqueue_execution(
                    state, processes, "abandoned", f"no activity for {idle_s:.0f} s", self._now()
                )
                swept.append(execution_id)
            self.redis.forget(execution_id)
        return swept

    # -- events ------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)

    def _log(
        self,
        state: ExecutionState,
        span: Span | None,
        table: str,
        args: dict[str, Any],
    ) -> None:
        """Stamps one record of ``state`` and enqueues it (or holds it, when sampling).

        Raises whatever fails: the calling helper's guard decides (strict mode or not).
        """
        now = self.clock()
        if now.tzinfo is None:
            if self.settings.strict:
                raise ValidationError(
                    "the clock returned a naive datetime; pgtrail needs UTC-aware"
                )
            now = now.replace(tzinfo=dt.UTC)
        # The event id (a UUIDv7 of this time) is assigned by the writer, off this path.
        stamp: Stamp = (
            None,
            state.execution_hex,
            now,
            state.tenant_id,
            state.user_id,
            state.session_id,
            (span or state.root_span).span_id,
        )
        if self.settings.strict:
            _check_finite(args)
            self._flusher.preparer.check(table, stamp, args)
        if self._sampler.active:
            self._sampler.route(state.execution_id, (table, stamp, args))
        else:
            self._flusher.submit((table, stamp, args))

    def _no_execution(self, what: str) -> None:
        message = (
            f"pgtrail: {what} called outside any execution; open one with "
            "`with trail.execution(...)` or join one with `with trail.join(...)`"
        )
        if self.settings.strict:
            raise NoActiveExecutionError(message)
        _report_once(f"none:{what}", message)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def stats(self) -> FlushStats:
        """Counters: enqueued, written, spooled, replayed, rejected (with recent reasons)."""
        return self._flusher.stats

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Writes (or spools) everything logged so far; True when done within ``timeout``.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes. A value the
                writer cannot use makes this return False (said once in the log; strict
                mode raises).
        """
        try:
            return self._flusher.flush(timeout)
        except Exception as exc:
            _swallow("flush", exc, self.settings.strict)
            return False

    def replay_spool(self) -> int:
        """Writes spooled batches to PostgreSQL; returns the rows stored."""
        return self._flusher.replay_spool()

    def close(self) -> None:
        """Flushes and releases connections. Called at interpreter exit too."""
        if self._closed:
            return
        self._closed = True
        _live_trails.discard(self)  # a closed client's strict mode no longer applies
        # Each step guarded on its own: a failure to release held records or to publish
        # spans must not keep the writer from flushing what is queued.
        for step in (
            self._sampler.release_all,
            self._push_pending_spans,
            self._flusher.close,
            self.redis.close,
        ):
            try:
                step()
            except Exception as exc:
                _swallow("close", exc, self.settings.strict)

    def __enter__(self) -> Trail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._pending_spans = []
        self._sampler.reset_after_fork()
        self._flusher.after_fork_in_child()
        self.redis.reset_after_fork()


class _ProcessScope:
    """``trail.process(name)``: a context manager and a decorator (sync or async)."""

    def __init__(self, trail: Trail, name: str) -> None:
        self._trail = trail
        self._name = name
        self._entered: list[tuple[ExecutionState, Span, Any] | None] = []

    def __enter__(self) -> Span | None:
        try:
            entered = self._trail._enter_process(self._name)
        except Exception as exc:
            _swallow("process", exc, self._trail.settings.strict)
            entered = None
        self._entered.append(entered)
        return entered[1] if entered else None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        entered = self._entered.pop() if self._entered else None
        if entered is None:
            return
        try:
            self._trail._exit_process(entered, exc)
        except Exception as failure:
            # Never replaces the application's own exception, even in strict mode.
            _swallow("process", failure, self._trail.settings.strict and exc is None)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            async_func: Callable[P, Awaitable[Any]] = func

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with _ProcessScope(self._trail, self._name):
                    return await async_func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with _ProcessScope(self._trail, self._name):
                return func(*args, **kwargs)

        return run


def _trace_context(
    target: uuid.UUID | str | MutableMapping[str, str] | TraceContext,
) -> TraceContext:
    if isinstance(target, TraceContext):
        return target
    if isinstance(target, uuid.UUID):
        return TraceContext(target, None)
    if isinstance(target, str):
        found = correlation.extract({"traceparent": target})
        if found:
            return found
        try:
            return TraceContext(uuid.UUID(target), None)
        except ValueError:
            raise PgtrailError(f"not an execution id or traceparent: {target!r}") from None
    found = correlation.extract(target)
    if found is None:
        raise PgtrailError("no valid traceparent header to join")
    return found


def _uuid_or_none(raw: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


# -- module-level helpers acting on the current execution ----------------------------------


def _current_or_none(helper: str) -> tuple[ExecutionState, Span | None] | None:
    state, span = correlation.current()
    if state is None:
        message = (
            f"pgtrail: {helper} called outside any execution; open one with "
            "`with trail.execution(...)` or join one with `with trail.join(...)`"
        )
        if any(t.settings.strict for t in _live_trails):
            raise NoActiveExecutionError(message)
        _report_once(f"none:{helper}", message)
        return None
    return state, span


def log_llm_execution(
    *,
    agent_type: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    event_type: str = "llm_valid_execution",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    processing_time_ms: int | None = None,
    time_to_first_token_ms: int | None = None,
    input_cost: float | None = None,
    output_cost: float | None = None,
    total_cost: float | None = None,
    prompt: str | None = None,
    prompt_hash: str | None = None,
    prompt_version: str | None = None,
    error: str | None = None,
    payload: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Logs one model call in the current execution and process.

    Give tokens and no cost to have the cost inferred from ``pgtrail_model_price``.
    ``prompt`` is the prompt body, stored once in ``pgtrail_prompt`` and referenced by hash;
    ``payload`` takes the request and response bodies; ``data`` goes to particular_data.

    Never raises outside strict mode: text and JSON values are cleaned by the writer (and
    marked in ``_pgtrail_notes``); NaN or infinite costs are stored as null (strict mode
    raises); a record with a negative, fractional or over-int4 count, or an ``event_type``
    that is not an LLM outcome, is refused alone and reported.
    """
    try:
        current = _current_or_none("log_llm_execution")
        if current is not None:
            state, span = current
            # Frozen here rather than in the flusher's submit: the dictionary below then holds
            # only strings and numbers from the start (see pgtrail.writer.freeze).
            max_chars = state.trail.settings.max_field_chars
            data_json = frozen_dict(data, max_chars)
            payload_json = frozen_dict(payload, max_chars)
            # Every argument, None included: cheaper than filtering here, and the writer skips
            # the None values.
            args = {
                "agent_type": agent_type,
                "model": model,
                "provider": provider,
                "event_type": event_type,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_input_tokens": cached_input_tokens,
                "reasoning_tokens": reasoning_tokens,
                "processing_time_ms": processing_time_ms,
                "time_to_first_token_ms": time_to_first_token_ms,
                "input_cost": input_cost,
                "output_cost": output_cost,
                "total_cost": total_cost,
                "prompt": prompt,
                "prompt_hash": prompt_hash,
                "prompt_version": prompt_version,
                "error": error,
                "payload": None if payload_json is not None else payload,
                "data": None if data_json is not None else data,
                PAYLOAD_JSON: payload_json,
                DATA_JSON: data_json,
                # The execution's workflow and feature, added to particular_data by the writer.
                CONTEXT_MEMBERS: state.llm_members,
                CONTEXT: state.llm_context if state.llm_members is None else None,
            }
            state.trail._log(state, span, LLM, args)
    except Exception as exc:  # the one guard: never into the caller's application
        _swallow("log_llm_execution", exc, _strict_now())


def log_agent_execution(
    event: AgentEvent | None = None,
    *,
    agent_type: str | None = None,
    event_type: str | None = None,
    duration_ms: int | float | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Logs what an agent decided: a typed event model, or ``event_type`` with ``data``.

    Never raises outside strict mode: bad values are cleaned by the writer (and marked in
    ``_pgtrail_notes``), or the record is refused alone and reported.

    Args:
        event: A typed agent event (:class:`~pgtrail.AgentDecision`, :class:`~pgtrail.ToolCall`
            ...), or None.
        agent_type: Which agent, e.g. ``"coaching"``.
        event_type: The row's event type; by default the event model's, else
            ``"agent_event"``. NUL and lone surrogates are cleaned.
        duration_ms: How long the agent took, in milliseconds (a float is rounded; NaN and
            infinities are dropped, strict mode raises).
        data: More fields for ``particular_data``; a non-dict is stored as ``{"value": ...}``.
    """
    try:
        current = _current_or_none("log_agent_execution")
        if current is None:
            return
        args: dict[str, Any] = {"agent_type": agent_type}
        if event is not None:
            args["event"] = event
        if event_type is not None:
            args["event_type"] = event_type
        elif event is None:
            args["event_type"] = "agent_event"
        if duration_ms is not None:
            args["duration_ms"] = duration_ms
        if data is not None:
            args["data"] = data
        state, span = current
        state.trail._log(state, span, AGENT, args)
    except Exception as exc:  # the one guard: never into the caller's application
        _swallow("log_agent_execution", exc, _strict_now())


def log_user_journey(event_type: str, data: dict[str, Any] | None = None) -> None:
    """Logs one user-journey event (message, state transition, feedback...).

    Never raises outside strict mode: bad values are cleaned by the writer (and marked in
    ``_pgtrail_notes``), or the record is refused alone and reported.

    Args:
        event_type: What happened, e.g. ``"user_message_received"``; NUL and lone surrogates
            are cleaned, an empty one refuses the record.
        data: The event's facts for ``particular_data``; None is ``{}``, a non-dict is
            stored as ``{"value": ...}``.
    """
    try:
        current = _current_or_none("log_user_journey")
        if current is not None:
            state, span = current
            # `is None`, not `or`: the truth value of an array-like raises.
            args = {"event_type": event_type, "data": {} if data is None else data}
            state.trail._log(state, span, JOURNEY, args)
    except Exception as exc:  # the one guard: never into the caller's application
        _swallow("log_user_journey", exc, _strict_now())


def _close_all() -> None:
    for trail in list(_live_trails):
        with contextlib.suppress(Exception):
            trail.close()


def _after_fork_in_child() -> None:
    for trail in list(_live_trails):
        trail._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
