"""``Trail``, the client: executions, processes, and the ``log_*`` helpers.

``log_*`` calls stamp the record (event id, time, the ids of the current execution and
process) and append it to an in-memory queue; they never wait on the network and, outside
strict mode, never raise. Everything else happens in the background flusher.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import inspect
import logging
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
from pgtrail.flusher import Flusher, FlushStats
from pgtrail.ids import execution_event_id, new_span_id, uuid7
from pgtrail.models import AgentEvent
from pgtrail.records import Stamp
from pgtrail.sampling import Sampler, SamplingConfig
from pgtrail.sink import AGENT, EXECUTION, JOURNEY, LLM, PgSink
from pgtrail.snapshot import (
    CONTEXT,
    CONTEXT_MEMBERS,
    DATA_JSON,
    PAYLOAD_JSON,
    frozen_dict,
    members,
)

log = logging.getLogger("pgtrail")

P = ParamSpec("P")
R = TypeVar("R")

_live_trails: weakref.WeakSet[Trail] = weakref.WeakSet()
_reported: set[str] = set()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _report_once(key: str, message: str) -> None:
    if key not in _reported:
        _reported.add(key)
        log.error(message)


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
        """Marks the execution as failed without raising."""
        self._state.status = "error"
        self._state.error = error

    def abandon(self, reason: str | None = None) -> None:
        """Marks the execution as abandoned (the user walked away)."""
        self._state.status = "abandoned"
        self._state.error = reason

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
        **overrides: Any :class:`Settings` field, e.g. ``dsn=...``, ``redis_url=None``, or
            sampling: ``sample_rates={"001 Main": 0.1}``, ``default_sample_rate=1.0``,
            ``sample_keep_cost_usd=0.5`` (see :mod:`pgtrail.sampling`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        sync: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
        pool: ConnectionPool | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_env()
        if overrides:  # an explicit None (e.g. redis_url=None) turns a setting off
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        self.settings = settings
        self.clock = clock or _utc_now
        self.redis = RedisState(settings.redis_url, settings.redis_prefix)
        self._flusher = Flusher(
            settings, PgSink(settings, pool), background=not sync, on_flush=self._push_pending_spans
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
        including those that other processes appended after joining it.
        """
        started = self._now()
        root = Span(new_span_id(), None, workflow, 0, started)
        ctx = dict(context or {})
        state = ExecutionState(
            trail=self,
            execution_id=execution_id or uuid7(int(started.timestamp() * 1000)),
            workflow=workflow,
            tenant_id=tenant_id or "default",
            user_id=None if user_id is None else str(user_id),
            session_id=session_id,
            context=ctx,
            parent_execution_id=parent_execution_id,
            started_at=started,
            is_root=True,
            root_span=root,
            spans=[root],
        )
        self._set_llm_context(state, {"workflow": workflow, "feature": ctx.get("feature")})
        self.redis.open(state)
        self._sampler.begin(state.execution_id, workflow, opened_here=True)
        tokens = correlation.activate(state, root)
        try:
            yield Execution(state)
        except BaseException as exc:
            state.status = "error"
            state.error = state.error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            correlation.deactivate(state, tokens)
            root.ended_at = self._now()
            root.status = "error" if state.status == "error" else "success"
            root.error = state.error if state.status == "error" else None
            self._finalise(state)

    @contextlib.contextmanager
    def join(
        self,
        target: uuid.UUID | str | MutableMapping[str, str] | TraceContext,
    ) -> Iterator[Execution]:
        """Joins an execution opened elsewhere, by id, traceparent value, or headers.

        Processes marked inside are appended to that execution's row; events logged inside
        carry its ids. Works without Redis too, but then the execution's row cannot show
        this process's steps (said once in the log).
        """
        trace = _trace_context(target)
        meta = self.redis.load(trace.execution_id) or {}
        if not meta:
            _report_once(
                f"join:{trace.execution_id}",
                f"pgtrail: execution {trace.execution_id} is not open in Redis; events are still "
                "written under its id, but its row will not list this process's steps",
            )
        started = self._now()
        parent_span = trace.parent_span_id or meta.get("root_span_id") or None
        anchor = Span(
            parent_span or new_span_id(), None, meta.get("workflow") or "joined", 0, started
        )
        state = ExecutionState(
            trail=self,
            execution_id=trace.execution_id,
            workflow=meta.get("workflow") or "joined",
            tenant_id=meta.get("tenant_id") or "default",
            user_id=meta.get("user_id") or None,
            session_id=meta.get("session_id") or None,
            context=correlation.json_dict(meta.get("context")),
            parent_execution_id=None,
            started_at=started,
            is_root=False,
            root_span=anchor,
        )
        self._set_llm_context(
            state, {"workflow": state.workflow, "feature": state.context.get("feature")}
        )
        owns_sampling = self._sampler.begin(state.execution_id, state.workflow, opened_here=False)
        tokens = correlation.activate(state, anchor)
        failed = False
        try:
            yield Execution(state)
        except BaseException:
            failed = True
            raise
        finally:
            correlation.deactivate(state, tokens)
            if owns_sampling:
                self._sampler.end(state.execution_id, error=failed or state.status == "error")

    @overload
    def process(self, name: str) -> _ProcessScope: ...
    @overload
    def process(self, name: Callable[P, R]) -> Callable[P, R]: ...

    def process(self, name: str | Callable[P, R]) -> _ProcessScope | Callable[P, R]:
        """A nested step: ``with trail.process("021 Send message"):`` or as a decorator."""
        if callable(name):
            return _ProcessScope(self, name.__qualname__)(name)
        return _ProcessScope(self, name)

    def _enter_process(self, name: str) -> tuple[ExecutionState, Span, Any] | None:
        state, parent = correlation.current()
        if state is None:
            self._no_execution(f"process {name!r}")
            return None
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
        span.error = None if exc is None else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(ValueError):
            state.open_spans.remove(span)
        if state.is_root:
            if self.redis.enabled:  # published in the background, for `pgtrail sweep`
                self._pending_spans.append((state.execution_id, span.record()))
        else:
            # A joined execution's row is written by its root, which reads these from Redis;
            # pushed now so they are there when the root finalises. Without Redis they
            # cannot reach the row (said once in the log).
            self.redis.push_spans(state.execution_id, [span.record()])

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
        self._enqueue_execution(state, processes, state.status, state.error, finalized, sampling)
        self.redis.forget(state.execution_id)

    def _enqueue_execution(
        self,
        state: ExecutionState,
        processes: list[dict[str, Any]],
        status: str,
        error: str | None,
        finalized: dt.datetime,
        sampling: dict[str, Any] | None = None,
    ) -> None:
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
                self._enqueue_execution(
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
        helper: str,
    ) -> None:
        """Stamps one record of ``state`` and enqueues it (or holds it, when sampling)."""
        try:
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
                self._flusher.preparer.check(table, stamp, args)
            if self._sampler.active:
                self._sampler.route(state.execution_id, (table, stamp, args))
            else:
                self._flusher.submit((table, stamp, args))
        except Exception:
            if self.settings.strict:
                raise
            log.exception("pgtrail: %s failed", helper)  # never into the caller's application

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
        """Writes (or spools) everything logged so far; True when done within ``timeout``."""
        return self._flusher.flush(timeout)

    def replay_spool(self) -> int:
        """Writes spooled batches to PostgreSQL; returns the rows stored."""
        return self._flusher.replay_spool()

    def close(self) -> None:
        """Flushes and releases connections. Called at interpreter exit too."""
        if self._closed:
            return
        self._closed = True
        self._sampler.release_all()
        self._push_pending_spans()
        self._flusher.close()
        self.redis.close()

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
        entered = self._trail._enter_process(self._name)
        self._entered.append(entered)
        return entered[1] if entered else None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        entered = self._entered.pop()
        if entered is not None:
            self._trail._exit_process(entered, exc)

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
    """
    current = _current_or_none("log_llm_execution")
    if current is not None:
        state, span = current
        # Frozen here rather than in the flusher's submit: the dictionary below then holds
        # only strings and numbers from the start (see pgtrail.snapshot).
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
        state.trail._log(state, span, LLM, args, "log_llm_execution")


def log_agent_execution(
    event: AgentEvent | None = None,
    *,
    agent_type: str | None = None,
    event_type: str | None = None,
    duration_ms: int | float | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Logs what an agent decided: a typed event model, or ``event_type`` with ``data``."""
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
    state.trail._log(state, span, AGENT, args, "log_agent_execution")


def log_user_journey(event_type: str, data: dict[str, Any] | None = None) -> None:
    """Logs one user-journey event (message, state transition, feedback...)."""
    current = _current_or_none("log_user_journey")
    if current is not None:
        state, span = current
        args = {"event_type": event_type, "data": data or {}}
        state.trail._log(state, span, JOURNEY, args, "log_user_journey")


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
