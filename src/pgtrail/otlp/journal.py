"""The span journal: what makes the receiver's acknowledgement durable.

A 200 (or gRPC OK) from the receiver means its spans will be stored whatever happens to the
receiver process or to Redis afterwards. Redis cannot promise that (it may keep nothing on
disk, and a killed receiver loses what it claimed from Redis and had not yet written), so
the receiver first commits every span it accepts to ``pgtrail_otlp_span`` in the target
database: PostgreSQL, which the spans are bound for anyway, is the one store already
durable in every deployment, and a commit there needs no new service, disk or setting.

Once the rows mapped from a span are stored (committed, or fsynced into the writer's spool),
its journal row is deleted. A row still there after the recovery delay belongs to a trace
the receiver lost; :meth:`SpanJournal.take_stranded` hands it to a finaliser again. Stored
rows have deterministic ids, so finalising a trace twice stores nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtrail.config import Settings
from pgtrail.db import connection_options, mask_dsn
from pgtrail.errors import JournalUnavailableError
from pgtrail.statements import STATEMENTS
from pgtrail.tables import OTLP_SPAN_JOURNAL

log = logging.getLogger("pgtrail")

MAX_ATTEMPTS = 5
"""Recoveries of one span before the journal leaves it for an operator."""
_CONNECT_TIMEOUT_S = 3
_POOL_WAIT_S = 2.0  # under the receiver's 3 s health probe: a silent database is "down", not a hang
_COPY = f"COPY {OTLP_SPAN_JOURNAL} (trace_id, span_id, span) FROM STDIN"


@dataclass(frozen=True)
class JournalEntry:
    """One span as the journal keeps it."""

    trace_id: str
    """The trace, as 32 hex digits."""
    span_id: str
    """The span, as 16 hex digits."""
    blob: bytes
    """The span serialised as the trace buffer holds it (redacted when redaction is on)."""


@dataclass(frozen=True)
class SpanKey:
    """Which span: a trace id and a span id."""

    trace_id: str
    span_id: str


@dataclass(frozen=True)
class JournalCounts:
    """The journal's size."""

    waiting: int
    """Spans acknowledged and not yet stored."""
    stuck: int
    """Spans recovered :data:`MAX_ATTEMPTS` times and still not stored."""


class SpanJournal:
    """The receiver's durable record of the spans it acknowledged and has not yet stored.

    Args:
        settings: Names the database and schema (``dsn``, ``db_schema``).
        max_connections: Connections the pool may open: one per export thread writing at
            once, and one for the finaliser.
    """

    def __init__(self, settings: Settings, *, max_connections: int = 4) -> None:
        self._dsn = settings.dsn
        self._pool = ConnectionPool(
            settings.dsn,
            min_size=0,
            max_size=max(1, max_connections),
            open=False,
            timeout=_POOL_WAIT_S,
            kwargs={
                "connect_timeout": _CONNECT_TIMEOUT_S,
                "options": connection_options(settings.dsn, settings.db_schema),
                "autocommit": True,
            },
            name="pgtrail-otlp-journal",
        )
        self._opened = False

    def record(self, entries: Sequence[JournalEntry]) -> None:
        """Commits ``entries``; when this returns they survive any crash.

        Args:
            entries: The spans to keep.

        Raises:
            JournalUnavailableError: PostgreSQL could not be reached or refused the write;
                nothing was kept.
        """
        if not entries:
            return
        with self._connection() as conn, conn.cursor() as cur, cur.copy(_COPY) as copy:
            for entry in entries:
                copy.write_row((entry.trace_id, entry.span_id, entry.blob))

    def forget(self, keys: Iterable[SpanKey]) -> None:
        """Deletes the entries of spans whose rows are stored.

        Args:
            keys: The stored spans.

        Raises:
            JournalUnavailableError: PostgreSQL could not be reached; the entries stay and
                a later recovery stores their spans again (nothing twice).
        """
        unique = sorted({(key.trace_id, key.span_id) for key in keys})
        if not unique:
            return
        with self._connection() as conn:
            conn.execute(
                STATEMENTS["journal_forget"],
                {
                    "trace_ids": [trace_id for trace_id, _ in unique],
                    "span_ids": [span_id for _, span_id in unique],
                },
            )

    def take_stranded(self, older_than_s: float, limit: int) -> dict[str, list[JournalEntry]]:
        """The spans of traces journalled over ``older_than_s`` ago and still not stored.

        Each take counts as an attempt; a span taken :data:`MAX_ATTEMPTS` times stays in the
        journal but is taken no more (``pgtrail_otlp_journal_stuck_spans`` counts them).

        Args:
            older_than_s: The recovery delay: entries younger than this (or taken again
                less than this ago) are left to the finaliser that holds them.
            limit: How many entries to consider at most (whole traces are returned).

        Raises:
            JournalUnavailableError: PostgreSQL could not be reached.
        """
        with self._connection() as conn:
            rows = conn.execute(
                STATEMENTS["journal_take_stranded"],
                {"older_than_s": older_than_s, "max_attempts": MAX_ATTEMPTS, "limit": limit},
            ).fetchall()
        traces: dict[str, list[JournalEntry]] = {}
        for trace_id, span_id, blob in rows:
            traces.setdefault(trace_id, []).append(JournalEntry(trace_id, span_id, bytes(blob)))
        return traces

    def release(self, trace_ids: Sequence[str]) -> None:
        """Gives back the attempt a take counted for traces found still assembling.

        Raises:
            JournalUnavailableError: PostgreSQL could not be reached.
        """
        if trace_ids:
            with self._connection() as conn:
                conn.execute(STATEMENTS["journal_release"], {"trace_ids": list(trace_ids)})

    def counts(self) -> JournalCounts:
        """How many spans wait in the journal, and how many of them are stuck.

        Raises:
            JournalUnavailableError: PostgreSQL could not be reached.
        """
        with self._connection() as conn:
            waiting = conn.execute(STATEMENTS["journal_count"]).fetchone()
            stuck = conn.execute(
                STATEMENTS["journal_stuck"], {"max_attempts": MAX_ATTEMPTS}
            ).fetchone()
        return JournalCounts(
            waiting=int(waiting[0]) if waiting else 0, stuck=int(stuck[0]) if stuck else 0
        )

    def close(self) -> None:
        """Closes the pool's connections."""
        if self._opened:
            self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; every failure becomes :class:`JournalUnavailableError`."""
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise JournalUnavailableError(
                f"the span journal at {mask_dsn(self._dsn)} cannot be reached: {exc}"
            ) from exc
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise JournalUnavailableError(
                f"the span journal at {mask_dsn(self._dsn)} refused the write: {reason}"
            ) from exc
