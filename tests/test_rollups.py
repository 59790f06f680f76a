"""Rollups: every path a model call takes is counted once, fresh, and survives raw retention.

Each rollup-backed report is compared with the same report computed from raw rows alone
(``tests/fixtures/raw_reports``, the shipped reports before they read rollups).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import pgtrail
from dbrows import one
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.errors import RetentionError, RollupError
from pgtrail.ops import partitions, retention, rollups
from pgtrail.read import reports

RAW = Path(__file__).parent / "fixtures" / "raw_reports"
ROLLUP_REPORTS = sorted(p.stem for p in RAW.glob("*.sql"))
NOW = dt.datetime.now(dt.UTC)
OPEN = {"include_failed": "true", "min_calls": "1", "max_increase_pct": "1"}


def _window(since: dt.datetime, until: dt.datetime) -> dict[str, str]:
    return {"since": since.isoformat(), "until": until.isoformat()}


def _both(settings: Settings, name: str, params: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """The shipped report's rows and the raw-rows reference's rows for the same parameters."""
    shipped = reports.load_catalog().get(name)
    raw = reports.parse_report((RAW / f"{name}.sql").read_text(), RAW / f"{name}.sql")
    given = {k: v for k, v in {**OPEN, **params}.items() if shipped.param(k)}
    return (
        reports.run_report(settings, shipped, given).rows,
        reports.run_report(settings, raw, given).rows,
    )


def _set_horizon(settings: Settings, raw_from: str) -> None:
    """Where the percentile reports stop reading raw rows (retention moves it)."""
    with psycopg.connect(settings.dsn) as conn:
        conn.execute("UPDATE pgtrail_rollup_horizon SET raw_from = %s", (raw_from,))


def _assert_reports_match_raw(settings: Settings, params: dict[str, str]) -> None:
    # Percentile reports read raw rows while they exist; past the horizon, histograms.
    for horizon in ("-infinity", "infinity"):
        _set_horizon(settings, horizon)
        for name in ROLLUP_REPORTS:
            got, want = _both(settings, name, params)
            assert want, f"{name}: the situation must give the reference rows"
            assert got == want, (name, horizon)
    _set_horizon(settings, "-infinity")


def _call_row(at: dt.datetime, i: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "execution_id": uuid.uuid4(),
        "created_at": at,
        "tenant_id": "acme",
        "agent_type": ("coach", "critic", None)[i % 3],
        "provider": "anthropic",
        "model_target": ("claude-sonnet-4", "claude-haiku-4-5")[i % 2],
        "prompt_version": ("v1", "v2")[i % 2],
        "event_type": "llm_error" if i % 7 == 0 else "llm_valid_execution",
        "processing_time_ms": None if i % 11 == 0 else 200 + (i * 397) % 9000,
        "time_to_first_token_ms": None if i % 5 == 0 else 40 + i % 300,
        "input_tokens": 100 + i,
        "output_tokens": 10 + i % 50,
        "total_cost": Decimal("0.000123") * (i % 17),
        "particular_data": psycopg.types.json.Jsonb({"feature": ("chat", "search")[i % 2]}),
    }
    row.update(values)
    return row


def _insert(dsn: str, rows: list[dict[str, Any]], *, copy: bool = False) -> None:
    """Rows straight into logs_llm_execution, as a person at psql would (INSERT or COPY)."""
    columns = list(rows[0])
    with psycopg.connect(dsn) as conn:
        if copy:
            with conn.cursor().copy(
                f"COPY logs_llm_execution ({', '.join(columns)}) FROM STDIN"
            ) as out:
                for row in rows:
                    out.write_row([row[c] for c in columns])
        else:
            marks = ", ".join(["%s"] * len(columns))
            conn.cursor().executemany(
                f"INSERT INTO logs_llm_execution ({', '.join(columns)}) VALUES ({marks}) "
                "ON CONFLICT DO NOTHING",
                [[row[c] for c in columns] for row in rows],
            )


def test_every_path_a_call_takes_is_counted_once_and_at_once(settings: Settings) -> None:
    # The writer's COPY, through the public API.
    with Trail(settings, sync=True) as trail, trail.execution("chat"):
        for i in range(40):
            pgtrail.log_llm_execution(
                agent_type="coach",
                model="claude-sonnet-4",
                provider="anthropic",
                input_tokens=1000 + i,
                output_tokens=100,
                processing_time_ms=900 + 37 * i,
                time_to_first_token_ms=120 + i,
                total_cost=0.0021,
            )
    # A spool replayed twice (the same batch, as after a crash mid-replay).
    offline = settings.model_copy(update={"dsn": "postgresql://nobody@127.0.0.1:1/none"})
    with Trail(offline, sync=True) as trail, trail.execution("offline"):
        for i in range(25):
            pgtrail.log_llm_execution(
                agent_type="critic", model="gpt-5", processing_time_ms=3000 + i, total_cost=0.01
            )
    for path in sorted(settings.spool_dir.glob("*.jsonl")):
        path.with_name("z" + path.name).write_bytes(path.read_bytes())
    replay = ["--dsn", settings.dsn, "spool", "replay", "--spool-dir", str(settings.spool_dir)]
    assert CliRunner().invoke(app, replay).exit_code == 0
    # INSERT and COPY from psql, a backfill of three weeks ago, and rows sent again.
    recent = [_call_row(NOW - dt.timedelta(minutes=3 * i), i) for i in range(120)]
    backfill = [_call_row(NOW - dt.timedelta(days=21, minutes=7 * i), i) for i in range(150)]
    _insert(settings.dsn, recent)
    _insert(settings.dsn, backfill, copy=True)
    _insert(settings.dsn, recent[:60] + backfill[:60])  # replays: ON CONFLICT DO NOTHING

    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution") == 40 + 25 + 120 + 150
    assert one(settings.dsn, "SELECT sum(calls) FROM pgtrail_rollup_llm") == 335
    # Windows that cut hours in two at both ends, and one inside a single hour.
    windows = [
        _window(NOW - dt.timedelta(days=30, minutes=17), NOW + dt.timedelta(minutes=1)),
        _window(NOW - dt.timedelta(days=21, hours=5, minutes=3), NOW - dt.timedelta(hours=2)),
        _window(NOW - dt.timedelta(minutes=50), NOW + dt.timedelta(minutes=1)),
    ]
    for params in windows:
        _assert_reports_match_raw(settings, params)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        assert rollups.compact(conn).rows_written > 0
        assert rollups.state(conn).partial_rows == 0
    for params in windows:
        _assert_reports_match_raw(settings, params)
    # Calls logged after a compaction show at once, and a second compaction adds nothing.
    late = [_call_row(NOW - dt.timedelta(days=21, minutes=1), 1000 + i) for i in range(9)]
    _insert(settings.dsn, late, copy=True)
    _assert_reports_match_raw(settings, windows[0])
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        rollups.compact(conn)
        before = rollups.state(conn).rows
        rollups.compact(conn)
        assert rollups.state(conn).rows == before
    _assert_reports_match_raw(settings, windows[0])


def test_a_rebuild_recomputes_hours_changed_behind_the_trigger(settings: Settings) -> None:
    rows = [_call_row(NOW - dt.timedelta(hours=30, minutes=2 * i), i) for i in range(200)]
    _insert(settings.dsn, rows, copy=True)
    day = (NOW - dt.timedelta(hours=30)).date()
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        partitions.ensure(conn, day - dt.timedelta(days=1), day + dt.timedelta(days=1))
        # Rows inserted into a partition by name do not pass the table's trigger.
        part = f"logs_llm_execution_p{day:%Y%m%d}"
        conn.execute(
            f"INSERT INTO {part} (event_id, execution_id, created_at, tenant_id, event_type, "
            "model_target, total_cost, processing_time_ms) "
            "SELECT gen_random_uuid(), gen_random_uuid(), %s, 'acme', 'llm_valid_execution', "
            "'gpt-5', 1.5, 700 FROM generate_series(1, 5)",
            (dt.datetime.combine(day, dt.time(12), dt.UTC),),
        )
        window = _window(NOW - dt.timedelta(days=3, minutes=9), NOW)
        got, want = _both(settings, "cost-by-model", window)
        assert got != want
        run = rollups.rebuild(
            conn, dt.datetime.combine(day, dt.time(), dt.UTC), NOW - dt.timedelta(hours=1)
        )
        assert run.rebuilt_from == dt.datetime.combine(day, dt.time(), dt.UTC)
    _assert_reports_match_raw(settings, window)


def test_a_rebuild_refuses_hours_whose_raw_rows_retention_dropped(settings: Settings) -> None:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        assert rollups.raw_from(conn) is None
        # On the test's clock: a run that crosses an hour must not move the horizon.
        retention.run(conn, keep=dt.timedelta(days=28), now=NOW)
        horizon = rollups.raw_from(conn)
        assert horizon == (NOW - dt.timedelta(days=28)).replace(minute=0, second=0, microsecond=0)
        with pytest.raises(RollupError, match="would erase their rollup history"):
            rollups.rebuild(conn, horizon - dt.timedelta(hours=1), horizon + dt.timedelta(days=1))
        assert rollups.rebuild(conn, horizon, horizon + dt.timedelta(days=1)).rows_written == 0
        with pytest.raises(RollupError, match="--until must be after --since"):
            rollups.rebuild(conn, horizon, horizon)


def test_percentiles_from_histograms_are_within_one_percent_of_percentile_cont(
    settings: Settings,
) -> None:
    # 30,000 calls spread from 50 ms to about 60 s, 300 distinct latencies an hour and key:
    # the rollup rows hold 1% buckets, not exact values.
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(
            """
            INSERT INTO logs_llm_execution (event_id, execution_id, created_at, tenant_id,
                agent_type, model_target, prompt_version, event_type, processing_time_ms,
                time_to_first_token_ms)
            SELECT gen_random_uuid(), gen_random_uuid(),
                   %(now)s - (g %% 48) * interval '1 hour' - interval '10 minutes', 'acme',
                   'agent' || (g %% 3), 'model' || (g %% 2), 'v' || (g %% 48 / 24),
                   'llm_valid_execution',
                   (50 * exp((abs(hashint4(g)) %% 10000) / 10000.0 * ln(1200)))::int,
                   (20 * exp((abs(hashint4(g * 7)) %% 10000) / 10000.0 * ln(100)))::int
            FROM generate_series(1, 30000) AS g
            """,
            {"now": NOW},
        )
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        rollups.compact(conn)
    assert one(settings.dsn, "SELECT bool_and(latency_buckets[1] < 0) FROM pgtrail_rollup_llm"), (
        "the rollup rows must hold log buckets for this test to mean anything"
    )
    _set_horizon(settings, "infinity")  # as if retention had dropped every raw call
    window = _window(NOW - dt.timedelta(days=3, minutes=4), NOW)
    estimated = {
        "latency-percentiles": {"p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms"},
        "prompt-regressions": {"p50_ms", "previous_p50_ms", "p95_ms", "previous_p95_ms"},
    }
    for name, columns in estimated.items():
        got, want = _both(settings, name, window)
        header = reports.run_report(settings, reports.load_catalog().get(name), window).columns
        assert len(got) == len(want) > 0
        compared = 0
        # Rows ordered by an estimate may swap when two estimates are that close.
        ordered = sorted(got, key=lambda r: (r[0], r[1])), sorted(want, key=lambda r: (r[0], r[1]))
        for row, reference in zip(*ordered, strict=True):
            for column, value, exact in zip(header, row, reference, strict=True):
                if column not in columns:
                    if "change" not in column and column != "flagged":
                        assert value == exact, (name, column)
                    continue
                if exact is None:  # a first version has no previous one
                    assert value is None, (name, column)
                    continue
                assert abs(value - exact) <= Decimal("0.01") * exact, (name, column, value, exact)
                compared += 1
        assert compared >= 2 * len(want)


def test_retention_drops_raw_days_while_rollups_keep_the_history(settings: Settings) -> None:
    old_day = (NOW - dt.timedelta(days=40)).date()
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        partitions.ensure(conn, old_day - dt.timedelta(days=1), old_day + dt.timedelta(days=1))
    noon = dt.datetime.combine(old_day, dt.time(12), dt.UTC)
    _insert(settings.dsn, [_call_row(noon + dt.timedelta(minutes=i), i) for i in range(80)])
    _insert(settings.dsn, [_call_row(NOW - dt.timedelta(minutes=i), i) for i in range(30)])
    old_window = _window(noon - dt.timedelta(days=2, minutes=1), noon + dt.timedelta(days=2))
    before = {name: _both(settings, name, old_window) for name in ROLLUP_REPORTS}
    assert all(got == want and got for got, want in before.values())

    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        with pytest.raises(RetentionError, match="must not be shorter than --keep"):
            retention.run(conn, keep=dt.timedelta(days=28), keep_rollups=dt.timedelta(days=7))
        done = retention.run(conn, keep=dt.timedelta(days=28), keep_rollups=dt.timedelta(days=400))
    assert done.rows_dropped == 80
    assert done.rollup_rows_deleted == 0
    for name in ROLLUP_REPORTS:
        got, raw = _both(settings, name, old_window)
        assert raw == [], f"{name}: the raw rows of the old window are gone"
        assert got == before[name][0], f"{name} answers the old window from rollups"

    # A shorter rollup window, given on the command line, deletes that history too.
    dry = ["--dsn", settings.dsn, "retention", "--keep", "28d", "--keep-rollups", "30d"]
    result = CliRunner().invoke(app, [*dry, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete" in result.output and "rollup row(s)" in result.output
    old_rows = "SELECT count(*) FROM pgtrail_rollup_llm WHERE bucket < %s"
    assert one(settings.dsn, old_rows, noon + dt.timedelta(days=1)) > 0
    result = CliRunner().invoke(app, dry)
    assert result.exit_code == 0, result.output
    assert one(settings.dsn, old_rows, noon + dt.timedelta(days=1)) == 0
    for name in ROLLUP_REPORTS:
        assert _both(settings, name, old_window) == ([], []), name


def test_the_rollup_command_merges_and_rebuilds(settings: Settings) -> None:
    _insert(settings.dsn, [_call_row(NOW - dt.timedelta(minutes=9 * i), i) for i in range(50)])
    runner = CliRunner()
    merged = runner.invoke(app, ["--dsn", settings.dsn, "rollup"])
    assert merged.exit_code == 0, merged.output
    assert "merged into" in merged.output and "0 partial" in merged.output
    rebuilt = runner.invoke(app, ["--dsn", settings.dsn, "rollup", "--rebuild", "--since", "1d"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt" in rebuilt.output
    assert one(settings.dsn, "SELECT sum(calls) FROM pgtrail_rollup_llm") == 50
    lone = runner.invoke(app, ["--dsn", settings.dsn, "rollup", "--since", "1d"])
    assert lone.exit_code == 1
    assert "--since and --until go with --rebuild" in lone.output


def test_report_show_says_which_reports_read_rollups(settings: Settings) -> None:
    catalog = reports.load_catalog()
    for name in ROLLUP_REPORTS:
        assert "pgtrail_rollup_llm" in catalog.get(name).rollups, name
    shown = CliRunner().invoke(app, ["report", "show", "cost-by-agent"])
    assert shown.exit_code == 0, shown.output
    assert "rollups: whole UTC hours from pgtrail_rollup_llm" in shown.output
    raw = CliRunner().invoke(app, ["report", "show", "cost-anomalies"])
    assert "rollups: no" in raw.output
