"""Spans as real instrumentation libraries emit them, through the receiver's path into PostgreSQL.

Each fixture in ``tests/fixtures/otlp/`` is an OTLP/JSON request recorded from a library
(see its README): OpenInference's and OpenLLMetry's ``openai`` instrumentations, and
OpenInference's LangChain instrumentation on a LangGraph ReAct agent. Each is decoded with
the receiver's JSON decoder, assembled by a real ``TraceAssembler`` over Redis and written
by a real ``Trail``; the tests judge by the rows stored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbrows import one, rows
from pgtrail.config import Settings
from pgtrail.otlp.assemble import TraceAssembler
from pgtrail.otlp.decode import decode_json
from pgtrail.otlp.spans import OtlpSpan
from pgtrail.trail import Trail

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
GRACE_S = 1.0
LOG_TABLES = (
    "logs_execution",
    "logs_llm_execution",
    "logs_agent_execution",
    "logs_user_journey",
    "pgtrail_prompt",
)
# The delay the recording's fake model server waited before a stream's first chunk.
FIRST_CHUNK_DELAY_MS = 350
FRAMEWORK_PREFIXES = ("ls_", "langgraph_", "checkpoint_", "lc_")
_FRAME_PATH = re.compile(r'File "(?P<path>/[^"]+)"')


@dataclass(frozen=True)
class Stored:
    """A fixture's spans as decoded, and the database its rows went to."""

    spans: list[OtlpSpan]
    dsn: str

    def span(self, name: str) -> OtlpSpan:
        found = [s for s in self.spans if s.name == name]
        assert found, f"no span {name!r} in {[s.name for s in self.spans]}"
        return found[0]


@pytest.fixture
def trail(settings: Settings) -> Iterator[Trail]:
    with Trail(settings, sync=True) as t:
        yield t


@pytest.fixture
def assembler(trail: Trail) -> Iterator[TraceAssembler]:
    a = TraceAssembler(trail, grace_s=GRACE_S)
    yield a
    a.close()


@pytest.fixture
def store(settings: Settings, trail: Trail, assembler: TraceAssembler) -> Any:
    """Feeds a fixture through decode, assembly and the writer; returns what went in."""

    def feed(name: str) -> Stored:
        decoded = decode_json((FIXTURES / f"{name}.json").read_bytes())
        assert decoded.rejected == 0, decoded.reason
        assert assembler.accept(decoded.spans) == len(decoded.spans)
        done = assembler.finalise_due(now=time.time() + GRACE_S + 1)
        assert len(done) == len({s.trace_id for s in decoded.spans})
        trail.flush()
        assert trail.stats.rejected == 0
        return Stored(decoded.spans, settings.dsn)

    return feed


def llm_rows(dsn: str) -> list[dict[str, Any]]:
    found = rows(dsn, "SELECT to_jsonb(t) FROM logs_llm_execution t ORDER BY created_at")
    return [r[0] for r in found]


def agent_rows(dsn: str, event_type: str) -> list[dict[str, Any]]:
    found = rows(
        dsn,
        "SELECT to_jsonb(t) FROM logs_agent_execution t WHERE event_type = %s ORDER BY created_at",
        event_type,
    )
    return [r[0] for r in found]


def all_row_text(dsn: str) -> str:
    """Every stored row of every log table (and the prompt store), as text."""
    texts = []
    for table in LOG_TABLES:
        texts += [str(r[0]) for r in rows(dsn, f"SELECT t::text FROM {table} t")]
    return "\n".join(texts)


def metadata(span: OtlpSpan) -> dict[str, Any]:
    raw = span.attributes.get("metadata")
    return json.loads(raw) if isinstance(raw, str) else {}


# -- time to first token -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "event"),
    [
        ("openinference_openai_stream", "First Token Stream Event"),
        ("openllmetry_openai_stream", "gen_ai.content.completion.chunk"),
    ],
)
def test_a_streamed_call_stores_its_time_to_first_token(
    store: Any, fixture: str, event: str
) -> None:
    stored = store(fixture)
    (span,) = stored.spans
    first = min(e.time_unix_nano for e in span.events if e.name == event)
    recorded_ms = (first - span.start_unix_nano) / 1e6

    (row,) = llm_rows(stored.dsn)
    assert row["time_to_first_token_ms"] == pytest.approx(recorded_ms, abs=1)
    assert FIRST_CHUNK_DELAY_MS <= row["time_to_first_token_ms"] < row["processing_time_ms"]
    # The chunk markers are timing, not messages: none is kept as a payload message.
    assert event not in json.dumps(row["payload"])
    assert event not in json.dumps(row["particular_data"])


@pytest.mark.parametrize("fixture", ["openinference_openai", "openllmetry_openai"])
def test_a_call_that_was_not_streamed_has_no_time_to_first_token(store: Any, fixture: str) -> None:
    (row,) = llm_rows(store(fixture).dsn)
    assert row["time_to_first_token_ms"] is None


# -- tokens and cost -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture",
    [
        "openinference_openai",
        "openinference_openai_stream",
        "openllmetry_openai",
        "openllmetry_openai_stream",
        "openinference_langgraph_agent",
    ],
)
def test_calls_that_report_usage_store_tokens_and_a_cost(store: Any, fixture: str) -> None:
    stored = store(fixture)
    found = llm_rows(stored.dsn)
    assert found
    for row in found:
        assert (row["provider"], row["model_target"]) == ("openai", "gpt-4o-mini-2024-07-18")
        assert (row["input_tokens"], row["output_tokens"]) == (42, 9)
        assert float(row["total_cost"]) > 0
        assert float(row["total_cost"]) == pytest.approx(
            float(row["input_cost"]) + float(row["output_cost"])
        )


# -- a rate-limited call -----------------------------------------------------------------------


def test_a_rate_limited_openinference_call_names_the_model_it_asked_for(store: Any) -> None:
    stored = store("openinference_openai_429")
    (span,) = stored.spans
    assert "llm.model_name" not in span.attributes  # only the invocation parameters name it
    assert json.loads(span.attributes["llm.invocation_parameters"])["model"] == "gpt-4o-mini"

    (row,) = llm_rows(stored.dsn)
    assert row["model_target"] == "gpt-4o-mini"
    assert row["event_type"] == "llm_rate_limited"
    assert row["error"].startswith("RateLimitError: Error code: 429")
    assert row["input_tokens"] is None and row["total_cost"] is None
    (exception,) = [e for e in row["particular_data"]["events"] if e["name"] == "exception"]
    assert exception["attributes"]["exception.type"] == "openai.RateLimitError"
    assert "exception.stacktrace" not in exception["attributes"]
    assert re.fullmatch(r"\w+ in [\w.]+\.py:\d+", exception["attributes"]["exception.frame"])
    status, execution_error = one(stored.dsn, "SELECT status, error FROM logs_execution")
    assert (status, execution_error) == ("error", row["error"])


# -- LangGraph: context, agent, tool call ------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["openinference_langgraph_agent", "openinference_langgraph_tool_error"]
)
def test_langgraph_bookkeeping_stays_out_of_the_context_and_identities_stay(
    store: Any, fixture: str
) -> None:
    stored = store(fixture)
    sent = {key for span in stored.spans for key in metadata(span)}
    assert {"ls_provider", "langgraph_node", "checkpoint_ns", "lc_versions"} <= sent

    context, user_id, session_id = one(
        stored.dsn, "SELECT context, user_id, session_id FROM logs_execution"
    )
    assert not [k for k in context if k.startswith(FRAMEWORK_PREFIXES)], context
    assert context["user_id"] == "u-1042"
    assert context["session_id"] == "sess-7f3a"
    assert context["thread_id"] == "thread-12"
    assert (user_id, session_id) == ("u-1042", "sess-7f3a")
    for row in llm_rows(stored.dsn):
        assert (row["user_id"], row["session_id"]) == ("u-1042", "sess-7f3a")


def test_langgraph_model_and_tool_rows_belong_to_the_graph_s_agent(store: Any) -> None:
    stored = store("openinference_langgraph_agent")
    graph = stored.span("travel_agent")
    assert graph.parent_span_id is None
    nodes = {metadata(s).get("langgraph_node") for s in stored.spans if s.name == "ChatOpenAI"}
    assert nodes == {"agent"}  # what the rows were named after before

    assert [r["agent_type"] for r in llm_rows(stored.dsn)] == ["travel_agent", "travel_agent"]
    assert [r["agent_type"] for r in agent_rows(stored.dsn, "tool_call")] == ["travel_agent"]
    # The model node is a step of the graph, not an agent of its own.
    runs = agent_rows(stored.dsn, "agent_run")
    assert [(r["agent_type"], r["span_id"]) for r in runs] == [("travel_agent", graph.span_id)]
    assert one(stored.dsn, "SELECT workflow FROM logs_execution") == "travel_agent"


@pytest.mark.parametrize(
    "fixture", ["openinference_langgraph_agent", "openinference_langgraph_tool_error"]
)
def test_a_tool_given_a_bare_string_keeps_its_call_id_and_arguments(
    store: Any, fixture: str
) -> None:
    stored = store(fixture)
    tool = stored.span("get_weather")
    assert tool.attributes["input.value"] == "Lisbon"
    assert not {"tool_call.id", "gen_ai.tool.call.id"} & set(tool.attributes)
    dispatched = json.loads(stored.span("tools").attributes["input.value"])["tool_call"]

    (row,) = agent_rows(stored.dsn, "tool_call")
    data = row["particular_data"]
    assert data["tool"] == "get_weather"
    assert data["call_id"] == dispatched["id"]
    assert data["call_id"].startswith("call_")
    assert data["args"] == {"city": "Lisbon"} == dispatched["args"]
    # The model's call and the tool's row agree on the id.
    first_call = llm_rows(stored.dsn)[0]["payload"]["output_messages"][0]["tool_calls"][0]
    assert first_call["tool_call"]["id"] == data["call_id"]


# -- exceptions --------------------------------------------------------------------------------


def test_a_failing_tool_stores_its_exception_without_the_stack_trace(store: Any) -> None:
    stored = store("openinference_langgraph_tool_error")
    traces = [
        e.attributes["exception.stacktrace"]
        for s in stored.spans
        for e in s.events
        if e.name == "exception"
    ]
    traces += [s.status_message for s in stored.spans if "Traceback" in s.status_message]
    paths = {m["path"] for trace in traces for m in _FRAME_PATH.finditer(trace)}
    assert len(traces) >= 3 and len(paths) >= 5
    folders = {p.rsplit("/", 1)[0] for p in paths}

    text = all_row_text(stored.dsn)
    assert "Traceback" not in text
    for folder in sorted(folders):
        assert folder not in text, folder
    for segment in sorted({"/" + part for p in paths for part in p.split("/")[1:-1]}):
        assert f"{segment}/" not in text, segment

    (row,) = agent_rows(stored.dsn, "tool_call")
    data = row["particular_data"]
    assert data["error"] == "ConnectionError('weather service unreachable for Lisbon')"
    (exception,) = data["events"]
    assert exception["attributes"]["exception.type"] == "ConnectionError"
    assert exception["attributes"]["exception.message"] == "weather service unreachable for Lisbon"
    assert re.fullmatch(
        r"get_weather in record_otlp_fixtures\.py:\d+", exception["attributes"]["exception.frame"]
    )

    status, error, processes = one(
        stored.dsn, "SELECT status, error, processes_executed FROM logs_execution"
    )
    assert (status, error) == ("error", data["error"])
    assert {p["error"] for p in processes if p["status"] == "error"} == {data["error"]}
    failed = one(
        stored.dsn,
        "SELECT particular_data FROM logs_user_journey WHERE event_type = 'request_failed'",
    )
    assert failed["error"] == data["error"]
