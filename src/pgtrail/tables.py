"""The tables pgtrail writes, and the column order its ``COPY`` statements use.

The single source of both: the writer composes its ``COPY`` statements and row text from
:data:`COLUMNS`, the read side names tables from here, and ``tests/test_tables.py`` checks
every column and type against the migrated database.
"""

from __future__ import annotations

from typing import Final

LLM: Final = "logs_llm_execution"
"""One row per model call: tokens, cost, latency, outcome."""
AGENT: Final = "logs_agent_execution"
"""One row per agent event: decisions, tool calls, compressions, handoffs."""
JOURNEY: Final = "logs_user_journey"
"""One row per user-journey event."""
EXECUTION: Final = "logs_execution"
"""One row per workflow execution, with its nested process records."""
PROMPT: Final = "pgtrail_prompt"
"""Prompt bodies, stored once and referenced by hash."""
MODEL_PRICE: Final = "pgtrail_model_price"
"""The price per token of each provider's models, by date."""
OTLP_SPAN_JOURNAL: Final = "pgtrail_otlp_span"
"""Spans the OTLP receiver acknowledged and has not yet stored as rows."""

ROLLUP_LLM: Final = "pgtrail_rollup_llm"
"""Model calls per UTC hour, tenant, agent, provider, model, prompt version and outcome."""
ROLLUP_LLM_OUTCOME: Final = "pgtrail_rollup_llm_outcome"
"""Model calls per UTC hour, tenant, feature, model and outcome."""
ROLLUP_TABLES: Final = (ROLLUP_LLM, ROLLUP_LLM_OUTCOME)
"""The rollup tables, kept by the insert trigger on the calls and by ``pgtrail rollup``."""

LOG_TABLES: Final = (EXECUTION, JOURNEY, AGENT, LLM)
"""The four log tables, keyed by ``execution_id`` and partitioned by day on ``created_at``."""

_COMMON: Final = (
    ("event_id", "uuid"),
    ("execution_id", "uuid"),
    ("created_at", "timestamptz"),
    ("tenant_id", "text"),
    ("user_id", "text"),
    ("session_id", "text"),
    ("span_id", "text"),
    ("event_type", "text"),
    ("particular_data", "jsonb"),
)

COLUMNS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    LLM: (
        *_COMMON,
        ("agent_type", "text"),
        ("provider", "text"),
        ("model_target", "text"),
        ("prompt_hash", "text"),
        ("prompt_version", "text"),
        ("input_tokens", "int4"),
        ("output_tokens", "int4"),
        ("cached_input_tokens", "int4"),
        ("reasoning_tokens", "int4"),
        ("processing_time_ms", "int4"),
        ("time_to_first_token_ms", "int4"),
        ("input_cost", "numeric"),
        ("output_cost", "numeric"),
        ("total_cost", "numeric"),
        ("error", "text"),
        ("payload", "jsonb"),
    ),
    AGENT: (*_COMMON, ("agent_type", "text")),
    JOURNEY: _COMMON,
    EXECUTION: (
        *_COMMON,
        ("workflow", "text"),
        ("parent_execution_id", "uuid"),
        ("status", "text"),
        ("error", "text"),
        ("processes_executed", "jsonb"),
        ("context", "jsonb"),
        ("finalized_at", "timestamptz"),
        ("duration_ms", "int4"),
    ),
    PROMPT: (("prompt_hash", "text"), ("body", "text"), ("body_chars", "int4")),
}
"""Each written table's columns in ``COPY`` order, with their PostgreSQL types."""
