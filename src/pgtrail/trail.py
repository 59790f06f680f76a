"""``Trail``, the client: executions, joins, processes, and the records logged in them.

A record is stamped with the current execution and process and appended to the writer's
in-memory queue (:meth:`Trail.log_record`, which the ``log_*`` helpers of
:mod:`pgtrail.helpers` call); nothing here waits on the network and, outside strict mode,
nothing raises (:mod:`pgtrail.guard`). Everything else happens in the background flusher.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import inspect
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, ParamSpec, TypeVar, overload

from psycopg_pool import ConnectionPool

from pgtrail import context as execution_context
from pgtrail import executions, guard, propagation
from pgtrail.config import Settings
from pgtrail.context import ExecutionState, Span
from pgtrail.errors import NoActiveExecutionError, PgtrailError, ValidationError
from pgtrail.executions import JOINED_EVENT
from pgtrail.ids import new_span_id, uuid7, uuid_or_none
from pgtrail.propagation import TraceContext
from pgtrail.scores import SCORE_EVENT, ScoreRequest, score_data, target_execution
from pgtrail.shared_state import RedisState
from pgtrail.tables import AGENT
from pgtrail.writer.flusher import Flusher, FlushStats, WriterMetrics
from pgtrail.writer.freeze import frozen_dict, members
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.redact import Redactor
from pgtrail.writer.sampling import Sampler, SamplingConfig
from pgtrail.writer.sanitize import Sanitizer, safe_repr, safe_str
from pgtrail.writer.sink import PgSink, Sink

log = logging.getLogger("pgtrail")
_new_tuple = tuple.__new__

P = ParamSpec("P")
R = TypeVar("R")

_NUMBERS = ("input_cost", "output_cost", "total_cost", "duration_ms")
_DEFAULT_LOOKUP_S = 1.0
_LATE_IDENTITIES = 1024
"""Executions whose identity (from Redis or their row) a client remembers for later scores."""
_Tokens = tuple[Any, ...]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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

    def __init__(self, state: ExecutionState, trail: Trail) -> None:
        self._state = state
        self._trail = trail

    @property
    def execution_id(self) -> uuid.UUID:
        return self._state.execution_id

    def process(self, name: str) -> _ProcessScope:
        """Marks a nested step; nest ``with`` blocks to nest processes."""
        return self._trail.process(name)

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
        propagation.inject(headers)
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
        self._late_identities: dict[uuid.UUID, executions.Identity] = {}
        self._closed = False
        guard.live_clients.add(self)

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
            yield Execution(state, self)
        except BaseException as exc:
            failure = exc
            state.status = "error"
            state.error = state.error if state.error is not None else guard.describe(exc)
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
            return state, execution_context.activate(state, root)
        except Exception as exc:
            guard.swallow("execution", exc, self.settings.strict)
            return self._detached(), None

    def _close_execution(
        self, state: ExecutionState, tokens: _Tokens | None, failure: BaseException | None
    ) -> None:
        if tokens is None:
            return
        try:
            execution_context.deactivate(state, tokens)
            root = state.root_span
            root.ended_at = self._now()
            root.status = "error" if state.status == "error" else "success"
            root.error = state.error if state.status == "error" else None
            self._finalise(state)
        except Exception as exc:
            # Never replaces the application's own exception, even in strict mode.
            guard.swallow("execution", exc, self.settings.strict and failure is None)

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
        guard.report_once(
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
            guard.report_once(
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
            yield Execution(state, self)
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
            found = self._joined_identity(
                trace.execution_id, meta, given, lookup_timeout_s, "join()"
            )
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
                context=executions.json_dict(meta.get("context")),
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
            return state, execution_context.activate(state, anchor), owns
        except Exception as exc:
            guard.swallow("join", exc, self.settings.strict)
            return self._detached(), None, False

    def _join_target(self, target: object) -> TraceContext:
        try:
            return _trace_context(target)  # type: ignore[arg-type]
        except Exception as exc:
            if self.settings.strict:
                raise
            fresh = TraceContext(uuid7(), None)
            guard.report_once(
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
        what: str,
    ) -> executions.Identity:
        """Tenant, user and session of a joined (or late-scored) execution: Redis, its row,
        or the arguments; ``what`` names the call in what is said in the log."""
        if meta:
            found: executions.Identity | None = executions.Identity(
                meta.get("tenant_id") or "default",
                meta.get("user_id") or None,
                meta.get("session_id") or None,
                meta.get("workflow") or None,
                "redis",
                meta.get("root_span_id") or None,
            )
        else:
            found = executions.stored_identity(self.settings, execution_id, _seconds(timeout_s))
        if found is None:
            if any(v is not None for v in given):
                return executions.Identity(given[0] or "default", given[1], given[2], None, "join")
            guard.report_once(
                f"{what}:{execution_id}",
                f"pgtrail: execution {execution_id} is neither open in Redis nor stored, and "
                f"{what} was given no tenant_id, user_id or session_id; its events are stored "
                "under tenant 'default' with no user or session",
            )
            return executions.Identity("default", None, None, None, "unknown")
        for field, value, known in zip(
            ("tenant_id", "user_id", "session_id"),
            given,
            (found.tenant_id, found.user_id, found.session_id),
            strict=True,
        ):
            if value is not None and value != known:
                guard.report_once(
                    f"{what}-differs:{execution_id}:{field}",
                    f"pgtrail: {what} of {execution_id} was given {field}="
                    f"{safe_repr(value)[:100]} "
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
            execution_context.deactivate(state, tokens)
            failed = failure is not None or state.status == "error"
            if owns_sampling:
                self._sampler.end(state.execution_id, error=failed)
            if failure is not None and state.error is None:
                state.error = guard.describe(failure)
            self._reconcile(state, "error" if failed else "success")
        except Exception as exc:
            # Never replaces the application's own exception, even in strict mode.
            guard.swallow("join", exc, self.settings.strict and failure is None)

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
        processes = executions.merge_process_records(state.unmerged, anchor.span_id)
        self.unmerged_processes += len(processes)
        guard.report_once(
            f"unmerged:{id(self)}",
            f"pgtrail: {len(processes)} process(es) of joined execution {state.execution_id} "
            "could not reach its row (Redis unreachable, or the execution already finished); "
            f"stored as a '{JOINED_EVENT}' row of logs_execution (counted in "
            "Trail.unmerged_processes; said once)",
        )
        error = state.error if status == "error" else None
        self.enqueue_execution(
            executions.execution_record(state, processes, status, error, self._now())
        )
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
                guard.swallow("process", exc, self.settings.strict)
                return name
        return _ProcessScope(self, name)

    def _enter_process(self, name: str) -> tuple[ExecutionState, Span, Any] | None:
        state, parent = execution_context.current()
        if state is None:
            self._no_execution(f"process {safe_repr(name)}")
            return None
        if state.trail.settings.strict:
            self._strict_clean.text(name, "process")
        span = execution_context.new_child(parent or state.root_span, name, self._now())
        state.spans.append(span)
        state.open_spans.append(span)
        return state, span, execution_context.push_span(span)

    def _exit_process(
        self, entered: tuple[ExecutionState, Span, Any], exc: BaseException | None
    ) -> None:
        state, span, token = entered
        execution_context.pop_span(token)
        span.ended_at = self._now()
        span.status = "error" if exc is not None else "success"
        span.error = None if exc is None else guard.describe(exc)
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
        processes = executions.merge_process_records(records, state.root_span.span_id)
        finalized = state.root_span.ended_at or self._now()
        self.enqueue_execution(
            executions.execution_record(
                state, processes, state.status, state.error, finalized, sampling
            )
        )
        self.redis.forget(state.execution_id)

    @property
    def sampler(self) -> Sampler:
        """This client's sampling: every record of an execution is routed through it."""
        return self._sampler

    def enqueue_execution(self, record: QueuedRecord) -> None:
        """Queues an execution's row, made by :func:`pgtrail.executions.execution_record`
        (the seam the OTLP assembler uses too); a synchronous client writes it at once.

        Args:
            record: The ``logs_execution`` record.
        """
        self._flusher.submit(record)
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
                    context=executions.json_dict(meta.get("context")),
                    parent_execution_id=uuid_or_none(meta.get("parent_execution_id")),
                    started_at=started,
                    is_root=True,
                    root_span=root,
                )
                last = max(
                    (dt.datetime.fromisoformat(r["started_at"]) for r in records), default=started
                )
                root.ended_at = last
                root.status = "abandoned"
                processes = executions.merge_process_records(
                    [root.record(), *records], root.span_id
                )
                reason = f"no activity for {idle_s:.0f} s"
                self.enqueue_execution(
                    executions.execution_record(state, processes, "abandoned", reason, self._now())
                )
                swept.append(execution_id)
            self.redis.forget(execution_id)
        return swept

    # -- events ------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)

    def log_record(
        self,
        state: ExecutionState,
        span: Span | None,
        table: str,
        args: dict[str, Any],
        data_json: str | None = None,
        payload_json: str | None = None,
        context_members: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Stamps one record of ``state`` and enqueues it (or holds it, when sampling).

        The seam of the module-level ``log_*`` helpers; raises whatever fails, and the
        calling helper's guard decides (strict mode or not).

        Args:
            state: The execution the record belongs to.
            span: The process it happened in; None for the execution's root.
            table: The log table (:mod:`pgtrail.tables`).
            args: The caller's arguments, as given.
            data_json: ``data`` already frozen to JSON on the caller's side, or None.
            payload_json: ``payload`` already frozen to JSON, or None.
            context_members: The execution's context as serialised JSON members, or None.
            context: The same context as a dictionary, when it was not serialised.
        """
        now = self.clock()
        if now.tzinfo is None:
            if self.settings.strict:
                raise ValidationError(
                    "the clock returned a naive datetime; pgtrail needs UTC-aware"
                )
            now = now.replace(tzinfo=dt.UTC)
        # The event id (a UUIDv7 of this time) is assigned by the writer, off this path.
        # Every field, in order, through tuple's own constructor: half the cost of the
        # NamedTuple's on the path every log_* call takes.
        record = _new_tuple(
            QueuedRecord,
            (
                table,
                None,
                state.execution_hex,
                now,
                state.tenant_id,
                state.user_id,
                state.session_id,
                (span or state.root_span).span_id,
                args,
                data_json,
                payload_json,
                context_members,
                context,
                None,
            ),
        )
        if self.settings.strict:
            _check_finite(args)
            self._flusher.preparer.check(record)
        if self._sampler.active:
            self._sampler.route(state.execution_id, record)
        else:
            self._flusher.submit(record)

    def log_score(
        self,
        name: str,
        value: float | bool | str,
        *,
        comment: str | None = None,
        source: str | None = None,
        data: dict[str, Any] | None = None,
        execution_id: uuid.UUID | str | None = None,
        span_id: str | None = None,
        agent_type: str | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        lookup_timeout_s: float = _DEFAULT_LOOKUP_S,
    ) -> None:
        """Logs a score or piece of feedback on an execution, now or any time later.

        Without ``execution_id`` it attaches to the current execution and process. With it,
        it attaches to that execution from any process at any time, under the execution's
        tenant, user and session, found as :meth:`join` finds them: from Redis while it is
        open, else from its stored ``logs_execution`` row, else from ``tenant_id``,
        ``user_id`` and ``session_id``; when none is known the score is stored under
        ``default`` and that is said once in the log. Stored as an agent event of type
        ``score`` (see :mod:`pgtrail.scores`). Never raises outside strict mode: a bad
        name or value is said once in the log and the score is not stored; strict mode
        raises :class:`~pgtrail.errors.ValidationError`.

        Args:
            name: What is scored, e.g. ``"helpfulness"`` (at most 200 characters).
            value: A finite number (``0.8``), a bool (a thumbs up is ``True``) or a text
                (a category such as ``"off_topic"``).
            comment: Why, in words, or None.
            source: Who scored: ``"human"``, ``"model"``, ``"rule"``... or None.
            data: More about the score (the judge's model, a rubric), a dict, or None.
            execution_id: The execution scored, when it is not the current one.
            span_id: The process scored; by default the current one, or the root of a
                late-scored execution.
            agent_type: The agent whose work is scored, or None.
            tenant_id: The tenant for an execution neither Redis nor PostgreSQL knows.
            user_id: The user, on the same terms as ``tenant_id``.
            session_id: The session, on the same terms as ``tenant_id``.
            lookup_timeout_s: Longest wait, in seconds, for a finished execution's row (as
                in :meth:`join`).
        """
        self.attach_score(
            ScoreRequest(
                name,
                value,
                comment,
                source,
                data,
                execution_id,
                span_id,
                agent_type,
                tenant_id,
                user_id,
                session_id,
                lookup_timeout_s,
            )
        )

    def attach_score(self, request: ScoreRequest) -> None:
        """Stores one score (the seam of :func:`pgtrail.log_score`); never raises outside
        strict mode.

        Args:
            request: The score as the caller gave it.
        """
        try:
            target = target_execution(request.execution_id)
            current, span = execution_context.current()
            if target is None or (current is not None and current.execution_id == target):
                if current is None:
                    self._no_execution("log_score")
                    return
                state, attached = current, "current"
            else:
                found = self._late_identity(target, request)
                state, span = self._late_state(target, found), None
                attached = "given" if found.source == "join" else found.source
            particular = score_data(request, attached)
            if request.span_id is not None:
                scored = self._identity(request.span_id, "span_id") or state.root_span.span_id
                span = Span(scored, None, "scored", 0, state.started_at)
            data_json = frozen_dict(particular, self.settings.max_field_chars)
            args: dict[str, Any] = {
                "agent_type": self._identity(request.agent_type, "agent_type"),
                "event_type": SCORE_EVENT,
                "data": None if data_json is not None else particular,
            }
            state.trail.log_record(state, span, AGENT, args, data_json)
        except Exception as exc:
            guard.swallow("log_score", exc, self.settings.strict)

    def _late_identity(self, execution_id: uuid.UUID, request: ScoreRequest) -> executions.Identity:
        """Whose execution a score from outside it is on (as :meth:`join` finds it)."""
        found = self._late_identities.get(execution_id)
        if found is not None:
            return found
        meta = self.redis.load(execution_id) or {}
        given = (
            self._identity(request.tenant_id, "tenant_id"),
            self._identity(request.user_id, "user_id"),
            self._identity(request.session_id, "session_id"),
        )
        found = self._joined_identity(
            execution_id, meta, given, request.lookup_timeout_s, "log_score()"
        )
        if found.source in ("redis", "database"):  # whose it is never changes: asked once
            if len(self._late_identities) >= _LATE_IDENTITIES:
                self._late_identities.pop(next(iter(self._late_identities)))
            self._late_identities[execution_id] = found
        return found

    def _late_state(self, execution_id: uuid.UUID, found: executions.Identity) -> ExecutionState:
        """A detached, never current state of an execution scored from outside it."""
        now = self._now()
        root = Span(found.root_span_id or new_span_id(), None, found.workflow or "", 0, now)
        return ExecutionState(
            trail=self,
            execution_id=execution_id,
            workflow=found.workflow or "unknown",
            tenant_id=found.tenant_id,
            user_id=found.user_id,
            session_id=found.session_id,
            context={},
            parent_execution_id=None,
            started_at=now,
            is_root=False,
            root_span=root,
            shared=False,
        )

    def _no_execution(self, what: str) -> None:
        message = (
            f"pgtrail: {what} called outside any execution; open one with "
            "`with trail.execution(...)` or join one with `with trail.join(...)`"
        )
        if self.settings.strict:
            raise NoActiveExecutionError(message)
        guard.report_once(f"none:{what}", message)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """How many records wait in memory for the writer (bounded by ``queue_size``)."""
        return len(self._flusher.queue)

    @property
    def stats(self) -> FlushStats:
        """Counters: enqueued, written, spooled, replayed, rejected (with recent reasons)."""
        return self._flusher.stats

    def metrics(self) -> WriterMetrics:
        """A snapshot of the writer's counters and gauges, for an application's own metrics.

        Enqueued, written by table, rejected, spooled, replayed and dropped records, the
        spool's files and bytes on disk, the queue's depth and whether PostgreSQL is known
        up (see :class:`~pgtrail.writer.flusher.WriterMetrics`). Cheap enough to call on
        every scrape: it lists the spool folder and copies counters, never waits on the
        database.
        """
        return self._flusher.metrics()

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
            guard.swallow("flush", exc, self.settings.strict)
            return False

    def replay_spool(self) -> int:
        """Writes spooled batches to PostgreSQL; returns the rows stored."""
        return self._flusher.replay_spool()

    def close(self) -> None:
        """Flushes and releases connections. Called at interpreter exit too."""
        if self._closed:
            return
        self._closed = True
        guard.live_clients.discard(self)  # a closed client's strict mode no longer applies
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
                guard.swallow("close", exc, self.settings.strict)

    def __enter__(self) -> Trail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def after_fork_in_child(self) -> None:
        """In a forked child: forgets the parent's queue, connections and threads."""
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
            guard.swallow("process", exc, self._trail.settings.strict)
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
            guard.swallow("process", failure, self._trail.settings.strict and exc is None)

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
        found = propagation.extract({"traceparent": target})
        if found:
            return found
        try:
            return TraceContext(uuid.UUID(target), None)
        except ValueError:
            raise PgtrailError(f"not an execution id or traceparent: {target!r}") from None
    found = propagation.extract(target)
    if found is None:
        raise PgtrailError("no valid traceparent header to join")
    return found


# -- module-level helpers acting on the current execution ----------------------------------
