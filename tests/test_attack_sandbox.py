"""Attacks on the read sandbox and on ``--tenant``, judged by what really happened.

Each attack runs twice: through the execution layer alone (``sandbox.read_session``, the
allow-list check skipped, as if it had a hole) and through ``reports.run_sql`` (both
layers). The verdict is never the exit code: it is whether the secret file's content came
back, the file on the server was written, the large object was changed, the other backend
is still alive, the configuration was reloaded, the WAL switched, a row was inserted, or a
row, payload or prompt body of the other tenant was returned. The connection is the test
server's superuser, the documented worst case.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgtrail
from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import PgtrailError
from pgtrail.ops import tenancy
from pgtrail.read import reports, sandbox

SECRET = f"pgtrail-secret-{uuid.uuid4().hex}"
ACME_SECRET = f"acme-payload-{uuid.uuid4().hex[:12]}"
GLOBEX_SECRET = f"globex-payload-{uuid.uuid4().hex[:12]}"
GLOBEX_PROMPT = f"You are globex's private prompt {uuid.uuid4().hex[:12]}"


def sandboxed(
    settings: Settings, text: str, *, tenant: str | None = None, timeout_ms: int = 5000
) -> list[tuple[Any, ...]] | Exception:
    """Rows of ``text`` run by the execution layer alone, or the error it raised."""
    try:
        with (
            db.connect(settings) as conn,
            sandbox.read_session(conn, timeout_ms, tenant=tenant) as session,
        ):
            return session.query(text, max_rows=1000).rows
    except (psycopg.Error, PgtrailError) as exc:
        return exc


def both_layers(
    settings: Settings, text: str, *, tenant: str | None = None
) -> list[tuple[Any, ...]] | Exception:
    """Rows of ``text`` through ``pgtrail sql``'s path, or the error it raised."""
    try:
        return reports.run_sql(settings, text, tenant=tenant, timeout_ms=5000).rows
    except PgtrailError as exc:
        return exc


RUNNERS: dict[str, Callable[..., list[tuple[Any, ...]] | Exception]] = {
    "execution-layer-alone": sandboxed,
    "both-layers": both_layers,
}


def as_text(outcome: list[tuple[Any, ...]] | Exception) -> str:
    """What came back: the rows, or the server's reason (not the statement it quotes)."""
    if isinstance(outcome, psycopg.Error):
        return str(outcome.diag.message_primary)
    return repr(outcome) if isinstance(outcome, list) else str(outcome).split("\n")[0]


def superuser(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.dsn, autocommit=True)


# --------------------------------------------------------------------------- files


@pytest.fixture
def secret_file(settings: Settings) -> Iterator[str]:
    """A file on the server holding SECRET, written by the superuser (so the server can read it)."""
    # A path on the server, which runs on this machine; COPY by the superuser writes it.
    path = os.path.join(tempfile.gettempdir(), f"pgtrail_attack_{uuid.uuid4().hex}.txt")
    with superuser(settings) as conn:
        conn.execute(
            sql.SQL("COPY (SELECT {}) TO {}").format(sql.Literal(SECRET), sql.Literal(path))
        )
        content = conn.execute("SELECT pg_read_file(%s)", (path,)).fetchone()
        assert content is not None and SECRET in content[0]
    yield path
    if os.path.exists(path):
        os.remove(path)


FILE_READS = [
    "SELECT pg_read_file('{path}')",
    "SELECT pg_read_file('{path}', 0, 200)",
    "SELECT pg_read_file('{path}', 0, 200, true)",
    "SELECT convert_from(pg_read_binary_file('{path}'), 'UTF8')",
    "SELECT * FROM pg_read_file('{path}') AS f (content)",
    "SELECT (SELECT pg_read_file('{path}'))",
    "WITH f AS (SELECT pg_read_file('{path}') AS c) SELECT c FROM f",
    "SELECT x FROM (VALUES (pg_read_file('{path}'))) AS v (x)",
    "SELECT U&\"pg_read_fil\\0065\"('{path}')",
    "SELECT pg_catalog.pg_read_file('{path}')",
    "SELECT \"pg_read_file\"('{path}')",
    "SELECT query_to_xml('SELECT pg_read_file(''{path}'')', true, false, '')::text",
    "SELECT query_to_xml_and_xmlschema('SELECT pg_read_file(''{path}'')', true, false, '')::text",
    "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', pg_read_file(''{path}''))')",
    "SELECT convert_from(lo_get(lo_import('{path}')), 'UTF8')",
    "SELECT lo_import('{path}')::text",
    "SELECT string_agg(l, ',') FROM pg_ls_dir('/tmp') AS d (l)",
    "SELECT pg_stat_file('{path}')::text",
    "SELECT xmlparse(document pg_read_file('{path}'))::text",
    "SELECT table_to_xml('pg_authid', true, false, '')::text",
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", FILE_READS)
def test_a_query_cannot_read_a_server_file(
    settings: Settings, secret_file: str, runner: str, attack: str
) -> None:
    outcome = RUNNERS[runner](settings, attack.format(path=secret_file))
    assert SECRET not in as_text(outcome)
    assert os.path.basename(secret_file) not in as_text(outcome)
    assert isinstance(outcome, Exception), outcome


FILE_WRITES = [
    "SELECT lo_export(lo_from_bytea(0, convert_to('pwned', 'UTF8')), '{path}')",
    "SELECT query_to_xml('SELECT lo_export(lo_from_bytea(0, ''\\x00''::bytea), ''{path}'')',"
    " true, false, '')::text",
    "COPY (SELECT 'pwned') TO '{path}'",
    "SELECT 1) AS x; COPY (SELECT 'pwned') TO '{path}'; SELECT * FROM (SELECT 1",
    "SELECT 1 \n) AS x; COPY (SELECT 'pwned') TO PROGRAM 'touch {path}' --",
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", FILE_WRITES)
def test_a_query_cannot_write_a_server_file(settings: Settings, runner: str, attack: str) -> None:
    path = os.path.join(tempfile.gettempdir(), f"pgtrail_pwned_{uuid.uuid4().hex}")
    outcome = RUNNERS[runner](settings, attack.format(path=path))
    with superuser(settings) as conn:
        found = conn.execute("SELECT pg_stat_file(%s, true)", (path,)).fetchone()
    assert found == (None,), f"{path} was written: {outcome!r}"
    assert isinstance(outcome, Exception)


# --------------------------------------------------------------------------- large objects


@pytest.fixture
def large_object(settings: Settings) -> int:
    """A large object holding 'original', owned by the superuser."""
    with superuser(settings) as conn:
        row = conn.execute("SELECT lo_from_bytea(0, 'original'::bytea)").fetchone()
    assert row is not None
    return int(row[0])


LARGE_OBJECT_WRITES = [
    "SELECT lo_create(0)::text",
    "SELECT lo_creat(-1)::text",
    "SELECT lo_from_bytea(0, 'x'::bytea)::text",
    "SELECT lowrite(lo_open({oid}, 131072), 'pwned'::bytea)",
    "SELECT lo_truncate(lo_open({oid}, 131072), 0)",
    "SELECT lo_put({oid}, 0, 'pwned'::bytea)::text",
    "SELECT lo_unlink({oid})",
    "SELECT lowrite(lo_open(lo_create(0), 131072), 'pwned'::bytea)",
    'SELECT U&"lo_\\0063reate"(0)::text',
    "SELECT query_to_xml('SELECT lo_create(0)', true, false, '')::text",
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", LARGE_OBJECT_WRITES)
def test_a_query_cannot_create_change_or_drop_large_objects(
    settings: Settings, large_object: int, runner: str, attack: str
) -> None:
    with superuser(settings) as conn:
        before = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    outcome = RUNNERS[runner](settings, attack.format(oid=large_object))
    with superuser(settings) as conn:
        after = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        content = conn.execute("SELECT lo_get(%s)", (large_object,)).fetchone()
    assert after == before, outcome
    assert content == (b"original",), outcome


# --------------------------------------------------------------------------- the server


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT pg_terminate_backend({pid})",
        "SELECT pg_terminate_backend({pid}, 100)",
        "SELECT pg_cancel_backend({pid})",
        'SELECT U&"pg_terminate_backen\\0064"({pid})',
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity",
        "SELECT query_to_xml('SELECT pg_terminate_backend({pid})', true, false, '')::text",
    ],
)
def test_a_query_cannot_end_or_cancel_another_backend(
    settings: Settings, runner: str, attack: str
) -> None:
    with superuser(settings) as victim:
        pid = victim.info.backend_pid
        outcome: list[Any] = []
        sleeper = threading.Thread(
            target=lambda: outcome.append(victim.execute("SELECT pg_sleep(1.5), 1").fetchone())
        )
        sleeper.start()
        time.sleep(0.3)
        attack_outcome = RUNNERS[runner](settings, attack.format(pid=pid))
        sleeper.join(10)
        assert outcome and outcome[0][1] == 1, attack_outcome
        assert victim.execute("SELECT 2").fetchone() == (2,)


def _conf_load_time(settings: Settings) -> Any:
    with superuser(settings) as conn:
        return conn.execute("SELECT pg_conf_load_time()").fetchone()


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT pg_reload_conf()",
        "SELECT pg_catalog.pg_reload_conf()",
        'SELECT U&"pg_reload_con\\0066"()',
        "SELECT query_to_xml('SELECT pg_reload_conf()', true, false, '')::text",
        "SELECT * FROM pg_reload_conf() AS r (ok)",
    ],
)
def test_a_query_cannot_reload_the_server_configuration(
    settings: Settings, runner: str, attack: str
) -> None:
    before = _conf_load_time(settings)
    outcome = RUNNERS[runner](settings, attack)
    time.sleep(0.2)  # a reload is signalled, then applied by the postmaster
    assert _conf_load_time(settings) == before, outcome


def _wal_file(settings: Settings) -> str:
    with superuser(settings) as conn:
        conn.execute("CREATE TEMP TABLE w (x int); INSERT INTO w VALUES (1)")
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT pg_switch_wal()::text",
        'SELECT U&"pg_switch_wa\\006c"()::text',
        "SELECT query_to_xml('SELECT pg_switch_wal()', true, false, '')::text",
    ],
)
def test_a_query_cannot_switch_wal(settings: Settings, runner: str, attack: str) -> None:
    before = _wal_file(settings)
    outcome = RUNNERS[runner](settings, attack)
    assert _wal_file(settings) == before, outcome


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT pg_advisory_lock(4242)::text",
        "SELECT pg_try_advisory_lock(4242)::text",
        "SELECT pg_advisory_lock_shared(4242)::text",
    ],
)
def test_a_query_cannot_keep_advisory_locks(settings: Settings, runner: str, attack: str) -> None:
    with db.connect(settings) as conn:
        # The same connection afterwards, as a pooled web page would reuse it.
        with (
            contextlib.suppress(psycopg.Error, PgtrailError),
            sandbox.read_session(conn, 5000) as session,
        ):
            session.query(attack)
        with superuser(settings) as other:
            got = other.execute("SELECT pg_try_advisory_lock(4242)").fetchone()
        assert got == (True,)
    assert not isinstance(RUNNERS[runner](settings, "SELECT 1"), Exception)


def test_a_query_cannot_notify_listeners(settings: Settings) -> None:
    with superuser(settings) as listener:
        listener.execute("LISTEN pgtrail_attack")
        for runner in RUNNERS.values():
            runner(settings, "SELECT pg_notify('pgtrail_attack', 'pwned')")
        listener.execute("SELECT 1")
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT pg_sleep(5)",
        "SELECT set_config('statement_timeout', '0', false), pg_sleep(5)",
        "WITH t AS MATERIALIZED (SELECT set_config('statement_timeout', '0', true)) "
        "SELECT pg_sleep(5) FROM t",
        "SELECT count(*) FROM generate_series(1, 100000000000)",
    ],
)
def test_the_statement_timeout_cannot_be_lifted(
    settings: Settings, runner: str, attack: str
) -> None:
    started = time.monotonic()
    if runner == "both-layers":
        with contextlib.suppress(PgtrailError):
            reports.run_sql(settings, attack, timeout_ms=300)
    else:
        sandboxed(settings, attack, timeout_ms=300)
    assert time.monotonic() - started < 3


# --------------------------------------------------------------------------- writes


@pytest.fixture
def dblink_settings(settings: Settings) -> Settings:
    with superuser(settings) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
    return settings


WRITES = [
    "SELECT dblink_exec('{conn}', 'INSERT INTO logs_user_journey (event_id, execution_id, "
    "created_at, event_type) VALUES (gen_random_uuid(), gen_random_uuid(), now(), ''pwned'')')",
    "SELECT * FROM dblink('{conn}', 'INSERT INTO logs_user_journey (event_id, execution_id, "
    "created_at, event_type) VALUES (gen_random_uuid(), gen_random_uuid(), now(), ''pwned'') "
    "RETURNING 1') AS t (x int)",
    "SELECT dblink_connect_u('{conn}')",
    "WITH w AS (INSERT INTO logs_user_journey (event_id, execution_id, created_at, event_type) "
    "VALUES (gen_random_uuid(), gen_random_uuid(), now(), 'pwned') RETURNING 1) SELECT * FROM w",
    "WITH w AS (DELETE FROM logs_user_journey RETURNING 1) SELECT count(*) FROM w",
    "WITH w AS (UPDATE logs_user_journey SET event_type = 'pwned' RETURNING 1) SELECT * FROM w",
    "SELECT * INTO pwned FROM logs_user_journey",
    "SELECT 1) AS x; DELETE FROM logs_user_journey; SELECT * FROM (SELECT 1",
    "SELECT * FROM logs_user_journey FOR UPDATE",
    "SELECT query_to_xml('DELETE FROM logs_user_journey RETURNING 1', true, false, '')::text",
    "SELECT setval('pgtrail_attack_seq', 1000)",
    "SELECT nextval('pgtrail_attack_seq')",
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", WRITES)
def test_a_query_cannot_write_rows_or_sequences(
    dblink_settings: Settings, runner: str, attack: str
) -> None:
    settings = dblink_settings
    trail = pgtrail.Trail(settings, sync=True)
    with trail.execution("001 Main", tenant_id="acme"):
        pgtrail.log_user_journey("user_message_received", {"n": 1})
    trail.close()
    with superuser(settings) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS pgtrail_attack_seq")
        before = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE event_type = 'pwned') FROM logs_user_journey"
        ).fetchone()
        seq_before = conn.execute("SELECT last_value FROM pgtrail_attack_seq").fetchone()
    with superuser(settings) as conn:
        info = conn.info
        target = make_conninfo(host=info.host, port=info.port, user=info.user, dbname=info.dbname)
    outcome = RUNNERS[runner](settings, attack.format(conn=target))
    with superuser(settings) as conn:
        after = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE event_type = 'pwned') FROM logs_user_journey"
        ).fetchone()
        seq_after = conn.execute("SELECT last_value FROM pgtrail_attack_seq").fetchone()
        pwned = conn.execute("SELECT to_regclass('pwned')").fetchone()
    assert after == before, outcome
    assert seq_after == seq_before, outcome
    assert pwned == (None,)
    assert isinstance(outcome, Exception)


# --------------------------------------------------------------------------- reading


@pytest.fixture
def app_secret(settings: Settings) -> str:
    """A table of the application's own in the same database, not a pgtrail table."""
    with superuser(settings) as conn:
        conn.execute("CREATE TABLE app_credentials (secret text)")
        conn.execute("INSERT INTO app_credentials VALUES (%s)", (SECRET,))
    return SECRET


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT * FROM app_credentials",
        "SELECT * FROM public.app_credentials",
        'SELECT * FROM U&"app_credential\\0073"',
        "SELECT query_to_xml('SELECT * FROM app_credentials', true, false, '')::text",
        "SELECT table_to_xml('app_credentials', true, false, '')::text",
        "SELECT database_to_xml(true, false, '')::text",
        "SELECT rolname, rolpassword FROM pg_authid",
        "SELECT key FROM pgtrail_sandbox_key",
        "SELECT pgtrail_sandbox_bind_all()",
        "SELECT pgtrail_sandbox_sign('*')",
        "SELECT current_setting('data_directory')",
        "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
    ],
)
def test_a_query_reads_nothing_but_the_pgtrail_tables(
    settings: Settings, app_secret: str, runner: str, attack: str
) -> None:
    with superuser(settings) as conn:
        data_dir = conn.execute("SELECT current_setting('data_directory')").fetchone()
        key = conn.execute("SELECT key FROM pgtrail_sandbox_key").fetchone()
    outcome = as_text(RUNNERS[runner](settings, attack))
    assert app_secret not in outcome
    assert data_dir is not None and key is not None
    assert str(data_dir[0]) not in outcome
    assert str(key[0]) not in outcome
    assert "SCRAM" not in outcome and "md5" not in outcome


def test_a_query_runs_as_the_reader_role_not_the_superuser(settings: Settings) -> None:
    rows = sandboxed(settings, "SELECT current_user::text, session_user::text")
    assert isinstance(rows, list)
    assert rows[0][0] == sandbox.READER_ROLE
    for attack in (
        "SELECT set_config('role', 'postgres', true)",
        "SELECT set_config('role', 'none', true), current_user::text",
        "SELECT set_config('session_authorization', 'postgres', true)",
        "RESET ROLE",
        "SET ROLE postgres",
    ):
        outcome = sandboxed(settings, attack)
        assert isinstance(outcome, Exception), attack


# --------------------------------------------------------------------------- tenants


@pytest.fixture
def two_tenants(settings: Settings) -> Settings:
    """acme and globex, each with an LLM call whose payload and prompt hold its secret."""
    trail = pgtrail.Trail(settings, sync=True)
    for tenant, secret, prompt in (
        ("acme", ACME_SECRET, "You are acme's prompt."),
        ("globex", GLOBEX_SECRET, GLOBEX_PROMPT),
    ):
        with trail.execution("001 Main", tenant_id=tenant, user_id=f"{tenant}-user"):
            with trail.process(f"step of {tenant}"):
                pgtrail.log_llm_execution(
                    agent_type="coaching",
                    model="gpt-4o",
                    input_tokens=10,
                    output_tokens=5,
                    prompt=prompt,
                    payload={"messages": [{"role": "user", "content": secret}]},
                )
            pgtrail.log_agent_execution(event_type="agent_decision", data={"note": secret})
            pgtrail.log_user_journey("user_message_received", {"text": secret})
    trail.close()
    return settings


TENANT_ESCAPES = [
    "SELECT tenant_id, payload::text FROM logs_llm_execution",
    "SELECT set_config('pgtrail.tenant', 'globex', true), payload::text FROM logs_llm_execution",
    "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.tenant', 'globex', true) AS x) "
    "SELECT s.x, l.payload::text FROM s, logs_llm_execution AS l",
    "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.tenant', '', true) AS x) "
    "SELECT s.x, l.payload::text FROM s, logs_llm_execution AS l",
    "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.sandbox', '*:' || repeat('0', 64), true)"
    " AS x) SELECT l.payload::text FROM s, logs_llm_execution AS l",
    "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.sandbox', 't:globex:' || "
    "right(current_setting('pgtrail.sandbox'), 64), true) AS x) "
    "SELECT l.payload::text FROM s, logs_llm_execution AS l",
    "WITH s AS MATERIALIZED (SELECT set_config('role', 'postgres', true) AS x) "
    "SELECT l.payload::text FROM s, logs_llm_execution AS l",
    "SELECT pgtrail_sandbox_bind('globex')",
    "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.sandbox', pgtrail_sandbox_bind('globex'),"
    " true) AS x) SELECT l.payload::text FROM s, logs_llm_execution AS l",
    "SELECT body FROM pgtrail_prompt",
    "SELECT * FROM pgtrail_prompt",
    "SELECT particular_data::text FROM logs_agent_execution",
    "SELECT particular_data::text FROM logs_user_journey",
    "SELECT name, tenant_id FROM logs_execution_step",
    "SELECT processes_executed::text FROM logs_execution",
    "SELECT query_to_xml('SELECT payload FROM logs_llm_execution', true, false, '')::text",
    "SELECT query_to_xml('SELECT set_config(''pgtrail.tenant'', ''globex'', true), payload "
    "FROM logs_llm_execution', true, false, '')::text",
    "SELECT * FROM pgtrail_sandbox_query('SELECT payload::text FROM logs_llm_execution', "
    "'{}', NULL) AS r (p text)",
    "SELECT payload::text FROM logs_llm_execution_default",
    "SELECT payload::text FROM ONLY logs_llm_execution",
    "SELECT count(*)::text || string_agg(tenant_id, ',') FROM logs_llm_execution",
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", TENANT_ESCAPES)
def test_a_query_cannot_escape_its_tenant(two_tenants: Settings, runner: str, attack: str) -> None:
    outcome = as_text(RUNNERS[runner](two_tenants, attack, tenant="acme"))
    assert GLOBEX_SECRET not in outcome
    assert GLOBEX_PROMPT not in outcome
    assert "step of globex" not in outcome
    assert "globex-user" not in outcome


def test_a_token_seen_in_one_transaction_is_worthless_in_the_next(two_tenants: Settings) -> None:
    rows = sandboxed(two_tenants, "SELECT current_setting('pgtrail.sandbox')")
    assert isinstance(rows, list)
    every_tenant = rows[0][0]
    assert every_tenant.startswith("*:")
    replay = (
        f"WITH s AS MATERIALIZED (SELECT set_config('pgtrail.sandbox', '{every_tenant}', true) "
        "AS x) SELECT l.tenant_id, l.payload::text FROM s, logs_llm_execution AS l"
    )
    assert GLOBEX_SECRET not in as_text(sandboxed(two_tenants, replay, tenant="acme"))


def test_the_tenant_flag_still_shows_the_tenant_everything_it_owns(two_tenants: Settings) -> None:
    rows = sandboxed(two_tenants, "SELECT payload::text FROM logs_llm_execution", tenant="acme")
    assert isinstance(rows, list) and len(rows) == 1 and ACME_SECRET in rows[0][0]
    prompts = sandboxed(two_tenants, "SELECT body FROM pgtrail_prompt", tenant="acme")
    assert prompts == [("You are acme's prompt.",)]
    steps = sandboxed(two_tenants, "SELECT name FROM logs_execution_step", tenant="acme")
    assert isinstance(steps, list) and ("step of acme",) in steps
    assert all("globex" not in s[0] for s in steps)


@dataclass
class Login:
    settings: Settings
    name: str


@pytest.fixture
def app_login(two_tenants: Settings) -> Iterator[Login]:
    """A pooled application login: a member of pgtrail_app, which picks tenants by setting."""
    name = f"pgtrail_attack_app_{uuid.uuid4().hex[:8]}"
    with superuser(two_tenants) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(tenancy.APP_ROLE), sql.Identifier(name))
        )
    login = Settings(
        dsn=make_conninfo(two_tenants.dsn, user=name), redis_url=None, db_schema="public"
    )
    yield Login(login, name)
    with superuser(two_tenants) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("attack", TENANT_ESCAPES)
def test_a_pooled_application_login_cannot_escape_its_tenant_flag(
    app_login: Login, runner: str, attack: str
) -> None:
    outcome = as_text(RUNNERS[runner](app_login.settings, attack, tenant="acme"))
    assert GLOBEX_SECRET not in outcome
    assert GLOBEX_PROMPT not in outcome


def test_a_pooled_application_login_reads_in_the_sandbox(app_login: Login) -> None:
    with (
        db.connect(app_login.settings) as conn,
        sandbox.read_session(conn, 5000, tenant="acme") as session,
    ):
        assert session.mode is sandbox.Mode.SANDBOX
        rows = session.query("SELECT current_user::text, tenant_id FROM logs_llm_execution").rows
    assert rows == [(sandbox.READER_ROLE, "acme")]


def test_reports_trace_and_journey_bind_the_tenant_too(two_tenants: Settings) -> None:
    catalog = reports.load_catalog()
    result = reports.run_report(
        two_tenants, catalog.get("cost-by-tenant-day"), {"since": "7d"}, tenant="acme"
    )
    assert {row[result.columns.index("tenant_id")] for row in result.rows} == {"acme"}
    with superuser(two_tenants) as conn:
        globex = conn.execute(
            "SELECT execution_id FROM logs_execution WHERE tenant_id = 'globex'"
        ).fetchone()
    assert globex is not None
    from pgtrail.errors import NotFoundError
    from pgtrail.read.trace import load_trace

    with pytest.raises(NotFoundError):
        load_trace(two_tenants, globex[0], tenant="acme")
    assert load_trace(two_tenants, globex[0]).execution_id == globex[0]


# --------------------------------------------------------------------------- memory


def test_max_rows_bounds_memory_over_a_huge_result(settings: Settings) -> None:
    """`pgtrail sql --max-rows 10` over 3M rows once peaked at 822 MiB: the whole result."""
    script = (
        "import resource, sys\n"
        "from pgtrail.config import Settings\n"
        "from pgtrail.read import reports\n"
        "s = Settings(dsn=sys.argv[1], redis_url=None)\n"
        "r = reports.run_sql(s, \"SELECT g, repeat('x', 100) FROM generate_series(1, 3000000) g\","
        " max_rows=10)\n"
        "assert len(r.rows) == 10 and r.truncated\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    baseline = (
        "import resource\n"
        "from pgtrail.read import reports, sandbox\n"
        "import pglast.parser, psycopg\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    run = [sys.executable, "-c"]
    peak = int(
        subprocess.run(
            [*run, script, settings.dsn], check=True, capture_output=True, text=True, timeout=120
        ).stdout.split()[-1]
    )
    idle = int(
        subprocess.run(
            [*run, baseline], check=True, capture_output=True, text=True, timeout=60
        ).stdout.split()[-1]
    )
    assert resource.RUSAGE_SELF is not None
    # ru_maxrss is in KiB on Linux: the query may add a few MiB over the imports, not hundreds.
    assert peak - idle < 40 * 1024, (peak, idle)
