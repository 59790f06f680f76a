"""Tenant isolation under row-level security, against real PostgreSQL.

A demo workload of two tenants is loaded once. For each tenant, a copy of that database
holding only that tenant's rows is the ground truth: every saved report, every table and
the step view must show a tenant-scoped reader exactly what the copy shows its owner,
whichever way the reader is scoped (a role per tenant, the session setting of a pooled
application role, or the CLI's --tenant on a superuser connection). Equal results mean
no row of another tenant is seen, and every row of its own is.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor
from typer.testing import CliRunner

import pgtrail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.demo.load import load
from pgtrail.demo.simulate import DemoOptions
from pgtrail.errors import ReportError, SandboxError, TenancyError
from pgtrail.ops import partitions, tenancy
from pgtrail.ops.migrate import migrate
from pgtrail.read import reports, sandbox
from pgtrail.resources import schema_dir
from pgtrail.tables import LOG_TABLES

TENANTS = ("acme", "globex")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PATHS = ("role-per-tenant", "session-setting", "superuser-with-tenant-flag")
LOOSE = {"since": "60d", "k": "1", "min_count": "3", "min_duration_ms": "1000", "limit": "100000"}


def with_user(dsn: str, user: str) -> str:
    """The same database, logged in as ``user``."""
    return make_conninfo(dsn, user=user)


class Roles:
    """Creates uniquely named roles (roles are cluster-wide) and drops them afterwards."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.names: list[str] = []
        self.databases: set[str] = set()

    def make(self, label: str, *, login: bool = True, member_of: tuple[str, ...] = ()) -> str:
        name = f"pgtrail_t_{uuid.uuid4().hex[:8]}_{label}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} {}").format(
                    sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN")
                )
            )
            for group in member_of:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name))
                )
        self.names.append(name)
        return name

    def adopt(self, name: str) -> str:
        """Drops ``name`` afterwards too (a role the code under test created)."""
        self.names.append(name)
        return name

    def used_in(self, dbname: str) -> None:
        self.databases.add(dbname)

    def drop_all(self) -> None:
        for dbname in sorted(self.databases):
            try:
                conn = psycopg.connect(
                    make_conninfo(self.admin_dsn, dbname=dbname), autocommit=True
                )
            except psycopg.OperationalError:
                continue  # the database is gone, and the role's privileges with it
            with conn:
                for name in self.names:
                    if conn.execute(
                        "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)
                    ).fetchone():
                        role = sql.Identifier(name)
                        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
                        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self.names:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def roles(dsn: str) -> Iterator[Roles]:
    made = Roles(dsn)
    made.used_in(str(conninfo_to_dict(dsn)["dbname"]))
    yield made
    made.drop_all()


# --------------------------------------------------------------------------- the workload


@dataclass
class World:
    """The loaded multi-tenant database, one single-tenant copy per tenant, and the readers."""

    settings: Settings
    truth: dict[str, Settings]
    tenant_role: dict[str, str]
    app_login: str
    params: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    alone: dict[tuple[str, str, int], reports.ReportResult] = field(default_factory=dict)

    def reader(self, path: str, tenant: str) -> tuple[Settings, str | None]:
        """Settings and --tenant value that scope a reader to ``tenant`` along ``path``."""
        if path == "role-per-tenant":
            return self.as_user(self.tenant_role[tenant]), None
        if path == "session-setting":
            return self.as_user(self.app_login), tenant
        return self.settings, tenant

    def as_user(self, user: str) -> Settings:
        return self.settings.model_copy(update={"dsn": with_user(self.settings.dsn, user)})


def _database(server: Any, name: str, template: str) -> tuple[DatabaseJanitor, Settings]:
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=name,
        template_dbname=template,
        password=server.password,
    )
    janitor.init()
    dsn = make_conninfo(
        host=server.host,
        port=server.port,
        user=server.user,
        dbname=name,
        password=server.password or None,
    )
    return janitor, Settings(dsn=dsn, redis_url=None)


def _first(conn: psycopg.Connection[Any], query: str, tenant: str) -> str:
    row = conn.execute(query.encode(), (tenant,)).fetchone()
    assert row is not None, f"no value for {tenant}: {query}"
    return str(row[0])


def _required_params(conn: psycopg.Connection[Any], tenant: str) -> dict[str, str]:
    """A value of each required report parameter that belongs to ``tenant``."""
    return {
        "execution_id": _first(
            conn, "SELECT execution_id FROM logs_execution WHERE tenant_id = %s LIMIT 1", tenant
        ),
        "user_id": _first(
            conn,
            "SELECT user_id FROM logs_user_journey WHERE tenant_id = %s "
            "GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1",
            tenant,
        ),
        "agent_type": _first(
            conn,
            "SELECT agent_type FROM logs_agent_execution WHERE tenant_id = %s "
            "AND event_type = 'agent_decision' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            tenant,
        ),
    }


@pytest.fixture(scope="module")
def world(postgresql_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    janitors: list[DatabaseJanitor] = []
    base = f"pgtrail_tenancy_{uuid.uuid4().hex[:8]}"
    janitor, settings = _database(postgresql_server, base, postgresql_server.template_dbname)
    janitors.append(janitor)
    roles = Roles(settings.dsn)
    roles.used_in(base)
    try:
        spool = tmp_path_factory.mktemp("spool")
        settings = settings.model_copy(update={"spool_dir": spool})
        options = DemoOptions(interactions=400, days=21, tenants=len(TENANTS), end=NOW.date())
        result = load(settings, options)
        assert result.rejected == 0 and result.spooled == 0
        truth: dict[str, Settings] = {}
        for tenant in TENANTS:
            name = f"{base}_{tenant}"
            copy, truth[tenant] = _database(postgresql_server, name, base)
            janitors.append(copy)
            with psycopg.connect(truth[tenant].dsn, autocommit=True) as conn:
                for table in LOG_TABLES:
                    conn.execute(
                        sql.SQL("DELETE FROM {} WHERE tenant_id <> %s").format(
                            sql.Identifier(table)
                        ),
                        (tenant,),
                    )
                # Rollups keep deleted rows on purpose; the copy recomputes its own.
                conn.execute("SELECT pgtrail_rollup_rebuild('-infinity', 'infinity')")
        tenant_role = {t: roles.make(f"reader_{t}") for t in TENANTS}
        app_login = roles.make("app", member_of=(tenancy.APP_ROLE,))
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            for tenant, role in tenant_role.items():
                tenancy.grant_tenant(conn, "public", tenant, role, create_role=False)
            params = {t: [_required_params(conn, t)] for t in TENANTS}
        for i, tenant in enumerate(TENANTS):
            # Also another tenant's execution, user and agent, with thresholds loose enough
            # for every report to find rows.
            params[tenant].append({**params[TENANTS[(i + 1) % len(TENANTS)]][0], **LOOSE})
        yield World(settings, truth, tenant_role, app_login, params)
    finally:
        roles.drop_all()
        for j in reversed(janitors):
            j.drop()


def _canonical(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows in an order-free, comparable form (ties may come back in any order)."""

    def cell(value: Any) -> str:
        if isinstance(value, float | Decimal):
            return f"{float(value):.9g}"
        return repr(value)

    return sorted("|".join(cell(v) for v in row) for row in rows)


def _run(
    settings: Settings, report: reports.Report, params: dict[str, str], tenant: str | None
) -> reports.ReportResult:
    wanted = {k: v for k, v in params.items() if report.param(k) is not None}
    return reports.run_report(settings, report, wanted, now=NOW, tenant=tenant)


# --------------------------------------------------------------------------- every report


@pytest.mark.parametrize("path", PATHS)
def test_every_report_shows_a_scoped_reader_exactly_its_own_tenant(world: World, path: str) -> None:
    catalog = reports.load_catalog()
    assert not catalog.problems, catalog.problems
    assert len(catalog.reports) >= 15
    seen_rows: dict[str, int] = dict.fromkeys(catalog.reports, 0)
    for tenant in TENANTS:
        settings, flag = world.reader(path, tenant)
        for name, report in sorted(catalog.reports.items()):
            unknown = [
                p.name
                for p in report.params
                if p.required and p.name not in world.params[tenant][0]
            ]
            assert not unknown, f"report {name}: give the test a value for {unknown}"
            for i, params in enumerate(world.params[tenant]):
                key = (tenant, name, i)
                if key not in world.alone:
                    world.alone[key] = _run(world.truth[tenant], report, params, None)
                alone = world.alone[key]
                scoped = _run(settings, report, params, flag)
                assert scoped.columns == alone.columns, name
                assert _canonical(scoped.rows) == _canonical(alone.rows), (
                    f"report {name} for {tenant} via {path} with {params}"
                )
                seen_rows[name] += len(alone.rows)
    empty = [name for name, count in seen_rows.items() if count == 0]
    assert not empty, f"reports that found nothing for any tenant prove nothing: {empty}"


# --------------------------------------------------------------------------- tables and views


def _relations_with_tenant(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table and view of the schema with a tenant_id column (partitions excluded)."""
    rows = conn.execute(
        """
        SELECT c.relname
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
        ORDER BY c.relname
        """
    ).fetchall()
    return [r[0] for r in rows]


def _tenant_counts(settings: Settings, relation: str, tenant: str | None) -> dict[str, int]:
    result = reports.run_sql(
        settings,
        f"SELECT tenant_id, count(*) FROM {relation} GROUP BY tenant_id",
        tenant=tenant,
    )
    return {row[0]: int(row[1]) for row in result.rows}


@pytest.mark.parametrize("path", PATHS)
def test_every_table_and_view_shows_a_scoped_reader_only_its_tenant(
    world: World, path: str
) -> None:
    with psycopg.connect(world.settings.dsn) as conn:
        relations = _relations_with_tenant(conn)
    assert set(relations) >= {*LOG_TABLES, "logs_execution_step"}
    log_relations = [r for r in relations if r != "pgtrail_tenant_grant"]
    for tenant in TENANTS:
        settings, flag = world.reader(path, tenant)
        for relation in log_relations:
            everything = _tenant_counts(world.settings, relation, None)
            assert len(everything) == len(TENANTS), relation
            assert _tenant_counts(settings, relation, flag) == {tenant: everything[tenant]}, (
                f"{relation} for {tenant} via {path}"
            )


def test_trace_and_journey_show_another_tenants_execution_and_user_as_nothing(
    world: World,
) -> None:
    runner = CliRunner()
    base = ["--dsn", world.settings.dsn]
    acme = world.params["acme"][0]
    trace = [*base, "trace", acme["execution_id"], "--format", "json", "--tenant"]
    own = runner.invoke(app, [*trace, "acme"])
    assert own.exit_code == 0, own.output
    assert acme["execution_id"] in own.output
    other = runner.invoke(app, [*trace, "globex"])
    assert other.exit_code == 1 and acme["execution_id"] not in other.output.split("error")[0]
    journey = [*base, "journey", acme["user_id"], "--since", "60d", "--format", "json"]
    mine = runner.invoke(app, [*journey, "--tenant", "acme"])
    theirs = runner.invoke(app, [*journey, "--tenant", "globex"])
    assert mine.exit_code == 0, mine.output
    with psycopg.connect(world.settings.dsn) as conn:
        owner: dict[str, str] = dict(
            conn.execute("SELECT execution_id::text, tenant_id FROM logs_execution")
        )
    shown = re.findall(r'"execution_id": "([0-9a-f-]{36})"', mine.output)
    assert shown and {owner[i] for i in shown} == {"acme"}
    assert theirs.exit_code == 1 and "no executions or journey events" in theirs.output


def test_a_tenant_role_sees_only_its_own_grants(world: World) -> None:
    role = world.tenant_role["acme"]
    with psycopg.connect(with_user(world.settings.dsn, role)) as conn:
        grants = conn.execute("SELECT tenant_id, role_name FROM pgtrail_tenant_grant").fetchall()
    assert grants == [("acme", role)]


def test_an_application_role_without_the_setting_sees_nothing(world: World) -> None:
    settings = world.as_user(world.app_login)
    for relation in (*LOG_TABLES, "logs_execution_step"):
        assert _tenant_counts(settings, relation, None) == {}, relation


def test_a_tenant_role_cannot_widen_its_view_with_the_setting(world: World) -> None:
    role = world.tenant_role["acme"]
    with psycopg.connect(with_user(world.settings.dsn, role)) as conn:
        conn.execute("SELECT set_config('pgtrail.tenant', 'globex', false)")
        for relation in (*LOG_TABLES, "logs_execution_step"):
            count = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()
            assert count == (0,), relation
    with pytest.raises(TenancyError, match="may not read tenant 'globex'"):
        reports.run_sql(world.as_user(role), "SELECT 1", tenant="globex")


def test_a_role_granted_two_tenants_narrows_to_one_with_the_tenant_flag(
    world: World, roles: Roles
) -> None:
    role = roles.make("two")
    with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
        for tenant in ("acme", "globex"):
            tenancy.grant_tenant(conn, "public", tenant, role, create_role=False)
    settings = world.as_user(role)
    both = _tenant_counts(settings, "logs_llm_execution", None)
    assert set(both) == {"acme", "globex"}
    assert _tenant_counts(settings, "logs_llm_execution", "globex") == {"globex": both["globex"]}
    with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
        for tenant in ("acme", "globex"):
            tenancy.revoke_tenant(conn, "public", tenant, role)


def test_reading_a_partition_directly_is_refused(world: World) -> None:
    with psycopg.connect(world.settings.dsn) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = ANY (%s::regclass[])",
                (list(LOG_TABLES),),
            ).fetchall()
        ]
    assert len(names) > 4 * 20
    for user in (world.tenant_role["acme"], world.app_login):
        with psycopg.connect(with_user(world.settings.dsn, user), autocommit=True) as conn:
            conn.execute("SELECT set_config('pgtrail.tenant', 'acme', false)")
            for name in names:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(name)))


def test_a_partition_granted_by_mistake_still_shows_nothing(world: World) -> None:
    reader = world.tenant_role["acme"]
    day = partitions.utc_today() + dt.timedelta(days=40)
    with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
        partitions.ensure(conn, day, day)  # a partition made after the migration, too
        made = [f"logs_llm_execution_p{day:%Y%m%d}", "logs_llm_execution_default"]
        today = f"logs_llm_execution_p{partitions.utc_today() - dt.timedelta(days=1):%Y%m%d}"
        for name in (*made, today):
            conn.execute(
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.Identifier(name), sql.Identifier(reader)
                )
            )
        total = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(today))
        ).fetchone()
    assert total is not None and total[0] > 0
    try:
        with psycopg.connect(with_user(world.settings.dsn, reader)) as conn:
            for name in (*made, today):
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
                ).fetchone()
                assert count == (0,), name
    finally:
        with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
            for name in (*made, today):
                conn.execute(
                    sql.SQL("REVOKE SELECT ON {} FROM {}").format(
                        sql.Identifier(name), sql.Identifier(reader)
                    )
                )


def test_the_step_view_does_not_leak_where_views_run_with_owner_rights(world: World) -> None:
    """PostgreSQL 14 has no security_invoker views: the view's own filter must hold."""
    reader = world.as_user(world.tenant_role["globex"])
    with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
        conn.execute("ALTER VIEW logs_execution_step SET (security_invoker = false)")
    try:
        everything = _tenant_counts(world.settings, "logs_execution_step", None)
        assert _tenant_counts(reader, "logs_execution_step", None) == {
            "globex": everything["globex"]
        }
        app = world.as_user(world.app_login)
        assert _tenant_counts(app, "logs_execution_step", None) == {}
        assert _tenant_counts(app, "logs_execution_step", "acme") == {"acme": everything["acme"]}
    finally:
        with psycopg.connect(world.settings.dsn, autocommit=True) as conn:
            conn.execute("ALTER VIEW logs_execution_step SET (security_invoker = true)")


# --------------------------------------------------------------------------- writers


def _log_for_tenants(trail: pgtrail.Trail, tenants: tuple[str, ...]) -> None:
    for tenant in tenants:
        with trail.execution("001 Main", tenant_id=tenant, user_id=f"{tenant}-user"):
            with trail.process("101 AI Execute LLM"):
                pgtrail.log_llm_execution(
                    agent_type="coaching",
                    model="gpt-4o",
                    input_tokens=1200,
                    output_tokens=300,
                    prompt=f"You coach people. ({tenant})",
                    payload={"messages": [{"role": "user", "content": "hello"}]},
                )
            pgtrail.log_agent_execution(event_type="agent_decision", data={"intensity": "balanced"})
            pgtrail.log_user_journey("user_message_received", {"text_length": 5})


def _by_tenant(dsn: str) -> dict[str, dict[str, int]]:
    """Rows per log table per tenant, read by the superuser (who sees everything)."""
    found: dict[str, dict[str, int]] = {}
    with psycopg.connect(dsn) as conn:
        for table in LOG_TABLES:
            rows = conn.execute(
                sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(
                    sql.Identifier(table)
                )
            ).fetchall()
            found[table] = {r[0]: int(r[1]) for r in rows}
    return found


def _expected(tenants: tuple[str, ...], times: int = 1) -> dict[str, dict[str, int]]:
    return {table: dict.fromkeys(tenants, times) for table in LOG_TABLES}


def _spool_offline(settings: Settings, tenants: tuple[str, ...]) -> None:
    offline = pgtrail.Trail(
        settings.model_copy(update={"dsn": "postgresql://nobody@127.0.0.1:1/none"}), sync=True
    )
    _log_for_tenants(offline, tenants)
    offline.close()
    assert list(settings.spool_dir.glob("*.jsonl")), "an unreachable database spools"


def test_a_writer_role_inserts_for_every_tenant_replays_and_reads_nothing(
    settings: Settings, roles: Roles
) -> None:
    writer = roles.make("writer", member_of=(tenancy.WRITER_ROLE,))
    as_writer = settings.model_copy(
        update={"dsn": with_user(settings.dsn, writer), "redis_url": None}
    )
    day = partitions.utc_today() - dt.timedelta(days=20)  # no partition yet: the writer adds it
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    trail = pgtrail.Trail(as_writer, sync=True, clock=lambda: at)
    _log_for_tenants(trail, ("acme", "globex"))
    trail.close()
    assert trail.stats.rejected == 0 and trail.stats.spooled == 0
    assert _by_tenant(settings.dsn) == _expected(("acme", "globex"))
    with psycopg.connect(settings.dsn) as conn:
        in_day = conn.execute(f"SELECT count(*) FROM logs_llm_execution_p{day:%Y%m%d}").fetchone()
        prompts = conn.execute("SELECT count(*) FROM pgtrail_prompt").fetchone()
    assert in_day == (2,) and prompts == (2,)

    _spool_offline(as_writer, ("initech",))
    twin = sorted(as_writer.spool_dir.glob("*.jsonl"))[0]
    twin.with_name("z" + twin.name).write_bytes(twin.read_bytes())  # replayed twice
    result = CliRunner().invoke(
        app, ["--dsn", as_writer.dsn, "spool", "replay", "--spool-dir", str(as_writer.spool_dir)]
    )
    assert result.exit_code == 0, result.output
    assert _by_tenant(settings.dsn) == _expected(("acme", "globex", "initech"))

    with psycopg.connect(as_writer.dsn, autocommit=True) as conn:
        for table in LOG_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM logs_execution_step")


def test_an_owner_without_createrole_migrates_writes_every_tenant_and_replays(
    empty_db_dsn: str, roles: Roles, tmp_path: Path
) -> None:
    owner = roles.make("owner")
    dbname = str(conninfo_to_dict(empty_db_dsn)["dbname"])
    roles.used_in(dbname)
    with psycopg.connect(empty_db_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(dbname), sql.Identifier(owner)
            )
        )
    as_owner = Settings(
        dsn=with_user(empty_db_dsn, owner), redis_url=None, spool_dir=tmp_path / "spool"
    )
    shipped = sorted(int(p.name[:4]) for p in schema_dir().glob("[0-9]*.sql"))
    assert [m.version for m in migrate(as_owner)] == shipped

    trail = pgtrail.Trail(as_owner, sync=True)
    _log_for_tenants(trail, ("acme", "globex"))
    trail.close()
    assert trail.stats.rejected == 0
    _spool_offline(as_owner, ("initech",))
    replayer = pgtrail.Trail(as_owner, sync=True)
    assert replayer.replay_spool() > 0
    replayer.close()
    assert _by_tenant(empty_db_dsn) == _expected(("acme", "globex", "initech"))

    # The owner bypasses row-level security: its reads need the sandbox handed to
    # pgtrail_reader, which needs a moment's membership in it.
    query = "SELECT tenant_id, count(*) FROM logs_llm_execution GROUP BY 1"
    with pytest.raises(SandboxError, match=f"GRANT {sandbox.READER_ROLE} TO {owner}"):
        reports.run_sql(as_owner, query, tenant="acme")
    with pytest.raises(SandboxError, match=f"GRANT {sandbox.READER_ROLE} TO {owner}"):
        reports.run_sql(as_owner, query)
    with psycopg.connect(empty_db_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(sandbox.READER_ROLE), sql.Identifier(owner)
            )
        )
    with psycopg.connect(as_owner.dsn, autocommit=True) as conn:
        tenancy.setup_roles(conn)
    assert reports.run_sql(as_owner, query, tenant="acme").rows == [("acme", 1)]
    assert len(reports.run_sql(as_owner, query).rows) == 3


def test_the_tenant_flag_on_a_database_without_isolation_says_to_migrate(
    empty_db_dsn: str,
) -> None:
    with pytest.raises(TenancyError, match="pgtrail migrate"):
        reports.run_sql(Settings(dsn=empty_db_dsn, redis_url=None), "SELECT 1", tenant="acme")


def test_a_report_error_is_not_what_a_bad_tenant_id_gives(settings: Settings) -> None:
    with pytest.raises(TenancyError, match="cannot be empty"):
        reports.run_sql(settings, "SELECT 1", tenant=" ")
    assert not issubclass(TenancyError, ReportError)


# --------------------------------------------------------------------------- the commands


def _invoke(dsn: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--dsn", dsn, "tenant", *args])


def _privileges(dsn: str, role: str) -> tuple[bool, bool, bool]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%s, 'logs_llm_execution', 'SELECT'), "
            "has_table_privilege(%s, 'logs_execution_step', 'SELECT'), "
            "has_table_privilege(%s, 'logs_llm_execution_default', 'SELECT')",
            (role, role, role),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_tenant_grant_list_and_revoke_from_the_command_line(dsn: str, roles: Roles) -> None:
    role = f"pgtrail_t_{uuid.uuid4().hex[:8]}_cli"
    missing = _invoke(dsn, "grant", "acme", role)
    assert missing.exit_code == 1 and "does not exist" in missing.output

    created = _invoke(dsn, "grant", "acme", roles.adopt(role), "--create-role")
    assert created.exit_code == 0, created.output
    assert "created role" in created.output and "granted" in created.output
    assert _privileges(dsn, role) == (True, True, False)  # parents and view, never partitions
    again = _invoke(dsn, "grant", "acme", role)
    assert again.exit_code == 0 and "already granted" in again.output
    assert _invoke(dsn, "grant", "globex", role).exit_code == 0

    listed = _invoke(dsn, "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(role) == 2 and tenancy.APP_ROLE in listed.output

    first = _invoke(dsn, "revoke", "acme", role)
    assert first.exit_code == 0 and "revoked" in first.output
    assert _privileges(dsn, role) == (True, True, False)  # it still reads globex
    last = _invoke(dsn, "revoke", "globex", role)
    assert last.exit_code == 0 and "no tenant left" in last.output
    assert _privileges(dsn, role) == (False, False, False)
    assert "nothing to revoke" in _invoke(dsn, "revoke", "globex", role).output


def test_tenant_grant_refuses_roles_that_would_see_every_tenant(dsn: str) -> None:
    superuser = _invoke(dsn, "grant", "acme", "postgres")
    assert superuser.exit_code == 1 and "bypasses row-level security" in superuser.output
    group = _invoke(dsn, "grant", "acme", tenancy.APP_ROLE)
    assert group.exit_code == 1 and "group roles" in group.output


def test_tenant_setup_reports_the_roles_ready(dsn: str) -> None:
    result = _invoke(dsn, "setup")
    assert result.exit_code == 0, result.output
    assert "ready" in result.output
