"""Deciding what a span is: the role it plays and the attribute convention that emitted it.

The role is what the span becomes in pgtrail's tables: a model call (``llm``), a ``tool``
call, an ``agent`` run or ``create_agent``, a ``workflow``, an OpenInference ``chain``, a
``handoff``, a ``retrieval``, a ``guardrail``, or nothing in particular (None). The family
says whose attribute names the span uses, which decides where the mapping looks next:
``genai`` (the OpenTelemetry GenAI conventions), ``openinference``, ``traceloop``
(OpenLLMetry), ``logfire`` or ``langfuse``. A span a LangGraph graph ran also says where in
the graph it ran (:class:`GraphPlace`), read from the LangChain metadata OpenInference exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgtrail.otlp.attributes import Attrs, as_mapping, as_name, as_text
from pgtrail.otlp.spans import OtlpSpan, SpanEvent

__all__ = [
    "CLASSIFIER_ATTRIBUTES",
    "DEFAULT_GRAPH_NAME",
    "GraphPlace",
    "Kind",
    "classify",
    "is_message_event",
]

CLASSIFIER_ATTRIBUTES = (
    "gen_ai.operation.name",
    "openinference.span.kind",
    "traceloop.span.kind",
    "llm.request.type",
    "langfuse.observation.type",
)
"""The attributes that say what a span is; once classified, they are not kept as data."""

_LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)
_TRACELOOP_LLM_TYPES = frozenset({"chat", "completion", "embedding", "rerank"})

# Logfire's instrument_openai_agents() names each span after its message template.
_LOGFIRE_AGENT = "Agent run: {name!r}"
_LOGFIRE_FUNCTION = "Function: {name}"
_LOGFIRE_HANDOFF = "Handoff: {from_agent} → {to_agent}"
_LOGFIRE_GUARDRAIL = "Guardrail {name!r} {triggered=}"
_LOGFIRE_GENERATION = "Chat completion with {gen_ai.request.model!r}"
_LOGFIRE_RESPONSES = "Responses API"
_LOGFIRE_TRACE = "OpenAI Agents trace: {name}"

_LOGFIRE_ROLES = {
    _LOGFIRE_AGENT: "agent",
    _LOGFIRE_FUNCTION: "tool",
    _LOGFIRE_HANDOFF: "handoff",
    _LOGFIRE_GUARDRAIL: "guardrail",
    _LOGFIRE_GENERATION: "llm",
    _LOGFIRE_TRACE: "workflow",
}
_GENAI_ROLES = {
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "create_agent",
    "invoke_workflow": "workflow",
    "retrieval": "retrieval",
    "handoff": "handoff",
    "apply_guardrail": "guardrail",
    **dict.fromkeys(_LLM_OPERATIONS, "llm"),
}
_OPENINFERENCE_ROLES = {
    "LLM": "llm",
    "EMBEDDING": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
    "RETRIEVER": "retrieval",
    "GUARDRAIL": "guardrail",
    "CHAIN": "chain",
}
# Events named like the older GenAI message events that carry no message: an evaluation,
# and OpenLLMetry's marker of each streamed chunk (read as the time to first token).
_NOT_MESSAGES = frozenset({"gen_ai.evaluation.result", "gen_ai.content.completion.chunk"})
# LangGraph's separators in ``langgraph_checkpoint_ns``: ``node:task|subnode:task``.
_NS_SEP, _NS_END = "|", ":"

DEFAULT_GRAPH_NAME = "LangGraph"
"""The name LangGraph gives a compiled graph that was not named: it names no agent."""

_TRACELOOP_ROLES = {"workflow": "workflow", "agent": "agent", "tool": "tool"}
_LANGFUSE_ROLES = {
    "generation": "llm",
    "embedding": "llm",
    "agent": "agent",
    "tool": "tool",
    "retriever": "retrieval",
    "guardrail": "guardrail",
}


@dataclass(frozen=True)
class GraphPlace:
    """Where in a LangGraph graph a span ran, from the metadata LangGraph gives every run.

    Attributes:
        graph: The span is a graph's own run (a compiled graph invoked by the application),
            not one of its nodes or anything a node ran.
        node: The graph node the span ran in (``langgraph_node``), if any.
        subgraph: The node of the outer graph whose subgraph the span ran in: the
            second-to-last step of ``langgraph_checkpoint_ns``, when it has two or more.
    """

    graph: bool
    node: str | None
    subgraph: str | None


@dataclass
class Kind:
    """What a span is.

    Attributes:
        role: ``llm``, ``tool``, ``agent``, ``create_agent``, ``workflow``, ``chain``,
            ``handoff``, ``retrieval``, ``guardrail``, or None for any other span.
        family: Whose conventions it follows: ``genai``, ``openinference``,
            ``traceloop``, ``logfire`` or ``langfuse``.
        operation: The operation or span kind it names, lower-cased (``chat``,
            ``execute_tool``, ``llm``...), when it names one.
        graph: Where in a LangGraph graph the span ran; None for a span no graph ran.
    """

    role: str | None
    family: str
    operation: str | None = None
    graph: GraphPlace | None = None


def classify(span: OtlpSpan, attrs: Attrs) -> Kind:
    """Decides what ``span`` is from its name and attributes; reads, never marks as used.

    Args:
        span: A decoded span.
        attrs: Its attributes.
    """
    template = _logfire_template(span, attrs)
    operation = as_text(attrs.raw.get("gen_ai.operation.name"))
    op = operation.lower() if operation else None
    if template is not None:
        role = _LOGFIRE_ROLES.get(template)
        if role is None and template.startswith(_LOGFIRE_RESPONSES):
            role = "llm"
        if role is not None:
            return Kind(role, "logfire", op)
    kind = _classify_by_convention(span, attrs, op)
    if template is not None and kind.family == "genai":
        # Logfire's model integrations (instrument_openai, instrument_anthropic...) keep
        # the request and response in bare keys, and older ones name no operation.
        kind.family = "logfire"
        if (
            kind.role is None
            and "request_data" in attrs.raw
            and "gen_ai.request.model" in attrs.raw
        ):
            kind.role = "llm"
    return kind


def is_message_event(event: SpanEvent) -> bool:
    """Whether ``event`` carries a message of a model call, as the older GenAI names do.

    ``gen_ai.user.message``, ``gen_ai.choice`` and the like hold the conversation; the
    ``gen_ai.evaluation.result`` event is an evaluation, not a message.

    Args:
        event: One event of a span.
    """
    name = event.name if isinstance(event.name, str) else ""
    return name.startswith("gen_ai.") and name not in _NOT_MESSAGES


def _logfire_template(span: OtlpSpan, attrs: Attrs) -> str | None:
    template = attrs.raw.get("logfire.msg_template")
    if isinstance(template, str):
        return template
    name = span.name if isinstance(span.name, str) else ""
    return name if "{" in name else None


def _classify_by_convention(span: OtlpSpan, attrs: Attrs, op: str | None) -> Kind:
    if op is not None and op in _GENAI_ROLES:
        return Kind(_GENAI_ROLES[op], "genai", op)
    openinference = as_text(attrs.raw.get("openinference.span.kind"))
    if openinference is not None:
        role = _OPENINFERENCE_ROLES.get(openinference.upper())
        return _openinference_kind(span, attrs, role, openinference.lower())
    traceloop = as_text(attrs.raw.get("traceloop.span.kind"))
    if traceloop is not None:
        return Kind(_TRACELOOP_ROLES.get(traceloop.lower()), "traceloop", traceloop.lower())
    request_type = as_text(attrs.raw.get("llm.request.type"))
    if request_type is not None and request_type.lower() in _TRACELOOP_LLM_TYPES:
        return Kind("llm", "traceloop", request_type.lower())
    langfuse = as_text(attrs.raw.get("langfuse.observation.type"))
    if langfuse is not None and langfuse.lower() in _LANGFUSE_ROLES:
        return Kind(_LANGFUSE_ROLES[langfuse.lower()], "langfuse", langfuse.lower())
    if op is not None:
        return Kind(None, "genai", op)
    # A span without a known operation that still names a model and counts tokens.
    if any(k in attrs.raw for k in ("gen_ai.request.model", "gen_ai.response.model")) and any(
        k.startswith(("gen_ai.usage.", "llm.usage.")) for k in attrs.raw
    ):
        return Kind("llm", "genai")
    return Kind(None, "genai")


def _openinference_kind(span: OtlpSpan, attrs: Attrs, role: str | None, operation: str) -> Kind:
    graph = _graph_place(attrs.raw.get("metadata"))
    if graph is not None and role == "agent" and graph.node and graph.node == as_name(span.name):
        # OpenInference's LangChain instrumentation calls any run whose name holds "agent"
        # an AGENT, so create_react_agent's model node ("agent") would pass for an agent
        # on every step. A span named after its node is a step of the graph; the graph is
        # the agent.
        role = "chain"
    return Kind(role, "openinference", operation, graph)


def _graph_place(raw: object) -> GraphPlace | None:
    """Where a LangGraph graph ran the span, from its LangChain ``metadata`` attribute."""
    metadata = as_mapping(raw)
    if not metadata:
        return None
    node = as_name(metadata.get("langgraph_node"))
    if node is None and metadata.get("ls_integration") != "langgraph":
        return None
    namespace = metadata.get("langgraph_checkpoint_ns")
    steps = namespace.split(_NS_SEP) if isinstance(namespace, str) and namespace else []
    subgraph = as_name(steps[-2].split(_NS_END, 1)[0]) if len(steps) >= 2 else None
    return GraphPlace(graph=node is None, node=node, subgraph=subgraph)
