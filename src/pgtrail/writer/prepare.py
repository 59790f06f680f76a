"""Preparation: enqueued records validated, cleaned and priced into ``COPY`` lines.

This runs in the background flusher, off the caller's path: validation against the models,
sanitising (NUL bytes, surrogates, NaN, oversized fields, cycles), redaction (every free-text
and JSON field of the four tables and the prompt bodies, with :mod:`pgtrail.writer.redact`; the id
columns are only sanitised), user-id hashing, cost inference and prompt hashing. A record
that cannot be stored is rejected alone, with a reason; the rest of its batch goes on.

Each row comes out as its ``COPY`` text line (:mod:`pgtrail.writer.copytext`), built once. Records
whose every argument already has its exact, clean type (the common case) skip the models
and the sanitiser's walk; anything else takes the slow path, which cleans and explains.
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

import pydantic

from pgtrail.config import Settings
from pgtrail.errors import RecordError, ValidationError
from pgtrail.ids import uuid7_hex
from pgtrail.models import LLM_OUTCOMES, AgentEvent, AgentRecord, JourneyRecord, LlmCallRecord
from pgtrail.tables import AGENT, COLUMNS, EXECUTION, JOURNEY, LLM, PROMPT
from pgtrail.writer import copytext
from pgtrail.writer.copytext import INT4_MAX, NULL, escape, escape_json
from pgtrail.writer.freeze import clean_json, members, splice, thaw
from pgtrail.writer.pricing import PriceBook
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.redact import Pseudonym, Redactor, hash_user_id
from pgtrail.writer.sampling import MARK, mark, strip_bodies
from pgtrail.writer.sanitize import ID_MAX_CHARS, Sanitizer, compact_json
from pgtrail.writer.spool import Batch, Row

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
_PEOPLE_MAX = 10_000
_EVENT_TYPE_CHARS = 200
_PROMPT = "prompt"
_LLM_PLAIN_TYPES: dict[str, type] = {
    **dict.fromkeys(_INT_FIELDS, int),
    **dict.fromkeys(_COST_FIELDS, float),
    **dict.fromkeys((*_LLM_TEXT_FIELDS, "event_type"), str),
    "payload": dict,
    "data": dict,
}
_LLM_KEYS = frozenset({*_LLM_PLAIN_TYPES, _PROMPT})
_AGENT_KEYS = frozenset({"event", "agent_type", "event_type", "duration_ms", "data"})
_JOURNEY_KEYS = frozenset({"event_type", "data"})
_LLM_COLUMNS = [name for name, _ in COLUMNS[LLM]]
_MODEL = _LLM_COLUMNS.index("model_target")
_INPUT_TOKENS = _LLM_COLUMNS.index("input_tokens")
_OUTPUT_TOKENS = _LLM_COLUMNS.index("output_tokens")
_CACHED_TOKENS = _LLM_COLUMNS.index("cached_input_tokens")
_INPUT_COST = _LLM_COLUMNS.index("input_cost")
_OUTPUT_COST = _LLM_COLUMNS.index("output_cost")
_TOTAL_COST = _LLM_COLUMNS.index("total_cost")


@dataclass(frozen=True)
class Rejected:
    """A record that was not stored, and why."""

    table: str
    event_id: uuid.UUID | None
    reason: str


def _finite_or_none(value: Any, field: str, notes: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{field}: {value!r} is not a number; stored as null")
        return None
    return value


def _int4(value: int | None, field: str) -> int | None:
    if value is not None and value > INT4_MAX:
        raise RecordError(f"{field}={value} is larger than {INT4_MAX}")
    return value


def _plain_text(value: object, max_chars: int) -> bool:
    return type(value) is str and len(value) <= max_chars and copytext.plain(value)


def _plain_event_type(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= _EVENT_TYPE_CHARS and copytext.plain(value)


def _plain_llm_call(args: dict[str, Any], max_chars: int) -> bool:
    """True when every argument already has its exact, clean type (no validation needed)."""
    for key, value in args.items():
        if value is None:
            continue
        kind = _LLM_PLAIN_TYPES.get(key)
        if kind is int:
            if not (type(value) is int and 0 <= value <= INT4_MAX):
                return False
        elif kind is float:
            if not (type(value) in (int, float) and value >= 0 and math.isfinite(value)):
                return False
        elif kind is str:
            if not _plain_text(value, max_chars):
                return False
        elif key == _PROMPT:
            if type(value) is not str:  # long bodies are cleaned by _text below
                return False
        elif kind is None or type(value) is not kind:
            return False
    return (args.get("event_type") or "llm_valid_execution") in LLM_OUTCOMES


def _pydantic_reason(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _field(value: str | None) -> str:
    return NULL if value is None else escape(value)


class RecordPreparer:
    """Validates and cleans enqueued records into ``COPY`` lines."""

    def __init__(self, settings: Settings, prices: PriceBook) -> None:
        self.settings = settings
        self.prices = prices
        self.sanitizer = Sanitizer(max_field_chars=settings.max_field_chars, strict=False)
        self._id_sanitizer = Sanitizer(
            max_field_chars=min(ID_MAX_CHARS, settings.max_field_chars), strict=False
        )
        self.redactor = Redactor() if settings.redact else None
        self._known_prompts: OrderedDict[str, float] = OrderedDict()
        self._forget_prompts = False
        # The execution id, tenant, user and session fields of recent executions: the same
        # for each of their records, and hashing a user id costs more than the rest.
        self._people: dict[tuple[Any, ...], tuple[str, str, list[str]]] = {}
        self._second: tuple[float, str] = (math.nan, "")  # a UTC second and its text

    def prepare(self, records: list[QueuedRecord]) -> tuple[Batch, list[Rejected]]:
        """Lines grouped by table, and the records that could not be stored.

        Args:
            records: Queued records, in the order they were logged.
        """
        batch: Batch = {}
        rejected: list[Rejected] = []
        if self._forget_prompts:
            self._forget_prompts = False
            self._known_prompts.clear()
        for record in records:
            try:
                rows = self.prepare_one(record)
            except (RecordError, ValidationError) as exc:
                rejected.append(Rejected(record.table, record.event_id, str(exc)))
                continue
            except pydantic.ValidationError as exc:
                rejected.append(Rejected(record.table, record.event_id, _pydantic_reason(exc)))
                continue
            except Exception as exc:  # one record never costs the others their place
                reason = f"{type(exc).__name__}: {exc}"
                rejected.append(Rejected(record.table, record.event_id, reason))
                continue
            for target, row in rows:
                lines = batch.get(target)
                if lines is None:
                    batch[target] = [row]
                else:
                    lines.append(row)
        return batch, rejected

    def prepare_one(self, record: QueuedRecord) -> list[tuple[str, Row]]:
        """Lines for one record (an LLM call may add its prompt body).

        Args:
            record: A queued record.

        Raises:
            RecordError: the record cannot be stored (e.g. a count over ``integer``).
            ValidationError: strict mode, and something would have been cleaned.
        """
        notes: list[str] = []
        common = self._common(record, notes)
        if record.sampled_out is not None:  # a sampled-out execution's: bodies are dropped
            record = thaw(record)
        table = record.table
        if table == LLM:
            return self._llm(common, record, notes)
        if table == AGENT:
            return [(AGENT, self._agent(common, record, notes))]
        if table == JOURNEY:
            return [(JOURNEY, self._journey(common, record, notes))]
        if table == EXECUTION:
            return [(EXECUTION, self._execution(common, record.args, notes))]
        raise RecordError(f"unknown record kind {table!r}")

    def check(self, record: QueuedRecord) -> None:
        """Strict mode: raises ValidationError for anything that would be cleaned or refused.

        Args:
            record: The record about to be enqueued.
        """
        # A preparer of its own: this runs on the caller's thread while the flusher uses
        # this one, and a trial run must not mark the prompt body as already stored.
        checker = RecordPreparer(self.settings, self.prices)
        checker.sanitizer = Sanitizer(max_field_chars=self.settings.max_field_chars, strict=True)
        try:
            checker.prepare_one(record._replace(args=dict(record.args)))
        except pydantic.ValidationError as exc:
            raise ValidationError(f"{record.table}: {_pydantic_reason(exc)}") from exc
        except RecordError as exc:
            raise ValidationError(f"{record.table}: {exc}") from exc

    # -- pieces -------------------------------------------------------------------------

    def _clean(
        self, value: Any, field: str, notes: list[str], sanitizer: Sanitizer | None = None
    ) -> str | None:
        """Sanitised text (not yet escaped for COPY), not redacted: for identifiers.

        ``sanitizer`` sets the length limit: the record's, or the identifiers' one.
        """
        cleaner = self.sanitizer if sanitizer is None else sanitizer
        if (
            type(value) is str
            and len(value) <= cleaner.max_field_chars
            and value.isascii()
            and "\x00" not in value
        ):
            return value  # the common case: nothing to clean
        clean, problems = cleaner.text(value, field)
        notes.extend(problems)
        return clean

    def _text(self, value: Any, field: str, notes: list[str]) -> str | None:
        """Clean free text (not yet escaped for COPY), redacted when redaction is on."""
        clean = self._clean(value, field, notes)
        if clean is not None and self.redactor is not None:
            clean = self.redactor.redact_text(clean)
        return clean

    def _text_field(self, value: Any, field: str, notes: list[str]) -> str:
        """A ``text`` column's field: clean, escaped, or null."""
        if value is None:
            return NULL
        if self.redactor is None and _plain_text(value, self.settings.max_field_chars):
            return str(value)
        return _field(self._text(value, field, notes))

    def _json(
        self, value: Any, field: str, notes: list[str], extra: dict[str, Any] | None = None
    ) -> str:
        """A ``jsonb`` field holding ``value``, and the record's notes when it has any."""
        if value is None:
            value = {}
        if extra:
            value = {**(value if isinstance(value, dict) else {"value": value}), **extra}
        if self.redactor is None and not notes:
            fast = clean_json(value, self.settings.max_field_chars)
            if fast is not None:
                return escape_json(fast)
        clean, problems = self.sanitizer.json(value, field)
        notes.extend(problems)
        if self.redactor is not None:
            clean = self.redactor.redact_json(clean)
        if notes:
            clean = dict(clean) if isinstance(clean, dict) else {"value": clean}
            clean["_pgtrail_notes"] = list(notes)
        return escape_json(compact_json(clean))

    def _plain_json(self, value: Any, field: str, notes: list[str]) -> str:
        """A ``jsonb`` field of pgtrail's own structure: problems go to ``notes``, not inside."""
        fast = clean_json(value, self.settings.max_field_chars, may_hold_nan=False)
        if fast is not None:
            return escape_json(fast)
        clean, problems = self.sanitizer.json(value, field)
        notes.extend(problems)
        return escape_json(compact_json(clean))

    def _common(self, record: QueuedRecord, notes: list[str]) -> str:
        """The first seven fields of every log row."""
        execution_id, tenant_id, user_id = record.execution_id, record.tenant_id, record.user_id
        session_id, span_id, created_at = record.session_id, record.span_id, record.created_at
        event_id = record.event_id
        key: tuple[Any, ...] = (execution_id, tenant_id, user_id, session_id)
        try:
            known = self._people.get(key)
        except TypeError:  # an unhashable id; cleaned below, not remembered
            known, key = None, ()
        if known is None:
            known = self._people_fields(execution_id, tenant_id, user_id, session_id)
            if key:
                if len(self._people) >= _PEOPLE_MAX:
                    self._people.clear()
                self._people[key] = known
        execution_hex, people, problems = known
        if problems:
            notes.extend(problems)
        at = created_at if created_at.tzinfo is dt.UTC else created_at.astimezone(dt.UTC)
        seconds = at.timestamp()
        eid = uuid7_hex(int(seconds * 1000)) if event_id is None else event_id.hex
        # isoformat() of an aware datetime costs more than the rest of these fields: the
        # text of the whole second is kept, as most records share it with the one before.
        # One tuple, replaced whole: a spill on the caller's thread may prepare meanwhile.
        second = self._second
        if second[0] != seconds // 1:
            whole = at.replace(microsecond=0, tzinfo=None)
            second = self._second = (seconds // 1, whole.isoformat(" "))
        if type(span_id) is str and span_id.isascii() and span_id.isalnum() and len(span_id) < 65:
            span = span_id  # the usual hex id: nothing to clean or escape
        else:
            span = _field(self._clean(span_id, "span_id", notes))
        created = f"{second[1]}.{at.microsecond:06d}+00:00"
        return f"{eid}\t{execution_hex}\t{created}\t{people}\t{span}"

    def _people_fields(
        self, execution_id: uuid.UUID | str, tenant_id: Any, user_id: Any, session_id: Any
    ) -> tuple[str, str, list[str]]:
        # Identifiers are never redacted: every e-mail-shaped id would become "[EMAIL]", one
        # person. A user id is hashed from its raw value when a key is set.
        notes: list[str] = []
        key = self.settings.user_hmac_key
        if key and user_id is not None and type(user_id) is not Pseudonym:
            # Hashed whole: two long ids that share their first ID_MAX_CHARS stay two people.
            user = self._clean(user_id, "user_id", notes)
            user = hash_user_id(user, key) if user is not None else None
        else:
            user = self._clean(user_id, "user_id", notes, self._id_sanitizer)
        tenant = self._clean(tenant_id, "tenant_id", notes, self._id_sanitizer) or "default"
        session = self._clean(session_id, "session_id", notes, self._id_sanitizer)
        execution_hex = execution_id if isinstance(execution_id, str) else execution_id.hex
        return execution_hex, f"{escape(tenant)}\t{_field(user)}\t{_field(session)}", notes

    def _llm(self, common: str, record: QueuedRecord, notes: list[str]) -> list[tuple[str, Row]]:
        sampled_out, created_at = record.sampled_out, record.created_at
        if sampled_out is None and not notes and self.redactor is None:
            plain = self.plain_llm_row(common, record)
            if plain is not None:
                return [(LLM, plain)]
        record = thaw(record)
        args, context = record.args, record.context
        if self.redactor is None and _plain_llm_call(args, self.settings.max_field_chars):
            call = args  # already clean, and escape-free
        else:
            call = self._validated_llm_call(args, notes)
        get = call.get
        for field in _INT_FIELDS:
            _int4(get(field), field)
        costs = self._costs(call, created_at)
        rows: list[tuple[str, Row]] = []
        prompt_hash = get("prompt_hash")
        if get(_PROMPT) is not None:
            body = self._text(call[_PROMPT], _PROMPT, notes) or ""
            prompt_hash = hashlib.sha256(body.encode("utf-8")).hexdigest()
            # A sampled-out call keeps the hash (the body is stored when a sampled-in call
            # sends the same prompt) but never writes the body itself.
            if sampled_out is None and not self._prompt_sent_recently(prompt_hash):
                rows.append((PROMPT, f"{prompt_hash}\t{escape(body)}\t{len(body)}"))
                self._remember_prompt(prompt_hash)
        extra = {k: v for k, v in context.items() if v is not None} if context else {}
        data = get("data")
        payload = get("payload")
        if sampled_out is not None:
            data, marked = _without_bodies(data, sampled_out)
            dropped = [*(["payload"] if payload is not None else []), *marked[MARK]["dropped"]]
            if get(_PROMPT) is not None:
                dropped.insert(0, _PROMPT)
            extra.update(mark(sampled_out, dropped))
            payload = None
        particular = self._json(data, "data", notes, extra)
        body = NULL if payload is None else self._json(payload, "payload", [])
        ints = "\t".join([NULL if (v := get(f)) is None else str(v) for f in _INT_FIELDS])
        agent, provider, model, version, error = (
            get("agent_type"),
            get("provider"),
            get("model"),
            get("prompt_version"),
            get("error"),
        )
        rows.append(
            (
                LLM,
                f"{common}\t{get('event_type') or 'llm_valid_execution'}\t{particular}\t"
                f"{NULL if agent is None else agent}\t{NULL if provider is None else provider}\t"
                f"{NULL if model is None else model}\t"
                f"{NULL if prompt_hash is None else escape(prompt_hash)}\t"
                f"{NULL if version is None else version}\t{ints}\t{costs}\t"
                f"{NULL if error is None else error}\t{body}",
            )
        )
        return rows

    def plain_llm_row(self, common: str, record: QueuedRecord) -> str | None:
        """The row of the most common call, in one pass; None when it needs the general path.

        That call has only clean, escape-free text, token counts and latencies that fit,
        costs to infer, no prompt body and dictionaries for ``data`` and ``payload``.

        Args:
            common: The row's first fields (event id to span id), as ``COPY`` text.
            record: An LLM call's record.
        """
        args = record.args
        get = args.get
        if not args.keys() <= _LLM_KEYS or get(_PROMPT) is not None:
            return None
        event_type = get("event_type") or "llm_valid_execution"
        if event_type not in LLM_OUTCOMES:
            return None
        if get("input_cost") is not None or get("output_cost") is not None:
            return None
        if get("total_cost") is not None:
            return None
        texts = tuple(map(get, _LLM_TEXT_FIELDS))  # agent_type ... error, in column order
        max_chars = self.settings.max_field_chars
        for text in texts:
            if text is not None and not _plain_text(text, max_chars):
                return None
        numbers = tuple(map(get, _INT_FIELDS))
        for number in numbers:
            if number is not None and not (type(number) is int and 0 <= number <= INT4_MAX):
                return None
        data, payload = get("data"), get("payload")
        if (data is not None and type(data) is not dict) or (
            payload is not None and type(payload) is not dict
        ):
            return None
        extra = record.context_members
        if extra is None:
            context = record.context
            extra = members(context, max_chars) if context else ""
        particular = record.data_json or clean_json({} if data is None else data, max_chars)
        body = record.payload_json
        if body is None and payload is not None:
            body = clean_json(payload, max_chars)
            if body is None:
                return None
        if particular is None or extra is None:
            return None  # not clean: the general path cleans it and says what it changed
        costs = self._costs(args, record.created_at)
        named = "\t".join([NULL if v is None else str(v) for v in (*texts[:5], *numbers)])
        error = NULL if texts[5] is None else texts[5]
        return (
            f"{common}\t{event_type}\t{escape_json(splice(particular, extra))}\t{named}\t"
            f"{costs}\t{error}\t{NULL if body is None else escape_json(body)}"
        )

    def _costs(self, call: dict[str, Any], created_at: dt.datetime) -> str:
        """The three cost fields: as given, or priced from the tokens."""
        get = call.get
        given = [get("input_cost"), get("output_cost"), get("total_cost")]
        if given == [None, None, None]:
            cost = self.prices.cost(
                get("model"),
                created_at,
                get("input_tokens"),
                get("output_tokens"),
                get("cached_input_tokens"),
            )
            if cost is None:
                return f"{NULL}\t{NULL}\t{NULL}"
            return f"{cost.input_cost}\t{cost.output_cost}\t{cost.total_cost}"
        input_cost, output_cost, total_cost = given
        if total_cost is None:
            total_cost = Decimal(repr(input_cost or 0)) + Decimal(repr(output_cost or 0))
        return "\t".join(NULL if c is None else repr(c) for c in (input_cost, output_cost)) + (
            f"\t{total_cost}" if isinstance(total_cost, Decimal) else f"\t{total_cost!r}"
        )

    def _validated_llm_call(self, args: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """The slow path: clean what can be cleaned, then let the model judge the rest.

        Text comes back escaped for COPY, like the fast path's (which needs no escaping).
        """
        args = {k: v for k, v in args.items() if v is not None}
        for field in _COST_FIELDS:
            args[field] = _finite_or_none(args.get(field), field, notes)
        for field in _LLM_TEXT_FIELDS:
            if isinstance(args.get(field), str):
                args[field] = self._text(args[field], field, notes)
        # The JSON bodies skip the model: the sanitiser cleans any value (non-str keys...).
        bodies: dict[str, Any] = {k: args.pop(k) for k in ("data", "payload") if k in args}
        call = LlmCallRecord.model_validate(args).model_dump(exclude_none=True)
        call.update(bodies)
        for field in ("agent_type", "provider", "model", "prompt_version", "error"):
            if field in call:
                call[field] = escape(call[field])
        return call

    def fill_missing_costs(self, batch: Batch) -> None:
        """Prices spooled LLM lines prepared while the price table could not be read."""
        lines = batch.get(LLM)
        if not lines:
            return
        for i, text in enumerate(lines):
            values = copytext.fields(text)
            if values[_TOTAL_COST] is not None or values[_INPUT_COST] is not None:
                continue
            tokens = [
                None if values[j] is None else int(str(values[j]))
                for j in (_INPUT_TOKENS, _OUTPUT_TOKENS, _CACHED_TOKENS)
            ]
            at = dt.datetime.fromisoformat(str(values[2]))
            cost = self.prices.cost(values[_MODEL], at, *tokens)
            if cost is not None:
                values[_INPUT_COST] = str(cost.input_cost)
                values[_OUTPUT_COST] = str(cost.output_cost)
                values[_TOTAL_COST] = str(cost.total_cost)
                lines[i] = "\t".join(_field(v) for v in values)

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
        """After a failed batch the prompt rows may not be stored: send them again.

        Called from the writer thread; the preparing thread forgets at its next batch.
        """
        self._forget_prompts = True

    def _agent(self, common: str, record: QueuedRecord, notes: list[str]) -> Row:
        args, sampled_out = record.args, record.sampled_out
        event = args.get("event")
        if event is not None and not isinstance(event, AgentEvent):
            raise RecordError(
                f"event must be a pgtrail agent event model, not {type(event).__name__}"
            )
        event_type = args.get("event_type")
        if event_type is None and event is not None:
            event_type = event.event_type
        agent_type = args.get("agent_type")
        duration = args.get("duration_ms")
        max_chars = self.settings.max_field_chars
        plain = (
            self.redactor is None
            and args.keys() <= _AGENT_KEYS
            and _plain_event_type(event_type)
            and (agent_type is None or _plain_text(agent_type, max_chars))
            and (duration is None or (type(duration) is int and 0 <= duration <= INT4_MAX))
        )
        frozen = record.data_json
        if frozen is not None:
            if plain and sampled_out is None and not notes:
                # The event's fields and the caller's data, frozen as one object at the call.
                duration_member = "" if duration is None else f'"event_duration_ms":{duration}'
                particular = escape_json(splice(frozen, duration_member))
                agent_field = NULL if agent_type is None else agent_type
                return f"{common}\t{event_type}\t{particular}\t{agent_field}"
            args = thaw(record).args
        data: dict[str, Any] = {}
        if event is not None:
            data.update(event.model_dump(mode="python", by_alias=True, exclude_none=True))
        extra_data = args.get("data")
        if plain:
            type_field, agent_field = str(event_type), NULL if agent_type is None else agent_type
        else:
            if isinstance(duration, float):
                duration = _finite_or_none(duration, "duration_ms", notes)
                duration = None if duration is None else round(duration)
            fields = {k: v for k, v in args.items() if k not in ("event", "data")}
            fields.update(event_type=event_type, duration_ms=duration, data={})
            self._clean_names(fields, notes)
            validated = AgentRecord.model_validate(fields)
            duration = _int4(validated.duration_ms, "duration_ms")
            type_field = _field(self._text(validated.event_type, "event_type", notes))
            agent_field = self._text_field(validated.agent_type, "agent_type", notes)
        if extra_data is not None:
            data.update(extra_data if isinstance(extra_data, dict) else {"value": extra_data})
        data, extra = _without_bodies(data, sampled_out)
        if duration is not None:
            extra["event_duration_ms"] = duration
        return f"{common}\t{type_field}\t{self._json(data, 'data', notes, extra)}\t{agent_field}"

    def _journey(self, common: str, record: QueuedRecord, notes: list[str]) -> Row:
        args, sampled_out = record.args, record.sampled_out
        event_type = args.get("event_type")
        plain = (
            self.redactor is None and args.keys() <= _JOURNEY_KEYS and _plain_event_type(event_type)
        )
        frozen = record.data_json
        if frozen is not None:
            if plain and sampled_out is None and not notes:
                return f"{common}\t{event_type}\t{escape_json(frozen)}"
            args = thaw(record).args
        data = args.get("data")
        if plain and (data is None or type(data) is dict):
            type_field = str(event_type)
        else:
            fields = {k: v for k, v in args.items() if k != "data"}
            self._clean_names(fields, notes)
            validated = JourneyRecord.model_validate(fields)
            type_field = _field(self._text(validated.event_type, "event_type", notes))
            if data is not None and not isinstance(data, dict):
                problem = f"data: expected a dict, got {type(data).__qualname__}; stored as value"
                if self.sanitizer.strict:
                    raise ValidationError(problem)
                notes.append(problem)
                data = {"value": data}
        data, extra = _without_bodies(data, sampled_out)
        return f"{common}\t{type_field}\t{self._json(data, 'data', notes, extra)}"

    def _clean_names(self, fields: dict[str, Any], notes: list[str]) -> None:
        """Cleans (and marks) NUL and surrogates in event and agent types before validation."""
        for name in ("event_type", "agent_type"):
            value = fields.get(name)
            if isinstance(value, str) and not (value.isascii() and "\x00" not in value):
                fields[name], problems = self.sanitizer.text(value, name)
                notes.extend(problems)

    def _execution(self, common: str, args: dict[str, Any], notes: list[str]) -> Row:
        steps = args["processes"]
        if self.redactor is not None:
            steps = self.redactor.redact_processes(steps)
        processes = self._plain_json(steps, "processes_executed", notes)
        workflow = self._text(args["workflow"], "workflow", notes) or "unnamed"
        error = self._text(args["error"], "error", notes) if args.get("error") else None
        context = self._json(args.get("context") or {}, "context", [])
        sampling = args.get("sampling")
        particular = self._json(
            {"sampling": sampling} if sampling else {}, "particular_data", notes
        )
        duration = _int4(args.get("duration_ms"), "duration_ms")
        event_type = args.get("event_type") or "execution_finalized"  # or a join's own row
        finalized = args["finalized_at"]
        return (
            f"{common}\t{escape(event_type)}\t{particular}\t{escape(workflow)}\t"
            f"{copytext.field(args.get('parent_execution_id'))}\t{escape(args['status'])}\t"
            f"{_field(error)}\t{processes}\t{context}\t"
            f"{NULL if finalized is None else copytext.timestamp(finalized)}\t"
            f"{NULL if duration is None else duration}"
        )


def _without_bodies(data: Any, sampled_out: float | None) -> tuple[Any, dict[str, Any]]:
    """``data`` and the extra ``particular_data`` entries of a (maybe) sampled-out record."""
    if sampled_out is None:
        return data, {}
    clean, dropped = strip_bodies(data if data is not None else {})
    return clean, mark(sampled_out, dropped)
