"""Trace assembly: spans from several requests and services become one execution, once."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from typer.testing import CliRunner

from dbrows import one, rows
from otlp_builders import otel_span
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.errors import AssemblyUnavailableError
from pgtrail.otlp.assemble import TraceAssembler, record_event_id
from pgtrail.otlp.exporter import PgtrailSpanExporter
from pgtrail.otlp.mapping import map_span
from pgtrail.otlp.spans import STATUS_ERROR, OtlpSpan
from pgtrail.trail import Trail

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = time.time_ns() - 60 * 1_000_000_000  # a minute ago, so every span has ended
IDS = {
    "root": "00f067aa0ba902b7",
    "triage": "1111111111111111",
    "chat": "2222222222222222",
    "tool": "3333333333333333",
    "handoff": "4444444444444444",
    "billing": "5555555555555555",
    "chat2": "6666666666666666",
}


def span(
    key: str,
    name: str,
    parent: str | None,
    start_ms: int,
    end_ms: int,
    attributes: dict[str, Any] | None = None,
    *,
    service: str = "gateway",
    trace_id: str = TRACE,
    status_code: int = 0,
    status_message: str = "",
) -> OtlpSpan:
    return otel_span(
        name,
        attributes or {},
        trace_id=trace_id,
        span_id=IDS[key],
        parent=IDS[parent] if parent else None,
        start=T0 + start_ms * 1_000_000,
        end=T0 + end_ms * 1_000_000,
        status=status_code,
        message=status_message,
        resource={"service.name": service},
        scope="test",
    )


def support_trace(trace_id: str = TRACE) -> dict[str, OtlpSpan]:
    """A triage agent calls a model and a tool, then hands off to a billing agent."""
    return {
        "root": span(
            "root",
            "invoke_workflow support",
            None,
            0,
            5000,
            {
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": "support",
                "user.id": "u-42",
                "tenant.id": "acme",
                "gen_ai.conversation.id": "conv-7",
            },
            trace_id=trace_id,
        ),
        "triage": span(
            "triage",
            "invoke_agent triage",
            "root",
            10,
            3000,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
            trace_id=trace_id,
        ),
        "chat": span(
            "chat",
            "chat gpt-4o",
            "triage",
            20,
            1200,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 80,
            },
            service="llm-proxy",
            trace_id=trace_id,
        ),
        "tool": span(
            "tool",
            "execute_tool lookup_order",
            "triage",
            1300,
            1500,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call_1",
            },
            service="tools",
            trace_id=trace_id,
        ),
        "handoff": span(
            "handoff",
            "handoff",
            "triage",
            2900,
            2950,
            {
                "gen_ai.operation.name": "handoff",
                "gen_ai.handoff.from_agent": "triage",
                "gen_ai.handoff.to_agent": "billing",
            },
            trace_id=trace_id,
        ),
        "billing": span(
            "billing",
            "invoke_agent billing",
            "root",
            3000,
            4900,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing"},
            trace_id=trace_id,
        ),
        "chat2": span(
            "chat2",
            "chat gpt-4o-mini",
            "billing",
            3100,
            4800,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 300,
                "gen_ai.usage.output_tokens": 40,
            },
            service="llm-proxy",
            trace_id=trace_id,
        ),
    }


@pytest.fixture
def trail(settings: Settings) -> Iterator[Trail]:
    with Trail(settings, sync=True) as t:
        yield t


@pytest.fixture
def assembler(trail: Trail) -> Iterator[TraceAssembler]:
    a = TraceAssembler(trail, grace_s=5.0)
    yield a
    a.close()


def counts(dsn: str) -> dict[str, int]:
    tables = ["logs_execution", "logs_llm_execution", "logs_agent_execution", "logs_user_journey"]
    return {t: int(one(dsn, f"SELECT count(*) FROM {t}")) for t in tables}


def test_spans_from_several_requests_and_services_out_of_order_become_one_execution(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    # The model-call service exports first, the tool service next, the gateway last.
    assert assembler.accept([spans["chat2"], spans["chat"]]) == 2
    assert assembler.accept([spans["tool"]]) == 1
    assert assembler.accept([spans["root"], spans["billing"], spans["handoff"]]) == 3
    assert assembler.accept([spans["triage"]]) == 1

    done = assembler.finalise_due(now=time.time() + 6)
    trail.flush()

    execution_id = uuid.UUID(hex=TRACE)
    assert [(d.execution_id, d.status, d.spans) for d in done] == [(execution_id, "success", 7)]
    workflow, status, processes, tenant, user, session, started, duration = one(
        settings.dsn,
        "SELECT workflow, status, processes_executed, tenant_id, user_id, session_id, "
        "created_at, duration_ms FROM logs_execution WHERE execution_id = %s",
        execution_id,
    )
    assert (workflow, status, tenant, user, session) == (
        "support",
        "success",
        "acme",
        "u-42",
        "conv-7",
    )
    assert started == dt.datetime.fromtimestamp(T0 // 1000 / 1e6, dt.UTC)
    assert duration == 5000
    assert [(p["span_id"], p["nesting_level"], p["parent_span_id"]) for p in processes] == [
        (IDS["root"], 0, None),
        (IDS["triage"], 1, IDS["root"]),
        (IDS["chat"], 2, IDS["triage"]),
        (IDS["tool"], 2, IDS["triage"]),
        (IDS["handoff"], 2, IDS["triage"]),
        (IDS["billing"], 1, IDS["root"]),
        (IDS["chat2"], 2, IDS["billing"]),
    ]
    assert [p["duration_ms"] for p in processes] == [5000, 2990, 1180, 200, 50, 1900, 1700]

    llm = rows(
        settings.dsn,
        "SELECT span_id, model_target, input_tokens, output_tokens, created_at, tenant_id, "
        "user_id, session_id, agent_type FROM logs_llm_execution ORDER BY created_at",
    )
    assert [(r[0], r[1], r[2], r[3]) for r in llm] == [
        (IDS["chat"], "gpt-4o", 1200, 80),
        (IDS["chat2"], "gpt-4o-mini", 300, 40),
    ]
    assert llm[0][4] == dt.datetime.fromtimestamp((T0 + 20_000_000) // 1000 / 1e6, dt.UTC)
    assert {r[5:8] for r in llm} == {("acme", "u-42", "conv-7")}
    assert [r[8] for r in llm] == ["triage", "billing"]  # from the agent span above each call
    agent_events = rows(
        settings.dsn,
        "SELECT event_type, agent_type, span_id FROM logs_agent_execution ORDER BY created_at",
    )
    assert ("tool_call", "triage", IDS["tool"]) in agent_events
    assert ("handoff", "triage", IDS["handoff"]) in agent_events
    assert {("agent_run", "triage"), ("agent_run", "billing")} <= {r[:2] for r in agent_events}


def test_a_trace_waits_for_the_grace_period_after_its_root(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    assembler.accept(list(spans.values()))
    assert assembler.finalise_due() == []
    trail.flush()
    assert counts(settings.dsn)["logs_execution"] == 0
    assert len(assembler.finalise_due(now=time.time() + 6)) == 1
    trail.flush()
    assert counts(settings.dsn)["logs_execution"] == 1


def test_spans_delivered_twice_are_stored_once(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = list(support_trace().values())
    assembler.accept(spans)
    assembler.accept(spans)  # an exporter retried before the trace was finalised
    assembler.finalise_due(now=time.time() + 6)
    trail.flush()
    first = counts(settings.dsn)
    assert first == {
        "logs_execution": 1,
        "logs_llm_execution": 2,
        "logs_agent_execution": first["logs_agent_execution"],
        "logs_user_journey": first["logs_user_journey"],
    }
    assert first["logs_agent_execution"] >= 5
    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    assert len(processes) == 7

    assembler.accept(spans)  # and again, after it was finalised
    assembler.finalise_due(now=time.time() + 6)
    trail.flush()
    assert counts(settings.dsn) == first
    assert trail.stats.rejected == 0


def test_a_span_arriving_after_finalisation_keeps_the_executions_ids(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    assembler.accept([s for key, s in spans.items() if key != "chat2"])
    assembler.finalise_due(now=time.time() + 6)
    assert assembler.accept([spans["chat2"]]) == 0  # not held: its trace is finalised
    trail.flush()
    assert counts(settings.dsn)["logs_execution"] == 1
    late = one(
        settings.dsn,
        "SELECT tenant_id, user_id, session_id, execution_id FROM logs_llm_execution "
        "WHERE span_id = %s",
        IDS["chat2"],
    )
    assert late == ("acme", "u-42", "conv-7", uuid.UUID(hex=TRACE))


def test_an_error_on_the_root_span_fails_the_execution(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    root = spans["root"]
    failed = OtlpSpan(
        **{**root.__dict__, "status_code": STATUS_ERROR, "status_message": "billing API down"}
    )
    assembler.accept([*[s for k, s in spans.items() if k != "root"], failed])
    assembler.finalise_due(now=time.time() + 6)
    trail.flush()
    status, error, processes = one(
        settings.dsn, "SELECT status, error, processes_executed FROM logs_execution"
    )
    assert (status, error) == ("error", "billing API down")
    assert processes[0]["status"] == "error"


def test_sweep_finalises_a_trace_whose_root_never_arrived_as_abandoned(
    settings: Settings, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    assembler.accept([spans["billing"], spans["chat2"]])
    result = CliRunner().invoke(
        app,
        [
            "--dsn",
            settings.dsn,
            "--redis-url",
            str(settings.redis_url),
            "sweep",
            "--idle",
            "0s",
        ],
        env={
            "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
            "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
        },
    )
    assert result.exit_code == 0, result.output
    assert "1 OpenTelemetry trace(s) finalised" in result.output
    status, error, processes, workflow = one(
        settings.dsn, "SELECT status, error, processes_executed, workflow FROM logs_execution"
    )
    assert status == "abandoned"
    assert "root span" in error
    assert [(p["span_id"], p["nesting_level"]) for p in processes] == [
        (IDS["billing"], 1),
        (IDS["chat2"], 2),
    ]
    assert workflow == "invoke_agent billing"
    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution") == 1


def test_two_finalisers_racing_write_the_execution_once(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    other = TraceAssembler(trail, grace_s=5.0)
    try:
        assembler.accept(list(support_trace().values()))
        later = time.time() + 6
        won = assembler.finalise_due(now=later) + other.finalise_due(now=later)
    finally:
        other.close()
    trail.flush()
    assert len(won) == 1
    assert counts(settings.dsn)["logs_execution"] == 1


def test_finalising_waits_for_a_round_in_progress(settings: Settings, trail: Trail) -> None:
    """A flush's finalise_due returns only once what a concurrent round claimed is queued."""
    mapping, release = threading.Event(), threading.Event()

    def slow(span: OtlpSpan) -> Any:
        mapping.set()
        release.wait(10)
        return map_span(span)

    slow_assembler = TraceAssembler(trail, grace_s=5.0, mapper=slow)
    later = time.time() + 6
    returned: list[Any] = []
    background = threading.Thread(target=slow_assembler.finalise_due, kwargs={"now": later})
    flushing = threading.Thread(target=lambda: returned.append(slow_assembler.finalise_due(later)))
    try:
        slow_assembler.accept(list(support_trace().values()))
        background.start()
        assert mapping.wait(10)  # that round has claimed the trace and is mapping its spans
        flushing.start()
        flushing.join(0.3)
        assert flushing.is_alive()  # waiting for the round, not returning with nothing queued
        release.set()
        flushing.join(10)
        assert returned == [[]]  # the other round had the trace...
        queued = trail.stats.enqueued  # ...and had queued all of it by then
    finally:
        release.set()
        background.join(10)
        slow_assembler.close()
    trail.flush()
    stored = counts(settings.dsn)
    assert stored["logs_execution"] == 1
    assert stored["logs_llm_execution"] == 2
    assert sum(stored.values()) == queued


def test_record_event_ids_are_time_ordered_and_the_same_on_every_delivery() -> None:
    at = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    first = record_event_id(TRACE, IDS["chat"], 0, at)
    assert first == record_event_id(TRACE, IDS["chat"], 0, at)
    assert first != record_event_id(TRACE, IDS["chat"], 1, at)
    assert first.version == 7
    assert first.int >> 80 == int(at.timestamp() * 1000)
    assert record_event_id(TRACE, IDS["chat"], 0, at + dt.timedelta(seconds=1)) > first


def test_redis_down_refuses_spans_instead_of_dropping_them(settings: Settings) -> None:
    with Trail(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), sync=True) as t:
        unreachable = TraceAssembler(t)
        with pytest.raises(AssemblyUnavailableError, match="Redis unavailable"):
            unreachable.accept(list(support_trace().values()))
        unreachable.close()


def test_the_in_process_exporter_writes_sdk_spans_through_the_same_path(
    settings: Settings, trail: Trail
) -> None:
    exporter = PgtrailSpanExporter(trail, grace_s=0.1)
    provider = TracerProvider(resource=Resource.create({"service.name": "agents"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("support-bot")
    with tracer.start_as_current_span(
        "invoke_agent triage",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "triage",
            "enduser.id": "u-9",
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat claude-sonnet-4",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-20250514",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool refund",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund"},
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "refund refused"))
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()  # finalises the trace whose root ended, and flushes

    execution_id = uuid.UUID(hex=trace_id)
    workflow, user, processes = one(
        settings.dsn,
        "SELECT workflow, user_id, processes_executed FROM logs_execution WHERE execution_id = %s",
        execution_id,
    )
    assert user == "u-9"
    assert [(p["nesting_level"], p["status"]) for p in processes] == [
        (0, "success"),
        (1, "success"),
        (1, "error"),
    ]
    assert workflow
    model, tokens, cost, agent = one(
        settings.dsn,
        "SELECT model_target, input_tokens, total_cost, agent_type FROM logs_llm_execution",
    )
    assert (model, tokens, agent) == ("claude-sonnet-4-20250514", 1000, "triage")
    assert cost is not None and cost > 0  # inferred from the price table
    tool_error = one(
        settings.dsn,
        "SELECT particular_data->>'error' FROM logs_agent_execution WHERE event_type = 'tool_call'",
    )
    assert tool_error == "refund refused"


def test_sampled_out_traces_keep_their_figures_and_drop_their_bodies(settings: Settings) -> None:
    spans = support_trace()
    chat = spans["chat"]
    spans["chat"] = OtlpSpan(
        **{
            **chat.__dict__,
            "attributes": {
                **chat.attributes,
                "gen_ai.system_instructions": "You are the support desk. " * 50,
            },
        }
    )
    with Trail(settings.model_copy(update={"sample_rates": {"support": 0.0}}), sync=True) as t:
        sampled = TraceAssembler(t, grace_s=5.0)
        sampled.accept(list(spans.values()))
        sampled.finalise_due(now=time.time() + 6)
        sampled.close()
        t.flush()
    sampling = one(settings.dsn, "SELECT particular_data->'sampling' FROM logs_execution")
    assert sampling == {"rate": 0.0, "sampled_in": False, "bodies": "dropped"}
    tokens, prompt_hash, marked = one(
        settings.dsn,
        "SELECT input_tokens, prompt_hash, particular_data ? '_pgtrail_sampled' "
        "FROM logs_llm_execution WHERE span_id = %s",
        IDS["chat"],
    )
    assert (tokens, marked) == (1200, True)
    assert prompt_hash is not None
    assert one(settings.dsn, "SELECT count(*) FROM pgtrail_prompt") == 0


def test_byte_string_attributes_survive_assembly(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    tool = spans["tool"]
    spans["tool"] = OtlpSpan(
        **{**tool.__dict__, "attributes": {**tool.attributes, "checksum": b"\x00\xffpgtrail"}}
    )
    seen: list[Any] = []

    def spy(span: OtlpSpan) -> Any:
        seen.append(span.attributes.get("checksum"))
        return map_span(span)

    spying = TraceAssembler(trail, grace_s=5.0, mapper=spy)
    spying.accept(list(spans.values()))
    spying.finalise_due(now=time.time() + 6)
    spying.close()
    trail.flush()
    assert b"\x00\xffpgtrail" in seen
    assert counts(settings.dsn)["logs_execution"] == 1
    assert trail.stats.rejected == 0


def test_a_server_span_continuing_a_remote_trace_heads_its_execution(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    spans = support_trace()
    # The gateway's server span continues a trace started in a browser, which exports nothing.
    entry = OtlpSpan(**{**spans["root"].__dict__, "parent_span_id": "abcdefabcdefabcd", "kind": 2})
    assembler.accept([entry, *[s for k, s in spans.items() if k != "root"]])
    assert assembler.finalise_due(now=time.time() + 6) == []  # no parentless root: no grace
    done = assembler.finalise_idle(0)
    trail.flush()
    assert [d.status for d in done] == ["success"]
    status, processes = one(settings.dsn, "SELECT status, processes_executed FROM logs_execution")
    assert status == "success"
    assert [(p["span_id"], p["nesting_level"]) for p in processes][:3] == [
        (IDS["root"], 0),
        (IDS["triage"], 1),
        (IDS["chat"], 2),
    ]


def test_the_exporter_reports_failure_when_redis_stays_away(settings: Settings) -> None:
    with Trail(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), sync=True) as t:
        exporter = PgtrailSpanExporter(t, retry_s=0.3)
        captured: list[Any] = []
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("invoke_agent lonely") as span:
            captured.append(span)
        started = time.monotonic()
        result = exporter.export(captured)
        assert result.name == "FAILURE"
        assert 0.25 <= time.monotonic() - started < 5
        provider.shutdown()


def test_an_id_too_long_for_an_index_is_cut_and_poisons_nothing(
    settings: Settings, trail: Trail, assembler: TraceAssembler
) -> None:
    """A 10,000-character user id (20 kB, far past a btree entry) on every span of a trace."""
    spans = support_trace()
    long_user = "é" * 10_000
    hostile = {
        key: OtlpSpan(**{**s.__dict__, "attributes": {**s.attributes, "user.id": long_user}})
        for key, s in spans.items()
    }
    assert assembler.accept(list(hostile.values())) == len(spans)
    assembler.finalise_due(now=time.time() + 6)
    trail.flush()
    user = one(settings.dsn, "SELECT user_id FROM logs_execution")
    # Cut where spans are mapped (names and ids keep 200 characters), so far under the limit.
    assert user == "é" * 200
    stored = counts(settings.dsn)
    assert stored["logs_execution"] == 1 and stored["logs_llm_execution"] >= 2, stored
    assert trail.stats.rejected == 0
