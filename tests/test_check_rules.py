"""``pgtrail check`` rules on users, running executions and scores, against real servers.

Each kind fires on a planted breach and stays quiet on a healthy twin: a user over their
rolling budget (``user_cost``), an execution still open in Redis that runs too long or
spends too much (``runaway``), a prompt version whose mean score dropped (``score_avg``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
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


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> dt.datetime:
        return self.at


def check(settings: Settings, rules: str, tmp_path: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Exit code, breaches (JSON) and text output of ``pgtrail check`` at NOW."""
    path = tmp_path / "alerts.toml"
    path.write_text(rules)
    base = ["--dsn", settings.dsn, "--redis-url", settings.redis_url or ""]
    args = [*base, "check", "--at", NOW.isoformat(), "--rules", str(path)]
    env = {"PGTRAIL_REDIS_PREFIX": settings.redis_prefix}
    as_json = runner.invoke(app, [*args, "--format", "json"], env=env)
    assert as_json.exit_code in (0, 1), as_json.output
    text = runner.invoke(app, args, env=env)
    assert text.exit_code == as_json.exit_code, text.output
    return as_json.exit_code, json.loads(as_json.stdout)["breaches"], text.stdout


def check_flags(settings: Settings, *flags: str) -> list[dict[str, Any]]:
    """The breaches of ``pgtrail check`` run with rule options instead of a file."""
    args = ["--dsn", settings.dsn, "--redis-url", settings.redis_url or ""]
    args += ["check", "--at", NOW.isoformat(), *flags, "--format", "json"]
    result = runner.invoke(app, args, env={"PGTRAIL_REDIS_PREFIX": settings.redis_prefix})
    assert result.exit_code in (0, 1), result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)["breaches"]
    return found


def spend(
    settings: Settings, user: str, cost: float, ago: dt.timedelta, tenant: str = "acme"
) -> None:
    """One finished execution of ``user`` with one model call of ``cost`` USD."""
    clock = Clock()
    clock.at = NOW - ago
    plain = settings.model_copy(update={"redis_url": None})
    with (
        Trail(plain, sync=True, clock=clock) as trail,
        trail.execution("001 Main", tenant_id=tenant, user_id=user),
    ):
        pgtrail.log_llm_execution(model="gpt-4o", total_cost=cost, input_tokens=10)


# -- user_cost -------------------------------------------------------------------------------

USER_COST = """
[[rules]]
name = "monthly user budget"
kind = "user_cost"
window = "30d"
budget_usd = 50
budgets = { u-vip = 100 }
"""


def test_user_cost_names_each_user_over_their_rolling_budget(
    settings: Settings, tmp_path: Path
) -> None:
    day = dt.timedelta(days=1)
    spend(settings, "u-big", 30, 2 * day)
    spend(settings, "u-big", 30.5, 20 * day)
    spend(settings, "u-small", 10, 3 * day)
    spend(settings, "u-small", 100, 31 * day)  # outside the rolling window
    spend(settings, "u-vip", 80, day)  # over the default, under their own budget
    spend(settings, "u-globex", 51, day, tenant="globex")
    code, found, text = check(settings, USER_COST, tmp_path)
    assert code == 1
    assert [(b["subject"], b["observed"], b["threshold"]) for b in found] == [
        ({"tenant": "acme", "user": "u-big"}, 60.5, 50),
        ({"tenant": "globex", "user": "u-globex"}, 51, 50),
    ]
    assert found[0]["detail"]["calls"] == 2
    # The same rule as options, with no per-user budgets: the VIP is over budget too.
    flagged = check_flags(settings, "--user-budget", "50", "--user-window", "30d")
    assert [b["subject"]["user"] for b in flagged] == ["u-vip", "u-big", "u-globex"]
    assert (
        "BREACH monthly user budget [user_cost] tenant=acme user=u-big: cost $60.5000 > "
        "budget $50.0000 over the last 30d (2 calls)"
    ) in text


def test_user_cost_is_quiet_when_every_user_is_within_budget(
    settings: Settings, tmp_path: Path
) -> None:
    spend(settings, "u-1", 49.99, dt.timedelta(days=1))
    spend(settings, "u-vip", 99, dt.timedelta(days=1))
    spend(settings, "u-2", 500, dt.timedelta(days=45))
    code, found, _ = check(settings, USER_COST, tmp_path)
    assert (code, found) == (0, [])


# -- runaway ---------------------------------------------------------------------------------

RUNAWAY = """
[[rules]]
name = "runaway agents"
kind = "runaway"
max_duration = "1h"
max_cost_usd = 5
"""


@pytest.fixture
def running(settings: Settings) -> Iterator[Any]:
    """Opens executions in Redis (through the real client) that stay open in the test."""
    stack: list[Any] = []

    def open_one(user: str, started_ago: dt.timedelta, costs: list[float]) -> Any:
        clock = Clock()
        clock.at = NOW - started_ago
        trail = Trail(settings, sync=True, clock=clock)
        scope = trail.execution("310 Research agent", tenant_id="acme", user_id=user)
        ex = scope.__enter__()
        for cost in costs:
            clock.at += dt.timedelta(seconds=30)
            pgtrail.log_llm_execution(model="gpt-4o", total_cost=cost, input_tokens=100)
        assert trail.flush(30)  # the calls are written while the execution runs on
        stack.append((trail, scope))
        return ex

    yield open_one
    for trail, scope in reversed(stack):
        scope.__exit__(None, None, None)
        trail.close()


def test_runaway_finds_executions_still_running_too_long_or_spending_too_much(
    settings: Settings, running: Any, tmp_path: Path
) -> None:
    long_one = running("u-long", dt.timedelta(hours=3, minutes=5), [0.01])
    costly = running("u-costly", dt.timedelta(minutes=20), [2.0, 2.5, 1.5])
    running("u-fine", dt.timedelta(minutes=5), [0.2])
    spend(settings, "u-done", 50, dt.timedelta(hours=5))  # finished: not a runaway
    code, found, text = check(settings, RUNAWAY, tmp_path)
    assert code == 1
    assert [b["subject"]["execution"] for b in found] == [
        str(long_one.execution_id),
        str(costly.execution_id),
    ]
    first, second = found
    assert first["unit"] == "s" and first["observed"] == 3 * 3600 + 5 * 60
    assert first["detail"]["workflow"] == "310 Research agent"
    assert first["detail"]["user"] == "u-long"
    assert first["detail"]["age_s"] == 3 * 3600 + 5 * 60
    assert second["unit"] == "USD" and second["observed"] == 6.0
    assert second["detail"]["calls"] == 3
    assert Decimal(second["detail"]["cost_usd"]) == 6
    assert (
        "310 Research agent of user u-long (tenant acme) still open: running for 3h05m > 1h"
    ) in text
    assert "cost so far $6.0000 > $5.0000 (3 model calls so far)" in text
    flagged = check_flags(settings, "--runaway-after", "1h", "--runaway-cost", "5")
    assert [b["subject"] for b in flagged] == [b["subject"] for b in found]


def test_runaway_is_quiet_when_the_open_executions_are_young_and_cheap(
    settings: Settings, running: Any, tmp_path: Path
) -> None:
    running("u-fine", dt.timedelta(minutes=50), [1.0, 1.0])
    spend(settings, "u-done", 50, dt.timedelta(hours=5))
    code, found, _ = check(settings, RUNAWAY, tmp_path)
    assert (code, found) == (0, [])


def test_runaway_without_redis_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(RUNAWAY)
    dsn = f"host=127.0.0.1 port={free_port()} dbname=none connect_timeout=2"
    result = runner.invoke(
        app, ["--dsn", dsn, "check", "--rules", str(path)], env={"PGTRAIL_REDIS_URL": "off"}
    )
    assert result.exit_code == 2, result.output
    assert "reads the open executions from Redis" in " ".join(result.stderr.split())


def test_runaway_with_redis_unreachable_could_not_be_evaluated(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(RUNAWAY)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(
        app, ["--dsn", settings.dsn, "--redis-url", dead, "check", "--rules", str(path)]
    )
    assert result.exit_code == 3, result.output
    assert "Redis (redis_url) could not be read" in result.stderr


# -- score_avg -------------------------------------------------------------------------------

SCORE_AVG = """
[[rules]]
name = "helpfulness by prompt"
kind = "score_avg"
score = "helpfulness"
min = 0.7
window = "7d"
by = "prompt_version"
min_count = 5

[[rules]]
name = "helpfulness by agent"
kind = "score_avg"
score = "helpfulness"
min = 0.7
window = "7d"
by = "agent"
min_count = 5
"""


def scored(settings: Settings, version: str, values: list[float], ago: dt.timedelta) -> None:
    """Executions of the coaching agent with prompt ``version``, each scored later."""
    clock = Clock()
    plain = settings.model_copy(update={"redis_url": None})
    with Trail(plain, sync=True, clock=clock) as trail:
        for value in values:
            clock.at = NOW - ago
            with (
                trail.execution("001 Main", tenant_id="acme", user_id="u-1") as ex,
                trail.process("202 Agent - Coaching"),
            ):
                pgtrail.log_llm_execution(
                    model="gpt-4o", agent_type="coaching", prompt_version=version
                )
            clock.at += dt.timedelta(minutes=10)
            trail.log_score("helpfulness", value, source="model", execution_id=ex.execution_id)
            trail.log_score("tone", 0.1, execution_id=ex.execution_id)  # another score


def test_score_avg_names_the_prompt_version_whose_mean_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    day = dt.timedelta(days=1)
    scored(settings, "v6", [0.9, 0.8, 0.85, 0.9, 0.8], 3 * day)
    scored(settings, "v7", [0.5, 0.4, 0.6, 0.3, 0.5, 0.4], day)
    scored(settings, "v8", [0.1, 0.1], day)  # too few scores to judge
    scored(settings, "v5", [0.1] * 6, 9 * day)  # before the window
    code, found, text = check(settings, SCORE_AVG, tmp_path)
    assert code == 1
    # Per version only v7 is low (v8 has too few scores); all coaching scores together are
    # low too, as v7 serves most of them.
    assert [(b["rule"], b["subject"], b["detail"]["scores"]) for b in found] == [
        ("helpfulness by prompt", {"score": "helpfulness", "prompt_version": "v7"}, 6),
        ("helpfulness by agent", {"score": "helpfulness", "agent": "coaching"}, 13),
    ]
    assert found[0]["observed"] == pytest.approx(0.45)
    assert (
        "BREACH helpfulness by prompt [score_avg] score=helpfulness prompt_version=v7: mean "
        "helpfulness 0.450 < 0.7 over the last 7d (6 scores)"
    ) in text


def test_score_avg_by_agent_and_overall(settings: Settings, tmp_path: Path) -> None:
    scored(settings, "v7", [0.2] * 5 + [0.9] * 5, dt.timedelta(days=1))
    rules = SCORE_AVG.replace("min = 0.7", "min = 0.6")
    rules += '\n[[rules]]\nname = "overall"\nkind = "score_avg"\nscore = "helpfulness"\n'
    rules += 'min = 0.6\nwindow = "7d"\n'
    code, found, _ = check(settings, rules, tmp_path)
    assert code == 1
    assert [(b["rule"], b["subject"]) for b in found] == [
        ("helpfulness by prompt", {"score": "helpfulness", "prompt_version": "v7"}),
        ("helpfulness by agent", {"score": "helpfulness", "agent": "coaching"}),
        ("overall", {"score": "helpfulness"}),
    ]


def test_score_avg_is_quiet_when_every_version_scores_well(
    settings: Settings, tmp_path: Path
) -> None:
    scored(settings, "v6", [0.9, 0.8, 0.85, 0.9, 0.8], dt.timedelta(days=3))
    scored(settings, "v7", [0.7, 0.75, 0.8, 0.72, 0.9], dt.timedelta(days=1))
    code, found, _ = check(settings, SCORE_AVG, tmp_path)
    assert (code, found) == (0, [])


# -- malformed rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rules]]\nname = "r"\nkind = "runaway"\n',
            "rule 1 ('r'): rule: give max_duration, max_cost_usd, or both",
        ),
        (
            '[[rules]]\nname = "r"\nkind = "runaway"\nmax_duration = "soon"\n',
            "rule 1 ('r'): max_duration: 'soon' is not a duration",
        ),
        (
            '[[rules]]\nname = "u"\nkind = "user_cost"\nwindow = "30d"\n',
            "rule 1 ('u'): rule: give budget_usd, budgets per user, or both",
        ),
        (
            '[[rules]]\nname = "s"\nkind = "score_avg"\nmin = 0.5\nwindow = "1d"\n',
            "rule 1 ('s'): score: Field required",
        ),
        (
            '[[rules]]\nname = "s"\nkind = "score_avg"\nscore = "x"\nmin = 0.5\n'
            'window = "1d"\nby = "model"\n',
            "rule 1 ('s'): by: Input should be 'agent' or 'prompt_version'",
        ),
    ],
)
def test_a_bad_new_rule_exits_2_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    dsn = f"host=127.0.0.1 port={free_port()} dbname=none connect_timeout=2"
    result = runner.invoke(app, ["--dsn", dsn, "check", "--rules", str(path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
