"""Connections to PostgreSQL: masked DSNs, errors that say what to check, search_path."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgtrail.config import Settings
from pgtrail.errors import ConfigurationError, DatabaseUnavailableError

CONNECT_TIMEOUT_S = 5


def mask_dsn(dsn: str) -> str:
    """Returns the DSN as ``postgresql://user:***@host:port/db``, never with the password."""
    try:
        parts: dict[str, Any] = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    user = parts.get("user") or ""
    secret = ":***" if parts.get("password") else ""
    auth = f"{user}{secret}@" if user or secret else ""
    host = parts.get("host") or parts.get("hostaddr") or "localhost (libpq default)"
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or "(libpq default)"
    return f"postgresql://{auth}{host}:{port}/{dbname}"


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    """An error naming the masked DSN, the driver's reason and what to check."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailableError(
        f"cannot reach PostgreSQL at {mask_dsn(dsn)}: {reason}\n"
        "Check that the server is running and accepts TCP connections, and that "
        "PGTRAIL_DSN (or --dsn) names the right host, port, database and user."
    )


def connect(settings: Settings, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Opens one connection with ``search_path`` set to the configured schema."""
    try:
        conn = psycopg.connect(
            settings.dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.OperationalError as exc:
        raise unavailable(settings.dsn, exc) from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"PGTRAIL_DSN is not a valid connection string: {exc}") from exc
    set_search_path(conn, settings.db_schema)
    return conn


def connection_options(dsn: str, schema: str) -> str:
    """libpq ``options`` setting the search path, after any the DSN or PGOPTIONS give.

    For pools, whose connections then start in the schema without a ``SET`` each.

    Args:
        dsn: The connection string, whose own ``options`` are kept first.
        schema: The pgtrail schema (a plain identifier, checked in Settings).
    """
    given = conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    # Schema names are plain identifiers (checked in Settings): nothing to quote.
    return f"{given} -c search_path={schema},public".strip()


def set_search_path(conn: psycopg.Connection[Any], schema: str) -> None:
    """Points unqualified names at the pgtrail schema for this session."""
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    if not conn.autocommit:
        conn.commit()
