"""Mapping a model-call span to its ``logs_llm_execution`` record.

The record names the model and provider, counts input, output, cached and reasoning
tokens, carries the costs the span reports, the time to the first chunk (an attribute, or
the first streamed-chunk event OpenInference and OpenLLMetry add to the span), the system
prompt (stored once, referenced by hash) and, in ``payload``, the request and response
bodies. Each value is looked for under the current GenAI names first, then OpenInference,
OpenLLMetry, Langfuse and Logfire's, and in the provider's own usage object. A failed
call's ``event_type`` says how it failed: timeout, rate limit, invalid output or error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgtrail.otlp.attributes import (
    Attrs,
    as_amount,
    as_count,
    as_mapping,
    as_name,
    nanos_to_datetime,
    prune,
    span_events,
)
from pgtrail.otlp.classify import is_message_event
from pgtrail.otlp.draft import Draft
from pgtrail.otlp.spans import OtlpSpan
from pgtrail.tables import LLM

__all__ = ["STREAM_EVENTS", "map_model_call"]

STREAM_EVENTS = frozenset({"First Token Stream Event", "gen_ai.content.completion.chunk"})
"""Events that mark a streamed response's chunks, not messages: OpenInference adds
``First Token Stream Event`` when the first chunk arrives, OpenLLMetry one
``gen_ai.content.completion.chunk`` per chunk. The first of them gives the time to first token."""

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


def map_model_call(draft: Draft) -> None:
    """Adds the span's ``logs_llm_execution`` record, its main record.

    Args:
        draft: A span classified as a model call.
    """
    attrs = draft.attrs
    logfire = draft.kind.family == "logfire"
    # Logfire keeps the provider's own response object (Responses API, Chat Completions).
    response = attrs.mapping("response", "response_data") if logfire else None
    usage = (
        attrs.mapping("usage") if logfire else attrs.mapping("langfuse.observation.usage_details")
    )
    tokens = _tokens(attrs, usage, _dict(response, "usage"))
    costs = _costs(attrs)
    first_chunk_s = attrs.amount("gen_ai.response.time_to_first_chunk")
    first_token_ms = (
        _first_chunk_event_ms(draft.span)
        if first_chunk_s is None
        else as_count(round(first_chunk_s * 1000))
    )
    payload = _llm_payload(attrs, draft.kind.family, response, _message_events(draft.span))
    error = draft.failure
    args: dict[str, Any] = {
        "event_type": _llm_event_type(draft) if error else "llm_valid_execution",
        "agent_type": draft.named_agent(),
        "model": _model(attrs, response),
        "provider": attrs.name(
            "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"
        ),
        "input_tokens": tokens.input,
        "output_tokens": tokens.output,
        "cached_input_tokens": tokens.cached,
        "reasoning_tokens": tokens.reasoning,
        "processing_time_ms": draft.duration_ms,
        "time_to_first_token_ms": first_token_ms,
        "input_cost": costs.input,
        "output_cost": costs.output,
        "total_cost": costs.total,
        "prompt": _system_prompt(payload, response),
        "prompt_version": attrs.name(
            "llm.prompt_template.version",
            "traceloop.prompt.version",
            "langfuse.observation.prompt.version",
            "gen_ai.prompt.version",
        ),
        "error": error,
        "payload": payload or None,
    }
    args = {k: v for k, v in args.items() if v is not None}
    args["data"] = _llm_data(draft, response, tokens)  # after the model: see request_model
    draft.add(LLM, args)


@dataclass(frozen=True)
class _Tokens:
    input: int | None
    output: int | None
    cached: int | None
    reasoning: int | None
    cache_creation: int | None
    total: int | None


@dataclass(frozen=True)
class _Costs:
    input: float | None
    output: float | None
    total: float | None


def _model(attrs: Attrs, response: dict[str, Any] | None) -> str | None:
    return (
        attrs.name(
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.response.model",
            "llm.model_name",
            "embedding.model_name",
            "llm.request.model",
            "langfuse.observation.model.name",
        )
        or as_name(_dict_get(response, "model"))
        or _requested_model(attrs)
    )


def _requested_model(attrs: Attrs) -> str | None:
    """The model the request asked for, in OpenInference's invocation parameters.

    OpenInference sets ``llm.model_name`` from the response, so a call that failed (a
    rate limit, a timeout) names its model only there.
    """
    parameters = as_mapping(attrs.raw.get("llm.invocation_parameters")) or as_mapping(
        attrs.raw.get("embedding.invocation_parameters")
    )
    if parameters is None:
        return None
    return as_name(parameters.get("model")) or as_name(parameters.get("model_name"))


def _first_chunk_event_ms(span: OtlpSpan) -> int | None:
    """Milliseconds from the span's start to its first streamed-chunk event."""
    times = [e.time_unix_nano for e in span_events(span) if e.name in STREAM_EVENTS]
    first = min((t for t in times if nanos_to_datetime(t) is not None), default=None)
    if first is None or nanos_to_datetime(span.start_unix_nano) is None:
        return None
    if first < span.start_unix_nano:
        return None
    return as_count(round((first - span.start_unix_nano) / 1e6))


def _tokens(attrs: Attrs, usage: Any, response_usage: Any) -> _Tokens:
    """Token counts: the span's attributes first, then the usage objects it carries."""
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
        cached = as_count(_dict_get(details, "cached_tokens"))
    reasoning = attrs.count(
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    )
    if reasoning is None:
        details = _dict(response_usage, "output_tokens_details") or _dict(
            response_usage, "completion_tokens_details"
        )
        reasoning = as_count(_dict_get(details, "reasoning_tokens"))
    return _Tokens(
        input=input_tokens,
        output=output_tokens,
        cached=cached,
        reasoning=reasoning,
        cache_creation=attrs.count(
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
        total=attrs.count(
            "gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"
        ),
    )


def _costs(attrs: Attrs) -> _Costs:
    total = attrs.amount("gen_ai.usage.cost", "llm.cost.total")
    if total is None:
        costs = attrs.mapping("langfuse.observation.cost_details")
        total = as_amount(_dict_get(costs, "total"))
    return _Costs(
        input=attrs.amount("llm.cost.prompt"),
        output=attrs.amount("llm.cost.completion"),
        total=total,
    )


def _llm_data(draft: Draft, response: dict[str, Any] | None, tokens: _Tokens) -> dict[str, Any]:
    """The record's ``data``: what its columns do not hold."""
    attrs = draft.attrs
    data = prune(
        {
            "operation": draft.kind.operation,
            # The model column holds the response's model then; keep the one asked for.
            "request_model": attrs.name("gen_ai.request.model")
            if "gen_ai.response.model" in attrs.used
            else None,
            "response_id": attrs.name("gen_ai.response.id") or as_name(_dict_get(response, "id")),
            "finish_reasons": attrs.value(
                "gen_ai.response.finish_reasons", "llm.response.finish_reason"
            ),
            "total_tokens": tokens.total,
            "cache_creation_input_tokens": tokens.cache_creation,
            "prompt_name": attrs.name(
                "gen_ai.prompt.name", "traceloop.prompt.key", "langfuse.observation.prompt.name"
            ),
        }
    )
    if draft.kind.family == "logfire":
        data.update(prune({"response_id": attrs.name("response_id")}))
    return data


def _usage(first: Any, second: Any, *keys: str) -> int | None:
    """A token count from a usage object, under whichever name its provider uses."""
    for usage in (first, second):
        for key in keys:
            found = as_count(_dict_get(usage, key))
            if found is not None:
                return found
    return None


def _dict(value: Any, key: str) -> dict[str, Any] | None:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else None


def _dict_get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _llm_event_type(draft: Draft) -> str:
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
        for e in span_events(span)
        if is_message_event(e)
    ]


def _llm_payload(
    attrs: Attrs,
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
    return prune(payload)


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
