"""What of a trace is shown: depth, breadth, event and line limits, and what they hide.

An execution of ten thousand processes is read in well under a second, but nobody reads ten
thousand lines. A view keeps the top of the tree whole and cuts the detail: the tree is
filled level by level (so a cut always falls below what is shown), at most ``breadth`` child
processes and ``events`` events per process, down to ``depth`` levels, within ``lines``
lines in all. Nothing is dropped silently: every cut leaves a :class:`HiddenProcesses` or
:class:`HiddenEvents` on the process it was made in, counting what it hides (processes,
failures, LLM calls, cost, events) over the whole hidden part, and the view totals them.
``process`` opens one subtree instead of the whole execution.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pgtrail.errors import NotFoundError
from pgtrail.read.trace import (
    VALID_OUTCOME,
    Event,
    ProcessNode,
    Trace,
    TracedLlmCall,
    event_dict,
)

DEFAULT_DEPTH = 20
"""Process levels shown below the root of the view."""
DEFAULT_BREADTH = 50
"""Child processes shown per process."""
DEFAULT_EVENTS = 50
"""Events shown per process."""
DEFAULT_LINES = 1000
"""Process and event lines shown in all."""

ProcessCut = Literal["depth", "breadth", "lines"]
EventCut = Literal["events", "lines"]


@dataclass(frozen=True)
class TraceLimits:
    """How much of a trace to show; None lifts a limit.

    Attributes:
        depth: process levels shown below the view's root (0: the root alone).
        breadth: child processes shown per process, in start order.
        events: events shown per process, in time order (0: processes only).
        lines: process and event lines shown in all, filled level by level.
        process: the span id of the process whose subtree is shown; None for the root.
    """

    depth: int | None = DEFAULT_DEPTH
    breadth: int | None = DEFAULT_BREADTH
    events: int | None = DEFAULT_EVENTS
    lines: int | None = DEFAULT_LINES
    process: str | None = None

    @classmethod
    def unlimited(cls, process: str | None = None) -> TraceLimits:
        """Limits that show everything (of ``process``'s subtree, when given).

        Args:
            process: the span id of the process to show; None for the whole execution.
        """
        return cls(depth=None, breadth=None, events=None, lines=None, process=process)


@dataclass(frozen=True)
class Totals:
    """What a hidden part of the tree holds, counted over all of it.

    Attributes:
        processes: processes in it (hidden children and everything below them).
        failed_processes: those whose status is ``error``.
        events: events logged in it, of every kind.
        llm_calls: LLM calls among them.
        failed_llm_calls: calls whose outcome is not ``llm_valid_execution``.
        unpriced_llm_calls: calls without a cost.
        cost: cost of the priced calls (USD).
        first_failed_span_id: the span id of its first failed process, if any.
    """

    processes: int = 0
    failed_processes: int = 0
    events: int = 0
    llm_calls: int = 0
    failed_llm_calls: int = 0
    unpriced_llm_calls: int = 0
    cost: Decimal = Decimal(0)
    first_failed_span_id: str | None = None


@dataclass(frozen=True)
class HiddenProcesses:
    """Child processes of one process that the view does not show.

    Attributes:
        cut: the limit that hid them: ``depth``, ``breadth`` or ``lines``.
        span_ids: the hidden children's span ids, in start order.
        totals: what the hidden children and their subtrees hold.
    """

    cut: ProcessCut
    span_ids: list[str | None]
    totals: Totals

    @property
    def count(self) -> int:
        """How many child processes are hidden."""
        return len(self.span_ids)


@dataclass(frozen=True)
class HiddenEvents:
    """Events of one process that the view does not show (the last ones, in time order).

    Attributes:
        cut: the limit that hid them: ``events`` or ``lines``.
        totals: what they are (``processes`` is 0).
    """

    cut: EventCut
    totals: Totals

    @property
    def count(self) -> int:
        """How many events are hidden."""
        return self.totals.events


@dataclass
class ShownProcess:
    """One process the view shows: the events and children it shows, and what it hides.

    Attributes:
        node: the process.
        depth: its level below the view's root (0 for the root).
        events: the events shown, in time order.
        children: the child processes shown, in start order.
        hidden_events: the events not shown, or None.
        hidden_children: the child processes not shown, or None.
    """

    node: ProcessNode
    depth: int
    events: list[Event] = field(default_factory=list)
    children: list[ShownProcess] = field(default_factory=list)
    hidden_events: HiddenEvents | None = None
    hidden_children: HiddenProcesses | None = None

    @property
    def folded(self) -> bool:
        """Whether it shows nothing of what it holds, while holding something."""
        return (
            not self.events
            and not self.children
            and (self.hidden_events is not None or self.hidden_children is not None)
        )


@dataclass
class TraceView:
    """The part of a trace that is shown, and counts of what is not.

    Attributes:
        trace: the whole trace.
        limits: the limits it was made with.
        root: the shown root (the execution's root, or ``limits.process``).
        path: the processes above the shown root, from the execution's root down.
        shown_processes: processes shown, the root included.
        shown_events: events shown.
        hidden_processes: processes of the root's subtree not shown.
        hidden_events: events of the root's subtree not shown.
    """

    trace: Trace
    limits: TraceLimits
    root: ShownProcess
    path: list[ProcessNode]
    shown_processes: int = 0
    shown_events: int = 0
    hidden_processes: int = 0
    hidden_events: int = 0

    @property
    def complete(self) -> bool:
        """Whether the view shows every process and event of its subtree."""
        return self.hidden_processes == 0 and self.hidden_events == 0


def view_trace(trace: Trace, limits: TraceLimits | None = None) -> TraceView:
    """The part of ``trace`` that ``limits`` let through, with what each cut hides.

    Linear in the number of processes and never recursive, whatever the depth.

    Args:
        trace: a loaded trace (see :func:`pgtrail.read.trace.load_trace`).
        limits: what to show; None for the defaults.

    Raises:
        NotFoundError: ``limits.process`` names no process of the execution.
    """
    limits = limits or TraceLimits()
    top, path = _find(trace, limits.process)
    # Lines left to fill, the root's own taken; -1 when there is no line limit.
    room = max(limits.lines - 1, 0) if limits.lines is not None else -1
    root = ShownProcess(top, 0)
    view = TraceView(trace, limits, root, path, shown_processes=1)
    queue = deque([root])
    while queue:
        shown = queue.popleft()
        room = _show_events(view, shown, room)
        room = _show_children(view, shown, room, queue)
    return view


def _find(trace: Trace, span_id: str | None) -> tuple[ProcessNode, list[ProcessNode]]:
    """The process to show and the processes above it."""
    if span_id is None:
        return trace.root, []
    path: list[ProcessNode] = []
    stack: list[tuple[ProcessNode, int]] = [(trace.root, 0)]
    while stack:
        node, depth = stack.pop()
        del path[depth:]
        if node.span_id == span_id:
            return node, path
        path.append(node)
        stack.extend((child, depth + 1) for child in reversed(node.children))
    raise NotFoundError(
        f"execution {trace.execution_id} has no process with span id {span_id!r}; the span "
        "ids are in `pgtrail trace ID --format json` and in the hidden-process lines"
    )


def _event_totals(events: list[Event]) -> Totals:
    calls = failed = unpriced = 0
    cost = Decimal(0)
    for event in events:
        if isinstance(event, TracedLlmCall):
            calls += 1
            failed += event.outcome != VALID_OUTCOME
            if event.cost is None:
                unpriced += 1
            else:
                cost += event.cost
    return Totals(
        events=len(events),
        llm_calls=calls,
        failed_llm_calls=failed,
        unpriced_llm_calls=unpriced,
        cost=cost,
    )


def subtree_totals(nodes: list[ProcessNode]) -> Totals:
    """What ``nodes`` and everything below them hold (rolled up when the tree was built).

    Args:
        nodes: processes of a trace, none below another.
    """
    processes = failed = events = calls = failed_calls = unpriced = 0
    cost = Decimal(0)
    first_failed: str | None = None
    for node in nodes:
        processes += node.subtree_processes
        failed += node.failed_processes
        events += node.subtree_events
        calls += node.subtree_llm_calls
        failed_calls += node.failed_llm_calls
        unpriced += node.unpriced_calls
        cost += node.subtree_cost
        first_failed = first_failed or node.first_failed_span_id
    return Totals(
        processes=processes,
        failed_processes=failed,
        events=events,
        llm_calls=calls,
        failed_llm_calls=failed_calls,
        unpriced_llm_calls=unpriced,
        cost=cost,
        first_failed_span_id=first_failed,
    )


def _show_events(view: TraceView, shown: ShownProcess, room: int) -> int:
    """Shows what the limits allow of a process's events; returns the lines left."""
    events = shown.node.events
    allowed = len(events) if view.limits.events is None else min(len(events), view.limits.events)
    take = allowed if room < 0 else min(allowed, room)
    shown.events = events[:take]
    view.shown_events += take
    if take < len(events):
        cut: EventCut = "lines" if take < allowed else "events"
        shown.hidden_events = HiddenEvents(cut, _event_totals(events[take:]))
        view.hidden_events += len(events) - take
    return room if room < 0 else room - take


def _show_children(
    view: TraceView, shown: ShownProcess, room: int, queue: deque[ShownProcess]
) -> int:
    """Shows what the limits allow of a process's children; returns the lines left."""
    children = shown.node.children
    limits = view.limits
    too_deep = limits.depth is not None and shown.depth >= limits.depth
    if too_deep:
        allowed = 0
    else:
        allowed = len(children) if limits.breadth is None else min(len(children), limits.breadth)
    take = allowed if room < 0 else min(allowed, room)
    for child in children[:take]:
        kept = ShownProcess(child, shown.depth + 1)
        shown.children.append(kept)
        queue.append(kept)
    view.shown_processes += take
    if take < len(children):
        hidden = children[take:]
        cut: ProcessCut = "depth" if too_deep else "lines" if take < allowed else "breadth"
        sum_of = subtree_totals(hidden)
        shown.hidden_children = HiddenProcesses(cut, [c.span_id for c in hidden], sum_of)
        view.hidden_processes += sum_of.processes
        view.hidden_events += sum_of.events
    return room if room < 0 else room - take


# --------------------------------------------------------------------------- JSON


def totals_dict(totals: Totals) -> dict[str, Any]:
    """Totals as a JSON-ready dictionary.

    Args:
        totals: what a hidden part holds.
    """
    return {
        "processes": totals.processes,
        "failed_processes": totals.failed_processes,
        "events": totals.events,
        "llm_calls": totals.llm_calls,
        "failed_llm_calls": totals.failed_llm_calls,
        "unpriced_llm_calls": totals.unpriced_llm_calls,
        "cost": totals.cost,
        "first_failed_span_id": totals.first_failed_span_id,
    }


def _hidden_children_dict(hidden: HiddenProcesses | None) -> dict[str, Any] | None:
    if hidden is None:
        return None
    return {
        "cut": hidden.cut,
        "count": hidden.count,
        "span_ids": hidden.span_ids,
        **totals_dict(hidden.totals),
    }


def _hidden_events_dict(hidden: HiddenEvents | None) -> dict[str, Any] | None:
    if hidden is None:
        return None
    values = totals_dict(hidden.totals)
    del values["processes"], values["failed_processes"], values["first_failed_span_id"]
    return {"cut": hidden.cut, "count": hidden.count, **values}


def _node_fields(shown: ShownProcess) -> dict[str, Any]:
    node = shown.node
    return {
        "span_id": node.span_id,
        "parent_span_id": node.parent_span_id,
        "name": node.name,
        "nesting_level": node.nesting_level,
        "recorded": node.recorded,
        "started_at": node.started_at,
        "duration_ms": node.duration_ms,
        "status": node.status,
        "error": node.error,
        "llm_calls": node.llm_calls,
        "cost": node.cost,
        "subtree_llm_calls": node.subtree_llm_calls,
        "subtree_cost": node.subtree_cost,
        "unpriced_llm_calls": node.unpriced_calls,
        "subtree_processes": node.subtree_processes,
        "events": [event_dict(e) for e in shown.events],
        "hidden_events": _hidden_events_dict(shown.hidden_events),
        "children": [],
        "hidden_children": _hidden_children_dict(shown.hidden_children),
    }


def view_dict(view: TraceView) -> dict[str, Any]:
    """The view as a JSON-ready dictionary: the trace's fields, the limits, the shown tree
    and, on every process where a limit cut, what it hid.

    Args:
        view: the view to write (see :func:`view_trace`).
    """
    trace, limits = view.trace, view.limits
    root = _node_fields(view.root)
    stack = [(view.root, root)]
    while stack:
        shown, fields = stack.pop()
        for child in shown.children:
            child_fields = _node_fields(child)
            fields["children"].append(child_fields)
            stack.append((child, child_fields))
    return {
        "execution_id": trace.execution_id,
        "state": trace.state,
        "workflow": trace.workflow,
        "status": trace.status,
        "error": trace.error,
        "tenant_id": trace.tenant_id,
        "user_id": trace.user_id,
        "session_id": trace.session_id,
        "parent_execution_id": trace.parent_execution_id,
        "started_at": trace.started_at,
        "finalized_at": trace.finalized_at,
        "duration_ms": trace.duration_ms,
        "context": trace.context,
        "llm_calls": trace.llm_calls,
        "total_cost": trace.total_cost,
        "process": limits.process,
        "path": [{"span_id": n.span_id, "name": n.name} for n in view.path],
        "limits": {
            "depth": limits.depth,
            "breadth": limits.breadth,
            "events": limits.events,
            "lines": limits.lines,
        },
        "complete": view.complete,
        "shown": {"processes": view.shown_processes, "events": view.shown_events},
        "hidden": {"processes": view.hidden_processes, "events": view.hidden_events},
        "root": root,
    }
