"""Real servers for the tests: PostgreSQL through pytest-postgresql, and Redis.

PostgreSQL: ``PGTRAIL_TEST_DSN`` if set; else a server already answering on
127.0.0.1:5432 (the no-process fixture); else, when ``postgres`` may run as this user, the
process fixture; else (root with no server) a throwaway cluster run as an unprivileged user.
Each test gets its own database, cloned from a template that holds the migrated schema.
Redis: ``PGTRAIL_TEST_REDIS_URL``, else 127.0.0.1:6379, else a throwaway ``redis-server``;
each test gets its own key prefix.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from pgtrail.config import Settings
from pgtrail.ops import devservices
from pgtrail.ops.migrate import migrate

for _name in [
    n for n in os.environ if n.startswith("PGTRAIL_") and not n.startswith("PGTRAIL_TEST_")
]:
    del os.environ[_name]

_DBNAME = f"pgtrail_test_{os.getpid()}"


def _load_schema(**kwargs: Any) -> None:
    """Loader for the template database: runs the real migrations."""
    dsn = make_conninfo(
        host=kwargs["host"],
        port=kwargs["port"],
        user=kwargs["user"],
        dbname=kwargs["dbname"],
        password=kwargs.get("password") or None,
    )
    migrate(Settings(dsn=dsn, redis_url=None))


def _server_from_dsn(dsn: str) -> dict[str, Any]:
    parts = conninfo_to_dict(dsn)
    return {
        "host": parts.get("host", "127.0.0.1"),
        "port": int(str(parts.get("port") or 5432)),
        "user": parts.get("user", "postgres"),
        "password": parts.get("password"),
    }


def _choose_postgres() -> dict[str, Any] | None:
    if os.environ.get("PGTRAIL_TEST_DSN"):
        return _server_from_dsn(os.environ["PGTRAIL_TEST_DSN"])
    if devservices.port_open("127.0.0.1", 5432):
        return {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": None}
    if os.geteuid() != 0:
        return None  # pytest-postgresql starts its own postgres
    local = devservices.LocalPostgres().start()
    atexit.register(local.destroy)
    return {"host": "127.0.0.1", "port": local.port, "user": local.user, "password": None}


_SERVER = _choose_postgres()
if _SERVER is None:
    postgresql_server = factories.postgresql_proc(
        port=None,
        dbname=_DBNAME,
        load=[_load_schema],
        executable=str(devservices.postgres_bin_dir() / "pg_ctl"),
    )
else:
    postgresql_server = factories.postgresql_noproc(  # type: ignore[assignment]
        host=_SERVER["host"],
        port=_SERVER["port"],
        user=_SERVER["user"],
        password=_SERVER["password"],
        dbname=_DBNAME,
        load=[_load_schema],
    )
postgresql = factories.postgresql("postgresql_server")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A reachable Redis: configured, local default, or a throwaway server."""
    configured = os.environ.get("PGTRAIL_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if devservices.port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    local = devservices.LocalRedis().start()
    try:
        yield local.url
    finally:
        local.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"pgtrail-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any]) -> str:
    """DSN of this test's freshly cloned, migrated database."""
    info = postgresql.info
    return make_conninfo(
        host=info.host,
        port=info.port,
        user=info.user,
        dbname=info.dbname,
        password=info.password or None,
    )


@pytest.fixture
def settings(dsn: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """Settings pointing at this test's database, Redis prefix and spool folder."""
    return Settings(
        dsn=dsn, redis_url=redis_url, redis_prefix=redis_prefix, spool_dir=tmp_path / "spool"
    )


@pytest.fixture
def empty_db_dsn(postgresql: psycopg.Connection[Any]) -> Iterator[str]:
    """DSN of a brand-new database with no pgtrail schema in it."""
    name = f"pgtrail_empty_{uuid.uuid4().hex[:10]}"
    info = postgresql.info
    admin = psycopg.connect(
        host=info.host,
        port=info.port,
        user=info.user,
        dbname="postgres",
        password=info.password or None,
        autocommit=True,
    )
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(
            host=info.host,
            port=info.port,
            user=info.user,
            dbname=name,
            password=info.password or None,
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
