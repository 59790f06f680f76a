"""Rollups: merge the partial rows the insert trigger appends, rebuild hours from raw rows.

The trigger on ``logs_llm_execution`` (``schema/0006_rollups.sql``) appends one partial row
per statement, hour and key, in the same transaction as the calls, so reports are exact and
fresh without this module. :func:`compact` keeps the tables small (one row per hour and key);
:func:`rebuild` recomputes whole hours from raw rows, for hours whose rows were inserted into
a partition by name, or changed by hand. Both run in the database as one statement per
table, serialised by an advisory lock, so any number of cron or pg_cron runs may overlap.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from pgtrail.errors import RollupError
from pgtrail.statements import STATEMENTS


@dataclass(frozen=True)
class RollupState:
    """What the rollup tables hold.

    Attributes:
        rows: rows in both rollup tables.
        partial_rows: rows the trigger appended that no compaction has merged yet.
        first_hour: the oldest hour held, or None when empty.
        total_bytes: the bytes both tables take, indexes and TOAST included.
    """

    rows: int
    partial_rows: int
    first_hour: dt.datetime | None
    total_bytes: int


@dataclass(frozen=True)
class RollupRun:
    """What one compaction or rebuild did.

    Attributes:
        rows_written: rollup rows written (merged or recomputed).
        elapsed_ms: wall time of the run.
        rebuilt_from: start of the rebuilt range (an hour), None for a compaction.
        rebuilt_until: end of the rebuilt range (an hour, exclusive), None for a compaction.
    """

    rows_written: int
    elapsed_ms: float
    rebuilt_from: dt.datetime | None = None
    rebuilt_until: dt.datetime | None = None


def state(conn: psycopg.Connection[Any]) -> RollupState:
    """Counts rows, partial rows and bytes of the rollup tables.

    Args:
        conn: Connection whose search_path points at the pgtrail schema.
    """
    row = conn.execute(STATEMENTS["rollups_state"]).fetchone()
    if row is None:
        return RollupState(0, 0, None, 0)
    return RollupState(int(row[0]), int(row[1]), row[2], int(row[3]))


def compact(conn: psycopg.Connection[Any]) -> RollupRun:
    """Merges the partial rows of every hour into one row per key.

    Args:
        conn: Connection of the tables' owner; the merge commits when this returns.

    Raises:
        RollupError: the connected role may not run it.
    """
    started = time.perf_counter()
    row = _call(conn, "rollups_compact", ())
    return RollupRun(rows_written=row, elapsed_ms=(time.perf_counter() - started) * 1000)


def rebuild(conn: psycopg.Connection[Any], since: dt.datetime, until: dt.datetime) -> RollupRun:
    """Recomputes from raw rows every hour that ``[since, until)`` touches.

    Hours before the raw horizon (:func:`raw_from`) are refused: their raw rows are gone and
    rebuilding them would erase the history the rollups keep on purpose.

    Args:
        conn: Connection of the tables' owner; the rebuild commits when this returns.
        since: Start of the range; widened to the start of its UTC hour.
        until: End of the range (exclusive); widened to the end of its UTC hour.

    Raises:
        RollupError: an empty range, a range older than the raw rows, or a role that may
            not run it.
    """
    if until <= since:
        raise RollupError("--until must be after --since")
    lo = _hour(since)
    hi = _hour(until) if _hour(until) == until else _hour(until) + dt.timedelta(hours=1)
    horizon = raw_from(conn)
    if horizon is not None and lo < horizon:
        raise RollupError(
            f"raw calls before {horizon:%Y-%m-%d %H:%M} UTC are gone (retention dropped "
            "them); rebuilding those hours would erase their rollup history: "
            f"use --since {horizon:%Y-%m-%dT%H:%M}Z or later"
        )
    started = time.perf_counter()
    written = _call(conn, "rollups_rebuild", (lo, hi))
    return RollupRun(
        rows_written=written,
        elapsed_ms=(time.perf_counter() - started) * 1000,
        rebuilt_from=lo,
        rebuilt_until=hi,
    )


def raw_from(conn: psycopg.Connection[Any]) -> dt.datetime | None:
    """Where raw calls begin (retention dropped those before it); None while it has not.

    Args:
        conn: Connection whose search_path points at the pgtrail schema.
    """
    row = conn.execute(STATEMENTS["rollups_raw_from"]).fetchone()
    return row[0] if row and isinstance(row[0], dt.datetime) else None


def mark_raw_gone(conn: psycopg.Connection[Any], before: dt.datetime) -> None:
    """Records that raw calls before ``before`` are gone, so the percentile reports read the
    rollups' histograms for those hours.

    Args:
        conn: Connection of the tables' owner.
        before: Raw calls before this were dropped (rounded down to its UTC hour).

    Raises:
        RollupError: the connected role may not record it.
    """
    _call(conn, "rollups_raw_gone", (before,))


def prune(conn: psycopg.Connection[Any], before: dt.datetime) -> int:
    """Deletes the rollup rows of the hours before ``before``; returns how many.

    Args:
        conn: Connection of the tables' owner.
        before: Hours starting before this go.

    Raises:
        RollupError: the connected role may not run it.
    """
    return _call(conn, "rollups_prune", (before,))


def _call(conn: psycopg.Connection[Any], name: str, params: tuple[Any, ...]) -> int:
    try:
        with conn.transaction():
            row = conn.execute(STATEMENTS[name], params).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RollupError(
            "rollups are maintained by the owner of the pgtrail tables (the role that ran "
            f"`pgtrail migrate`): {exc.diag.message_primary or exc}"
        ) from exc
    except psycopg.errors.UndefinedFunction as exc:
        raise RollupError("the rollup tables are not installed; run `pgtrail migrate`") from exc
    return int(row[0]) if row and isinstance(row[0], int) else 0


def _hour(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
