"""Writes prepared batches to PostgreSQL.

A batch holds each row as its ``COPY`` text line (:mod:`pgtrail.writer.copytext`). The fast path is
one transaction with one ``COPY`` per table, each sent in a single write. The idempotent
path, used for spool replays and for any batch whose first attempt may have committed,
copies the same lines into a temporary staging table and moves the rows with
``INSERT ... ON CONFLICT DO NOTHING``, so an event already stored is never stored twice. A
batch that fails for its data is split in halves until the rows that fail are alone; only
those are rejected. Prompt bodies always take the staged path (a body is stored once).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtrail.config import Settings
from pgtrail.db import connection_options, mask_dsn
from pgtrail.errors import SinkUnavailableError
from pgtrail.ops import partitions
from pgtrail.statements import STATEMENTS
from pgtrail.tables import COLUMNS, PROMPT
from pgtrail.writer import copytext
from pgtrail.writer.pricing import PriceBook
from pgtrail.writer.spool import Batch, Row

log = logging.getLogger("pgtrail")

WRITER_WAIT_S = 0.75
"""How long the writer waits for a connection before the batch goes to the spool.

Short on purpose: while PostgreSQL is unreachable every attempt waits this long, and what
waits in memory is what a ``kill -9`` loses. A slow connect is not lost either: the batch
is spooled and replayed."""
_WRITER_CONNECT_TIMEOUT_S = 2  # libpq's minimum; a refused port fails at once anyway


@dataclass(frozen=True)
class RejectedRow:
    """A row PostgreSQL refused, with its reason."""

    table: str
    row: Row
    reason: str


_RESTORE_PROMPT = sql.SQL(
    "(prompt_hash) DO UPDATE SET body = EXCLUDED.body, body_chars = EXCLUDED.body_chars "
    "WHERE pgtrail_prompt.body = '' AND EXCLUDED.body <> ''"
)


class Sink(Protocol):
    """Where the flusher sends prepared batches: PostgreSQL (:class:`PgSink`), or memory
    (:class:`pgtrail.testing.MemorySink`)."""

    prices: PriceBook
    """The price table that costs are inferred from."""

    def refresh_prices(self) -> None:
        """Reloads the price table when it is stale; never raises."""

    def probe(self) -> None:
        """Raises :class:`SinkUnavailableError` when the destination cannot be reached."""

    def ensure_partitions(self, batch: Batch) -> None:
        """Makes room for the days the batch's rows fall on."""

    def write(self, batch: Batch) -> None:
        """Stores a batch whole, or raises."""

    def write_isolating(self, batch: Batch) -> list[RejectedRow]:
        """Stores a batch idempotently; returns only the rows refused."""
        ...

    def close(self) -> None:
        """Releases connections."""

    def reset_after_fork(self) -> None:
        """Forgets connections inherited from the parent process."""


class PgSink:
    """The batch writer's connection to PostgreSQL (a psycopg pool, ours or borrowed)."""

    def __init__(self, settings: Settings, pool: ConnectionPool | None = None) -> None:
        self.settings = settings
        self._borrowed = pool is not None
        self._pool = pool
        self._days: set[dt.date] = set()
        self._bypasses_rls: bool | None = None
        self.prices = PriceBook()

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.settings.dsn,
                min_size=1,
                max_size=2,
                open=False,
                timeout=WRITER_WAIT_S,
                kwargs={
                    "connect_timeout": _WRITER_CONNECT_TIMEOUT_S,
                    # Set once per connection: a SET per batch would be a round trip more.
                    "options": connection_options(self.settings.dsn, self.settings.db_schema),
                },
                name="pgtrail-writer",
            )
        if self._pool.closed:
            self._pool.open(wait=False)
        return self._pool

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._get_pool().connection() as conn, conn.transaction():
                if self._borrowed:  # a pool of the application's: its search_path is its own
                    schema = sql.Identifier(self.settings.db_schema)
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(schema))
                yield conn
        except PoolTimeout as exc:
            raise SinkUnavailableError(
                f"PostgreSQL at {mask_dsn(self.settings.dsn)} is unreachable: {exc}"
            ) from exc
        except psycopg.OperationalError as exc:
            raise SinkUnavailableError(str(exc)) from exc

    def refresh_prices(self) -> None:
        """Reloads the price table when stale; raises only when PostgreSQL is unreachable."""
        if not self.prices.stale():
            return
        try:
            with self._transaction() as conn:
                self.prices.load(conn)
        except psycopg.Error as exc:
            log.warning("pgtrail: price table not loaded (%s); costs stay null until it is", exc)

    def probe(self) -> None:
        """One round trip; raises SinkUnavailableError when PostgreSQL is unreachable."""
        with self._transaction() as conn:
            conn.execute(STATEMENTS["sink_probe"])

    def ensure_partitions(self, batch: Batch) -> None:
        """Creates the day partitions a batch's rows need, once per day per process."""
        texts: set[str] = set()
        for table, rows in batch.items():
            if table != PROMPT:
                texts.update(map(copytext.created_day, rows))
        missing = {dt.date.fromisoformat(day) for day in texts} - self._days
        if not missing:
            return
        window = partitions.clamp_window(min(missing), max(missing))
        if window:
            with self._transaction() as conn:
                partitions.ensure(conn, *window)
            first, last = window
            self._days.update(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
        self._days.update(missing)  # days outside the window go to DEFAULT by design

    def write(self, batch: Batch) -> None:
        """Fast path: one transaction, one ``COPY`` per table. Raises on any failure."""
        if not self._writes_as_owner():
            # PostgreSQL refuses COPY FROM where row-level security applies (a writer role
            # that does not own the tables); the staged INSERT path is allowed.
            self.write_idempotent(batch)
            return
        with self._transaction() as conn:
            for table, rows in batch.items():
                if not rows:
                    continue
                if table == PROMPT:
                    self._merge(conn, table, rows)
                else:
                    self._copy(conn, sql.Identifier(table), table, rows)

    def write_idempotent(self, batch: Batch) -> None:
        """Replay path: rows already stored are skipped, never duplicated."""
        with self._transaction() as conn:
            for table, rows in batch.items():
                if rows:
                    self._merge(conn, table, rows)

    def write_isolating(self, batch: Batch) -> list[RejectedRow]:
        """Idempotent write that survives bad rows: returns only the rows refused."""
        try:
            self.write_idempotent(batch)
            return []
        except SinkUnavailableError:
            raise
        except psycopg.Error:
            pass
        rejected: list[RejectedRow] = []
        for table, rows in batch.items():
            rejected.extend(self._bisect(table, rows))
        return rejected

    def _bisect(self, table: str, rows: list[Row]) -> list[RejectedRow]:
        try:
            self.write_idempotent({table: rows})
            return []
        except SinkUnavailableError:
            raise
        except psycopg.Error as exc:
            if len(rows) == 1:
                reason = str(exc).strip().splitlines()[0]
                return [RejectedRow(table, rows[0], reason)]
        middle = len(rows) // 2
        return self._bisect(table, rows[:middle]) + self._bisect(table, rows[middle:])

    def _writes_as_owner(self) -> bool:
        """Whether row-level security passes this role by (owner, superuser, BYPASSRLS)."""
        if self._bypasses_rls is None:
            with self._transaction() as conn:
                found = conn.execute(STATEMENTS["sink_bypasses_rls"]).fetchone()
            self._bypasses_rls = bool(found and found[0])
        return self._bypasses_rls

    @staticmethod
    def _copy(
        conn: psycopg.Connection[Any], target: sql.Identifier, table: str, rows: list[Row]
    ) -> None:
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS[table])
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as copy:
            copy.write("\n".join(rows) + "\n")

    def _merge(self, conn: psycopg.Connection[Any], table: str, rows: list[Row]) -> None:
        stage = sql.Identifier(f"pgtrail_stage_{table}")
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(stage, sql.Identifier(table))
        )
        self._copy(conn, stage, table, rows)
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS[table])
        conflict = sql.SQL("DO NOTHING")
        if table == PROMPT and self._bypasses_rls:
            # The owner also restores a body that payload retention blanked; other writers
            # may only insert.
            conflict = _RESTORE_PROMPT
        # DISTINCT ON: one batch may carry the same prompt body twice (after a retry).
        distinct = sql.SQL("DISTINCT ON (prompt_hash) " if table == PROMPT else "")
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {}{} FROM {} ON CONFLICT {}").format(
                sql.Identifier(table), names, distinct, names, stage, conflict
            )
        )

    def close(self) -> None:
        """Closes the pool if it is ours; a borrowed pool stays open."""
        if self._pool is not None and not self._borrowed:
            self._pool.close()
        if not self._borrowed:
            self._pool = None

    def reset_after_fork(self) -> None:
        """Forgets the parent's pool: its sockets belong to the parent."""
        if not self._borrowed:
            self._pool = None
        self._days = set()
