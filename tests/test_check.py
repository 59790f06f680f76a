"""``pgtrail check`` against real PostgreSQL: each rule fires on a breach and only then."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pgtrail
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops.devservices import free_port

runner = CliRunner()
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Call:
    """One model call to store, ``ago`` before NOW."""

    ago: dt.timedelta
    latency_ms: int = 1000
    outcome: str = "llm_valid_execution"
    model: str = "gpt-4o"
    agent: str = "support"
    feature: str = "support"
    tenant: str = "acme"
    cost: float = 0.01


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def store(settings: Settings, calls: list[Call]) -> None:
    """Writes the calls through the real writer, one execution per tenant and feature."""
    clock = [NOW]
    with Trail(
        settings.model_copy(update={"redis_url": None}), sync=True, clock=lambda: clock[0]
    ) as trail:
        groups: dict[tuple[str, str], list[Call]] = {}
        for call in calls:
            groups.setdefault((call.tenant, call.feature), []).append(call)
        for (tenant, feature), group in groups.items():
            clock[0] = NOW - max(c.ago for c in group)
            with trail.execution("001 Main", tenant_id=tenant, context={"feature": feature}):
                for call in group:
                    clock[0] = NOW - call.ago
                    pgtrail.log_llm_execution(
                        model=call.model,
                        agent_type=call.agent,
                        event_type=call.outcome,
                        processing_time_ms=call.latency_ms,
                        total_cost=call.cost,
                    )


def run_executions(settings: Settings, workflow: str, *runs: tuple[dt.timedelta, bool]) -> None:
    """Executions of ``workflow`` started ``ago`` before NOW, failing when asked."""
    clock = [NOW]
    with Trail(
        settings.model_copy(update={"redis_url": None}), sync=True, clock=lambda: clock[0]
    ) as trail:
        for ago, fails in runs:
            clock[0] = NOW - ago
            with trail.execution(workflow) as ex:
                if fails:
                    ex.fail("canary answer was wrong")


def check(settings: Settings, *args: str) -> Any:
    return check_at(settings.dsn, *args)


def check_at(dsn: str, *args: str) -> Any:
    return runner.invoke(app, ["--dsn", dsn, "check", "--at", NOW.isoformat(), *args])


def unreachable_dsn() -> str:
    """A server nobody listens on: rules and options are checked before connecting."""
    return f"host=127.0.0.1 port={free_port()} user=postgres dbname=none connect_timeout=2"


def breaches(settings: Settings, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Exit code and breaches of a ``--format json`` run."""
    result = check(settings, *args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.stdout)
    assert document["ok"] is (result.exit_code == 0)
    return result.exit_code, document["breaches"]


# -- p95 latency ------------------------------------------------------------------------------


def test_p95_latency_fires_above_the_threshold_and_not_at_it(settings: Settings) -> None:
    store(
        settings,
        [Call(minutes(1 + i / 10), latency_ms=8000) for i in range(20)]
        # Slow calls outside the window: 11 minutes ago, and exactly at its start.
        + [Call(minutes(11), latency_ms=60_000), Call(minutes(10), latency_ms=60_000)],
    )
    quiet = check(settings, "--latency-p95", "8", "--window", "10m")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout.startswith("ok: 1 rule(s), no breach")

    loud = check(settings, "--latency-p95", "7.9", "--window", "10m")
    assert loud.exit_code == 1, loud.output
    assert "BREACH latency-p95 [latency_p95] all calls: p95 latency 8.000 s > 7.9 s" in loud.stdout
    assert "over the last 10m (20 calls)" in loud.stdout

    # A wider window takes in the two slow calls: p95 of 20 x 8 s and 2 x 60 s, interpolated.
    code, found = breaches(settings, "--latency-p95", "8", "--window", "15m")
    assert code == 1 and found[0]["detail"] == {"calls": 22}
    assert found[0]["observed"] == pytest.approx(8 + 0.95 * 52)


def test_p95_latency_per_model_names_only_the_slow_model(settings: Settings) -> None:
    store(
        settings,
        [Call(minutes(2), latency_ms=9000, model="slow-model") for _ in range(5)]
        + [Call(minutes(2), latency_ms=1000, model="fast-model") for _ in range(5)],
    )
    code, found = breaches(settings, "--latency-p95", "8", "--latency-by", "model")
    assert code == 1
    assert [(b["subject"], b["observed"], b["threshold"], b["unit"]) for b in found] == [
        ({"model": "slow-model"}, 9.0, 8.0, "s")
    ]
    assert found[0]["window"] == "15m"
    assert found[0]["window_end"] == NOW.isoformat()
    assert breaches(settings, "--latency-p95", "9", "--latency-by", "agent") == (0, [])
    # Five calls are not enough when six are required.
    assert breaches(
        settings, "--latency-p95", "8", "--latency-by", "model", "--min-calls", "6"
    ) == (
        0,
        [],
    )


# -- error rate -------------------------------------------------------------------------------


def test_error_rate_fires_above_the_percentage_per_feature(settings: Settings) -> None:
    store(
        settings,
        [Call(minutes(5), feature="support") for _ in range(19)]
        + [Call(minutes(5), feature="support", outcome="llm_timeout")]
        # Outside the hour: would make support's rate 50 %.
        + [Call(minutes(70), feature="support", outcome="llm_error") for _ in range(20)],
    )
    assert breaches(settings, "--error-rate", "5", "--window", "1h") == (0, [])  # 1/20 = 5 %
    code, found = breaches(settings, "--error-rate", "4.9", "--window", "1h")
    assert code == 1
    assert found[0]["subject"] == {"feature": "support"}
    assert (found[0]["observed"], found[0]["threshold"]) == (5.0, 4.9)
    assert found[0]["detail"] == {"calls": 20, "errors": 1, "min_calls": 20}
    text = check(settings, "--error-rate", "4.9", "--window", "1h").stdout
    assert "error rate 5.00% > 4.9% over the last 1h (1 of 20 calls failed)" in text


def test_one_failure_of_two_calls_does_not_page_below_the_minimum_count(
    settings: Settings,
) -> None:
    store(
        settings,
        [
            Call(minutes(3), feature="billing", model="m1"),
            Call(minutes(3), feature="billing", model="m1", outcome="llm_error"),
        ],
    )
    assert breaches(settings, "--error-rate", "2") == (0, [])  # 2 calls < 20
    assert breaches(settings, "--error-rate", "2", "--min-calls", "3") == (0, [])
    code, found = breaches(
        settings, "--error-rate", "2", "--min-calls", "2", "--error-rate-by", "model"
    )
    assert code == 1 and found[0]["subject"] == {"model": "m1"} and found[0]["observed"] == 50.0


# -- daily cost per tenant --------------------------------------------------------------------


def test_daily_cost_fires_for_the_tenant_over_its_budget_today(settings: Settings) -> None:
    store(
        settings,
        [Call(dt.timedelta(hours=h), tenant="acme", cost=50.0) for h in (1, 2, 3, 4)]
        + [Call(dt.timedelta(hours=1), tenant="globex", cost=5.0)]
        # Yesterday (UTC): not today's spend.
        + [Call(dt.timedelta(hours=13), tenant="globex", cost=100.0)]
        + [Call(dt.timedelta(hours=1), tenant="initech", cost=1000.0)],
    )
    # acme spent exactly its budget; globex is under the default; initech has no budget.
    assert breaches(settings, "--tenant-budget", "acme=200", "--tenant-budget", "globex=50") == (
        0,
        [],
    )
    code, found = breaches(settings, "--tenant-budget", "acme=199.99", "--daily-budget", "1000")
    assert code == 1
    assert [(b["subject"], b["observed"], b["threshold"]) for b in found] == [
        ({"tenant": "acme"}, 200.0, 199.99)
    ]
    assert found[0]["window"] == "today (UTC)"
    assert found[0]["window_start"] == "2026-11-20T00:00:00+00:00"
    code, found = breaches(settings, "--daily-budget", "4.99")
    assert [b["subject"]["tenant"] for b in found] == ["acme", "globex", "initech"]


# -- canary -----------------------------------------------------------------------------------


def test_canary_fires_when_the_workflow_did_not_run_in_the_window(settings: Settings) -> None:
    run_executions(settings, "900 Canary", (minutes(50), False), (minutes(20), True))
    assert breaches(settings, "--canary", "900 Canary", "--window", "1h") == (0, [])
    assert breaches(settings, "--canary", "900 Canary", "--window", "21m") == (0, [])
    code, found = breaches(settings, "--canary", "900 Canary", "--window", "20m")
    assert code == 1
    assert found[0]["subject"] == {"workflow": "900 Canary"}
    assert found[0]["detail"] == {"runs": 0, "require_success": False}
    assert breaches(settings, "--canary", "a workflow never run", "--window", "1d")[0] == 1


def test_a_canary_can_require_a_successful_run(settings: Settings, tmp_path: Path) -> None:
    run_executions(settings, "900 Canary", (minutes(50), False), (minutes(20), True))
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "canary ok"\nkind = "canary"\nworkflow = "900 Canary"\n'
        'window = "{w}"\nrequire_success = true\n'.replace("{w}", "30m")
    )
    result = check(settings, "--rules", str(rules))
    assert result.exit_code == 1
    assert "canary ok [canary] workflow=900 Canary: no successful execution in the last 30m" in (
        result.stdout
    )
    rules.write_text(rules.read_text().replace("30m", "1h"))
    assert check(settings, "--rules", str(rules)).exit_code == 0


# -- rules files ------------------------------------------------------------------------------

RULES_TOML = """
[[rules]]
name = "copilot latency"
kind = "latency_p95"
threshold_s = 8
window = "10m"
by = "model"

[[rules]]
name = "support errors"
kind = "error_rate"
threshold_pct = 2
window = "1h"
by = "feature"
min_calls = 10

[[rules]]
name = "tenant budgets"
kind = "daily_cost"
default_budget_usd = 50
budgets = { acme = 200 }

[[rules]]
name = "hourly canary"
kind = "canary"
workflow = "900 Canary"
window = "65m"
"""


def test_a_rules_file_reports_every_breach_with_its_figures(
    settings: Settings, tmp_path: Path
) -> None:
    store(
        settings,
        [Call(minutes(2), latency_ms=12_000, model="gpt-4o", cost=60.0) for _ in range(4)]
        + [Call(minutes(2), outcome="llm_error", cost=0.0) for _ in range(6)],
    )
    run_executions(settings, "900 Canary", (minutes(30), False))
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES_TOML)
    result = check(settings, "--rules", str(rules))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        "BREACH copilot latency [latency_p95] model=gpt-4o: p95 latency 12.000 s > 8 s over "
        "the last 10m (10 calls)",
        "BREACH support errors [error_rate] feature=support: error rate 60.00% > 2% over the "
        "last 1h (6 of 10 calls failed)",
        "BREACH tenant budgets [daily_cost] tenant=acme: cost $240.0000 > budget $200.0000 "
        "today (UTC) (10 calls)",
        f"3 breach(es) of 4 rule(s), checked at {NOW.isoformat()}",
    ]
    as_json = tmp_path / "alerts.json"
    as_json.write_text(
        json.dumps({"rules": [{"kind": "canary", "workflow": "900 Canary", "window": "10m"}]})
    )
    code, found = breaches(settings, "--rules", str(as_json))
    assert code == 1 and found[0]["rule"] == "canary#1"


def test_quiet_prints_nothing_when_no_rule_is_broken(settings: Settings) -> None:
    run_executions(settings, "900 Canary", (minutes(5), False))
    result = check(settings, "--canary", "900 Canary", "--quiet")
    assert (result.exit_code, result.stdout) == (0, "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rules]]\nname = "p95"\nkind = "latency_p95"\nthreshold_s = -1\nwindow = "10m"\n',
            "rule 1 ('p95'): threshold_s: Input should be greater than 0",
        ),
        (
            '[[rules]]\nkind = "canary"\nworkflow = "w"\nwindow = "10m"\n'
            '[[rules]]\nname = "bad window"\nkind = "canary"\nworkflow = "w"\nwindow = "soon"\n',
            "rule 2 ('bad window'): window: 'soon' is not a duration",
        ),
        (
            '[[rules]]\nname = "typo"\nkind = "error_rate"\nthreshold_pct = 2\nwindow = "1h"\n'
            "min_call = 5\n",
            "rule 1 ('typo'): min_call: Extra inputs are not permitted",
        ),
        (
            '[[rules]]\nname = "budget"\nkind = "daily_cost"\n',
            "rule 1 ('budget'): rule: give budgets per tenant, default_budget_usd, or both",
        ),
        ('[[rules]]\nname = "x"\nkind = "p99"\n', "rule 1 ('x'): kind is 'p99'; use one of"),
        (
            '[[rules]]\nname = "a"\nkind = "canary"\nworkflow = "w"\nwindow = "1h"\n' * 2,
            "rule 2 ('a'): another rule is already named so",
        ),
        ("rules = 3\n", "expected a non-empty list of rules"),
        ("[[rules]\n", "not valid toml"),
        ('[[rule]]\nkind = "canary"\n', "unknown top-level key 'rule'"),
    ],
)
def test_a_bad_rules_file_exits_2_naming_the_rule(tmp_path: Path, text: str, message: str) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(text)
    result = check_at(unreachable_dsn(), "--rules", str(rules))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no rules to check"),
        (("--latency-p95", "0"), "threshold_s: Input should be greater than 0"),
        (("--canary", "w", "--window", "an hour"), "'an hour' is not a duration"),
        (("--tenant-budget", "acme"), "write TENANT=USD"),
        (("--rules", "/nonexistent/alerts.toml"), "cannot read rules file"),
    ],
)
def test_bad_options_exit_2(args: tuple[str, ...], message: str) -> None:
    result = check_at(unreachable_dsn(), *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


def test_an_unreachable_database_exits_3() -> None:
    result = check_at(unreachable_dsn(), "--canary", "w")
    assert result.exit_code == 3, result.output
    assert "cannot reach PostgreSQL" in result.stderr
