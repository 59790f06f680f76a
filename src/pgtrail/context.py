"""Which execution and process the caller is in: context variables that follow ``await``,
asyncio tasks and (when only one execution is open) threads."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pgtrail.ids import new_span_id

if TYPE_CHECKING:
    from pgtrail.config import Settings
    from pgtrail.scores import ScoreRequest


log = logging.getLogger("pgtrail")


class ExecutionOwner(Protocol):
    """The client an execution was opened or joined with (a :class:`pgtrail.Trail`): the
    module-level ``log_*`` helpers log through the owner of the current execution."""

    settings: Settings
    """The owner's settings."""

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
        """Stamps one record of ``state`` and enqueues it (see :meth:`pgtrail.Trail.log_record`)."""

    def attach_score(self, request: ScoreRequest) -> None:
        """Stores one score (see :meth:`pgtrail.Trail.attach_score`)."""


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

    trail: ExecutionOwner
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
