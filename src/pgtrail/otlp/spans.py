"""The shapes shared by the OTLP decoder, the attribute mapping and the trace assembler.

A decoded span is :class:`OtlpSpan` (OTLP ``AnyValue`` attributes already turned into plain
Python values: str, bool, int, float, list, dict, bytes). :func:`pgtrail.otlp.mapping.map_span`
turns one into a :class:`MappedSpan`: the process it becomes in ``processes_executed`` and the
records it adds to the LLM, agent and journey tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

RecordTable = Literal["logs_llm_execution", "logs_agent_execution", "logs_user_journey"]


@dataclass(frozen=True)
class SpanEvent:
    """One event recorded on a span (``gen_ai.evaluation.result``, exceptions, ...)."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OtlpSpan:
    """One span as received, with its resource and instrumentation scope."""

    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 lower-case hex digits
    parent_span_id: str | None
    name: str
    kind: int  # OTLP SpanKind number
    start_unix_nano: int
    end_unix_nano: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


@dataclass(frozen=True)
class ToolCallRef:
    """A tool call a span hands on to the tool spans below it (LangGraph's tool node).

    Attributes:
        call_id: The id the model gave the call.
        tool: The tool's name.
        args: The arguments the model wrote, when they are a JSON object.
    """

    call_id: str
    tool: str
    args: dict[str, Any] | None = None


@dataclass(frozen=True)
class MappedRecord:
    """A row one span adds to a log table.

    ``args`` are exactly the keyword arguments the public helper for ``table`` accepts
    (``log_llm_execution``, ``log_agent_execution`` with ``agent_type``/``event_type``/
    ``duration_ms``/``data``, ``log_user_journey`` with ``event_type``/``data``), so the
    writer validates, prices, redacts and stores them as it does for its own callers.
    """

    table: RecordTable
    args: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class MappedSpan:
    """What one span means to pgtrail."""

    process_name: str
    status: Literal["ok", "error"]
    error: str | None
    records: tuple[MappedRecord, ...] = ()
    user_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None
    workflow: str | None = None  # set by spans that name the workflow (agent run, workflow)
    context: dict[str, Any] = field(default_factory=dict)  # business context for the execution
    # The agent this span runs (agent-run spans): records of descendant spans that name no
    # agent belong to it (see pgtrail.otlp.mapping.inherit_agents).
    agent: str | None = None
    # The agent this span's records take when no span above runs one (a LangGraph node).
    fallback_agent: str | None = None
    # Tool calls this span hands to the tool spans below it, which may not name their ids.
    tool_calls: tuple[ToolCallRef, ...] = ()
