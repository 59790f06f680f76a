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
retrievals, guardrails and evaluations become ``logs_agent_execution`` rows whose ``data``
uses the field names of pgtrail's typed agent events; a root span (the user's request) adds
``request_received`` and ``request_completed`` / ``request_failed`` to ``logs_user_journey``.
Every attribute that is not mapped is kept, as given, under ``data["attributes"]`` of the
span's main record. Odd input (wrong types, negative or oversized numbers, malformed JSON) is
never an error: the value is ignored by the mapping and stays among the kept attributes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pydantic

from pgtrail.config import (
    ENV_OTLP_SESSION_ATTRIBUTES,
    ENV_OTLP_TENANT_ATTRIBUTES,
    ENV_OTLP_USER_ATTRIBUTES,
)
from pgtrail.models import AgentEvent, Guardrail, Handoff, Retrieval, ToolCall
from pgtrail.otlp.spans import (
    STATUS_ERROR,
    MappedRecord,
    MappedSpan,
    OtlpSpan,
    RecordTable,
    SpanEvent,
)
from pgtrail.tables import AGENT, JOURNEY, LLM
from pgtrail.writer.copytext import INT4_MAX
from pgtrail.writer.redact import Redactor

log = logging.getLogger("pgtrail")
T = TypeVar("T")

__all__ = [
    "DEFAULT_SESSION_ATTRIBUTES",
    "DEFAULT_TENANT_ATTRIBUTES",
    "DEFAULT_USER_ATTRIBUTES",
    "MappingOptions",
    "identity_attributes",
    "inherit_agents",
    "map_span",
    "redact_span",
]

DEFAULT_USER_ATTRIBUTES = ("user.id", "enduser.id", "langfuse.user.id")
DEFAULT_TENANT_ATTRIBUTES = ("tenant.id",)
DEFAULT_SESSION_ATTRIBUTES = ("gen_ai.conversation.id", "session.id", "langfuse.session.id")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST_NANOS = 946_684_800 * 10**9  # 2000-01-01
_LATEST_NANOS = 4_102_444_800 * 10**9  # 2100-01-01
_NAME_CHARS = 200  # process names, agent and tool names, models, providers
_ERROR_CHARS = 4000
_MAX_EVENTS = 50  # span events kept per record
_LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)
_CLASSIFIERS = (
    "gen_ai.operation.name",
    "openinference.span.kind",
    "traceloop.span.kind",
    "llm.request.type",
    "langfuse.observation.type",
)
_TRACELOOP_LLM_TYPES = frozenset({"chat", "completion", "embedding", "rerank"})
# Traceloop serialises every entity input and output as JSON, strings included.
_ALWAYS_JSON = frozenset({"traceloop.entity.input", "traceloop.entity.output"})
_UNKNOWN_AGENT = "unknown"  # a handoff's source, until inherit_agents finds it
_SYSTEM_ROLES = frozenset({"system", "developer"})
_INVALID_OUTPUT_MARKERS = (
    "invalid_output",
    "invalidoutput",
    "modelbehaviorerror",
    "unexpectedmodelbehavior",
    "outputparserexception",
    "outputguardrailtripwiretriggered",
)
_TIMEOUT_MARKERS = ("timeout", "timed out", "deadline", "deadlineexceeded")
_RATE_LIMIT_MARKERS = (
    "ratelimit",
    "rate_limit",
    "rate limit",
    "rate-limit",
    "too many requests",
    "toomanyrequests",
    "resource_exhausted",
    "429",
)

# Logfire's instrument_openai_agents() names each span after its message template.
_LOGFIRE_AGENT = "Agent run: {name!r}"
_LOGFIRE_FUNCTION = "Function: {name}"
_LOGFIRE_HANDOFF = "Handoff: {from_agent} → {to_agent}"
_LOGFIRE_GUARDRAIL = "Guardrail {name!r} {triggered=}"
_LOGFIRE_GENERATION = "Chat completion with {gen_ai.request.model!r}"
_LOGFIRE_RESPONSES = "Responses API"
_LOGFIRE_TRACE = "OpenAI Agents trace: {name}"
# Bookkeeping that only serves Logfire's own UI.
_LOGFIRE_NOISE = ("logfire.msg_template", "logfire.msg", "logfire.json_schema", "logfire.span_type")

_GENAI_PARAMETERS = (
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.request.max_tokens",
    "gen_ai.request.frequency_penalty",
    "gen_ai.request.presence_penalty",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.seed",
    "gen_ai.request.choice.count",
    "gen_ai.request.stream",
    "gen_ai.request.encoding_formats",
    "gen_ai.output.type",
    "llm.is_streaming",
)


# -- options -------------------------------------------------------------------------------


def _attribute_list(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class MappingOptions:
    """Which span (or resource) attributes carry the user, the tenant and the session.

    Each list is tried in order, on the span's attributes first and then on its resource's.
    """

    user_attributes: tuple[str, ...] = DEFAULT_USER_ATTRIBUTES
    tenant_attributes: tuple[str, ...] = DEFAULT_TENANT_ATTRIBUTES
    session_attributes: tuple[str, ...] = DEFAULT_SESSION_ATTRIBUTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MappingOptions:
        """Options from ``PGTRAIL_OTLP_*_ATTRIBUTES`` (comma-separated; empty turns one off)."""
        env = os.environ if environ is None else environ
        return cls(
            user_attributes=_attribute_list(
                env.get(ENV_OTLP_USER_ATTRIBUTES), DEFAULT_USER_ATTRIBUTES
            ),
            tenant_attributes=_attribute_list(
                env.get(ENV_OTLP_TENANT_ATTRIBUTES), DEFAULT_TENANT_ATTRIBUTES
            ),
            session_attributes=_attribute_list(
                env.get(ENV_OTLP_SESSION_ATTRIBUTES), DEFAULT_SESSION_ATTRIBUTES
            ),
        )


# -- redaction of held spans ---------------------------------------------------------------

# Traceloop association properties and metadata keys the mapping reads identities from.
_IDENTITY_KEYS = ("user_id", "userId", "tenant_id", "tenantId", "session_id", "sessionId")
_IDENTITY_PREFIXES = ("", "traceloop.association.properties.", "langfuse.trace.metadata.")


def identity_attributes(options: MappingOptions) -> frozenset[str]:
    """The attributes the user, tenant and session ids are read from: identifiers.

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


def redact_span(span: OtlpSpan, redactor: Redactor, keep: frozenset[str]) -> OtlpSpan:
    """The span as it may be held in Redis while its trace assembles, redaction being on.

    Its name, status message, attributes, events and resource are redacted as the rows they
    become would be; the mapping then reads the redacted span, and the writer redacts its
    rows again (a placeholder stays what it is).

    Args:
        span: A decoded span.
        redactor: The redactor in use.
        keep: Attributes holding identifiers (see :func:`identity_attributes`), kept as
            they are: the writer hashes a user id from its raw value.
    """
    return replace(
        span,
        name=redactor.redact_text(span.name) if isinstance(span.name, str) else span.name,
        status_message=(
            redactor.redact_text(span.status_message)
            if isinstance(span.status_message, str)
            else span.status_message
        ),
        attributes=redactor.redact_json(span.attributes, keep),
        events=tuple(
            replace(event, attributes=redactor.redact_json(event.attributes, keep))
            for event in span.events
        ),
        resource=redactor.redact_json(span.resource, keep),
    )


# -- value conversions: each returns None for what it cannot read ----------------------------


def _text(value: Any, limit: int | None = None) -> str | None:
    if type(value) is str:  # the common case, first
        text: str = value.strip()
        if "\x00" in text:
            text = text.replace("\x00", "").strip()
        if not text:
            return None
        return text[:limit] if limit else text
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        value = str(value)
    return _text(value, limit) if type(value) is str else None


def _name(value: Any) -> str | None:
    return _text(value, _NAME_CHARS)


def _count(value: Any) -> int | None:
    """A token count: a non-negative integer that fits PostgreSQL's integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 10:
            return None
        value = int(stripped)
    if not isinstance(value, int) or not 0 <= value <= INT4_MAX:
        return None
    return value


def _amount(value: Any) -> float | None:
    """A cost or a duration: a finite, non-negative number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        if abs(value) > 10**15:
            return None
        value = float(value)
    if not isinstance(value, float) or not math.isfinite(value) or value < 0:
        return None
    return value


def _structured(value: Any) -> Any:
    """A JSON object or array sent as text, parsed (instrumentations often do that)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") or stripped == "null":
            try:
                return json.loads(stripped)
            except ValueError:
                return value
    return value


def _present(value: Any) -> Any:
    """A value worth keeping: None (and JSON ``null``) is nothing."""
    value = _structured(value)
    return None if value is None or value == "" else value


def _present_json(value: Any) -> Any:
    """Like :func:`_present`, for attributes that always hold JSON (a string is quoted)."""
    if isinstance(value, str) and value.strip()[:1] == '"':
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return _present(value)


def _mapping(value: Any) -> dict[str, Any] | None:
    value = _structured(value)
    return value if isinstance(value, dict) else None


def _sequence(value: Any) -> list[Any] | None:
    value = _structured(value)
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, list) else None


def _timestamp(nanos: Any) -> dt.datetime | None:
    """A span clock reading; None for one no real span can have (unset, 1970, year 3000)."""
    if isinstance(nanos, bool) or not isinstance(nanos, int):
        return None
    if not _EARLIEST_NANOS <= nanos < _LATEST_NANOS:
        return None
    # Integer arithmetic: a float of nanoseconds since 1970 loses the microseconds.
    return _EPOCH + dt.timedelta(microseconds=nanos // 1000)


def _duration_ms(span: OtlpSpan) -> int | None:
    start, end = span.start_unix_nano, span.end_unix_nano
    if _timestamp(start) is None or _timestamp(end) is None:
        return None
    millis = round((end - start) / 1e6)
    return millis if 0 <= millis <= INT4_MAX else None


class _Attrs:
    """A span's attributes, remembering which ones the mapping used."""

    def __init__(self, raw: Any) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.used: set[str] = set()

    def first(self, keys: Iterable[str], convert: Callable[[Any], T | None]) -> T | None:
        """The first of ``keys`` whose value ``convert`` can read; that key counts as used."""
        for key in keys:
            if key in self.raw:
                value = convert(self.raw[key])
                if value is not None:
                    self.used.add(key)
                    return value
        return None

    def text(self, *keys: str) -> str | None:
        return self.first(keys, _text)

    def name(self, *keys: str) -> str | None:
        return self.first(keys, _name)

    def count(self, *keys: str) -> int | None:
        return self.first(keys, _count)

    def amount(self, *keys: str) -> float | None:
        return self.first(keys, _amount)

    def value(self, *keys: str) -> Any:
        for key in keys:
            if key in self.raw:
                convert = _present_json if key in _ALWAYS_JSON else _present
                found = convert(self.raw[key])
                if found is not None:
                    self.used.add(key)
                    return found
        return None

    def mapping(self, *keys: str) -> dict[str, Any] | None:
        return self.first(keys, _mapping)

    def sequence(self, *keys: str) -> list[Any] | None:
        return self.first(keys, _sequence)

    def flag(self, key: str) -> bool | None:
        return self.first((key,), lambda v: v if isinstance(v, bool) else None)

    def drop(self, *keys: str) -> None:
        """Marks attributes as mapped (or as noise) without reading them."""
        self.used.update(k for k in keys if k in self.raw)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Attributes under ``prefix``, keyed by the rest of their name."""
        found = {k[len(prefix) :]: v for k, v in self.raw.items() if k.startswith(prefix)}
        self.used.update(prefix + k for k in found)
        return {k: v for k, v in found.items() if k}

    def unflatten(self, prefix: str) -> list[Any] | None:
        """Rebuilds a list flattened into ``prefix.N.path`` attributes."""
        tree: dict[str, Any] = {}
        taken: list[str] = []
        for key, value in self.raw.items():
            if not key.startswith(prefix):
                continue
            parts = key[len(prefix) :].split(".")
            if not _is_index(parts[0]) or not all(parts):
                continue
            node: Any = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict) or parts[-1] in node:
                continue  # the same path flattened twice, or as a value and an object
            node[parts[-1]] = value
            taken.append(key)
        if not taken:
            return None
        self.used.update(taken)
        rebuilt = _listify(tree)
        return rebuilt if isinstance(rebuilt, list) else None

    def rest(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in self.used}


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit() and len(part) < 10


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(_is_index(k) for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def _prune(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


# -- what kind of span is this ---------------------------------------------------------------


@dataclass
class _Kind:
    role: str | None  # llm, tool, agent, create_agent, workflow, handoff, retrieval, guardrail
    family: str  # genai, openinference, traceloop, logfire
    operation: str | None = None


def _logfire_template(span: OtlpSpan, attrs: _Attrs) -> str | None:
    template = attrs.raw.get("logfire.msg_template")
    if isinstance(template, str):
        return template
    name = span.name if isinstance(span.name, str) else ""
    return name if "{" in name else None


def _classify(span: OtlpSpan, attrs: _Attrs) -> _Kind:
    template = _logfire_template(span, attrs)
    operation = _text(attrs.raw.get("gen_ai.operation.name"))
    op = operation.lower() if operation else None
    if template is not None:
        role = _LOGFIRE_ROLES.get(template)
        if role is None and template.startswith(_LOGFIRE_RESPONSES):
            role = "llm"
        if role is not None:
            return _Kind(role, "logfire", op)
    kind = _classify_by_convention(attrs, op)
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
_TRACELOOP_ROLES = {"workflow": "workflow", "agent": "agent", "tool": "tool"}
_LANGFUSE_ROLES = {
    "generation": "llm",
    "embedding": "llm",
    "agent": "agent",
    "tool": "tool",
    "retriever": "retrieval",
    "guardrail": "guardrail",
}


def _classify_by_convention(attrs: _Attrs, op: str | None) -> _Kind:
    if op is not None and op in _GENAI_ROLES:
        return _Kind(_GENAI_ROLES[op], "genai", op)
    openinference = _text(attrs.raw.get("openinference.span.kind"))
    if openinference is not None:
        role = _OPENINFERENCE_ROLES.get(openinference.upper())
        return _Kind(role, "openinference", openinference.lower())
    traceloop = _text(attrs.raw.get("traceloop.span.kind"))
    if traceloop is not None:
        return _Kind(_TRACELOOP_ROLES.get(traceloop.lower()), "traceloop", traceloop.lower())
    request_type = _text(attrs.raw.get("llm.request.type"))
    if request_type is not None and request_type.lower() in _TRACELOOP_LLM_TYPES:
        return _Kind("llm", "traceloop", request_type.lower())
    langfuse = _text(attrs.raw.get("langfuse.observation.type"))
    if langfuse is not None and langfuse.lower() in _LANGFUSE_ROLES:
        return _Kind(_LANGFUSE_ROLES[langfuse.lower()], "langfuse", langfuse.lower())
    if op is not None:
        return _Kind(None, "genai", op)
    # A span without a known operation that still names a model and counts tokens.
    if any(k in attrs.raw for k in ("gen_ai.request.model", "gen_ai.response.model")) and any(
        k.startswith(("gen_ai.usage.", "llm.usage.")) for k in attrs.raw
    ):
        return _Kind("llm", "genai")
    return _Kind(None, "genai")


# -- the mapping -----------------------------------------------------------------------------


@dataclass
class _Draft:
    """A span's mapping while it is being built."""

    span: OtlpSpan
    attrs: _Attrs
    kind: _Kind
    created_at: dt.datetime
    duration_ms: int | None
    status: str
    error: str | None
    process_name: str
    records: list[tuple[RecordTable, dict[str, Any], dt.datetime]] = field(default_factory=list)
    main: dict[str, Any] | None = None  # the ``data`` that receives the unmapped attributes
    agent: str | None = None
    workflow: str | None = None
    session_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        table: RecordTable,
        args: dict[str, Any],
        *,
        main: bool = True,
        at: dt.datetime | None = None,
    ) -> None:
        data = args.setdefault("data", {})
        if main and self.main is None:
            self.main = data
        self.records.append((table, args, at or self.created_at))


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
            process_name=_name(span.name) or "span",
            status="error" if span.status_code == STATUS_ERROR else "ok",
            error=_text(span.status_message, _ERROR_CHARS),
        )


def _map(span: OtlpSpan, options: MappingOptions) -> MappedSpan:
    attrs = _Attrs(span.attributes)
    kind = _classify(span, attrs)
    attrs.drop(*_CLASSIFIERS)
    status, error = _outcome(span, attrs, kind)
    created_at = (
        _timestamp(span.start_unix_nano)
        or _timestamp(span.end_unix_nano)
        or dt.datetime.now(dt.UTC)
    )
    draft = _Draft(
        span=span,
        attrs=attrs,
        kind=kind,
        created_at=created_at,
        duration_ms=_duration_ms(span),
        status=status,
        error=error,
        process_name=_process_name(span, attrs, kind),
    )
    handler = _HANDLERS.get(kind.role or "")
    if handler is not None:
        handler(draft)
    draft.workflow = draft.workflow or attrs.name("langfuse.trace.name")
    _context(draft)
    _evaluations(draft)
    if not span.parent_span_id:
        _journey(draft)
    user_id = _identity(attrs, span.resource, options.user_attributes) or _association(
        draft, "user_id", "userId"
    )
    tenant_id = _identity(attrs, span.resource, options.tenant_attributes) or _association(
        draft, "tenant_id", "tenantId"
    )
    session_id = (
        _identity(attrs, span.resource, options.session_attributes)
        or _association(draft, "session_id", "sessionId", "thread_id")
        or draft.session_id
    )
    if draft.main is not None:
        rest = attrs.rest()
        if rest:
            draft.main["attributes"] = rest
        events = _other_events(draft)
        if events:
            draft.main["events"] = events
    return MappedSpan(
        process_name=draft.process_name,
        status="error" if status == "error" else "ok",
        error=error,
        records=tuple(MappedRecord(t, a, at) for t, a, at in draft.records),
        user_id=user_id,
        tenant_id=tenant_id,
        session_id=session_id,
        workflow=draft.workflow,
        context=draft.context,
        agent=draft.agent,
    )


def _identity(attrs: _Attrs, resource: Any, keys: tuple[str, ...]) -> str | None:
    found = attrs.name(*keys)
    if found is None and isinstance(resource, Mapping) and resource:
        for key in keys:
            if key in resource:
                found = _name(resource[key])
                if found is not None:
                    break
    return found


def _association(draft: _Draft, *keys: str) -> str | None:
    """Identity carried among Traceloop's association properties (kept in the context too)."""
    if not draft.context:
        return None
    for key in keys:
        found = _name(draft.context.get(key))
        if found is not None:
            return found
    return None


# -- status, names --------------------------------------------------------------------------


def _exception_text(span: OtlpSpan) -> str | None:
    for event in _events(span):
        if event.name == "exception" and isinstance(event.attributes, Mapping):
            kind = _text(event.attributes.get("exception.type"))
            message = _text(event.attributes.get("exception.message"))
            if kind or message:
                return ": ".join(p for p in (kind, message) if p)
    return None


def _outcome(span: OtlpSpan, attrs: _Attrs, kind: _Kind) -> tuple[str, str | None]:
    """``ok`` or ``error``, and the error text."""
    error_type = attrs.text("error.type")
    logfire_error = attrs.mapping("error") if kind.family == "logfire" else None
    failed = span.status_code == STATUS_ERROR or error_type is not None or bool(logfire_error)
    if not failed:
        return "ok", None
    parts: list[str] = []
    if error_type:
        parts.append(error_type)
    message = _text(span.status_message)
    if message and message != error_type:
        parts.append(message)
    if logfire_error:
        details = logfire_error.get("data")
        detail = _text(details.get("error")) if isinstance(details, dict) else None
        for text in (_text(logfire_error.get("message")), detail):
            if text and text not in parts:
                parts.append(text)
    if not parts:
        exception = _exception_text(span)
        if exception:
            parts.append(exception)
    text = ": ".join(parts) or "error"
    return "error", text[:_ERROR_CHARS]


def _process_name(span: OtlpSpan, attrs: _Attrs, kind: _Kind) -> str:
    if kind.family == "logfire":
        attrs.drop(*_LOGFIRE_NOISE)
        shown = _name(attrs.raw.get("logfire.msg"))
        if shown:
            return shown
    name = _name(span.name)
    if name is not None and kind.operation and name.lower() == kind.operation:
        # A bare operation name ("invoke_agent"): say which agent, tool or model.
        entity = _name(
            attrs.raw.get("gen_ai.agent.name")
            or attrs.raw.get("gen_ai.tool.name")
            or attrs.raw.get("gen_ai.request.model")
        )
        if entity:
            name = f"{name} {entity}"[:_NAME_CHARS]
    return name or kind.operation or "span"


# -- model calls ------------------------------------------------------------------------------


def _llm(draft: _Draft) -> None:
    attrs, family = draft.attrs, draft.kind.family
    logfire = family == "logfire"
    # Logfire keeps the provider's own response object (Responses API, Chat Completions).
    response = attrs.mapping("response", "response_data") if logfire else None
    usage = (
        attrs.mapping("usage") if logfire else attrs.mapping("langfuse.observation.usage_details")
    )
    response_usage = _dict(response, "usage")
    model = attrs.name(
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.response.model",
        "llm.model_name",
        "embedding.model_name",
        "llm.request.model",
        "langfuse.observation.model.name",
    ) or _name(_dict_get(response, "model"))
    provider = attrs.name("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    input_tokens = attrs.count(
        "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    output_tokens = attrs.count(
        "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"
    )
    if input_tokens is None:
        input_tokens = _usage(usage, response_usage, "input_tokens", "prompt_tokens", "input")
    if output_tokens is None:
        output_tokens = _usage(
            usage, response_usage, "output_tokens", "completion_tokens", "output"
        )
    cached = attrs.count(
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    )
    if cached is None:
        details = _dict(response_usage, "input_tokens_details") or _dict(
            response_usage, "prompt_tokens_details"
        )
        cached = _count(_dict_get(details, "cached_tokens"))
    reasoning = attrs.count(
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    )
    if reasoning is None:
        details = _dict(response_usage, "output_tokens_details") or _dict(
            response_usage, "completion_tokens_details"
        )
        reasoning = _count(_dict_get(details, "reasoning_tokens"))
    cache_creation = attrs.count(
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    )
    total_tokens = attrs.count(
        "gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"
    )
    total_cost = attrs.amount("gen_ai.usage.cost", "llm.cost.total")
    if total_cost is None:
        costs = attrs.mapping("langfuse.observation.cost_details")
        total_cost = _amount(_dict_get(costs, "total"))
    input_cost = attrs.amount("llm.cost.prompt")
    output_cost = attrs.amount("llm.cost.completion")
    first_chunk_s = attrs.amount("gen_ai.response.time_to_first_chunk")
    prompt_version = attrs.name(
        "llm.prompt_template.version",
        "traceloop.prompt.version",
        "langfuse.observation.prompt.version",
        "gen_ai.prompt.version",
    )
    payload = _llm_payload(attrs, family, response, _message_events(draft.span))
    prompt = _system_prompt(payload, response)
    error = draft.error if draft.status == "error" else None
    args: dict[str, Any] = {
        "event_type": _llm_event_type(draft) if error else "llm_valid_execution",
        "agent_type": attrs.name("gen_ai.agent.name"),
        "model": model,
        "provider": provider,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached,
        "reasoning_tokens": reasoning,
        "processing_time_ms": draft.duration_ms,
        "time_to_first_token_ms": None
        if first_chunk_s is None
        else _count(round(first_chunk_s * 1000)),
        "input_cost": input_cost,
        "output_cost": output_cost,
        "total_cost": total_cost,
        "prompt": prompt,
        "prompt_version": prompt_version,
        "error": error,
        "payload": payload or None,
    }
    data = _prune(
        {
            "operation": draft.kind.operation,
            "request_model": attrs.name("gen_ai.request.model")
            if "gen_ai.response.model" in attrs.used
            else None,
            "response_id": attrs.name("gen_ai.response.id") or _name(_dict_get(response, "id")),
            "finish_reasons": attrs.value(
                "gen_ai.response.finish_reasons", "llm.response.finish_reason"
            ),
            "total_tokens": total_tokens,
            "cache_creation_input_tokens": cache_creation,
            "prompt_name": attrs.name(
                "gen_ai.prompt.name", "traceloop.prompt.key", "langfuse.observation.prompt.name"
            ),
        }
    )
    if logfire:
        data.update(_prune({"response_id": attrs.name("response_id")}))
    args = {k: v for k, v in args.items() if v is not None}
    args["data"] = data
    draft.add(LLM, args)


def _usage(first: Any, second: Any, *keys: str) -> int | None:
    """A token count from a usage object, under whichever name its provider uses."""
    for usage in (first, second):
        for key in keys:
            found = _count(_dict_get(usage, key))
            if found is not None:
                return found
    return None


def _dict(value: Any, key: str) -> dict[str, Any] | None:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else None


def _dict_get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _llm_event_type(draft: _Draft) -> str:
    text = (draft.error or "").lower().replace(" ", "")
    spaced = (draft.error or "").lower()
    if any(m.replace(" ", "") in text for m in _TIMEOUT_MARKERS):
        return "llm_timeout"
    if any(m in spaced or m.replace(" ", "") in text for m in _RATE_LIMIT_MARKERS):
        return "llm_rate_limited"
    if any(m in text for m in _INVALID_OUTPUT_MARKERS):
        return "llm_invalid_output"
    return "llm_error"


def _message_events(span: OtlpSpan) -> list[dict[str, Any]]:
    """The older conventions' content events (``gen_ai.user.message``, ``gen_ai.choice``...)."""
    return [
        {"event.name": e.name, **(e.attributes if isinstance(e.attributes, Mapping) else {})}
        for e in _events(span)
        if _is_message_event(e)
    ]


def _is_message_event(event: SpanEvent) -> bool:
    name = event.name if isinstance(event.name, str) else ""
    return name.startswith("gen_ai.") and name != "gen_ai.evaluation.result"


def _llm_payload(
    attrs: _Attrs,
    family: str,
    response: dict[str, Any] | None,
    message_events: list[dict[str, Any]],
) -> dict[str, Any]:
    """The request and response bodies, for the ``payload`` column."""
    logfire = family == "logfire"
    system = attrs.value("gen_ai.system_instructions")
    inputs = (
        attrs.sequence("gen_ai.input.messages")
        or _openinference_messages(attrs.unflatten("llm.input_messages."))
        or attrs.unflatten("gen_ai.prompt.")
        or (attrs.sequence("input", "raw_input") if logfire else None)
    )
    outputs = (
        attrs.sequence("gen_ai.output.messages")
        or _openinference_messages(attrs.unflatten("llm.output_messages."))
        or attrs.unflatten("gen_ai.completion.")
        or (attrs.value("output") if logfire else None)
    )
    parameters: dict[str, Any] = {}
    for key in _GENAI_PARAMETERS:
        value = attrs.value(key)
        if value is not None:
            parameters[key.rsplit(".", 1)[-1]] = value
    invocation = attrs.mapping(
        "llm.invocation_parameters",
        "embedding.invocation_parameters",
        "langfuse.observation.model.parameters",
    )
    if invocation:
        parameters.update(invocation)
    if logfire:
        for key in ("model_config", "model_settings"):
            settings = attrs.mapping(key)
            if settings:
                parameters.update(settings)
    payload = {
        "system_instructions": system,
        "input_messages": inputs,
        "output_messages": outputs,
        "input": attrs.value("input.value", "traceloop.entity.input", "langfuse.observation.input"),
        "output": attrs.value(
            "output.value", "traceloop.entity.output", "langfuse.observation.output"
        ),
        "parameters": parameters,
        "tool_definitions": attrs.value("gen_ai.tool.definitions")
        or attrs.unflatten("llm.request.functions.")
        or attrs.unflatten("llm.tools."),
    }
    if logfire:
        payload["events"] = attrs.sequence("events")
        payload["request"] = attrs.mapping("request_data")
        payload["response"] = response
    if message_events:
        payload["events"] = [*(payload.get("events") or []), *message_events]
    return _prune(payload)


def _openinference_messages(messages: list[Any] | None) -> list[Any] | None:
    """``[{"message": {...}}]`` → ``[{...}]``, as OpenInference flattens them."""
    if not messages:
        return None
    return [m["message"] if isinstance(m, dict) and "message" in m else m for m in messages]


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                inner = part.get("message_content")
                text = (
                    part.get("content")
                    if isinstance(part.get("content"), str)
                    else part.get("text")
                    if isinstance(part.get("text"), str)
                    else inner.get("text")
                    if isinstance(inner, dict)
                    else None
                )
                if isinstance(text, str):
                    texts.append(text)
        return "\n".join(texts) or None
    return None


def _system_prompt(payload: dict[str, Any], response: dict[str, Any] | None) -> str | None:
    """The system prompt: stored once in ``pgtrail_prompt``, referenced by hash."""
    explicit = _content_text(payload.get("system_instructions"))
    if explicit:
        return explicit
    for messages in (payload.get("input_messages"), payload.get("events")):
        if not isinstance(messages, list):
            continue
        texts = []
        for message in messages:
            if isinstance(message, dict) and (
                message.get("role") in _SYSTEM_ROLES
                or message.get("event.name") == "gen_ai.system.message"
            ):
                text = _content_text(message.get("content")) or _content_text(message.get("parts"))
                if text is None and isinstance(message.get("contents"), list):
                    text = _content_text(message["contents"])
                if text:
                    texts.append(text)
        if texts:
            return "\n".join(texts)
    instructions = _dict_get(response, "instructions")
    return _content_text(instructions)


# -- tools, agents, workflows, handoffs, retrievals, guardrails ---------------------------


def _typed(model: type[AgentEvent], values: dict[str, Any]) -> dict[str, Any]:
    """``data`` in the shape of a typed agent event (its field names, validated)."""
    clean = _prune(values)
    try:
        event = model.model_validate(clean)
    except pydantic.ValidationError:
        return clean
    return event.model_dump(mode="python", by_alias=True, exclude_none=True)


def _agent_record(
    draft: _Draft, event_type: str, agent_type: str | None, data: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"agent_type": agent_type, "event_type": event_type, "data": data}
    if draft.duration_ms is not None:
        args["duration_ms"] = draft.duration_ms
    draft.add(AGENT, args)


def _tool(draft: _Draft) -> None:
    attrs = draft.attrs
    name = _name(draft.span.name) or ""
    if (
        draft.kind.family == "openinference"
        and "tool.name" not in attrs.raw
        and name.lower().startswith("handoff to ")
    ):
        # OpenInference's Agents SDK instrumentation: a TOOL span "handoff to {agent}".
        target = _name(name[len("handoff to ") :]) or "unknown"
        handoff = {"from_agent": _UNKNOWN_AGENT, "to_agent": target}
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
    if logfire and _present(attrs.raw.get("mcp_data")) is None:
        attrs.drop("mcp_data")
    values: dict[str, Any] = {
        "tool": tool,
        "call_id": attrs.name("gen_ai.tool.call.id", "tool_call.id", "tool.id"),
        "args": arguments
        if isinstance(arguments, dict) or arguments is None
        else {"value": arguments},
        "result": result,
        "latency_ms": draft.duration_ms,
        "error": draft.error if draft.status == "error" else None,
        "tool_type": attrs.name("gen_ai.tool.type"),
        "description": attrs.text("gen_ai.tool.description", "tool.description"),
        "parameters": attrs.value("tool.parameters"),
    }
    agent = attrs.name("gen_ai.agent.name")
    _agent_record(draft, "tool_call", agent, _typed(ToolCall, values))
    if isinstance(tool, str) and tool.startswith("transfer_to_") and len(tool) > 12:
        # How the OpenAI Agents SDK hands off: a tool named after the target agent.
        source = agent or _UNKNOWN_AGENT
        handoff = {"from_agent": source, "to_agent": tool[len("transfer_to_") :]}
        args: dict[str, Any] = {
            "agent_type": agent,
            "event_type": "handoff",
            "data": _typed(Handoff, handoff),
        }
        draft.add(AGENT, args, main=False)


def _agent_name_from_span(draft: _Draft, prefix: str) -> str | None:
    name = _name(draft.span.name)
    if name and name.lower().startswith(prefix + " "):
        return _name(name[len(prefix) + 1 :])
    return None


def _agent(draft: _Draft) -> None:
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
        "error": draft.error if draft.status == "error" else None,
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
    _agent_record(draft, "agent_created" if create else "agent_run", name, _prune(values))


def _workflow(draft: _Draft) -> None:
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
        "error": draft.error if draft.status == "error" else None,
        "input": attrs.value("gen_ai.input.messages", "input.value", "traceloop.entity.input"),
        "output": attrs.value("gen_ai.output.messages", "output.value", "traceloop.entity.output"),
    }
    if family == "logfire":
        values["trace_id"] = attrs.name("agent_trace_id")
        draft.session_id = attrs.name("group_id")
        metadata = attrs.mapping("metadata")
        if metadata:
            draft.context.update(metadata)
        attrs.drop(*(k for k in ("group_id", "metadata") if _present(attrs.raw.get(k)) is None))
    draft.workflow = name
    _agent_record(draft, "workflow_run", None, _prune(values))


def _chain(draft: _Draft) -> None:
    """An OpenInference CHAIN: the root one names the workflow."""
    if draft.span.parent_span_id is None:
        draft.workflow = _name(draft.span.name)


def _handoff(draft: _Draft) -> None:
    attrs, family = draft.attrs, draft.kind.family
    logfire = family == "logfire"
    source = attrs.name("gen_ai.handoff.from_agent", "gen_ai.agent.name") or (
        attrs.name("from_agent") if logfire else None
    )
    target = attrs.name("gen_ai.handoff.to_agent") or (attrs.name("to_agent") if logfire else None)
    values = {
        "from_agent": source or _UNKNOWN_AGENT,
        "to_agent": target or _UNKNOWN_AGENT,
        "reason": attrs.text("gen_ai.handoff.reason"),
    }
    _agent_record(draft, "handoff", source, _typed(Handoff, values))


def _retrieval(draft: _Draft) -> None:
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
        doc_id = _name(document.get("id"))
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
        "error": draft.error if draft.status == "error" else None,
    }
    data = _typed(Retrieval, values)
    data.setdefault("doc_count", len(documents or []))
    _agent_record(draft, "retrieval", attrs.name("gen_ai.agent.name"), data)


def _guardrail(draft: _Draft) -> None:
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
    _agent_record(draft, "guardrail", attrs.name("gen_ai.agent.name"), _typed(Guardrail, values))


_HANDLERS: dict[str, Callable[[_Draft], None]] = {
    "llm": _llm,
    "tool": _tool,
    "agent": _agent,
    "create_agent": _agent,
    "workflow": _workflow,
    "chain": _chain,
    "handoff": _handoff,
    "retrieval": _retrieval,
    "guardrail": _guardrail,
}


# -- context, events -----------------------------------------------------------------------


def _context(draft: _Draft) -> None:
    """Business context for the execution row: association properties, metadata, tags."""
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
    environment = _name(
        resource.get("deployment.environment.name") or resource.get("deployment.environment")
    )
    if environment:
        context.setdefault("environment", environment)
    service = _name(resource.get("service.name"))
    if service:
        context.setdefault("service", service)


def _journey(draft: _Draft) -> None:
    """A root span is the user's request: when it arrived, and how it ended."""
    name = draft.workflow or draft.process_name
    draft.add(
        JOURNEY,
        {"event_type": "request_received", "data": {"workflow": name}},
        main=False,
    )
    ended = _timestamp(draft.span.end_unix_nano)
    if ended is None or ended < draft.created_at:
        return
    outcome = "request_failed" if draft.status == "error" else "request_completed"
    data = _prune(
        {
            "workflow": name,
            "duration_ms": draft.duration_ms,
            "error": draft.error if draft.status == "error" else None,
        }
    )
    draft.add(JOURNEY, {"event_type": outcome, "data": data}, main=False, at=ended)


def _events(span: OtlpSpan) -> tuple[SpanEvent, ...]:
    events = span.events if isinstance(span.events, tuple | list) else ()
    return tuple(e for e in events if isinstance(e, SpanEvent))


def _evaluations(draft: _Draft) -> None:
    """``gen_ai.evaluation.result`` events: one agent ``evaluation`` row each."""
    for event in _events(draft.span):
        if event.name != "gen_ai.evaluation.result":
            continue
        attrs = _Attrs(event.attributes)
        score = attrs.first(("gen_ai.evaluation.score.value",), _number)
        data = _prune(
            {
                "name": attrs.name("gen_ai.evaluation.name"),
                "score": score,
                "label": attrs.name("gen_ai.evaluation.score.label"),
                "explanation": attrs.text("gen_ai.evaluation.explanation"),
                "response_id": attrs.name("gen_ai.response.id"),
                "attributes": attrs.rest(),
            }
        )
        args: dict[str, Any] = {
            "agent_type": draft.agent or _name(draft.attrs.raw.get("gen_ai.agent.name")),
            "event_type": "evaluation",
            "data": data,
        }
        at = _timestamp(event.time_unix_nano) or draft.created_at
        draft.add(AGENT, args, main=False, at=at)


def _number(value: Any) -> float | None:
    """A finite number of either sign (an evaluation score)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _other_events(draft: _Draft) -> list[dict[str, Any]]:
    """Span events kept on the main record (exceptions, ...) and not mapped elsewhere."""
    kept = []
    for event in _events(draft.span)[:_MAX_EVENTS]:
        if event.name == "gen_ai.evaluation.result":
            continue
        if draft.kind.role == "llm" and _is_message_event(event):
            continue  # in the payload
        entry: dict[str, Any] = {"name": event.name}
        at = _timestamp(event.time_unix_nano)
        if at is not None:
            entry["time"] = at.isoformat()
        if isinstance(event.attributes, Mapping) and event.attributes:
            entry["attributes"] = dict(event.attributes)
        kept.append(entry)
    return kept


# -- agents across a trace ----------------------------------------------------------------


def inherit_agents(
    spans: Iterable[OtlpSpan], mapped: Mapping[str, MappedSpan]
) -> dict[str, MappedSpan]:
    """Gives each record without an ``agent_type`` the agent of its nearest agent span.

    Model calls and tool calls rarely name their agent; the agent-run span above them does.

    Args:
        spans: The spans of one trace.
        mapped: Their mappings, by span id.

    Returns:
        The mappings, with records filled in where an ancestor span ran an agent.
    """
    parents = {s.span_id: s.parent_span_id for s in spans}
    result = dict(mapped)
    for span_id, item in mapped.items():
        if not item.records or not any(_needs_agent(r) for r in item.records):
            continue
        agent, seen, current = item.agent, {span_id}, parents.get(span_id)
        while agent is None and current is not None and current not in seen:
            seen.add(current)
            ancestor = mapped.get(current)
            agent = ancestor.agent if ancestor is not None else None
            current = parents.get(current)
        if agent is None:
            continue
        records = tuple(_with_agent(r, agent) if _needs_agent(r) else r for r in item.records)
        result[span_id] = replace(item, records=records)
    return result


def _needs_agent(record: MappedRecord) -> bool:
    if record.table == JOURNEY:
        return False
    data = record.args.get("data")
    unknown_source = isinstance(data, dict) and data.get("from_agent") == _UNKNOWN_AGENT
    return not record.args.get("agent_type") or unknown_source


def _with_agent(record: MappedRecord, agent: str) -> MappedRecord:
    args = dict(record.args)
    args["agent_type"] = args.get("agent_type") or agent
    data = args.get("data")
    if isinstance(data, dict) and data.get("from_agent") == _UNKNOWN_AGENT:
        args["data"] = {**data, "from_agent": agent}
    return replace(record, args=args)
