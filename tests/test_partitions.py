"""Daily partitions: no row is ever rejected for its timestamp; strays are moved, not lost."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from pgtrail.ops import partitions
from pgtrail.tables import LOG_TABLES

ODD_TIMES = [
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2999, 12, 31, 23, 59, tzinfo=dt.UTC),
    dt.datetime.now(dt.UTC) + dt.timedelta(days=90),
    dt.datetime.now(dt.UTC) - dt.timedelta(days=3650),
]


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_rows_far_in_the_past_or_future_are_accepted(postgresql: psycopg.Connection[Any]) -> None:
    for table in LOG_TABLES:
        extra = ", workflow" if table == "logs_execution" else ""
        value = ", 'wf'" if table == "logs_execution" else ""
        for at in ODD_TIMES:
            postgresql.execute(
                f"INSERT INTO {table} (event_id, execution_id, created_at, event_type{extra}) "
                f"VALUES (%s, %s, %s, 'x'{value})",
                (uuid.uuid4(), uuid.uuid4(), at),
            )
        assert _count(postgresql, table) == len(ODD_TIMES)
    assert partitions.default_partition_rows(postgresql) == 4 * len(ODD_TIMES)


def test_creating_a_partition_moves_its_rows_out_of_the_default(
    postgresql: psycopg.Connection[Any],
) -> None:
    day = partitions.utc_today() + dt.timedelta(days=60)
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    ids = [uuid.uuid4() for _ in range(3)]
    for event_id in ids:
        postgresql.execute(
            "INSERT INTO logs_user_journey (event_id, execution_id, created_at, event_type) "
            "VALUES (%s, %s, %s, 'x')",
            (event_id, uuid.uuid4(), at),
        )
    assert _count(postgresql, "logs_user_journey_default") == 3
    assert partitions.ensure(postgresql, day, day) == 4
    assert _count(postgresql, "logs_user_journey_default") == 0
    part = f"logs_user_journey_p{day:%Y%m%d}"
    assert {r[0] for r in postgresql.execute(f"SELECT event_id FROM {part}").fetchall()} == set(ids)
    assert partitions.ensure(postgresql, day, day) == 0


def test_a_replayed_event_is_a_no_op(postgresql: psycopg.Connection[Any]) -> None:
    event_id, at = uuid.uuid4(), dt.datetime.now(dt.UTC)
    for _ in range(3):
        postgresql.execute(
            "INSERT INTO logs_llm_execution (event_id, execution_id, created_at) "
            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (event_id, uuid.uuid4(), at),
        )
    assert _count(postgresql, "logs_llm_execution") == 1


def test_partitions_exist_two_weeks_ahead_after_migrating(
    postgresql: psycopg.Connection[Any],
) -> None:
    assert partitions.days_ahead(postgresql) >= partitions.DAYS_AHEAD


def test_partitions_command_rehomes_recent_stray_rows(dsn: str) -> None:
    from typer.testing import CliRunner

    from pgtrail.cli import app

    day = partitions.utc_today() - dt.timedelta(days=30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO logs_user_journey (event_id, execution_id, created_at, event_type) "
            "VALUES (%s, %s, %s, 'x')",
            (uuid.uuid4(), uuid.uuid4(), dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)),
        )
    result = CliRunner().invoke(app, ["--dsn", dsn, "partitions"])
    assert result.exit_code == 0, result.output
    with psycopg.connect(dsn) as conn:
        assert partitions.default_partition_rows(conn) == 0
        assert _count(conn, f"logs_user_journey_p{day:%Y%m%d}") == 1
