"""Daily partitions of the log tables: created ahead of time, dropped past retention.

The SQL functions doing the work live in the schema (``pgtrail_ensure_partitions``,
``pgtrail_drop_partitions_before``) so a DBA can call them from psql or cron as well.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from pgtrail.statements import STATEMENTS
from pgtrail.tables import LOG_TABLES

DAYS_AHEAD = 14
# Rows older than this (or further ahead than DAYS_AHEAD) stay in the DEFAULT partition
# rather than creating one partition per stray timestamp from a skewed clock.
MAX_DAYS_BACK = 400


def utc_today() -> dt.date:
    """Today's date in UTC, the calendar the partitions follow."""
    return dt.datetime.now(dt.UTC).date()


def ensure(conn: psycopg.Connection[Any], first: dt.date, last: dt.date) -> int:
    """Creates any missing daily partitions from ``first`` to ``last``; returns how many."""
    row = conn.execute(STATEMENTS["partitions_ensure"], (first, last)).fetchone()
    return int(row[0]) if row else 0


def ensure_ahead(conn: psycopg.Connection[Any], days_ahead: int = DAYS_AHEAD) -> int:
    """Creates the partitions for today and the next ``days_ahead`` days."""
    today = utc_today()
    return ensure(conn, today, today + dt.timedelta(days=days_ahead))


def clamp_window(first: dt.date, last: dt.date) -> tuple[dt.date, dt.date] | None:
    """The part of [first, last] worth a partition of its own, or None when none is."""
    today = utc_today()
    lo = max(first, today - dt.timedelta(days=MAX_DAYS_BACK))
    hi = min(last, today + dt.timedelta(days=DAYS_AHEAD))
    return (lo, hi) if lo <= hi else None


def days_ahead(conn: psycopg.Connection[Any]) -> int:
    """How many whole days after today are covered by a partition of every log table."""
    covered: list[int] = []
    today = utc_today()
    for table in LOG_TABLES:
        rows = conn.execute(STATEMENTS["partitions_of_table"], (table,)).fetchall()
        days = {dt.datetime.strptime(r[0], "%Y%m%d").replace(tzinfo=dt.UTC).date() for r in rows}
        ahead = -1
        while today + dt.timedelta(days=ahead + 1) in days:
            ahead += 1
        covered.append(ahead)
    return min(covered) if covered else -1


def default_partition_rows(conn: psycopg.Connection[Any]) -> int:
    """Rows waiting in the DEFAULT partitions (timestamps outside every daily partition)."""
    total = 0
    for table in LOG_TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}_default").fetchone()
        total += int(row[0]) if row else 0
    return total
