"""A record's JSON values serialised on the caller's thread, when they are clean.

A queued record that holds dictionaries or models keeps them on the garbage collector's
lists until the writer takes it; with tens of thousands waiting behind a busy writer, the
collector's passes over them cost more than preparing them. Serialised at once, a record
holds only strings and numbers: its arguments dictionary is not tracked at all. It also
fixes what is stored at the moment of the call: a caller that changes its dictionary
afterwards does not change the record it logged.

Only clean values are frozen (what ``orjson`` writes with no NaN, NUL or oversized text);
anything else stays as it was, for the writer's sanitiser to clean and explain.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel

from pgtrail.models import AgentEvent
from pgtrail.tables import AGENT, JOURNEY, LLM
from pgtrail.writer.record import QueuedRecord

# Rejects NaN and infinities in one C call, where orjson would silently write null.
_NAN_CHECK = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_AGENT_ARGS = frozenset({"agent_type", "event", "event_type", "duration_ms", "data"})
_JOURNEY_ARGS = frozenset({"event_type", "data"})
_EVENT_FIELDS: dict[type[BaseModel], tuple[tuple[str, str], ...] | None] = {}


def clean_json(value: Any, max_chars: int, *, may_hold_nan: bool = True) -> str | None:
    """``value`` as compact JSON in one C call; None when it needs the sanitiser's walk."""
    # This runs on the caller's thread, so it never raises: whatever fails here is left to
    # the sanitiser, in the writer.
    try:
        # orjson refuses surrogates, non-str keys, cycles, deep nesting and unknown types.
        raw = orjson.dumps(value)
    except Exception:
        return None
    text = raw.decode()  # `in` on str is several times cheaper than on bytes
    if len(text) > max_chars or "\\u0000" in text:
        return None  # an oversized field, or NUL, which jsonb refuses
    if may_hold_nan and "null" in text:
        # orjson writes NaN and infinities as null: the sanitiser says what it changed.
        try:
            _NAN_CHECK.encode(value)
        except Exception:  # NaN or infinity, or a float subclass whose repr fails
            return None
    return text


def frozen_dict(value: Any, max_chars: int) -> str | None:
    """A clean dictionary's JSON; None for anything else (left for the writer)."""
    return clean_json(value, max_chars) if type(value) is dict else None


def splice(obj: str, members: str) -> str:
    """JSON object text with ``members`` added last: on a repeated key jsonb keeps the last."""
    if not members:
        return obj
    if obj == "{}":
        return "{" + members + "}"
    return obj[:-1] + "," + members + "}"


def members(value: dict[str, Any], max_chars: int) -> str | None:
    """A dictionary's non-null entries as JSON object members, or None when not clean."""
    text = clean_json({k: v for k, v in value.items() if v is not None}, max_chars)
    return None if text is None else text[1:-1]


def event_fields(event: AgentEvent) -> dict[str, Any] | None:
    """``model_dump(by_alias=True, exclude_none=True)`` of a flat event model, cheaply.

    None for a model that serialises itself (serializers, computed or excluded fields):
    those keep their model for the writer.
    """
    fields = _field_names(type(event))
    if fields is None:
        return None
    values = event.__dict__
    dumped = {alias: v for name, alias in fields if (v := values.get(name)) is not None}
    extra = event.__pydantic_extra__
    if extra:
        dumped.update((k, v) for k, v in extra.items() if v is not None)
    return dumped


def _field_names(model: type[BaseModel]) -> tuple[tuple[str, str], ...] | None:
    if model in _EVENT_FIELDS:
        return _EVENT_FIELDS[model]
    decorators = model.__pydantic_decorators__
    names: tuple[tuple[str, str], ...] | None = None
    if not (
        decorators.field_serializers
        or decorators.model_serializers
        or model.model_computed_fields
        or any(f.exclude for f in model.model_fields.values())
    ):
        names = tuple(
            (name, f.serialization_alias or f.alias or name)
            for name, f in model.model_fields.items()
        )
    _EVENT_FIELDS[model] = names
    return names


def freeze(record: QueuedRecord, max_chars: int) -> QueuedRecord:
    """``record`` with its clean dictionaries (and agent event model) serialised as JSON.

    Args:
        record: The record as enqueued.
        max_chars: The longest text a value may hold to be frozen (``max_field_chars``).

    Returns:
        A new record whose arguments the garbage collector never tracks when everything in
        them is a string or a number; ``record`` itself when nothing could be frozen.
    """
    table, args = record.table, record.args
    if table == LLM:
        frozen_data = frozen_dict(args.get("data"), max_chars)
        frozen_payload = frozen_dict(args.get("payload"), max_chars)
        if frozen_data is None and frozen_payload is None:
            return record  # nothing to freeze (log_llm_execution froze it already)
        # Built without the frozen dictionaries: a dict that once held one stays tracked.
        frozen = (*(("data",) if frozen_data else ()), *(("payload",) if frozen_payload else ()))
        thin = {k: v for k, v in args.items() if v is not None and k not in frozen}
        return record._replace(
            args=thin,
            data_json=frozen_data if frozen_data is not None else record.data_json,
            payload_json=frozen_payload if frozen_payload is not None else record.payload_json,
        )
    if table == AGENT:
        data = args.get("data")
        if data is not None and type(data) is not dict:
            return record
        event = args.get("event")
        if event is not None:
            if not isinstance(event, AgentEvent) or (dumped := event_fields(event)) is None:
                return record
            if data:
                dumped.update(data)
            data = dumped
        if data is None or (text := clean_json(data, max_chars)) is None:
            return record
        event_type = args.get("event_type")
        if event_type is None and event is not None:
            event_type = type(event).event_type
        # Built key by key: a comprehension costs more, and a copy of a dictionary that
        # held a dictionary stays tracked.
        thin = {
            "agent_type": args.get("agent_type"),
            "event_type": event_type,
            "duration_ms": args.get("duration_ms"),
        }
        if not args.keys() <= _AGENT_ARGS:  # something more: the writer says what
            thin.update((k, v) for k, v in args.items() if k not in _AGENT_ARGS)
        return record._replace(args=thin, data_json=text)
    if table == JOURNEY:
        data = args.get("data")
        if type(data) is dict and (text := clean_json(data, max_chars)) is not None:
            thin = {"event_type": args.get("event_type")}
            if not args.keys() <= _JOURNEY_ARGS:  # something more: the writer says what
                thin.update((k, v) for k, v in args.items() if k not in _JOURNEY_ARGS)
            return record._replace(args=thin, data_json=text)
    return record


def thaw(record: QueuedRecord) -> QueuedRecord:
    """``record`` as the caller gave it: frozen JSON parsed back into its arguments.

    Args:
        record: A record, frozen or not.
    """
    if record.data_json is None and record.payload_json is None and record.context_members is None:
        return record
    args = dict(record.args)
    if record.data_json is not None:
        args["data"] = orjson.loads(record.data_json)
    if record.payload_json is not None:
        args["payload"] = orjson.loads(record.payload_json)
    context = record.context
    if record.context_members is not None:
        context = orjson.loads("{" + record.context_members + "}")
    return record._replace(
        args=args, data_json=None, payload_json=None, context_members=None, context=context
    )
