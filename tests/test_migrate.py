"""The migration runner: order, idempotence, edits refused, concurrent deployers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgtrail.config import Settings
from pgtrail.errors import MigrationError
from pgtrail.ops.migrate import load_migrations, migrate, status
from pgtrail.resources import schema_dir

LOG_TABLES = ["logs_agent_execution", "logs_execution", "logs_llm_execution", "logs_user_journey"]


def _tables(dsn: str, schema: str = "public") -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('p', 'r', 'v') AND NOT c.relispartition "
            "ORDER BY 1",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def test_fresh_database_gets_every_table_and_a_second_run_is_a_noop(empty_db_dsn: str) -> None:
    settings = Settings(dsn=empty_db_dsn, redis_url=None)
    applied = migrate(settings)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    assert set(LOG_TABLES) | {
        "logs_execution_step",
        "pgtrail_prompt",
        "pgtrail_model_price",
        "pgtrail_migrations",
    } <= set(_tables(empty_db_dsn))
    assert migrate(settings) == []
    assert all(s.state == "applied" for s in status(settings))


def test_tables_can_live_in_their_own_schema(empty_db_dsn: str) -> None:
    settings = Settings(dsn=empty_db_dsn, redis_url=None, db_schema="observability")
    migrate(settings)
    assert "logs_llm_execution" in _tables(empty_db_dsn, "observability")
    assert "logs_llm_execution" not in _tables(empty_db_dsn, "public")


def test_log_tables_are_partitioned_by_day_with_primary_key_on_event_and_time(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for table in LOG_TABLES:
            strategy = conn.execute(
                "SELECT partstrat, pg_get_partkeydef(partrelid) FROM pg_partitioned_table "
                "WHERE partrelid = %s::regclass",
                (table,),
            ).fetchone()
            assert strategy == ("r", "RANGE (created_at)")
            pk = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'p'",
                (table,),
            ).fetchone()
            assert pk == ("PRIMARY KEY (event_id, created_at)",)


def test_an_edited_applied_file_is_refused_by_name(empty_db_dsn: str, tmp_path: Path) -> None:
    folder = tmp_path / "schema"
    shutil.copytree(schema_dir(), folder)
    settings = Settings(dsn=empty_db_dsn, redis_url=None)
    migrate(settings, directory=folder)
    edited = folder / "0002_model_prices.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationError, match=r"0002_model_prices\.sql was edited"):
        migrate(settings, directory=folder)
    states = {s.name: s.state for s in status(settings, directory=folder)}
    assert states.pop("model_prices") == "edited"
    assert set(states.values()) == {"applied"}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "expected version 0002"),
        (["0001_a.sql", "0001_b.sql"], "expected version 0002"),
        (["0001_a.sql", "2_b.sql"], "must be named NNNN"),
    ],
)
def test_gaps_duplicates_and_bad_names_are_refused(
    tmp_path: Path, names: list[str], message: str
) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)


def test_a_failing_file_is_rolled_back_and_not_recorded(empty_db_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text(
        "CREATE TABLE pgtrail_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
        "applied_by text NOT NULL DEFAULT current_user, execution_ms integer NOT NULL DEFAULT 0);"
    )
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half_done (x int); SELECT 1/0;")
    settings = Settings(dsn=empty_db_dsn, redis_url=None)
    with pytest.raises(MigrationError, match=r"0002_broken\.sql failed and was rolled back"):
        migrate(settings, directory=tmp_path)
    assert "half_done" not in _tables(empty_db_dsn)
    assert [s.state for s in status(settings, directory=tmp_path)] == ["applied", "pending"]


def test_two_deployers_racing_leave_one_correct_schema(empty_db_dsn: str) -> None:
    command = [sys.executable, "-m", "pgtrail", "--dsn", empty_db_dsn, "migrate"]
    racers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p.wait(120), *p.communicate()) for p in racers]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    outputs = sorted(out for _, out, _ in outcomes)
    assert "up to date" in outputs[1] or "up to date" in outputs[0]
    assert sum("migration(s) applied" in out for out in outputs) == 1
    with psycopg.connect(empty_db_dsn) as conn:
        ledger = conn.execute("SELECT version FROM pgtrail_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in ledger] == [m.version for m in load_migrations()]
