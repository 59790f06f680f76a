"""Mapping agent-side spans to ``logs_agent_execution`` and ``logs_user_journey`` records.

Tool calls, agent runs and creations, workflows, handoffs, retrievals and guardrails each
become one agent record whose ``data`` uses the field names of pgtrail's typed agent events
(:class:`~pgtrail.models.ToolCall`, :class:`~pgtrail.models.Handoff`...); an OpenInference
CHAIN adds none: the root one names the workflow, a LangGraph graph's run names the agent,
and one that dispatches tool calls (LangGraph's tool node) lends their ids to the tool spans
below it. A root span, the user's request, adds ``request_received`` and
``request_completed`` / ``request_failed`` to the journey. (Evaluations become scores in
:mod:`pgtrail.otlp.score_events`.)
"""

from __future__ import annotations

import math
from typing import Any

import pydantic

from pgtrail.models import AgentEvent, Guardrail, Handoff, Retrieval, ToolCall
from pgtrail.otlp.attributes import (
    as_mapping,
    as_name,
    as_sequence,
    nanos_to_datetime,
    present,
    prune,
)
from pgtrail.otlp.classify import DEFAULT_GRAPH_NAME
from pgtrail.otlp.draft import Draft
from pgtrail.otlp.spans import ToolCallRef
from pgtrail.tables import AGENT, JOURNEY

__all__ = [
    "UNKNOWN_AGENT",
    "add_journey",
    "map_agent_span",
    "map_chain_span",
    "map_guardrail_span",
    "map_handoff_span",
    "map_retrieval_span",
    "map_tool_span",
    "map_workflow_span",
]

UNKNOWN_AGENT = "unknown"
"""A handoff's source agent until :func:`pgtrail.otlp.mapping.inherit_agents` finds it."""


def _typed(model: type[AgentEvent], values: dict[str, Any]) -> dict[str, Any]:
    """``data`` in the shape of a typed agent event (its field names, validated)."""
    clean = prune(values)
    try:
        event = model.model_validate(clean)
    except pydantic.ValidationError:
        return clean
    return event.model_dump(mode="python", by_alias=True, exclude_none=True)


def _agent_record(
    draft: Draft, event_type: str, agent_type: str | None, data: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"agent_type": agent_type, "event_type": event_type, "data": data}
    if draft.duration_ms is not None:
        args["duration_ms"] = draft.duration_ms
    draft.add(AGENT, args)


def map_tool_span(draft: Draft) -> None:
    """Adds a ``tool_call`` record (and a ``handoff`` for a ``transfer_to_*`` tool).

    An OpenInference TOOL span named ``handoff to {agent}`` is a handoff instead.

    Args:
        draft: A span classified as a tool call.
    """
    attrs = draft.attrs
    name = as_name(draft.span.name) or ""
    if (
        draft.kind.family == "openinference"
        and "tool.name" not in attrs.raw
        and name.lower().startswith("handoff to ")
    ):
        # OpenInference's Agents SDK instrumentation: a TOOL span "handoff to {agent}".
        target = as_name(name[len("handoff to ") :]) or "unknown"
        handoff = {"from_agent": UNKNOWN_AGENT, "to_agent": target}
        _agent_record(draft, "handoff", None, _typed(Handoff, handoff))
        return
    logfire = draft.kind.family == "logfire"
    traceloop = draft.kind.family == "traceloop"
    tool = (
        attrs.name("gen_ai.tool.name", "tool.name", "tool_call.function.name")
        or (attrs.name("traceloop.entity.name") if traceloop else None)
        or (attrs.name("name") if logfire else None)
        or draft.process_name
    )
    arguments = attrs.value(
        "gen_ai.tool.call.arguments",
        "tool_call.function.arguments",
        "input.value",
        "traceloop.entity.input",
    )
    if arguments is None and logfire:
        arguments = attrs.value("input")
    result = attrs.value("gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
    if result is None and logfire:
        result = attrs.value("output")
    if logfire and present(attrs.raw.get("mcp_data")) is None:
        attrs.drop("mcp_data")
    values: dict[str, Any] = {
        "tool": tool,
        "call_id": attrs.name("gen_ai.tool.call.id", "tool_call.id", "tool.id")
        or _tool_message_call_id(result),
        "args": arguments
        if isinstance(arguments, dict) or arguments is None
        else {"value": arguments},
        "result": result,
        "latency_ms": draft.duration_ms,
        "error": draft.failure,
        "tool_type": attrs.name("gen_ai.tool.type"),
        "description": attrs.text("gen_ai.tool.description", "tool.description"),
        "parameters": attrs.value("tool.parameters"),
    }
    agent = draft.named_agent()
    _agent_record(draft, "tool_call", agent, _typed(ToolCall, values))
    if isinstance(tool, str) and tool.startswith("transfer_to_") and len(tool) > 12:
        # How the OpenAI Agents SDK hands off: a tool named after the target agent.
        source = agent or UNKNOWN_AGENT
        handoff = {"from_agent": source, "to_agent": tool[len("transfer_to_") :]}
        args: dict[str, Any] = {
            "agent_type": agent,
            "event_type": "handoff",
            "data": _typed(Handoff, handoff),
        }
        draft.add(AGENT, args, main=False)


def _tool_message_call_id(result: Any) -> str | None:
    """The call id in a LangChain ``ToolMessage``, as OpenInference exports a tool's output."""
    if not isinstance(result, dict) or result.get("type") != "tool":
        return None
    data = result.get("data")
    return as_name(data.get("tool_call_id")) if isinstance(data, dict) else None


def _agent_name_from_span(draft: Draft, prefix: str) -> str | None:
    name = as_name(draft.span.name)
    if name and name.lower().startswith(prefix + " "):
        return as_name(name[len(prefix) + 1 :])
    return None


def map_agent_span(draft: Draft) -> None:
    """Adds an ``agent_run`` (or ``agent_created``) record; names the span's agent.

    Args:
        draft: A span classified as an agent run or agent creation.
    """
    attrs, family = draft.attrs, draft.kind.family
    create = draft.kind.role == "create_agent"
    name = (
        attrs.name("gen_ai.agent.name", "agent.name")
        or (attrs.name("traceloop.entity.name") if family == "traceloop" else None)
        or (attrs.name("name") if family == "logfire" else None)
        or _agent_name_from_span(draft, "create_agent" if create else "invoke_agent")
        or draft.process_name
    )
    values: dict[str, Any] = {
        "agent": name,
        "agent_id": attrs.name("gen_ai.agent.id"),
        "description": attrs.text("gen_ai.agent.description"),
        "version": attrs.name("gen_ai.agent.version"),
        "model": attrs.name("gen_ai.request.model"),
        "status": draft.status,
        "error": draft.failure,
        "input": attrs.value("gen_ai.input.messages", "input.value", "traceloop.entity.input"),
        "output": attrs.value("gen_ai.output.messages", "output.value", "traceloop.entity.output"),
        "system_instructions": attrs.value("gen_ai.system_instructions"),
    }
    if family == "logfire":
        values["tools"] = attrs.sequence("tools")
        values["handoffs"] = attrs.sequence("handoffs")
        values["output_type"] = attrs.name("output_type")
        attrs.drop(*(k for k in ("tools", "handoffs", "output_type") if attrs.raw.get(k) == "null"))
    draft.agent = name
    if family == "openinference" and not draft.span.parent_span_id:
        draft.workflow = name  # the Agents SDK's trace, as OpenInference exports it
    _agent_record(draft, "agent_created" if create else "agent_run", name, prune(values))


def map_workflow_span(draft: Draft) -> None:
    """Adds a ``workflow_run`` record; names the execution's workflow.

    Args:
        draft: A span classified as a workflow.
    """
    attrs, family = draft.attrs, draft.kind.family
    name = (
        attrs.name("gen_ai.workflow.name", "traceloop.workflow.name")
        or (attrs.name("traceloop.entity.name") if family == "traceloop" else None)
        or (attrs.name("name") if family == "logfire" else None)
        or _agent_name_from_span(draft, "invoke_workflow")
        or draft.process_name
    )
    values: dict[str, Any] = {
        "workflow": name,
        "status": draft.status,
        "error": draft.failure,
        "input": attrs.value("gen_ai.input.messages", "input.value", "traceloop.entity.input"),
        "output": attrs.value("gen_ai.output.messages", "output.value", "traceloop.entity.output"),
    }
    if family == "logfire":
        values["trace_id"] = attrs.name("agent_trace_id")
        draft.session_id = attrs.name("group_id")
        metadata = attrs.mapping("metadata")
        if metadata:
            draft.context.update(metadata)
        attrs.drop(*(k for k in ("group_id", "metadata") if present(attrs.raw.get(k)) is None))
    draft.workflow = name
    _agent_record(draft, "workflow_run", None, prune(values))


def map_chain_span(draft: Draft) -> None:
    """An OpenInference CHAIN adds no record; the root one names the workflow.

    A LangGraph graph's own run names the agent that the records below it belong to; a
    chain whose input holds tool calls (LangGraph's tool node) keeps them, for the tool
    spans below it that do not name their call ids.

    Args:
        draft: A span classified as a chain.
    """
    name = as_name(draft.span.name)
    if draft.span.parent_span_id is None:
        draft.workflow = name
    graph = draft.kind.graph
    if graph is not None and graph.graph and name != DEFAULT_GRAPH_NAME:
        # What LangGraph calls an agent is a compiled graph (create_react_agent returns
        # one), named by create_react_agent(name=...) or compile(name=...).
        draft.agent = name
    draft.tool_calls = _dispatched_tool_calls(draft.attrs.raw.get("input.value"))


def _dispatched_tool_calls(raw: Any) -> list[ToolCallRef]:
    """The tool calls a LangGraph tool node was given, as OpenInference exports its input.

    With ``Send`` (create_react_agent), the node gets one call:
    ``{"__type": "tool_call_with_context", "tool_call": {...}, "state": ...}``. Run as a
    plain node, it gets the state and runs the calls of its last message, the model's.
    """
    value = as_mapping(raw)
    if value is None:
        return []
    single = value.get("tool_call")
    if isinstance(single, dict):
        found = _tool_call_ref(single)
        return [found] if found is not None else []
    messages = as_sequence(value.get("messages")) or []
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("type") != "ai":
        return []  # the calls were answered already: this is not the node that runs them
    inner = last.get("data")
    data = inner if isinstance(inner, dict) else last
    calls = as_sequence(data.get("tool_calls")) or []
    refs = (_tool_call_ref(c) for c in calls if isinstance(c, dict))
    return [r for r in refs if r is not None]


def _tool_call_ref(call: dict[str, Any]) -> ToolCallRef | None:
    call_id, tool = as_name(call.get("id")), as_name(call.get("name"))
    if call_id is None or tool is None:
        return None
    args = call.get("args")
    return ToolCallRef(call_id, tool, args if isinstance(args, dict) else None)


def map_handoff_span(draft: Draft) -> None:
    """Adds a ``handoff`` record; an unnamed source is :data:`UNKNOWN_AGENT` for now.

    Args:
        draft: A span classified as a handoff.
    """
    attrs, family = draft.attrs, draft.kind.family
    logfire = family == "logfire"
    source = attrs.name("gen_ai.handoff.from_agent", "gen_ai.agent.name") or (
        attrs.name("from_agent") if logfire else None
    )
    target = attrs.name("gen_ai.handoff.to_agent") or (attrs.name("to_agent") if logfire else None)
    values = {
        "from_agent": source or UNKNOWN_AGENT,
        "to_agent": target or UNKNOWN_AGENT,
        "reason": attrs.text("gen_ai.handoff.reason"),
    }
    _agent_record(draft, "handoff", source, _typed(Handoff, values))


def map_retrieval_span(draft: Draft) -> None:
    """Adds a ``retrieval`` record: the query, the documents, their ids and scores.

    Args:
        draft: A span classified as a retrieval.
    """
    attrs = draft.attrs
    documents = attrs.sequence("gen_ai.retrieval.documents")
    if documents is None:
        flattened = attrs.unflatten("retrieval.documents.")
        documents = (
            [d["document"] if isinstance(d, dict) and "document" in d else d for d in flattened]
            if flattened
            else None
        )
    ids: list[str] = []
    scores: list[float] = []
    for document in documents or []:
        if not isinstance(document, dict):
            continue
        doc_id = as_name(document.get("id"))
        if doc_id is not None:
            ids.append(doc_id)
        score = document.get("score")
        if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
            scores.append(float(score))
    values = {
        "query": attrs.text("gen_ai.retrieval.query.text", "input.value"),
        "doc_count": len(documents or []),
        "top_ids": ids,
        "scores": scores,
        "data_source_id": attrs.name("gen_ai.data_source.id"),
        "top_k": attrs.count("gen_ai.retrieval.top_k"),
        "documents": documents,
        "error": draft.failure,
    }
    data = _typed(Retrieval, values)
    data.setdefault("doc_count", len(documents or []))
    _agent_record(draft, "retrieval", draft.named_agent(), data)


def map_guardrail_span(draft: Draft) -> None:
    """Adds a ``guardrail`` record: whether the check passed, and what it did.

    Args:
        draft: A span classified as a guardrail.
    """
    attrs, family = draft.attrs, draft.kind.family
    name = (
        attrs.name("gen_ai.guardrail.name", "guardrail.name")
        or (attrs.name("name") if family == "logfire" else None)
        or draft.process_name
    )
    triggered = attrs.flag("triggered") if family == "logfire" else None
    passed = attrs.flag("guardrail.passed")
    if passed is None:
        passed = not triggered if triggered is not None else draft.status != "error"
    values = {
        "name": name,
        "passed": passed,
        "action": "tripwire_triggered" if triggered else attrs.name("gen_ai.guardrail.action"),
        "input": attrs.value("input.value"),
        "output": attrs.value("output.value"),
    }
    _agent_record(draft, "guardrail", draft.named_agent(), _typed(Guardrail, values))


def add_journey(draft: Draft) -> None:
    """Adds the journey records of a root span, the user's request: arrived, then ended.

    ``request_completed`` or ``request_failed`` is added only when the span's end is
    readable and not before its start.

    Args:
        draft: A span without a parent.
    """
    name = draft.workflow or draft.process_name
    draft.add(
        JOURNEY,
        {"event_type": "request_received", "data": {"workflow": name}},
        main=False,
    )
    ended = nanos_to_datetime(draft.span.end_unix_nano)
    if ended is None or ended < draft.created_at:
        return
    outcome = "request_failed" if draft.status == "error" else "request_completed"
    data = prune(
        {
            "workflow": name,
            "duration_ms": draft.duration_ms,
            "error": draft.failure,
        }
    )
    draft.add(JOURNEY, {"event_type": outcome, "data": data}, main=False, at=ended)
