"""The single source of table names and COPY column order matches the migrated database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgtrail.tables import COLUMNS, LOG_TABLES, MODEL_PRICE

# pg_catalog's names for the types COLUMNS spells the short way.
_CATALOG_TYPE = {
    "uuid": "uuid",
    "timestamptz": "timestamp with time zone",
    "text": "text",
    "jsonb": "jsonb",
    "int4": "integer",
    "numeric": "numeric",
}


def _columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, NULL)
        FROM pg_attribute AS a
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (table,),
    ).fetchall()
    return [(name, kind) for name, kind in rows]


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_copy_columns_are_the_table_columns_in_order_with_their_types(
    postgresql: psycopg.Connection[Any], table: str
) -> None:
    expected = [(name, _CATALOG_TYPE[kind]) for name, kind in COLUMNS[table]]
    stored = _columns(postgresql, table)
    if table in LOG_TABLES:
        assert stored == expected
        return
    # Other tables may hold columns the writer leaves to their defaults, after the written ones.
    assert stored[: len(expected)] == expected
    for name, _ in stored[len(expected) :]:
        has_default = postgresql.execute(
            "SELECT atthasdef FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            (table, name),
        ).fetchone()
        assert has_default == (True,), f"{table}.{name} is neither written nor defaulted"


def test_every_log_table_and_the_price_table_exist(postgresql: psycopg.Connection[Any]) -> None:
    for table in (*LOG_TABLES, MODEL_PRICE):
        found = postgresql.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        assert found == (True,), table
    assert set(LOG_TABLES) < set(COLUMNS)
