"""The receiver's own health: ``/metrics`` and ``/health`` against a real receiver, and
``Trail.metrics()``, judged by what they say after real traffic and real failures."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pgtrail
from dbrows import one
from pgtrail.config import Settings
from pgtrail.ops.devservices import LocalRedis
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail

TOKEN = "metrics-token-2b9e"
NOW_NS = time.time_ns() - 10_000_000_000
UNREACHABLE = "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=1"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(page: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and each family's TYPE; fails on any line it cannot read."""
    samples: Samples = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in page.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"unreadable line {line!r}"
            name, labels, value = match.groups()
            assert name in types and name in helped, f"{name} has no TYPE or HELP"
            key = (name, frozenset(_LABEL.findall(labels or "")))
            samples[key] = float(value)
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def get(receiver: OtlpReceiver, path: str, **headers: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def post(
    receiver: OtlpReceiver,
    body: bytes,
    *,
    content_type: str = "application/json",
    token: str | None = TOKEN,
) -> int:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    sent = {"Content-Type": content_type}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/traces", body=body, headers=sent)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def trace_request(trace_id: str) -> bytes:
    """One OTLP/JSON export of a trace: a root agent span and a model call below it."""

    def span(span_id: str, name: str, parent: str, attributes: list[Any]) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "kind": "SPAN_KIND_INTERNAL",
            "startTimeUnixNano": str(NOW_NS),
            "endTimeUnixNano": str(NOW_NS + 1_000_000_000),
            "attributes": attributes,
            "status": {"code": "STATUS_CODE_OK"},
        }

    chat = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 100}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
    ]
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "metrics"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "t"},
                        "spans": [
                            span(trace_id[:16], "invoke_agent assistant", "", []),
                            span(trace_id[16:][::-1], "chat", trace_id[:16], chat),
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(request).encode()


@pytest.fixture
def receiver(settings: Settings) -> Iterator[OtlpReceiver]:
    # A long grace: traces stay pending until the test finalises them.
    trail = Trail(settings)
    running = OtlpReceiver(trail, port=0, token=TOKEN, grace_s=60.0).start()
    yield running
    running.shutdown()
    trail.close()


def test_metrics_count_requests_spans_rows_and_pending_traces(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    traces = ["a1" * 16, "b2" * 16, "c3" * 16]
    assert [post(receiver, trace_request(t)) for t in traces] == [200, 200, 200]
    assert post(receiver, trace_request("d4" * 16), content_type="text/plain") == 415
    assert post(receiver, trace_request("e5" * 16), token="wrong") == 401

    status, content_type, page = get(receiver, "/metrics")  # no token: none is needed
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    samples, types = parse(page.decode())
    assert value(samples, "pgtrail_otlp_requests_total", route="/v1/traces", code="200") == 3
    assert value(samples, "pgtrail_otlp_requests_total", route="/v1/traces", code="415") == 1
    assert value(samples, "pgtrail_otlp_requests_total", route="/v1/traces", code="401") == 1
    assert value(samples, "pgtrail_otlp_spans_accepted_total") == 6
    assert value(samples, "pgtrail_otlp_spans_refused_total", reason="invalid") == 0
    assert value(samples, "pgtrail_otlp_traces_pending") == 3
    assert value(samples, "pgtrail_redis_up") == 1
    assert types["pgtrail_otlp_requests_total"] == "counter"
    assert types["pgtrail_otlp_traces_pending"] == "gauge"
    assert all(name.startswith("pgtrail_") for name in types)

    receiver.assembler.finalise_rooted()
    receiver.trail.flush()
    samples, _ = parse(get(receiver, "/metrics")[2].decode())
    stored = int(one(settings.dsn, "SELECT count(*) FROM logs_llm_execution"))
    assert stored == 3
    assert value(samples, "pgtrail_rows_written_total", table="logs_llm_execution") == stored
    assert value(samples, "pgtrail_rows_written_total", table="logs_execution") == int(
        one(settings.dsn, "SELECT count(*) FROM logs_execution")
    )
    assert value(samples, "pgtrail_otlp_traces_pending") == 0
    assert value(samples, "pgtrail_writer_queue_depth") == 0
    assert value(samples, "pgtrail_records_spooled_total") == 0
    assert value(samples, "pgtrail_postgresql_up") == 1
    # The first scrape was counted too, once its answer started.
    assert value(samples, "pgtrail_otlp_requests_total", route="/metrics", code="200") >= 1


def test_health_says_what_is_up_as_json_or_as_it_always_did(receiver: OtlpReceiver) -> None:
    status, content_type, body = get(receiver, "/health", Accept="application/json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "status": "ok",
        "redis": "up",
        "postgresql": "up",
        "spool_files": 0,
        "queue_depth": 0,
        "journal_spans": 0,
        "journal_stuck_spans": 0,
    }
    assert get(receiver, "/health")[::2] == (200, b"pgtrail OTLP receiver\n")


def test_a_stopped_redis_makes_health_503_naming_it_and_metrics_say_redis_down(
    settings: Settings,
) -> None:
    local = LocalRedis().start()
    trail = Trail(settings.model_copy(update={"redis_url": local.url}))
    receiver = OtlpReceiver(trail, port=0, token=TOKEN, grace_s=0.2).start()
    try:
        try:
            assert get(receiver, "/health")[0] == 200
        finally:
            local.stop()
        status, _, body = get(receiver, "/health", Accept="application/json")
        assert status == 503
        answer = json.loads(body)
        assert (answer["status"], answer["redis"], answer["postgresql"]) == (
            "unavailable",
            "down",
            "up",
        )
        assert get(receiver, "/health")[0] == 503
        assert post(receiver, trace_request("f6" * 16)) == 503

        status, _, page = get(receiver, "/metrics")
        assert status == 200  # the page itself still answers: it says what is down
        samples, types = parse(page.decode())
        assert value(samples, "pgtrail_redis_up") == 0
        assert "pgtrail_otlp_traces_pending" not in types  # unknown, so left out
        assert value(samples, "pgtrail_otlp_spans_refused_total", reason="redis_unavailable") == 2
        assert value(samples, "pgtrail_otlp_requests_total", route="/health", code="503") == 2
    finally:
        receiver.shutdown()
        trail.close()


def test_trail_metrics_count_the_spool_while_postgresql_is_unreachable(
    settings: Settings,
) -> None:
    with Trail(settings.model_copy(update={"dsn": UNREACHABLE}), sync=True) as trail:
        with trail.execution("001 Main", user_id="57"):
            for _ in range(3):
                pgtrail.log_user_journey("user_message_received", {"n": 1})
        trail.flush()
        metrics = trail.metrics()
    assert metrics.enqueued >= 4  # the execution and its three journey events
    assert metrics.spooled >= 4
    assert metrics.spool_files > 0
    assert metrics.spool_bytes > 0
    assert metrics.written == 0 and dict(metrics.written_by_table) == {}
    assert metrics.dropped == 0
    assert metrics.postgresql_up is False


def test_without_the_journal_health_reports_postgresql_spooling_without_a_503(
    settings: Settings,
) -> None:
    trail = Trail(settings.model_copy(update={"dsn": UNREACHABLE}))
    receiver = OtlpReceiver(trail, port=0, token=TOKEN, grace_s=0.1, durable=False).start()
    try:
        assert post(receiver, trace_request("a7" * 16)) == 200
        time.sleep(0.2)
        receiver.assembler.finalise_due()
        trail.flush()
        status, _, body = get(receiver, "/health", Accept="application/json")
        answer = json.loads(body)
        assert status == 200  # spans are still taken: rows wait in the spool
        assert (answer["status"], answer["redis"], answer["postgresql"]) == ("ok", "up", "spooling")
        assert answer["spool_files"] > 0
        samples, _ = parse(get(receiver, "/metrics")[2].decode())
        assert value(samples, "pgtrail_postgresql_up") == 0
        assert value(samples, "pgtrail_spool_files") > 0
        assert value(samples, "pgtrail_records_spooled_total") >= 4
    finally:
        receiver.shutdown()
        trail.close()


def test_a_durable_receiver_refuses_exports_and_says_postgresql_is_down_when_it_is(
    settings: Settings,
) -> None:
    # Its acknowledgement follows a commit to PostgreSQL: without one there is no 200.
    trail = Trail(settings.model_copy(update={"dsn": UNREACHABLE}))
    receiver = OtlpReceiver(trail, port=0, token=TOKEN, grace_s=0.1).start()
    try:
        assert post(receiver, trace_request("a8" * 16)) == 503
        status, _, body = get(receiver, "/health", Accept="application/json")
        answer = json.loads(body)
        assert status == 503
        assert (answer["status"], answer["redis"], answer["postgresql"]) == (
            "unavailable",
            "up",
            "down",
        )
        assert get(receiver, "/health")[::2] == (503, b"pgtrail OTLP receiver: postgresql down\n")
        samples, _ = parse(get(receiver, "/metrics")[2].decode())
        assert value(samples, "pgtrail_otlp_journal_up") == 0
        assert value(samples, "pgtrail_otlp_spans_refused_total", reason="journal_unavailable") == 2
    finally:
        receiver.shutdown()
        trail.close()
