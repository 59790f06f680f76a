"""Hostile OTLP input: one bad value or span never costs the rest of its request or trace.

Decided by effect, through the real receiver or the trace assembler, with real Redis and
PostgreSQL: which executions, processes and rows end up stored, and in which database.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dbrows import one, rows
from otlp_builders import otel_span
from pgtrail.config import Settings
from pgtrail.ops.migrate import migrate
from pgtrail.otlp.assemble import TraceAssembler
from pgtrail.otlp.mapping import map_span
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.otlp.spans import MappedRecord, MappedSpan, OtlpSpan
from pgtrail.shared_state import database_namespace
from pgtrail.trail import Trail

T0 = time.time_ns() - 60 * 1_000_000_000  # a minute ago, so every span has ended
TRACE = "7a3c0e5f9b1d2468ace0135724681357"
ROOT = "0a0a0a0a0a0a0a01"
CHAT = "0a0a0a0a0a0a0a02"
TOOL = "0a0a0a0a0a0a0a03"
EXTRA = "0a0a0a0a0a0a0a04"


def processes(dsn: str, trace_id: str) -> list[str]:
    """The span ids in the stored execution of ``trace_id``, in order."""
    stored = one(
        dsn,
        "SELECT processes_executed FROM logs_execution WHERE execution_id = %s",
        uuid.UUID(hex=trace_id),
    )
    return [p["span_id"] for p in stored]


def executions(dsn: str) -> dict[str, list[str]]:
    """Every stored execution: its trace id and the span ids of its processes, sorted."""
    found = rows(dsn, "SELECT execution_id, processes_executed FROM logs_execution")
    return {eid.hex: sorted(p["span_id"] for p in procs) for eid, procs in found}


def chat_attributes(**extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        **extra,
    }


def small_trace(trace_id: str = TRACE, chat: dict[str, Any] | None = None) -> list[OtlpSpan]:
    """A root, a model call and a tool call under it."""
    return [
        otel_span("invoke_workflow w", {}, trace_id=trace_id, span_id=ROOT, parent=None, start=T0),
        otel_span(
            "chat gpt-4o",
            chat if chat is not None else chat_attributes(),
            trace_id=trace_id,
            span_id=CHAT,
            parent=ROOT,
            start=T0 + 1_000_000,
        ),
        otel_span(
            "execute_tool t",
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"},
            trace_id=trace_id,
            span_id=TOOL,
            parent=ROOT,
            start=T0 + 2_000_000,
        ),
    ]


class Recorder:
    """A mapper that remembers every span it was given, mapping them as usual."""

    def __init__(self) -> None:
        self.seen: dict[str, OtlpSpan] = {}

    def __call__(self, span: OtlpSpan) -> MappedSpan:
        self.seen[span.span_id] = span
        return map_span(span)


@pytest.fixture
def trail(settings: Settings) -> Iterator[Trail]:
    with Trail(settings, sync=True) as t:
        yield t


def finalise(assembler: TraceAssembler, trail: Trail) -> None:
    assembler.finalise_rooted()
    trail.flush()


# -- the bytes marker ---------------------------------------------------------------------------


def test_a_callers_bytes_marker_lookalike_is_stored_as_sent_and_bytes_still_round_trip(
    settings: Settings, trail: Trail
) -> None:
    recorder = Recorder()
    assembler = TraceAssembler(trail, grace_s=0.0, mapper=recorder)
    lookalikes = {
        "custom.marker": {"$bytes": "zz"},
        "custom.hex": {"$bytes": "00ff"},  # valid hex: still the caller's dict, not bytes
        "custom.escaped": {"$escaped": {"$bytes": "zz"}},
        "custom.nested": [{"$bytes": "zz", "other": 1}, {"$escaped": 3}],
    }
    raw = {"custom.raw": b"\x00\xffpgtrail", "custom.deep": {"inner": [b"\x01"]}}
    spans = small_trace(chat=chat_attributes(**lookalikes, **raw))
    assert assembler.accept(spans) == 3
    finalise(assembler, trail)
    assembler.close()

    assert processes(settings.dsn, TRACE) == [ROOT, CHAT, TOOL]
    held = recorder.seen[CHAT].attributes
    assert {k: held[k] for k in lookalikes} == lookalikes
    assert held["custom.raw"] == b"\x00\xffpgtrail"
    assert held["custom.deep"] == {"inner": [b"\x01"]}
    stored = one(
        settings.dsn,
        "SELECT particular_data->'attributes' FROM logs_llm_execution WHERE span_id = %s",
        CHAT,
    )
    assert {k: stored[k] for k in lookalikes} == lookalikes


def test_a_span_that_cannot_be_read_back_costs_only_itself(
    settings: Settings, trail: Trail, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assembler = TraceAssembler(trail, grace_s=0.0)
    assert assembler.accept(small_trace()) == 3
    # Whatever a span's blob turned into in Redis, its trace is finalised without it.
    namespace = database_namespace(settings.dsn, settings.db_schema)
    client = redis.Redis.from_url(redis_url)
    key = f"{settings.redis_prefix}otlp:t:{namespace}:{TRACE}:spans"
    assert client.hexists(key, CHAT)
    client.hset(key, CHAT, b'["not", "a span"]')
    client.close()

    with caplog.at_level(logging.ERROR, logger="pgtrail"):
        finalise(assembler, trail)
    assembler.close()

    assert processes(settings.dsn, TRACE) == [ROOT, TOOL]
    assert f"span {CHAT} of trace {TRACE} cannot be read back" in caplog.text
    assert one(settings.dsn, "SELECT count(*) FROM logs_agent_execution") == 1  # the tool


def test_a_span_whose_records_cannot_be_made_costs_only_its_records(
    settings: Settings, trail: Trail, caplog: pytest.LogCaptureFixture
) -> None:
    def mapper(span: OtlpSpan) -> MappedSpan:
        mapped = map_span(span)
        if span.span_id != CHAT:
            return mapped
        broken = MappedRecord("logs_llm_execution", {}, created_at="not a time")  # type: ignore[arg-type]
        return MappedSpan(mapped.process_name, mapped.status, mapped.error, (broken,))

    assembler = TraceAssembler(trail, grace_s=0.0, mapper=mapper)
    assembler.accept(small_trace())
    with caplog.at_level(logging.ERROR, logger="pgtrail"):
        finalise(assembler, trail)
    assembler.close()

    assert processes(settings.dsn, TRACE) == [ROOT, CHAT, TOOL]
    assert one(settings.dsn, "SELECT count(*) FROM logs_agent_execution") == 1
    assert f"span {CHAT} of trace {TRACE}" in caplog.text


# -- through the receiver -------------------------------------------------------------------------


@pytest.fixture
def receiver(settings: Settings) -> Iterator[OtlpReceiver]:
    trail = Trail(settings)
    running = OtlpReceiver(trail, port=0, grace_s=0.3, max_body_bytes=64 * 1024 * 1024).start()
    yield running
    running.shutdown()
    trail.close()


def settled(receiver: OtlpReceiver) -> None:
    time.sleep(receiver.assembler.grace_s + 0.1)
    receiver.assembler.finalise_due()
    receiver.trail.flush()


def post(receiver: OtlpReceiver, body: bytes, content_type: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=60)
    conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    return response.status, answer


def post_json(receiver: OtlpReceiver, *spans: Any) -> tuple[int, dict[str, Any]]:
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [{"scope": {"name": "hostile"}, "spans": list(spans)}],
            }
        ]
    }
    body = json.dumps(request).replace(json.dumps(DEEP), nested_kvlist(10_000))
    status, answer = post(receiver, body.encode(), "application/json")
    return status, json.loads(answer)


DEEP = {"stringValue": "stands for 10,000 nested kvlists"}


def nested_kvlist(depth: int) -> str:
    """An AnyValue of ``depth`` nested kvlists, as JSON text (too deep for json.dumps)."""
    opening = '{"kvlistValue": {"values": [{"key": "k", "value": '
    return opening * depth + '{"intValue": "1"}' + "}]}}" * depth


def json_span(
    span_id: Any, name: str, parent: str = "", attributes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(T0),
        "endTimeUnixNano": str(T0 + 1_000_000),
        "attributes": attributes or [],
    }


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def json_chat(span_id: str, input_tokens: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    return json_span(
        span_id,
        "chat gpt-4o",
        ROOT,
        [
            kv("gen_ai.operation.name", {"stringValue": "chat"}),
            kv("gen_ai.request.model", {"stringValue": "gpt-4o"}),
            kv("gen_ai.usage.input_tokens", input_tokens),
            *extra,
        ],
    )


def test_a_json_kvlist_that_looks_like_the_bytes_marker_is_stored_with_its_trace(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    marker = {"kvlistValue": {"values": [kv("$bytes", {"stringValue": "zz"})]}}
    raw = {"bytesValue": base64.b64encode(b"\x00\x01").decode()}
    status, answer = post_json(
        receiver,
        json_span(ROOT, "invoke_workflow w"),
        json_chat(CHAT, {"intValue": "5"}, kv("custom.marker", marker), kv("custom.raw", raw)),
    )
    assert (status, answer) == (200, {})
    settled(receiver)

    assert processes(settings.dsn, TRACE) == [ROOT, CHAT]
    stored = one(
        settings.dsn,
        "SELECT particular_data->'attributes' FROM logs_llm_execution WHERE span_id = %s",
        CHAT,
    )
    assert stored["custom.marker"] == {"$bytes": "zz"}


def test_absurd_json_values_never_lose_the_other_spans_of_their_request(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    huge = "x" * (10 * 1024 * 1024)
    wrong_trace = json_span("0b0b0b0b0b0b0b01", "wrong trace id type", ROOT)
    wrong_trace["traceId"] = 1234
    wrong_span = json_span(["0b0b0b0b0b0b0b02"], "wrong span id type", ROOT)
    not_hex = json_span("not-hex-at-all!!", "span id not hex", ROOT)
    status, answer = post_json(
        receiver,
        json_span(ROOT, "invoke_workflow w"),
        wrong_trace,
        wrong_span,
        not_hex,
        "a span that is a string",
        json_chat(CHAT, {"doubleValue": "NaN"}, kv("score", {"doubleValue": "NaN"})),
        json_span(TOOL, "huge", ROOT, [kv("blob", {"stringValue": huge})]),
        json_span(EXTRA, "deep", ROOT, [kv("deep", DEEP)]),
    )
    assert status == 200
    assert answer["partialSuccess"]["rejectedSpans"] == "4"
    assert "traceId must be a string" in answer["partialSuccess"]["errorMessage"]
    settled(receiver)

    assert sorted(processes(settings.dsn, TRACE)) == sorted([ROOT, CHAT, TOOL, EXTRA])
    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution WHERE span_id = %s", CHAT)
    assert receiver.trail.stats.rejected == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (json_chat(CHAT, {"intValue": "NaN"}), "gen_ai.usage.input_tokens"),
        ({**json_span(CHAT, "chat", ROOT), "startTimeUnixNano": "NaN"}, "startTimeUnixNano"),
        ({**json_span(CHAT, "chat", ROOT), "kind": "SPAN_KIND_WEIRD"}, "SPAN_KIND_WEIRD"),
    ],
)
def test_a_json_span_with_malformed_fields_gets_a_400_naming_it(
    settings: Settings, receiver: OtlpReceiver, redis_url: str, bad: dict[str, Any], reason: str
) -> None:
    status, answer = post_json(receiver, json_span(ROOT, "invoke_workflow w"), bad)
    assert status == 400
    assert f"span {CHAT} of trace {TRACE}" in answer["message"]
    assert reason in answer["message"]
    settled(receiver)
    assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == 0
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(f"{settings.redis_prefix}otlp:t:*")) == []
    client.close()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    length = len(payload)
    size = bytearray()
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(size) + payload


def _deep_any_value(depth: int) -> bytes:
    """An AnyValue of ``depth`` nested arrays (AnyValue.array_value 5, ArrayValue.values 1)."""
    value = b"\x18\x01"  # int_value = 1
    for _ in range(depth):
        value = _field(5, _field(1, value))
    return value


def pb_span(span_id: str, name: str, parent: str | None) -> Span:
    return Span(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 1_000_000,
    )


def pb_request(spans: list[bytes]) -> bytes:
    """A request of one resource and scope holding the given encoded spans."""
    resource = Resource()
    resource.attributes.add(key="service.name").value.string_value = "svc"
    scope = _field(1, InstrumentationScope(name="hostile").SerializeToString())
    scope += b"".join(_field(2, span) for span in spans)
    return _field(1, _field(1, resource.SerializeToString()) + _field(2, scope))


def hostile_protobuf_spans() -> list[bytes]:
    """A good root and model call (its token count NaN), then four spans that do not decode."""
    chat = pb_span(CHAT, "chat gpt-4o", ROOT)
    chat.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
    chat.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o"
    chat.attributes.add(key="gen_ai.usage.input_tokens").value.double_value = float("nan")
    bad_name = pb_span("0c0c0c0c0c0c0c01", "BAD-NAME", ROOT).SerializeToString()
    bad_value = pb_span("0c0c0c0c0c0c0c02", "bad attribute", ROOT)
    bad_value.attributes.add(key="a").value.string_value = "BAD-VALUE"
    deep = pb_span("0c0c0c0c0c0c0c03", "deep", ROOT).SerializeToString()
    deep += _field(9, _field(1, b"deep") + _field(2, _deep_any_value(10_000)))
    # The trace id carried as a varint instead of bytes (field 1, wire type 0).
    wrong = b"\x08\x07" + _field(2, bytes.fromhex("0c0c0c0c0c0c0c04")) + _field(5, b"wrong")
    return [
        pb_span(ROOT, "invoke_workflow w", None).SerializeToString(),
        chat.SerializeToString(),
        bad_name.replace(b"BAD-NAME", b"BAD\xff\xfeAME"),  # same length, not UTF-8
        bad_value.SerializeToString().replace(b"BAD-VALUE", b"\xc3\x28BAD-VAL"),
        deep,
        wrong,
    ]


def test_absurd_protobuf_spans_never_lose_the_other_spans_of_their_request(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    body = pb_request(hostile_protobuf_spans())
    with pytest.raises(Exception, match="Error parsing message"):
        ExportTraceServiceRequest.FromString(body)  # the parser refuses the request whole
    status, answer = post(receiver, body, "application/x-protobuf")
    response = ExportTraceServiceResponse.FromString(answer)
    assert (status, response.partial_success.rejected_spans) == (200, 4)
    assert "span 0c0c0c0c0c0c0c01 of trace " + TRACE in response.partial_success.error_message
    settled(receiver)

    assert processes(settings.dsn, TRACE) == [ROOT, CHAT]
    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution WHERE span_id = %s", CHAT)


def test_a_protobuf_request_of_one_undecodable_span_gets_a_400_naming_it(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    span = pb_span(ROOT, "BAD-NAME", None).SerializeToString()
    body = pb_request([span.replace(b"BAD-NAME", b"BAD\xff\xfeAME")])
    status, answer = post(receiver, body, "application/x-protobuf")
    assert status == 400
    assert f"span {ROOT} of trace {TRACE}" in answer.decode(errors="replace")
    assert b"bad UTF-8" in answer


# -- one Redis, two databases --------------------------------------------------------------------


def test_the_namespace_names_the_database_and_schema_never_the_password() -> None:
    base = database_namespace("host=DB.example port=5432 dbname=logs user=a password=one", "s")
    assert base == database_namespace("postgresql://a:two@db.example/logs", "s")
    assert base == database_namespace("host=db.example dbname=logs user=b", "s")
    assert len(base) == 12 and "one" not in base
    others = {
        database_namespace("host=db.example dbname=other", "s"),
        database_namespace("host=db.example port=5433 dbname=logs", "s"),
        database_namespace("host=db2.example dbname=logs", "s"),
        database_namespace("host=db.example dbname=logs", "public"),
    }
    assert base not in others and len(others) == 4


@pytest.fixture
def second_settings(settings: Settings, empty_db_dsn: str, tmp_path: Path) -> Settings:
    """Another migrated database, on the same Redis with the same key prefix."""
    migrate(Settings(dsn=empty_db_dsn, redis_url=None))
    return settings.model_copy(update={"dsn": empty_db_dsn, "spool_dir": tmp_path / "spool2"})


def test_receivers_on_two_databases_sharing_redis_never_cross_traces(
    settings: Settings, second_settings: Settings
) -> None:
    only_a, only_b, both = ("a" * 31 + "1"), ("b" * 31 + "1"), ("c" * 31 + "1")
    spans_a = small_trace(only_a) + small_trace(both)
    b_root, b_child = "0d0d0d0d0d0d0d01", "0d0d0d0d0d0d0d02"
    spans_b = [
        *small_trace(only_b),
        otel_span("b root", {}, trace_id=both, span_id=b_root, parent=None, start=T0),
        otel_span("b child", {}, trace_id=both, span_id=b_child, parent=b_root, start=T0 + 5),
    ]
    with Trail(settings, sync=True) as trail_a, Trail(second_settings, sync=True) as trail_b:
        a1 = TraceAssembler(trail_a, grace_s=0.0)
        a2 = TraceAssembler(trail_a, grace_s=0.0)  # a second receiver on database A
        b = TraceAssembler(trail_b, grace_s=0.0)
        # Half of A's spans; B, with nothing of its own yet, finalises all it can see.
        a1.accept(spans_a[1::2])
        assert b.finalise_rooted() == [] and b.finalise_idle(0.0) == []
        # B's spans, the same trace id among them, in two requests; A's other half through
        # A's other receiver.
        b.accept(spans_b[1::2])
        b.accept(spans_b[0::2])
        a2.accept(spans_a[0::2])
        for assembler, trail in ((b, trail_b), (a2, trail_a), (a1, trail_a)):
            assembler.finalise_rooted()
            assembler.finalise_idle(0.0)
            trail.flush()
        for assembler in (a1, a2, b):
            assembler.close()

    spans = sorted([ROOT, CHAT, TOOL])
    assert executions(settings.dsn) == {only_a: spans, both: spans}
    assert executions(second_settings.dsn) == {only_b: spans, both: sorted([b_root, b_child])}
    assert rows(settings.dsn, "SELECT span_id FROM logs_agent_execution ORDER BY 1") == [
        (TOOL,),
        (TOOL,),
    ]
