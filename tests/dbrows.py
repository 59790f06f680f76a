"""Reading rows back in tests: one connection per question, values bound by the driver."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row ``query`` returns (no parameters: ``%`` in the query is taken literally)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params or None).fetchall()


def one(dsn: str, query: str, *params: Any) -> Any:
    """The single row ``query`` returns, or its single value when it has one column."""
    found = rows(dsn, query, *params)
    assert len(found) == 1, found
    return found[0][0] if len(found[0]) == 1 else found[0]


def count(dsn: str, table: str) -> int:
    """How many rows ``table`` holds."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0
