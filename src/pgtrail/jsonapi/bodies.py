"""What a request to the JSON API says, validated: its execution, processes and events.

Two kinds of fields, judged differently. The execution's and the processes' fields are the
request's structure: one that is malformed refuses the whole request (:class:`BodyError`,
nothing is stored). Events are data: each is validated on its own, with the models the
Python writer validates against (:mod:`pgtrail.models`), and one that is malformed is left
out and named (:class:`RejectedEvent`) while the others are stored.

An event is ``{"type": "llm" | "agent" | "journey", ...}`` with the keyword arguments of
:func:`pgtrail.log_llm_execution`, :func:`pgtrail.log_agent_execution` or
:func:`pgtrail.log_user_journey`, plus ``created_at``, ``event_id`` and ``process``. A typed
agent event (``AgentDecision``, ``ToolCall``...) gives its fields in ``event`` and names its
model with ``event_type``.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from pgtrail.models import (
    AgentDecision,
    AgentEvent,
    AgentRecord,
    ContextCompression,
    Guardrail,
    Handoff,
    JourneyRecord,
    LlmCallRecord,
    Retrieval,
    ToolCall,
)
from pgtrail.tables import AGENT, JOURNEY, LLM
from pgtrail.writer.copytext import INT4_MAX

ID_MAX_CHARS = 200
"""Longest process id a client may give."""

AGENT_EVENT_MODELS: Mapping[str, type[AgentEvent]] = {
    model.event_type: model
    for model in (AgentDecision, ContextCompression, ToolCall, Retrieval, Guardrail, Handoff)
}
"""The typed agent events by the ``event_type`` that names them in a request."""

_ENVELOPE = frozenset({"type", "created_at", "event_id", "process"})
_LLM_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "processing_time_ms",
    "time_to_first_token_ms",
)
_TOO_LARGE = f"larger than {INT4_MAX:,}, the most its integer column holds"


def _utc(value: dt.datetime) -> dt.datetime:
    """A time in UTC; one without an offset is taken as UTC (as the writer does)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


Time = Annotated[dt.datetime, AfterValidator(_utc)]
"""ISO 8601 text (UTC unless it has an offset), or Unix seconds or milliseconds."""


def _id_text(value: Any) -> Any:
    """A whole number as its decimal text (as ``Trail`` stores an int user id)."""
    return str(value) if type(value) is int else value


Identifier = Annotated[str, BeforeValidator(_id_text)]
"""A tenant, user or session id: text, or a whole number stored as its decimal text."""
ProcessId = Annotated[str, Field(min_length=1, max_length=ID_MAX_CHARS)]
"""A client's own id of a process, unique within its execution."""


@dataclass(frozen=True)
class FieldError:
    """One field that could not be taken, and why."""

    field: str
    """Where it is, as a path from the part being judged (``input_tokens``, ``event.tool``)."""
    message: str
    """What is wrong with it."""


class BodyError(Exception):
    """The request's structure is malformed; nothing of it is stored.

    Args:
        message: What is wrong, in one line.
        errors: Each field at fault, as a path from the body's root.
    """

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


@dataclass(frozen=True)
class RejectedEvent:
    """An event left out of its request, and why."""

    path: str
    """Where it is in the body, e.g. ``events[2]`` or ``processes[0].events[1]``."""
    index: int
    """Its position in the list that holds it."""
    errors: tuple[FieldError, ...]
    """Each field at fault, as a path from the event."""


@dataclass(frozen=True)
class ValidEvent:
    """An event whose fields the writer's models accept."""

    table: str
    """The log table it goes to."""
    args: dict[str, Any]
    """The arguments of the matching ``log_*`` function, validated."""
    created_at: dt.datetime | None
    """When it happened, or None to take the request's default."""
    event_id: uuid.UUID | None
    """The client's own event id, or None."""
    process: str | None
    """The id of the process it happened in, or None."""


# -- the structure ---------------------------------------------------------------------------


class _Structure(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProcessIn(_Structure):
    """One process (step): its name, times, outcome, nested processes and events.

    Nest processes in ``processes``, or name the parent by ``parent`` (a process of this
    request, or, in the incremental form, one added earlier).
    """

    id: ProcessId | None = None
    name: str = Field(min_length=1)
    parent: ProcessId | None = None
    started_at: Time | None = None
    ended_at: Time | None = None
    duration_ms: Annotated[int, Field(ge=0, le=INT4_MAX)] | None = None
    status: Literal["success", "error", "running"] | None = None
    error: str | None = None
    processes: list[ProcessIn] = Field(default_factory=list)
    events: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ended_at is not None and self.duration_ms is not None:
            raise ValueError("give ended_at or duration_ms, not both")
        if self.status == "running" and (self.ended_at is not None or self.duration_ms):
            raise ValueError("a running process has no ended_at or duration_ms")
        if self.started_at and self.ended_at:
            if self.ended_at < self.started_at:
                raise ValueError("ended_at is before started_at")
            if (self.ended_at - self.started_at).total_seconds() * 1000 > INT4_MAX:
                raise ValueError(f"the process lasts {_TOO_LARGE} milliseconds")
        return self


class IdentityIn(_Structure):
    """Who the execution belongs to."""

    tenant_id: Identifier | None = None
    user_id: Identifier | None = None
    session_id: Identifier | None = None


class OpenIn(IdentityIn):
    """``POST /v1/executions/open``: an execution that later requests add to and finish."""

    workflow: str = Field(min_length=1)
    execution_id: uuid.UUID | None = None
    parent_execution_id: uuid.UUID | None = None
    context: dict[str, Any] | None = None
    started_at: Time | None = None


class ExecutionIn(OpenIn):
    """``POST /v1/executions``: a whole execution at once."""

    status: Literal["success", "error", "abandoned"] | None = None
    error: str | None = None
    finalized_at: Time | None = None
    processes: list[ProcessIn] = Field(default_factory=list)
    events: list[Any] = Field(default_factory=list)


class AppendIn(IdentityIn):
    """``POST /v1/executions/{id}/events``: processes and events added to an execution.

    The identity fields are used only when the execution is neither open nor stored (as
    :meth:`pgtrail.Trail.join` uses its arguments).
    """

    processes: list[ProcessIn] = Field(default_factory=list)
    events: list[Any] = Field(default_factory=list)


class FinishIn(AppendIn):
    """``POST /v1/executions/{id}/finish``: the outcome, with last processes and events."""

    status: Literal["success", "error", "abandoned"] | None = None
    error: str | None = None
    finalized_at: Time | None = None


Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], document: Any) -> Body:
    """The request body as ``model``.

    Args:
        model: The body's model (:class:`ExecutionIn`, :class:`OpenIn`...).
        document: The parsed JSON document.

    Raises:
        BodyError: It is not a JSON object, or a field of the structure is malformed.
    """
    if not isinstance(document, dict):
        raise BodyError(f"the body must be a JSON object, not {_json_kind(document)}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = field_errors(exc)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BodyError(f"{first.field}: {first.message}{more}", errors) from None


# -- events ----------------------------------------------------------------------------------


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["llm", "agent", "journey"]
    created_at: Time | None = None
    event_id: uuid.UUID | None = None
    process: ProcessId | None = None


def validate_event(raw: Any, path: str, index: int) -> ValidEvent | RejectedEvent:
    """One event, validated on its own.

    Args:
        raw: The event as parsed from JSON.
        path: Where it is in the body, for the answer.
        index: Its position in the list that holds it.
    """
    if not isinstance(raw, dict):
        message = f"an event must be a JSON object, not {_json_kind(raw)}"
        return RejectedEvent(path, index, (FieldError("event", message),))
    errors: list[FieldError] = []
    envelope: _Envelope | None = None
    try:
        envelope = _Envelope.model_validate({k: v for k, v in raw.items() if k in _ENVELOPE})
    except ValidationError as exc:
        errors += field_errors(exc)
    body = {k: v for k, v in raw.items() if k not in _ENVELOPE}
    kind = raw.get("type")
    table, args = "", {}
    if kind == "llm":
        table, args = LLM, _collect(errors, _llm_args, body)
    elif kind == "agent":
        table, args = AGENT, _collect(errors, _agent_args, body)
    elif kind == "journey":
        table, args = JOURNEY, _collect(errors, _journey_args, body)
    if errors or envelope is None:
        return RejectedEvent(path, index, tuple(errors))
    return ValidEvent(table, args, envelope.created_at, envelope.event_id, envelope.process)


_Maker = Callable[[dict[str, Any]], tuple[dict[str, Any], list[FieldError]]]


def _collect(errors: list[FieldError], make: _Maker, body: dict[str, Any]) -> dict[str, Any]:
    args, found = make(body)
    errors += found
    return dict(args)


def _llm_args(body: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """The arguments of ``log_llm_execution``, as :class:`LlmCallRecord` takes them."""
    try:
        call = LlmCallRecord.model_validate(body)
    except ValidationError as exc:
        return {}, list(field_errors(exc))
    args = call.model_dump(exclude_none=True)
    # Refused by the writer later, when the answer has been given: refused here instead.
    errors = [FieldError(name, _TOO_LARGE) for name in _LLM_COUNTS if args.get(name, 0) > INT4_MAX]
    return ({}, errors) if errors else (args, [])


def _agent_args(body: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """The arguments of ``log_agent_execution``: :class:`AgentRecord`, and a typed event."""
    errors: list[FieldError] = []
    fields = dict(body)
    raw_event = fields.pop("event", None)
    event_type = fields.get("event_type")
    duration = fields.get("duration_ms")
    if isinstance(duration, float) and math.isfinite(duration):
        fields["duration_ms"] = round(duration)  # the writer rounds a float duration too
    if event_type is None and raw_event is None:
        fields["event_type"] = "agent_event"
    if raw_event is not None and event_type is None:
        errors.append(FieldError("event_type", "required with event: it names the event model"))
    record: AgentRecord | None = None
    try:
        record = AgentRecord.model_validate(fields)
    except ValidationError as exc:
        errors += field_errors(exc)
    event: AgentEvent | None = None
    if raw_event is not None and isinstance(event_type, str):
        model = AGENT_EVENT_MODELS.get(event_type)
        if model is None:
            known = ", ".join(sorted(AGENT_EVENT_MODELS))
            message = (
                f"typed fields are known for event_type {known}; "
                f"for {event_type!r} give them in data"
            )
            errors.append(FieldError("event", message))
        else:
            try:
                event = model.model_validate(raw_event)
            except ValidationError as exc:
                errors += field_errors(exc, "event")
    if record is not None and (record.duration_ms or 0) > INT4_MAX:
        errors.append(FieldError("duration_ms", _TOO_LARGE))
    if errors or record is None:
        return {}, errors
    args: dict[str, Any] = {"agent_type": record.agent_type, "event_type": record.event_type}
    if record.duration_ms is not None:
        args["duration_ms"] = record.duration_ms
    if "data" in body:
        args["data"] = record.data
    if event is not None:
        args["event"] = event
    return args, []


def _journey_args(body: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """The arguments of ``log_user_journey``, as :class:`JourneyRecord` takes them."""
    try:
        record = JourneyRecord.model_validate(body)
    except ValidationError as exc:
        return {}, list(field_errors(exc))
    return {"event_type": record.event_type, "data": record.data}, []


# -- errors ----------------------------------------------------------------------------------


def field_errors(exc: ValidationError, prefix: str = "") -> tuple[FieldError, ...]:
    """Each error of a pydantic validation as a field path and a message.

    Args:
        exc: What pydantic raised.
        prefix: A path to put before each field (``event`` gives ``event.tool``).
    """
    found = []
    for error in exc.errors(include_url=False):
        path = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part:
                path = f"{path}.{part}" if path else str(part)
        message = str(error["msg"]).removeprefix("Value error, ")
        found.append(FieldError(path or "body", message))
    return tuple(found)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
