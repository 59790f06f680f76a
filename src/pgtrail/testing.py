"""Assert what your code logged, in your own tests, without PostgreSQL or Redis.

:func:`record` gives a :class:`Recorder` whose ``trail`` is a real :class:`~pgtrail.Trail`
in every respect but one: the prepared batches go to memory instead of PostgreSQL. Records
are validated, sanitised, redacted, sampled and turned into their ``COPY`` lines exactly as
in production, and the recorder reads those lines back into one dict per row, keyed by
column, with the column's Python type (UUID, aware datetime, int, Decimal, parsed JSON).
What a test sees is what PostgreSQL would have stored, except for costs inferred from the
price table (there is no database to read it from): a call that carries its own cost keeps
it, one with tokens only has null costs.

    def test_checkout_logs_one_priced_call():
        with pgtrail.testing.record() as recorder:
            checkout(recorder.trail, user_id="57")
        (call,) = recorder.llm_calls
        assert call["agent_type"] == "billing" and call["total_cost"] > 0
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from pgtrail.config import Settings
from pgtrail.tables import AGENT, COLUMNS, EXECUTION, JOURNEY, LLM, PROMPT
from pgtrail.trail import Trail
from pgtrail.writer import copytext
from pgtrail.writer.pricing import PriceBook
from pgtrail.writer.sink import RejectedRow
from pgtrail.writer.spool import Batch, Row

__all__ = ["MemorySink", "Recorder", "record"]

_DECODERS: dict[str, Callable[[str], Any]] = {
    "uuid": uuid.UUID,
    "timestamptz": dt.datetime.fromisoformat,
    "text": str,
    "jsonb": json.loads,
    "int4": int,
    "numeric": Decimal,
}


def _decode(table: str, line: Row) -> dict[str, Any]:
    """One ``COPY`` line of ``table`` as a dict of its columns, with Python values."""
    values = copytext.fields(line)
    return {
        name: None if value is None else _DECODERS[kind](value)
        for (name, kind), value in zip(COLUMNS[table], values, strict=True)
    }


class MemorySink:
    """A sink that keeps every batch in memory, as PostgreSQL would keep the rows.

    Rows are kept once per event id (prompt bodies once per hash), as the database's
    primary keys keep them, so a batch written twice is stored once here too.
    """

    def __init__(self) -> None:
        self.prices = PriceBook()
        self._rows: dict[str, dict[str, Row]] = {table: {} for table in COLUMNS}
        self._lock = threading.Lock()

    def refresh_prices(self) -> None:
        """Nothing to read: costs are inferred only where a price table exists."""

    def probe(self) -> None:
        """Memory is always there."""

    def ensure_partitions(self, batch: Batch) -> None:
        """Memory has no partitions."""

    def write(self, batch: Batch) -> None:
        """Keeps the batch's rows (those already kept stay as they were).

        Args:
            batch: Rows by table, as ``COPY`` lines.
        """
        with self._lock:
            for table, rows in batch.items():
                kept = self._rows[table]
                for row in rows:
                    kept.setdefault(row.split("\t", 1)[0], row)

    def write_isolating(self, batch: Batch) -> list[RejectedRow]:
        """Keeps the batch's rows; memory refuses none.

        Args:
            batch: Rows by table, as ``COPY`` lines.
        """
        self.write(batch)
        return []

    def close(self) -> None:
        """Nothing to release."""

    def reset_after_fork(self) -> None:
        """A forked child keeps what the parent had recorded."""

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows kept for ``table``, in the order they were written.

        Args:
            table: A log table (``logs_llm_execution`` ...) or ``pgtrail_prompt``.
        """
        with self._lock:
            lines = list(self._rows[table].values())
        return [_decode(table, line) for line in lines]

    def clear(self) -> None:
        """Forgets every row."""
        with self._lock:
            for kept in self._rows.values():
                kept.clear()


class Recorder:
    """What :func:`record` yields: the client to log through, and what it stored.

    Every accessor flushes the client first, so a row logged just before is there.

    Args:
        trail: The client whose batches go to ``sink``.
        sink: Where they are kept.
    """

    def __init__(self, trail: Trail, sink: MemorySink) -> None:
        self.trail = trail
        self.sink = sink

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The stored rows of ``table``, one dict per row keyed by column.

        Args:
            table: A log table (``logs_llm_execution`` ...) or ``pgtrail_prompt``.
        """
        self.trail.flush()
        return self.sink.rows(table)

    @property
    def executions(self) -> list[dict[str, Any]]:
        """Rows of ``logs_execution``: one per finished execution (and per join's own row)."""
        return self.rows(EXECUTION)

    @property
    def llm_calls(self) -> list[dict[str, Any]]:
        """Rows of ``logs_llm_execution``."""
        return self.rows(LLM)

    @property
    def agent_events(self) -> list[dict[str, Any]]:
        """Rows of ``logs_agent_execution``."""
        return self.rows(AGENT)

    @property
    def journey_events(self) -> list[dict[str, Any]]:
        """Rows of ``logs_user_journey``."""
        return self.rows(JOURNEY)

    @property
    def prompts(self) -> dict[str, str]:
        """Prompt bodies by ``prompt_hash``, as ``pgtrail_prompt`` keeps them."""
        return {row["prompt_hash"]: row["body"] for row in self.rows(PROMPT)}

    def clear(self) -> None:
        """Forgets every row recorded so far (the client stays open)."""
        self.trail.flush()
        self.sink.clear()


@contextlib.contextmanager
def record(
    settings: Settings | None = None,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    **overrides: Any,
) -> Iterator[Recorder]:
    """A client that records into memory, closed (and its spool folder removed) on exit.

    It never connects to PostgreSQL or Redis: Redis is off (single-process mode), the
    client writes on the caller's thread, and its spool, which memory never needs, is a
    temporary folder.

    Args:
        settings: Settings to start from (redaction, HMAC key, sampling, field limit...);
            by default the defaults, not the environment.
        clock: Source of timestamps (aware datetimes), for rows with known times.
        **overrides: Any :class:`~pgtrail.config.Settings` field, e.g. ``redact=True``.
    """
    base = settings if settings is not None else Settings()
    with tempfile.TemporaryDirectory(prefix="pgtrail-record-") as folder:
        values = {"redis_url": None, "spool_dir": Path(folder), **overrides}
        recording = base.model_copy(update=values)
        sink = MemorySink()
        trail = Trail(
            Settings.model_validate(recording.model_dump()), sync=True, clock=clock, sink=sink
        )
        try:
            yield Recorder(trail, sink)
        finally:
            trail.close()
