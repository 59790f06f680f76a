"""Writes prepared batches to PostgreSQL.

The fast path is one transaction with a binary ``COPY`` per table. The idempotent path, used
for spool replays and for any batch whose first attempt may have committed, copies into a
temporary staging table and moves the rows with ``INSERT ... ON CONFLICT DO NOTHING``, so an
event already stored is never stored twice. A batch that fails for its data is split in
halves until the rows that fail are alone; only those are rejected.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtrail import partitions
from pgtrail.config import Settings
from pgtrail.db import CONNECT_TIMEOUT_S, mask_dsn
from pgtrail.pricing import PriceBook
from pgtrail.spool import Batch, Row

log = logging.getLogger("pgtrail")

LLM = "logs_llm_execution"
AGENT = "logs_agent_execution"
JOURNEY = "logs_user_journey"
EXECUTION = "logs_execution"
PROMPT_TABLE = "pgtrail_prompt"
_COMMON = [
    ("event_id", "uuid"),
    ("execution_id", "uuid"),
    ("created_at", "timestamptz"),
    ("tenant_id", "text"),
    ("user_id", "text"),
    ("session_id", "text"),
    ("span_id", "text"),
    ("event_type", "text"),
    ("particular_data", "jsonb"),
]
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "logs_llm_execution": [
        *_COMMON,
        ("agent_type", "text"),
        ("provider", "text"),
        ("model_target", "text"),
        ("prompt_hash", "text"),
        ("prompt_version", "text"),
        ("input_tokens", "int4"),
        ("output_tokens", "int4"),
        ("cached_input_tokens", "int4"),
        ("reasoning_tokens", "int4"),
        ("processing_time_ms", "int4"),
        ("time_to_first_token_ms", "int4"),
        ("input_cost", "numeric"),
        ("output_cost", "numeric"),
        ("total_cost", "numeric"),
        ("error", "text"),
        ("payload", "jsonb"),
    ],
    "logs_agent_execution": [*_COMMON, ("agent_type", "text")],
    "logs_user_journey": list(_COMMON),
    "logs_execution": [
        *_COMMON,
        ("workflow", "text"),
        ("parent_execution_id", "uuid"),
        ("status", "text"),
        ("error", "text"),
        ("processes_executed", "jsonb"),
        ("context", "jsonb"),
        ("finalized_at", "timestamptz"),
        ("duration_ms", "int4"),
    ],
    PROMPT_TABLE: [("prompt_hash", "text"), ("body", "text"), ("body_chars", "int4")],
}
CREATED_AT = 2  # position of created_at in every log row


class SinkUnavailableError(Exception):
    """PostgreSQL could not be reached, or the connection broke mid-batch."""


@dataclass(frozen=True)
class RejectedRow:
    """A row PostgreSQL refused, with its reason."""

    table: str
    row: Row
    reason: str


_BYPASSES_RLS = """
    SELECT coalesce(pg_has_role((SELECT relowner FROM pg_class
                                 WHERE oid = to_regclass('pgtrail_prompt')), 'MEMBER'), true)
        OR (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
"""
_RESTORE_PROMPT = sql.SQL(
    "(prompt_hash) DO UPDATE SET body = EXCLUDED.body, body_chars = EXCLUDED.body_chars "
    "WHERE pgtrail_prompt.body = '' AND EXCLUDED.body <> ''"
)


def _identity(obj: Any) -> str:
    # jsonb values arrive already serialised (and sanitised) by the record preparation.
    return str(obj)


class PgSink:
    """The batch writer's connection to PostgreSQL (a psycopg pool, ours or borrowed)."""

    def __init__(self, settings: Settings, pool: ConnectionPool | None = None) -> None:
        self.settings = settings
        self._borrowed = pool is not None
        self._pool = pool
        self._days: set[dt.date] = set()
        self._json_ready: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._bypasses_rls: bool | None = None
        self.prices = PriceBook()

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.settings.dsn,
                min_size=1,
                max_size=2,
                open=False,
                timeout=CONNECT_TIMEOUT_S,
                kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
                name="pgtrail-writer",
            )
        if self._pool.closed:
            self._pool.open(wait=False)
        return self._pool

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._get_pool().connection() as conn, conn.transaction():
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

    def ensure_partitions(self, batch: Batch) -> None:
        """Creates the day partitions a batch's rows need, once per day per process."""
        days: set[dt.date] = set()
        for table, rows in batch.items():
            if table == PROMPT_TABLE:
                continue
            for row in rows:
                created = row[CREATED_AT]
                if isinstance(created, str):
                    created = dt.datetime.fromisoformat(created)
                days.add(created.astimezone(dt.UTC).date())
        missing = days - self._days
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
        """Fast path: one transaction, binary COPY per table. Raises on any failure."""
        if not self._writes_as_owner():
            # PostgreSQL refuses COPY FROM where row-level security applies (a writer role
            # that does not own the tables); the staged INSERT path is allowed.
            self.write_idempotent(batch)
            return
        with self._transaction() as conn:
            if conn not in self._json_ready:
                set_json_dumps(_identity, conn)  # builds dumper classes: once per connection
                self._json_ready.add(conn)
            for table, rows in batch.items():
                if rows:
                    self._copy(conn, table, rows, binary=True)

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
                found = conn.execute(_BYPASSES_RLS).fetchone()
            self._bypasses_rls = bool(found and found[0])
        return self._bypasses_rls

    def _copy(
        self, conn: psycopg.Connection[Any], table: str, rows: list[Row], *, binary: bool
    ) -> None:
        columns = COLUMNS[table]
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
        if table == PROMPT_TABLE:
            # The owner also restores a body that payload retention blanked; other writers
            # may only insert.
            conflict = _RESTORE_PROMPT if self._bypasses_rls else sql.SQL("DO NOTHING")
            conn.cursor().executemany(
                sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s) ON CONFLICT {}").format(
                    sql.Identifier(table), names, conflict
                ),
                rows,
            )
            return
        fmt = sql.SQL("(FORMAT BINARY)" if binary else "")
        statement = sql.SQL("COPY {} ({}) FROM STDIN {}").format(sql.Identifier(table), names, fmt)
        with conn.cursor().copy(statement) as copy:
            if binary:
                copy.set_types([kind for _, kind in columns])
            write_row: Callable[[Row], None] = copy.write_row
            for row in rows:
                write_row(row)

    def _merge(self, conn: psycopg.Connection[Any], table: str, rows: list[Row]) -> None:
        if table == PROMPT_TABLE:
            self._copy(conn, table, rows, binary=False)
            return
        stage = sql.Identifier(f"pgtrail_stage_{table}")
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(stage, sql.Identifier(table))
        )
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS[table])
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), names, names, stage
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
