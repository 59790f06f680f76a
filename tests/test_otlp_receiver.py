"""The OTLP/HTTP receiver, fed by the real OpenTelemetry SDK and by hand-written requests."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from dbrows import one, rows
from pgtrail.config import Settings
from pgtrail.errors import OtlpDecodeError
from pgtrail.otlp.decode import decode_json, decode_protobuf
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail
from pgtrail.writer.spool import Spool

TOKEN = "test-token-7f3a"
TABLES = ("logs_execution", "logs_llm_execution", "logs_agent_execution", "logs_user_journey")
SYSTEM_PROMPT = "You are the support desk of Acme. Be brief and precise. " * 40


def counts(dsn: str) -> dict[str, int]:
    return {t: int(one(dsn, f"SELECT count(*) FROM {t}")) for t in TABLES}


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def settled(receiver: OtlpReceiver) -> None:
    """Lets the grace period pass, finalises what is due and writes it."""
    time.sleep(receiver.assembler.grace_s + 0.1)
    receiver.assembler.finalise_due()
    receiver.trail.flush()


@pytest.fixture
def receiver(settings: Settings) -> Iterator[OtlpReceiver]:
    trail = Trail(settings)
    running = OtlpReceiver(
        trail, port=0, token=TOKEN, grace_s=0.3, max_body_bytes=256 * 1024
    ).start()
    yield running
    running.shutdown()
    trail.close()


def sdk_provider(receiver: OtlpReceiver, service: str) -> TracerProvider:
    """A TracerProvider exporting with the SDK's own OTLP/HTTP exporter (protobuf, gzip)."""
    exporter = OTLPSpanExporter(
        endpoint=receiver.endpoint,
        headers={"Authorization": f"Bearer {TOKEN}"},
        compression=Compression.Gzip,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def support_conversation(gateway: Tracer, worker: Tracer) -> str:
    """Triage calls a model and a tool, hands off to billing, which answers. Returns trace id.

    The gateway service runs the workflow and the agents; the worker service makes the
    model and tool calls (one service when both tracers come from one provider).
    """
    with gateway.start_as_current_span(
        "invoke_workflow support",
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": "support",
            "user.id": "u-42",
            "tenant.id": "acme",
            "gen_ai.conversation.id": "conv-7",
            "gen_ai.input.messages": messages("user", "Where is the refund for order 17?"),
            "gen_ai.output.messages": messages("assistant", "It was issued today."),
        },
    ) as root:
        with gateway.start_as_current_span(
            "invoke_agent triage",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
        ):
            with worker.start_as_current_span(
                "chat gpt-4o",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 80,
                    "gen_ai.usage.cache_read.input_tokens": 200,
                    "gen_ai.system_instructions": json.dumps(
                        [{"type": "text", "content": SYSTEM_PROMPT}]
                    ),
                    "gen_ai.input.messages": messages("user", "Where is the refund for order 17?"),
                },
            ):
                time.sleep(0.002)
            with worker.start_as_current_span(
                "execute_tool lookup_order",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup_order",
                    "gen_ai.tool.call.id": "call_1",
                    "gen_ai.tool.call.arguments": '{"order": 17}',
                    "gen_ai.tool.call.result": '{"status": "refund_pending"}',
                },
            ):
                time.sleep(0.002)
            with worker.start_as_current_span(
                "execute_tool transfer_to_billing",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "transfer_to_billing",
                    "gen_ai.agent.name": "triage",
                },
            ):
                time.sleep(0.002)
        with (
            gateway.start_as_current_span(
                "invoke_agent billing",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "billing",
                },
            ),
            worker.start_as_current_span(
                "chat gpt-4o-mini",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 300,
                    "gen_ai.usage.output_tokens": 40,
                },
            ),
        ):
            time.sleep(0.002)
        return f"{root.get_span_context().trace_id:032x}"


def assert_support_conversation_stored(dsn: str, trace_id: str) -> None:
    execution_id = uuid.UUID(hex=trace_id)
    assert counts(dsn)["logs_execution"] == 1
    workflow, status, tenant, user, session, processes = one(
        dsn,
        "SELECT workflow, status, tenant_id, user_id, session_id, processes_executed "
        "FROM logs_execution WHERE execution_id = %s",
        execution_id,
    )
    assert (workflow, status, tenant, user, session) == (
        "support",
        "success",
        "acme",
        "u-42",
        "conv-7",
    )
    assert [(p["name"], p["nesting_level"]) for p in processes] == [
        ("invoke_workflow support", 0),
        ("invoke_agent triage", 1),
        ("chat gpt-4o", 2),
        ("execute_tool lookup_order", 2),
        ("execute_tool transfer_to_billing", 2),
        ("invoke_agent billing", 1),
        ("chat gpt-4o-mini", 2),
    ]
    span_of = {p["name"]: p["span_id"] for p in processes}

    llm = rows(
        dsn,
        "SELECT span_id, provider, model_target, input_tokens, output_tokens, "
        "cached_input_tokens, agent_type, prompt_hash, total_cost, execution_id, user_id, "
        "tenant_id FROM logs_llm_execution ORDER BY created_at",
    )
    assert [r[:7] for r in llm] == [
        (span_of["chat gpt-4o"], "openai", "gpt-4o-2024-08-06", 1200, 80, 200, "triage"),
        (span_of["chat gpt-4o-mini"], "openai", "gpt-4o-mini", 300, 40, None, "billing"),
    ]
    assert all(r[9:] == (execution_id, "u-42", "acme") for r in llm)
    body = one(dsn, "SELECT body FROM pgtrail_prompt WHERE prompt_hash = %s", llm[0][7])
    assert SYSTEM_PROMPT in body

    agent = rows(
        dsn,
        "SELECT event_type, agent_type, span_id, particular_data FROM logs_agent_execution "
        "ORDER BY created_at",
    )
    kinds = [(r[0], r[1]) for r in agent]
    assert ("workflow_run", None) in kinds
    assert ("agent_run", "triage") in kinds
    assert ("agent_run", "billing") in kinds
    tool = next(r for r in agent if r[0] == "tool_call" and r[3]["tool"] == "lookup_order")
    assert (tool[1], tool[2], tool[3]["call_id"]) == (
        "triage",
        span_of["execute_tool lookup_order"],
        "call_1",
    )
    handoff = next(r for r in agent if r[0] == "handoff")
    assert (handoff[3]["from_agent"], handoff[3]["to_agent"]) == ("triage", "billing")

    journey = rows(
        dsn,
        "SELECT event_type, span_id, particular_data->>'workflow', execution_id, user_id "
        "FROM logs_user_journey ORDER BY created_at",
    )
    assert [(j[0], j[1], j[2]) for j in journey] == [
        ("request_received", span_of["invoke_workflow support"], "support"),
        ("request_completed", span_of["invoke_workflow support"], "support"),
    ]
    assert {j[3:] for j in journey} == {(execution_id, "u-42")}


def test_the_sdk_otlp_exporter_fills_all_four_tables_with_a_multi_agent_trace(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    provider = sdk_provider(receiver, "support-bot")
    tracer = provider.get_tracer("support")
    trace_id = support_conversation(tracer, tracer)
    assert provider.force_flush(10_000)
    settled(receiver)

    assert_support_conversation_stored(settings.dsn, trace_id)
    assert receiver.stats.spans_accepted == 7
    assert receiver.trail.stats.rejected == 0
    provider.shutdown()


def test_one_trace_exported_by_two_services_lands_as_one_execution(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    gateway = sdk_provider(receiver, "gateway")
    worker = sdk_provider(receiver, "worker")
    trace_id = support_conversation(gateway.get_tracer("gateway"), worker.get_tracer("worker"))
    # The gateway's spans (with the root) arrive first, the worker's a moment later.
    assert gateway.force_flush(10_000)
    assert worker.force_flush(10_000)
    settled(receiver)

    assert_support_conversation_stored(settings.dsn, trace_id)
    services = {
        r[0]
        for r in rows(settings.dsn, "SELECT particular_data->>'service' FROM logs_llm_execution")
    }
    assert receiver.stats.requests >= 2
    assert services <= {"worker", None}
    gateway.shutdown()
    worker.shutdown()


def test_spans_delivered_twice_store_once(settings: Settings, receiver: OtlpReceiver) -> None:
    captured = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("support")
    trace_id = support_conversation(tracer, tracer)
    spans: tuple[ReadableSpan, ...] = captured.get_finished_spans()
    exporter = OTLPSpanExporter(
        endpoint=receiver.endpoint, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    exporter.export(spans)
    exporter.export(spans)  # a retry before the trace is finalised
    settled(receiver)
    stored = counts(settings.dsn)
    exporter.export(spans)  # and a retry after
    settled(receiver)

    assert counts(settings.dsn) == stored
    assert_support_conversation_stored(settings.dsn, trace_id)
    assert receiver.trail.stats.rejected == 0
    exporter.shutdown()  # type: ignore[no-untyped-call]


def post(
    receiver: OtlpReceiver,
    body: bytes,
    *,
    content_type: str = "application/x-protobuf",
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    path: str = "/v1/traces",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    sent = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=body, headers=sent)
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), answer


def json_request(*spans: dict[str, Any], service: str = "json-service") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "hand-written"}, "spans": list(spans)}],
            }
        ]
    }


NOW_NS = time.time_ns() - 10_000_000_000
JSON_TRACE = "5b8efff798038103d269b633813fc60c"


def json_span(
    span_id: str, name: str, parent: str = "", attributes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "traceId": JSON_TRACE.upper(),  # hex is case-insensitive
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": "SPAN_KIND_INTERNAL",
        "startTimeUnixNano": str(NOW_NS),
        "endTimeUnixNano": str(NOW_NS + 1_500_000_000),
        "attributes": attributes or [],
        "status": {"code": "STATUS_CODE_OK"},
    }


def chat_attributes(input_tokens: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    input_tokens = input_tokens or {"intValue": "812"}
    return [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": input_tokens},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 64}},
    ]


def test_otlp_json_with_hex_ids_and_string_integers_is_stored(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    body = json_request(
        json_span("eee19b7ec3c1b174", "invoke_agent assistant"),
        json_span("eee19b7ec3c1b175", "chat", "eee19b7ec3c1b174", chat_attributes()),
    )
    status, headers, answer = post(
        receiver,
        gzip.compress(json.dumps(body).encode()),
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert (status, headers["Content-Type"], json.loads(answer)) == (200, "application/json", {})
    settled(receiver)
    execution_id, span_id, tokens, output = one(
        settings.dsn,
        "SELECT execution_id, span_id, input_tokens, output_tokens FROM logs_llm_execution",
    )
    assert (execution_id, span_id, tokens, output) == (
        uuid.UUID(hex=JSON_TRACE),
        "eee19b7ec3c1b175",
        812,
        64,
    )


def test_a_malformed_body_gets_400_with_the_reason_and_stores_nothing(
    settings: Settings, receiver: OtlpReceiver, redis_url: str
) -> None:
    status, _, answer = post(receiver, b"\xff\xff\xff\xff not protobuf")
    assert status == 400
    assert "not a protobuf ExportTraceServiceRequest" in _status_message(answer)

    # A good span, then one whose integer is not a number: the request is refused whole.
    body = json_request(
        json_span("aaa19b7ec3c1b174", "invoke_agent assistant"),
        json_span(
            "aaa19b7ec3c1b175", "chat", "aaa19b7ec3c1b174", chat_attributes({"intValue": "lots"})
        ),
    )
    status, _, answer = post(receiver, json.dumps(body).encode(), content_type="application/json")
    assert status == 400
    reason = json.loads(answer)["message"]
    assert "gen_ai.usage.input_tokens" in reason and "'lots'" in reason

    status, _, answer = post(receiver, b'{"resourceSpans": 3}', content_type="application/json")
    assert (status, json.loads(answer)["message"]) == (
        400,
        "resourceSpans must be a JSON array, not a number",
    )
    settled(receiver)
    assert counts(settings.dsn) == dict.fromkeys(TABLES, 0)
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(f"{settings.redis_prefix}otlp:t:*")) == []
    client.close()


def test_an_oversized_body_gets_413(settings: Settings, receiver: OtlpReceiver) -> None:
    status, headers, answer = post(receiver, b"\x00" * (256 * 1024 + 1))
    assert status == 413
    assert "256,000" not in _status_message(answer)
    assert "262,144-byte limit" in _status_message(answer)
    assert headers.get("Connection") == "close"
    # Small on the wire, too large once inflated.
    bomb = gzip.compress(b"\x00" * (2 * 1024 * 1024))
    status, _, _ = post(receiver, bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413


def test_a_missing_or_wrong_token_gets_401(settings: Settings, receiver: OtlpReceiver) -> None:
    body = ExportTraceServiceRequest().SerializeToString()
    for token in (None, "wrong-token"):
        status, headers, answer = post(receiver, body, token=token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert _status_message(answer) == "missing or wrong bearer token"
    status, _, _ = post(receiver, body)
    assert status == 200


def test_unsupported_types_paths_and_methods_are_refused(receiver: OtlpReceiver) -> None:
    assert post(receiver, b"x", content_type="text/plain")[0] == 415
    assert post(receiver, b"x", headers={"Content-Encoding": "br"})[0] == 415
    assert post(receiver, b"", path="/v1/metrics")[0] == 404
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    conn.request("GET", "/v1/traces")
    response = conn.getresponse()
    assert (response.status, response.getheader("Allow")) == (405, "POST")
    conn.close()


def test_invalid_spans_are_reported_as_partial_success(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    bad = json_span("bbb19b7ec3c1b174", "no trace id")
    bad["traceId"] = ""
    good = json_span("bbb19b7ec3c1b175", "invoke_agent assistant")
    status, _, answer = post(
        receiver, json.dumps(json_request(bad, good)).encode(), content_type="application/json"
    )
    partial = json.loads(answer)["partialSuccess"]
    assert (status, partial["rejectedSpans"]) == (200, "1")
    assert "'no trace id'" in partial["errorMessage"]
    settled(receiver)
    assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == 1

    # The protobuf answer carries the same, as an ExportTraceServiceResponse.
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.spans.add(trace_id=b"\x00" * 16, span_id=b"\x01" * 8, name="zero trace")
    status, _, answer = post(receiver, request.SerializeToString())
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer)
    assert (status, response.partial_success.rejected_spans) == (200, 1)


def _status_message(answer: bytes) -> str:
    """The message of a google.rpc.Status in the protobuf encoding (fields 1 and 2)."""
    assert answer[0] == 0x08
    position = 2  # the code fits one byte
    assert answer[position] == 0x12
    length, shift, position = 0, 0, position + 1
    while True:
        byte = answer[position]
        length |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            break
        shift += 7
    return answer[position : position + length].decode()


def test_json_any_values_decode_to_python() -> None:
    span = json_span("ccc19b7ec3c1b174", "values")
    span["attributes"] = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "-9007199254740993"}},
        {"key": "d", "value": {"doubleValue": 0.25}},
        {"key": "inf", "value": {"doubleValue": "Infinity"}},
        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
        {
            "key": "list",
            "value": {"arrayValue": {"values": [{"intValue": 1}, {"stringValue": "x"}]}},
        },
        {
            "key": "map",
            "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}},
        },
        {"key": "empty", "value": {}},
    ]
    span["events"] = [{"timeUnixNano": "1700000000000000001", "name": "gen_ai.evaluation.result"}]
    decoded = decode_json(json.dumps(json_request(span)).encode())
    (only,) = decoded.spans
    assert only.attributes == {
        "s": "text",
        "b": True,
        "i": -9007199254740993,
        "d": 0.25,
        "inf": float("inf"),
        "raw": b"\x00\x01",
        "list": [1, "x"],
        "map": {"k": False},
        "empty": None,
    }
    assert (only.trace_id, only.parent_span_id, only.kind, only.status_code) == (
        JSON_TRACE,
        None,
        1,
        1,
    )
    assert only.events[0].time_unix_nano == 1700000000000000001
    assert only.resource == {"service.name": "json-service"}
    assert only.scope == "hand-written"


def test_snake_case_json_and_protobuf_decode_alike() -> None:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "svc"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "lib"
    span = scope_spans.spans.add(
        trace_id=bytes.fromhex(JSON_TRACE),
        span_id=bytes.fromhex("ddd19b7ec3c1b174"),
        name="n",
        kind=3,
        start_time_unix_nano=5,
        end_time_unix_nano=9,
    )
    span.attributes.add(key="n").value.int_value = 7
    span.status.code = 2
    span.status.message = "boom"
    from_pb = decode_protobuf(request.SerializeToString()).spans
    snake = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "svc"}}]
                },
                "scope_spans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "trace_id": JSON_TRACE,
                                "span_id": "ddd19b7ec3c1b174",
                                "name": "n",
                                "kind": 3,
                                "start_time_unix_nano": 5,
                                "end_time_unix_nano": "9",
                                "attributes": [{"key": "n", "value": {"int_value": "7"}}],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    assert decode_json(json.dumps(snake).encode()).spans == from_pb


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "request must be a JSON object, not an array"),
        (b"{", "not valid JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            "traceId must be hex digits",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_WEIRD"}]}]}]}',
            "unknown value 'SPAN_KIND_WEIRD'",
        ),
    ],
)
def test_malformed_json_says_where(body: bytes, reason: str) -> None:
    with pytest.raises(OtlpDecodeError, match=reason):
        decode_json(body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_pgtrail_otlp_serve_runs_until_sigterm_and_finalises_on_the_way_out(
    settings: Settings,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PGTRAIL_DSN": settings.dsn,
        "PGTRAIL_REDIS_URL": str(settings.redis_url),
        "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
        "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
        "PGTRAIL_OTLP_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(port)),
            *("--no-grpc", "--grace", "1h"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _port_open(port))
        body = json_request(json_span("fff19b7ec3c1b174", "invoke_agent assistant"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/v1/traces",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1/traces (bearer token required)" in out
    # The grace period was an hour: the trace was finalised because the receiver stopped.
    assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == 1


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_while_postgresql_is_away_spans_go_to_the_spool_and_are_replayed(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(
        update={"dsn": "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=1"}
    )
    trail = Trail(unreachable)
    # Without the journal (a durable receiver answers 503 instead: tests/test_otlp_durable.py).
    receiver = OtlpReceiver(trail, port=0, grace_s=0.1, durable=False).start()
    try:
        body = json_request(
            json_span("abc19b7ec3c1b174", "invoke_agent assistant"),
            json_span("abc19b7ec3c1b175", "chat", "abc19b7ec3c1b174", chat_attributes()),
        )
        status, _, _ = post(receiver, json.dumps(body).encode(), content_type="application/json")
        assert status == 200  # accepted: the exporter does not have to hold on to the spans
        settled(receiver)
    finally:
        receiver.shutdown()
        trail.close()
    assert Spool(settings.spool_dir).pending_rows() >= 4  # execution, LLM call, agent, journey

    with Trail(settings, sync=True) as back:
        back.replay_spool()
    stored = counts(settings.dsn)
    assert stored["logs_execution"] == 1
    assert stored["logs_llm_execution"] == 1
    assert one(settings.dsn, "SELECT input_tokens FROM logs_llm_execution") == 812
