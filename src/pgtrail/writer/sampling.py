"""Sampling: keep every figure of every execution, and the bodies of only some of them.

A rate per workflow decides, once per execution at its start, whether the execution is
*sampled in* (stored whole) or *sampled out*. A sampled-out execution keeps every row with
its costs, tokens, latencies and outcomes; only payload bodies are dropped: the LLM
``payload`` column, the prompt body (its ``prompt_hash`` stays), and body-like fields of
``particular_data`` (message texts, tool arguments and results, any long string). Dropped
rows say so in ``particular_data._pgtrail_sampled``; the execution row records the decision
in ``particular_data.sampling``.

Errors and budget breaches are always kept whole. Whether an execution will fail is not
known while its records are logged, so a sampled-out execution's records are held in memory
(on the caller's side, before the writer's queue) until it ends. The first failed model
call, failed tool call or call above the cost threshold releases them whole, and from then on
the execution's records are written at once; an execution that ends in error releases them
whole too; otherwise they go out without bodies when it ends. The hold is bounded (records
per execution, their age, records per client); past a bound the oldest held records are
written at once without bodies, so a very long execution that fails keeps the bodies of its
most recent records only. Records of a sampled-out execution are therefore written when it
ends (or leaves the hold), not within the writer's flush interval.

The decision is a pure function of the execution id: the first 8 bytes of the SHA-256 of the
id's 16 bytes, read big-endian and divided by 2**64, sampled in when below the rate. The
process that opens an execution also stores the decision in Redis, where a joined process
reads it; without Redis, services configured with the same rates agree.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pgtrail.models import LLM_OUTCOMES, ToolCall
from pgtrail.tables import AGENT, LLM

if TYPE_CHECKING:
    from pgtrail.shared_state import RedisState
    from pgtrail.writer.pricing import PriceBook
    from pgtrail.writer.record import QueuedRecord

MARK = "_pgtrail_sampled"
"""Key added to ``particular_data`` of a row whose bodies were dropped."""
LONG_TEXT_CHARS = 200
"""Strings longer than this in ``particular_data`` count as bodies."""
BODY_KEYS = frozenset(
    {
        "args",
        "arguments",
        "body",
        "completion",
        "content",
        "input",
        "message",
        "messages",
        "output",
        "prompt",
        "query",
        "response",
        "result",
        "results",
        "text",
    }
)
"""Keys of ``particular_data`` (at any depth) whose text, list or object values are bodies."""
_ENDED_KEPT = 10_000  # ended sampled-out executions remembered for records logged late


# -- rates and the decision ------------------------------------------------------------------


def sample_fraction(execution_id: uuid.UUID) -> float:
    """Where an execution falls in [0, 1): the same in every process and language."""
    digest = hashlib.sha256(execution_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_sampled_in(execution_id: uuid.UUID, rate: float) -> bool:
    """Whether an execution keeps its bodies at this rate."""
    return rate >= 1.0 or sample_fraction(execution_id) < rate


# -- dropping bodies -------------------------------------------------------------------------


def strip_bodies(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` with body-like fields set to null, and the dotted paths that were dropped."""
    dropped: list[str] = []
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key == MARK:
                out[key] = item
            elif (key in BODY_KEYS and isinstance(item, str | list | dict)) or (
                isinstance(item, str) and len(item) > LONG_TEXT_CHARS
            ):
                if item not in ("", [], {}):
                    dropped.append(where)
                out[key] = None
            else:
                out[key], inner = strip_bodies(item, where)
                dropped.extend(inner)
        return out, dropped
    if isinstance(value, list | tuple):
        items = []
        for i, item in enumerate(value):
            clean, inner = strip_bodies(item, f"{path}[{i}]")
            items.append(clean)
            dropped.extend(inner)
        return items, dropped
    if isinstance(value, str) and len(value) > LONG_TEXT_CHARS:
        return None, [path or "value"]
    return value, dropped


def mark(rate: float, dropped: list[str]) -> dict[str, Any]:
    """The ``particular_data`` entry that says a row's bodies were dropped."""
    return {MARK: {"rate": rate, "dropped": dropped}}


# -- what keeps an execution whole -----------------------------------------------------------


def keep_reason(
    table: str,
    created_at: dt.datetime,
    args: Mapping[str, Any],
    *,
    cost_threshold: float | None,
    prices: PriceBook | None,
) -> str | None:
    """Why this record keeps its execution whole (an error or a budget breach), or None."""
    if table == LLM:
        outcome = args.get("event_type", "llm_valid_execution")
        if outcome != "llm_valid_execution" and outcome in LLM_OUTCOMES:
            return str(outcome)
        if args.get("error"):
            return "llm_error"
        if cost_threshold is not None:
            cost = _call_cost(args, created_at, prices)
            if cost is not None and cost > Decimal(repr(cost_threshold)):
                return "cost_over_threshold"
        return None
    if table == AGENT:
        event = args.get("event")
        if isinstance(event, ToolCall):
            return "tool_call_error" if event.error else None
        data = args.get("data")
        failed = isinstance(data, Mapping) and bool(data.get("error"))
        if args.get("event_type") == "tool_call" and failed:
            return "tool_call_error"
    return None


def _call_cost(
    args: Mapping[str, Any], created_at: dt.datetime, prices: PriceBook | None
) -> Decimal | None:
    """The call's cost as given, else as priced by the table read so far (None if unknown)."""
    given = [args.get(k) for k in ("total_cost", "input_cost", "output_cost")]
    try:
        if given[0] is not None:
            return Decimal(repr(float(given[0])))
        if given[1] is not None or given[2] is not None:
            return sum((Decimal(repr(float(v))) for v in given[1:] if v is not None), Decimal(0))
    except (TypeError, ValueError, ArithmeticError):
        return None
    if prices is None:
        return None
    model, tokens_in = args.get("model"), args.get("input_tokens")
    tokens_out, cached = args.get("output_tokens"), args.get("cached_input_tokens")
    if not (isinstance(model, str) and all(isinstance(t, int | None) for t in (tokens_in, cached))):
        return None
    if not isinstance(tokens_out, int | None):
        return None
    cost = prices.cost(model, created_at, tokens_in, tokens_out, cached)
    return None if cost is None else cost.total_cost


# -- the hold --------------------------------------------------------------------------------


@dataclass
class _Hold:
    """The sampling state of one execution in this process."""

    rate: float
    sampled_in: bool
    opened_here: bool = False
    items: collections.deque[QueuedRecord] = field(default_factory=collections.deque)
    kept: str | None = None
    written_without_bodies: int = 0

    def info(self) -> dict[str, Any]:
        """What the execution row records about the decision."""
        info: dict[str, Any] = {"rate": self.rate, "sampled_in": self.sampled_in}
        if not self.sampled_in:
            info["bodies"] = "kept" if self.kept else "dropped"
            if self.kept:
                info["kept_because"] = self.kept
            if self.written_without_bodies:
                info["written_without_bodies"] = self.written_without_bodies
        return info


@dataclass(frozen=True)
class SamplingConfig:
    """The sampling settings a :class:`Sampler` needs."""

    rates: Mapping[str, float]
    default_rate: float
    cost_threshold: float | None
    hold_records: int
    hold_s: float
    hold_total: int

    @property
    def active(self) -> bool:
        """Whether any workflow is sampled below 100%."""
        return self.default_rate < 1.0 or any(r < 1.0 for r in self.rates.values())

    def rate_for(self, workflow: str) -> float:
        """The rate of ``workflow`` (its own, else the default)."""
        return self.rates.get(workflow, self.default_rate)


class Sampler:
    """Decides, holds and releases the records of the executions open in one client.

    Args:
        config: Rates, cost threshold and hold bounds.
        submit: Enqueues one record for writing.
        redis_state: Where the decision and the keep flag are shared with other processes.
        prices: The writer's price table, to price calls logged with tokens only.
    """

    def __init__(
        self,
        config: SamplingConfig,
        submit: Callable[[QueuedRecord], None],
        redis_state: RedisState,
        prices: PriceBook | None,
    ) -> None:
        self.config = config
        self._submit = submit
        self._redis = redis_state
        self._prices = prices
        self._holds: dict[uuid.UUID, _Hold] = {}
        self._ended: collections.OrderedDict[uuid.UUID, _Hold] = collections.OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._active = config.active  # asked for every record: computed once

    @property
    def active(self) -> bool:
        """Whether any workflow is sampled below 100%."""
        return self._active

    def begin(self, execution_id: uuid.UUID, workflow: str, *, opened_here: bool) -> bool:
        """Decides an execution's sampling; True when this call owns its hold.

        An execution opened here decides from its workflow's rate and shares the decision
        through Redis; a joined one reads that decision, or decides the same way.
        """
        if not self._active or execution_id in self._holds:
            return False
        shared = None if opened_here else self._shared(execution_id)
        if shared is not None:
            hold = shared
        else:
            rate = self.config.rate_for(workflow)
            if rate >= 1.0:
                return False
            hold = _Hold(rate, is_sampled_in(execution_id, rate), opened_here)
            if opened_here:
                self._share(execution_id, f"{'in' if hold.sampled_in else 'out'}:{rate!r}")
        with self._lock:
            self._holds[execution_id] = hold
        return True

    def route(self, execution_id: uuid.UUID, item: QueuedRecord) -> None:
        """Writes a record now, or holds it until its sampled-out execution ends."""
        hold = self._holds.get(execution_id) if self._holds else None
        if hold is None and self._ended:
            # Logged after its execution ended (another thread was late): the decision holds.
            ended = self._ended.get(execution_id)
            if ended is not None:
                self._submit(item if ended.kept else _without_bodies(item, ended))
                return
        if hold is None or hold.sampled_in:
            self._submit(item)
            return
        if hold.kept is None:
            reason = keep_reason(
                item.table,
                item.created_at,
                item.args,
                cost_threshold=self.config.cost_threshold,
                prices=self._prices,
            )
            if reason is not None:
                self._keep(execution_id, hold, reason)
        if hold.kept is not None:
            self._submit(item)
            return
        stripped: list[tuple[QueuedRecord, _Hold]] = []
        with self._lock:
            hold.items.append(item)
            self._held += 1
            newest = item.created_at
            while hold.items and (
                len(hold.items) > self.config.hold_records
                or (newest - hold.items[0].created_at).total_seconds() > self.config.hold_s
            ):
                stripped.append((hold.items.popleft(), hold))
            if self._held - len(stripped) > self.config.hold_total:
                largest = max(self._holds.values(), key=lambda h: len(h.items))
                stripped.extend((held, largest) for held in largest.items)
                largest.items.clear()
            for _, owner in stripped:
                owner.written_without_bodies += 1
            self._held -= len(stripped)
        for held, owner in stripped:
            self._submit(_without_bodies(held, owner))

    def end(self, execution_id: uuid.UUID, *, error: bool) -> dict[str, Any] | None:
        """Releases an execution's held records; returns its decision for the execution row.

        Held records go out whole when the execution ended in error, had a record that
        keeps it whole, or was flagged by another process; otherwise without bodies.
        """
        with self._lock:
            hold = self._holds.pop(execution_id, None)
        if hold is None:
            return None
        if not hold.sampled_in and hold.kept is None and error:
            self._keep(execution_id, hold, "execution_error")
        if hold.opened_here or (not hold.sampled_in and hold.kept is None):
            # The opener removes the shared decision; a keep flag stays for joined
            # processes still running. Anyone still undecided learns of a flag here.
            shared = self._parse(self._read(execution_id, forget=hold.opened_here))
            if shared is not None and shared.kept:
                hold.kept = hold.kept or shared.kept
                if hold.opened_here:
                    self._share(execution_id, f"keep:{shared.rate!r}:{shared.kept}")
        with self._lock:
            items = list(hold.items)
            hold.items.clear()
            self._held -= len(items)
            if not hold.sampled_in:
                self._ended[execution_id] = hold
                if len(self._ended) > _ENDED_KEPT:
                    self._ended.popitem(last=False)
        for item in items:
            self._submit(item if hold.kept else _without_bodies(item, hold))
        return hold.info()

    def release_all(self) -> None:
        """Writes every held record without bodies (the client is closing)."""
        for execution_id in list(self._holds):
            self.end(execution_id, error=False)

    def reset_after_fork(self) -> None:
        """Forgets the parent's holds: they are the parent's to write."""
        self._holds = {}
        self._ended = collections.OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def _keep(self, execution_id: uuid.UUID, hold: _Hold, reason: str) -> None:
        with self._lock:
            if hold.kept is not None:
                return
            hold.kept = reason
            items = list(hold.items)
            hold.items.clear()
            self._held -= len(items)
        self._share(execution_id, f"keep:{hold.rate!r}:{reason}")
        for item in items:
            self._submit(item)

    # Redis: one small key per sampled execution, next to the execution's own keys.

    def _share(self, execution_id: uuid.UUID, value: str) -> None:
        self._redis.set_sampling(execution_id, value)

    def _read(self, execution_id: uuid.UUID, *, forget: bool = False) -> str | None:
        return self._redis.sampling(execution_id, forget=forget)

    def _shared(self, execution_id: uuid.UUID) -> _Hold | None:
        return self._parse(self._read(execution_id))

    @staticmethod
    def _parse(value: str | None) -> _Hold | None:
        if not value:
            return None
        verdict, _, rest = value.partition(":")
        raw_rate, _, reason = rest.partition(":")
        try:
            rate = float(raw_rate)
        except ValueError:
            return None
        if verdict == "keep":
            return _Hold(rate, False, kept=reason or "flagged")
        return _Hold(rate, verdict == "in")


def _without_bodies(item: QueuedRecord, hold: _Hold) -> QueuedRecord:
    return item._replace(sampled_out=hold.rate)
