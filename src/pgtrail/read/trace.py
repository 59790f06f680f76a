"""One execution as a tree: its processes, and the events logged in each of them.

The execution's row holds its processes (``processes_executed``); LLM calls, agent events
and journey events name the process they happened in by ``span_id``. An execution still
running has no row yet: its events are shown, with the processes Redis already knows.
Everything is read in one read-only transaction with a statement timeout, scoped to a
tenant when one is given, with every value bound by the driver.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import psycopg

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import NotFoundError
from pgtrail.executions import json_dict
from pgtrail.read import reports, sandbox
from pgtrail.shared_state import RedisState
from pgtrail.statements import STATEMENTS

EventKind = Literal["llm", "agent", "journey"]
VALID_OUTCOME = "llm_valid_execution"
"""The outcome of a model call that succeeded; every other outcome is a failure."""
FAILED_STATUS = "error"
"""The status of a process that failed."""


@dataclass(frozen=True)
class TracedLlmCall:
    """One model call: what it cost and how it went (``outcome`` is its event type)."""

    created_at: dt.datetime
    span_id: str | None
    outcome: str
    agent_type: str | None
    provider: str | None
    model: str | None
    prompt_version: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    reasoning_tokens: int | None
    latency_ms: int | None
    time_to_first_token_ms: int | None
    cost: Decimal | None
    error: str | None
    kind: EventKind = "llm"

    @property
    def event_type(self) -> str:
        """The row's event type: the outcome (``llm_valid_execution``, ``llm_timeout``...)."""
        return self.outcome


@dataclass(frozen=True)
class TracedAgentEvent:
    """One thing an agent did or decided (decision, tool call, handoff...)."""

    created_at: dt.datetime
    span_id: str | None
    event_type: str
    agent_type: str | None
    data: dict[str, Any]
    execution_id: uuid.UUID | None = None
    kind: EventKind = "agent"

    @property
    def duration_ms(self) -> int | None:
        """The ``event_duration_ms`` the caller gave, if any."""
        value = self.data.get("event_duration_ms")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TracedJourneyEvent:
    """One user-journey event (message, state transition, feedback...)."""

    created_at: dt.datetime
    span_id: str | None
    event_type: str
    data: dict[str, Any]
    session_id: str | None = None
    execution_id: uuid.UUID | None = None
    kind: EventKind = "journey"


Event = TracedLlmCall | TracedAgentEvent | TracedJourneyEvent


@dataclass
class ProcessNode:
    """One process of the execution, its events, its children and its rolled-up cost.

    ``recorded`` is False for a span that events name but the execution's row does not list
    (a step of a service that joined without Redis, or of an execution still running).
    The ``subtree_*``, ``unpriced_calls``, ``failed_*`` and ``first_failed_span_id`` counts
    are over the node and everything below it; a process failed when its status is
    ``error``, a call when its outcome is not ``llm_valid_execution``.
    """

    span_id: str | None
    name: str
    parent_span_id: str | None = None
    nesting_level: int = 0
    started_at: dt.datetime | None = None
    duration_ms: int | None = None
    status: str | None = None
    error: str | None = None
    recorded: bool = True
    events: list[Event] = field(default_factory=list)
    children: list[ProcessNode] = field(default_factory=list)
    cost: Decimal = Decimal(0)
    llm_calls: int = 0
    subtree_cost: Decimal = Decimal(0)
    subtree_llm_calls: int = 0
    unpriced_calls: int = 0
    subtree_processes: int = 1
    subtree_events: int = 0
    failed_processes: int = 0
    failed_llm_calls: int = 0
    first_failed_span_id: str | None = None

    def walk(self) -> list[ProcessNode]:
        """This node and every node below it, depth first, in start order."""
        nodes: list[ProcessNode] = []
        stack = [self]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(reversed(node.children))
        return nodes


@dataclass
class Trace:
    """One execution: what its row says (``finished``) or what is known while it runs."""

    execution_id: uuid.UUID
    finished: bool
    root: ProcessNode
    workflow: str | None = None
    status: str | None = None
    error: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    parent_execution_id: uuid.UUID | None = None
    started_at: dt.datetime | None = None
    finalized_at: dt.datetime | None = None
    duration_ms: int | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """``finished`` once the execution's row is written, else ``open``."""
        return "finished" if self.finished else "open"

    @property
    def total_cost(self) -> Decimal:
        """Cost of every priced LLM call of the execution (USD)."""
        return self.root.subtree_cost

    @property
    def llm_calls(self) -> int:
        """How many LLM calls the execution made."""
        return self.root.subtree_llm_calls


# --------------------------------------------------------------------------- loading


def parse_execution_id(text: str) -> uuid.UUID:
    """The execution id in ``text``; a clear error when it is not a UUID."""
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise NotFoundError(
            f"{text!r} is not an execution id: expected a UUID such as "
            "0190f3e4-7a1b-7c3d-9e2f-0123456789ab"
        ) from None


def load_trace(
    settings: Settings,
    execution_id: uuid.UUID,
    *,
    tenant: str | None = None,
    timeout_ms: int | None = None,
) -> Trace:
    """Reads one execution's row and events and builds its process tree.

    Raises:
        NotFoundError: neither a row nor any event carries this id (for this tenant).
        DatabaseUnavailableError: PostgreSQL cannot be reached.
        ReportError: a query failed or ran past the timeout.
    """
    limit = timeout_ms or settings.statement_timeout_ms
    params = {"id": execution_id}
    with db.connect(settings) as conn:
        try:
            with sandbox.read_session(conn, limit, tenant=tenant) as session:
                executions = session.query(STATEMENTS["trace_execution"], params).dicts()
                llm = session.query(STATEMENTS["trace_llm_calls"], params).dicts()
                agent = session.query(STATEMENTS["trace_agent_events"], params).dicts()
                journey = session.query(STATEMENTS["trace_journey_events"], params).dicts()
            execution = _with_joined_steps(executions)
        except psycopg.Error as exc:
            raise reports.query_failure(f"trace of {execution_id}", exc, limit) from exc
    events: list[Event] = [
        *(_llm_call(r) for r in llm),
        *(_agent_event(r) for r in agent),
        *(_journey_event(r) for r in journey),
    ]
    if execution is not None:
        return _finished_trace(execution_id, execution, events)
    if not events:
        scope = f" for tenant {tenant!r}" if tenant is not None else ""
        raise NotFoundError(
            f"no execution {execution_id}{scope}: no execution row and no events carry this id. "
            "Check the id, --tenant, and the schema (--schema / PGTRAIL_SCHEMA)."
        )
    return _open_trace(settings, execution_id, events, [*llm, *agent, *journey], tenant)


def _with_joined_steps(executions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The execution's row, with the steps of the joins' own rows (``execution_joined``).

    The first row is the root's (it alone has a ``finalized_at``); the others hold steps of
    joined processes that could not reach it (see :meth:`pgtrail.Trail.join`).
    """
    if not executions:
        return None
    first, others = executions[0], executions[1:]
    if not others:
        return first
    steps = [
        step
        for row in executions
        if isinstance(row["processes_executed"], list)
        for step in row["processes_executed"]
    ]
    return {**first, "processes_executed": steps}


def _llm_call(row: dict[str, Any]) -> TracedLlmCall:
    return TracedLlmCall(
        created_at=row["created_at"],
        span_id=row["span_id"],
        outcome=row["event_type"],
        agent_type=row["agent_type"],
        provider=row["provider"],
        model=row["model_target"],
        prompt_version=row["prompt_version"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cached_input_tokens=row["cached_input_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
        latency_ms=row["processing_time_ms"],
        time_to_first_token_ms=row["time_to_first_token_ms"],
        cost=row["total_cost"],
        error=row["error"],
    )


def _agent_event(row: dict[str, Any]) -> TracedAgentEvent:
    return TracedAgentEvent(
        created_at=row["created_at"],
        span_id=row["span_id"],
        event_type=row["event_type"],
        agent_type=row["agent_type"],
        data=_as_dict(row["particular_data"]),
        execution_id=row.get("execution_id"),
    )


def _journey_event(row: dict[str, Any]) -> TracedJourneyEvent:
    return TracedJourneyEvent(
        created_at=row["created_at"],
        span_id=row["span_id"],
        event_type=row["event_type"],
        data=_as_dict(row["particular_data"]),
        session_id=row["session_id"],
        execution_id=row.get("execution_id"),
    )


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def _timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    return None


def _node(record: dict[str, Any]) -> ProcessNode:
    return ProcessNode(
        span_id=str(record.get("span_id")) if record.get("span_id") is not None else None,
        name=str(record.get("name") or "(unnamed process)").strip(),
        parent_span_id=record.get("parent_span_id"),
        nesting_level=_int_or_none(record.get("nesting_level")) or 0,
        started_at=_timestamp(record.get("started_at")),
        duration_ms=_int_or_none(record.get("duration_ms")),
        status=record.get("status"),
        error=record.get("error"),
    )


def _finished_trace(execution_id: uuid.UUID, row: dict[str, Any], events: list[Event]) -> Trace:
    processes = row["processes_executed"] if isinstance(row["processes_executed"], list) else []
    records = [p for p in processes if isinstance(p, dict)]
    root_record = next((p for p in records if p.get("span_id") == row["span_id"]), None)
    if root_record is None:
        root_record = {
            "span_id": row["span_id"],
            "name": row["workflow"],
            "started_at": row["created_at"],
            "duration_ms": row["duration_ms"],
            "status": row["status"],
            "error": row["error"],
        }
        records.insert(0, root_record)
    root = build_tree(records, root_record, events)
    return Trace(
        execution_id=execution_id,
        finished=True,
        root=root,
        workflow=row["workflow"],
        status=row["status"],
        error=row["error"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        session_id=row["session_id"],
        parent_execution_id=row["parent_execution_id"],
        started_at=row["created_at"],
        finalized_at=row["finalized_at"],
        duration_ms=row["duration_ms"],
        context=_as_dict(row["context"]),
    )


def _open_trace(
    settings: Settings,
    execution_id: uuid.UUID,
    events: list[Event],
    rows: list[dict[str, Any]],
    tenant: str | None,
) -> Trace:
    """An execution with events but no row: still running, or its writer died (sweep it)."""
    first = min(rows, key=lambda r: r["created_at"])
    meta, records = _redis_view(settings, execution_id, tenant)
    root_span = meta.get("root_span_id") or None
    root_record: dict[str, Any] = {
        "span_id": root_span,
        "name": meta.get("workflow") or "(execution still open: no row written yet)",
        "started_at": meta.get("started_at") or first["created_at"],
        "status": "running",
    }
    root = build_tree([root_record, *records], root_record, events)
    return Trace(
        execution_id=execution_id,
        finished=False,
        root=root,
        workflow=meta.get("workflow") or None,
        status="running",
        tenant_id=meta.get("tenant_id") or first["tenant_id"],
        user_id=meta.get("user_id") or first["user_id"],
        session_id=meta.get("session_id") or first["session_id"],
        started_at=_timestamp(meta.get("started_at")) or first["created_at"],
        context=json_dict(meta.get("context")),
    )


def _redis_view(
    settings: Settings, execution_id: uuid.UUID, tenant: str | None
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """What Redis holds of an open execution: its metadata and finished processes."""
    if settings.redis_url is None:
        return {}, []
    state = RedisState(settings.redis_url, settings.redis_prefix)
    try:
        meta = state.load(execution_id) or {}
        if tenant is not None and meta.get("tenant_id") != tenant:
            return {}, []
        return meta, state.spans(execution_id) if meta else []
    finally:
        state.close()


# --------------------------------------------------------------------------- the tree


def build_tree(
    records: list[dict[str, Any]], root_record: dict[str, Any], events: list[Event]
) -> ProcessNode:
    """Nests the process records under the root, files each event under its process and
    rolls LLM cost up each subtree.

    A process whose parent is unknown (or whose parents loop) hangs under the root. Events of
    a span no record names get a node of their own under the root, marked not recorded.
    Every step is linear in the number of processes and events, and none recurses, so an
    execution of any size or depth is built.

    Args:
        records: the execution's process records (``processes_executed``), in start order.
        root_record: the record of the root process (one of ``records`` or a stand-in).
        events: every event of the execution, in any order.
    """
    root = _node(root_record)
    nodes: dict[str, ProcessNode] = {}
    if root.span_id is not None:
        nodes[root.span_id] = root
    ordered: list[ProcessNode] = []
    for record in records:
        if record is root_record:
            continue
        node = _node(record)
        if node.span_id is None or node.span_id in nodes:
            continue
        nodes[node.span_id] = node
        ordered.append(node)
    looping = _looping(ordered, nodes)
    for node in ordered:
        parent = nodes.get(node.parent_span_id or "")
        if parent is None or parent is node or id(node) in looping:
            parent = root
        parent.children.append(node)
    for event in sorted(events, key=_event_order):
        target = root if event.span_id is None else nodes.get(event.span_id)
        if target is None:
            target = ProcessNode(
                span_id=event.span_id,
                name=f"span {event.span_id}",
                parent_span_id=None,
                nesting_level=1,
                recorded=False,
            )
            nodes[str(event.span_id)] = target
            root.children.append(target)
        target.events.append(event)
    _fix_levels_and_roll_up(root)
    return root


def _event_order(event: Event) -> tuple[dt.datetime, int]:
    return event.created_at, ("journey", "llm", "agent").index(event.kind)


def _looping(ordered: list[ProcessNode], nodes: dict[str, ProcessNode]) -> set[int]:
    """The nodes (by ``id``) whose parents lead back to themselves instead of to the root.

    Each node is visited once: a walk up the parents stops at the first node already
    settled, so the whole pass is linear however deep the tree.
    """
    settled: dict[int, bool] = {}
    for start in ordered:
        path: list[ProcessNode] = []
        on_path: set[int] = set()
        current: ProcessNode | None = start
        loops = False
        while current is not None and id(current) not in settled:
            if id(current) in on_path:
                loops = True
                break
            on_path.add(id(current))
            path.append(current)
            parent = nodes.get(current.parent_span_id or "")
            current = parent if parent is not current else None
        if not loops and current is not None:
            loops = settled[id(current)]
        for node in path:
            settled[id(node)] = loops
    return {key for key, loops in settled.items() if loops}


def _fix_levels_and_roll_up(root: ProcessNode) -> None:
    """Sets each node's nesting level and rolls its counts and cost up to the root."""
    order = root.walk()
    levels = {id(root): 0}
    for node in order:
        level = levels[id(node)]
        node.nesting_level = level
        for child in node.children:
            levels[id(child)] = level + 1
    for node in reversed(order):
        calls = unpriced = failed_calls = 0
        cost = Decimal(0)
        for event in node.events:
            if isinstance(event, TracedLlmCall):
                calls += 1
                failed_calls += event.outcome != VALID_OUTCOME
                if event.cost is None:
                    unpriced += 1
                else:
                    cost += event.cost
        failed = node.status == FAILED_STATUS
        node.llm_calls, node.cost = calls, cost
        node.subtree_llm_calls, node.subtree_cost, node.unpriced_calls = calls, cost, unpriced
        node.subtree_processes, node.subtree_events = 1, len(node.events)
        node.failed_processes, node.failed_llm_calls = int(failed), failed_calls
        node.first_failed_span_id = node.span_id if failed else None
        for child in node.children:
            node.subtree_cost += child.subtree_cost
            node.subtree_llm_calls += child.subtree_llm_calls
            node.unpriced_calls += child.unpriced_calls
            node.subtree_processes += child.subtree_processes
            node.subtree_events += child.subtree_events
            node.failed_processes += child.failed_processes
            node.failed_llm_calls += child.failed_llm_calls
            node.first_failed_span_id = node.first_failed_span_id or child.first_failed_span_id


def event_dict(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dictionary, its ``kind`` first."""
    values = {k: v for k, v in vars(event).items() if k != "kind"}
    if isinstance(event, TracedAgentEvent):
        values.pop("execution_id", None)
        values["duration_ms"] = event.duration_ms
    if isinstance(event, TracedJourneyEvent):
        values.pop("execution_id", None)
        values.pop("session_id", None)
    return {"kind": event.kind, **values}
