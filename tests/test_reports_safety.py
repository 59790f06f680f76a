"""Injection and escape attempts through report parameters and ``pgtrail sql`` fail safely.

Each attempt must end in a ReportError that says what was refused, and afterwards every
log table must hold exactly what it held before: same rows, same tables, same settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import test_reports_reference as reference
from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import ReportError
from pgtrail.read import reports, sandbox

TABLES = ("logs_execution", "logs_llm_execution", "logs_agent_execution", "logs_user_journey")
FINGERPRINT = " UNION ALL ".join(
    f"SELECT '{t}', count(*), md5(string_agg(event_id::text || created_at::text || "
    f"particular_data::text, ',' ORDER BY event_id)) FROM {t}"
    for t in TABLES
)
SCHEMA = """
SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname)
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
"""

# (what it tries, the statement, a phrase the refusal must contain)
SQL_ATTACKS: list[tuple[str, str, str]] = [
    ("two statements", "SELECT 1; DROP TABLE logs_llm_execution", "exactly one statement"),
    (
        "a second statement after a line comment",
        "SELECT 1 -- harmless\n; DELETE FROM logs_llm_execution",
        "exactly one statement",
    ),
    (
        "a second statement after a block comment",
        "SELECT 1 /* ; */ ; DELETE FROM logs_llm_execution /* */",
        "exactly one statement",
    ),
    (
        "a second statement after a dollar-quoted string",
        "SELECT $a$ ; $a$; DELETE FROM logs_llm_execution",
        "exactly one statement",
    ),
    (
        "a writable CTE",
        "WITH gone AS (DELETE FROM logs_llm_execution RETURNING 1) SELECT count(*) FROM gone",
        "DELETE is not allowed",
    ),
    (
        "a writable CTE that updates",
        "WITH x AS (UPDATE logs_llm_execution SET total_cost = 0 RETURNING 1) SELECT 1",
        "UPDATE is not allowed",
    ),
    ("SELECT INTO", "SELECT * INTO stolen FROM logs_llm_execution", "SELECT INTO is not allowed"),
    ("CREATE TABLE AS", "CREATE TABLE stolen AS SELECT 1", "CREATE is not allowed"),
    ("INSERT", "INSERT INTO logs_user_journey SELECT * FROM logs_user_journey", "INSERT"),
    ("TRUNCATE", "TRUNCATE logs_llm_execution", "TRUNCATE is not allowed"),
    ("COPY TO PROGRAM", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pgtrail-pwned'", "COPY"),
    ("COPY TO a file", "COPY logs_llm_execution TO '/tmp/pgtrail-dump.csv'", "COPY"),
    (
        "set_config",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "set_config() is not allowed",
    ),
    ("SET", "SET default_transaction_read_only = off", "not allowed"),
    ("SET ROLE", "SET ROLE postgres", "not allowed"),
    ("RESET", "RESET ALL", "not allowed"),
    ("lo_import", "SELECT lo_import('/etc/passwd')", "lo_import() is not allowed"),
    ("lo_from_bytea", "SELECT lo_from_bytea(0, 'x')", "lo_from_bytea() is not allowed"),
    ("lo_export", "SELECT lo_export(1, '/tmp/pgtrail-lo')", "lo_export() is not allowed"),
    ("pg_read_file", "SELECT pg_read_file('/etc/passwd')", "pg_read_file() is not allowed"),
    (
        "pg_read_binary_file",
        "SELECT pg_read_binary_file('/etc/passwd')",
        "pg_read_binary_file() is not allowed",
    ),
    ("pg_ls_dir", "SELECT pg_ls_dir('.')", "pg_ls_dir() is not allowed"),
    (
        "dblink",
        "SELECT * FROM dblink('dbname=postgres', 'DROP TABLE logs_execution') AS t (x text)",
        "dblink() is not allowed",
    ),
    (
        "dblink_exec",
        "SELECT dblink_exec('dbname=postgres', 'DROP TABLE logs_execution')",
        "dblink_exec() is not allowed",
    ),
    (
        "query_to_xml running a write",
        "SELECT query_to_xml('DELETE FROM logs_llm_execution RETURNING 1', true, true, '')",
        "query_to_xml() is not allowed",
    ),
    (
        "a DO block",
        "DO $$ BEGIN DELETE FROM logs_llm_execution; END $$",
        "not allowed",
    ),
    ("CALL", "CALL pgtrail_cleanup()", "not allowed"),
    ("PREPARE", "PREPARE wipe AS DELETE FROM logs_llm_execution", "not allowed"),
    ("EXPLAIN ANALYZE of a write", "EXPLAIN ANALYZE DELETE FROM logs_llm_execution", "not allowed"),
    ("a locking read", "SELECT * FROM logs_llm_execution FOR UPDATE", "locking clause"),
    ("BEGIN", "BEGIN", "not allowed"),
    ("COMMIT then DROP", "COMMIT; DROP TABLE logs_execution", "exactly one statement"),
    ("nextval", "SELECT nextval('some_sequence')", "nextval() is not allowed"),
    ("pg_terminate_backend", "SELECT pg_terminate_backend(1)", "not allowed"),
    ("pg_advisory_lock", "SELECT pg_advisory_lock(1)", "not allowed"),
    ("pg_sleep", "SELECT pg_sleep(30)", "pg_sleep() is not allowed"),
    (
        "current_setting",
        "SELECT current_setting('transaction_read_only')",
        "current_setting() is not allowed",
    ),
    ("a NUL byte before a second statement", "SELECT 1\x00; DROP TABLE logs_execution", "NUL"),
    ("a NUL byte cutting the statement short", "SELECT 1\x00 + 1", "NUL byte"),
    ("a NUL byte in a literal", "SELECT 'nul\x00byte'", "NUL byte"),
    ("a full-width semicolon", "SELECT 1；DROP TABLE logs_execution", "does not parse"),
    (
        "a function that writes",
        "SELECT pgtrail_ensure_partitions(current_date + 400, current_date + 401)",
        "read-only",
    ),
    ("not SQL at all", "please drop everything", "does not parse"),
    ("nothing", "  -- just a comment\n", "no SQL statement"),
]

# (report, parameters, a phrase the refusal must contain or None when the run must succeed)
PARAM_ATTACKS: list[tuple[str, dict[str, str], str | None]] = [
    ("user-journey", {"user_id": "'; DROP TABLE logs_user_journey; --"}, None),
    ("user-journey", {"user_id": "x' OR '1'='1"}, None),
    ("user-journey", {"user_id": "’ OR ’1’=’1"}, None),
    ("user-journey", {"user_id": ":'since' :until %(since)s %s {0}"}, None),
    ("user-journey", {"user_id": "\\'; DROP TABLE logs_user_journey; --"}, None),
    ("user-journey", {"user_id": "$$; DROP TABLE logs_user_journey; $$"}, None),
    ("user-journey", {"user_id": "nul\x00byte"}, "NUL"),
    ("decision-drift", {"agent_type": "coaching", "event_type": "x'); DELETE FROM t; --"}, None),
    (
        "decision-drift",
        {"agent_type": "coaching", "tz": "UTC'; DROP TABLE logs_agent_execution; --"},
        "time zone",
    ),
    ("large-generations", {"min_tokens": "1; DROP TABLE logs_llm_execution"}, "not a valid int"),
    ("large-generations", {"since": "now'; DROP TABLE logs_llm_execution; --"}, "timestamptz"),
    ("cost-anomalies", {"k": "5) OR (1=1"}, "not a valid numeric"),
    ("latency-percentiles", {"include_failed": "true OR 1=1"}, "not a valid bool"),
    ("execution-tree", {"execution_id": "'; DROP TABLE logs_execution; --"}, "not a valid uuid"),
    ("user-journey", {"user_id": "u", "since; DROP TABLE x": "1"}, "has no parameter"),
]


def state(settings: Settings) -> list[Any]:
    """Everything an attack could change: the rows, the relations, the key settings."""
    with psycopg.connect(settings.dsn) as conn:
        rows = conn.execute(FINGERPRINT.encode()).fetchall()
        relations = conn.execute(SCHEMA.encode()).fetchone()
        large_objects = conn.execute(b"SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    return [rows, relations, large_objects]


@pytest.fixture(scope="module")
def loaded(postgresql_server: Any) -> Iterator[Settings]:
    """A small dataset shared by the attempts (each must leave it untouched)."""
    with reference.scratch_database(postgresql_server) as settings:
        reference.insert(settings, reference.build_dataset(executions=80))
        yield settings


@pytest.fixture(scope="module")
def before(loaded: Settings) -> list[Any]:
    """The state every attempt must leave behind."""
    return state(loaded)


@pytest.mark.parametrize(("what", "text", "phrase"), SQL_ATTACKS, ids=[a[0] for a in SQL_ATTACKS])
def test_sql_attempt_is_refused_and_changes_nothing(
    loaded: Settings, before: list[Any], what: str, text: str, phrase: str
) -> None:
    with pytest.raises(ReportError) as refused:
        reports.run_sql(loaded, text)
    assert phrase in str(refused.value), f"{what}: {refused.value}"
    assert state(loaded) == before


def test_a_query_beyond_the_timeout_is_cancelled(loaded: Settings, before: list[Any]) -> None:
    started = time.perf_counter()
    endless = "SELECT count(*) FROM generate_series(1, 1000000000000) AS g"
    with pytest.raises(ReportError, match=r"cancelled after 300 ms \(statement_timeout\)"):
        reports.run_sql(loaded, endless, timeout_ms=300)
    assert time.perf_counter() - started < 5
    assert state(loaded) == before


def test_a_dollar_quoted_semicolon_is_just_text(loaded: Settings, before: list[Any]) -> None:
    result = reports.run_sql(loaded, "SELECT $x$; DELETE FROM logs_llm_execution; $x$ AS t")
    assert result.rows == [("; DELETE FROM logs_llm_execution; ",)]
    assert state(loaded) == before


def test_a_field_path_parameter_is_a_path_not_sql(loaded: Settings, before: list[Any]) -> None:
    report = reports.load_catalog().get("decision-drift")
    params = {**reference.WINDOW, "agent_type": "coaching", "field": "a}', '{b'); DROP TABLE x; --"}
    rows = reports.run_report(loaded, report, params, now=reference.NOW).rows
    assert rows
    assert {row[3] for row in rows} == {"(missing)"}
    assert state(loaded) == before


def test_the_session_is_not_left_writable_after_a_refusal(loaded: Settings) -> None:
    with pytest.raises(ReportError):
        reports.run_sql(loaded, "SELECT 1; SET default_transaction_read_only = off")
    # The same connection, past the checks: the statement reaches the sandbox itself,
    # fails there, and leaves neither the connection nor its next session writable.
    with db.connect(loaded) as conn:
        before = conn.execute("SHOW default_transaction_read_only").fetchone()
        with pytest.raises(psycopg.Error), sandbox.read_session(conn, 1000) as session:
            session.query("SELECT 1; SET default_transaction_read_only = off")
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == before
        with sandbox.read_session(conn, 1000) as session:
            result = session.query("SELECT current_setting('transaction_read_only')")
        assert result.rows == [("on",)]


@pytest.mark.parametrize(
    ("name", "params", "phrase"),
    PARAM_ATTACKS,
    ids=[f"{a[0]}-{i}" for i, a in enumerate(PARAM_ATTACKS)],
)
def test_parameter_attempt_is_bound_as_a_value_and_changes_nothing(
    loaded: Settings, before: list[Any], name: str, params: dict[str, str], phrase: str | None
) -> None:
    report = reports.load_catalog().get(name)
    given = {**{k: v for k, v in reference.WINDOW.items() if report.param(k)}, **params}
    if phrase is None:
        assert reports.run_report(loaded, report, given, now=reference.NOW).rows == []
    else:
        with pytest.raises(ReportError) as refused:
            reports.run_report(loaded, report, given, now=reference.NOW)
        assert phrase in str(refused.value), str(refused.value)
    assert state(loaded) == before
