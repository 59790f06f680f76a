"""Mapping OpenTelemetry spans onto pgtrail's tables, one convention family at a time.

The attribute sets are those the instrumentations emit: the OpenTelemetry GenAI semantic
conventions (current and older names), OpenInference, OpenLLMetry / Traceloop and Logfire's
``instrument_openai_agents()``. The last tests write mapped records through a real ``Trail``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

import pgtrail
from dbrows import rows
from otlp_builders import PARENT, T0, TRACE, otel_span
from pgtrail import Trail
from pgtrail.config import (
    ENV_OTLP_SESSION_ATTRIBUTES,
    ENV_OTLP_TENANT_ATTRIBUTES,
    ENV_OTLP_USER_ATTRIBUTES,
    ENV_SCHEMA,
    Settings,
)
from pgtrail.otlp.mapping import MappingOptions, inherit_agents, map_span
from pgtrail.otlp.spans import STATUS_ERROR, MappedSpan, OtlpSpan, SpanEvent

LLM, AGENT, JOURNEY = "logs_llm_execution", "logs_agent_execution", "logs_user_journey"
SYSTEM_PROMPT = "You are a travel assistant. Answer briefly."


def assert_subset(actual: Any, expected: Any, where: str = "") -> None:
    """Every key of ``expected`` is in ``actual`` with that value (dicts and lists deeply)."""
    if isinstance(expected, list) and isinstance(actual, list):
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (got, wanted) in enumerate(zip(actual, expected, strict=True)):
            assert_subset(got, wanted, f"{where}[{index}]")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing from {sorted(actual)}"
            assert_subset(actual[key], value, f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@dataclass
class Case:
    id: str
    span: OtlpSpan
    process_name: str
    records: list[tuple[str, dict[str, Any]]]
    expect: dict[str, Any] = field(default_factory=dict)  # MappedSpan fields


def check(case: Case) -> MappedSpan:
    mapped = map_span(case.span, MappingOptions())
    assert mapped.process_name == case.process_name
    assert [r.table for r in mapped.records] == [table for table, _ in case.records]
    for record, (_, expected) in zip(mapped.records, case.records, strict=True):
        assert_subset(record.args, expected, record.table)
    for name, value in case.expect.items():
        if name == "context":
            assert_subset(mapped.context, value, "context")
        else:
            assert getattr(mapped, name) == value, name
    return mapped


# -- OpenTelemetry GenAI semantic conventions --------------------------------------------------

GENAI_CASES = [
    Case(
        "chat, current names",
        otel_span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.max_tokens": 400,
                "gen_ai.response.id": "chatcmpl-123",
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_creation.input_tokens": 40,
                "gen_ai.usage.reasoning.output_tokens": 120,
                "gen_ai.response.time_to_first_chunk": 0.42,
                "gen_ai.conversation.id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
                "gen_ai.system_instructions": json.dumps(
                    [{"type": "text", "content": SYSTEM_PROMPT}]
                ),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Rainy, 14°C."}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
                "server.address": "api.openai.com",
            },
            duration_ms=2300,
        ),
        "chat gpt-4o",
        [
            (
                LLM,
                {
                    "event_type": "llm_valid_execution",
                    "model": "gpt-4o-2024-08-06",
                    "provider": "openai",
                    "input_tokens": 1200,
                    "output_tokens": 300,
                    "cached_input_tokens": 1000,
                    "reasoning_tokens": 120,
                    "processing_time_ms": 2300,
                    "time_to_first_token_ms": 420,
                    "prompt": SYSTEM_PROMPT,
                    "payload": {
                        "input_messages": [
                            {
                                "role": "user",
                                "parts": [{"type": "text", "content": "Weather in Paris?"}],
                            }
                        ],
                        "output_messages": [{"role": "assistant", "finish_reason": "stop"}],
                        "parameters": {"temperature": 0.2, "max_tokens": 400},
                    },
                    "data": {
                        "operation": "chat",
                        "request_model": "gpt-4o",
                        "response_id": "chatcmpl-123",
                        "finish_reasons": ("stop",),
                        "cache_creation_input_tokens": 40,
                        "attributes": {"server.address": "api.openai.com"},
                    },
                },
            )
        ],
        {"session_id": "conv_5j66UpCpwteGg4YSxUnt7lPY", "status": "ok", "error": None},
    ),
    Case(
        "chat, older names and content events",
        otel_span(
            "chat claude-sonnet-4-20250514",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-20250514",
                "gen_ai.usage.prompt_tokens": 812,
                "gen_ai.usage.completion_tokens": 96,
                "session.id": "thread-7",
            },
            events=(
                SpanEvent("gen_ai.system.message", T0, {"content": SYSTEM_PROMPT}),
                SpanEvent("gen_ai.user.message", T0, {"content": "Book me a train"}),
                SpanEvent("gen_ai.choice", T0, {"index": 0, "finish_reason": "end_turn"}),
            ),
        ),
        "chat claude-sonnet-4-20250514",
        [
            (
                LLM,
                {
                    "model": "claude-sonnet-4-20250514",
                    "provider": "anthropic",
                    "input_tokens": 812,
                    "output_tokens": 96,
                    "prompt": SYSTEM_PROMPT,
                    "payload": {
                        "events": [
                            {"event.name": "gen_ai.system.message", "content": SYSTEM_PROMPT},
                            {"event.name": "gen_ai.user.message", "content": "Book me a train"},
                            {"event.name": "gen_ai.choice", "finish_reason": "end_turn"},
                        ]
                    },
                },
            )
        ],
        {"session_id": "thread-7"},
    ),
    Case(
        "embeddings",
        otel_span(
            "embeddings text-embedding-3-small",
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 64,
                "gen_ai.embeddings.dimension.count": 1536,
            },
        ),
        "embeddings text-embedding-3-small",
        [
            (
                LLM,
                {
                    "model": "text-embedding-3-small",
                    "input_tokens": 64,
                    "data": {
                        "operation": "embeddings",
                        "attributes": {"gen_ai.embeddings.dimension.count": 1536},
                    },
                },
            )
        ],
    ),
    Case(
        "generate_content with a reported cost",
        otel_span(
            "generate_content gemini-2.5-flash",
            {
                "gen_ai.operation.name": "generate_content",
                "gen_ai.provider.name": "gcp.gemini",
                "gen_ai.request.model": "gemini-2.5-flash",
                "gen_ai.usage.input_tokens": 500,
                "gen_ai.usage.output_tokens": 50,
                "gen_ai.usage.cost": 0.000275,
            },
        ),
        "generate_content gemini-2.5-flash",
        [(LLM, {"provider": "gcp.gemini", "total_cost": 0.000275})],
    ),
    Case(
        "a model call that timed out",
        otel_span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "error.type": "timeout",
            },
            status=STATUS_ERROR,
            message="Request timed out after 60 s",
        ),
        "chat gpt-4o",
        [
            (
                LLM,
                {
                    "event_type": "llm_timeout",
                    "error": "timeout: Request timed out after 60 s",
                },
            )
        ],
        {"status": "error", "error": "timeout: Request timed out after 60 s"},
    ),
    Case(
        "a rate-limited model call",
        otel_span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "error.type": "openai.RateLimitError",
            },
            status=STATUS_ERROR,
            message="Error code: 429 - Rate limit reached for gpt-4o",
        ),
        "chat gpt-4o",
        [(LLM, {"event_type": "llm_rate_limited"})],
        {"status": "error"},
    ),
    Case(
        "a model call whose output could not be used",
        otel_span(
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "error.type": "agents.exceptions.ModelBehaviorError",
            },
            status=STATUS_ERROR,
            message="Invalid JSON when parsing the final output",
        ),
        "chat gpt-4o",
        [(LLM, {"event_type": "llm_invalid_output"})],
    ),
    Case(
        "a failed model call",
        otel_span(
            "chat gpt-4o",
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
            status=STATUS_ERROR,
            events=(
                SpanEvent(
                    "exception",
                    T0,
                    {
                        "exception.type": "openai.BadRequestError",
                        "exception.message": "context length exceeded",
                    },
                ),
            ),
        ),
        "chat gpt-4o",
        [
            (
                LLM,
                {
                    "event_type": "llm_error",
                    "error": "openai.BadRequestError: context length exceeded",
                    "data": {"events": [{"name": "exception"}]},
                },
            )
        ],
    ),
    Case(
        "execute_tool",
        otel_span(
            "execute_tool get_weather",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": "call_VSPygqKTWdrhaFErNvMV18Yl",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.description": "Current weather for a city",
                "gen_ai.tool.call.arguments": '{"location": "Paris"}',
                "gen_ai.tool.call.result": "rainy, 57°F",
            },
            duration_ms=80,
        ),
        "execute_tool get_weather",
        [
            (
                AGENT,
                {
                    "event_type": "tool_call",
                    "duration_ms": 80,
                    "data": {
                        "tool": "get_weather",
                        "call_id": "call_VSPygqKTWdrhaFErNvMV18Yl",
                        "args": {"location": "Paris"},
                        "result": "rainy, 57°F",
                        "latency_ms": 80,
                        "tool_type": "function",
                        "description": "Current weather for a city",
                    },
                },
            )
        ],
    ),
    Case(
        "a handoff as the Agents SDK makes it: a transfer_to_ tool",
        otel_span(
            "execute_tool transfer_to_billing",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "transfer_to_billing",
                "gen_ai.agent.name": "Triage",
            },
        ),
        "execute_tool transfer_to_billing",
        [
            (AGENT, {"event_type": "tool_call", "agent_type": "Triage"}),
            (
                AGENT,
                {
                    "event_type": "handoff",
                    "agent_type": "Triage",
                    "data": {"from_agent": "Triage", "to_agent": "billing"},
                },
            ),
        ],
    ),
    Case(
        "invoke_agent with a bare span name",
        otel_span(
            "invoke_agent",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "openai",
                "gen_ai.agent.name": "Math Tutor",
                "gen_ai.agent.id": "asst_5j66UpCpwteGg4YSxUnt7lPY",
                "gen_ai.agent.description": "Helps with math homework",
                "gen_ai.request.model": "gpt-4o",
            },
            duration_ms=5000,
        ),
        "invoke_agent Math Tutor",
        [
            (
                AGENT,
                {
                    "agent_type": "Math Tutor",
                    "event_type": "agent_run",
                    "duration_ms": 5000,
                    "data": {
                        "agent": "Math Tutor",
                        "agent_id": "asst_5j66UpCpwteGg4YSxUnt7lPY",
                        "model": "gpt-4o",
                        "status": "ok",
                        "attributes": {"gen_ai.provider.name": "openai"},
                    },
                },
            )
        ],
        {"agent": "Math Tutor"},
    ),
    Case(
        "create_agent",
        otel_span(
            "create_agent Math Tutor",
            {"gen_ai.operation.name": "create_agent", "gen_ai.agent.name": "Math Tutor"},
        ),
        "create_agent Math Tutor",
        [(AGENT, {"agent_type": "Math Tutor", "event_type": "agent_created"})],
        {"agent": "Math Tutor"},
    ),
    Case(
        "invoke_workflow at the root",
        otel_span(
            "invoke_workflow support",
            {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "support"},
            parent=None,
            duration_ms=9000,
        ),
        "invoke_workflow support",
        [
            (AGENT, {"event_type": "workflow_run", "data": {"workflow": "support"}}),
            (JOURNEY, {"event_type": "request_received", "data": {"workflow": "support"}}),
            (
                JOURNEY,
                {"event_type": "request_completed", "data": {"duration_ms": 9000}},
            ),
        ],
        {"workflow": "support"},
    ),
    Case(
        "retrieval",
        otel_span(
            "retrieval kb-001",
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": "kb-001",
                "gen_ai.retrieval.query.text": "expense policy for meals",
                "gen_ai.retrieval.top_k": 3,
                "gen_ai.retrieval.documents": json.dumps(
                    [{"id": "doc_123", "score": 0.95}, {"id": "doc_456", "score": 0.87}]
                ),
            },
        ),
        "retrieval kb-001",
        [
            (
                AGENT,
                {
                    "event_type": "retrieval",
                    "data": {
                        "query": "expense policy for meals",
                        "doc_count": 2,
                        "top_ids": ["doc_123", "doc_456"],
                        "scores": [0.95, 0.87],
                        "data_source_id": "kb-001",
                        "top_k": 3,
                    },
                },
            )
        ],
    ),
    Case(
        "evaluation results on a span",
        otel_span(
            "invoke_agent Math Tutor",
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Math Tutor"},
            events=(
                SpanEvent(
                    "gen_ai.evaluation.result",
                    T0 + 2_000_000_000,
                    {
                        "gen_ai.evaluation.name": "Relevance",
                        "gen_ai.evaluation.score.value": 0.82,
                        "gen_ai.evaluation.score.label": "relevant",
                        "gen_ai.evaluation.explanation": "Answers the question asked",
                        "gen_ai.response.id": "chatcmpl-123",
                    },
                ),
            ),
        ),
        "invoke_agent Math Tutor",
        [
            (AGENT, {"event_type": "agent_run"}),
            (
                AGENT,
                {
                    "agent_type": "Math Tutor",
                    "event_type": "score",
                    "data": {
                        "name": "Relevance",
                        "value": 0.82,
                        "value_type": "numeric",
                        "score": 0.82,
                        "label": "relevant",
                        "source": "evaluator",
                        "comment": "Answers the question asked",
                        "data": {"response_id": "chatcmpl-123"},
                        "attached": "otlp",
                    },
                },
            ),
        ],
    ),
]


def genai_case(case_id: str) -> Case:
    return next(c for c in GENAI_CASES if c.id == case_id)


@pytest.mark.parametrize("case", GENAI_CASES, ids=lambda c: c.id)
def test_genai_semantic_conventions(case: Case) -> None:
    check(case)


def test_records_are_dated_by_the_span_to_the_microsecond() -> None:
    span = replace(genai_case("execute_tool").span, start_unix_nano=T0 + 123_456_789)
    (record,) = map_span(span, MappingOptions()).records
    assert record.created_at == dt.datetime(2026, 1, 1, 0, 0, 0, 123_456, tzinfo=dt.UTC)


def test_a_span_with_an_impossible_clock_is_dated_now() -> None:
    span = replace(genai_case("execute_tool").span, start_unix_nano=5, end_unix_nano=10**30)
    before = dt.datetime.now(dt.UTC)
    (record,) = map_span(span, MappingOptions()).records
    assert before <= record.created_at <= dt.datetime.now(dt.UTC)
    assert "duration_ms" not in record.args


def test_an_evaluation_row_is_dated_by_its_event() -> None:
    mapped = check(genai_case("evaluation results on a span"))
    assert mapped.records[1].created_at.timestamp() == pytest.approx(T0 / 1e9 + 2)


# -- OpenInference (Phoenix) -------------------------------------------------------------------

OPENINFERENCE_CASES = [
    Case(
        "LLM with flattened messages",
        otel_span(
            "ChatCompletion",
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini-2024-07-18",
                "llm.provider": "openai",
                "llm.system": "openai",
                "llm.token_count.prompt": 211,
                "llm.token_count.completion": 35,
                "llm.token_count.total": 246,
                "llm.token_count.prompt_details.cache_read": 128,
                "llm.token_count.completion_details.reasoning": 0,
                "llm.invocation_parameters": '{"temperature": 0.1, "max_tokens": 256}',
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": SYSTEM_PROMPT,
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "Cheapest way to Lyon?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "Take the TER.",
                "input.value": '{"messages": []}',
                "input.mime_type": "application/json",
                "output.value": "Take the TER.",
                "session.id": "sess-42",
                "user.id": "u-7",
                "metadata": '{"feature": "trip-planner", "tier": "free"}',
                "tag.tags": ("beta",),
                "llm.prompt_template.version": "v3",
            },
        ),
        "ChatCompletion",
        [
            (
                LLM,
                {
                    "model": "gpt-4o-mini-2024-07-18",
                    "provider": "openai",
                    "input_tokens": 211,
                    "output_tokens": 35,
                    "cached_input_tokens": 128,
                    "reasoning_tokens": 0,
                    "prompt": SYSTEM_PROMPT,
                    "prompt_version": "v3",
                    "payload": {
                        "input_messages": [
                            {"role": "system", "content": SYSTEM_PROMPT},
                            {"role": "user", "content": "Cheapest way to Lyon?"},
                        ],
                        "output_messages": [{"role": "assistant", "content": "Take the TER."}],
                        "parameters": {"temperature": 0.1, "max_tokens": 256},
                        "output": "Take the TER.",
                    },
                    "data": {
                        "total_tokens": 246,
                        "attributes": {
                            "llm.system": "openai",
                            "input.mime_type": "application/json",
                        },
                    },
                },
            )
        ],
        {
            "session_id": "sess-42",
            "user_id": "u-7",
            "context": {"feature": "trip-planner", "tier": "free", "tags": ["beta"]},
        },
    ),
    Case(
        "EMBEDDING",
        otel_span(
            "CreateEmbeddings",
            {
                "openinference.span.kind": "EMBEDDING",
                "embedding.model_name": "text-embedding-3-small",
                "llm.token_count.prompt": 9,
                "embedding.embeddings.0.embedding.text": "hello",
            },
        ),
        "CreateEmbeddings",
        [(LLM, {"model": "text-embedding-3-small", "input_tokens": 9})],
    ),
    Case(
        "TOOL",
        otel_span(
            "search_flights",
            {
                "openinference.span.kind": "TOOL",
                "tool.name": "search_flights",
                "tool.description": "Searches flights",
                "tool.parameters": '{"type": "object"}',
                "input.value": '{"origin": "PAR", "destination": "LYS"}',
                "output.value": '{"flights": 3}',
            },
        ),
        "search_flights",
        [
            (
                AGENT,
                {
                    "event_type": "tool_call",
                    "data": {
                        "tool": "search_flights",
                        "args": {"origin": "PAR", "destination": "LYS"},
                        "result": {"flights": 3},
                        "description": "Searches flights",
                        "parameters": {"type": "object"},
                    },
                },
            )
        ],
    ),
    Case(
        "AGENT",
        otel_span(
            "Travel Planner",
            {
                "openinference.span.kind": "AGENT",
                "agent.name": "Travel Planner",
                "input.value": "Plan a weekend in Lyon",
                "output.value": "Here is your plan",
            },
        ),
        "Travel Planner",
        [
            (
                AGENT,
                {
                    "agent_type": "Travel Planner",
                    "event_type": "agent_run",
                    "data": {"input": "Plan a weekend in Lyon", "output": "Here is your plan"},
                },
            )
        ],
        {"agent": "Travel Planner"},
    ),
    Case(
        "RETRIEVER with flattened documents",
        otel_span(
            "retrieve",
            {
                "openinference.span.kind": "RETRIEVER",
                "input.value": "hotels near Part-Dieu",
                "retrieval.documents.0.document.id": "h-1",
                "retrieval.documents.0.document.score": 0.91,
                "retrieval.documents.0.document.content": "Hotel A",
                "retrieval.documents.1.document.id": "h-2",
                "retrieval.documents.1.document.score": 0.74,
                "retrieval.documents.1.document.content": "Hotel B",
            },
        ),
        "retrieve",
        [
            (
                AGENT,
                {
                    "event_type": "retrieval",
                    "data": {
                        "query": "hotels near Part-Dieu",
                        "doc_count": 2,
                        "top_ids": ["h-1", "h-2"],
                        "scores": [0.91, 0.74],
                    },
                },
            )
        ],
    ),
    Case(
        "GUARDRAIL that blocked",
        otel_span(
            "pii_check",
            {"openinference.span.kind": "GUARDRAIL", "input.value": "my card is 4111..."},
            status=STATUS_ERROR,
            message="PII detected",
        ),
        "pii_check",
        [(AGENT, {"event_type": "guardrail", "data": {"name": "pii_check", "passed": False}})],
    ),
    Case(
        "AGENT at the root: the Agents SDK's trace",
        otel_span(
            "Customer service",
            {"openinference.span.kind": "AGENT"},
            parent=None,
        ),
        "Customer service",
        [
            (AGENT, {"agent_type": "Customer service", "event_type": "agent_run"}),
            (JOURNEY, {"event_type": "request_received"}),
            (JOURNEY, {"event_type": "request_completed"}),
        ],
        {"workflow": "Customer service"},
    ),
    Case(
        "a handoff, as the Agents SDK instrumentation exports it",
        otel_span(
            "handoff to Billing", {"openinference.span.kind": "TOOL", "llm.system": "openai"}
        ),
        "handoff to Billing",
        [
            (
                AGENT,
                {
                    "event_type": "handoff",
                    "data": {"from_agent": "unknown", "to_agent": "Billing"},
                },
            )
        ],
    ),
    Case(
        "CHAIN at the root",
        otel_span("trip_planner", {"openinference.span.kind": "CHAIN"}, parent=None),
        "trip_planner",
        [(JOURNEY, {"event_type": "request_received"}), (JOURNEY, {})],
        {"workflow": "trip_planner"},
    ),
]


@pytest.mark.parametrize("case", OPENINFERENCE_CASES, ids=lambda c: c.id)
def test_openinference(case: Case) -> None:
    check(case)


# -- OpenLLMetry / Traceloop ------------------------------------------------------------------

TRACELOOP_CASES = [
    Case(
        "workflow with association properties",
        otel_span(
            "joke_generator.workflow",
            {
                "traceloop.span.kind": "workflow",
                "traceloop.entity.name": "joke_generator",
                "traceloop.workflow.name": "joke_generator",
                "traceloop.entity.input": '{"args": [], "kwargs": {"topic": "cats"}}',
                "traceloop.entity.output": '"Why did the cat..."',
                "traceloop.association.properties.user_id": "user-12",
                "traceloop.association.properties.session_id": "chat-9",
                "traceloop.association.properties.tier": "premium",
            },
            parent=None,
        ),
        "joke_generator.workflow",
        [
            (
                AGENT,
                {
                    "event_type": "workflow_run",
                    "data": {
                        "workflow": "joke_generator",
                        "input": {"args": [], "kwargs": {"topic": "cats"}},
                        "output": "Why did the cat...",
                    },
                },
            ),
            (JOURNEY, {"event_type": "request_received"}),
            (JOURNEY, {"event_type": "request_completed"}),
        ],
        {
            "workflow": "joke_generator",
            "user_id": "user-12",
            "session_id": "chat-9",
            "context": {"tier": "premium", "user_id": "user-12"},
        },
    ),
    Case(
        "agent",
        otel_span(
            "joke_translator.agent",
            {
                "traceloop.span.kind": "agent",
                "traceloop.entity.name": "joke_translator",
                "traceloop.workflow.name": "joke_generator",
            },
        ),
        "joke_translator.agent",
        [(AGENT, {"agent_type": "joke_translator", "event_type": "agent_run"})],
        {"agent": "joke_translator"},
    ),
    Case(
        "tool",
        otel_span(
            "history_jokes.tool",
            {
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": "history_jokes",
                "traceloop.entity.input": '{"args": ["Rome"], "kwargs": {}}',
                "traceloop.entity.output": '["joke 1", "joke 2"]',
            },
        ),
        "history_jokes.tool",
        [
            (
                AGENT,
                {
                    "event_type": "tool_call",
                    "data": {
                        "tool": "history_jokes",
                        "args": {"args": ["Rome"], "kwargs": {}},
                        "result": ["joke 1", "joke 2"],
                    },
                },
            )
        ],
    ),
    Case(
        "LLM call with flattened prompt and completion",
        otel_span(
            "openai.chat",
            {
                "llm.request.type": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.prompt_tokens": 57,
                "gen_ai.usage.completion_tokens": 21,
                "llm.usage.total_tokens": 78,
                "gen_ai.usage.cache_read_input_tokens": 0,
                "gen_ai.prompt.0.role": "system",
                "gen_ai.prompt.0.content": SYSTEM_PROMPT,
                "gen_ai.prompt.1.role": "user",
                "gen_ai.prompt.1.content": "Tell me a joke about OpenTelemetry",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "Why did the span...",
                "gen_ai.completion.0.finish_reason": "stop",
                "llm.is_streaming": False,
                "gen_ai.openai.api_base": "https://api.openai.com/v1/",
                "traceloop.workflow.name": "joke_generator",
                "traceloop.entity.path": "joke_generator",
            },
        ),
        "openai.chat",
        [
            (
                LLM,
                {
                    "model": "gpt-4o-2024-08-06",
                    "provider": "openai",
                    "input_tokens": 57,
                    "output_tokens": 21,
                    "cached_input_tokens": 0,
                    "prompt": SYSTEM_PROMPT,
                    "payload": {
                        "input_messages": [
                            {"role": "system", "content": SYSTEM_PROMPT},
                            {"role": "user", "content": "Tell me a joke about OpenTelemetry"},
                        ],
                        "output_messages": [
                            {
                                "role": "assistant",
                                "content": "Why did the span...",
                                "finish_reason": "stop",
                            }
                        ],
                        "parameters": {"is_streaming": False},
                    },
                    "data": {
                        "operation": "chat",
                        "total_tokens": 78,
                        "attributes": {
                            "gen_ai.openai.api_base": "https://api.openai.com/v1/",
                            "traceloop.workflow.name": "joke_generator",
                        },
                    },
                },
            )
        ],
    ),
]


@pytest.mark.parametrize("case", TRACELOOP_CASES, ids=lambda c: c.id)
def test_openllmetry_traceloop(case: Case) -> None:
    check(case)


# -- Logfire instrument_openai_agents() -------------------------------------------------------

LOGFIRE = {"logfire.span_type": "span", "code.filepath": "app.py", "code.lineno": 12}
RESPONSE = {
    "id": "resp_67ced68228748191b31ea5d9172a7b4b",
    "model": "gpt-4o-2024-08-06",
    "instructions": SYSTEM_PROMPT,
    "output": [{"type": "message", "content": [{"type": "output_text", "text": "4"}]}],
    "usage": {
        "input_tokens": 89,
        "input_tokens_details": {"cached_tokens": 64},
        "output_tokens": 18,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 107,
    },
}

LOGFIRE_CASES = [
    Case(
        "the trace",
        otel_span(
            "OpenAI Agents trace: {name}",
            {
                **LOGFIRE,
                "logfire.msg_template": "OpenAI Agents trace: {name}",
                "logfire.msg": "OpenAI Agents trace: Customer service",
                "name": "Customer service",
                "agent_trace_id": "trace_123",
                "group_id": "conversation-456",
                "metadata": '{"feature": "support", "channel": "web"}',
                "logfire.json_schema": '{"type":"object","properties":{}}',
            },
            parent=None,
            scope="logfire.openai_agents",
        ),
        "OpenAI Agents trace: Customer service",
        [
            (AGENT, {"event_type": "workflow_run", "data": {"workflow": "Customer service"}}),
            (JOURNEY, {"event_type": "request_received"}),
            (JOURNEY, {"event_type": "request_completed"}),
        ],
        {
            "workflow": "Customer service",
            "session_id": "conversation-456",
            "context": {"feature": "support", "channel": "web"},
        },
    ),
    Case(
        "an agent run",
        otel_span(
            "Agent run: {name!r}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Agent run: {name!r}",
                "logfire.msg": "Agent run: 'Triage'",
                "name": "Triage",
                "handoffs": '["Billing", "Refunds"]',
                "tools": '["lookup_order"]',
                "output_type": "str",
                "gen_ai.system": "openai",
            },
        ),
        "Agent run: 'Triage'",
        [
            (
                AGENT,
                {
                    "agent_type": "Triage",
                    "event_type": "agent_run",
                    "data": {
                        "agent": "Triage",
                        "handoffs": ["Billing", "Refunds"],
                        "tools": ["lookup_order"],
                        "output_type": "str",
                        "attributes": {"gen_ai.system": "openai", "code.lineno": 12},
                    },
                },
            )
        ],
        {"agent": "Triage"},
    ),
    Case(
        "a function tool that failed (non-fatal)",
        otel_span(
            "Function: {name}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Function: {name}",
                "logfire.msg": "Function: lookup_order failed: Error running tool (non-fatal)",
                "logfire.level_num": 17,
                "name": "lookup_order",
                "input": '{"order_id": "A-17"}',
                "output": "An error occurred while running the tool. Error: not found",
                "mcp_data": "null",
                "gen_ai.system": "openai",
                "error": json.dumps(
                    {
                        "message": "Error running tool (non-fatal)",
                        "data": {"tool_name": "lookup_order", "error": "not found"},
                    }
                ),
            },
        ),
        "Function: lookup_order failed: Error running tool (non-fatal)",
        [
            (
                AGENT,
                {
                    "event_type": "tool_call",
                    "data": {
                        "tool": "lookup_order",
                        "args": {"order_id": "A-17"},
                        "error": "Error running tool (non-fatal): not found",
                    },
                },
            )
        ],
        {"status": "error"},
    ),
    Case(
        "a handoff",
        otel_span(
            "Handoff: {from_agent} → {to_agent}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Handoff: {from_agent} → {to_agent}",
                "logfire.msg": "Handoff: Triage → Billing",
                "from_agent": "Triage",
                "to_agent": "Billing",
                "gen_ai.system": "openai",
            },
        ),
        "Handoff: Triage → Billing",
        [
            (
                AGENT,
                {
                    "agent_type": "Triage",
                    "event_type": "handoff",
                    "data": {"from_agent": "Triage", "to_agent": "Billing"},
                },
            )
        ],
    ),
    Case(
        "a guardrail that tripped",
        otel_span(
            "Guardrail {name!r} {triggered=}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Guardrail {name!r} {triggered=}",
                "logfire.msg": "Guardrail 'no_homework' triggered=True",
                "name": "no_homework",
                "triggered": True,
            },
        ),
        "Guardrail 'no_homework' triggered=True",
        [
            (
                AGENT,
                {
                    "event_type": "guardrail",
                    "data": {
                        "name": "no_homework",
                        "passed": False,
                        "action": "tripwire_triggered",
                    },
                },
            )
        ],
    ),
    Case(
        "a chat completion (Chat Completions model)",
        otel_span(
            "Chat completion with {gen_ai.request.model!r}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Chat completion with {gen_ai.request.model!r}",
                "logfire.msg": "Chat completion with 'gpt-4o'",
                "logfire.tags": ("LLM",),
                "input": json.dumps(
                    [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": "1+1?"},
                    ]
                ),
                "output": json.dumps([{"role": "assistant", "content": "1 + 1 = 2"}]),
                "model_config": '{"temperature": null, "tool_choice": null}',
                "usage": '{"input_tokens": 11, "output_tokens": 8}',
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 8,
                "request_data": json.dumps({"messages": [], "model": "gpt-4o"}),
            },
        ),
        "Chat completion with 'gpt-4o'",
        [
            (
                LLM,
                {
                    "model": "gpt-4o",
                    "provider": "openai",
                    "input_tokens": 11,
                    "output_tokens": 8,
                    "prompt": SYSTEM_PROMPT,
                    "payload": {
                        "input_messages": [{"role": "system"}, {"role": "user", "content": "1+1?"}],
                        "output_messages": [{"role": "assistant", "content": "1 + 1 = 2"}],
                        "request": {"model": "gpt-4o"},
                    },
                },
            )
        ],
    ),
    Case(
        "a Responses API call",
        otel_span(
            "Responses API with {gen_ai.request.model!r}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Responses API with {gen_ai.request.model!r}",
                "logfire.msg": "Responses API with 'gpt-4o'",
                "response_id": RESPONSE["id"],
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.system": "openai",
                "gen_ai.operation.name": "chat",
                "response": json.dumps(RESPONSE),
                "model_settings": '{"temperature": 0.3}',
                "raw_input": '[{"content": "2+2?", "role": "user"}]',
                "events": json.dumps(
                    [
                        {"event.name": "gen_ai.system.message", "content": SYSTEM_PROMPT},
                        {"event.name": "gen_ai.user.message", "content": "2+2?", "role": "user"},
                        {"event.name": "gen_ai.assistant.message", "content": "4"},
                    ]
                ),
                "gen_ai.usage.input_tokens": 89,
                "gen_ai.usage.output_tokens": 18,
            },
        ),
        "Responses API with 'gpt-4o'",
        [
            (
                LLM,
                {
                    "model": "gpt-4o-2024-08-06",
                    "input_tokens": 89,
                    "output_tokens": 18,
                    "cached_input_tokens": 64,
                    "reasoning_tokens": 5,
                    "prompt": SYSTEM_PROMPT,
                    "payload": {
                        "input_messages": [{"content": "2+2?", "role": "user"}],
                        "parameters": {"temperature": 0.3},
                        "response": {"id": RESPONSE["id"]},
                    },
                    "data": {"operation": "chat", "response_id": RESPONSE["id"]},
                },
            )
        ],
    ),
]


LOGFIRE_CASES.append(
    Case(
        "instrument_openai(): a chat completion outside the Agents SDK",
        otel_span(
            "Chat Completion with {request_data[model]!r}",
            {
                **LOGFIRE,
                "logfire.msg_template": "Chat Completion with {request_data[model]!r}",
                "logfire.msg": "Chat Completion with 'gpt-4o-mini'",
                "request_data": json.dumps(
                    {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "system", "content": SYSTEM_PROMPT}],
                    }
                ),
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "response_data": json.dumps(
                    {
                        "message": {"role": "assistant", "content": "Hello"},
                        "usage": {
                            "prompt_tokens": 1034,
                            "completion_tokens": 12,
                            "prompt_tokens_details": {"cached_tokens": 1024},
                            "completion_tokens_details": {"reasoning_tokens": 0},
                        },
                    }
                ),
                "async": False,
            },
        ),
        "Chat Completion with 'gpt-4o-mini'",
        [
            (
                LLM,
                {
                    "model": "gpt-4o-mini-2024-07-18",
                    "input_tokens": 1034,
                    "output_tokens": 12,
                    "cached_input_tokens": 1024,
                    "reasoning_tokens": 0,
                    "payload": {
                        "request": {"model": "gpt-4o-mini"},
                        "response": {"message": {"content": "Hello"}},
                    },
                    "data": {"attributes": {"async": False}},
                },
            )
        ],
    )
)


@pytest.mark.parametrize("case", LOGFIRE_CASES, ids=lambda c: c.id)
def test_logfire_openai_agents(case: Case) -> None:
    check(case)


def test_logfire_bookkeeping_attributes_are_not_kept_as_data() -> None:
    mapped = check(LOGFIRE_CASES[1])
    kept = mapped.records[0].args["data"]["attributes"]
    assert not {"logfire.msg", "logfire.msg_template", "name", "tools"} & set(kept)


def test_langfuse_sdk_generations() -> None:
    mapped = check(
        Case(
            "a Langfuse generation",
            otel_span(
                "answer",
                {
                    "langfuse.observation.type": "generation",
                    "langfuse.observation.model.name": "claude-sonnet-4-5",
                    "langfuse.observation.usage_details": '{"input": 900, "output": 80}',
                    "langfuse.observation.cost_details": '{"total": 0.0039}',
                    "langfuse.observation.input": '[{"role": "user", "content": "hi"}]',
                    "langfuse.observation.prompt.name": "qa-prompt",
                    "langfuse.observation.prompt.version": 4,
                    "langfuse.trace.name": "qa",
                    "langfuse.user.id": "u-1",
                    "langfuse.session.id": "s-1",
                },
            ),
            "answer",
            [
                (
                    LLM,
                    {
                        "model": "claude-sonnet-4-5",
                        "input_tokens": 900,
                        "output_tokens": 80,
                        "total_cost": 0.0039,
                        "prompt_version": "4",
                        "payload": {"input": [{"role": "user", "content": "hi"}]},
                        "data": {"prompt_name": "qa-prompt"},
                    },
                )
            ],
            {"workflow": "qa", "user_id": "u-1", "session_id": "s-1"},
        )
    )
    assert "attributes" not in mapped.records[0].args["data"]  # every attribute was mapped


def test_a_handoff_learns_its_source_from_the_enclosing_agent() -> None:
    agent = otel_span("Triage", {"openinference.span.kind": "AGENT"}, span_id="1111111111111111")
    handoff = otel_span(
        "handoff to Billing",
        {"openinference.span.kind": "TOOL"},
        span_id="2222222222222222",
        parent="1111111111111111",
    )
    spans = [agent, handoff]
    mapped = inherit_agents(spans, {s.span_id: map_span(s, MappingOptions()) for s in spans})
    args = mapped[handoff.span_id].records[0].args
    assert args["agent_type"] == "Triage"
    assert args["data"] == {"from_agent": "Triage", "to_agent": "Billing"}


# -- users, tenants, sessions ---------------------------------------------------------------


def test_user_tenant_and_session_come_from_span_then_resource() -> None:
    span = otel_span(
        "chat gpt-4o",
        {"gen_ai.operation.name": "chat", "enduser.id": "alice", "langfuse.session.id": "s-1"},
        resource={
            "service.name": "api",
            "tenant.id": "acme",
            "deployment.environment.name": "prod",
        },
    )
    mapped = map_span(span, MappingOptions())
    assert (mapped.user_id, mapped.tenant_id, mapped.session_id) == ("alice", "acme", "s-1")
    assert mapped.context == {"environment": "prod", "service": "api"}


def test_identity_attributes_are_configurable_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_OTLP_USER_ATTRIBUTES, "app.customer, user.id")
    monkeypatch.setenv(ENV_OTLP_TENANT_ATTRIBUTES, "app.org")
    monkeypatch.setenv(ENV_OTLP_SESSION_ATTRIBUTES, "")
    span = otel_span(
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "app.customer": "c-9",
            "user.id": "ignored",
            "app.org": "org-3",
            "session.id": "not-a-session-now",
        },
    )
    mapped = map_span(span)
    assert (mapped.user_id, mapped.tenant_id, mapped.session_id) == ("c-9", "org-3", None)
    kept = mapped.records[0].args["data"]["attributes"]
    assert kept == {"user.id": "ignored", "session.id": "not-a-session-now"}


def test_identity_attributes_are_the_settings_attribute_lists() -> None:
    environ = {ENV_OTLP_USER_ATTRIBUTES: "app.customer", ENV_OTLP_SESSION_ATTRIBUTES: ""}
    options = MappingOptions.from_env(environ)
    assert options == MappingOptions.from_settings(Settings.from_env(environ))
    assert options == MappingOptions(user_attributes=("app.customer",), session_attributes=())
    assert MappingOptions.from_settings(Settings()) == MappingOptions()


def test_identity_attributes_from_the_environment_ignore_other_settings() -> None:
    options = MappingOptions.from_env(
        {ENV_SCHEMA: "Not A Schema", ENV_OTLP_TENANT_ATTRIBUTES: "org"}
    )
    assert options == MappingOptions(tenant_attributes=("org",))


def test_records_inherit_the_agent_of_the_nearest_agent_span() -> None:
    agent = otel_span(
        "invoke_agent Triage",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Triage"},
        span_id="1111111111111111",
    )
    step = otel_span("turn", {}, span_id="2222222222222222", parent="1111111111111111")
    chat = otel_span(
        "chat gpt-4o",
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
        span_id="3333333333333333",
        parent="2222222222222222",
    )
    spans = [agent, step, chat]
    mapped = inherit_agents(spans, {s.span_id: map_span(s, MappingOptions()) for s in spans})
    assert mapped[chat.span_id].records[0].args["agent_type"] == "Triage"
    assert mapped[agent.span_id].records[0].args["agent_type"] == "Triage"


# -- LangGraph through OpenInference: shapes the recorded fixtures do not cover ----------------


def graph_span(
    name: str,
    kind: str,
    span_id: str,
    parent: str | None,
    meta: dict[str, Any],
    **attributes: Any,
) -> OtlpSpan:
    """A span of OpenInference's LangChain instrumentation, with LangGraph's metadata."""
    attrs = {
        "openinference.span.kind": kind,
        "metadata": json.dumps({"ls_integration": "langgraph", **meta}),
    }
    attrs.update({k.replace("__", "."): v for k, v in attributes.items()})
    return otel_span(name, attrs, span_id=span_id, parent=parent)


def node(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"langgraph_node": name, "langgraph_checkpoint_ns": namespace, **extra}


def map_trace(
    spans: list[OtlpSpan], options: MappingOptions | None = None
) -> dict[str, MappedSpan]:
    options = options or MappingOptions()
    return inherit_agents(spans, {s.span_id: map_span(s, options) for s in spans})


def test_a_subgraph_s_calls_belong_to_the_node_that_holds_it() -> None:
    inner = "flight_assistant:1f|agent:2a"
    spans = [
        graph_span("supervisor", "CHAIN", "1000000000000001", None, {}),
        graph_span(
            "router", "CHAIN", "1000000000000002", "1000000000000001", node("router", "router:9")
        ),
        graph_span(
            "ChatOpenAI",
            "LLM",
            "1000000000000003",
            "1000000000000002",
            node("router", "router:9"),
            llm__model_name="gpt-4o",
        ),
        graph_span(
            "flight_assistant",
            "CHAIN",
            "1000000000000004",
            "1000000000000001",
            node("flight_assistant", "flight_assistant:1f"),
        ),
        graph_span("agent", "AGENT", "1000000000000005", "1000000000000004", node("agent", inner)),
        graph_span(
            "ChatOpenAI",
            "LLM",
            "1000000000000006",
            "1000000000000005",
            node("agent", inner),
            llm__model_name="gpt-4o",
        ),
    ]
    mapped = map_trace(spans)
    assert mapped["1000000000000003"].records[0].args["agent_type"] == "supervisor"
    assert mapped["1000000000000006"].records[0].args["agent_type"] == "flight_assistant"
    assert mapped["1000000000000005"].records == ()  # the model node is a step, not an agent
    assert mapped["1000000000000001"].workflow == "supervisor"


def test_a_graph_left_unnamed_lets_the_node_name_the_agent() -> None:
    spans = [
        graph_span("LangGraph", "CHAIN", "2000000000000001", None, {}),
        graph_span(
            "ChatOpenAI",
            "LLM",
            "2000000000000002",
            "2000000000000001",
            node("planner", "planner:1"),
            llm__model_name="gpt-4o",
        ),
    ]
    mapped = map_trace(spans)
    assert mapped["2000000000000002"].records[0].args["agent_type"] == "planner"
    # With the graph's span missing from the trace, the node is all there is too.
    alone = map_trace([spans[1]])
    assert alone["2000000000000002"].records[0].args["agent_type"] == "planner"


def test_parallel_calls_of_one_tool_are_told_apart_by_their_bare_input() -> None:
    calls = [
        {
            "name": "get_weather",
            "args": {"city": "Lisbon"},
            "id": "call_lisbon",
            "type": "tool_call",
        },
        {"name": "get_weather", "args": {"city": "Porto"}, "id": "call_porto", "type": "tool_call"},
    ]
    state = {
        "messages": [
            {"type": "human", "data": {"content": "Lisbon and Porto?"}},
            {"type": "ai", "data": {"content": "", "tool_calls": calls}},
        ]
    }
    meta = node("tools", "tools:3")
    spans = [
        graph_span(
            "tools", "CHAIN", "3000000000000001", None, meta, input__value=json.dumps(state)
        ),
        graph_span(
            "get_weather",
            "TOOL",
            "3000000000000002",
            "3000000000000001",
            meta,
            tool__name="get_weather",
            input__value="Porto",
        ),
        graph_span(
            "get_weather",
            "TOOL",
            "3000000000000003",
            "3000000000000001",
            meta,
            tool__name="get_weather",
            input__value="Lisbon",
        ),
    ]
    mapped = map_trace(spans)
    found = [mapped[s.span_id].records[0].args["data"] for s in spans[1:]]
    assert [(d["call_id"], d["args"]) for d in found] == [
        ("call_porto", {"city": "Porto"}),
        ("call_lisbon", {"city": "Lisbon"}),
    ]


def test_framework_bookkeeping_leaves_the_context_whatever_carries_it() -> None:
    span = otel_span(
        "workflow",
        {
            "traceloop.span.kind": "workflow",
            "traceloop.association.properties.ls_provider": "openai",
            "traceloop.association.properties.langgraph_step": 2,
            "traceloop.association.properties.checkpoint_ns": "agent:1",
            "traceloop.association.properties.feature": "trip-planner",
            "traceloop.association.properties.thread_id": "t-9",
        },
        parent=None,
    )
    mapped = map_span(span, MappingOptions())
    assert mapped.context == {
        "feature": "trip-planner",
        "thread_id": "t-9",
        "service": "travel-agent",
    }
    assert mapped.session_id == "t-9"


def test_a_configured_identity_key_is_kept_and_read_from_the_metadata() -> None:
    span = graph_span(
        "ChatOpenAI",
        "LLM",
        "4000000000000001",
        None,
        node("agent", "agent:1", langgraph_auth_user_id="alice"),
        llm__model_name="gpt-4o",
    )
    options = MappingOptions(user_attributes=("langgraph_auth_user_id", "user.id"))
    mapped = map_span(span, options)
    assert mapped.user_id == "alice"
    assert mapped.context == {"langgraph_auth_user_id": "alice", "service": "travel-agent"}


def test_stack_traces_are_summed_up_by_their_innermost_frame() -> None:
    javascript = (
        "Error: upstream refused\n"
        "    at fetchWeather (/home/dev/app/src/weather.js:10:5)\n"
        "    at async run (/home/dev/app/src/index.js:3:1)"
    )
    python = (
        "Traceback (most recent call last):\n"
        '  File "/home/dev/app/main.py", line 5, in <module>\n'
        "    main()\n"
        '  File "/home/dev/app/tools.py", line 42, in lookup\n'
        "    raise KeyError(order)\n"
        "KeyError: 'A-17'\n"
    )
    tool = otel_span(
        "execute_tool lookup",
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
        status=STATUS_ERROR,
        message=python,
        events=(
            SpanEvent(
                "exception",
                T0 + 1_000_000,
                {
                    "exception.type": "Error",
                    "exception.message": "upstream refused",
                    "exception.stacktrace": javascript,
                },
            ),
        ),
    )
    mapped = map_span(tool, MappingOptions())
    data = mapped.records[0].args["data"]
    assert mapped.error == "KeyError: 'A-17'"
    assert data["events"][0]["attributes"] == {
        "exception.type": "Error",
        "exception.message": "upstream refused",
        "exception.frame": "fetchWeather in weather.js:10",
    }
    assert "/home/" not in json.dumps(data)

    on_span = otel_span(
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "exception.stacktrace": python,
        },
    )
    kept = map_span(on_span, MappingOptions()).records[0].args["data"]["attributes"]
    assert kept == {"exception.frame": "lookup in tools.py:42"}


# -- odd input --------------------------------------------------------------------------------

ODD_TOKENS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": -5,
    "gen_ai.usage.output_tokens": 10**12,
    "gen_ai.usage.cache_read.input_tokens": 3.7,
    "gen_ai.usage.reasoning.output_tokens": True,
    "gen_ai.usage.cost": float("nan"),
    "gen_ai.response.time_to_first_chunk": -1.0,
    "gen_ai.input.messages": "[{not json",
}


def test_unreadable_numbers_are_ignored_and_kept_raw() -> None:
    mapped = map_span(otel_span("chat gpt-4o", ODD_TOKENS), MappingOptions())
    args = mapped.records[0].args
    for column in (
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "total_cost",
        "time_to_first_token_ms",
    ):
        assert column not in args
    kept = args["data"]["attributes"]
    assert kept["gen_ai.usage.input_tokens"] == -5
    assert kept["gen_ai.usage.output_tokens"] == 10**12
    assert math.isnan(kept["gen_ai.usage.cost"])
    assert kept["gen_ai.input.messages"] == "[{not json"
    assert "payload" not in args


def test_numbers_sent_as_text_are_read() -> None:
    span = otel_span(
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": "42",
            "gen_ai.usage.cost": "0.5",
        },
    )
    args = map_span(span, MappingOptions()).records[0].args
    assert (args["input_tokens"], args["total_cost"]) == (42, 0.5)


@pytest.mark.parametrize(
    "span",
    [
        OtlpSpan(TRACE, "a1b2c3d4e5f60718", None, None, 0, 0, -1, attributes=None),  # type: ignore[arg-type]
        OtlpSpan(TRACE, "a1b2c3d4e5f60718", PARENT, "x", 0, 10**30, 5, status_code=99),
        OtlpSpan(
            TRACE,
            "a1b2c3d4e5f60718",
            PARENT,
            "chat\x00" + "y" * 10_000,
            1,
            T0,
            T0 - 5,
            attributes={"gen_ai.operation.name": ["chat"], "gen_ai.request.model": {"a": 1}},
            events=("not an event", SpanEvent("exception", -1, None)),  # type: ignore[arg-type]
            resource="not a mapping",  # type: ignore[arg-type]
        ),
        otel_span(
            "execute_tool",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": 12345,
                "gen_ai.tool.call.arguments": "[1, 2",
                "gen_ai.tool.call.result": b"\xff\xfe binary",
            },
        ),
        otel_span(
            "retrieval",
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.documents": '[{"id": null, "score": "high"}, 7]',
            },
        ),
        otel_span(
            "openai.chat",
            {
                "llm.request.type": "chat",
                "gen_ai.prompt.0.content": "a value",
                "gen_ai.prompt.0.content.parts": "and an object at the same path",
                "gen_ai.prompt.x.content": "not an index",
                "gen_ai.prompt.": "empty path",
            },
        ),
        otel_span("Agent run: {name!r}", {"logfire.msg_template": "Agent run: {name!r}"}),
    ],
    ids=[
        "no attributes, no name, no times",
        "times out of range, unknown status",
        "wrong types everywhere",
        "tool with unreadable arguments",
        "retrieval with malformed documents",
        "flattened messages that collide",
        "logfire span missing its fields",
    ],
)
def test_odd_spans_map_without_raising(span: OtlpSpan) -> None:
    mapped = map_span(span, MappingOptions())
    assert mapped.process_name
    assert len(mapped.process_name) <= 200 and "\x00" not in mapped.process_name
    assert mapped.status in ("ok", "error")
    for record in mapped.records:
        assert record.created_at.tzinfo is not None
        json.dumps(record.args, default=repr)  # plain data only


def test_colliding_flattened_keys_are_kept_raw() -> None:
    span = otel_span(
        "openai.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.prompt.0.content": "a value",
            "gen_ai.prompt.0.content.parts": "an object at the same path",
        },
    )
    args = map_span(span, MappingOptions()).records[0].args
    assert args["payload"]["input_messages"] == [{"content": "a value"}]
    assert args["data"]["attributes"] == {
        "gen_ai.prompt.0.content.parts": "an object at the same path"
    }


def test_flattened_message_bodies_are_kept_verbatim() -> None:
    body = '{"looks": "like JSON"}'
    span = otel_span(
        "openai.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": body,
        },
    )
    args = map_span(span, MappingOptions()).records[0].args
    assert args["payload"]["input_messages"] == [{"role": "user", "content": body}]


def test_a_huge_attribute_is_kept_whole_for_the_writer_to_cap() -> None:
    huge = "x" * 3_000_000
    span = otel_span("chat gpt-4o", {"gen_ai.operation.name": "chat", "app.blob": huge})
    args = map_span(span, MappingOptions()).records[0].args
    assert args["data"]["attributes"]["app.blob"] is huge


# -- through the real writer -------------------------------------------------------------------


def multi_agent_trace() -> list[OtlpSpan]:
    """A workflow, an agent, its model call, a tool call and a retrieval (GenAI conventions)."""
    return [
        otel_span(
            "invoke_workflow support",
            {
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": "support",
                "user.id": "u-57",
                "gen_ai.conversation.id": "conv-1",
            },
            span_id="1000000000000001",
            parent=None,
            duration_ms=9000,
        ),
        otel_span(
            "invoke_agent Triage",
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Triage"},
            span_id="1000000000000002",
            parent="1000000000000001",
            duration_ms=8000,
        ),
        replace(
            genai_case("chat, current names").span,
            span_id="1000000000000003",
            parent_span_id="1000000000000002",
        ),
        otel_span(
            "execute_tool get_weather",
            genai_case("execute_tool").span.attributes,
            span_id="1000000000000004",
            parent="1000000000000002",
            duration_ms=80,
        ),
        otel_span(
            "retrieval kb-001",
            genai_case("retrieval").span.attributes,
            span_id="1000000000000005",
            parent="1000000000000002",
        ),
    ]


HELPERS: dict[str, Callable[..., None]] = {
    LLM: pgtrail.log_llm_execution,
    AGENT: pgtrail.log_agent_execution,
    JOURNEY: pgtrail.log_user_journey,
}


def write(trail: Trail, spans: list[OtlpSpan]) -> None:
    """Logs every mapped record through the public helpers, as the receiver's records are."""
    mapped = inherit_agents(spans, {s.span_id: map_span(s, MappingOptions()) for s in spans})
    with trail.execution("support", user_id="u-57", session_id="conv-1"):
        for span in spans:
            for record in mapped[span.span_id].records:
                HELPERS[record.table](**record.args)


def test_mapped_records_are_accepted_by_the_writer_and_land_in_their_columns(
    settings: Settings,
) -> None:
    with Trail(settings, sync=True) as trail:
        write(trail, multi_agent_trace())
        assert trail.flush()
        assert trail.stats.rejected == 0
    llm = rows(
        settings.dsn,
        "SELECT agent_type, provider, model_target, input_tokens, output_tokens, "
        "cached_input_tokens, reasoning_tokens, processing_time_ms, time_to_first_token_ms, "
        "total_cost, event_type, payload, particular_data, "
        "(SELECT body FROM pgtrail_prompt p WHERE p.prompt_hash = l.prompt_hash) "
        "FROM logs_llm_execution l",
    )
    assert len(llm) == 1
    (agent, provider, model, tokens_in, tokens_out, cached, reasoning, took, ttft) = llm[0][:9]
    assert (agent, provider, model) == ("Triage", "openai", "gpt-4o-2024-08-06")
    assert (tokens_in, tokens_out, cached, reasoning, took, ttft) == (
        1200,
        300,
        1000,
        120,
        2300,
        420,
    )
    total_cost, event_type, payload, data, prompt = llm[0][9:]
    # Inferred from the price table: 200 fresh + 1000 cached input tokens, 300 output tokens.
    assert float(total_cost) == pytest.approx(200 * 2.5e-6 + 1000 * 1.25e-6 + 300 * 10e-6)
    assert event_type == "llm_valid_execution"
    assert payload["output_messages"][0]["parts"][0]["content"] == "Rainy, 14°C."
    assert data["cache_creation_input_tokens"] == 40
    assert "_pgtrail_notes" not in data  # nothing needed cleaning
    assert prompt == SYSTEM_PROMPT

    agent_rows = rows(
        settings.dsn,
        "SELECT event_type, agent_type, particular_data FROM logs_agent_execution "
        "ORDER BY event_type",
    )
    by_type = {event: (agent, data) for event, agent, data in agent_rows}
    assert set(by_type) == {"agent_run", "retrieval", "tool_call", "workflow_run"}
    tool_agent, tool = by_type["tool_call"]
    assert tool_agent == "Triage"
    assert tool["tool"] == "get_weather"
    assert tool["args"] == {"location": "Paris"}
    assert tool["event_duration_ms"] == 80
    assert by_type["retrieval"][1]["top_ids"] == ["doc_123", "doc_456"]
    assert by_type["agent_run"][0] == "Triage"
    assert all("_pgtrail_notes" not in data for _, _, data in agent_rows)

    journey = rows(settings.dsn, "SELECT event_type FROM logs_user_journey ORDER BY created_at")
    assert [event for (event,) in journey] == ["request_received", "request_completed"]


def test_odd_input_still_reaches_the_database(settings: Settings) -> None:
    spans = [otel_span("chat gpt-4o", {**ODD_TOKENS, "app.blob": "z" * 2_000_000})]
    with Trail(settings, sync=True, max_field_chars=100_000) as trail:
        write(trail, spans)
        assert trail.flush()
    (tokens_in, data), *_ = rows(
        settings.dsn, "SELECT input_tokens, particular_data FROM logs_llm_execution"
    )
    assert tokens_in is None
    assert data["attributes"]["gen_ai.usage.input_tokens"] == -5
    assert len(data["attributes"]["app.blob"]) < 2_000_000  # capped by the writer


def test_every_family_s_records_are_stored_without_rejection_or_repair(settings: Settings) -> None:
    cases = GENAI_CASES + OPENINFERENCE_CASES + TRACELOOP_CASES + LOGFIRE_CASES
    mapped = [map_span(case.span, MappingOptions()) for case in cases]
    expected = dict.fromkeys(HELPERS, 0)
    with Trail(settings, sync=True) as trail, trail.execution("families"):
        for item in mapped:
            for record in item.records:
                HELPERS[record.table](**record.args)
                expected[record.table] += 1
    assert trail.stats.rejected == 0
    for table, count in expected.items():
        stored = rows(
            settings.dsn,
            f"SELECT count(*), count(*) FILTER (WHERE particular_data ? '_pgtrail_notes') "
            f"FROM {table}",
        )
        assert stored == [(count, 0)], table
