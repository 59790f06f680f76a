"""Validated requests into the client's records, through the seams ``Trail`` itself uses.

Nothing here writes a row of its own making. Events become the same
:class:`~pgtrail.writer.record.QueuedRecord` the ``log_*`` helpers enqueue, routed through
:attr:`pgtrail.Trail.sampler` (so sampling applies, and the writer validates, cleans,
redacts and prices them); execution rows come from :func:`pgtrail.executions.execution_record`
and go through :meth:`pgtrail.Trail.enqueue_execution`. The incremental form keeps its
state where :meth:`pgtrail.Trail.join` looks for it: an open execution is published with
:meth:`pgtrail.shared_state.RedisState.open`, events are added inside ``trail.join(id)``
(which finds the tenant, user and session in Redis, in the execution's stored row, or in
the request), processes are appended to the execution in Redis for its row, and finishing
writes that row as a root's finalisation does.

Times and ids a client leaves out come from the request's :class:`Stamp` (see
:mod:`pgtrail.jsonapi.idempotency`): an event without ``created_at`` takes its process's
start (or the request's default time) plus one microsecond per event before it in the body,
so the events of one request sort as they were sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pgtrail import context as execution_context
from pgtrail import executions
from pgtrail.context import ExecutionState, Span
from pgtrail.errors import PgtrailError
from pgtrail.ids import new_span_id, uuid7, uuid_or_none
from pgtrail.jsonapi.bodies import (
    AppendIn,
    BodyError,
    ExecutionIn,
    FieldError,
    FinishIn,
    OpenIn,
    ProcessIn,
    RejectedEvent,
    validate_event,
)
from pgtrail.jsonapi.idempotency import (
    Derivation,
    joined_row_id,
    process_span_id,
    root_span_id,
    uuid7_time,
)
from pgtrail.tables import LLM
from pgtrail.trail import Trail
from pgtrail.writer.copytext import INT4_MAX
from pgtrail.writer.record import QueuedRecord

log = logging.getLogger("pgtrail")

MAX_PROCESS_DEPTH = 64
"""Deepest nesting of processes a request may hold."""
_TICK = dt.timedelta(microseconds=1)
_UNSTABLE_EVENT_ID = (
    "an event_id is recognised on a retry together with its time: give created_at, use a "
    "UUIDv7 event_id (its time is the event's), or send an Idempotency-Key"
)
_UNSTABLE_EXECUTION_ID = (
    "an execution_id is recognised on a retry together with its start: give started_at, "
    "use a UUIDv7 execution_id (its time is the start), or send an Idempotency-Key"
)


class UnavailableError(PgtrailError):
    """What the request needs (Redis) cannot be reached; nothing was stored."""


class NotFoundError(PgtrailError):
    """The execution the request names is neither open nor stored; nothing was stored."""


@dataclass(frozen=True)
class Stamp:
    """What a request's records take when the client leaves their times and ids out."""

    now: dt.datetime
    """The default time: the first use of the request's Idempotency-Key, else its arrival."""
    stable: bool
    """Whether ``now`` is the same for every retry (it comes from a key)."""
    derive: Derivation | None
    """Ids derived from the key, or None without one (the writer's own ids are used)."""
    clock: dt.datetime
    """The time now, which UUIDv7 times are judged against."""


@dataclass
class Stored:
    """What one request handed to the client."""

    execution_id: uuid.UUID
    """The execution the request was about."""
    events: int = 0
    """Events accepted."""
    processes: int = 0
    """Processes accepted."""
    rejected: list[RejectedEvent] = field(default_factory=list)
    """Events left out, with why."""
    writes: bool = False
    """Whether records went to the writer (the answer waits until they are durable)."""
    after_durable: Callable[[], None] | None = None
    """What to do once they are durable, or None."""
    details: dict[str, Any] = field(default_factory=dict)
    """More fields for the answer."""


# -- the four requests ---------------------------------------------------------------------------


def store_whole(trail: Trail, body: ExecutionIn, stamp: Stamp) -> Stored:
    """``POST /v1/executions``: a whole execution, written at once.

    Args:
        trail: The client the records go to.
        body: The validated request.
        stamp: The request's default time and derived ids.

    Raises:
        BodyError: The processes' structure is malformed (nothing was enqueued).
    """
    starts = [p.started_at for p in _walk(body.processes) if p.started_at is not None]
    started, stable = _start(body.started_at, body.execution_id, starts, stamp)
    if body.execution_id is not None and not stable:
        raise BodyError(
            f"started_at: {_UNSTABLE_EXECUTION_ID}",
            (FieldError("started_at", _UNSTABLE_EXECUTION_ID),),
        )
    execution_id = body.execution_id or _new_execution_id(started, stamp)
    status = body.status or ("error" if body.error else "success")
    context = dict(body.context or {})
    root = Span(root_span_id(execution_id), None, body.workflow, 0, started)
    state = ExecutionState(
        trail=trail,
        execution_id=execution_id,
        workflow=body.workflow,
        tenant_id=body.tenant_id or "default",
        user_id=body.user_id,
        session_id=body.session_id,
        context=context,
        parent_execution_id=body.parent_execution_id,
        started_at=started,
        is_root=True,
        root_span=root,
        llm_context={"workflow": body.workflow, "feature": context.get("feature")},
    )
    plan = _plan(
        execution_id, root, body.processes, body.events, started, stable, stamp, whole=True
    )
    records, rejected = _event_records(state, plan, started, stable, stamp, whole=True)
    given = [t for s in plan.spans for t in (s.started_at, s.ended_at) if t is not None]
    given += [r.created_at for r in records]
    finalized = body.finalized_at or max([started, *given] if given else [started, stamp.now])
    root.ended_at = max(finalized, started)
    _check_duration(started, root.ended_at)
    root.status = status if status in ("error", "abandoned") else "success"
    root.error = body.error if status != "success" else None
    # As the OTLP assembler does: sampling decided and held for this execution alone.
    sampler = trail.sampler
    sampler.begin(execution_id, body.workflow, opened_here=True)
    for record in records:
        sampler.route(execution_id, record)
    sampling = sampler.end(execution_id, error=status == "error")
    processes = executions.merge_process_records(
        [root.record(), *(s.record() for s in plan.spans)], root.span_id
    )
    trail.enqueue_execution(
        executions.execution_record(state, processes, status, root.error, root.ended_at, sampling)
    )
    return Stored(execution_id, len(records), len(plan.spans), rejected, writes=True)


def open_execution(trail: Trail, body: OpenIn, stamp: Stamp) -> Stored:
    """``POST /v1/executions/open``: publishes an execution in Redis, where joins find it.

    Args:
        trail: The client whose Redis holds open executions.
        body: The validated request.
        stamp: The request's default time and derived ids.

    Raises:
        UnavailableError: Redis is off or unreachable: nobody could join the execution.
    """
    started, _ = _start(body.started_at, body.execution_id, [], stamp)
    execution_id = body.execution_id or _new_execution_id(started, stamp)
    root = Span(root_span_id(execution_id), None, body.workflow, 0, started)
    state = ExecutionState(
        trail=trail,
        execution_id=execution_id,
        workflow=body.workflow,
        tenant_id=body.tenant_id or "default",
        user_id=body.user_id,
        session_id=body.session_id,
        context=dict(body.context or {}),
        parent_execution_id=body.parent_execution_id,
        started_at=started,
        is_root=True,
        root_span=root,
        spans=[root],
    )
    _require_redis(trail)
    trail.redis.open(state)
    if trail.redis.load(execution_id) is None:  # open() says nothing when Redis fails
        raise UnavailableError("Redis did not take the execution; retry later")
    traceparent = f"00-{execution_id.hex}-{root.span_id}-01"
    return Stored(execution_id, details={"traceparent": traceparent})


def append(
    trail: Trail, execution_id: uuid.UUID, body: AppendIn, stamp: Stamp, lookup_timeout_s: float
) -> Stored:
    """``POST /v1/executions/{id}/events``: processes and events added to an execution.

    Args:
        trail: The client the records go to.
        execution_id: The execution, from the path.
        body: The validated request.
        stamp: The request's default time and derived ids.
        lookup_timeout_s: Longest wait for the execution's stored row when it is not open.

    Raises:
        UnavailableError: Redis is off or unreachable (the execution's tenant, user and
            session could not be trusted).
        BodyError: The processes' structure is malformed (nothing was enqueued).
    """
    _require_redis(trail)
    _open_meta(trail, execution_id)
    return _append(trail, execution_id, body, stamp, lookup_timeout_s)


def finish(
    trail: Trail, execution_id: uuid.UUID, body: FinishIn, stamp: Stamp, lookup_timeout_s: float
) -> Stored:
    """``POST /v1/executions/{id}/finish``: the last processes and events, then the
    execution's row with every process any request or service added.

    Finishing again is harmless: the row's event id derives from the execution's id, so a
    second row is a no-op; an execution already finished (its row stored) takes the
    request's events as a late join does and leaves its processes out (they are in the row
    already; late processes go to ``/events``).

    Args:
        trail: The client the records go to.
        execution_id: The execution, from the path.
        body: The validated request.
        stamp: The request's default time and derived ids.
        lookup_timeout_s: Longest wait for the execution's stored row when it is not open.

    Raises:
        UnavailableError: Redis is off or unreachable.
        NotFoundError: The execution is neither open nor stored.
        BodyError: The processes' structure is malformed (nothing was enqueued).
    """
    _require_redis(trail)
    meta = _open_meta(trail, execution_id)
    if meta is None:
        if executions.stored_identity(trail.settings, execution_id, lookup_timeout_s) is None:
            raise NotFoundError(
                f"execution {execution_id} is neither open nor stored: open it with "
                "POST /v1/executions/open, or send it whole to POST /v1/executions"
            )
        # Sent again (a retry, most likely): its events are stored (their ids make a retry
        # a no-op) and its processes, already in the row, are left out.
        late = body.model_copy(update={"processes": []})
        stored = _append(trail, execution_id, late, stamp, lookup_timeout_s)
        stored.details.update(finished="earlier", processes_left_out=len(body.processes))
        return stored
    state = _state_from_meta(trail, execution_id, meta)
    root = state.root_span
    finalized = max(body.finalized_at or stamp.now, root.started_at)
    _check_duration(root.started_at, finalized)
    stored = _append(trail, execution_id, body, stamp, lookup_timeout_s)
    status = body.status or ("error" if body.error else "success")
    # Claimed first, as a root finalises: processes pushed after it are refused and their
    # senders write rows of their own. A claim already taken (an earlier attempt of this
    # request, a sweep) is no reason to stop: the row's event id is the execution's, so
    # whichever row is stored first stays and the other is a no-op.
    trail.redis.claim_final(execution_id)
    root.ended_at = finalized
    root.status = status if status in ("error", "abandoned") else "success"
    root.error = body.error if status != "success" else None
    processes = executions.merge_process_records(
        [root.record(), *trail.redis.spans(execution_id)], root.span_id
    )
    sampler = trail.sampler
    sampler.begin(execution_id, state.workflow, opened_here=False)
    sampling = sampler.end(execution_id, error=status == "error")
    trail.enqueue_execution(
        executions.execution_record(state, processes, status, root.error, finalized, sampling)
    )
    stored.writes = True
    # Forgotten only once the row is durable: a retry after a failure can still build it.
    stored.after_durable = lambda: trail.redis.forget(execution_id)
    stored.details.update(status=status, finished="now")
    return stored


# -- pieces ----------------------------------------------------------------------------------------


def _append(
    trail: Trail, execution_id: uuid.UUID, body: AppendIn, stamp: Stamp, lookup_timeout_s: float
) -> Stored:
    with trail.join(
        execution_id,
        tenant_id=body.tenant_id,
        user_id=body.user_id,
        session_id=body.session_id,
        lookup_timeout_s=lookup_timeout_s,
    ):
        state, _ = execution_context.current()
        if state is None or state.execution_id != execution_id:
            raise PgtrailError(f"execution {execution_id} could not be joined")
        plan = _plan(
            execution_id,
            state.root_span,
            body.processes,
            body.events,
            stamp.now,
            stamp.stable,
            stamp,
            whole=False,
        )
        records, rejected = _event_records(state, plan, stamp.now, stamp.stable, stamp, whole=False)
        for record in records:
            trail.sampler.route(execution_id, record)
        wrote = bool(records)
        if plan.spans:
            wrote = _add_processes(trail, state, plan.spans) or wrote
    return Stored(execution_id, len(records), len(plan.spans), rejected, writes=wrote)


def _add_processes(trail: Trail, state: ExecutionState, spans: list[Span]) -> bool:
    """Appends processes to the open execution in Redis; True when they needed a row of
    their own instead (the execution already finished), as a join's do."""
    records = [s.record() for s in spans]
    if state.shared:
        if trail.redis.push_spans(state.execution_id, records, only_open=True):
            return False
        # Refused because the execution is being finished: those an earlier attempt of this
        # request pushed are in its row already.
        held = {r["span_id"] for r in trail.redis.spans(state.execution_id)}
        spans = [s for s in spans if s.span_id not in held]
        if not spans:
            return False
        records = [s.record() for s in spans]
    joined = dataclasses.replace(state, started_at=min(s.started_at for s in spans))
    processes = executions.merge_process_records(records, state.root_span.span_id)
    finalized = max(s.ended_at or s.started_at for s in spans)
    row = executions.execution_record(joined, processes, "success", None, finalized)
    # The join's row gets an id of the processes it holds: a retry stores it once.
    trail.enqueue_execution(
        row._replace(event_id=joined_row_id(state.execution_id, [s.span_id for s in spans]))
    )
    trail.unmerged_processes += len(processes)
    log.info(
        "pgtrail: %d process(es) sent for execution %s could not reach its row (it finished "
        "already); stored as a '%s' row of logs_execution",
        len(processes),
        state.execution_id,
        executions.JOINED_EVENT,
    )
    return True


def _require_redis(trail: Trail) -> None:
    if not trail.redis.enabled:
        raise UnavailableError("Redis is off: executions cannot be opened or joined")


def _open_meta(trail: Trail, execution_id: uuid.UUID) -> dict[str, str] | None:
    """The open execution's metadata, or None when it is not open.

    Raises:
        UnavailableError: Redis did not answer (not open and unreachable look the same to
            :meth:`~pgtrail.shared_state.RedisState.load`; a failure turns Redis off for a
            few seconds, which tells them apart).
    """
    meta = trail.redis.load(execution_id)
    if meta is None and trail.redis.client() is None:
        raise UnavailableError("Redis is unreachable; retry later")
    return meta


def _state_from_meta(trail: Trail, execution_id: uuid.UUID, meta: dict[str, str]) -> ExecutionState:
    """The open execution as its opener held it, rebuilt from Redis (as a sweep does)."""
    started = dt.datetime.fromisoformat(meta["started_at"])
    root = Span(meta["root_span_id"], None, meta["workflow"], 0, started)
    return ExecutionState(
        trail=trail,
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


def _start(
    given: dt.datetime | None,
    execution_id: uuid.UUID | None,
    process_starts: list[dt.datetime],
    stamp: Stamp,
) -> tuple[dt.datetime, bool]:
    """An execution's start, and whether a retry gets the same one."""
    if given is not None:
        return given, True
    if execution_id is not None:
        held = uuid7_time(execution_id, stamp.clock)
        if held is not None:
            return held, True
    if process_starts:
        return min(process_starts), True
    return stamp.now, stamp.stable


def _new_execution_id(started: dt.datetime, stamp: Stamp) -> uuid.UUID:
    if stamp.derive is not None:
        return stamp.derive.execution_id(started)
    return uuid7(int(started.timestamp() * 1000))


def _walk(processes: Iterable[ProcessIn]) -> Iterable[ProcessIn]:
    for process in processes:
        yield process
        yield from _walk(process.processes)


@dataclass
class _Node:
    process: ProcessIn
    path: str
    nested_in: str | None
    span_id: str


@dataclass(frozen=True)
class _Placed:
    """An event not yet validated, and the process it is nested in (if any)."""

    raw: Any
    path: str
    index: int
    node: _Node | None


@dataclass
class _Plan:
    spans: list[Span]
    """The request's processes, in the body's order."""
    by_path: dict[str, Span]
    stable: dict[str, bool]
    """Whether each process's start is the same on a retry."""
    ids: dict[str, _Node]
    """The processes of the request by the client's ids."""
    events: list[_Placed]


def _plan(
    execution_id: uuid.UUID,
    root: Span,
    processes: list[ProcessIn],
    events: list[Any],
    default_start: dt.datetime,
    default_stable: bool,
    stamp: Stamp,
    *,
    whole: bool,
) -> _Plan:
    """The request's processes as spans (ids, parents, levels, times) and where each of its
    events sits.

    Raises:
        BodyError: Nesting too deep, an id given twice, a parent that is not there (in a
            whole execution) or processes that are each other's parents.
    """
    nodes: list[_Node] = []
    ids: dict[str, _Node] = {}

    def visit(items: list[ProcessIn], prefix: str, nested_in: str | None, depth: int) -> None:
        if depth > MAX_PROCESS_DEPTH:
            raise BodyError(f"{prefix}processes: nested deeper than {MAX_PROCESS_DEPTH} levels")
        for i, process in enumerate(items):
            path = f"{prefix}processes[{i}]"
            if nested_in is not None and process.parent is not None:
                raise _field_error(
                    f"{path}.parent", "a nested process's parent is the one it is nested in"
                )
            if process.id is not None:
                if process.id in ids:
                    raise _field_error(f"{path}.id", f"{process.id!r} is given twice")
                span_id = process_span_id(execution_id, process.id)
            elif stamp.derive is not None:
                span_id = stamp.derive.span_id(path)
            else:
                span_id = new_span_id()
            node = _Node(process, path, nested_in, span_id)
            nodes.append(node)
            if process.id is not None:
                ids[process.id] = node
            visit(process.processes, f"{path}.", path, depth + 1)

    visit(processes, "", None, 1)
    by_node_path = {node.path: node for node in nodes}
    spans: dict[str, Span] = {}
    stable: dict[str, bool] = {}
    resolving: set[str] = set()

    def resolve(node: _Node) -> Span:
        known = spans.get(node.path)
        if known is not None:
            return known
        if node.path in resolving:
            raise _field_error(f"{node.path}.parent", "processes name each other as parents")
        resolving.add(node.path)
        process = node.process
        parent_node: _Node | None = None
        if node.nested_in is not None:
            parent_node = by_node_path[node.nested_in]
        elif process.parent is not None:
            parent_node = ids.get(process.parent)
            if parent_node is None and whole:
                raise _field_error(
                    f"{node.path}.parent", f"no process with id {process.parent!r} in this request"
                )
        if parent_node is not None:
            parent = resolve(parent_node)
            parent_id, level = parent.span_id, parent.nesting_level + 1
            start, start_stable = parent.started_at, stable[parent_node.path]
        else:
            # Under the root, or under a process added earlier (its level is set when the
            # execution's row merges every process).
            parent_id = root.span_id
            if process.parent is not None:
                parent_id = process_span_id(execution_id, process.parent)
            level, start, start_stable = 1, default_start, default_stable
        if process.started_at is not None:
            start, start_stable = process.started_at, True
        ended = process.ended_at
        if ended is None and process.duration_ms is not None:
            ended = start + dt.timedelta(milliseconds=process.duration_ms)
        status = process.status or ("error" if process.error else "success")
        span = Span(node.span_id, parent_id, process.name, level, start, ended, status)
        span.error = process.error
        spans[node.path] = span
        stable[node.path] = start_stable
        resolving.discard(node.path)
        return span

    ordered = [resolve(node) for node in nodes]
    placed = [_Placed(raw, f"events[{i}]", i, None) for i, raw in enumerate(events)]
    for node in nodes:
        placed += [
            _Placed(raw, f"{node.path}.events[{j}]", j, node)
            for j, raw in enumerate(node.process.events)
        ]
    return _Plan(ordered, spans, stable, ids, placed)


def _event_records(
    state: ExecutionState,
    plan: _Plan,
    default_start: dt.datetime,
    default_stable: bool,
    stamp: Stamp,
    *,
    whole: bool,
) -> tuple[list[QueuedRecord], list[RejectedEvent]]:
    """Each valid event as the record the matching ``log_*`` helper would queue; in a whole
    execution an event may only name a process of the same request."""
    records: list[QueuedRecord] = []
    rejected: list[RejectedEvent] = []
    for ordinal, placed in enumerate(plan.events):
        event = validate_event(placed.raw, placed.path, placed.index)
        if isinstance(event, RejectedEvent):
            rejected.append(event)
            continue
        node = placed.node
        problem: FieldError | None = None
        if node is not None and event.process is not None and event.process != node.process.id:
            problem = FieldError("process", "an event nested in a process happened in that process")
        elif node is None and event.process is not None:
            node = plan.ids.get(event.process)
            if node is None and whole:
                message = f"no process with id {event.process!r} in this request"
                problem = FieldError("process", message)
        if problem is not None:
            rejected.append(RejectedEvent(placed.path, placed.index, (problem,)))
            continue
        if node is not None:
            span_id = node.span_id
            base, base_stable = plan.by_path[node.path].started_at, plan.stable[node.path]
        else:
            span_id = state.root_span.span_id
            if event.process is not None:  # a process added by an earlier request
                span_id = process_span_id(state.execution_id, event.process)
            base, base_stable = default_start, default_stable
        held = uuid7_time(event.event_id, stamp.clock) if event.event_id else None
        if event.created_at is not None:
            at, at_stable = event.created_at, True
        elif held is not None:
            at, at_stable = held, True
        else:
            at, at_stable = base + ordinal * _TICK, base_stable
        event_id = event.event_id
        if event_id is not None and not at_stable:
            problem = FieldError("event_id", _UNSTABLE_EVENT_ID)
            rejected.append(RejectedEvent(placed.path, placed.index, (problem,)))
            continue
        if event_id is None and stamp.derive is not None:
            event_id = stamp.derive.event_id(placed.path, at)
        records.append(
            QueuedRecord(
                event.table,
                event_id,
                state.execution_hex,
                at,
                state.tenant_id,
                state.user_id,
                state.session_id,
                span_id,
                event.args,
                context=state.llm_context if event.table == LLM else None,
            )
        )
    return records, rejected


def _check_duration(started: dt.datetime, finalized: dt.datetime) -> None:
    """Refuses an execution longer than ``logs_execution.duration_ms`` (an integer) holds:
    the writer would refuse its row after the answer was given."""
    if (finalized - started).total_seconds() * 1000 > INT4_MAX:
        days = INT4_MAX // 8_640_000 / 10  # 24.8, rounded down
        raise _field_error(
            "finalized_at", f"the execution lasts longer than the {days} days duration_ms holds"
        )


def _field_error(where: str, message: str) -> BodyError:
    return BodyError(f"{where}: {message}", (FieldError(where, message),))
