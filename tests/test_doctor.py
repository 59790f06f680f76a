"""``pgtrail doctor`` and the CLI's handling of an unreachable database."""

from __future__ import annotations

import subprocess
import sys

import psycopg
from typer.testing import CliRunner

from pgtrail.cli import app
from pgtrail.ops.devservices import free_port

runner = CliRunner()


def test_doctor_is_happy_with_a_migrated_database(dsn: str, redis_url: str) -> None:
    result = runner.invoke(app, ["--dsn", dsn, "--redis-url", redis_url, "doctor"])
    assert result.exit_code == 0, result.output
    for line in ("postgresql", "schema", "partitions", "tenant isolation", "redis"):
        assert f"ok   {line}" in result.output
    assert "pending" in result.output


def test_doctor_says_when_row_level_security_is_off_and_how_to_fix_it(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE logs_llm_execution DISABLE ROW LEVEL SECURITY")
    result = runner.invoke(app, ["--dsn", dsn, "--redis-url", "off", "doctor"])
    assert result.exit_code == 1
    assert "FAIL tenant isolation" in result.output
    assert "3 of 4 log tables" in result.output
    assert "fix: pgtrail migrate" in result.output


def test_doctor_names_pending_migrations_and_the_fix(empty_db_dsn: str) -> None:
    result = runner.invoke(app, ["--dsn", empty_db_dsn, "--redis-url", "off", "doctor"])
    assert result.exit_code == 1
    assert "FAIL schema" in result.output
    assert "fix: pgtrail migrate" in result.output


def test_doctor_reports_an_unreachable_redis_with_the_fix(dsn: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["--dsn", dsn, "--redis-url", url, "doctor"])
    assert result.exit_code == 1
    assert "FAIL redis" in result.output
    assert "PGTRAIL_REDIS_URL=off" in result.output


def test_unreachable_database_shows_the_dsn_with_the_password_masked() -> None:
    dsn = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/logs"
    done = subprocess.run(
        [sys.executable, "-m", "pgtrail", "--dsn", dsn, "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "hunter2" not in done.stderr + done.stdout
    assert (
        f"postgresql://app:***@127.0.0.1:{dsn.rsplit(':', 1)[1].split('/')[0]}/logs" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_dry_run_lists_pending_files_without_applying(empty_db_dsn: str) -> None:
    result = runner.invoke(app, ["--dsn", empty_db_dsn, "migrate", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0001_log_tables.sql" in result.output
    with psycopg.connect(empty_db_dsn) as conn:
        assert conn.execute("SELECT to_regclass('pgtrail_migrations')").fetchone() == (None,)
