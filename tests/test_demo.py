"""The demo workload against real PostgreSQL: realistic data, and problems found where planted.

Each saved report runs exactly as ``pgtrail report run`` runs it. A planted run must make each
of the five reports flag its problem and nothing else, and ``pgtrail check`` find the score
drop and the runaway; healthy runs must make none flag anything, whatever the seed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor
from rich.console import Console
from typer.testing import CliRunner

from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.demo import catalog
from pgtrail.demo.load import LoadResult, load
from pgtrail.demo.plant import (
    COMPRESSION_BUG_AGENT,
    COMPRESSION_BUG_FROM,
    EXPENSIVE_USER_NUMBER,
    Plan,
)
from pgtrail.demo.runaway import RUNAWAY_WORKFLOW
from pgtrail.demo.simulate import DemoOptions
from pgtrail.demo.tour import check_problems, find_problems, print_checks
from pgtrail.read import reports

END = dt.date(2026, 11, 23)
SMALL = 800  # interactions: enough for every report's minimum counts, a couple of seconds


@dataclass(frozen=True)
class Loaded:
    """A demo loaded into a database of its own."""

    settings: Settings
    result: LoadResult


@pytest.fixture(scope="module")
def module_db(
    postgresql_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Settings]]:
    """Makes fresh migrated databases that live as long as this module's tests."""
    made: list[DatabaseJanitor] = []

    def make() -> Settings:
        name = f"pgtrail_demo_{uuid.uuid4().hex[:10]}"
        janitor = DatabaseJanitor(
            user=postgresql_server.user,
            host=postgresql_server.host,
            port=postgresql_server.port,
            dbname=name,
            template_dbname=postgresql_server.template_dbname,
            password=postgresql_server.password,
        )
        janitor.init()
        made.append(janitor)
        dsn = make_conninfo(
            host=postgresql_server.host,
            port=postgresql_server.port,
            user=postgresql_server.user,
            dbname=name,
            password=postgresql_server.password or None,
        )
        return Settings(dsn=dsn, redis_url=None, spool_dir=tmp_path_factory.mktemp("spool"))

    yield make
    for janitor in made:
        janitor.drop()


@pytest.fixture(scope="module")
def planted(module_db: Callable[[], Settings]) -> Loaded:
    """The default plan: all four problems planted."""
    settings = module_db()
    return Loaded(settings, load(settings, DemoOptions(interactions=SMALL, seed=7, end=END)))


def run(demo: Loaded, report: str, **params: str) -> list[dict[str, Any]]:
    """Runs a saved report over the demo's window; rows as dictionaries."""
    found = reports.load_catalog().get(report)
    start, end = demo.result.window
    out = reports.run_report(
        demo.settings, found, {"since": start.isoformat(), "until": end.isoformat(), **params}
    )
    return [dict(zip(out.columns, row, strict=True)) for row in out.rows]


def query(demo: Loaded, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(demo.settings.dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


# -- the planted problems ---------------------------------------------------------------------


def test_decision_drift_finds_coaching_intensity_creeping_up(planted: Loaded) -> None:
    rows = run(planted, "decision-drift", agent_type="coaching", only_flagged="true")
    assert rows
    by_value: dict[str, list[Decimal]] = {}
    for row in rows:
        by_value.setdefault(row["value"], []).append(row["change_pp"])
    assert max(by_value["intense"]) > 10
    assert min(by_value["balanced"]) < -10
    assert all(not row["is_baseline"] for row in rows)


def test_compression_audit_finds_the_buggy_agent_late_in_the_window(planted: Loaded) -> None:
    rows = run(planted, "compression-audit")
    assert rows
    assert {row["agent_type"] for row in rows} == {COMPRESSION_BUG_AGENT}
    start, end = planted.result.window
    bug_from = start + COMPRESSION_BUG_FROM * (end - start)
    assert min(row["day"] for row in rows) >= bug_from.date()
    assert all(
        row["priorities"] == "aggressive" and row["avg_score"] > Decimal("0.5") for row in rows
    )


def test_cost_anomalies_finds_the_expensive_user_and_only_them(planted: Loaded) -> None:
    rows = run(planted, "cost-anomalies")
    assert {row["user_id"] for row in rows} == {str(EXPENSIVE_USER_NUMBER)}
    assert {row["level"] for row in rows} == {"execution", "user"}
    assert all(row["workflow"] == catalog.MAIN for row in rows)
    assert min(row["times_median"] for row in rows if row["level"] == "execution") > 10


def test_prompt_regressions_finds_coaching_v7_about_60_percent_slower(
    planted: Loaded,
) -> None:
    rows = run(planted, "prompt-regressions", only_flagged="true")
    assert [
        (r["agent_type"], r["model_target"], r["prompt_version"], r["previous_version"])
        for r in rows
    ] == [("coaching", catalog.SONNET.name, "v7", "v6")]
    assert 45 < rows[0]["p50_change_pct"] < 75


def test_the_tour_finds_all_four_planted_problems(planted: Loaded) -> None:
    found = find_problems(planted.settings, planted.result.window)
    assert sorted(report for report, rows in found.items() if rows) == [
        "compression-audit",
        "cost-anomalies",
        "decision-drift",
        "prompt-regressions",
        "score-trends",
    ]


def test_score_trends_find_coaching_v7_judged_less_helpful(planted: Loaded) -> None:
    rows = run(planted, "score-trends", score="helpfulness", min_count="15")
    low = [r for r in rows if r["mean_score"] < Decimal("0.7")]
    assert low
    assert {(r["agent_type"], r["prompt_version"]) for r in low} == {("coaching", "v7")}
    assert all(Decimal("0.4") < r["mean_score"] < Decimal("0.6") for r in low)
    steady = [r for r in rows if r["prompt_version"] == "v6" and r["agent_type"] == "coaching"]
    assert steady and all(r["mean_score"] > Decimal("0.75") for r in steady)


def test_the_check_finds_the_helpfulness_drop_and_the_runaway_while_it_runs(
    settings: Settings,
) -> None:
    result = load(settings, DemoOptions(interactions=SMALL, seed=7, end=END))
    breaches = check_problems(settings, result)
    assert [(b.kind, b.subject.get("prompt_version")) for b in breaches] == [
        ("score_avg", "v7"),
        ("runaway", None),
    ]
    runaway = breaches[1]
    assert runaway.detail["workflow"] == RUNAWAY_WORKFLOW
    assert runaway.detail["age_s"] == 3 * 3600
    assert Decimal(runaway.detail["cost_usd"]) == Decimal("8.40")
    # Checked while it ran; afterwards it was abandoned and its row written.
    assert query(
        Loaded(settings, result),
        f"SELECT status FROM logs_execution WHERE workflow = '{RUNAWAY_WORKFLOW}'",
    ) == [("abandoned",)]


def test_without_redis_the_tour_checks_the_scores_and_says_why_no_runaway(
    planted: Loaded,
) -> None:
    console = Console(record=True, width=200)
    assert print_checks(console, planted.settings, planted.result) == 1
    text = console.export_text()
    assert "BREACH helpfulness by prompt [score_avg]" in text
    assert "runaway not planted: it runs in Redis, and no Redis is configured" in text


@pytest.mark.parametrize("seed", [3, 11, 24])
def test_a_healthy_system_makes_no_report_flag_anything(
    module_db: Callable[[], Settings], seed: int
) -> None:
    settings = module_db()
    result = load(
        settings, DemoOptions(interactions=SMALL, seed=seed, end=END, plan=Plan.nothing())
    )
    found = find_problems(settings, result.window)
    assert found == {report: [] for report in found}
    assert len(found) == 5
    assert check_problems(settings, result) == []


# -- realism ----------------------------------------------------------------------------------


def test_all_ten_agent_types_appear(planted: Loaded) -> None:
    rows = query(
        planted,
        "SELECT agent_type FROM logs_llm_execution UNION "
        "SELECT agent_type FROM logs_agent_execution",
    )
    assert {r[0] for r in rows} == set(catalog.AGENT_TYPES)
    assert len(catalog.AGENT_TYPES) == 10


def test_executions_nest_processes_up_to_five_levels(planted: Loaded) -> None:
    rows = query(planted, "SELECT DISTINCT nesting_level FROM logs_execution_step")
    assert sorted(r[0] for r in rows) == [0, 1, 2, 3, 4, 5]
    names = {r[0] for r in query(planted, "SELECT DISTINCT name FROM logs_execution_step")}
    assert {
        "001 Main",
        "003 Extract message",
        "014 Process security",
        "202 Agent - Coaching",
        "101 AI Execute LLM",
        "021 Send message",
        "022 Record exchange",
        "901 Cleanup User Lock",
        "301 Selling process",
    } <= names


def test_several_tenants_share_the_workload(planted: Loaded) -> None:
    rows = query(planted, "SELECT tenant_id, count(*) FROM logs_execution GROUP BY 1")
    assert len(rows) == planted.result.options.tenants == 3
    assert all(count > 20 for _, count in rows)


def test_failures_timeouts_and_rate_limits_are_present(planted: Loaded) -> None:
    outcomes = {r[0] for r in query(planted, "SELECT DISTINCT event_type FROM logs_llm_execution")}
    assert outcomes == {
        "llm_valid_execution",
        "llm_error",
        "llm_timeout",
        "llm_rate_limited",
        "llm_invalid_output",
    }
    statuses = {r[0] for r in query(planted, "SELECT DISTINCT status FROM logs_execution")}
    assert statuses == {"success", "error", "abandoned"}


def test_user_journeys_span_several_days_and_sessions(planted: Loaded) -> None:
    rows = query(
        planted,
        "SELECT user_id, count(DISTINCT created_at::date), count(DISTINCT session_id) "
        "FROM logs_user_journey GROUP BY user_id",
    )
    assert sum(1 for _, days, _ in rows if days >= 3) > len(rows) / 2
    assert max(days for _, days, _ in rows) >= 10
    assert max(sessions for _, _, sessions in rows) >= 5
    kinds = {r[0] for r in query(planted, "SELECT DISTINCT event_type FROM logs_user_journey")}
    assert kinds == {
        "user_message_received",
        "user_message_sent",
        "state_transition",
        "thumbs_down",
        "draft_edited",
        "session_abandoned",
    }
    scopes = query(
        planted,
        "SELECT particular_data FROM logs_user_journey "
        "WHERE event_type = 'user_message_received' LIMIT 1",
    )[0][0]
    assert {"is_bot_scope", "is_coaching_scope", "is_selling_scope"} <= set(scopes)


def test_timestamps_spread_over_the_simulated_days(planted: Loaded) -> None:
    first, last, days = query(
        planted,
        "SELECT min(created_at), max(created_at), count(DISTINCT created_at::date) "
        "FROM logs_execution",
    )[0]
    start, end = planted.result.window
    assert start <= first < start + dt.timedelta(days=2)
    assert end - dt.timedelta(days=2) < last < end + dt.timedelta(hours=2)
    assert days >= 0.8 * planted.result.options.days


def test_costs_are_inferred_from_the_price_table(planted: Loaded) -> None:
    missing = query(
        planted,
        "SELECT count(*) FROM logs_llm_execution "
        "WHERE input_tokens IS NOT NULL AND total_cost IS NULL",
    )[0][0]
    assert missing == 0
    tokens_in, tokens_out, cost = query(
        planted,
        "SELECT input_tokens, output_tokens, total_cost FROM logs_llm_execution "
        f"WHERE model_target = '{catalog.SONNET.name}' "
        "AND event_type = 'llm_valid_execution' LIMIT 1",
    )[0]
    assert cost == (Decimal(tokens_in) * 3 + Decimal(tokens_out) * 15) / 1_000_000
    failed = query(
        planted,
        "SELECT count(*) FROM logs_llm_execution WHERE event_type IN "
        "('llm_timeout', 'llm_rate_limited') AND total_cost IS NOT NULL",
    )
    assert failed[0][0] == 0


def test_agent_events_carry_seed_shaped_payloads(planted: Loaded) -> None:
    counts = dict(
        query(planted, "SELECT event_type, count(*) FROM logs_agent_execution GROUP BY 1")
    )
    assert set(counts) == {
        "agent_decision",
        "context_compression",
        "tool_call",
        "retrieval",
        "guardrail",
        "handoff",
        "score",
    }
    permissions = {
        r[0]
        for r in query(
            planted,
            "SELECT DISTINCT particular_data->>'permission' FROM logs_agent_execution "
            "WHERE event_type = 'tool_call'",
        )
    }
    assert permissions == {"allowed", "denied", "needs_confirmation"}
    retrieval = query(
        planted,
        "SELECT particular_data FROM logs_agent_execution WHERE event_type = 'retrieval' LIMIT 1",
    )[0][0]
    assert retrieval["doc_count"] >= len(retrieval["top_ids"]) == len(retrieval["scores"]) > 0
    decision = query(
        planted,
        "SELECT particular_data FROM logs_agent_execution "
        "WHERE agent_type = 'coaching' AND event_type = 'agent_decision' "
        "LIMIT 1",
    )[0][0]
    assert decision["agent_decisions"]["coaching_quality"]["intensity_level"] in {
        "low",
        "balanced",
        "high",
        "intense",
    }
    assert decision["event_duration_ms"] > 0
    context = query(
        planted, "SELECT context FROM logs_execution WHERE workflow = '001 Main' LIMIT 1"
    )[0][0]
    assert set(context) == {
        "tier",
        "language",
        "input_type",
        "feature",
        "channel",
        "prompt_version",
        "environment",
    }


def test_the_load_wrote_every_event_it_logged(planted: Loaded) -> None:
    stored = query(
        planted,
        "SELECT (SELECT count(*) FROM logs_execution) "
        "+ (SELECT count(*) FROM logs_user_journey) "
        "+ (SELECT count(*) FROM logs_agent_execution) "
        "+ (SELECT count(*) FROM logs_llm_execution)",
    )[0][0]
    result = planted.result
    assert stored == result.counts.events
    assert result.rejected == result.spooled == 0
    assert result.counts.interactions == SMALL


# -- determinism and the command --------------------------------------------------------------

DIGEST = """
SELECT md5(string_agg(concat_ws('|', execution_id, created_at, workflow, status, user_id,
                                tenant_id, session_id, context::text), ',' ORDER BY execution_id))
       || md5((SELECT string_agg(concat_ws('|', execution_id, created_at, model_target,
                                           input_tokens, output_tokens, total_cost),
                                 ',' ORDER BY execution_id, created_at, model_target,
                                 input_tokens)
               FROM logs_llm_execution))
FROM logs_execution
"""


def test_the_same_seed_gives_the_same_workload(settings: Settings) -> None:
    def digest(seed: int) -> str:
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE logs_execution, logs_user_journey, logs_agent_execution, "
                "logs_llm_execution"
            )
        load(settings, DemoOptions(interactions=150, seed=seed, end=END))
        with psycopg.connect(settings.dsn) as conn:
            row = conn.execute(DIGEST.encode()).fetchone()
        assert row is not None
        return str(row[0])

    first = digest(5)
    assert digest(5) == first
    assert digest(6) != first


def test_the_demo_command_loads_and_tours(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setenv("PGTRAIL_DSN", settings.dsn)
    monkeypatch.setenv("PGTRAIL_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("COLUMNS", "200")
    args = ["demo", "--interactions", str(SMALL), "--end", END.isoformat()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for report in (
        "decision-drift",
        "compression-audit",
        "cost-anomalies",
        "prompt-regressions",
        "score-trends",
    ):
        assert f"pgtrail report run {report}" in result.output
    assert "5 of 5 reports found a problem" in result.output
    assert "BREACH helpfulness by prompt [score_avg]" in result.output
    assert "events/s" in result.output

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert "--reset" in again.output

    healthy = CliRunner().invoke(
        app, ["demo", "--interactions", "150", "--reset", "--no-plant", "--no-tour"]
    )
    assert healthy.exit_code == 0, healthy.output
