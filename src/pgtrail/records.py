"""Turns what the ``log_*`` helpers enqueued into rows ready for COPY.

This runs in the background flusher, off the caller's path: validation against the models,
sanitising (NUL bytes, surrogates, NaN, oversized fields, cycles), redaction, user-id
hashing, cost inference and prompt hashing. A record that cannot be stored is rejected
alone, with a reason; the rest of its batch goes on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pydantic

from pgtrail.config import Settings
from pgtrail.errors import ValidationError
from pgtrail.models import LLM_OUTCOMES, AgentEvent, AgentRecord, JourneyRecord, LlmCall
from pgtrail.pricing import PriceBook
from pgtrail.redact import Redactor, hash_user_id
from pgtrail.sampling import MARK, SAMPLED_OUT, mark, strip_bodies
from pgtrail.sanitize import Sanitizer, dumps
from pgtrail.sink import AGENT, COLUMNS, EXECUTION, JOURNEY, LLM, PROMPT_TABLE
from pgtrail.spool import Batch, Row

INT4_MAX = 2_147_483_647
_INT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "processing_time_ms",
    "time_to_first_token_ms",
)
_COST_FIELDS = ("input_cost", "output_cost", "total_cost")
_LLM_TEXT_FIELDS = ("agent_type", "provider", "model", "prompt_hash", "prompt_version", "error")
_KNOWN_PROMPTS_MAX = 10_000
_KNOWN_PROMPTS_TTL_S = 3600.0
_LLM_PLAIN_TYPES: dict[str, type] = {
    **dict.fromkeys(_INT_FIELDS, int),
    **dict.fromkeys(_COST_FIELDS, float),
    **dict.fromkeys((*_LLM_TEXT_FIELDS, "event_type"), str),
    "prompt": str,  # long bodies are cleaned by _text below
    "payload": dict,
    "data": dict,
}
_LLM_COLUMNS = [name for name, _ in COLUMNS[LLM]]
_MODEL = _LLM_COLUMNS.index("model_target")
_INPUT_TOKENS = _LLM_COLUMNS.index("input_tokens")
_OUTPUT_TOKENS = _LLM_COLUMNS.index("output_tokens")
_CACHED_TOKENS = _LLM_COLUMNS.index("cached_input_tokens")
_INPUT_COST = _LLM_COLUMNS.index("input_cost")
_TOTAL_COST = _LLM_COLUMNS.index("total_cost")

Stamp = tuple[uuid.UUID, uuid.UUID, dt.datetime, str, str | None, str | None, str | None]
"""event_id, execution_id, created_at, tenant_id, user_id, session_id, span_id."""

Item = tuple[str, Stamp, dict[str, Any]]
"""What the ``log_*`` helpers enqueue: table, stamp, the caller's arguments."""


@dataclass(frozen=True)
class Rejected:
    """A record that was not stored, and why."""

    table: str
    event_id: uuid.UUID | None
    reason: str


class RecordError(Exception):
    """One record cannot be stored; the message says which field and why."""


def _finite_or_none(value: Any, field: str, notes: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{field}: {value!r} is not a number; stored as null")
        return None
    return value


def _int4(value: int | None, field: str) -> int | None:
    if value is not None and value > INT4_MAX:
        raise RecordError(f"{field}={value} is larger than {INT4_MAX}")
    return value


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


def _plain_llm_call(args: dict[str, Any], max_chars: int) -> bool:
    """True when every argument already has its exact, clean type (no validation needed)."""
    for key, value in args.items():
        kind = _LLM_PLAIN_TYPES.get(key)
        if kind is int:
            if not (type(value) is int and 0 <= value <= INT4_MAX):
                return False
        elif kind is float:
            if not (type(value) in (int, float) and value >= 0 and math.isfinite(value)):
                return False
        elif kind is str:
            if not (
                type(value) is str
                and len(value) <= max_chars
                and value.isascii()
                and "\x00" not in value
            ):
                return False
        elif kind is None or type(value) is not kind:
            return False
    return args.get("event_type", "llm_valid_execution") in LLM_OUTCOMES


def _pydantic_reason(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class RecordPreparer:
    """Validates and cleans enqueued records into table rows."""

    def __init__(self, settings: Settings, prices: PriceBook) -> None:
        self.settings = settings
        self.prices = prices
        self.sanitizer = Sanitizer(max_field_chars=settings.max_field_chars, strict=False)
        self.redactor = Redactor() if settings.redact else None
        self._known_prompts: OrderedDict[str, float] = OrderedDict()

    def prepare(self, items: list[Item]) -> tuple[Batch, list[Rejected]]:
        """Rows grouped by table, and the records that could not be stored."""
        batch: Batch = {}
        rejected: list[Rejected] = []
        for table, stamp, args in items:
            try:
                rows = self.prepare_one(table, stamp, args)
            except (RecordError, ValidationError) as exc:
                rejected.append(Rejected(table, stamp[0], str(exc)))
                continue
            except pydantic.ValidationError as exc:
                rejected.append(Rejected(table, stamp[0], _pydantic_reason(exc)))
                continue
            except Exception as exc:  # one record never costs the others their place
                rejected.append(Rejected(table, stamp[0], f"{type(exc).__name__}: {exc}"))
                continue
            for target, row in rows:
                batch.setdefault(target, []).append(row)
        return batch, rejected

    def prepare_one(self, table: str, stamp: Stamp, args: dict[str, Any]) -> list[tuple[str, Row]]:
        """Rows for one record (an LLM call may add its prompt body)."""
        notes: list[str] = []
        common = self._common(stamp, notes)
        sampled_out: float | None = args.get(SAMPLED_OUT)
        if sampled_out is not None:  # a sampled-out execution's record: bodies are dropped
            args = {k: v for k, v in args.items() if k != SAMPLED_OUT}
        if table == LLM:
            return self._llm(common, stamp[2], args, notes, sampled_out)
        if table == AGENT:
            return [(AGENT, self._agent(common, args, notes, sampled_out))]
        if table == JOURNEY:
            record = JourneyRecord.model_validate(args)
            event_type = self._text(record.event_type, "event_type", notes)
            data, extra = _without_bodies(record.data, sampled_out)
            return [(JOURNEY, (*common, event_type, self._json(data, "data", notes, extra)))]
        if table == EXECUTION:
            return [(EXECUTION, self._execution(common, args, notes))]
        raise RecordError(f"unknown record kind {table!r}")

    def check(self, table: str, stamp: Stamp, args: dict[str, Any]) -> None:
        """Strict mode: raises ValidationError for anything that would be cleaned or refused."""
        # A preparer of its own: this runs on the caller's thread while the flusher uses
        # this one, and a trial run must not mark the prompt body as already stored.
        checker = RecordPreparer(self.settings, self.prices)
        checker.sanitizer = Sanitizer(max_field_chars=self.settings.max_field_chars, strict=True)
        try:
            checker.prepare_one(table, stamp, dict(args))
        except pydantic.ValidationError as exc:
            raise ValidationError(f"{table}: {_pydantic_reason(exc)}") from exc
        except RecordError as exc:
            raise ValidationError(f"{table}: {exc}") from exc

    # -- pieces -------------------------------------------------------------------------

    def _text(self, value: Any, field: str, notes: list[str]) -> str | None:
        if (
            type(value) is str
            and self.redactor is None
            and len(value) <= self.settings.max_field_chars
            and value.isascii()
            and "\x00" not in value
        ):
            return value  # the common case: nothing to clean
        clean, problems = self.sanitizer.text(value, field)
        notes.extend(problems)
        if clean is not None and self.redactor is not None:
            clean = self.redactor.redact_text(clean)
        return clean

    def _json(
        self, value: Any, field: str, notes: list[str], extra: dict[str, Any] | None = None
    ) -> str:
        if value is None:
            value = {}
        if extra:
            value = {**(value if isinstance(value, dict) else {"value": value}), **extra}
        if self.redactor is None and not notes:
            fast = self._fast_dumps(value)
            if fast is not None:
                return fast
        clean, problems = self.sanitizer.json(value, field)
        notes.extend(problems)
        if self.redactor is not None:
            clean = self.redactor.redact_json(clean)
        if notes:
            clean = dict(clean) if isinstance(clean, dict) else {"value": clean}
            clean["_pgtrail_notes"] = list(notes)
        return dumps(clean)

    def _fast_dumps(self, value: Any) -> str | None:
        """Serialises clean data in one C call; None when it needs the sanitiser's walk."""
        try:
            # orjson refuses surrogates, non-str keys, cycles, deep nesting and unknown
            # types: all left to the sanitiser.
            raw = orjson.dumps(value)
        except (TypeError, ValueError, RecursionError):
            return None
        if len(raw) > self.settings.max_field_chars or b"\\u0000" in raw or b"null" in raw:
            # An oversized field; NUL, which jsonb refuses; or a null that may have been a
            # NaN (orjson writes those as null): the sanitiser says what it changed.
            return None
        return raw.decode()

    def _common(self, stamp: Stamp, notes: list[str]) -> tuple[Any, ...]:
        event_id, execution_id, created_at, tenant_id, user_id, session_id, span_id = stamp
        user = self._text(user_id, "user_id", notes) if user_id is not None else None
        if user is not None and self.settings.user_hmac_key:
            user = hash_user_id(user, self.settings.user_hmac_key)
        return (
            event_id,
            execution_id,
            created_at,
            self._text(tenant_id, "tenant_id", notes) or "default",
            user,
            self._text(session_id, "session_id", notes) if session_id is not None else None,
            span_id,
        )

    def _llm(
        self,
        common: tuple[Any, ...],
        created_at: dt.datetime,
        args: dict[str, Any],
        notes: list[str],
        sampled_out: float | None = None,
    ) -> list[tuple[str, Row]]:
        args = dict(args)
        context = args.pop("_context", None)
        plain = self.redactor is None and _plain_llm_call(args, self.settings.max_field_chars)
        call = args if plain else self._validated_llm_call(args, notes)
        get = call.get
        for field in _INT_FIELDS:
            _int4(get(field), field)
        input_cost, output_cost, total_cost = (
            _decimal(get("input_cost")),
            _decimal(get("output_cost")),
            _decimal(get("total_cost")),
        )
        if input_cost is None and output_cost is None and total_cost is None:
            cost = self.prices.cost(
                get("model"),
                created_at,
                get("input_tokens"),
                get("output_tokens"),
                get("cached_input_tokens"),
            )
            if cost is not None:
                input_cost, output_cost, total_cost = (
                    cost.input_cost,
                    cost.output_cost,
                    cost.total_cost,
                )
        elif total_cost is None:
            total_cost = (input_cost or Decimal(0)) + (output_cost or Decimal(0))
        rows: list[tuple[str, Row]] = []
        prompt_hash = get("prompt_hash")
        if get("prompt") is not None:
            body = self._text(call["prompt"], "prompt", notes) or ""
            prompt_hash = hashlib.sha256(body.encode("utf-8")).hexdigest()
            # A sampled-out call keeps the hash (the body is stored when a sampled-in call
            # sends the same prompt) but never writes the body itself.
            if sampled_out is None and not self._prompt_sent_recently(prompt_hash):
                rows.append((PROMPT_TABLE, (prompt_hash, body, len(body))))
                self._remember_prompt(prompt_hash)
        extra = {k: v for k, v in (context or {}).items() if v is not None}
        data = get("data")
        payload = get("payload")
        if sampled_out is not None:
            data, marked = _without_bodies(data, sampled_out)
            dropped = [*(["payload"] if payload is not None else []), *marked[MARK]["dropped"]]
            if get("prompt") is not None:
                dropped.insert(0, "prompt")
            extra.update(mark(sampled_out, dropped))
            payload = None
        particular = self._json(data, "data", notes, extra)
        rows.append(
            (
                LLM,
                (
                    *common,
                    get("event_type", "llm_valid_execution"),
                    particular,
                    get("agent_type"),
                    get("provider"),
                    get("model"),
                    prompt_hash,
                    get("prompt_version"),
                    *[get(field) for field in _INT_FIELDS],
                    input_cost,
                    output_cost,
                    total_cost,
                    get("error"),
                    None if payload is None else self._json(payload, "payload", []),
                ),
            )
        )
        return rows

    def _validated_llm_call(self, args: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """The slow path: clean what can be cleaned, then let the model judge the rest."""
        for field in _COST_FIELDS:
            args[field] = _finite_or_none(args.get(field), field, notes)
        for field in _LLM_TEXT_FIELDS:
            if isinstance(args.get(field), str):
                args[field] = self._text(args[field], field, notes)
        return LlmCall.model_validate(args).model_dump(exclude_none=True)

    def fill_missing_costs(self, batch: Batch) -> None:
        """Prices spooled LLM rows prepared while the price table could not be read."""
        rows = batch.get(LLM)
        if not rows:
            return
        for i, row in enumerate(rows):
            if row[_TOTAL_COST] is not None or row[_INPUT_COST] is not None:
                continue
            created = row[2]
            at = dt.datetime.fromisoformat(created) if isinstance(created, str) else created
            cost = self.prices.cost(
                row[_MODEL], at, row[_INPUT_TOKENS], row[_OUTPUT_TOKENS], row[_CACHED_TOKENS]
            )
            if cost is not None:
                rows[i] = (
                    *row[:_INPUT_COST],
                    cost.input_cost,
                    cost.output_cost,
                    cost.total_cost,
                    *row[_TOTAL_COST + 1 :],
                )

    def _prompt_sent_recently(self, prompt_hash: str) -> bool:
        # Entries expire so that a body blanked by `pgtrail retention --keep-payloads` (only
        # ever bodies no call used for days) is written again when a call reuses it.
        sent = self._known_prompts.get(prompt_hash)
        return sent is not None and time.monotonic() - sent < _KNOWN_PROMPTS_TTL_S

    def _remember_prompt(self, prompt_hash: str) -> None:
        self._known_prompts[prompt_hash] = time.monotonic()
        self._known_prompts.move_to_end(prompt_hash)
        if len(self._known_prompts) > _KNOWN_PROMPTS_MAX:
            self._known_prompts.popitem(last=False)

    def forget_prompts(self) -> None:
        """After a failed batch the prompt rows may not be stored: send them again."""
        self._known_prompts.clear()

    def _agent(
        self,
        common: tuple[Any, ...],
        args: dict[str, Any],
        notes: list[str],
        sampled_out: float | None = None,
    ) -> Row:
        args = dict(args)
        event = args.pop("event", None)
        data: dict[str, Any] = {}
        if event is not None:
            if not isinstance(event, AgentEvent):
                raise RecordError(
                    f"event must be a pgtrail agent event model, not {type(event).__name__}"
                )
            data.update(event.model_dump(mode="python", by_alias=True, exclude_none=True))
            args.setdefault("event_type", event.event_type)
        if isinstance(args.get("duration_ms"), float):
            duration = _finite_or_none(args["duration_ms"], "duration_ms", notes)
            args["duration_ms"] = None if duration is None else round(duration)
        extra_data = args.pop("data", None)
        record = AgentRecord.model_validate({**args, "data": {}})
        if extra_data is not None:
            data.update(extra_data if isinstance(extra_data, dict) else {"value": extra_data})
        data, extra = _without_bodies(data, sampled_out)
        if record.duration_ms is not None:
            extra["event_duration_ms"] = _int4(record.duration_ms, "duration_ms")
        event_type = self._text(record.event_type, "event_type", notes)
        agent_type = self._text(record.agent_type, "agent_type", notes)
        return (*common, event_type, self._json(data, "data", notes, extra), agent_type)

    def _execution(self, common: tuple[Any, ...], args: dict[str, Any], notes: list[str]) -> Row:
        processes, problems = self.sanitizer.json(args["processes"], "processes_executed")
        notes.extend(problems)
        workflow = self._text(args["workflow"], "workflow", notes) or "unnamed"
        error = self._text(args["error"], "error", notes) if args.get("error") else None
        context = self._json(args.get("context") or {}, "context", [])
        sampling = args.get("sampling")
        return (
            *common,
            "execution_finalized",
            self._json({"sampling": sampling} if sampling else {}, "particular_data", notes),
            workflow,
            args.get("parent_execution_id"),
            args["status"],
            error,
            dumps(processes),
            context,
            args["finalized_at"],
            _int4(args.get("duration_ms"), "duration_ms"),
        )


def _without_bodies(data: Any, sampled_out: float | None) -> tuple[Any, dict[str, Any]]:
    """``data`` and the extra ``particular_data`` entries of a (maybe) sampled-out record."""
    if sampled_out is None:
        return data, {}
    clean, dropped = strip_bodies(data if data is not None else {})
    return clean, mark(sampled_out, dropped)
