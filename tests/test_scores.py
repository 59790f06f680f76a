"""Scores and feedback: during an execution, and later from another process.

Late scores and late joins run in a separate Python process (``multiprocessing`` with the
``spawn`` context) that knows nothing but the execution id. Decided by effect: the stored
rows' tenant, user, session and process; what a tenant-scoped read sees; what the user's
journey and the execution's trace show.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import pgtrail
from dbrows import one, rows
from otlp_builders import T0, otel_span
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.errors import ValidationError
from pgtrail.otlp.exporter import PgtrailSpanExporter
from pgtrail.otlp.mapping import MappingOptions, map_span
from pgtrail.otlp.spans import SpanEvent
from pgtrail.read import reports
from pgtrail.read.journey import load_journey
from pgtrail.read.render import event_line
from pgtrail.read.trace import ProcessNode, TracedAgentEvent, load_trace
from pgtrail.tables import AGENT

ACME = ("acme", "u-acme", "s-acme")


def acme_execution(trail: Trail) -> Any:
    return trail.execution(
        "001 Main", tenant_id=ACME[0], user_id=ACME[1], session_id=ACME[2], context={"f": 1}
    )


def scores(settings: Settings, name: str) -> list[tuple[Any, ...]]:
    """tenant, user, session, span, agent and particular_data of the scores named ``name``."""
    return rows(
        settings.dsn,
        "SELECT tenant_id, user_id, session_id, span_id, agent_type, particular_data "
        "FROM logs_agent_execution WHERE event_type = 'score' "
        "AND particular_data ->> 'name' = %s ORDER BY created_at, event_id",
        name,
    )


def visible_to(settings: Settings, tenant: str, name: str) -> int:
    result = reports.run_sql(
        settings,
        "SELECT count(*) FROM logs_agent_execution WHERE event_type = 'score' "
        f"AND particular_data ->> 'name' = '{name}'",
        tenant=tenant,
    )
    return int(result.rows[0][0])


def walk(node: ProcessNode) -> list[ProcessNode]:
    return [node, *(found for child in node.children for found in walk(child))]


def scored_in(node: ProcessNode) -> list[str]:
    """The names of the scores a trace shows in one process."""
    return [
        str(e.data["name"])
        for e in node.events
        if isinstance(e, TracedAgentEvent) and e.event_type == "score"
    ]


def journey_scores(settings: Settings, user: str) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    journey = load_journey(settings, user, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    return [str(s.data["name"]) for x in journey.executions for s in x.scores]


def late_worker(settings_json: str, execution_id: str, plan: dict[str, Any], results: Any) -> None:
    """In a spawned process: scores the execution by id, joins it if asked, reports the log."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("pgtrail").addHandler(Collect())
    settings = Settings.model_validate_json(settings_json)
    with Trail(settings, sync=True) as trail:
        pgtrail.log_score(
            plan["name"],
            plan.get("value", 0.25),
            source="human",
            comment="late verdict",
            execution_id=execution_id,
            **plan.get("explicit", {}),
        )
        if plan.get("join"):
            with trail.join(uuid.UUID(execution_id)), trail.process("feedback worker"):
                pgtrail.log_user_journey("thumbs_down", {"reason": "not_helpful"})
                pgtrail.log_score(f"{plan['name']}-joined", False, source="human")
        trail.flush(30)
    results.put(messages)


def run_late(settings: Settings, execution_id: uuid.UUID, **plan: Any) -> list[str]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(
        target=late_worker, args=(settings.model_dump_json(), str(execution_id), plan, results)
    )
    process.start()
    messages: list[str] = results.get(timeout=120)
    process.join(60)
    assert process.exitcode == 0
    return messages


# -- during the execution ----------------------------------------------------------------------


def test_scores_of_every_kind_attach_to_the_current_execution_and_process(
    settings: Settings,
) -> None:
    with Trail(settings, sync=True) as trail, acme_execution(trail) as ex:
        with trail.process("202 Agent - Coaching") as step:
            pgtrail.log_score("helpfulness", 0.75, source="model", agent_type="coaching")
            pgtrail.log_score("thumbs", True, source="human", comment="great")
            pgtrail.log_score("topic", "off_topic", source="rule", data={"rule": "r-7"})
        trail.log_score("exact", 3)
    assert step is not None
    stored = {
        row[5]["name"]: row
        for name in ("helpfulness", "thumbs", "topic", "exact")
        for row in scores(settings, name)
    }
    assert {row[:3] for row in stored.values()} == {ACME}
    assert stored["helpfulness"][3] == step.span_id
    assert stored["helpfulness"][4] == "coaching"
    assert stored["helpfulness"][5] == {
        "name": "helpfulness",
        "value": 0.75,
        "value_type": "numeric",
        "score": 0.75,
        "source": "model",
        "attached": "current",
    }
    assert stored["thumbs"][5]["value"] is True
    assert (stored["thumbs"][5]["score"], stored["thumbs"][5]["label"]) == (1, "true")
    assert stored["thumbs"][5]["comment"] == "great"
    assert stored["topic"][5]["value_type"] == "categorical"
    assert stored["topic"][5]["label"] == "off_topic"
    assert "score" not in stored["topic"][5]
    assert stored["topic"][5]["data"] == {"rule": "r-7"}
    root = one(
        settings.dsn, "SELECT span_id FROM logs_execution WHERE execution_id = %s", ex.execution_id
    )
    assert stored["exact"][3] == root
    # The trace shows each score in the process it was given in.
    nodes = {node.span_id: node for node in walk(load_trace(settings, ex.execution_id).root)}
    assert scored_in(nodes[step.span_id]) == ["helpfulness", "thumbs", "topic"]
    assert scored_in(nodes[root]) == ["exact"]
    # ... as what was said, by whom.
    lines = [
        event_line(e).plain
        for e in nodes[step.span_id].events
        if isinstance(e, TracedAgentEvent) and e.event_type == "score"
    ]
    assert lines[0].endswith("agent score (coaching) · helpfulness = 0.75 by model")
    assert lines[1].endswith('thumbs = true by human: "great"')
    assert "topic = off_topic by rule" in lines[2]


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), object(), "", None, [1, 2]],
    ids=["nan", "inf", "object", "empty", "none", "list"],
)
def test_a_bad_score_never_raises_and_is_not_stored(
    settings: Settings, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with Trail(settings, sync=True) as trail, acme_execution(trail):
        pgtrail.log_score("bad-value", value)
        pgtrail.log_score("", 1.0)
        pgtrail.log_score("bad-data", 1.0, data="not a dict")  # type: ignore[arg-type]
        pgtrail.log_score("bad-id", 1.0, execution_id="not an id")
        pgtrail.log_score("good", 1.0)
    for name in ("bad-value", "", "bad-data", "bad-id"):
        assert scores(settings, name) == []
    assert len(scores(settings, "good")) == 1


def test_strict_mode_raises_on_a_bad_score(settings: Settings) -> None:
    strict = settings.model_copy(update={"strict": True})
    with Trail(strict, sync=True) as trail, acme_execution(trail):
        with pytest.raises(ValidationError, match="not a finite number"):
            pgtrail.log_score("helpfulness", float("nan"))
        with pytest.raises(ValidationError, match="expected a number"):
            trail.log_score("helpfulness", {"a": 1})  # type: ignore[arg-type]


def test_outside_an_execution_without_an_id_the_score_is_reported_not_raised(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Trail(settings, sync=True) as trail:
        trail.log_score("orphan", 1.0)
    assert "outside any execution" in caplog.text
    assert scores(settings, "orphan") == []


# -- later, from another process -------------------------------------------------------------


def test_a_late_score_on_an_open_execution_keeps_its_identity(settings: Settings) -> None:
    with Trail(settings, sync=True) as root, acme_execution(root) as ex:
        run_late(settings, ex.execution_id, name="while-open")
    [stored] = scores(settings, "while-open")
    assert stored[:3] == ACME
    assert stored[5]["attached"] == "redis"
    assert stored[5]["source"] == "human"
    assert visible_to(settings, "globex", "while-open") == 0
    assert visible_to(settings, "acme", "while-open") == 1


@pytest.mark.parametrize("worker_redis", ["up", "off"])
def test_late_feedback_on_a_finished_execution_stays_with_its_tenant_and_user(
    settings: Settings, worker_redis: str
) -> None:
    with Trail(settings, sync=True) as root:
        with acme_execution(root) as ex:
            pgtrail.log_user_journey("user_message_received", {"text_length": 12})
        assert root.flush(30)
    worker = settings
    if worker_redis == "off":
        worker = settings.model_copy(update={"redis_url": None})
    run_late(worker, ex.execution_id, name="later", join=True)
    [late] = scores(settings, "later")
    [joined] = scores(settings, "later-joined")
    assert late[:3] == joined[:3] == ACME
    assert late[5]["attached"] == "database"
    root_span = one(
        settings.dsn,
        "SELECT span_id FROM logs_execution WHERE event_type = 'execution_finalized'",
    )
    assert late[3] == root_span  # a late score on the execution sits on its root process
    feedback = one(
        settings.dsn,
        "SELECT tenant_id, user_id, session_id FROM logs_user_journey "
        "WHERE event_type = 'thumbs_down'",
    )
    assert tuple(feedback) == ACME
    for name in ("later", "later-joined"):
        assert visible_to(settings, "globex", name) == 0
        assert visible_to(settings, "acme", name) == 1
    assert journey_scores(settings, ACME[1]) == ["later", "later-joined"]
    now = dt.datetime.now(dt.UTC)
    journey = load_journey(settings, ACME[1], now - dt.timedelta(hours=1), now)
    kinds = [getattr(e, "event_type", None) for x in journey.executions for e in x.events]
    assert "thumbs_down" in kinds


def test_a_late_score_on_an_unknown_execution_uses_the_given_identity_or_says_so(
    settings: Settings,
) -> None:
    given = uuid.uuid4()
    run_late(
        settings,
        given,
        name="given",
        explicit={"tenant_id": "initech", "user_id": "u-i", "session_id": "s-i"},
    )
    [stored] = scores(settings, "given")
    assert stored[:3] == ("initech", "u-i", "s-i")
    assert stored[5]["attached"] == "given"
    unknown = uuid.uuid4()
    messages = run_late(settings, unknown, name="unknown")
    [orphan] = scores(settings, "unknown")
    assert orphan[:3] == ("default", None, None)
    assert orphan[5]["attached"] == "unknown"
    assert any("neither open in Redis nor stored" in m and "log_score()" in m for m in messages)
    assert visible_to(settings, "acme", "unknown") == 0


def test_the_stored_identity_wins_over_the_arguments_of_a_late_score(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Trail(settings, sync=True) as root:
        with acme_execution(root) as ex:
            pass
        assert root.flush(30)
    with Trail(settings.model_copy(update={"redis_url": None}), sync=True) as other:
        other.log_score("first", 1, execution_id=ex.execution_id, tenant_id="globex")
        other.log_score("second", 2, execution_id=str(ex.execution_id))
    assert scores(settings, "first")[0][:3] == ACME
    assert scores(settings, "second")[0][:3] == ACME
    assert "the execution's is used" in caplog.text


# -- from OpenTelemetry ------------------------------------------------------------------------


def test_evaluations_sent_as_opentelemetry_are_stored_as_scores_of_their_span(
    settings: Settings,
) -> None:
    with Trail(settings, sync=True) as trail:
        exporter = PgtrailSpanExporter(trail, grace_s=0.1)
        provider = TracerProvider(resource=Resource.create({"service.name": "agents"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("support-bot")
        root_attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "triage",
            "enduser.id": "u-9",
            "tenant.id": "acme",
        }
        with tracer.start_as_current_span("invoke_agent triage", attributes=root_attributes):
            with tracer.start_as_current_span(
                "chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}
            ) as chat:
                chat.add_event(
                    "gen_ai.evaluation.result",
                    {
                        "gen_ai.evaluation.name": "helpfulness",
                        "gen_ai.evaluation.score.value": 0.3,
                        "gen_ai.evaluation.score.label": "unhelpful",
                        "gen_ai.evaluation.explanation": "Did not answer",
                    },
                )
                chat_span = f"{chat.get_span_context().span_id:016x}"
            with tracer.start_as_current_span(
                "Relevance",
                attributes={
                    "openinference.span.kind": "EVALUATOR",
                    "evaluation.name": "relevance",
                    "evaluation.label": "relevant",
                    "evaluation.explanation": "On the question",
                },
            ):
                pass
        provider.shutdown()  # finalises the trace and flushes
    [helpful] = scores(settings, "helpfulness")
    assert helpful[0:2] == ("acme", "u-9")
    assert helpful[3] == chat_span
    assert helpful[4] == "triage"
    assert helpful[5] == {
        "name": "helpfulness",
        "value": 0.3,
        "value_type": "numeric",
        "score": 0.3,
        "label": "unhelpful",
        "comment": "Did not answer",
        "source": "evaluator",
        "attached": "otlp",
    }
    [relevance] = scores(settings, "relevance")
    assert relevance[5]["value_type"] == "categorical"
    assert relevance[5]["label"] == "relevant"
    assert visible_to(settings, "globex", "helpfulness") == 0


def test_an_evaluation_without_a_score_or_label_is_kept_as_an_evaluation() -> None:
    span = otel_span(
        "chat gpt-4o",
        {"gen_ai.operation.name": "chat"},
        events=(
            SpanEvent(
                "gen_ai.evaluation.result",
                T0,
                {"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.explanation": "Curt"},
            ),
            SpanEvent("gen_ai.evaluation.result", T0, {"gen_ai.evaluation.score.value": 1}),
        ),
    )
    records = [r.args for r in map_span(span, MappingOptions()).records if r.table == AGENT]
    assert records == [
        {
            "agent_type": None,
            "event_type": "evaluation",
            "data": {"name": "tone", "explanation": "Curt"},
        },
        {"agent_type": None, "event_type": "evaluation", "data": {"score": 1.0}},
    ]
