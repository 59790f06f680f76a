"""``pgtrail doctor``: is everything pgtrail depends on in order, and how to fix what is not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import typer

from pgtrail import db
from pgtrail.cli.app import app, console, settings_of
from pgtrail.config import Settings
from pgtrail.errors import PgtrailError
from pgtrail.ops import migrate, partitions, tenancy
from pgtrail.read import sandbox
from pgtrail.statements import STATEMENTS
from pgtrail.tables import LOG_TABLES

MIN_SERVER_VERSION = 140000
TENANCY_VERSION = 3  # the migration that brings row-level security
SANDBOX_VERSION = 4  # the migration that brings the read sandbox


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _database_checks(settings: Settings) -> list[Check]:
    try:
        conn = db.connect(settings)
    except PgtrailError as exc:
        return [
            Check(
                "postgresql", False, str(exc).splitlines()[0], "start PostgreSQL or set PGTRAIL_DSN"
            )
        ]
    checks: list[Check] = []
    with conn:
        version_num = int(conn.execute(STATEMENTS["doctor_server_version_num"]).fetchone()[0])  # type: ignore[index]
        version = conn.execute(STATEMENTS["doctor_server_version"]).fetchone()[0]  # type: ignore[index]
        checks.append(
            Check(
                "postgresql",
                version_num >= MIN_SERVER_VERSION,
                f"server {version} at {db.mask_dsn(settings.dsn)}",
                "" if version_num >= MIN_SERVER_VERSION else "upgrade to PostgreSQL 14 or later",
            )
        )
        states = migrate.status_on(conn, settings.db_schema)
        applied = [s for s in states if s.state == "applied"]
        pending = [s for s in states if s.state == "pending"]
        broken = [s for s in states if s.state in ("edited", "unknown")]
        schema_version = f"{applied[-1].version:04d}" if applied else "none"
        checks.append(
            Check(
                "schema",
                not pending and not broken,
                f"schema {settings.db_schema} at version {schema_version}; "
                f"{len(pending)} pending, {len(broken)} inconsistent",
                "pgtrail migrate" if pending else ("pgtrail migrate status" if broken else ""),
            )
        )
        if applied:
            try:
                ahead = partitions.days_ahead(conn)
                stray = partitions.default_partition_rows(conn)
            except psycopg.Error as exc:
                checks.append(
                    Check("partitions", False, str(exc).splitlines()[0], "pgtrail migrate")
                )
            else:
                checks.append(
                    Check(
                        "partitions",
                        ahead >= 7,
                        f"daily partitions cover {max(ahead, 0)} day(s) ahead",
                        "" if ahead >= 7 else "pgtrail partitions",
                    )
                )
                checks.append(
                    Check(
                        "default partitions",
                        stray == 0,
                        f"{stray} row(s) outside every daily partition",
                        "" if stray == 0 else "pgtrail partitions (moves them into day partitions)",
                    )
                )
            if applied[-1].version >= TENANCY_VERSION:
                checks.append(_tenancy_check(conn))
            if applied[-1].version >= SANDBOX_VERSION:
                checks.append(_sandbox_check(conn))
    return checks


def _tenancy_check(conn: psycopg.Connection[Any]) -> Check:
    """Row-level security on every log table, and the two group roles it relies on."""
    found = conn.execute(
        STATEMENTS["doctor_tenancy"], ([tenancy.APP_ROLE, tenancy.WRITER_ROLE], list(LOG_TABLES))
    ).fetchone()
    protected, missing, grants = found if found else (0, None, 0)
    if protected < len(LOG_TABLES):
        return Check(
            "tenant isolation",
            False,
            f"row-level security is on for {protected} of {len(LOG_TABLES)} log tables",
            "pgtrail migrate",
        )
    if missing:
        roles = ", ".join(missing)
        create = " ".join(f"CREATE ROLE {r} NOLOGIN;" for r in missing)
        return Check(
            "tenant isolation",
            False,
            f"row-level security is on, but role(s) {roles} do not exist, so --tenant and "
            "non-owner writers cannot work",
            f"as an administrator: {create} then `pgtrail tenant setup`",
        )
    return Check(
        "tenant isolation",
        True,
        f"row-level security on all log tables; {grants} tenant grant(s)",
    )


def _sandbox_check(conn: psycopg.Connection[Any]) -> Check:
    """Whether `pgtrail sql`, reports and --tenant reads can run in the read sandbox."""
    problem = sandbox.problem(conn)
    if problem is None:
        return Check(
            "read sandbox",
            True,
            f"ad-hoc SQL, reports and --tenant reads run as {sandbox.READER_ROLE}, "
            "with the tenant bound by a signed token",
        )
    return Check("read sandbox", False, problem, "pgtrail tenant setup (as the tables' owner)")


def _redis_check(settings: Settings) -> Check:
    import redis  # slow to import; only this check needs it

    if settings.redis_url is None:
        return Check("redis", True, "off: single-process mode (PGTRAIL_REDIS_URL=off)")
    try:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=2
        )
        info = client.info("server")
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return Check(
            "redis",
            False,
            f"cannot reach {_mask_redis(settings.redis_url)}: {exc}",
            "start redis-server, or set PGTRAIL_REDIS_URL=off for single-process mode",
        )
    return Check(
        "redis",
        True,
        f"redis {info.get('redis_version', '?')} at {_mask_redis(settings.redis_url)}",
    )


def _mask_redis(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


@app.command("doctor")
def doctor_command(ctx: typer.Context) -> None:
    """Check PostgreSQL, the schema, partitions and Redis; print the fix for each problem."""
    settings = settings_of(ctx)
    checks = [*_database_checks(settings), _redis_check(settings)]
    for check in checks:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        console.print(f"{mark} {check.name:<18} {check.detail}", highlight=False, soft_wrap=True)
        if not check.ok and check.fix:
            console.print(f"      fix: [bold]{check.fix}[/]", highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
