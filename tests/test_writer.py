"""The writer against real PostgreSQL and Redis: what is logged is what is stored."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest

import pgtrail
from dbrows import one, rows
from pgtrail import AgentDecision, ContextCompression, Handoff, ToolCall, Trail
from pgtrail.config import Settings
from pgtrail.errors import NoActiveExecutionError

SEED_PROMPT = "# ADVANCED SOCIAL COACHING SYSTEM\n" + "Be kind and precise. " * 2000


def seed_execution(trail: Trail) -> uuid.UUID:
    """A coaching-bot execution: 10 processes over 3 nesting levels."""
    with trail.execution(
        "001 Main",
        user_id="57",
        session_id="s-1",
        tenant_id="acme",
        context={"tier": "premium", "language": "es", "feature": "coaching"},
    ) as ex:
        pgtrail.log_user_journey(
            "user_message_received", {"text_length": 120, "is_coaching_scope": True}
        )
        for name in (
            "003 Extract message",
            "014 Process security",
            "005 Process command",
            "301 Selling process",
        ):
            with ex.process(name):
                pass
        with ex.process("202 Agent - Coaching"):
            with ex.process("101 AI Execute LLM"):
                for _ in range(2):
                    pgtrail.log_llm_execution(
                        agent_type="coaching",
                        model="claude-sonnet-4-20250514",
                        provider="anthropic",
                        input_tokens=12570,
                        output_tokens=1568,
                        processing_time_ms=25937,
                        prompt=SEED_PROMPT,
                        prompt_version="v6",
                    )
            pgtrail.log_agent_execution(
                AgentDecision(decisions={"coaching_quality": {"intensity_level": "balanced"}}),
                agent_type="coaching",
                duration_ms=25937,
            )
            with ex.process("021 Send message"), ex.process("022 Record exchange"):
                pgtrail.log_user_journey("user_message_sent_requested", {"role": "system"})
        with ex.process("901 Cleanup User Lock"):
            pass
    return ex.execution_id


def test_a_ten_process_execution_is_stored_exactly_as_logged(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail:
        execution_id = seed_execution(trail)
    dsn = settings.dsn
    workflow, status, processes, context, tenant = one(
        dsn,
        "SELECT workflow, status, processes_executed, context, tenant_id FROM logs_execution "
        "WHERE execution_id = %s",
        execution_id,
    )
    assert (workflow, status, tenant) == ("001 Main", "success", "acme")
    assert context == {"tier": "premium", "language": "es", "feature": "coaching"}
    assert [(p["name"], p["nesting_level"]) for p in processes] == [
        ("001 Main", 0),
        ("003 Extract message", 1),
        ("014 Process security", 1),
        ("005 Process command", 1),
        ("301 Selling process", 1),
        ("202 Agent - Coaching", 1),
        ("101 AI Execute LLM", 2),
        ("021 Send message", 2),
        ("022 Record exchange", 3),
        ("901 Cleanup User Lock", 1),
    ]
    by_name = {p["name"]: p for p in processes}
    assert (
        by_name["101 AI Execute LLM"]["parent_span_id"]
        == by_name["202 Agent - Coaching"]["span_id"]
    )
    assert all(p["status"] == "success" and p["duration_ms"] >= 0 for p in processes)

    llm = rows(
        dsn,
        "SELECT span_id, input_cost, output_cost, total_cost, prompt_hash, "
        "particular_data, user_id, session_id FROM logs_llm_execution",
    )
    assert len(llm) == 2
    span, input_cost, output_cost, total_cost, prompt_hash, data, user, session = llm[0]
    assert span == by_name["101 AI Execute LLM"]["span_id"]
    assert (input_cost, output_cost, total_cost) == (
        Decimal("0.03771"),
        Decimal("0.02352"),
        Decimal("0.06123"),
    )
    assert data == {"workflow": "001 Main", "feature": "coaching"}
    assert (user, session) == ("57", "s-1")
    assert one(
        dsn, "SELECT body_chars FROM pgtrail_prompt WHERE prompt_hash = %s", prompt_hash
    ) == len(SEED_PROMPT)
    assert one(dsn, "SELECT count(*) FROM pgtrail_prompt") == 1

    decision = one(dsn, "SELECT particular_data FROM logs_agent_execution")
    assert decision == {
        "agent_decisions": {"coaching_quality": {"intensity_level": "balanced"}},
        "event_duration_ms": 25937,
    }
    journey = rows(dsn, "SELECT event_type, span_id FROM logs_user_journey ORDER BY created_at")
    assert [j[0] for j in journey] == ["user_message_received", "user_message_sent_requested"]
    assert journey[1][1] == by_name["022 Record exchange"]["span_id"]
    assert journey[0][1] == by_name["001 Main"]["span_id"]


def test_background_flushing_writes_on_flush(settings: Settings) -> None:
    trail = Trail(settings)
    try:
        with trail.execution("bg"):
            for i in range(500):
                pgtrail.log_user_journey("tick", {"i": i})
        assert trail.flush(30)
        assert one(settings.dsn, "SELECT count(*) FROM logs_user_journey") == 500
        assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == 1
    finally:
        trail.close()


def test_flush_waits_for_a_slow_write_without_keeping_the_cpu_busy(settings: Settings) -> None:
    trail = Trail(settings)
    blocker = psycopg.connect(settings.dsn)  # its lock holds the writer's COPY back
    try:
        with trail.execution("warm-up"):
            pgtrail.log_user_journey("tick", {})
        assert trail.flush(30)  # connections open, partitions made
        blocker.execute("LOCK TABLE logs_user_journey IN ACCESS EXCLUSIVE MODE")
        with trail.execution("held"):
            for i in range(100):
                pgtrail.log_user_journey("tick", {"i": i})
        threading.Timer(1.5, blocker.rollback).start()
        began, cpu_before = time.perf_counter(), time.process_time()
        assert trail.flush(30)
        waited, cpu = time.perf_counter() - began, time.process_time() - cpu_before
        assert waited >= 1.0  # it waited for the write...
        assert cpu < 0.25 * waited  # ...asleep
        assert one(settings.dsn, "SELECT count(*) FROM logs_user_journey") == 101
    finally:
        blocker.close()
        trail.close()


def test_unknown_models_store_null_cost_and_are_reported_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pgtrail")
    with Trail(settings, sync=True) as trail, trail.execution("wf"):
        for _ in range(3):
            pgtrail.log_llm_execution(model="homegrown-llm-7b", input_tokens=10, output_tokens=5)
        pgtrail.log_llm_execution(
            model="gpt-4o-mini", input_tokens=1000, output_tokens=1000, cached_input_tokens=400
        )
    costs = rows(settings.dsn, "SELECT model_target, total_cost FROM logs_llm_execution ORDER BY 1")
    assert costs[0] == (
        "gpt-4o-mini",
        Decimal("0.000600") * 1 + Decimal("0.000030") + Decimal("0.00009"),
    )
    assert [c[1] for c in costs[1:]] == [None, None, None]
    assert sum("homegrown-llm-7b" in r.getMessage() for r in caplog.records) == 1


def test_caller_costs_win_and_total_is_summed(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("wf"):
        pgtrail.log_llm_execution(
            model="gpt-4o", input_cost=0.5, output_cost=0.25, input_tokens=1, output_tokens=1
        )
    assert one(settings.dsn, "SELECT total_cost FROM logs_llm_execution") == Decimal("0.75")


def test_typed_agent_events_and_unknown_types(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("wf"):
        pgtrail.log_agent_execution(
            ToolCall(
                tool="crm.close_ticket", args={"id": 8842}, permission="denied", latency_ms=12
            ),
            agent_type="support",
        )
        pgtrail.log_agent_execution(
            ContextCompression(context_management={"user_input": {"compression_score": 0.1}}),
            agent_type="compression",
            duration_ms=3.6,
        )
        pgtrail.log_agent_execution(
            Handoff(from_agent="router", to_agent="coaching"), agent_type="router"
        )
        pgtrail.log_agent_execution(agent_type="x", event_type="mood_check", data={"mood": "ok"})
    stored = dict(
        rows(settings.dsn, "SELECT event_type, particular_data FROM logs_agent_execution")
    )
    assert stored["tool_call"] == {
        "tool": "crm.close_ticket",
        "args": {"id": 8842},
        "permission": "denied",
        "latency_ms": 12,
    }
    assert stored["context_compression"]["event_duration_ms"] == 4
    assert stored["handoff"] == {"from_agent": "router", "to_agent": "coaching"}
    assert stored["mood_check"] == {"mood": "ok"}


def test_logging_outside_an_execution_says_so_and_never_raises(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Trail(settings, sync=True):
        pgtrail.log_user_journey("orphan")
        pgtrail.log_user_journey("orphan")
    assert any("outside any execution" in r.getMessage() for r in caplog.records)


def test_strict_mode_raises_outside_an_execution(settings: Settings) -> None:
    with Trail(settings, sync=True, strict=True), pytest.raises(NoActiveExecutionError):
        pgtrail.log_user_journey("orphan")


def test_strict_mode_still_stores_the_prompt_body_once(settings: Settings) -> None:
    with Trail(settings, sync=True, strict=True) as trail:
        seed_execution(trail)
    assert (
        one(settings.dsn, "SELECT count(*) FROM pgtrail_prompt WHERE body = %s", SEED_PROMPT) == 1
    )
    assert one(settings.dsn, "SELECT count(DISTINCT prompt_hash) FROM logs_llm_execution") == 1


def test_a_prompt_body_blanked_by_payload_retention_is_restored_when_reused(
    settings: Settings,
) -> None:
    with Trail(settings, sync=True) as trail:
        seed_execution(trail)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgtrail_prompt SET body = ''")  # what --keep-payloads does
    with Trail(settings, sync=True) as trail:
        seed_execution(trail)
    assert one(settings.dsn, "SELECT body = %s FROM pgtrail_prompt", SEED_PROMPT) is True


def test_context_follows_await_tasks_and_threads(settings: Settings) -> None:
    async def step(trail: Trail, n: int) -> None:
        with trail.process(f"task {n}"):
            await asyncio.sleep(0.01)
            pgtrail.log_user_journey("in_task", {"n": n})

    async def main(trail: Trail) -> uuid.UUID:
        with trail.execution("async wf") as ex:
            await asyncio.gather(*(step(trail, n) for n in range(3)))
            worker = threading.Thread(target=pgtrail.log_user_journey, args=("in_thread",))
            worker.start()
            worker.join()
        return ex.execution_id

    with Trail(settings, sync=True) as trail:
        execution_id = asyncio.run(main(trail))
    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    spans = {p["name"]: p["span_id"] for p in processes}
    assert sorted(spans) == ["async wf", "task 0", "task 1", "task 2"]
    events = rows(
        settings.dsn,
        "SELECT event_type, span_id, particular_data, execution_id FROM logs_user_journey",
    )
    assert len(events) == 4 and all(e[3] == execution_id for e in events)
    for event_type, span, data, _ in events:
        if event_type == "in_task":
            assert span == spans[f"task {data['n']}"]


def test_process_decorator_on_sync_and_async_functions(settings: Settings) -> None:
    trail = Trail(settings, sync=True)

    @trail.process("sync step")
    def work(x: int) -> int:
        return x * 2

    @trail.process("async step")
    async def awork(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    with trail.execution("decorated"):
        assert work(2) == 4
        assert asyncio.run(awork(2)) == 3
        with pytest.raises(ZeroDivisionError):
            trail.process("failing")(lambda: 1 / 0)()
    trail.close()
    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    assert [(p["name"], p["status"]) for p in processes] == [
        ("decorated", "success"),
        ("sync step", "success"),
        ("async step", "success"),
        ("failing", "error"),
    ]


def test_an_exception_marks_the_execution_as_error_and_still_writes_it(settings: Settings) -> None:
    trail = Trail(settings, sync=True)
    with pytest.raises(RuntimeError), trail.execution("boom"):
        raise RuntimeError("provider exploded")
    trail.close()
    status, error = one(settings.dsn, "SELECT status, error FROM logs_execution")
    assert (status, error) == ("error", "RuntimeError: provider exploded")


def test_simulated_clock_sets_every_timestamp(settings: Settings) -> None:
    now = [dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)]
    trail = Trail(settings, sync=True, clock=lambda: now[0])
    with trail.execution("sim") as ex, ex.process("slow"):
        now[0] += dt.timedelta(seconds=27)
        pgtrail.log_user_journey("late")
    trail.close()
    created, duration, processes = one(
        settings.dsn, "SELECT created_at, duration_ms, processes_executed FROM logs_execution"
    )
    assert created == dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    assert duration == 27000
    assert processes[1]["duration_ms"] == 27000
    assert one(settings.dsn, "SELECT created_at FROM logs_user_journey") == now[0]
    # the partition for that day was created, nothing waits in DEFAULT
    assert one(settings.dsn, "SELECT count(*) FROM logs_user_journey_default") == 0
