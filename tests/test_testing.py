"""pgtrail.testing: what a recorder holds is what PostgreSQL stores, and it needs neither
PostgreSQL nor Redis.

Decided by effect: the same workload, with the same clock and execution id, is run through
a real client into the test database and through a recorder, and the rows are compared
column by column; a recorder given the test database's DSN leaves its tables empty.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg

import pgtrail
from pgtrail import Trail, testing
from pgtrail.config import Settings
from pgtrail.tables import AGENT, COLUMNS, EXECUTION, JOURNEY, LLM, PROMPT
from pgtrail.writer.redact import hash_user_id

EXECUTION_ID = uuid.UUID("01a250ce-0000-7000-8000-000000000001")
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
# Made by the writer at random: compared by shape, not value.
RANDOM_COLUMNS = {"event_id", "span_id"}


def ticking() -> Callable[[], dt.datetime]:
    counter = itertools.count()
    return lambda: T0 + dt.timedelta(milliseconds=next(counter))


def workload(trail: Trail) -> None:
    """A small agent run: two processes, priced model calls, an agent decision, events."""
    with trail.execution(
        "001 Main",
        user_id="u-57",
        tenant_id="acme",
        session_id="s-1",
        context={"feature": "coaching", "tier": "pro"},
        execution_id=EXECUTION_ID,
    ) as ex:
        pgtrail.log_user_journey("user_message_received", {"text_length": 12, "lang": "es"})
        with ex.process("101 Route"):
            pgtrail.log_agent_execution(
                pgtrail.AgentDecision(decisions={"route": "coaching", "why": "asked for a plan"}),
                agent_type="router",
            )
        with ex.process("201 Coach"):
            pgtrail.log_llm_execution(
                agent_type="coaching",
                model="claude-sonnet-4-20250514",
                input_tokens=1200,
                output_tokens=300,
                input_cost=0.0036,
                output_cost=0.0045,
                total_cost=0.0081,
                prompt="You are a coach.\tPlan a week.",
                payload={"response": "Monday: rest\nTuesday: run"},
            )
        pgtrail.log_user_journey("user_message_sent", {"credits_used": 1})


def stored_rows(dsn: str, table: str) -> list[dict[str, Any]]:
    names = [name for name, _ in COLUMNS[table]]
    order = "created_at, event_id" if table != PROMPT else "prompt_hash"
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}")
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in RANDOM_COLUMNS}
    for key in RANDOM_COLUMNS & row.keys():
        out[key] = type(row[key])  # present, of the same type
    if isinstance(row.get("processes_executed"), list):
        out["processes_executed"] = [
            {k: v for k, v in p.items() if k not in ("span_id", "parent_span_id")}
            for p in row["processes_executed"]
        ]
    return out


def test_what_a_recorder_holds_is_what_postgresql_stores(settings: Settings) -> None:
    with Trail(settings, sync=True, clock=ticking(), redis_url=None) as trail:
        workload(trail)
        assert trail.flush(30)
    with testing.record(clock=ticking()) as recorder:
        workload(recorder.trail)
        recorded = {table: recorder.rows(table) for table in COLUMNS}
    for table in (EXECUTION, JOURNEY, AGENT, LLM, PROMPT):
        stored = stored_rows(settings.dsn, table)
        assert stored, table
        ordered = sorted(recorded[table], key=lambda r: (r.get("created_at"), str(r)))
        assert [comparable(r) for r in ordered] == [comparable(r) for r in stored], table


def test_a_recorder_writes_nothing_to_postgresql_nor_to_its_spool(settings: Settings) -> None:
    with testing.record(settings) as recorder:
        workload(recorder.trail)
        assert len(recorder.llm_calls) == 1
        assert len(recorder.journey_events) == 2
        assert recorder.trail.stats.spooled == 0
        spool = recorder.trail.settings.spool_dir
        assert not any(spool.iterdir()) if spool.exists() else True
    for table in COLUMNS:
        assert stored_rows(settings.dsn, table) == [], table


def test_rows_carry_python_values_and_the_executions_correlation() -> None:
    with testing.record(clock=ticking()) as recorder:
        workload(recorder.trail)
        (execution,) = recorder.executions
        (call,) = recorder.llm_calls
        (decision,) = recorder.agent_events
        prompts = recorder.prompts
    assert execution["execution_id"] == call["execution_id"] == EXECUTION_ID
    assert [p["name"] for p in execution["processes_executed"]] == [
        "001 Main",
        "101 Route",
        "201 Coach",
    ]
    assert execution["context"] == {"feature": "coaching", "tier": "pro"}
    assert execution["created_at"] == T0
    assert call["total_cost"] == Decimal("0.0081") and call["input_tokens"] == 1200
    assert call["payload"] == {"response": "Monday: rest\nTuesday: run"}
    assert prompts[call["prompt_hash"]] == "You are a coach.\tPlan a week."
    assert decision["particular_data"]["agent_decisions"]["route"] == "coaching"
    assert decision["span_id"] == execution["processes_executed"][1]["span_id"]


def test_redaction_and_the_user_pseudonym_apply_as_in_production() -> None:
    with testing.record(redact=True, user_hmac_key="k") as recorder:
        with recorder.trail.execution("001 Main", user_id="ana@example.com"):
            pgtrail.log_user_journey("signup", {"email": "ana@example.com", "password": "pw1"})
        (event,) = recorder.journey_events
        (execution,) = recorder.executions
    text = json.dumps([event, execution], default=str)
    assert "ana@example.com" not in text and "pw1" not in text
    assert event["user_id"] == execution["user_id"] == hash_user_id("ana@example.com", "k")


def test_clear_forgets_what_was_recorded() -> None:
    with testing.record() as recorder:
        workload(recorder.trail)
        recorder.clear()
        assert recorder.executions == [] and recorder.prompts == {}
        with recorder.trail.execution("002 Next"):
            pass
        assert [e["workflow"] for e in recorder.executions] == ["002 Next"]
