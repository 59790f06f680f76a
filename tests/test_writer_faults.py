"""Faults, for real: PostgreSQL stopped mid-load, Redis killed, poisoned rows, crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

import pgtrail
from dbrows import count
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops.devservices import LocalPostgres, LocalRedis
from pgtrail.ops.migrate import migrate
from pgtrail.writer.spool import Spool


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[LocalPostgres]:
    """A PostgreSQL server this test may stop and start."""
    server = LocalPostgres(base_dir=tmp_path / "pg").start()
    try:
        migrate(Settings(dsn=server.dsn, redis_url=None))
        yield server
    finally:
        server.destroy()


def test_postgres_stopped_mid_load_loses_and_duplicates_nothing(
    own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    settings = Settings(
        dsn=own_postgres.dsn,
        redis_url=None,
        spool_dir=tmp_path / "spool",
        batch_size=200,
        flush_interval_s=0.05,
    )
    trail = Trail(settings)
    total = 6000
    with trail.execution("long run"):
        for i in range(total):
            pgtrail.log_user_journey("tick", {"i": i})
            if i == 1500:
                trail.flush(30)
                own_postgres.stop("immediate")
            if i % 500 == 0:
                time.sleep(0.02)  # let the flusher meet the dead server mid-stream
            if i == 4500:
                assert trail.flush(30)  # spooled: nothing waits in memory
                assert trail.stats.spooled > 0
                own_postgres.start()
    assert trail.flush(60)
    deadline = time.monotonic() + 60
    while Spool(settings.spool_dir).files() and time.monotonic() < deadline:
        trail.flush(5)
        time.sleep(0.2)
    trail.close()
    assert count(own_postgres.dsn, "logs_user_journey") == total
    with psycopg.connect(own_postgres.dsn) as conn:
        distinct = conn.execute(
            "SELECT count(DISTINCT (particular_data->>'i')::int) FROM logs_user_journey"
        ).fetchone()
    assert distinct == (total,)
    assert count(own_postgres.dsn, "logs_execution") == 1
    assert list((tmp_path / "spool").glob("*.jsonl")) == []


def test_a_batch_replayed_twice_stores_each_event_once(settings: Settings) -> None:
    trail = Trail(
        settings.model_copy(update={"dsn": "postgresql://nobody@127.0.0.1:1/none"}), sync=True
    )
    with trail.execution("offline"):
        for i in range(50):
            pgtrail.log_user_journey("queued", {"i": i})
    trail.close()
    spooled = sorted(settings.spool_dir.glob("*.jsonl"))
    assert spooled, "an unreachable database must send batches to the spool"
    copies = []
    for path in spooled:
        twin = path.with_name("z" + path.name)
        twin.write_bytes(path.read_bytes())  # the same batch, as after a crash mid-replay
        copies.append(twin)
    result = CliRunner().invoke(
        app, ["--dsn", settings.dsn, "spool", "replay", "--spool-dir", str(settings.spool_dir)]
    )
    assert result.exit_code == 0, result.output
    assert count(settings.dsn, "logs_user_journey") == 50
    assert count(settings.dsn, "logs_execution") == 1
    assert list(settings.spool_dir.glob("*.jsonl")) == []


def test_one_poisoned_record_in_a_thousand_costs_only_itself(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Trail(settings, sync=True, batch_size=5000) as trail:
        with trail.execution("batch"):
            for i in range(1000):
                if i == 500:
                    pgtrail.log_llm_execution(model="gpt-4o", input_tokens="a lot")  # type: ignore[arg-type]
                else:
                    pgtrail.log_llm_execution(model="gpt-4o", input_tokens=i, output_tokens=1)
        rejected = list(trail.stats.recent_rejections)
    assert count(settings.dsn, "logs_llm_execution") == 999
    assert len(rejected) == 1
    assert "input_tokens" in rejected[0].reason
    assert any("rejected a logs_llm_execution record" in r.getMessage() for r in caplog.records)


def test_a_row_postgres_refuses_is_isolated_from_its_batch(settings: Settings) -> None:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE logs_user_journey ADD CONSTRAINT no_evil CHECK (event_type <> 'evil')"
        )
    with Trail(settings, sync=True, batch_size=5000) as trail:
        with trail.execution("batch"):
            for i in range(1000):
                pgtrail.log_user_journey("evil" if i == 123 else "fine", {"i": i})
        rejected = list(trail.stats.recent_rejections)
    assert count(settings.dsn, "logs_user_journey") == 999
    assert count(settings.dsn, "logs_execution") == 1
    assert [r.table for r in rejected] == ["logs_user_journey"]
    assert "no_evil" in rejected[0].reason


def test_redis_killed_mid_run_logging_goes_on(dsn: str, tmp_path: Path) -> None:
    server = LocalRedis().start()
    settings = Settings(dsn=dsn, redis_url=server.url, spool_dir=tmp_path / "spool")
    with Trail(settings, sync=True) as trail:
        with trail.execution("before") as ex, ex.process("step"):
            pgtrail.log_user_journey("one")
        server.stop()
        with trail.execution("after") as ex, ex.process("step"):
            pgtrail.log_user_journey("two")
    assert count(dsn, "logs_user_journey") == 2
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT workflow, jsonb_array_length(processes_executed) "
            "FROM logs_execution ORDER BY created_at"
        ).fetchall()
    assert rows == [("before", 2), ("after", 2)]


JOINER = textwrap.dedent(
    """
    import sys
    import pgtrail
    from pgtrail import Trail
    from pgtrail.config import Settings

    settings = Settings(dsn=sys.argv[1], redis_url=sys.argv[2], redis_prefix=sys.argv[3],
                        spool_dir=sys.argv[4])
    with Trail(settings, sync=True) as trail:
        with trail.join(sys.argv[5]):
            with trail.process("worker " + sys.argv[6]):
                pgtrail.log_llm_execution(agent_type="worker", model="gpt-4o-mini",
                                          input_tokens=10, output_tokens=10)
                with trail.process("worker inner"):
                    pgtrail.log_user_journey("joined", {"by": sys.argv[6]})
    """
)


def _run_joiner(settings: Settings, target: str, label: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            JOINER,
            settings.dsn,
            str(settings.redis_url),
            settings.redis_prefix,
            str(settings.spool_dir),
            target,
            label,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_other_processes_join_by_id_and_by_traceparent(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("001 Main", user_id="57") as ex:
        with ex.process("010 Dispatch"):
            _run_joiner(settings, str(ex.execution_id), "by-id")
            headers: dict[str, str] = {}
            pgtrail.inject(headers)
            _run_joiner(settings, headers["traceparent"], "by-header")
        with ex.process("901 Cleanup"):
            pass
    with psycopg.connect(settings.dsn) as conn:
        processes = conn.execute("SELECT processes_executed FROM logs_execution").fetchone()
        users = conn.execute(
            "SELECT DISTINCT user_id, execution_id FROM logs_user_journey"
        ).fetchall()
    assert processes is not None
    steps = [(p["name"], p["nesting_level"]) for p in processes[0]]
    assert steps == [
        ("001 Main", 0),
        ("010 Dispatch", 1),
        ("worker by-id", 1),
        ("worker inner", 2),
        ("worker by-header", 2),
        ("worker inner", 3),
        ("901 Cleanup", 1),
    ]
    dispatch = processes[0][1]["span_id"]
    assert processes[0][4]["parent_span_id"] == dispatch
    assert users == [("57", ex.execution_id)]


CRASHING_ROOT = textwrap.dedent(
    """
    import os, sys
    import pgtrail
    from pgtrail import Trail
    from pgtrail.config import Settings

    settings = Settings(dsn=sys.argv[1], redis_url=sys.argv[2], redis_prefix=sys.argv[3],
                        spool_dir=sys.argv[4])
    trail = Trail(settings, sync=True)
    with trail.execution("crashy", user_id="u1") as ex:
        with ex.process("step one"):
            pgtrail.log_user_journey("started")
        trail.flush()
        print(ex.execution_id, flush=True)
        os._exit(9)
    """
)


def test_sweep_finalises_an_execution_whose_process_died(settings: Settings) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_ROOT,
            settings.dsn,
            str(settings.redis_url),
            settings.redis_prefix,
            str(settings.spool_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    execution_id = uuid.UUID(done.stdout.strip())
    assert count(settings.dsn, "logs_execution") == 0
    result = CliRunner().invoke(
        app,
        ["--dsn", settings.dsn, "--redis-url", str(settings.redis_url), "sweep", "--idle", "0s"],
        env={"PGTRAIL_REDIS_PREFIX": settings.redis_prefix},
    )
    assert result.exit_code == 0, result.output
    assert "1 execution(s) finalised as abandoned" in result.output
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(
            "SELECT execution_id, status, user_id, processes_executed FROM logs_execution"
        ).fetchone()
    assert row is not None
    assert row[:3] == (execution_id, "abandoned", "u1")
    assert [p["name"] for p in row[3]] == ["crashy", "step one"]


def test_a_forked_child_writes_its_own_records_and_not_the_parents(settings: Settings) -> None:
    trail = Trail(settings, flush_interval_s=30)
    with trail.execution("parent"):
        pgtrail.log_user_journey("from_parent")
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                with trail.execution("child"):
                    pgtrail.log_user_journey("from_child")
                trail.close()
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    trail.close()
    with psycopg.connect(settings.dsn) as conn:
        events = sorted(r[0] for r in conn.execute("SELECT event_type FROM logs_user_journey"))
        executions = sorted(r[0] for r in conn.execute("SELECT workflow FROM logs_execution"))
    assert events == ["from_child", "from_parent"]
    assert executions == ["child", "parent"]


def test_queue_full_moves_records_to_the_spool_not_the_floor(settings: Settings) -> None:
    offline = settings.model_copy(
        update={"dsn": "postgresql://nobody@127.0.0.1:1/none", "queue_size": 100, "batch_size": 50}
    )
    trail = Trail(offline, flush_interval_s=60)
    with trail.execution("burst"):
        for i in range(1000):
            pgtrail.log_user_journey("burst", {"i": i})
    trail.close()
    replayer = Trail(settings, sync=True)
    assert replayer.replay_spool() == 1001
    replayer.close()
    assert count(settings.dsn, "logs_user_journey") == 1000


def test_calls_spooled_before_prices_were_known_are_priced_on_replay(settings: Settings) -> None:
    offline = Trail(
        settings.model_copy(update={"dsn": "postgresql://nobody@127.0.0.1:1/none"}), sync=True
    )
    with offline.execution("offline"):
        pgtrail.log_llm_execution(
            model="claude-sonnet-4-20250514", input_tokens=12570, output_tokens=1568
        )
    offline.close()
    with Trail(settings, sync=True) as trail:
        assert trail.replay_spool() == 2
    with psycopg.connect(settings.dsn) as conn:
        cost = conn.execute("SELECT total_cost FROM logs_llm_execution").fetchone()
    assert cost is not None and str(cost[0]).startswith("0.06123")
