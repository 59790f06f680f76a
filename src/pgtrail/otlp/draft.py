"""A span's mapping while it is being built: what the span handlers read and add records to.

The orchestrator (:mod:`pgtrail.otlp.mapping`) fills a :class:`Draft` with what every span
has (its kind, times, outcome and process name); the handler for the span's role
(:mod:`pgtrail.otlp.model_spans`, :mod:`pgtrail.otlp.agent_spans`) reads its attributes
and adds the records; the orchestrator then turns the draft into a ``MappedSpan``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgtrail.otlp.attributes import Attrs
from pgtrail.otlp.classify import Kind
from pgtrail.otlp.spans import MappedRecord, OtlpSpan, RecordTable, ToolCallRef

__all__ = ["Draft", "SpanHandler"]


@dataclass
class Draft:
    """A span's mapping while it is being built.

    Attributes:
        span: The span.
        attrs: Its attributes, remembering which ones were mapped.
        kind: What the span is.
        created_at: When its records happened (the span's start, unless unreadable).
        duration_ms: How long the span took, when its clocks are readable.
        status: ``ok`` or ``error``.
        error: The error text of a failed span.
        process_name: The name of the process it becomes in ``processes_executed``.
        records: The records added so far, in order.
        main: The ``data`` of the span's main record, which receives the attributes and
            events nothing mapped; None until a main record is added.
        agent: The agent this span runs (agent-run spans).
        workflow: The workflow this span names.
        session_id: A session the span's own attributes name (Logfire's ``group_id``).
        context: Business context for the execution row.
        tool_calls: The tool calls the span hands to the tool spans below it.
    """

    span: OtlpSpan
    attrs: Attrs
    kind: Kind
    created_at: dt.datetime
    duration_ms: int | None
    status: str
    error: str | None
    process_name: str
    records: list[MappedRecord] = field(default_factory=list)
    main: dict[str, Any] | None = None
    agent: str | None = None
    workflow: str | None = None
    session_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCallRef] = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        """The error text if the span failed, else None."""
        return self.error if self.status == "error" else None

    def named_agent(self) -> str | None:
        """The agent the span itself says it ran for, to be its records' ``agent_type``.

        ``gen_ai.agent.name`` when given. Inside a LangGraph subgraph, the outer graph's
        node that holds the subgraph: that is how a multi-agent graph places each agent
        (``create_react_agent(name=...)`` added as a node), and its name is the agent's.
        Otherwise None, and the records take the agent of the span above them (the graph's
        own run names it) or, with no such span, their LangGraph node's name.
        """
        named = self.attrs.name("gen_ai.agent.name")
        if named is None and self.kind.graph is not None:
            named = self.kind.graph.subgraph
        return named

    def add(
        self,
        table: RecordTable,
        args: dict[str, Any],
        *,
        main: bool = True,
        at: dt.datetime | None = None,
    ) -> None:
        """Adds a record.

        Args:
            table: The log table the record goes to.
            args: Keyword arguments of that table's ``log_*`` helper; ``data`` is added
                when missing.
            main: Whether the record may be the span's main record (the first such one
                is).
            at: When the record happened; by default the span's :attr:`created_at`.
        """
        data = args.setdefault("data", {})
        if main and self.main is None:
            self.main = data
        self.records.append(MappedRecord(table, args, at or self.created_at))


SpanHandler = Callable[[Draft], None]
"""Reads a span of one role from its draft and adds that span's records."""
