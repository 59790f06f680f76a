"""Sampling against real PostgreSQL and Redis: every figure stays, only bodies go."""

from __future__ import annotations

import contextvars
import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis

import pgtrail
from dbrows import rows
from pgtrail import ToolCall, Trail
from pgtrail.config import Settings, parse_sample_rates
from pgtrail.errors import ConfigurationError
from pgtrail.writer.sampling import is_sampled_in, sample_fraction

WORKFLOW = "001 Main"
NAMESPACE = uuid.UUID("5d1a0c1e-9a52-4bde-8f39-2f0b8c7f6a10")
LONG_TEXT = "I would like to cancel my subscription because " * 20


def execution_ids(tenant: str, count: int) -> list[uuid.UUID]:
    return [uuid.uuid5(NAMESPACE, f"{tenant}-{i}") for i in range(count)]


def keep_reason_of(i: int) -> str | None:
    """How execution ``i`` of the workload goes wrong, if it does."""
    if i % 7 == 3:
        return "llm_error"
    if i % 11 == 5:
        return "tool_call_error"
    if i % 13 == 8:
        return "execution_error"
    return None


def run_workload(trail: Trail, tenant: str, ids: list[uuid.UUID]) -> None:
    """The same calls, costs and outcomes for every tenant; only the ids differ."""
    for i, execution_id in enumerate(ids):
        reason = keep_reason_of(i)
        try:
            with trail.execution(
                WORKFLOW,
                execution_id=execution_id,
                tenant_id=tenant,
                user_id=f"u{i % 5}",
                context={"feature": "support"},
            ):
                pgtrail.log_user_journey(
                    "user_message_received", {"text": f"hello {i}", "text_length": 7}
                )
                pgtrail.log_llm_execution(
                    model="claude-sonnet-4-20250514",
                    input_tokens=1000 + i,
                    output_tokens=200 + i,
                    processing_time_ms=900 + 10 * i,
                    prompt=f"{tenant} system prompt number {i}",
                    payload={"messages": [{"role": "user", "content": f"hello {i}"}]},
                    data={"reply": LONG_TEXT, "temperature": 0.2},
                )
                pgtrail.log_agent_execution(
                    ToolCall(
                        tool="crm.lookup",
                        args={"customer": f"c{i}"},
                        result={"plan": "pro"},
                        permission="allowed",
                        latency_ms=40 + i,
                        error="crm timed out" if reason == "tool_call_error" else None,
                    ),
                    agent_type="support",
                    duration_ms=45 + i,
                )
                pgtrail.log_llm_execution(
                    model="gpt-4o",
                    event_type="llm_error" if reason == "llm_error" else "llm_valid_execution",
                    input_tokens=500,
                    output_tokens=0 if reason == "llm_error" else 80,
                    input_cost=0.00125 * (i + 1),
                    output_cost=0.0008,
                    processing_time_ms=1500 + i,
                    payload={"completion": f"answer {i}"},
                )
                if reason == "execution_error":
                    raise RuntimeError("downstream service failed")
        except RuntimeError:
            pass


FIGURES = {
    "llm": "SELECT count(*), sum(total_cost), sum(input_cost), sum(output_cost), "
    "sum(input_tokens), sum(output_tokens), sum(processing_time_ms), "
    "count(*) FILTER (WHERE event_type <> 'llm_valid_execution'), count(prompt_hash) "
    "FROM logs_llm_execution WHERE tenant_id = %s",
    "agent": "SELECT count(*), sum((particular_data->>'event_duration_ms')::int), "
    "sum((particular_data->>'latency_ms')::int), count(particular_data->>'error'), "
    "count(*) FILTER (WHERE particular_data->>'tool' = 'crm.lookup') "
    "FROM logs_agent_execution WHERE tenant_id = %s",
    "journey": "SELECT count(*), sum((particular_data->>'text_length')::int) "
    "FROM logs_user_journey WHERE tenant_id = %s",
    "execution": "SELECT count(*), count(*) FILTER (WHERE status = 'error'), "
    "sum(jsonb_array_length(processes_executed)) FROM logs_execution WHERE tenant_id = %s",
}


@pytest.fixture
def sampled_workload(settings: Settings) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The workload stored twice: tenant ``full`` at 100 %, tenant ``sampled`` at 10 %."""
    full, sampled = execution_ids("full", 60), execution_ids("sampled", 60)
    with Trail(settings, sync=True) as trail:
        run_workload(trail, "full", full)
    with Trail(settings, sync=True, sample_rates={WORKFLOW: 0.1}) as trail:
        run_workload(trail, "sampled", sampled)
    return full, sampled


def test_figures_are_identical_at_100_and_at_10_percent(
    settings: Settings, sampled_workload: tuple[list[uuid.UUID], list[uuid.UUID]]
) -> None:
    _, sampled = sampled_workload
    sampled_in = [i for i, e in enumerate(sampled) if is_sampled_in(e, 0.1)]
    sampled_out_clean = [
        i for i in range(len(sampled)) if i not in sampled_in and keep_reason_of(i) is None
    ]
    assert 1 <= len(sampled_in) <= 15 and len(sampled_out_clean) >= 30  # the sample is real
    for table, query in FIGURES.items():
        full_figures = rows(settings.dsn, query, "full")
        assert full_figures == rows(settings.dsn, query, "sampled"), table
        assert full_figures[0][0] > 0, table
    # Inferred costs too: the tokens-only calls were priced in both runs.
    assert rows(
        settings.dsn,
        "SELECT count(*) FROM logs_llm_execution WHERE total_cost IS NULL",
    ) == [(0,)]


def test_sampled_out_executions_drop_bodies_and_errored_ones_keep_them(
    settings: Settings, sampled_workload: tuple[list[uuid.UUID], list[uuid.UUID]]
) -> None:
    _, sampled = sampled_workload
    llm_rows: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
    for execution_id, *row in rows(
        settings.dsn,
        "SELECT execution_id, payload, prompt_hash, particular_data FROM logs_llm_execution "
        "WHERE tenant_id = 'sampled' ORDER BY created_at, model_target",
    ):
        llm_rows.setdefault(execution_id, []).append(tuple(row))
    tools = dict(
        rows(
            settings.dsn,
            "SELECT execution_id, particular_data FROM logs_agent_execution "
            "WHERE tenant_id = 'sampled'",
        )
    )
    journeys = dict(
        rows(
            settings.dsn,
            "SELECT execution_id, particular_data FROM logs_user_journey "
            "WHERE tenant_id = 'sampled'",
        )
    )
    decisions = dict(
        rows(
            settings.dsn,
            "SELECT execution_id, particular_data -> 'sampling' FROM logs_execution "
            "WHERE tenant_id = 'sampled'",
        )
    )
    stored_prompts = {r[0] for r in rows(settings.dsn, "SELECT prompt_hash FROM pgtrail_prompt")}
    for i, execution_id in enumerate(sampled):
        whole = is_sampled_in(execution_id, 0.1) or keep_reason_of(i) is not None
        llm, tool, journey = llm_rows[execution_id], tools[execution_id], journeys[execution_id]
        prompts = int(llm[0][1] in stored_prompts)
        sampling = decisions[execution_id]
        assert len(llm) == 2 and all(prompt_hash for _, prompt_hash, _ in llm[:1])
        assert tool["tool"] == "crm.lookup" and tool["latency_ms"] == 40 + i
        assert journey["text_length"] == 7
        if whole:
            assert all(payload is not None for payload, _, _ in llm), i
            assert llm[0][2]["reply"] == LONG_TEXT
            assert tool["args"] == {"customer": f"c{i}"} and tool["result"] == {"plan": "pro"}
            assert journey["text"] == f"hello {i}"
            assert prompts == 1
            assert not any("_pgtrail_sampled" in data for data in (tool, journey, llm[0][2]))
        else:
            assert [payload for payload, _, _ in llm] == [None, None], i
            assert llm[0][2]["reply"] is None and llm[0][2]["temperature"] == 0.2
            assert llm[0][2]["_pgtrail_sampled"] == {
                "rate": 0.1,
                "dropped": ["prompt", "payload", "reply"],
            }
            assert tool["args"] is None and tool["result"] is None
            assert tool["_pgtrail_sampled"]["dropped"] == ["args", "result"]
            assert journey["text"] is None
            assert journey["_pgtrail_sampled"] == {"rate": 0.1, "dropped": ["text"]}
            assert prompts == 0
        if is_sampled_in(execution_id, 0.1):
            assert sampling == {"rate": 0.1, "sampled_in": True}
        elif whole:
            assert sampling == {
                "rate": 0.1,
                "sampled_in": False,
                "bodies": "kept",
                "kept_because": keep_reason_of(i),
            }
        else:
            assert sampling == {"rate": 0.1, "sampled_in": False, "bodies": "dropped"}


def test_workflows_at_100_percent_are_untouched(settings: Settings) -> None:
    with (
        Trail(settings, sync=True, sample_rates={"other": 0.0}) as trail,
        trail.execution(WORKFLOW) as ex,
    ):
        pgtrail.log_llm_execution(model="gpt-4o", total_cost=0.1, payload={"a": "b"})
    assert rows(
        settings.dsn,
        "SELECT l.payload, e.particular_data FROM logs_llm_execution AS l "
        "JOIN logs_execution AS e USING (execution_id) WHERE execution_id = %s",
        ex.execution_id,
    ) == [({"a": "b"}, {})]


def test_a_call_above_the_cost_threshold_keeps_its_execution_whole(settings: Settings) -> None:
    kept: dict[float, uuid.UUID] = {}
    with Trail(settings, sync=True, default_sample_rate=0.0, sample_keep_cost_usd=0.5) as trail:
        for cost in (0.4, 0.5, 0.5001):
            with trail.execution("classify") as ex:
                pgtrail.log_llm_execution(model="gpt-4o", payload={"c": cost})
                pgtrail.log_llm_execution(model="gpt-4o", total_cost=cost, payload={"c": cost})
            kept[cost] = ex.execution_id
        with trail.execution("classify") as split:  # input + output above the threshold
            pgtrail.log_llm_execution(
                model="gpt-4o", input_cost=0.3, output_cost=0.3, payload={"c": "split"}
            )
    payloads = {
        cost: [
            r[0]
            for r in rows(
                settings.dsn,
                "SELECT payload FROM logs_llm_execution WHERE execution_id = %s "
                "ORDER BY created_at",
                execution_id,
            )
        ]
        for cost, execution_id in kept.items()
    }
    assert payloads[0.4] == [None, None]
    assert payloads[0.5] == [None, None]  # at the threshold is not above it
    assert payloads[0.5001] == [{"c": 0.5001}, {"c": 0.5001}]
    assert rows(
        settings.dsn,
        "SELECT payload FROM logs_llm_execution WHERE execution_id = %s",
        split.execution_id,
    ) == [({"c": "split"},)]
    assert rows(
        settings.dsn,
        "SELECT particular_data -> 'sampling' ->> 'kept_because' FROM logs_execution "
        "WHERE execution_id = %s",
        kept[0.5001],
    ) == [("cost_over_threshold",)]


def test_a_long_execution_keeps_only_its_most_recent_bodies(settings: Settings) -> None:
    with (
        Trail(settings, sync=True, default_sample_rate=0.0, sample_hold_records=5) as trail,
        trail.execution("long agent run") as ex,
    ):
        for step in range(12):
            pgtrail.log_llm_execution(model="gpt-4o", total_cost=0.01, payload={"s": step})
        pgtrail.log_llm_execution(
            model="gpt-4o", event_type="llm_timeout", payload={"s": "timeout"}
        )
    stored = rows(
        settings.dsn,
        "SELECT payload FROM logs_llm_execution WHERE execution_id = %s ORDER BY created_at",
        ex.execution_id,
    )
    assert [r[0] for r in stored] == [None] * 7 + [{"s": s} for s in range(7, 12)] + [
        {"s": "timeout"}
    ]
    assert rows(
        settings.dsn,
        "SELECT particular_data -> 'sampling' FROM logs_execution WHERE execution_id = %s",
        ex.execution_id,
    ) == [
        (
            {
                "rate": 0.0,
                "sampled_in": False,
                "bodies": "kept",
                "kept_because": "llm_timeout",
                "written_without_bodies": 7,
            },
        )
    ]


def test_records_held_longer_than_the_hold_time_are_written_without_bodies(
    settings: Settings,
) -> None:
    now = [dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)]
    with (
        Trail(
            settings, sync=True, clock=lambda: now[0], default_sample_rate=0.0, sample_hold_s=60
        ) as trail,
        trail.execution("slow") as ex,
    ):
        for minute in (0, 0.5, 1.5):
            now[0] = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
            pgtrail.log_llm_execution(model="gpt-4o", payload={"m": minute})
        # Held, nothing written yet, except the record the hold time pushed out.
        trail.flush()
        assert rows(
            settings.dsn,
            "SELECT payload, particular_data ? '_pgtrail_sampled' FROM logs_llm_execution",
        ) == [(None, True)]
        ex.fail("gave up")
    assert [
        r[0]
        for r in rows(
            settings.dsn,
            "SELECT payload FROM logs_llm_execution WHERE execution_id = %s ORDER BY created_at",
            ex.execution_id,
        )
    ] == [None, {"m": 0.5}, {"m": 1.5}]


def test_a_joined_process_follows_the_opener_and_its_failure_keeps_the_whole_execution(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    opener = Trail(settings, sync=True, sample_rates={"checkout": 0.0})
    # The other service samples another workflow only: alone it would keep everything.
    worker = Trail(settings, sync=True, sample_rates={"unrelated": 0.5})
    try:
        with opener.execution("checkout") as clean:
            pgtrail.log_llm_execution(model="gpt-4o", payload={"who": "opener"})
            with worker.join(clean.traceparent()):
                pgtrail.log_llm_execution(model="gpt-4o", payload={"who": "worker"})
        with opener.execution("checkout") as failing:
            pgtrail.log_llm_execution(model="gpt-4o", payload={"who": "opener"})
            with worker.join(failing.traceparent()):
                pgtrail.log_agent_execution(
                    ToolCall(tool="pay", args={"card": "x"}, error="declined")
                )
    finally:
        worker.close()
        opener.close()
    assert rows(
        settings.dsn,
        "SELECT payload FROM logs_llm_execution WHERE execution_id = %s",
        clean.execution_id,
    ) == [(None,), (None,)]
    assert rows(
        settings.dsn,
        "SELECT payload FROM logs_llm_execution WHERE execution_id = %s",
        failing.execution_id,
    ) == [({"who": "opener"},)]
    assert rows(
        settings.dsn,
        "SELECT particular_data -> 'args', particular_data -> 'sampling' "
        "FROM logs_agent_execution WHERE execution_id = %s",
        failing.execution_id,
    ) == [({"card": "x"}, None)]
    assert rows(
        settings.dsn,
        "SELECT particular_data -> 'sampling' ->> 'kept_because' FROM logs_execution "
        "WHERE execution_id = %s",
        failing.execution_id,
    ) == [("tool_call_error",)]
    # The shared decision is removed when the opener finalises; a keep flag outlives it.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.get(f"{redis_prefix}ex:{clean.execution_id}:sampling") is None
        assert client.get(f"{redis_prefix}ex:{failing.execution_id}:sampling") == (
            "keep:0.0:tool_call_error"
        )
    finally:
        client.close()


def test_closing_the_client_writes_held_records_without_bodies(settings: Settings) -> None:
    trail = Trail(settings, sync=True, default_sample_rate=0.0)
    with trail.execution("still running at shutdown"):
        pgtrail.log_llm_execution(model="gpt-4o", total_cost=0.2, payload={"x": 1})
        trail.close()
        assert rows(settings.dsn, "SELECT payload, total_cost FROM logs_llm_execution") == [
            (None, Decimal("0.2"))
        ]


def test_the_decision_depends_on_the_execution_id_alone() -> None:
    ids = [uuid.uuid5(NAMESPACE, str(i)) for i in range(2000)]
    fractions = [sample_fraction(e) for e in ids]
    assert fractions == [sample_fraction(uuid.UUID(str(e))) for e in ids]
    share = sum(is_sampled_in(e, 0.1) for e in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert all(is_sampled_in(e, 1.0) for e in ids) and not any(is_sampled_in(e, 0.0) for e in ids)
    # A higher rate keeps a superset: raising the rate never drops an execution kept before.
    assert {e for e in ids if is_sampled_in(e, 0.1)} <= {e for e in ids if is_sampled_in(e, 0.3)}


def test_sample_rates_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTRAIL_SAMPLE_RATES", "001 Main=0.1, 300 Classify = 0.02 ,*=0.5")
    monkeypatch.setenv("PGTRAIL_SAMPLE_KEEP_COST_USD", "0.75")
    settings = Settings.from_env()
    assert settings.sample_rates == {"001 Main": 0.1, "300 Classify": 0.02}
    assert settings.default_sample_rate == 0.5
    assert settings.sample_keep_cost_usd == 0.75


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("001 Main=1.5", "'001 Main' is '1.5'"),
        ("001 Main=often", "'001 Main' is 'often'"),
        ("001 Main", "must read workflow=rate"),
        ("=0.1", "must read workflow=rate"),
    ],
)
def test_bad_sample_rates_are_refused_with_the_entry_named(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_sample_rates(text)


def test_a_rate_that_workflows_contain_equals_signs_in_still_parses() -> None:
    assert parse_sample_rates("a=b=0.25") == ({"a=b": 0.25}, None)


def test_the_client_holds_at_most_sample_hold_total_records(settings: Settings) -> None:
    with (
        Trail(settings, sync=True, default_sample_rate=0.0, sample_hold_total=3) as trail,
        trail.execution("outer") as outer,
    ):
        for n in range(3):
            pgtrail.log_llm_execution(model="gpt-4o", payload={"outer": n})
        with trail.execution("inner", parent_execution_id=outer.execution_id) as inner:
            # The fourth held record overflows the client: the largest hold is written.
            pgtrail.log_llm_execution(model="gpt-4o", payload={"inner": 0})
            inner.fail("boom")
    stored = rows(
        settings.dsn,
        "SELECT e.workflow, l.payload FROM logs_llm_execution AS l "
        "JOIN logs_execution AS e USING (execution_id) ORDER BY l.created_at",
    )
    assert stored == [("outer", None)] * 3 + [("inner", {"inner": 0})]
    assert rows(
        settings.dsn,
        "SELECT particular_data -> 'sampling' ->> 'written_without_bodies' FROM logs_execution "
        "WHERE execution_id = %s",
        outer.execution_id,
    ) == [("3",)]


def test_a_record_logged_after_its_execution_ended_follows_the_decision(
    settings: Settings,
) -> None:
    with Trail(settings, sync=True, default_sample_rate=0.0) as trail:
        with trail.execution("fire and forget") as ex:
            late = contextvars.copy_context()  # what a worker thread started here would carry
        worker = threading.Thread(
            target=late.run,
            args=(pgtrail.log_llm_execution,),
            kwargs={"model": "gpt-4o", "total_cost": 0.3, "payload": {"late": True}},
        )
        worker.start()
        worker.join()
    assert rows(
        settings.dsn,
        "SELECT payload, total_cost, particular_data -> '_pgtrail_sampled' "
        "FROM logs_llm_execution WHERE execution_id = %s",
        ex.execution_id,
    ) == [(None, Decimal("0.3"), {"rate": 0.0, "dropped": ["payload"]})]
