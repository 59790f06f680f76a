"""``pgtrail trace`` and ``pgtrail journey`` on executions written through the real writer."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

import pgtrail
from pgtrail import AgentDecision, Handoff, ToolCall, Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.errors import NotFoundError
from pgtrail.read.journey import load_journey
from pgtrail.read.trace import ProcessNode, TracedLlmCall, load_trace

runner = CliRunner()


class Clock:
    """A clock the test moves by hand, so events land on the days it chooses."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def cli(settings: Settings, *args: str) -> Any:
    env = {"PGTRAIL_REDIS_PREFIX": settings.redis_prefix}
    return runner.invoke(
        app,
        ["--dsn", settings.dsn, "--redis-url", settings.redis_url or "off", *args],
        env=env,
    )


def llm(
    agent: str, cost: str | None, *, outcome: str = "llm_valid_execution", **extra: Any
) -> None:
    pgtrail.log_llm_execution(
        agent_type=agent,
        model=extra.pop("model", "claude-sonnet-4-20250514"),
        provider="anthropic",
        event_type=outcome,
        input_tokens=1000,
        output_tokens=200,
        processing_time_ms=1500,
        total_cost=None if cost is None else float(cost),
        **extra,
    )


def write_nested_execution(trail: Trail) -> uuid.UUID:
    """001 Main > 202 Agent > 101 LLM > 110 Retry (3 levels below the root), and 301 Selling."""
    with trail.execution("001 Main", user_id="57", session_id="s-1", tenant_id="acme") as ex:
        pgtrail.log_user_journey("user_message_received", {"text_length": 120})
        with ex.process("202 Agent - Coaching"):
            pgtrail.log_agent_execution(
                Handoff(from_agent="router", to_agent="coaching", reason="intent:coaching"),
                agent_type="router",
            )
            with ex.process("101 AI Execute LLM"):
                llm("coaching", "0.25")
                with ex.process("110 Retry with larger model"):
                    llm("coaching", "0.5", outcome="llm_timeout", model="claude-opus-4-1")
            pgtrail.log_agent_execution(
                AgentDecision(decisions={"coaching_quality": {"intensity_level": "balanced"}}),
                agent_type="coaching",
                duration_ms=120,
            )
        with ex.process("301 Selling process"):
            llm("selling", "1.0")
            llm("selling", None, model="house-model-without-a-price")
            pgtrail.log_agent_execution(
                ToolCall(tool="crm.lookup", permission="allowed", latency_ms=40),
                agent_type="selling",
            )
    return ex.execution_id


def by_name(root: ProcessNode) -> dict[str, ProcessNode]:
    return {node.name: node for node in root.walk()}


def test_trace_nests_processes_and_files_each_event_under_its_process(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail:
        execution_id = write_nested_execution(trail)

    trace = load_trace(settings, execution_id)

    assert trace.finished and trace.status == "success" and trace.workflow == "001 Main"
    assert (trace.user_id, trace.session_id, trace.tenant_id) == ("57", "s-1", "acme")
    nodes = by_name(trace.root)
    assert [(n.name, n.nesting_level) for n in trace.root.walk()] == [
        ("001 Main", 0),
        ("202 Agent - Coaching", 1),
        ("101 AI Execute LLM", 2),
        ("110 Retry with larger model", 3),
        ("301 Selling process", 1),
    ]
    assert all(n.status == "success" and n.duration_ms is not None for n in trace.root.walk())
    assert [e.event_type for e in nodes["001 Main"].events if e.kind == "journey"] == [
        "user_message_received"
    ]
    agent = nodes["202 Agent - Coaching"]
    assert [(e.kind, e.event_type) for e in agent.events if e.kind == "agent"] == [
        ("agent", "handoff"),
        ("agent", "agent_decision"),
    ]
    assert [c.cost for c in nodes["101 AI Execute LLM"].events if isinstance(c, TracedLlmCall)] == [
        Decimal("0.25")
    ]
    retry = [c for c in nodes["110 Retry with larger model"].events if isinstance(c, TracedLlmCall)]
    assert [(c.model, c.outcome, c.cost) for c in retry] == [
        ("claude-opus-4-1", "llm_timeout", Decimal("0.5"))
    ]
    assert [e.event_type for e in nodes["301 Selling process"].events] == [
        "llm_valid_execution",
        "llm_valid_execution",
        "tool_call",
    ]


def test_trace_rolls_cost_up_every_subtree_to_the_root(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail:
        execution_id = write_nested_execution(trail)

    nodes = by_name(load_trace(settings, execution_id).root)

    expected = {  # (own cost, subtree cost, subtree calls, unpriced calls below)
        "110 Retry with larger model": ("0.5", "0.5", 1, 0),
        "101 AI Execute LLM": ("0.25", "0.75", 2, 0),
        "202 Agent - Coaching": ("0", "0.75", 2, 0),
        "301 Selling process": ("1.0", "1.0", 2, 1),
        "001 Main": ("0", "1.75", 4, 1),
    }
    for name, (own, subtree, calls, unpriced) in expected.items():
        node = nodes[name]
        assert (node.cost, node.subtree_cost, node.subtree_llm_calls, node.unpriced_calls) == (
            Decimal(own),
            Decimal(subtree),
            calls,
            unpriced,
        ), name


def test_trace_command_prints_the_tree_with_costs_outcomes_and_decisions(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with Trail(settings, sync=True) as trail:
        execution_id = write_nested_execution(trail)

    result = cli(settings, "trace", str(execution_id))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(execution_id) in out
    assert "$1.75 total (4 LLM calls, 1 unpriced)" in out
    assert "202 Agent - Coaching" in out and "$0.75 subtree (2 LLM calls)" in out
    assert "101 AI Execute LLM" in out and "own $0.25" in out
    assert "claude-opus-4-1 (coaching)" in out and "timeout" in out
    assert "1,000 in / 200 out tok" in out
    assert "router → coaching (intent:coaching)" in out
    assert "coaching_quality.intensity_level=balanced" in out
    assert "tool=crm.lookup" in out
    lines = out.splitlines()
    retry = next(i for i, line in enumerate(lines) if "110 Retry" in line)
    assert "claude-opus-4-1" in lines[retry + 1]  # the call sits under its own process


def test_trace_json_is_the_same_tree_with_exact_costs(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail:
        execution_id = write_nested_execution(trail)

    result = cli(settings, "trace", str(execution_id), "--format", "json")

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout, parse_float=Decimal)
    assert doc["execution_id"] == str(execution_id) and doc["state"] == "finished"
    assert doc["total_cost"] == Decimal("1.75") and doc["llm_calls"] == 4
    agent = doc["root"]["children"][0]
    assert agent["name"] == "202 Agent - Coaching" and agent["subtree_cost"] == Decimal("0.75")
    leaf = agent["children"][0]["children"][0]
    assert leaf["name"] == "110 Retry with larger model" and leaf["nesting_level"] == 3
    assert [(e["kind"], e["outcome"], e["cost"]) for e in leaf["events"]] == [
        ("llm", "llm_timeout", Decimal("0.5"))
    ]
    decision = agent["events"][1]
    assert decision["event_type"] == "agent_decision" and decision["duration_ms"] == 120
    dt.datetime.fromisoformat(doc["started_at"])


def test_an_execution_still_running_shows_its_events_and_the_processes_redis_knows(
    settings: Settings,
) -> None:
    with (
        Trail(settings, sync=True) as trail,
        trail.execution("001 Main", user_id="57", session_id="s-1") as ex,
    ):
        with ex.process("101 AI Execute LLM"):
            llm("coaching", "0.25")
        with ex.process("301 Selling process"):
            llm("selling", "0.5")
            trail.flush()
            trace = load_trace(settings, ex.execution_id)
            result = cli(settings, "trace", str(ex.execution_id))

    assert not trace.finished and trace.state == "open" and trace.workflow == "001 Main"
    nodes = by_name(trace.root)
    assert nodes["101 AI Execute LLM"].recorded and nodes["101 AI Execute LLM"].cost == Decimal(
        "0.25"
    )
    running = [n for n in trace.root.children if not n.recorded]
    assert len(running) == 1 and running[0].cost == Decimal("0.5")
    assert trace.total_cost == Decimal("0.75")
    assert result.exit_code == 0, result.output
    assert "still open" in result.stdout


def test_unknown_and_malformed_execution_ids_get_a_clear_message(settings: Settings) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError):
        load_trace(settings, missing)

    unknown = cli(settings, "trace", str(missing))
    assert unknown.exit_code == 1
    assert f"no execution {missing}" in unknown.stderr and "Traceback" not in unknown.output

    malformed = cli(settings, "trace", "not-a-uuid")
    assert malformed.exit_code == 1
    assert "'not-a-uuid' is not an execution id" in malformed.stderr


def test_trace_scoped_to_the_execution_s_tenant_still_finds_it(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail:
        execution_id = write_nested_execution(trail)

    result = cli(settings, "trace", str(execution_id), "--tenant", "acme", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tenant_id"] == "acme"


# --------------------------------------------------------------------------- journey


def turn(trail: Trail, clock: Clock, session: str, cost: str, *, handoff: bool = False) -> None:
    with trail.execution("001 Main", user_id="57", session_id=session, tenant_id="acme") as ex:
        pgtrail.log_user_journey("user_message_received", {"text_length": 80})
        if handoff:
            pgtrail.log_agent_execution(
                Handoff(from_agent="router", to_agent="selling", reason="intent:buy"),
                agent_type="router",
            )
        clock.tick(seconds=2)
        with ex.process("101 AI Execute LLM"):
            llm("coaching", cost)
        clock.tick(seconds=1)
        pgtrail.log_user_journey("user_message_sent", {"agent": "coaching"})
    clock.tick(minutes=5)


def write_three_day_journey(settings: Settings) -> tuple[Clock, dt.datetime]:
    """User 57: day 1 session A (2 turns); day 2 session A again, then B, abandoned;
    day 4 session C. Someone else's execution on day 2."""
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    clock = Clock(start)
    with Trail(settings, sync=True, clock=clock) as trail:
        turn(trail, clock, "A", "0.10")
        turn(trail, clock, "A", "0.20", handoff=True)
        clock.now = start + dt.timedelta(days=1)
        turn(trail, clock, "A", "0.30")
        clock.tick(hours=3)
        turn(trail, clock, "B", "0.40")
        with trail.execution("909 Session timeout", user_id="57", session_id="B") as ex:
            pgtrail.log_user_journey("session_abandoned", {"turns": 1})
            ex.abandon("idle")
        with trail.execution("001 Main", user_id="58", session_id="Z"):
            llm("coaching", "9.99")
        clock.now = start + dt.timedelta(days=3)
        turn(trail, clock, "C", "0.05")
    return clock, start


def test_journey_groups_executions_by_day_and_session(settings: Settings) -> None:
    _, start = write_three_day_journey(settings)

    journey = load_journey(
        settings, "57", start - dt.timedelta(hours=1), start + dt.timedelta(days=4)
    )

    days = [(d.day, [(s.session_id, len(s.executions)) for s in d.sessions]) for d in journey.days]
    assert days == [
        (start.date(), [("A", 2)]),
        ((start + dt.timedelta(days=1)).date(), [("A", 1), ("B", 2)]),
        ((start + dt.timedelta(days=3)).date(), [("C", 1)]),
    ]
    day2 = journey.days[1]
    assert [s.continued for s in day2.sessions] == [True, False]
    assert [s.abandoned for s in day2.sessions] == [False, True]
    assert [s.turns for s in journey.days[0].sessions] == [2]
    assert journey.cost == Decimal("1.05") and journey.llm_calls == 5
    assert journey.session_ids == ["A", "B", "C"]
    first_a = journey.days[0].sessions[0].executions[1]
    assert [h.data["to_agent"] for h in first_a.handoffs] == ["selling"]
    assert [e.event_type for e in first_a.events] == [
        "user_message_received",
        "handoff",
        "user_message_sent",
    ]
    assert all(x.duration_ms is not None and x.duration_ms >= 3000 for x in journey.executions[:2])


def test_journey_command_prints_a_timeline_and_json(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    _, start = write_three_day_journey(settings)
    since = (start - dt.timedelta(hours=1)).isoformat()

    timeline = cli(settings, "journey", "57", "--since", since)
    assert timeline.exit_code == 0, timeline.output
    out = timeline.stdout
    assert "3 days · 3 sessions · 6 executions · $1.05 total (5 LLM calls)" in out
    for day in (0, 1, 3):
        assert f"{(start + dt.timedelta(days=day)).date():%Y-%m-%d}" in out
    assert "session A · continued from an earlier day" in out
    assert "909 Session timeout · abandoned" in out
    assert "journey session_abandoned · turns=1" in out
    assert "router → selling (intent:buy)" in out
    assert "9.99" not in out  # another user's execution

    as_json = cli(settings, "journey", "57", "--since", since, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout, parse_float=Decimal)
    assert (doc["executions"], doc["sessions"], doc["cost"]) == (6, 3, Decimal("1.05"))
    assert [len(d["sessions"]) for d in doc["days"]] == [1, 2, 1]
    session_b = doc["days"][1]["sessions"][1]
    assert session_b["abandoned"] is True
    assert [x["status"] for x in session_b["executions"]] == ["success", "abandoned"]


def test_journey_window_and_unknown_users(settings: Settings) -> None:
    _, start = write_three_day_journey(settings)

    later = cli(settings, "journey", "57", "--since", (start + dt.timedelta(days=2)).isoformat())
    assert later.exit_code == 0, later.output
    assert "1 day · 1 session · 1 execution" in later.stdout

    nobody = cli(settings, "journey", "nobody", "--since", "30d")
    assert nobody.exit_code == 1
    assert "no executions or journey events for user 'nobody'" in nobody.stderr

    bad = cli(settings, "journey", "57", "--since", "last tuesday")
    assert bad.exit_code == 2
    assert "'last tuesday' is not a valid timestamptz" in bad.output


def test_journey_finds_a_user_whose_id_the_writer_hashed(settings: Settings) -> None:
    hashed = settings.model_copy(update={"user_hmac_key": "k3y"})
    with (
        Trail(hashed, sync=True) as trail,
        trail.execution("001 Main", user_id="57", session_id="s"),
    ):
        pgtrail.log_user_journey("user_message_received", {})

    journey = load_journey(
        hashed,
        "57",
        dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )

    assert journey.stored_user_id.startswith("u_") and len(journey.executions) == 1
