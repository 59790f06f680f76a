"""Records are frozen at the call: clean values as JSON, stored exactly; the rest as before."""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import threading
import uuid
from typing import Any

import pytest
from pydantic import computed_field, field_serializer

import pgtrail
from dbrows import one, rows
from pgtrail import AgentDecision, ContextCompression, Guardrail, ToolCall, Trail
from pgtrail.config import Settings
from pgtrail.ids import execution_event_id, uuid7, uuid7_hex
from pgtrail.models import AgentEvent
from pgtrail.writer import copytext
from pgtrail.writer.freeze import (
    clean_json,
    event_fields,
    freeze,
    members,
    splice,
    thaw,
)
from pgtrail.writer.prepare import RecordPreparer
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.sink import PgSink

LLM, AGENT, JOURNEY = "logs_llm_execution", "logs_agent_execution", "logs_user_journey"
LIMIT = 1_000_000
_WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def queued(table: str, args: dict[str, Any], **fields: Any) -> QueuedRecord:
    """A record as the helpers enqueue it."""
    return QueuedRecord(table, None, uuid.uuid4(), _WHEN, "t", None, None, "s", args, **fields)


class Scored(AgentEvent):
    event_type = "scored"
    score: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def doubled(self) -> float:
        return self.score * 2


class Rounded(AgentEvent):
    event_type = "rounded"
    value: float

    @field_serializer("value")
    def _round(self, value: float) -> float:
        return round(value)


@pytest.mark.parametrize(
    "value",
    [
        {"nan": math.nan},
        {"deep": [1, {"inf": math.inf}]},
        {"nul": "a\x00b"},
        {"surrogate": "\ud800"},
        {1: "not a str key"},
        {"obj": object()},
        {"big": "x" * (LIMIT + 1)},
    ],
    ids=["nan", "nested-inf", "nul", "surrogate", "int-key", "object", "oversized"],
)
def test_values_the_sanitiser_must_see_are_not_frozen(value: dict[Any, Any]) -> None:
    assert clean_json(value, LIMIT) is None
    record = queued(JOURNEY, {"event_type": "e", "data": value})
    assert freeze(record, LIMIT) is record  # left as given, for the writer to clean


class _BadFloat(float):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_that_fails_to_serialise_never_raises_into_the_caller(settings: Settings) -> None:
    data = {"odd": _BadFloat(1.5), "none": None}
    assert clean_json(data, LIMIT) is None
    with Trail(settings, sync=True) as trail, trail.execution("odd"):
        pgtrail.log_llm_execution(model="m", data=data)
        pgtrail.log_user_journey("opened", data)
    assert trail.stats.written == 3 and trail.stats.rejected == 0  # and the execution's row
    stored = one(settings.dsn, "SELECT particular_data FROM logs_user_journey")
    assert stored == {"odd": 1.5, "none": None}  # cleaned by the writer's sanitiser


def test_a_cycle_is_not_frozen() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert clean_json(cyclic, LIMIT) is None


def test_clean_values_freeze_to_json_with_their_nulls() -> None:
    assert clean_json({"a": None, "b": [1, 2.5, "é"]}, LIMIT) == '{"a":null,"b":[1,2.5,"é"]}'


def test_a_frozen_record_is_never_tracked_by_the_garbage_collector() -> None:
    llm = freeze(queued(LLM, {"model": "m", "input_tokens": 3, "data": {"k": {"n": 1}}}), LIMIT)
    event = AgentDecision(decisions={"a": {"b": 1}})
    agent = freeze(queued(AGENT, {"event": event, "data": None}), LIMIT)
    journey = freeze(queued(JOURNEY, {"event_type": "opened", "data": {"k": [1, 2]}}), LIMIT)
    for frozen in (llm, agent, journey):
        assert not gc.is_tracked(frozen.args), frozen
        assert "data" not in frozen.args and frozen.data_json is not None


def test_freezing_keeps_what_it_does_not_freeze() -> None:
    marked = freeze(queued(JOURNEY, {"event_type": "e", "data": {"k": 1}}, sampled_out=0.1), LIMIT)
    assert marked.sampled_out == 0.1
    wrong = freeze(queued(LLM, {"data": "not a dict", "payload": {"p": 1}}), LIMIT)
    assert wrong.args["data"] == "not a dict"  # the writer rejects it with a clear reason
    assert thaw(wrong).args == {"data": "not a dict", "payload": {"p": 1}}
    not_a_model = queued(AGENT, {"event": {"plain": "dict"}, "data": None})
    assert freeze(not_a_model, LIMIT) is not_a_model


def test_thaw_gives_back_the_callers_values() -> None:
    args = {"model": "m", "data": {"k": [1, {"x": None}]}, "payload": {"p": "é"}}
    assert thaw(freeze(queued(LLM, dict(args)), LIMIT)).args == {"model": "m", **args}


@pytest.mark.parametrize(
    "event",
    [
        AgentDecision(decisions={"flow": {"x": None}}),
        ContextCompression.model_validate(
            {"context_management": {"score": 0.1}, "note": None, "extra_field": [1]}
        ),
        ToolCall(tool="search", args={"q": "x"}, permission="allowed"),
        Guardrail(name="pii", passed=False),
    ],
    ids=["alias", "extras", "tool-call", "guardrail"],
)
def test_event_fields_are_model_dump_by_alias_without_nulls(event: AgentEvent) -> None:
    assert event_fields(event) == event.model_dump(mode="python", by_alias=True, exclude_none=True)


def test_models_that_serialise_themselves_keep_their_model() -> None:
    for event in (Scored(score=1.5), Rounded(value=2.6)):
        assert event_fields(event) is None
        record = queued(AGENT, {"event": event, "data": None})
        assert freeze(record, LIMIT) is record


def test_members_and_splice_merge_like_a_dict_update() -> None:
    assert members({"workflow": "w", "feature": None}, LIMIT) == '"workflow":"w"'
    assert splice("{}", '"a":1') == '{"a":1}'
    assert splice('{"b":2}', "") == '{"b":2}'
    assert splice('{"b":2}', '"a":1') == '{"b":2,"a":1}'


def test_repeated_keys_keep_the_last_value_in_jsonb(settings: Settings) -> None:
    # The frozen object and the members added to it may share a key: jsonb keeps the last.
    with Trail(settings, sync=True) as trail, trail.execution("merge", context={"feature": "f"}):
        pgtrail.log_llm_execution(model="m", data={"feature": "mine", "k": 1})
        pgtrail.log_agent_execution(
            AgentDecision(decisions={"d": 1}),
            duration_ms=7,
            data={"event_duration_ms": 1, "agent_decisions": "overridden"},
        )
    dsn = settings.dsn
    llm = one(dsn, "SELECT particular_data FROM logs_llm_execution")
    assert llm == {"feature": "f", "k": 1, "workflow": "merge"}
    agent = one(dsn, "SELECT particular_data FROM logs_agent_execution")
    assert agent == {"agent_decisions": "overridden", "event_duration_ms": 7}


def test_what_is_stored_is_the_value_at_the_call(settings: Settings) -> None:
    data: dict[str, Any] = {"step": 1, "items": ["a"]}
    journey = {"page": "home"}
    trail = Trail(settings)  # the background writer: records wait in the queue
    with trail.execution("snapshot"):
        pgtrail.log_llm_execution(model="m", data=data, payload={"text": "hi"})
        pgtrail.log_user_journey("opened", journey)
        pgtrail.log_agent_execution(event_type="chose", data=data)
        data["step"] = 2
        data["items"].append("b")
        journey["page"] = "changed"
    assert trail.flush(30)
    trail.close()
    dsn = settings.dsn
    assert one(dsn, "SELECT particular_data->'step' FROM logs_llm_execution") == 1
    assert one(dsn, "SELECT particular_data->'items' FROM logs_agent_execution") == ["a"]
    assert one(dsn, "SELECT particular_data FROM logs_user_journey") == {"page": "home"}


def test_a_frozen_record_keeps_an_empty_agent_type(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("empty"):
        pgtrail.log_agent_execution(event_type="chose", agent_type="", data={"k": 1})
    stored = one(settings.dsn, "SELECT agent_type, particular_data FROM logs_agent_execution")
    assert stored == ("", {"k": 1})


def test_unclean_values_are_still_cleaned_and_explained(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("unclean"):
        pgtrail.log_llm_execution(model="m", data={"score": math.nan})
        pgtrail.log_user_journey("opened", {"text": "a\x00b"})
        guardrail = Guardrail.model_validate({"name": "g", "passed": True, "ratio": math.inf})
        pgtrail.log_agent_execution(guardrail)
    dsn = settings.dsn
    llm = one(dsn, "SELECT particular_data FROM logs_llm_execution")
    assert llm["score"] is None and llm["_pgtrail_notes"]
    journey = one(dsn, "SELECT particular_data FROM logs_user_journey")
    assert journey["text"] == "ab"
    assert journey["_pgtrail_notes"] == ["field 'data' at $['text']: removed 1 NUL character"]
    agent = one(dsn, "SELECT particular_data FROM logs_agent_execution")
    assert agent["ratio"] is None and agent["_pgtrail_notes"]


def test_a_frozen_call_takes_the_one_pass_row_and_matches_the_general_path(
    settings: Settings,
) -> None:
    sink = PgSink(settings)
    sink.refresh_prices()
    prices = sink.prices
    sink.close()
    when = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    stamp = (uuid.uuid4(), uuid.uuid4(), when, "acme", "u1", "s1", "ab12")
    context = {"workflow": "001 Main", "feature": "coaching"}
    call = {
        "model": "claude-sonnet-4-20250514",
        "input_tokens": 1200,
        "output_tokens": 80,
        "data": {"turn": 3},
        "payload": {"completion": "ok"},
    }
    given = QueuedRecord(LLM, *stamp, call, context=context)
    frozen = freeze(QueuedRecord(LLM, *stamp, dict(call)), LIMIT)
    frozen = frozen._replace(context_members=members(context, LIMIT))
    one_pass = RecordPreparer(settings, prices)
    general = RecordPreparer(settings, prices)
    general.plain_llm_row = lambda *_: None  # type: ignore[method-assign]
    assert one_pass.plain_llm_row("common", frozen) is not None
    prepared = one_pass.prepare_one(frozen)
    assert prepared == general.prepare_one(given)
    line = prepared[0][1]
    assert copytext.fields(line)[2] == "2026-03-01 12:00:00.000000+00:00"
    assert copytext.created_day(line) == "2026-03-01"


def test_created_at_is_stored_exactly_across_seconds_and_zones(settings: Settings) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moments = iter(
        [
            dt.datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 2, 0, 0, 0, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 2, 0, 0, 0, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 2, 2, 0, 1, 500000, tzinfo=plus_two),
            dt.datetime(1969, 12, 31, 23, 59, 59, 250000, tzinfo=dt.UTC),
        ]
    )
    logged: list[dt.datetime] = []

    def clock() -> dt.datetime:
        now = next(moments, dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC))
        logged.append(now)
        return now

    with Trail(settings, sync=True, clock=clock) as trail, trail.execution("clock"):
        for _ in range(4):
            pgtrail.log_user_journey("tick", {})
    stored = [r[0] for r in rows(settings.dsn, "SELECT created_at FROM logs_user_journey")]
    assert sorted(stored) == sorted(logged[1:5])


def test_event_ids_are_unique_across_threads_and_ordered_within_one() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        for _ in range(20_000):
            into.append(uuid7_hex(1_700_000_000_000))

    threads = [threading.Thread(target=draw, args=(m,)) for m in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for m in made for i in m]
    assert len(set(every)) == len(every)
    for m in made:
        assert m == sorted(m)  # one millisecond: ordered by the counter
    parsed = uuid.UUID(every[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert uuid7().version == 7


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out
        os.close(read_end)
        os.write(write_end, "".join(uuid7_hex(1_700_000_000_000) for _ in range(50)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {uuid7_hex(1_700_000_000_000) for _ in range(50)}
    assert len(child) == 50 and not child & parent


def test_execution_event_ids_are_uuid5_of_the_execution() -> None:
    for _ in range(500):
        execution = uuid7()
        assert execution_event_id(execution) == uuid.uuid5(execution, "pgtrail.execution")
