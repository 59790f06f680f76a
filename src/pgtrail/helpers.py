"""The module-level ``log_*`` helpers: log into the current execution, from anywhere below it.

Each finds the current execution and process (:mod:`pgtrail.context`), freezes what it
can on the caller's side, and hands the record to the execution's client
(:meth:`pgtrail.Trail.log_record`). None of them raises into the application outside
strict mode (:mod:`pgtrail.guard`).
"""

from __future__ import annotations

import uuid
from typing import Any

from pgtrail import context as execution_context
from pgtrail import guard
from pgtrail.context import ExecutionState, Span
from pgtrail.errors import NoActiveExecutionError
from pgtrail.models import AgentEvent
from pgtrail.scores import ScoreRequest
from pgtrail.tables import AGENT, JOURNEY, LLM
from pgtrail.writer.freeze import frozen_dict


def _current_or_none(helper: str) -> tuple[ExecutionState, Span | None] | None:
    state, span = execution_context.current()
    if state is None:
        message = (
            f"pgtrail: {helper} called outside any execution; open one with "
            "`with trail.execution(...)` or join one with `with trail.join(...)`"
        )
        if guard.strict_anywhere():
            raise NoActiveExecutionError(message)
        guard.report_once(f"none:{helper}", message)
        return None
    return state, span


def log_llm_execution(
    *,
    agent_type: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    event_type: str = "llm_valid_execution",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    processing_time_ms: int | None = None,
    time_to_first_token_ms: int | None = None,
    input_cost: float | None = None,
    output_cost: float | None = None,
    total_cost: float | None = None,
    prompt: str | None = None,
    prompt_hash: str | None = None,
    prompt_version: str | None = None,
    error: str | None = None,
    payload: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Logs one model call in the current execution and process.

    Give tokens and no cost to have the cost inferred from ``pgtrail_model_price`` (by
    ``model`` and the call's date). Never raises outside strict mode: text and JSON values
    are cleaned by the writer and what was changed is listed in ``_pgtrail_notes`` of
    ``particular_data``; a record that cannot be stored as given is refused alone, counted
    in ``Trail.stats.rejected`` and reported, and the other records are stored. In strict
    mode (``PGTRAIL_STRICT=1``) each of those cases raises
    :class:`~pgtrail.errors.ValidationError` here instead.

    Args:
        agent_type: Which agent made the call, e.g. ``"coaching"``.
        model: The model as the provider names it, e.g. ``"gpt-4o-mini"`` (stored as
            ``model_target``; the price table is matched on it).
        provider: Who served it, e.g. ``"openai"``.
        event_type: The outcome: ``"llm_valid_execution"`` (the default), ``"llm_error"``,
            ``"llm_timeout"``, ``"llm_rate_limited"`` or ``"llm_invalid_output"``
            (:data:`pgtrail.models.LLM_OUTCOMES`); another value refuses the record.
        input_tokens: Prompt tokens, cached ones included. Counts are whole numbers from 0
            to 2,147,483,647 (PostgreSQL ``integer``); a negative, fractional or larger
            count refuses the record.
        output_tokens: Completion tokens, reasoning ones included.
        cached_input_tokens: The part of ``input_tokens`` read from the provider's prompt
            cache (priced at the cached rate).
        reasoning_tokens: The part of ``output_tokens`` spent on reasoning.
        processing_time_ms: The call's latency in milliseconds, request to last token.
        time_to_first_token_ms: Milliseconds to the first streamed token.
        input_cost: What the input cost, in US dollars. Costs are given all three or
            any of them (``total_cost`` defaults to ``input_cost + output_cost``); NaN or
            infinite costs are stored as null and noted; none given means inferred.
        output_cost: What the output cost, in US dollars.
        total_cost: What the call cost in all, in US dollars.
        prompt: The prompt body (template or rendered text): stored once in
            ``pgtrail_prompt`` and referenced by its SHA-256 in ``prompt_hash``; redacted
            when redaction is on, dropped (the hash kept) when the execution is sampled out.
        prompt_hash: A hash of your own for the prompt, used when ``prompt`` is not given.
        prompt_version: Your label of the prompt's version, e.g. ``"v3"`` (reports compare
            versions).
        error: What went wrong, for a failed call.
        payload: The request and response bodies (messages, completion), a dict stored in
            ``payload``; a non-dict refuses the record. Dropped when the execution is
            sampled out.
        data: Anything else about the call, a dict merged into ``particular_data`` (with the
            execution's workflow and feature); a non-dict refuses the record.
    """
    try:
        current = _current_or_none("log_llm_execution")
        if current is not None:
            state, span = current
            # Frozen here rather than in the flusher's submit: the dictionary below then holds
            # only strings and numbers from the start (see pgtrail.writer.freeze).
            max_chars = state.trail.settings.max_field_chars
            data_json = frozen_dict(data, max_chars)
            payload_json = frozen_dict(payload, max_chars)
            # Every argument, None included: cheaper than filtering here, and the writer skips
            # the None values.
            args = {
                "agent_type": agent_type,
                "model": model,
                "provider": provider,
                "event_type": event_type,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_input_tokens": cached_input_tokens,
                "reasoning_tokens": reasoning_tokens,
                "processing_time_ms": processing_time_ms,
                "time_to_first_token_ms": time_to_first_token_ms,
                "input_cost": input_cost,
                "output_cost": output_cost,
                "total_cost": total_cost,
                "prompt": prompt,
                "prompt_hash": prompt_hash,
                "prompt_version": prompt_version,
                "error": error,
                "payload": None if payload_json is not None else payload,
                "data": None if data_json is not None else data,
            }
            # The execution's workflow and feature, added to particular_data by the writer.
            members_json = state.llm_members
            context = state.llm_context if members_json is None else None
            state.trail.log_record(
                state, span, LLM, args, data_json, payload_json, members_json, context
            )
    except Exception as exc:  # the one guard: never into the caller's application
        guard.swallow("log_llm_execution", exc, guard.strict_now())


def log_agent_execution(
    event: AgentEvent | None = None,
    *,
    agent_type: str | None = None,
    event_type: str | None = None,
    duration_ms: int | float | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Logs what an agent decided: a typed event model, or ``event_type`` with ``data``.

    Never raises outside strict mode: bad values are cleaned by the writer (and marked in
    ``_pgtrail_notes``), or the record is refused alone and reported.

    Args:
        event: A typed agent event (:class:`~pgtrail.AgentDecision`, :class:`~pgtrail.ToolCall`
            ...), or None.
        agent_type: Which agent, e.g. ``"coaching"``.
        event_type: The row's event type; by default the event model's, else
            ``"agent_event"``. NUL and lone surrogates are cleaned.
        duration_ms: How long the agent took, in milliseconds (a float is rounded; NaN and
            infinities are dropped, strict mode raises).
        data: More fields for ``particular_data``; a non-dict is stored as ``{"value": ...}``.
    """
    try:
        current = _current_or_none("log_agent_execution")
        if current is None:
            return
        args: dict[str, Any] = {"agent_type": agent_type}
        if event is not None:
            args["event"] = event
        if event_type is not None:
            args["event_type"] = event_type
        elif event is None:
            args["event_type"] = "agent_event"
        if duration_ms is not None:
            args["duration_ms"] = duration_ms
        if data is not None:
            args["data"] = data
        state, span = current
        state.trail.log_record(state, span, AGENT, args)
    except Exception as exc:  # the one guard: never into the caller's application
        guard.swallow("log_agent_execution", exc, guard.strict_now())


def log_user_journey(event_type: str, data: dict[str, Any] | None = None) -> None:
    """Logs one user-journey event (message, state transition, feedback...).

    Never raises outside strict mode: bad values are cleaned by the writer (and marked in
    ``_pgtrail_notes``), or the record is refused alone and reported.

    Args:
        event_type: What happened, e.g. ``"user_message_received"``; NUL and lone surrogates
            are cleaned, an empty one refuses the record.
        data: The event's facts for ``particular_data``; None is ``{}``, a non-dict is
            stored as ``{"value": ...}``.
    """
    try:
        current = _current_or_none("log_user_journey")
        if current is not None:
            state, span = current
            # `is None`, not `or`: the truth value of an array-like raises.
            args = {"event_type": event_type, "data": {} if data is None else data}
            state.trail.log_record(state, span, JOURNEY, args)
    except Exception as exc:  # the one guard: never into the caller's application
        guard.swallow("log_user_journey", exc, guard.strict_now())


def log_score(
    name: str,
    value: float | bool | str,
    *,
    comment: str | None = None,
    source: str | None = None,
    data: dict[str, Any] | None = None,
    execution_id: uuid.UUID | str | None = None,
    span_id: str | None = None,
    agent_type: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
) -> None:
    """Logs a score or piece of feedback: on the current execution, or on any by its id.

    Inside an execution it attaches to the current execution and process. With
    ``execution_id`` it attaches from any process, at any later time, keeping that
    execution's tenant, user and session (see :meth:`pgtrail.Trail.log_score`, which this
    calls on the current execution's client, else on the one open client). Never raises
    outside strict mode: a bad name or value, or no client to store it with, is said once
    in the log and the score is not stored.

    Args:
        name: What is scored, e.g. ``"helpfulness"``.
        value: A finite number, a bool (thumbs up ``True``) or a text (a category).
        comment: Why, in words, or None.
        source: Who scored: ``"human"``, ``"model"``, ``"rule"``... or None.
        data: More about the score, a dict, or None.
        execution_id: The execution scored, when it is not the current one.
        span_id: The process scored, when it is not the current one.
        agent_type: The agent whose work is scored, or None.
        tenant_id: The tenant for an execution neither Redis nor PostgreSQL knows.
        user_id: The user, on the same terms as ``tenant_id``.
        session_id: The session, on the same terms as ``tenant_id``.
    """
    try:
        request = ScoreRequest(
            name,
            value,
            comment,
            source,
            data,
            execution_id,
            span_id,
            agent_type,
            tenant_id,
            user_id,
            session_id,
        )
        state, _ = execution_context.current()
        if state is not None:
            state.trail.attach_score(request)
            return
        clients = list(guard.live_clients)
        if len(clients) == 1:
            clients[0].attach_score(request)
            return
        message = (
            "pgtrail: log_score outside any execution needs one open client; "
            + ("none is open" if not clients else f"{len(clients)} are open")
            + ": call trail.log_score(...) on the one to use"
        )
        if guard.strict_anywhere():
            raise NoActiveExecutionError(message)
        guard.report_once("log_score:clients", message)
    except Exception as exc:  # the one guard: never into the caller's application
        guard.swallow("log_score", exc, guard.strict_now())
