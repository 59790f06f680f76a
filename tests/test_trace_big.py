"""``pgtrail trace`` on big executions: the limits hide exactly what they say they hide.

Executions are COPYed straight into the log tables with a shape the test chooses, so every
count a limit reports is checked against the rows in PostgreSQL, not against pgtrail.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

import pgtrail
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops import partitions
from pgtrail.read import reports
from pgtrail.read.render import write_trace
from pgtrail.read.trace import load_trace
from pgtrail.read.trace_view import TraceLimits, view_trace
from pgtrail.tables import AGENT, COLUMNS, EXECUTION, LLM

runner = CliRunner()
START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Proc:
    """One process of a generated execution."""

    span_id: str
    parent: str | None
    name: str
    failed: bool = False


@dataclass(frozen=True)
class Call:
    """One model call of a generated execution."""

    span_id: str
    cost: Decimal | None
    failed: bool = False


def cli(settings: Settings, *args: str) -> Any:
    return runner.invoke(
        app, ["--dsn", settings.dsn, "--redis-url", "off", *args], env={"COLUMNS": "200"}
    )


def trace_json(settings: Settings, execution_id: uuid.UUID, *args: str) -> dict[str, Any]:
    result = cli(settings, "trace", str(execution_id), "--format", "json", *args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout, parse_float=Decimal)
    return doc


def wide_tree(children: int, steps: int) -> list[Proc]:
    """A root, ``children`` agents under it and ``steps`` steps under each; every 7th step
    failed."""
    procs = [Proc("root", None, "001 Root")]
    for a in range(children):
        procs.append(Proc(f"a{a:04d}", "root", f"202 Agent {a}"))
        procs += [
            Proc(f"a{a:04d}s{s}", f"a{a:04d}", f"301 Step {s}", failed=(a * steps + s) % 7 == 0)
            for s in range(steps)
        ]
    return procs


def calls_on(procs: list[Proc], per_process: int = 1) -> list[Call]:
    """``per_process`` calls on every process but the root; some failed, some unpriced."""
    calls: list[Call] = []
    for index, proc in enumerate(p for p in procs if p.parent is not None):
        for k in range(per_process):
            n = index * per_process + k
            cost = None if n % 13 == 0 else Decimal("0.001") * (1 + n % 9)
            calls.append(Call(proc.span_id, cost, failed=n % 11 == 0))
    return calls


def write_execution(
    settings: Settings, procs: list[Proc], calls: list[Call], *, agent_events_on: str | None = None
) -> uuid.UUID:
    """COPYs one finished execution: its row, its calls (one ms apart, in list order) and
    three agent events on ``agent_events_on``."""
    execution_id = uuid.uuid4()
    levels: dict[str | None, int] = {None: -1}
    records = []
    for i, proc in enumerate(procs):
        levels[proc.span_id] = levels[proc.parent] + 1
        records.append(
            {
                "span_id": proc.span_id,
                "parent_span_id": proc.parent,
                "name": proc.name,
                "nesting_level": levels[proc.span_id],
                "started_at": (START + dt.timedelta(milliseconds=i)).isoformat(),
                "duration_ms": 10 + i,
                "status": "error" if proc.failed else "success",
                "error": "step failed" if proc.failed else None,
            }
        )
    common = {"tenant_id": "acme", "user_id": "u1", "session_id": "s1"}
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        partitions.ensure(conn, START.date(), START.date() + dt.timedelta(days=1))
        cur = conn.cursor()
        _copy(
            cur,
            EXECUTION,
            [
                {
                    **common,
                    "event_id": uuid.uuid4(),
                    "execution_id": execution_id,
                    "created_at": START,
                    "span_id": procs[0].span_id,
                    "event_type": "execution_finalized",
                    "particular_data": Jsonb({}),
                    "workflow": procs[0].name,
                    "status": "success",
                    "processes_executed": Jsonb(records),
                    "context": Jsonb({}),
                    "finalized_at": START + dt.timedelta(minutes=5),
                    "duration_ms": 300_000,
                }
            ],
        )
        _copy(
            cur,
            LLM,
            [
                {
                    **common,
                    "event_id": uuid.uuid4(),
                    "execution_id": execution_id,
                    "created_at": START + dt.timedelta(milliseconds=n),
                    "span_id": call.span_id,
                    "event_type": "llm_error" if call.failed else "llm_valid_execution",
                    "particular_data": Jsonb({}),
                    "agent_type": "coaching",
                    "model_target": "claude-sonnet-4-20250514",
                    "input_tokens": 100,
                    "output_tokens": 20,
                    "total_cost": call.cost,
                }
                for n, call in enumerate(calls)
            ],
        )
        if agent_events_on is not None:
            _copy(
                cur,
                AGENT,
                [
                    {
                        **common,
                        "event_id": uuid.uuid4(),
                        "execution_id": execution_id,
                        "created_at": START + dt.timedelta(seconds=k),
                        "span_id": agent_events_on,
                        "event_type": "tool_call",
                        "particular_data": Jsonb({"tool": "search"}),
                        "agent_type": "coaching",
                    }
                    for k in range(3)
                ],
            )
    return execution_id


def _copy(cur: psycopg.Cursor[Any], table: str, rows: list[dict[str, Any]]) -> None:
    columns = [name for name, _ in COLUMNS[table]]
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row.get(c) for c in columns])


def below(procs: list[Proc], spans: list[str]) -> list[str]:
    """``spans`` and every span under them, from the generated shape."""
    kids: dict[str | None, list[str]] = {}
    for proc in procs:
        kids.setdefault(proc.parent, []).append(proc.span_id)
    found, todo = [], list(spans)
    while todo:
        span = todo.pop()
        found.append(span)
        todo += kids.get(span, [])
    return found


def stored_calls(settings: Settings, execution_id: uuid.UUID, spans: list[str]) -> dict[str, Any]:
    """What PostgreSQL holds of the execution's calls in ``spans``."""
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE event_type <> 'llm_valid_execution'),
                   count(*) FILTER (WHERE total_cost IS NULL),
                   coalesce(sum(total_cost), 0)
            FROM logs_llm_execution
            WHERE execution_id = %s AND span_id = ANY(%s)
            """,
            (execution_id, spans),
        ).fetchone()
    assert row is not None
    return {"llm_calls": row[0], "failed_llm_calls": row[1], "unpriced": row[2], "cost": row[3]}


def stored_events(settings: Settings, execution_id: uuid.UUID) -> int:
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM logs_llm_execution WHERE execution_id = %(x)s)"
            " + (SELECT count(*) FROM logs_agent_execution WHERE execution_id = %(x)s)"
            " + (SELECT count(*) FROM logs_user_journey WHERE execution_id = %(x)s)",
            {"x": execution_id},
        ).fetchone()
    assert row is not None
    return int(row[0])


def nodes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found, todo = [], [doc["root"]]
    while todo:
        node = todo.pop()
        found.append(node)
        todo += node["children"]
    return found


# --------------------------------------------------------------------------- small executions


def test_a_small_execution_prints_in_full_and_the_same_as_with_every_limit_lifted(
    settings: Settings,
) -> None:
    with (
        Trail(settings, sync=True) as trail,
        trail.execution("001 Main", user_id="57", session_id="s-1") as ex,
    ):
        pgtrail.log_user_journey("user_message_received", {"text_length": 120})
        with ex.process("202 Agent"), ex.process("101 AI Execute LLM"):
            pgtrail.log_llm_execution(
                agent_type="coaching", model="m", provider="p", input_tokens=10, total_cost=0.5
            )
        with ex.process("301 Selling process"):
            pgtrail.log_llm_execution(agent_type="selling", model="m", provider="p")

    default = cli(settings, "trace", str(ex.execution_id))
    everything = cli(settings, "trace", str(ex.execution_id), "--all")

    assert default.exit_code == 0, default.output
    assert default.stdout == everything.stdout
    assert "hidden" not in default.stdout and "not shown" not in default.stdout
    assert "101 AI Execute LLM" in default.stdout and "$0.50 total (2 LLM calls, 1 unpriced)" in (
        default.stdout
    )
    doc = trace_json(settings, ex.execution_id)
    assert doc["complete"] is True and doc["hidden"] == {"processes": 0, "events": 0}
    assert doc["shown"] == {"processes": 4, "events": 3}
    assert all(n["hidden_children"] is None and n["hidden_events"] is None for n in nodes(doc))


# --------------------------------------------------------------------------- breadth


def test_breadth_hides_the_later_children_and_counts_them_as_the_database_does(
    settings: Settings,
) -> None:
    procs = wide_tree(children=120, steps=2)
    execution_id = write_execution(settings, procs, calls_on(procs))

    doc = trace_json(settings, execution_id, "--breadth", "50")

    root = doc["root"]
    assert [c["span_id"] for c in root["children"]] == [f"a{a:04d}" for a in range(50)]
    hidden = root["hidden_children"]
    late = [f"a{a:04d}" for a in range(50, 120)]
    assert hidden["cut"] == "breadth" and hidden["count"] == 70 and hidden["span_ids"] == late
    spans = below(procs, late)
    expected = stored_calls(settings, execution_id, spans)
    assert hidden["processes"] == len(spans) == 210
    assert hidden["failed_processes"] == sum(p.failed for p in procs if p.span_id in spans)
    assert hidden["llm_calls"] == expected["llm_calls"] == hidden["events"]
    assert hidden["failed_llm_calls"] == expected["failed_llm_calls"]
    assert hidden["unpriced_llm_calls"] == expected["unpriced"]
    assert hidden["cost"] == expected["cost"]
    first_failed = next(p.span_id for p in procs if p.failed and p.span_id in spans)
    assert hidden["first_failed_span_id"] == first_failed

    text = cli(settings, "trace", str(execution_id), "--breadth", "50").stdout
    line = next(line for line in text.splitlines() if "more child processes hidden" in line)
    assert "… 70 more child processes hidden (past --breadth 50): 210 processes (" in line
    assert f"{expected['llm_calls']} LLM calls ({expected['failed_llm_calls']} failed)" in line
    assert "--process root --breadth 120" in line


def test_opening_the_hidden_children_shows_them_all(settings: Settings) -> None:
    procs = wide_tree(children=120, steps=2)
    execution_id = write_execution(settings, procs, calls_on(procs))

    doc = trace_json(settings, execution_id, "--process", "root", "--breadth", "120")

    assert len(doc["root"]["children"]) == 120 and doc["root"]["hidden_children"] is None
    assert doc["complete"] is True


# --------------------------------------------------------------------------- depth


def test_depth_folds_each_process_at_the_limit_and_counts_what_is_below(
    settings: Settings,
) -> None:
    procs = wide_tree(children=4, steps=3)
    execution_id = write_execution(settings, procs, calls_on(procs))

    doc = trace_json(settings, execution_id, "--depth", "1")

    for agent in doc["root"]["children"]:
        hidden = agent["hidden_children"]
        steps = below(procs, [agent["span_id"]])[1:]
        expected = stored_calls(settings, execution_id, steps)
        assert agent["children"] == [] and hidden["cut"] == "depth"
        assert hidden["count"] == 3 and hidden["processes"] == 3
        assert hidden["llm_calls"] == expected["llm_calls"] and hidden["cost"] == expected["cost"]
        assert [e["kind"] for e in agent["events"]] == ["llm"]  # its own call is still shown
    assert doc["hidden"]["processes"] == 12 and doc["shown"]["processes"] == 5

    text = cli(settings, "trace", str(execution_id), "--depth", "1").stdout
    folded = [line for line in text.splitlines() if "deeper than --depth 1" in line]
    assert len(folded) == 4
    assert "… 3 child processes hidden (deeper than --depth 1): 3 processes" in folded[0]
    assert "--process a0000" in folded[0]

    assert trace_json(settings, execution_id, "--depth", "0")["shown"]["processes"] == 1


# --------------------------------------------------------------------------- events


def test_events_limit_keeps_the_first_events_of_a_process_and_counts_the_rest(
    settings: Settings,
) -> None:
    procs = [Proc("root", None, "001 Root"), Proc("batch", "root", "500 Batch")]
    execution_id = write_execution(settings, procs, calls_on(procs, per_process=300))

    doc = trace_json(settings, execution_id, "--events", "10")

    batch = doc["root"]["children"][0]
    assert len(batch["events"]) == 10
    hidden = batch["hidden_events"]
    with psycopg.connect(settings.dsn) as conn:
        rest = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE event_type <> 'llm_valid_execution'),
                   coalesce(sum(total_cost), 0), count(*) FILTER (WHERE total_cost IS NULL)
            FROM (SELECT * FROM logs_llm_execution WHERE execution_id = %s
                  ORDER BY created_at, event_id OFFSET 10) AS later
            """,
            (execution_id,),
        ).fetchone()
    assert rest is not None
    assert (hidden["count"], hidden["failed_llm_calls"], hidden["cost"]) == (290, rest[1], rest[2])
    assert hidden["cut"] == "events" and hidden["unpriced_llm_calls"] == rest[3]
    text = cli(settings, "trace", str(execution_id), "--events", "10").stdout
    assert "… 290 more events hidden (past --events 10): 290 LLM calls" in text
    assert "--process batch --events 300" in text

    none = trace_json(settings, execution_id, "--events", "0")
    assert none["shown"]["events"] == 0 and none["hidden"]["events"] == 300


# --------------------------------------------------------------------------- lines


def test_the_line_limit_fills_the_tree_level_by_level_and_the_totals_add_up(
    settings: Settings,
) -> None:
    procs = wide_tree(children=40, steps=5)
    execution_id = write_execution(
        settings, procs, calls_on(procs, per_process=2), agent_events_on="a0003"
    )

    doc = trace_json(settings, execution_id, "--limit", "100")

    levels: dict[int, list[dict[str, Any]]] = {}
    for node in nodes(doc):
        levels.setdefault(node["nesting_level"], []).append(node)
    assert len(levels[1]) == 40  # the whole first level before any detail
    assert doc["shown"]["processes"] + doc["shown"]["events"] == 100
    assert doc["shown"]["processes"] + doc["hidden"]["processes"] == len(procs)
    events = stored_events(settings, execution_id)
    assert doc["shown"]["events"] + doc["hidden"]["events"] == events
    hidden_processes = sum(
        n["hidden_children"]["processes"] for n in nodes(doc) if n["hidden_children"]
    )
    hidden_events = sum(
        n["hidden_children"]["events"] for n in nodes(doc) if n["hidden_children"]
    ) + sum(n["hidden_events"]["count"] for n in nodes(doc) if n["hidden_events"])
    assert (hidden_processes, hidden_events) == (
        doc["hidden"]["processes"],
        doc["hidden"]["events"],
    )
    assert {n["hidden_children"]["cut"] for n in nodes(doc) if n["hidden_children"]} == {"lines"}

    text = cli(settings, "trace", str(execution_id), "--limit", "100").stdout
    foot = text.splitlines()[-1]
    assert foot == (
        f"shown: {doc['shown']['processes']} of {len(procs)} processes and "
        f"{doc['shown']['events']} of {events} events; --all shows everything"
    )
    assert trace_json(settings, execution_id, "--all")["complete"] is True


# --------------------------------------------------------------------------- subtrees


def test_process_opens_one_subtree_with_the_path_above_it(settings: Settings) -> None:
    procs = wide_tree(children=3, steps=4)
    execution_id = write_execution(settings, procs, calls_on(procs), agent_events_on="a0001s2")

    doc = trace_json(settings, execution_id, "--process", "a0001")

    assert doc["process"] == "a0001" and doc["root"]["span_id"] == "a0001"
    assert doc["path"] == [{"span_id": "root", "name": "001 Root"}]
    assert [c["span_id"] for c in doc["root"]["children"]] == [f"a0001s{s}" for s in range(4)]
    spans = below(procs, ["a0001"])
    expected = stored_calls(settings, execution_id, spans)
    assert doc["root"]["subtree_llm_calls"] == expected["llm_calls"]
    assert doc["root"]["subtree_cost"] == expected["cost"]
    assert doc["shown"] == {"processes": 5, "events": expected["llm_calls"] + 3}
    assert doc["total_cost"] == stored_calls(settings, execution_id, below(procs, ["root"]))["cost"]

    text = cli(settings, "trace", str(execution_id), "--process", "a0001").stdout
    assert "showing process a0001" in text and "under 001 Root" in text
    assert "202 Agent 0" not in text and "301 Step 3" in text

    missing = cli(settings, "trace", str(execution_id), "--process", "nope")
    assert missing.exit_code == 1
    assert "has no process with span id 'nope'" in missing.stderr


# --------------------------------------------------------------------------- any depth


def test_an_execution_thousands_of_levels_deep_prints_whole_and_in_part(
    settings: Settings,
) -> None:
    chain = [Proc("p0", None, "000 Root")] + [
        Proc(f"p{i}", f"p{i - 1}", f"{i:03d} Step") for i in range(1, 3000)
    ]
    execution_id = write_execution(settings, chain, calls_on(chain))

    everything = cli(settings, "trace", str(execution_id), "--all")
    assert everything.exit_code == 0, everything.output
    assert len([line for line in everything.stdout.splitlines() if " Step · " in line]) == 2999
    as_json = cli(settings, "trace", str(execution_id), "--all", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert len(re.findall(r'"subtree_processes": ', as_json.stdout)) == 3000

    doc = trace_json(settings, execution_id)
    deepest = max(nodes(doc), key=lambda n: n["nesting_level"])
    assert deepest["nesting_level"] == 20
    assert deepest["hidden_children"]["processes"] == 3000 - 21
    assert doc["hidden"]["processes"] == 3000 - 21


# --------------------------------------------------------------------------- the saved report


def test_the_execution_tree_report_plans_a_big_execution_below_the_jit_threshold(
    settings: Settings,
) -> None:
    procs = wide_tree(children=1000, steps=9)
    execution_id = write_execution(settings, procs, calls_on(procs))
    report = reports.load_catalog().reports["execution-tree"]
    values = reports.bind_values(report, {"execution_id": str(execution_id)})

    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        threshold = float(conn.execute("SHOW jit_above_cost").fetchone()[0])  # type: ignore[index]
        plan = conn.execute(
            b"EXPLAIN (FORMAT JSON) " + report.driver_sql.encode(), values
        ).fetchone()
    assert plan is not None
    assert plan[0][0]["Plan"]["Total Cost"] < threshold

    result = reports.run_report(settings, report, {"execution_id": str(execution_id)})
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert len(rows) == len(procs)
    agent = next(r for r in rows if r["span_id"] == "a0500")
    expected = stored_calls(settings, execution_id, below(procs, ["a0500"]))
    assert (agent["subtree_calls"], agent["subtree_cost"]) == (
        expected["llm_calls"],
        expected["cost"],
    )


@pytest.mark.parametrize("option", ["--depth", "--breadth", "--limit", "--events"])
def test_limits_refuse_negative_values(settings: Settings, option: str) -> None:
    result = cli(settings, "trace", str(uuid.uuid4()), option, "-1")

    assert result.exit_code == 2
    assert option in result.output


def test_a_terminal_gets_the_same_lines_in_colour(settings: Settings) -> None:
    procs = wide_tree(children=3, steps=2)
    execution_id = write_execution(settings, procs, calls_on(procs))
    view = view_trace(load_trace(settings, execution_id), TraceLimits(breadth=2))

    plain, coloured = io.StringIO(), io.StringIO()
    write_trace(view, plain)
    write_trace(view, coloured, color_system="256")

    assert "\x1b[" not in plain.getvalue() and "\x1b[" in coloured.getvalue()
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured.getvalue()) == plain.getvalue()
    assert "… 1 more child process hidden (past --breadth 2)" in plain.getvalue()
