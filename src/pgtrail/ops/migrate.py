"""Applies ``schema/NNNN_name.sql`` in order, once, under an advisory lock.

Each file runs in its own transaction together with the ledger row that records its
version, name and checksum, so a file is either applied and recorded or neither. One
session-level advisory lock is held for the whole run: concurrent deployers queue behind
it and then find nothing left to do. (A session-level lock does not survive a
transaction-pooling PgBouncer; point ``pgtrail migrate`` at the server or a session pool.)
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import MigrationError
from pgtrail.resources import schema_dir
from pgtrail.statements import STATEMENTS

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_NAMESPACE = "pgtrail_migrate:"


@dataclass(frozen=True)
class Migration:
    """One schema file."""

    version: int
    name: str
    path: Path
    sql_text: str
    checksum: str

    @property
    def file_name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class MigrationState:
    """A schema file (or a ledger row) and whether the database has it."""

    version: int
    name: str
    state: Literal["applied", "pending", "edited", "unknown"]
    applied_at: str | None = None


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Reads and checks the schema files: well named, contiguous from 0001, no duplicates."""
    folder = directory or schema_dir()
    if not folder.is_dir():
        raise MigrationError(f"schema folder not found: {folder}")
    migrations: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: schema files must be named NNNN_lower_snake_name.sql"
            )
        raw = path.read_bytes()
        migrations.append(
            Migration(
                version=int(match["version"]),
                name=match["name"],
                path=path,
                sql_text=raw.decode("utf-8"),
                checksum=hashlib.sha256(raw).hexdigest(),
            )
        )
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.file_name}: expected version {expected:04d} here; schema versions "
                "must run 0001, 0002, ... with no gap and no duplicate"
            )
    if not migrations:
        raise MigrationError(f"no schema files in {folder}")
    return migrations


def _applied(conn: psycopg.Connection[Any], schema: str) -> dict[int, tuple[str, str, str]]:
    """The ledger: version -> (name, checksum, applied_at); empty on a fresh database."""
    ledger = sql.Identifier(schema, "pgtrail_migrations")
    exists = conn.execute(
        STATEMENTS["migrate_ledger_exists"], (f"{schema}.pgtrail_migrations",)
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT version, name, checksum, applied_at::text FROM {} ORDER BY version").format(
            ledger
        )
    ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _states(
    migrations: list[Migration], applied: dict[int, tuple[str, str, str]]
) -> list[MigrationState]:
    states: list[MigrationState] = []
    for m in migrations:
        if m.version not in applied:
            states.append(MigrationState(m.version, m.name, "pending"))
            continue
        _, checksum, applied_at = applied[m.version]
        state: Literal["applied", "edited"] = "applied" if checksum == m.checksum else "edited"
        states.append(MigrationState(m.version, m.name, state, applied_at))
    known = {m.version for m in migrations}
    for version, (name, _, applied_at) in sorted(applied.items()):
        if version not in known:
            states.append(MigrationState(version, name, "unknown", applied_at))
    return states


def status(settings: Settings, directory: Path | None = None) -> list[MigrationState]:
    """Which schema files the database has applied, is missing, or holds in another form.

    Args:
        settings: Where the database is (``dsn``, ``db_schema``).
        directory: The schema files; by default the ones pgtrail ships.
    """
    with db.connect(settings) as conn:
        return status_on(conn, settings.db_schema, directory)


def status_on(
    conn: psycopg.Connection[Any], schema: str, directory: Path | None = None
) -> list[MigrationState]:
    """:func:`status` on a connection the caller holds.

    Args:
        conn: An open connection to the database.
        schema: The schema pgtrail's tables are in.
        directory: The schema files; by default the ones pgtrail ships.
    """
    return _states(load_migrations(directory), _applied(conn, schema))


def _refuse_inconsistent(states: list[MigrationState], migrations: list[Migration]) -> None:
    by_version = {m.version: m for m in migrations}
    for s in states:
        if s.state == "edited":
            raise MigrationError(
                f"schema/{by_version[s.version].file_name} was edited after it was applied "
                f"(applied {s.applied_at}); applied files are never changed. Restore it and "
                "put the change in a new NNNN_name.sql file."
            )
        if s.state == "unknown":
            raise MigrationError(
                f"the database has migration {s.version:04d}_{s.name}, which this pgtrail "
                "does not ship; upgrade pgtrail before migrating"
            )


def migrate(
    settings: Settings,
    *,
    dry_run: bool = False,
    directory: Path | None = None,
    on_apply: Callable[[Migration, float], None] | None = None,
) -> list[Migration]:
    """Applies the pending schema files; returns those applied (or, dry run, to be applied)."""
    migrations = load_migrations(directory)
    schema = settings.db_schema
    lock_key = f"{_LOCK_NAMESPACE}{schema}"
    with db.connect(settings) as conn:
        conn.execute(STATEMENTS["migrate_lock"], (lock_key,))
        try:
            states = _states(migrations, _applied(conn, schema))
            _refuse_inconsistent(states, migrations)
            pending_versions = {s.version for s in states if s.state == "pending"}
            pending = [m for m in migrations if m.version in pending_versions]
            if dry_run:
                return pending
            if pending:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            for migration in pending:
                started = time.perf_counter()
                _apply_one(conn, schema, migration, started)
                if on_apply:
                    on_apply(migration, time.perf_counter() - started)
            return pending
        finally:
            conn.execute(STATEMENTS["migrate_unlock"], (lock_key,))


def _apply_one(
    conn: psycopg.Connection[Any], schema: str, migration: Migration, started: float
) -> None:
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema))
            )
            conn.execute(migration.sql_text.encode("utf-8"))
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version, name, checksum, execution_ms) VALUES (%s, %s, %s, %s)"
                ).format(sql.Identifier(schema, "pgtrail_migrations")),
                (migration.version, migration.name, migration.checksum, elapsed_ms),
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"schema/{migration.file_name} failed and was rolled back: {exc}"
        ) from exc
    db.set_search_path(conn, schema)
