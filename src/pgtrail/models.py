"""Pydantic models of the records pgtrail writes, and of the typed agent events.

The ``log_*`` helpers only stamp and enqueue; these models validate each record in the
background flusher (or at once, in strict mode). Unknown agent event types are accepted
as plain dictionaries.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

LlmOutcome = Literal[
    "llm_valid_execution", "llm_error", "llm_timeout", "llm_rate_limited", "llm_invalid_output"
]
LLM_OUTCOMES: frozenset[str] = frozenset(LlmOutcome.__args__)  # type: ignore[attr-defined]


class AgentEvent(BaseModel):
    """Base of the typed agent events; ``event_type`` names the row's event type."""

    model_config = ConfigDict(extra="allow")
    event_type: ClassVar[str] = "agent_event"


class AgentDecision(AgentEvent):
    """What the agent decided: the ``agent_decisions`` tree."""

    event_type: ClassVar[str] = "agent_decision"
    decisions: dict[str, Any] = Field(default_factory=dict, serialization_alias="agent_decisions")


class ContextCompression(AgentEvent):
    """A context-compression choice: the ``context_management`` tree."""

    event_type: ClassVar[str] = "context_compression"
    context_management: dict[str, Any] = Field(default_factory=dict)


class ToolCall(AgentEvent):
    """One tool invocation with its permission outcome and (redacted) arguments."""

    event_type: ClassVar[str] = "tool_call"
    tool: str
    call_id: str | None = None
    args: dict[str, Any] | None = None
    permission: Literal["allowed", "denied", "needs_confirmation"] | None = None
    approval: Literal["approved", "rejected", "not_required"] | None = None
    latency_ms: NonNegativeInt | None = None
    error: str | None = None
    result: Any = None


class Retrieval(AgentEvent):
    """A knowledge look-up: query, how many documents, which, how relevant."""

    event_type: ClassVar[str] = "retrieval"
    query: str | None = None
    doc_count: NonNegativeInt = 0
    top_ids: list[str] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list)


class Guardrail(AgentEvent):
    """A safety or policy check and what it did."""

    event_type: ClassVar[str] = "guardrail"
    name: str
    passed: bool
    action: str | None = None


class Handoff(AgentEvent):
    """Control passed from one agent to another."""

    event_type: ClassVar[str] = "handoff"
    from_agent: str
    to_agent: str
    reason: str | None = None


class LlmCallRecord(BaseModel):
    """One model call, as ``log_llm_execution`` takes it."""

    model_config = ConfigDict(extra="forbid")
    event_type: LlmOutcome = "llm_valid_execution"
    agent_type: str | None = None
    provider: str | None = None
    model: str | None = None
    prompt: str | None = None
    prompt_hash: str | None = None
    prompt_version: str | None = None
    input_tokens: NonNegativeInt | None = None
    output_tokens: NonNegativeInt | None = None
    cached_input_tokens: NonNegativeInt | None = None
    reasoning_tokens: NonNegativeInt | None = None
    processing_time_ms: NonNegativeInt | None = None
    time_to_first_token_ms: NonNegativeInt | None = None
    input_cost: NonNegativeFloat | None = None
    output_cost: NonNegativeFloat | None = None
    total_cost: NonNegativeFloat | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


class AgentRecord(BaseModel):
    """One agent event, as ``log_agent_execution`` takes it."""

    model_config = ConfigDict(extra="forbid")
    event_type: str = Field(min_length=1, max_length=200)
    agent_type: str | None = None
    duration_ms: NonNegativeInt | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class JourneyRecord(BaseModel):
    """One user-journey event, as ``log_user_journey`` takes it."""

    model_config = ConfigDict(extra="forbid")
    event_type: str = Field(min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)
