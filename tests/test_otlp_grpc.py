"""OTLP/gRPC on the receiver, fed by the OpenTelemetry SDK's gRPC exporter and by hand-made
calls, judged by the rows PostgreSQL holds and the status codes clients see."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import grpc
import psycopg
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dbrows import one, rows
from otlp_builders import receivers
from pgtrail.config import Settings
from pgtrail.ops.devservices import LocalRedis
from pgtrail.otlp.server import OtlpReceiver, ServerLimits
from pgtrail.trail import Trail
from test_otlp_receiver import assert_support_conversation_stored, support_conversation

TOKEN = "grpc-token-9d41"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TABLES = ("logs_execution", "logs_llm_execution", "logs_agent_execution", "logs_user_journey")
UNREACHABLE = "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=1"
NOW_NS = time.time_ns() - 10_000_000_000


@pytest.fixture
def make_receiver(settings: Settings) -> Iterator[Callable[..., OtlpReceiver]]:
    """Starts receivers serving gRPC on a free port (token, short grace); stops them after."""
    with receivers(settings, token=TOKEN, grace_s=0.2, grpc_port=0) as make:
        yield make


class Answer:
    """What a hand-made ``Export`` call got back."""

    def __init__(
        self, code: grpc.StatusCode, details: str, body: bytes, trailing: dict[str, Any]
    ) -> None:
        self.code = code
        self.details = details
        self.body = body
        self.trailing = trailing


def export(
    receiver: OtlpReceiver,
    body: bytes,
    *,
    token: str | None = TOKEN,
    compression: grpc.Compression | None = None,
    timeout: float = 20.0,
) -> Answer:
    """One ``TraceService/Export`` call with ``body`` as the request's bytes."""
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT)
        try:
            response, done = call.with_call(
                body, metadata=metadata, timeout=timeout, compression=compression
            )
        except grpc.RpcError as exc:
            failed = cast(grpc.Call, exc)
            trailing = dict(failed.trailing_metadata() or ())
            return Answer(failed.code(), failed.details() or "", b"", trailing)
        return Answer(done.code(), "", response, {})


def span_request(trace_id: str, *spans: tuple[str, str, str], pad: int = 0) -> bytes:
    """An OTLP/protobuf export of (span id, parent id, name) spans of one trace, the first
    model call among them carrying ``pad`` bytes of prompt."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for span_id, parent, name in spans:
        span = scope_spans.spans.add(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(span_id),
            parent_span_id=bytes.fromhex(parent),
            name=name,
            start_time_unix_nano=NOW_NS,
            end_time_unix_nano=NOW_NS + 1_000_000,
        )
        if name == "chat":
            for key, text in (("gen_ai.operation.name", "chat"), ("gen_ai.prompt", "x" * pad)):
                attribute = span.attributes.add(key=key)
                attribute.value.string_value = text
            tokens = span.attributes.add(key="gen_ai.usage.input_tokens")
            tokens.value.int_value = 21
    encoded: bytes = request.SerializeToString()
    return encoded


def child_of(span_id: str) -> str:
    """A span id other than ``span_id``."""
    return f"{int(span_id, 16) ^ 1:016x}"


def one_trace(trace_id: str, pad: int = 0) -> bytes:
    """A root agent span and a model call under it."""
    root = trace_id[:16]
    return span_request(
        trace_id, (root, "", "invoke_agent assistant"), (child_of(root), root, "chat"), pad=pad
    )


def executions(dsn: str) -> set[str]:
    return {r[0].hex for r in rows(dsn, "SELECT execution_id FROM logs_execution")}


def stored_rows(dsn: str) -> int:
    return sum(int(one(dsn, f"SELECT count(*) FROM {table}")) for table in TABLES)


def settled(receiver: OtlpReceiver) -> None:
    """Lets the grace period pass, finalises what is due and writes it."""
    time.sleep(receiver.assembler.grace_s + 0.1)
    receiver.assembler.finalise_due()
    receiver.trail.flush()


def get(receiver: OtlpReceiver, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def grpc_answers(receiver: OtlpReceiver, code: int) -> int:
    """``pgtrail_otlp_requests_total{route="grpc",code=...}`` as ``/metrics`` shows it."""
    page = get(receiver, "/metrics")[1]
    found = re.search(
        rf'^pgtrail_otlp_requests_total{{route="grpc",code="{code}"}} (\d+)$', page, re.M
    )
    return int(found.group(1)) if found else 0


def table_rows(dsn: str) -> dict[str, list[Any]]:
    """Every row of the four tables as JSON, in event order, less the clock of finalising."""
    return {
        table: [
            r[0]
            for r in rows(
                dsn,
                f"SELECT to_jsonb(t) - 'finalized_at' FROM {table} t ORDER BY event_id",
            )
        ]
        for table in TABLES
    }


def captured_conversation() -> tuple[str, Sequence[ReadableSpan]]:
    """The support conversation's spans as the SDK made them, not yet exported."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("support")
    trace_id = support_conversation(tracer, tracer)
    provider.shutdown()
    return trace_id, memory.get_finished_spans()


# -- the SDK's exporter ----------------------------------------------------------------------------


def test_the_sdk_grpc_exporter_stores_the_same_rows_as_the_http_exporter(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    trace_id, spans = captured_conversation()

    over_grpc = make_receiver()
    exporter = GrpcSpanExporter(
        endpoint=f"http://127.0.0.1:{over_grpc.grpc_port}",
        insecure=True,
        headers=(("authorization", f"Bearer {TOKEN}"),),
        compression=grpc.Compression.Gzip,
    )
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    settled(over_grpc)
    assert_support_conversation_stored(settings.dsn, trace_id)
    by_grpc = table_rows(settings.dsn)
    assert grpc_answers(over_grpc, 0) == 1

    # The same spans over HTTP, into emptied tables, through a fresh Redis namespace.
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    over_http = make_receiver(
        settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}http:"}),
        grpc_port=None,
    )
    http_exporter = HttpSpanExporter(
        endpoint=over_http.endpoint,
        headers={"Authorization": f"Bearer {TOKEN}"},
        compression=HttpCompression.Gzip,
    )
    assert http_exporter.export(spans) is SpanExportResult.SUCCESS
    http_exporter.shutdown()  # type: ignore[no-untyped-call]
    settled(over_http)
    assert table_rows(settings.dsn) == by_grpc
    assert sum(len(found) for found in by_grpc.values()) > 10


def test_http_and_grpc_on_one_receiver_feed_the_same_trace(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver()
    trace = "5a" * 16
    root = trace[:16]
    over_grpc = span_request(trace, (child_of(root), root, "chat"))
    assert export(receiver, over_grpc).code is grpc.StatusCode.OK
    over_http = span_request(trace, (root, "", "invoke_agent assistant"))
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    conn.request(
        "POST",
        "/v1/traces",
        body=over_http,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"},
    )
    assert conn.getresponse().status == 200
    conn.close()
    settled(receiver)

    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    assert sorted(p["name"] for p in processes) == ["chat", "invoke_agent assistant"]
    assert one(settings.dsn, "SELECT input_tokens FROM logs_llm_execution") == 21
    status, health = get(receiver, "/health")
    assert (status, '"grpc":"up"' in health) == (200, True)


# -- refusals ------------------------------------------------------------------------------------


def test_a_missing_or_wrong_token_gets_unauthenticated_and_nothing_is_stored(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver()
    assert export(receiver, one_trace("1b" * 16), token=None).code is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    wrong = export(receiver, one_trace("2c" * 16), token="guessed")
    assert (wrong.code, wrong.details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or wrong bearer token",
    )
    settled(receiver)
    assert stored_rows(settings.dsn) == 0
    assert one(settings.dsn, "SELECT count(*) FROM pgtrail_otlp_span") == 0
    assert grpc_answers(receiver, grpc.StatusCode.UNAUTHENTICATED.value[0]) == 2


def test_bytes_that_are_no_export_request_get_invalid_argument_and_the_channel_goes_on(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver()
    refused = export(receiver, b"\xff\xff\xff\xff not protobuf")
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details
    settled(receiver)
    assert stored_rows(settings.dsn) == 0

    assert export(receiver, one_trace("3d" * 16)).code is grpc.StatusCode.OK
    settled(receiver)
    assert executions(settings.dsn) == {"3d" * 16}


def test_a_span_that_cannot_be_read_is_left_out_and_named_in_partial_success(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver()
    trace = "4e" * 16
    good = one_trace(trace)
    request = ExportTraceServiceRequest.FromString(good)
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = bytes.fromhex(trace)
    bad.span_id = b"\x01\x02"  # not 8 bytes: no span id to store it under
    bad.name = "broken"
    answer = export(receiver, request.SerializeToString())
    assert answer.code is grpc.StatusCode.OK
    response = ExportTraceServiceResponse.FromString(answer.body)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message
    settled(receiver)
    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    assert sorted(p["name"] for p in processes) == ["chat", "invoke_agent assistant"]


def test_a_request_over_the_body_limit_is_refused_compressed_or_not(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver(max_body_bytes=64 * 1024)
    big = one_trace("6f" * 16, pad=100 * 1024)
    assert len(gzip.compress(big)) < 64 * 1024  # small on the wire, too large inflated
    assert export(receiver, big).code is grpc.StatusCode.RESOURCE_EXHAUSTED
    inflated = export(receiver, big, compression=grpc.Compression.Gzip)
    assert inflated.code is grpc.StatusCode.RESOURCE_EXHAUSTED

    fits = one_trace("7a" * 16, pad=32 * 1024)
    assert export(receiver, fits, compression=grpc.Compression.Gzip).code is grpc.StatusCode.OK
    settled(receiver)
    assert executions(settings.dsn) == {"7a" * 16}


def retry_delay(answer: Answer) -> tuple[float, float]:
    """The delay asked for, as ``google.rpc.retryinfo-bin`` and inside the status details."""
    info = RetryInfo.FromString(answer.trailing["google.rpc.retryinfo-bin"])
    status = Status.FromString(answer.trailing["grpc-status-details-bin"])
    assert status.code == answer.code.value[0]
    assert status.message == answer.details
    (detail,) = status.details
    inner = RetryInfo()
    assert detail.Unpack(inner)
    return (
        info.retry_delay.seconds + info.retry_delay.nanos / 1e9,
        inner.retry_delay.seconds + inner.retry_delay.nanos / 1e9,
    )


def test_while_postgresql_is_away_exports_get_unavailable_with_retry_info(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    # A durable receiver's OK follows a commit to the span journal: without one, no OK.
    receiver = make_receiver(settings.model_copy(update={"dsn": UNREACHABLE}))
    answer = export(receiver, one_trace("8b" * 16))
    assert answer.code is grpc.StatusCode.UNAVAILABLE
    assert "retry later" in answer.details
    assert retry_delay(answer) == (5.0, 5.0)
    assert receiver.stats.spans_unjournalled == 2
    assert receiver.stats.spans_accepted == 0


def test_a_stopped_redis_gets_unavailable_with_retry_info(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    local = LocalRedis().start()
    try:
        receiver = make_receiver(settings.model_copy(update={"redis_url": local.url}))
        assert export(receiver, one_trace("8c" * 16)).code is grpc.StatusCode.OK
    finally:
        local.stop()
    answer = export(receiver, one_trace("8d" * 16))
    assert answer.code is grpc.StatusCode.UNAVAILABLE
    assert "retry later" in answer.details
    assert retry_delay(answer) == (5.0, 5.0)


def test_a_full_writer_queue_gets_resource_exhausted_with_retry_info(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    full = [True]
    receiver = make_receiver(queue_depth=lambda: 10**9 if full[0] else 0)
    answer = export(receiver, one_trace("9c" * 16))
    assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in answer.details
    assert retry_delay(answer) == (1.0, 1.0)
    settled(receiver)
    assert stored_rows(settings.dsn) == 0

    full[0] = False  # drained: the retry is taken
    assert export(receiver, one_trace("9c" * 16)).code is grpc.StatusCode.OK
    settled(receiver)
    assert executions(settings.dsn) == {"9c" * 16}


def held_exports(receiver: OtlpReceiver) -> threading.Event:
    """Makes every export wait, once decoded, until the returned event is set."""
    gate = threading.Event()
    accept = receiver.assembler.accept

    def held(spans: Any) -> int:
        gate.wait(30)
        return accept(spans)

    receiver.assembler.accept = held  # type: ignore[method-assign]
    return gate


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_bound_on_exports_in_progress_is_shared_with_http(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver(limits=ServerLimits(max_pending_exports=1))
    gate = held_exports(receiver)
    statuses: list[int] = []

    def post_http() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
        conn.request(
            "POST",
            "/v1/traces",
            body=one_trace("ad" * 16),
            headers={
                "Content-Type": "application/x-protobuf",
                "Authorization": f"Bearer {TOKEN}",
            },
        )
        statuses.append(conn.getresponse().status)
        conn.close()

    holder = threading.Thread(target=post_http)
    holder.start()
    wait_for(lambda: receiver.exports_in_progress == 1)
    busy = export(receiver, one_trace("be" * 16))
    assert busy.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exports are being handled already" in busy.details
    assert retry_delay(busy) == (1.0, 1.0)
    gate.set()
    holder.join(30)
    assert statuses == [200]
    assert export(receiver, one_trace("be" * 16)).code is grpc.StatusCode.OK
    settled(receiver)
    assert executions(settings.dsn) == {"ad" * 16, "be" * 16}


# -- stopping ------------------------------------------------------------------------------------


def test_shutdown_lets_a_call_in_flight_finish_and_stores_its_trace(settings: Settings) -> None:
    trail = Trail(settings)
    receiver = OtlpReceiver(trail, port=0, token=TOKEN, grace_s=3600, grpc_port=0).start()
    gate = held_exports(receiver)
    answers: list[Answer] = []
    caller = threading.Thread(target=lambda: answers.append(export(receiver, one_trace("c1" * 16))))
    caller.start()
    wait_for(lambda: receiver.exports_in_progress == 1)
    stopper = threading.Thread(target=receiver.shutdown)
    stopper.start()
    try:
        time.sleep(0.5)  # shutdown has asked both servers to stop
        late = export(receiver, one_trace("d2" * 16), timeout=3)
        assert late.code is grpc.StatusCode.UNAVAILABLE
        assert caller.is_alive()  # still waiting for its export
    finally:
        gate.set()
        caller.join(30)
        stopper.join(60)
        trail.close()
    assert [a.code for a in answers] == [grpc.StatusCode.OK]
    # The grace period was an hour: the trace was finalised because the receiver stopped.
    assert executions(settings.dsn) == {"c1" * 16}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_sigterm_during_a_stream_of_grpc_calls_keeps_every_acknowledged_trace(
    settings: Settings,
) -> None:
    http_port, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(http_port)),
            *("--grpc-port", str(grpc_port), "--grace", "1h"),
        ],
        env={
            **os.environ,
            "PGTRAIL_DSN": settings.dsn,
            "PGTRAIL_REDIS_URL": str(settings.redis_url),
            "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
            "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
            "PGTRAIL_OTLP_TOKEN": TOKEN,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    metadata = (("authorization", f"Bearer {TOKEN}"),)

    def stream() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EXPORT)
            while not stop.is_set() and server.poll() is None:
                trace = uuid.uuid4().hex
                try:
                    call(one_trace(trace), metadata=metadata, timeout=30)
                except grpc.RpcError:
                    time.sleep(0.01)
                    continue
                with lock:
                    acknowledged.append(trace)

    clients: list[threading.Thread] = []
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert f"OTLP/gRPC on http://127.0.0.1:{grpc_port}" in ready, server.communicate()
        clients = [threading.Thread(target=stream) for _ in range(6)]
        for client in clients:
            client.start()
        time.sleep(1.5)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
            server.communicate()
    for client in clients:
        client.join(30)
    assert server.returncode == 0, err
    assert len(acknowledged) > 20
    # The grace period was an hour: each was finalised because the receiver stopped.
    stored = executions(settings.dsn)
    assert set(acknowledged) <= stored


def test_serve_names_the_grpc_port_when_it_is_taken_and_exits(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(_free_port())),
                *("--grpc-port", str(grpc_port)),
            ],
            env={
                **os.environ,
                "PGTRAIL_DSN": settings.dsn,
                "PGTRAIL_REDIS_URL": str(settings.redis_url),
                "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
                "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert f"cannot listen on 127.0.0.1:{grpc_port} for OTLP/gRPC" in said
    assert "--no-grpc" in said
