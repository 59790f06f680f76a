"""What one OpenTelemetry span means to pgtrail: its process and the rows it adds.

:func:`map_span` reads the attribute conventions that LLM instrumentations emit, current names
first and older ones too:

- the OpenTelemetry GenAI semantic conventions (``gen_ai.*``: model calls, ``execute_tool``,
  ``invoke_agent`` / ``create_agent`` / ``invoke_workflow``, ``retrieval``, the
  ``gen_ai.evaluation.result`` event, and the older ``gen_ai.system`` / ``prompt_tokens`` names);
- OpenInference, as Phoenix users emit it (``openinference.span.kind``, ``llm.*``,
  ``input.value`` / ``output.value``, flattened ``llm.input_messages.N.message.*``);
- OpenLLMetry / Traceloop (``traceloop.span.kind``, ``traceloop.entity.*``,
  ``traceloop.association.properties.*``, flattened ``gen_ai.prompt.N.*`` /
  ``gen_ai.completion.N.*``, ``llm.usage.total_tokens``);
- Logfire's ``instrument_openai_agents()`` spans (agent run, function, handoff, guardrail,
  chat-completion and Responses spans, each with its own attributes) and the model spans of
  its other integrations;
- the Langfuse SDK's ``langfuse.*`` attributes.

Model calls become ``logs_llm_execution`` rows; tools, agent runs, workflows, handoffs,
retrievals and guardrails become ``logs_agent_execution`` rows whose ``data`` uses the field
names of pgtrail's typed agent events, and evaluations become scores there
(:mod:`pgtrail.otlp.score_events`); a root span (the user's request) adds
``request_received`` and ``request_completed`` / ``request_failed`` to ``logs_user_journey``.
Every attribute that is not mapped is kept, as given, under ``data["attributes"]`` of the
span's main record. Odd input (wrong types, negative or oversized numbers, malformed JSON) is
never an error: the value is ignored by the mapping and stays among the kept attributes.

This module orchestrates: it classifies the span (:mod:`pgtrail.otlp.classify`), works out
its outcome, process name, user, tenant, session and business context, hands it to the
mapper of its role (:mod:`pgtrail.otlp.model_spans`, :mod:`pgtrail.otlp.agent_spans`), and
across a trace lets records inherit the agent of the span above them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pgtrail.config import (
    DEFAULT_OTLP_SESSION_ATTRIBUTES,
    DEFAULT_OTLP_TENANT_ATTRIBUTES,
    DEFAULT_OTLP_USER_ATTRIBUTES,
    ENV_OTLP_SESSION_ATTRIBUTES,
    ENV_OTLP_TENANT_ATTRIBUTES,
    ENV_OTLP_USER_ATTRIBUTES,
    Settings,
    env_values,
)
from pgtrail.otlp.agent_spans import (
    UNKNOWN_AGENT,
    add_journey,
    map_agent_span,
    map_chain_span,
    map_guardrail_span,
    map_handoff_span,
    map_retrieval_span,
    map_tool_span,
    map_workflow_span,
)
from pgtrail.otlp.attributes import (
    NAME_CHARS,
    Attrs,
    as_name,
    as_text,
    nanos_to_datetime,
    span_duration_ms,
    span_events,
)
from pgtrail.otlp.classify import CLASSIFIER_ATTRIBUTES, Kind, classify, is_message_event
from pgtrail.otlp.draft import Draft, SpanHandler
from pgtrail.otlp.model_spans import STREAM_EVENTS, map_model_call
from pgtrail.otlp.score_events import EVALUATION_EVENT, add_scores
from pgtrail.otlp.spans import STATUS_ERROR, MappedRecord, MappedSpan, OtlpSpan, ToolCallRef
from pgtrail.tables import AGENT, JOURNEY

log = logging.getLogger("pgtrail")

__all__ = ["MappingOptions", "identity_attributes", "inherit_agents", "map_span"]

_ERROR_CHARS = 4000
_MAX_EVENTS = 50  # span events kept per record
_ATTRIBUTE_VARIABLES = (
    ENV_OTLP_USER_ATTRIBUTES,
    ENV_OTLP_TENANT_ATTRIBUTES,
    ENV_OTLP_SESSION_ATTRIBUTES,
)
# Bookkeeping that only serves Logfire's own UI.
_LOGFIRE_NOISE = ("logfire.msg_template", "logfire.msg", "logfire.json_schema", "logfire.span_type")
# Traceloop association properties and metadata keys the mapping reads identities from.
_IDENTITY_KEYS = ("user_id", "userId", "tenant_id", "tenantId", "session_id", "sessionId")
_IDENTITY_PREFIXES = ("", "traceloop.association.properties.", "langfuse.trace.metadata.")
# Context keys that identify, kept whatever their name: those above, LangGraph's thread id
# (its conversation), and any attribute name configured for the user, tenant or session.
_CONTEXT_IDS = frozenset({*_IDENTITY_KEYS, "thread_id", "conversation_id"})
# Bookkeeping LangChain and LangGraph copy into the metadata of every run, which
# OpenInference exports as each span's `metadata`: LangSmith's ls_* (ls_provider,
# ls_model_name, ls_temperature, ls_integration...), lc_versions, LangGraph's
# langgraph_step / _node / _triggers / _path / _checkpoint_ns and checkpoint_ns /
# checkpoint_id / checkpoint_map. They say how the framework ran, not what the request was,
# and differ from span to span: none belongs in the execution's context. (LangGraph leaves
# the same keys out of its checkpoints' metadata.)
_FRAMEWORK_KEY_PREFIXES = ("ls_", "lc_", "langgraph_", "checkpoint_")
_SUMMARY_CHARS = 200
_EXCEPTION_MESSAGE_CHARS = 1000
# A Python traceback, as OpenTelemetry's record_exception and LangChain's run errors write it.
_TRACEBACK_START = "Traceback (most recent call last)"
_PYTHON_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
# A JavaScript or Java frame: "at fn (/app/x.js:10:5)", "at x.Y.fn(Y.java:42)".
_AT_FRAME = re.compile(
    r"^\s*at (?:(?P<function>[^\s(]+) ?\()?(?P<path>[^\s():]+)(?::(?P<line>\d+))?[^)]*\)?\s*$",
    re.MULTILINE,
)

_HANDLERS: dict[str, SpanHandler] = {
    "llm": map_model_call,
    "tool": map_tool_span,
    "agent": map_agent_span,
    "create_agent": map_agent_span,
    "workflow": map_workflow_span,
    "chain": map_chain_span,
    "handoff": map_handoff_span,
    "retrieval": map_retrieval_span,
    "guardrail": map_guardrail_span,
}


# -- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappingOptions:
    """Which span (or resource) attributes carry the user, the tenant and the session.

    Each list is tried in order, on the span's attributes first and then on its resource's;
    an empty list turns that lookup off.

    Attributes:
        user_attributes: Attributes naming the user.
        tenant_attributes: Attributes naming the tenant.
        session_attributes: Attributes naming the session.
    """

    user_attributes: tuple[str, ...] = DEFAULT_OTLP_USER_ATTRIBUTES
    tenant_attributes: tuple[str, ...] = DEFAULT_OTLP_TENANT_ATTRIBUTES
    session_attributes: tuple[str, ...] = DEFAULT_OTLP_SESSION_ATTRIBUTES

    @classmethod
    def from_settings(cls, settings: Settings) -> MappingOptions:
        """The options that ``settings`` give (its ``otlp_*_attributes`` fields).

        Args:
            settings: pgtrail's settings.
        """
        return cls(
            user_attributes=settings.otlp_user_attributes,
            tenant_attributes=settings.otlp_tenant_attributes,
            session_attributes=settings.otlp_session_attributes,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MappingOptions:
        """Options from the ``PGTRAIL_OTLP_*_ATTRIBUTES`` variables, read as settings are.

        Only those three variables are read: a malformed setting elsewhere does not stop
        the mapping.

        Args:
            environ: The environment to read; by default the process's.
        """
        values = env_values(environ, names=_ATTRIBUTE_VARIABLES)
        return cls.from_settings(Settings.model_validate(values))


def identity_attributes(options: MappingOptions) -> frozenset[str]:
    """The attributes the user, tenant and session ids are read from: identifiers.

    Redaction leaves them as they are (see :func:`pgtrail.otlp.redaction.redact_span`).

    Args:
        options: The attribute lists in use.
    """
    return frozenset(
        {
            *options.user_attributes,
            *options.tenant_attributes,
            *options.session_attributes,
            *(prefix + key for prefix in _IDENTITY_PREFIXES for key in _IDENTITY_KEYS),
            *(prefix + "thread_id" for prefix in _IDENTITY_PREFIXES),
            "group_id",
        }
    )


# -- one span ------------------------------------------------------------------------------


def map_span(span: OtlpSpan, options: MappingOptions | None = None) -> MappedSpan:
    """Maps one span onto pgtrail: its process, and the rows it adds to the log tables.

    Args:
        span: A decoded span.
        options: Which attributes carry user, tenant and session; by default from the
            ``PGTRAIL_OTLP_*_ATTRIBUTES`` environment variables, else the conventional names.

    Returns:
        The process name, status and error for ``processes_executed``; the records for
        ``logs_llm_execution``, ``logs_agent_execution`` and ``logs_user_journey`` (their
        ``args`` are the keyword arguments of the matching ``log_*`` helper); the user,
        tenant and session the span names; the workflow it names; its business context.
        Never raises on odd input.
    """
    options = options or MappingOptions.from_env()
    try:
        return _map(span, options)
    except Exception:  # a bug here must not cost the trace its other spans
        log.exception("pgtrail: could not map span %r; kept as a plain process", span.name)
        return MappedSpan(
            process_name=as_name(span.name) or "span",
            status="error" if span.status_code == STATUS_ERROR else "ok",
            error=as_text(span.status_message, _ERROR_CHARS),
        )


@dataclass(frozen=True)
class _Identity:
    user_id: str | None
    tenant_id: str | None
    session_id: str | None


def _map(span: OtlpSpan, options: MappingOptions) -> MappedSpan:
    draft = _draft(span)
    handler = _HANDLERS.get(draft.kind.role or "")
    if handler is not None:
        handler(draft)
    draft.workflow = draft.workflow or draft.attrs.name("langfuse.trace.name")
    _context(draft, options)
    add_scores(draft)
    if not span.parent_span_id:
        add_journey(draft)
    identity = _identities(draft, options)
    _keep_unmapped(draft)
    return MappedSpan(
        process_name=draft.process_name,
        status="error" if draft.status == "error" else "ok",
        error=draft.error,
        records=tuple(draft.records),
        user_id=identity.user_id,
        tenant_id=identity.tenant_id,
        session_id=identity.session_id,
        workflow=draft.workflow,
        context=draft.context,
        agent=draft.agent,
        fallback_agent=draft.kind.graph.node if draft.kind.graph is not None else None,
        tool_calls=tuple(draft.tool_calls),
    )


def _draft(span: OtlpSpan) -> Draft:
    """What every span has: its kind, outcome, times and process name."""
    attrs = Attrs(span.attributes)
    kind = classify(span, attrs)
    attrs.drop(*CLASSIFIER_ATTRIBUTES)
    outcome = _outcome(span, attrs, kind)
    created_at = (
        nanos_to_datetime(span.start_unix_nano)
        or nanos_to_datetime(span.end_unix_nano)
        or dt.datetime.now(dt.UTC)
    )
    return Draft(
        span=span,
        attrs=attrs,
        kind=kind,
        created_at=created_at,
        duration_ms=span_duration_ms(span),
        status=outcome.status,
        error=outcome.error,
        process_name=_process_name(span, attrs, kind),
    )


def _identities(draft: Draft, options: MappingOptions) -> _Identity:
    """The user, tenant and session: configured attributes first, then the context's."""
    attrs, resource = draft.attrs, draft.span.resource
    user_id = _identity(attrs, resource, options.user_attributes) or _association(
        draft, *options.user_attributes, "user_id", "userId"
    )
    tenant_id = _identity(attrs, resource, options.tenant_attributes) or _association(
        draft, *options.tenant_attributes, "tenant_id", "tenantId"
    )
    session_id = (
        _identity(attrs, resource, options.session_attributes)
        or _association(draft, *options.session_attributes, "session_id", "sessionId", "thread_id")
        or draft.session_id
    )
    return _Identity(user_id=user_id, tenant_id=tenant_id, session_id=session_id)


def _keep_unmapped(draft: Draft) -> None:
    """Puts the attributes and events nothing mapped on the main record, as given."""
    if draft.main is None:
        return
    rest = _without_stacktrace(draft.attrs.rest())
    if rest:
        draft.main["attributes"] = rest
    events = _other_events(draft)
    if events:
        draft.main["events"] = events


def _identity(attrs: Attrs, resource: Any, keys: tuple[str, ...]) -> str | None:
    found = attrs.name(*keys)
    if found is None and isinstance(resource, Mapping) and resource:
        for key in keys:
            if key in resource:
                found = as_name(resource[key])
                if found is not None:
                    break
    return found


def _association(draft: Draft, *keys: str) -> str | None:
    """Identity carried in the context: association properties, metadata (kept there too)."""
    if not draft.context:
        return None
    for key in keys:
        found = as_name(draft.context.get(key))
        if found is not None:
            return found
    return None


# -- status, names --------------------------------------------------------------------------


def _exception_text(span: OtlpSpan) -> str | None:
    for event in span_events(span):
        if event.name == "exception" and isinstance(event.attributes, Mapping):
            kind = as_text(event.attributes.get("exception.type"))
            message = _without_traceback(as_text(event.attributes.get("exception.message")))
            if kind or message:
                return ": ".join(p for p in (kind, message) if p)
    return None


@dataclass(frozen=True)
class _Outcome:
    status: str  # ok or error
    error: str | None


def _outcome(span: OtlpSpan, attrs: Attrs, kind: Kind) -> _Outcome:
    """``ok`` or ``error``, and the error text."""
    error_type = attrs.text("error.type")
    logfire_error = attrs.mapping("error") if kind.family == "logfire" else None
    failed = span.status_code == STATUS_ERROR or error_type is not None or bool(logfire_error)
    if not failed:
        return _Outcome("ok", None)
    parts: list[str] = []
    if error_type:
        parts.append(error_type)
    message = _without_traceback(as_text(span.status_message))
    if message and message != error_type:
        parts.append(message)
    if logfire_error:
        details = logfire_error.get("data")
        detail = as_text(details.get("error")) if isinstance(details, dict) else None
        for text in (as_text(logfire_error.get("message")), detail):
            if text and text not in parts:
                parts.append(text)
    if not parts:
        exception = _exception_text(span)
        if exception:
            parts.append(exception)
    text = ": ".join(parts) or "error"
    return _Outcome("error", text[:_ERROR_CHARS])


def _process_name(span: OtlpSpan, attrs: Attrs, kind: Kind) -> str:
    if kind.family == "logfire":
        attrs.drop(*_LOGFIRE_NOISE)
        shown = as_name(attrs.raw.get("logfire.msg"))
        if shown:
            return shown
    name = as_name(span.name)
    if name is not None and kind.operation and name.lower() == kind.operation:
        # A bare operation name ("invoke_agent"): say which agent, tool or model.
        entity = as_name(
            attrs.raw.get("gen_ai.agent.name")
            or attrs.raw.get("gen_ai.tool.name")
            or attrs.raw.get("gen_ai.request.model")
        )
        if entity:
            name = f"{name} {entity}"[:NAME_CHARS]
    return name or kind.operation or "span"


# -- context, events -----------------------------------------------------------------------


def _context(draft: Draft, options: MappingOptions) -> None:
    """Business context for the execution row: association properties, metadata, tags.

    Framework bookkeeping (see ``_FRAMEWORK_KEY_PREFIXES``) is left out; identifiers are
    kept whatever their name.
    """
    attrs, context = draft.attrs, draft.context
    for key, value in attrs.prefixed("traceloop.association.properties.").items():
        context.setdefault(key, value)
    for key, value in attrs.prefixed("langfuse.trace.metadata.").items():
        context.setdefault(key, value)
    if draft.kind.family == "openinference":
        metadata = attrs.mapping("metadata")
        for key, value in (metadata or {}).items():
            context.setdefault(str(key), value)
    tags = attrs.sequence("tag.tags", "langfuse.trace.tags")
    if tags:
        context.setdefault("tags", tags)
    resource = draft.span.resource if isinstance(draft.span.resource, Mapping) else {}
    environment = as_name(
        resource.get("deployment.environment.name") or resource.get("deployment.environment")
    )
    if environment:
        context.setdefault("environment", environment)
    service = as_name(resource.get("service.name"))
    if service:
        context.setdefault("service", service)
    keep = {
        *_CONTEXT_IDS,
        *options.user_attributes,
        *options.tenant_attributes,
        *options.session_attributes,
    }
    for key in [k for k in context if k not in keep and _is_framework_key(k)]:
        del context[key]


def _is_framework_key(key: str) -> bool:
    return key.startswith(_FRAMEWORK_KEY_PREFIXES)


def _other_events(draft: Draft) -> list[dict[str, Any]]:
    """Span events kept on the main record (exceptions, ...) and not mapped elsewhere."""
    kept = []
    for event in span_events(draft.span):
        if event.name == EVALUATION_EVENT:
            continue  # a score of its own (pgtrail.otlp.score_events)
        if draft.kind.role == "llm" and (is_message_event(event) or event.name in STREAM_EVENTS):
            continue  # in the payload, or read as the time to first token
        entry: dict[str, Any] = {"name": event.name}
        at = nanos_to_datetime(event.time_unix_nano)
        if at is not None:
            entry["time"] = at.isoformat()
        if isinstance(event.attributes, Mapping) and event.attributes:
            entry["attributes"] = _without_stacktrace(event.attributes)
        kept.append(entry)
        if len(kept) == _MAX_EVENTS:
            break
    return kept


def _without_stacktrace(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Exception attributes with the stack trace replaced by a short, path-free summary.

    A stack trace names the files of the machine that ran the code (home and install
    folders, user names) and is long; the type and the message say what failed, the last
    frame where. ``exception.message`` loses any traceback appended to it.
    """
    kept = dict(attributes)
    trace = kept.pop("exception.stacktrace", None)
    if "exception.message" in kept:
        message = _without_traceback(as_text(kept["exception.message"]))
        kept["exception.message"] = message[:_EXCEPTION_MESSAGE_CHARS] if message else None
        if kept["exception.message"] is None:
            del kept["exception.message"]
    frame = _last_frame(trace) if isinstance(trace, str) else None
    if frame:
        kept["exception.frame"] = frame
    return kept


def _without_traceback(text: str | None) -> str | None:
    """An error text without the traceback some instrumentations append to it.

    LangChain's run errors, which OpenInference sets as the span's status message, are the
    exception's repr followed by its full traceback.
    """
    if not text or _TRACEBACK_START not in text:
        return text
    head, _, trace = text.partition(_TRACEBACK_START)
    head = head.strip()
    if head:
        return head
    # Only a traceback: its last line states the exception.
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return None if _PYTHON_FRAME.search(last) or not last else last[:_EXCEPTION_MESSAGE_CHARS]


def _last_frame(trace: str) -> str | None:
    """Where the exception was raised: ``function in file.py:line``, without the path.

    Python prints the innermost frame last; JavaScript and Java print it first.
    """
    frames = list(_PYTHON_FRAME.finditer(trace))
    found = frames[-1] if frames else _AT_FRAME.search(trace)
    if found is None:
        return None
    basename = re.split(r"[\\/]", found["path"])[-1]
    where = f"{basename}:{found['line']}" if found["line"] else basename
    function = found["function"]
    return (f"{function} in {where}" if function else where)[:_SUMMARY_CHARS]


# -- agents across a trace ----------------------------------------------------------------


def inherit_agents(
    spans: Iterable[OtlpSpan], mapped: Mapping[str, MappedSpan]
) -> dict[str, MappedSpan]:
    """Fills in what a span's records learn from the spans above them.

    Model calls and tool calls rarely name their agent; the agent-run span above them does.
    Each record without an ``agent_type`` takes the agent of its nearest agent span, else
    the span's fallback (its LangGraph node). A tool call without a call id takes it from
    the span that dispatched it (LangGraph's tool node), and, when the tool span held only
    a bare string as input, that call's arguments too.

    Args:
        spans: The spans of one trace.
        mapped: Their mappings, by span id.

    Returns:
        The mappings, with records filled in.
    """
    parents = {s.span_id: s.parent_span_id for s in spans}
    result = dict(mapped)
    claimed: set[str] = set()
    for span_id, item in mapped.items():
        if not item.records:
            continue
        records = _with_call_ids(item.records, mapped.get(parents.get(span_id) or ""), claimed)
        if any(_needs_agent(r) for r in records):
            agent, seen, current = item.agent, {span_id}, parents.get(span_id)
            while agent is None and current is not None and current not in seen:
                seen.add(current)
                ancestor = mapped.get(current)
                agent = ancestor.agent if ancestor is not None else None
                current = parents.get(current)
            agent = agent or item.fallback_agent
            if agent is not None:
                records = tuple(_with_agent(r, agent) if _needs_agent(r) else r for r in records)
        if records != item.records:
            result[span_id] = replace(item, records=records)
    return result


def _with_call_ids(
    records: tuple[MappedRecord, ...], parent: MappedSpan | None, claimed: set[str]
) -> tuple[MappedRecord, ...]:
    """Tool-call records completed from the call their parent span dispatched."""
    if parent is None or not parent.tool_calls:
        return records
    filled = []
    for record in records:
        data = record.args.get("data")
        if (
            record.table != AGENT
            or record.args.get("event_type") != "tool_call"
            or not isinstance(data, dict)
        ):
            filled.append(record)
            continue
        call = _matching_call(data, parent.tool_calls, claimed)
        if call is None:
            filled.append(record)
            continue
        claimed.add(call.call_id)
        updated = {**data, "call_id": call.call_id}
        if call.args is not None and (data.get("args") is None or _bare_value(data) is not None):
            # The model's arguments, rather than the bare string the tool was handed.
            updated["args"] = call.args
        filled.append(replace(record, args={**record.args, "data": updated}))
    return tuple(filled)


def _matching_call(
    data: dict[str, Any], calls: tuple[ToolCallRef, ...], claimed: set[str]
) -> ToolCallRef | None:
    """The call the record is: by its id when it has one, else the unclaimed call of its tool
    (of several, the one its bare input names)."""
    known = data.get("call_id")
    if known:
        return next((c for c in calls if c.call_id == known), None)
    candidates = [c for c in calls if c.tool == data.get("tool") and c.call_id not in claimed]
    value = _bare_value(data)
    if len(candidates) > 1 and value is not None:
        named = [c for c in candidates if c.args and value in c.args.values()]
        candidates = named or candidates
    return candidates[0] if candidates else None


def _bare_value(data: dict[str, Any]) -> Any:
    """The tool's input when it was a bare value, kept as ``{"value": ...}``; else None."""
    args = data.get("args")
    if isinstance(args, dict) and len(args) == 1 and "value" in args:
        return args["value"]
    return None


def _needs_agent(record: MappedRecord) -> bool:
    if record.table == JOURNEY:
        return False
    data = record.args.get("data")
    unknown_source = isinstance(data, dict) and data.get("from_agent") == UNKNOWN_AGENT
    return not record.args.get("agent_type") or unknown_source


def _with_agent(record: MappedRecord, agent: str) -> MappedRecord:
    args = dict(record.args)
    args["agent_type"] = args.get("agent_type") or agent
    data = args.get("data")
    if isinstance(data, dict) and data.get("from_agent") == UNKNOWN_AGENT:
        args["data"] = {**data, "from_agent": agent}
    return replace(record, args=args)
