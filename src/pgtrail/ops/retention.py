"""Retention: drop whole partitions past the window, blank bodies past a shorter one.

Rows leave by partition: a partition is dropped only when its upper bound is at or before
the cut-off, so no row inside the window is ever touched; the partition that straddles the
cut-off waits for the next run (retention is exact to one UTC day). Rows in the DEFAULT
partitions (timestamps outside every daily partition) are deleted one by one when past the
window. Payload retention keeps every row and every figure (cost, tokens, latency, outcome)
and blanks only bodies: the LLM ``payload`` column, prompt bodies no call inside the window
uses, and long strings inside ``particular_data``. The rollups are left alone by both, on
purpose: they keep cost, token, latency and outcome history after the raw rows are gone, for
their own window (``keep_rollups``), or for ever when none is given.

Each partition is dropped in a transaction of its own under a short lock timeout, so a
running writer waits at most that long and a busy partition is retried rather than queued
behind.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgtrail.durations import parse_duration
from pgtrail.errors import RetentionError, RollupError
from pgtrail.ops import partitions, rollups
from pgtrail.statements import STATEMENTS
from pgtrail.tables import LLM, LOG_TABLES

DEFAULT_MAX_FIELD_CHARS = 1024
"""Strings in ``particular_data`` longer than this are blanked by payload retention."""
MIN_MAX_FIELD_CHARS = 64
LOCK_TIMEOUT_MS = 2000
DROP_ATTEMPTS = 5
_PARTITION_LOCK = "pgtrail_partitions"  # the advisory lock pgtrail_ensure_partitions takes


@dataclass(frozen=True)
class Partition:
    """One partition of a log table and its range (None for DEFAULT or an open bound)."""

    table: str
    schema: str
    name: str
    lower: dt.datetime | None
    upper: dt.datetime | None
    is_default: bool


@dataclass(frozen=True)
class DroppedPartition:
    """A partition dropped (or, in a dry run, to be dropped) and the rows it held."""

    table: str
    name: str
    upper: dt.datetime
    rows: int


@dataclass
class RetentionReport:
    """What a retention run did, or in a dry run would do."""

    dry_run: bool
    now: dt.datetime
    keep_from: dt.datetime | None = None
    payloads_from: dt.datetime | None = None
    rollups_from: dt.datetime | None = None
    dropped: list[DroppedPartition] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    default_rows_deleted: int = 0
    partitions_created: int = 0
    payloads_blanked: int = 0
    prompts_blanked: int = 0
    fields_blanked: int = 0
    rollup_rows_deleted: int = 0

    @property
    def rows_dropped(self) -> int:
        """Rows in the dropped partitions."""
        return sum(d.rows for d in self.dropped)


def parse_window(option: str, text: str) -> dt.timedelta:
    """``28d`` -> 28 days; raises RetentionError naming the option on bad input."""
    try:
        window = parse_duration(text)
    except ValueError as exc:
        raise RetentionError(f"{option}: {exc}") from None
    if window < dt.timedelta(hours=1):
        raise RetentionError(f"{option}: {text!r} is too short; retention keeps at least 1h")
    return window


def list_partitions(conn: psycopg.Connection[Any]) -> list[Partition]:
    """Every partition of the four log tables, with its bounds read from the catalog."""
    rows = conn.execute(STATEMENTS["retention_partitions"], (list(LOG_TABLES),)).fetchall()
    return [Partition(*row) for row in rows]


def run(
    conn: psycopg.Connection[Any],
    *,
    keep: dt.timedelta | None = None,
    keep_payloads: dt.timedelta | None = None,
    keep_rollups: dt.timedelta | None = None,
    dry_run: bool = False,
    days_ahead: int = partitions.DAYS_AHEAD,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    now: dt.datetime | None = None,
    on_step: Callable[[str], None] | None = None,
) -> RetentionReport:
    """Applies retention on ``conn`` (an autocommit connection of the tables' owner).

    Args:
        conn: Connection whose search_path points at the pgtrail schema.
        keep: Rows older than this are deleted (whole partitions, and DEFAULT rows).
        keep_payloads: Bodies older than this are blanked; figures stay.
        keep_rollups: Rollup hours older than this are deleted (None: kept for ever).
        dry_run: Count what would happen; change nothing.
        days_ahead: Daily partitions to have after today.
        max_field_chars: Longer strings in particular_data are blanked with the payloads.
        now: The clock (default: now, UTC).
        on_step: Called with a line of progress as each step finishes.

    Raises:
        RetentionError: bad windows, or the connected role may not change the tables.
    """
    if keep is None and keep_payloads is None and keep_rollups is None:
        raise RetentionError("nothing to do: give --keep, --keep-payloads or --keep-rollups")
    if keep is not None and keep_payloads is not None and keep_payloads > keep:
        raise RetentionError("--keep-payloads must not be longer than --keep")
    if keep is not None and keep_rollups is not None and keep_rollups < keep:
        raise RetentionError(
            "--keep-rollups must not be shorter than --keep: reports read whole hours from "
            "the rollups, so they would lose hours whose raw rows are still kept"
        )
    if max_field_chars < MIN_MAX_FIELD_CHARS:
        raise RetentionError(f"--max-field-chars must be at least {MIN_MAX_FIELD_CHARS}")
    current = now or dt.datetime.now(dt.UTC)
    report = RetentionReport(dry_run=dry_run, now=current)
    report.keep_from = current - keep if keep is not None else None
    report.payloads_from = current - keep_payloads if keep_payloads is not None else None
    report.rollups_from = current - keep_rollups if keep_rollups is not None else None
    step = on_step or (lambda _line: None)
    try:
        report.partitions_created = _ensure_ahead(conn, days_ahead, current, dry_run)
        step(f"partitions ahead: {report.partitions_created}")
        if report.keep_from is not None:
            _drop_past(conn, report, report.keep_from, step)
            if not dry_run:
                rollups.mark_raw_gone(conn, report.keep_from)
        if report.payloads_from is not None:
            _blank_payloads(conn, report, report.payloads_from, max_field_chars, step)
        if report.rollups_from is not None:
            _prune_rollups(conn, report, report.rollups_from, step)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RetentionError(
            "retention must run as the owner of the pgtrail tables (the role that ran "
            f"`pgtrail migrate`): {exc.diag.message_primary or exc}"
        ) from exc
    return report


def _prune_rollups(
    conn: psycopg.Connection[Any],
    report: RetentionReport,
    cutoff: dt.datetime,
    step: Callable[[str], None],
) -> None:
    if report.dry_run:
        row = conn.execute(
            STATEMENTS["retention_rollup_rows_before"], {"before": cutoff}
        ).fetchone()
        report.rollup_rows_deleted = int(row[0]) if row else 0
    else:
        try:
            report.rollup_rows_deleted = rollups.prune(conn, cutoff)
        except RollupError as exc:
            raise RetentionError(str(exc)) from exc
    step(f"rollup rows: {report.rollup_rows_deleted}")


def _ensure_ahead(
    conn: psycopg.Connection[Any], days_ahead: int, now: dt.datetime, dry_run: bool
) -> int:
    if not dry_run:
        return partitions.ensure_ahead(conn, days_ahead)
    today = now.astimezone(dt.UTC).date()
    have = {(p.table, p.name) for p in list_partitions(conn)}
    return sum(
        (table, f"{table}_p{today + dt.timedelta(days=i):%Y%m%d}") not in have
        for table in LOG_TABLES
        for i in range(days_ahead + 1)
    )


def _drop_past(
    conn: psycopg.Connection[Any],
    report: RetentionReport,
    cutoff: dt.datetime,
    step: Callable[[str], None],
) -> None:
    for part in list_partitions(conn):
        if part.is_default:
            report.default_rows_deleted += _delete_default_rows(conn, part, cutoff, report.dry_run)
            continue
        if part.upper is None or part.upper > cutoff:
            continue
        rows = _drop_partition(conn, part, report.dry_run)
        if rows is None:
            report.busy.append(part.name)
            step(f"busy, left for the next run: {part.name}")
            continue
        report.dropped.append(DroppedPartition(part.table, part.name, part.upper, rows))
        step(f"{'would drop' if report.dry_run else 'dropped'} {part.name} ({rows} rows)")


def _delete_default_rows(
    conn: psycopg.Connection[Any], part: Partition, cutoff: dt.datetime, dry_run: bool
) -> int:
    ident = sql.Identifier(part.schema, part.name)
    if dry_run:
        query = sql.SQL("SELECT count(*) FROM {} WHERE created_at < %s").format(ident)
        row = conn.execute(query, (cutoff,)).fetchone()
        return int(row[0]) if row else 0
    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE created_at < %s").format(ident), (cutoff,))
    return max(cur.rowcount, 0)


def _drop_partition(conn: psycopg.Connection[Any], part: Partition, dry_run: bool) -> int | None:
    """Drops one partition; returns its row count, or None when it stayed busy."""
    ident = sql.Identifier(part.schema, part.name)
    count = sql.SQL("SELECT count(*) FROM {}").format(ident)
    if dry_run:
        row = conn.execute(count).fetchone()
        return int(row[0]) if row else 0
    for attempt in range(DROP_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT_MS))
                )
                conn.execute(STATEMENTS["retention_partition_lock"], (_PARTITION_LOCK,))
                exists = conn.execute(
                    STATEMENTS["retention_partition_exists"], (part.schema, part.name)
                ).fetchone()
                if not exists or not exists[0]:
                    return 0  # dropped meanwhile by another run
                row = conn.execute(count).fetchone()
                conn.execute(sql.SQL("DROP TABLE {}").format(ident))
                return int(row[0]) if row else 0
        except psycopg.errors.LockNotAvailable:
            time.sleep(0.2 * (attempt + 1))
    return None


def _blank_payloads(
    conn: psycopg.Connection[Any],
    report: RetentionReport,
    cutoff: dt.datetime,
    max_chars: int,
    step: Callable[[str], None],
) -> None:
    keep_from = report.keep_from
    dropped = {d.name for d in report.dropped}
    for part in list_partitions(conn):
        if part.name in dropped or (part.lower is not None and part.lower >= cutoff):
            continue  # gone already (or in a dry run, going), or wholly inside the window
        if keep_from is not None and part.upper is not None and part.upper <= keep_from:
            continue  # past the main window: the next run drops it
        ident = sql.Identifier(part.schema, part.name)
        window: sql.Composable = sql.SQL("created_at < %(cutoff)s")
        if keep_from is not None:
            window = sql.SQL("{} AND created_at >= %(keep_from)s").format(window)
        params = {"cutoff": cutoff, "keep_from": keep_from, "n": max_chars}
        if part.table == LLM:
            report.payloads_blanked += _update(
                conn,
                report.dry_run,
                sql.SQL("UPDATE {} SET payload = NULL WHERE payload IS NOT NULL AND {}").format(
                    ident, window
                ),
                sql.SQL("SELECT count(*) FROM {} WHERE payload IS NOT NULL AND {}").format(
                    ident, window
                ),
                params,
            )
        long_fields = sql.SQL(
            "octet_length(particular_data::text) > %(n)s "
            "AND pgtrail_blank_long_strings(particular_data, %(n)s) <> particular_data"
        )
        report.fields_blanked += _update(
            conn,
            report.dry_run,
            sql.SQL(
                "UPDATE {} SET particular_data = pgtrail_blank_long_strings(particular_data, %(n)s)"
                " WHERE {} AND {}"
            ).format(ident, window, long_fields),
            sql.SQL("SELECT count(*) FROM {} WHERE {} AND {}").format(ident, window, long_fields),
            params,
        )
    step(f"payloads: {report.payloads_blanked}, long fields: {report.fields_blanked}")
    unused = sql.SQL(
        "p.body <> '' AND p.first_seen_at < %(cutoff)s AND NOT EXISTS ("
        "SELECT 1 FROM logs_llm_execution AS l "
        "WHERE l.prompt_hash = p.prompt_hash AND l.created_at >= %(cutoff)s)"
    )
    report.prompts_blanked = _update(
        conn,
        report.dry_run,
        sql.SQL("UPDATE pgtrail_prompt AS p SET body = '' WHERE {}").format(unused),
        sql.SQL("SELECT count(*) FROM pgtrail_prompt AS p WHERE {}").format(unused),
        {"cutoff": cutoff},
    )
    step(f"prompt bodies: {report.prompts_blanked}")


def _update(
    conn: psycopg.Connection[Any],
    dry_run: bool,
    update: sql.Composed,
    count: sql.Composed,
    params: dict[str, Any],
) -> int:
    if dry_run:
        row = conn.execute(count, params).fetchone()
        return int(row[0]) if row else 0
    return max(conn.execute(update, params).rowcount, 0)
