"""Cost inference from ``pgtrail_model_price`` when a caller gives tokens but no cost.

Conventions: ``input_tokens`` counts every input token, of which ``cached_input_tokens`` are
billed at the cached price; ``reasoning_tokens`` are part of ``output_tokens``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg

from pgtrail.statements import STATEMENTS

log = logging.getLogger("pgtrail")
_MILLION = Decimal(1_000_000)
REFRESH_S = 300.0


@dataclass(frozen=True)
class Price:
    """One row of ``pgtrail_model_price``."""

    model: str
    pattern: re.Pattern[str]
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    valid_from: dt.date
    valid_to: dt.date | None

    def covers(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)


class Cost(NamedTuple):
    """Input, output and total cost of one call, in USD."""

    input_cost: Decimal
    output_cost: Decimal
    total_cost: Decimal


class PriceBook:
    """The price table, loaded from PostgreSQL and refreshed every few minutes."""

    def __init__(self) -> None:
        self._prices: list[Price] = []
        self._loaded_at = float("-inf")
        self._unknown_reported: set[str] = set()
        self._found: dict[tuple[str, dt.date], Price | None] = {}
        self._lock = threading.Lock()

    def stale(self) -> bool:
        """True when the table should be read again."""
        return time.monotonic() - self._loaded_at > REFRESH_S

    def load(self, conn: psycopg.Connection[Any]) -> None:
        """Reads every price row."""
        rows = conn.execute(STATEMENTS["pricing_prices"]).fetchall()
        prices = []
        for model, pattern, p_in, p_out, p_cached, valid_from, valid_to in rows:
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error:
                log.warning("pgtrail: price pattern %r of %s is not a valid regex", pattern, model)
                compiled = re.compile(re.escape(model) + "$", re.IGNORECASE)
            prices.append(Price(model, compiled, p_in, p_out, p_cached, valid_from, valid_to))
        with self._lock:
            self._prices = prices
            self._found = {}
            self._loaded_at = time.monotonic()

    def find(self, model: str, at: dt.datetime) -> Price | None:
        """The most specific price valid for ``model`` on the day of ``at`` (UTC)."""
        day = (at if at.tzinfo is dt.UTC else at.astimezone(dt.UTC)).date()
        key = (model, day)
        if key in self._found:
            return self._found[key]
        if len(self._found) > 100_000:
            self._found = {}
        self._found[key] = found = self._search(model, day)
        return found

    def _search(self, model: str, day: dt.date) -> Price | None:
        best: Price | None = None
        best_rank: tuple[bool, int, dt.date] | None = None
        for price in self._prices:
            exact = price.model == model
            if not price.covers(day) or not (exact or price.pattern.search(model)):
                continue
            rank = (exact, len(price.model), price.valid_from)
            if best_rank is None or rank > best_rank:
                best, best_rank = price, rank
        return best

    def cost(
        self,
        model: str | None,
        at: dt.datetime,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None,
    ) -> Cost | None:
        """Cost from tokens, or None when the model has no price (reported once per model)."""
        if not model or (input_tokens is None and output_tokens is None):
            return None
        price = self.find(model, at)
        if price is None:
            if model not in self._unknown_reported:
                self._unknown_reported.add(model)
                log.warning(
                    "pgtrail: no price for model %r; its calls are stored with a null cost. "
                    "Add a row to pgtrail_model_price to price it.",
                    model,
                )
            return None
        cached = min(cached_input_tokens or 0, input_tokens or 0)
        fresh = (input_tokens or 0) - cached
        cached_rate = price.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = price.input_per_mtok
        input_cost = (fresh * price.input_per_mtok + cached * cached_rate) / _MILLION
        output_cost = (output_tokens or 0) * price.output_per_mtok / _MILLION
        return Cost(input_cost, output_cost, input_cost + output_cost)
