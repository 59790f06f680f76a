"""A 200 from the receiver means stored: the span journal, tried by killing the receiver
with SIGKILL under load and by restarting Redis empty, judged by the rows that exist."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dbrows import one, rows
from pgtrail.config import Settings
from pgtrail.ops.devservices import LocalRedis
from pgtrail.otlp.journal import MAX_ATTEMPTS
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail

NOW_NS = time.time_ns() - 10_000_000_000
SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"

# The receiver a test kills: records finalised from traces wait in the writer's memory
# (an hour's flush interval, a batch larger than the load), the worst case for a kill.
_CHILD = """
import sys
from pgtrail.config import Settings
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail

settings = Settings.model_validate_json(sys.argv[1])
trail = Trail(settings, flush_interval_s=3600.0)
receiver = OtlpReceiver(trail, port=0, grace_s=0.05, durable=sys.argv[2] == "durable").start()
print(receiver.port, flush=True)
receiver.wait(3600)
"""


def trace_request(trace_id: str, *, prompt: str = "hello") -> bytes:
    """One OTLP/JSON export: a root agent span and a model call under it."""

    def span(span_id: str, name: str, parent: str, attributes: list[Any]) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "startTimeUnixNano": str(NOW_NS),
            "endTimeUnixNano": str(NOW_NS + 1_000_000_000),
            "attributes": attributes,
        }

    chat = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 100}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
        {"key": "gen_ai.prompt", "value": {"stringValue": prompt}},
    ]
    root = trace_id[:16]
    spans = [span(root, "invoke_agent assistant", "", []), span(trace_id[16:], "chat", root, chat)]
    return json.dumps(
        {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    ).encode()


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def stored_traces(dsn: str) -> set[str]:
    return {
        str(r[0]).replace("-", "") for r in rows(dsn, "SELECT execution_id FROM logs_execution")
    }


def journalled(dsn: str) -> int:
    return int(one(dsn, "SELECT count(*) FROM pgtrail_otlp_span"))


def recover_everything(settings: Settings) -> None:
    """A receiver started after the loss: it recovers what the journal holds."""
    with Trail(settings) as trail:
        receiver = OtlpReceiver(trail, port=0, grace_s=0.05)
        receiver.assembler.recover_after_s = 0.0
        deadline = time.monotonic() + 60
        while journalled(settings.dsn) and time.monotonic() < deadline:
            receiver.assembler.recover_stranded(limit=100_000)
            time.sleep(0.1)
            receiver.assembler.finalise_rooted()
        receiver.shutdown()


@pytest.fixture
def killable(settings: Settings) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(mode: str) -> tuple[subprocess.Popen[str], int]:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, settings.model_dump_json(), mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(child)
        assert child.stdout is not None
        return child, int(child.stdout.readline())

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def load_then_kill(start: Any, mode: str) -> tuple[set[str], int]:
    """Posts traces from 8 clients and SIGKILLs the receiver mid-load; returns the traces it
    answered 200 for and how many requests were sent."""
    child, port = start(mode)
    sent = 0
    acknowledged: set[str] = set()

    def one_trace(n: int) -> str | None:
        trace_id = f"{n:08x}" + "ab" * 12
        try:
            return trace_id if post(port, trace_request(trace_id)) == 200 else None
        except (OSError, http.client.HTTPException):  # the kill cut the answer off
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one_trace, n) for n in range(1, 601)]
        while sum(f.done() for f in futures) < 300:
            time.sleep(0.01)
        time.sleep(0.3)  # the finaliser has claimed traces from Redis by now
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        for future in futures:
            sent += 1
            if (trace_id := future.result()) is not None:
                acknowledged.add(trace_id)
    return acknowledged, sent


def test_every_trace_acknowledged_before_a_sigkill_is_stored_after_recovery(
    settings: Settings, killable: Any
) -> None:
    acknowledged, sent = load_then_kill(killable, "durable")
    assert len(acknowledged) >= 300
    lost_at_the_kill = acknowledged - stored_traces(settings.dsn)
    # The kill really cost the process what it held: traces claimed or queued, not stored
    # (a durable receiver flushes after each round, so only the rounds in flight).
    assert lost_at_the_kill
    assert journalled(settings.dsn) >= 2 * len(lost_at_the_kill)

    recover_everything(settings)
    stored = stored_traces(settings.dsn)
    print(
        f"sent {sent}, acknowledged {len(acknowledged)}, missing after SIGKILL "
        f"{len(lost_at_the_kill)}, missing after recovery {len(acknowledged - stored)}"
    )
    assert acknowledged <= stored
    assert journalled(settings.dsn) == 0
    # Recovered once: one execution row and one model call per trace, none twice.
    assert int(one(settings.dsn, "SELECT count(*) FROM logs_execution")) == len(stored)
    assert int(one(settings.dsn, "SELECT count(*) FROM logs_llm_execution")) == len(stored)


def test_without_the_journal_a_sigkill_loses_acknowledged_traces(
    settings: Settings, killable: Any
) -> None:
    # The same load against a receiver told to keep no journal: what the journal prevents.
    acknowledged, _ = load_then_kill(killable, "volatile")
    recover_everything(settings)
    assert len(acknowledged - stored_traces(settings.dsn)) > 100


def test_a_redis_restarted_empty_inside_the_grace_period_loses_no_acknowledged_trace(
    settings: Settings,
) -> None:
    local = LocalRedis().start()
    at_risk = settings.model_copy(update={"redis_url": local.url})
    trail = Trail(at_risk)
    receiver = OtlpReceiver(trail, port=0, grace_s=30.0)
    receiver.assembler.recover_after_s = 0.5
    receiver.start()
    try:
        trace_id = "c0ffee00" * 4
        assert post(receiver.port, trace_request(trace_id)) == 200
        local.stop()  # it kept nothing on disk: the held spans are gone
        local = LocalRedis(port=local.port).start()
        time.sleep(0.6)
        receiver.assembler.recover_stranded()  # held again: the root is there, due in 30 s
        assert stored_traces(settings.dsn) == set()
        receiver.assembler.finalise_rooted()
        assert stored_traces(settings.dsn) == {trace_id}
        assert journalled(settings.dsn) == 0
    finally:
        receiver.shutdown()
        trail.close()
        local.stop()


def test_the_journal_is_written_before_the_answer_and_emptied_once_rows_are_stored(
    settings: Settings,
) -> None:
    trail = Trail(settings)
    receiver = OtlpReceiver(trail, port=0, grace_s=60.0).start()
    try:
        trace_id = "d1" * 16
        assert post(receiver.port, trace_request(trace_id)) == 200
        assert journalled(settings.dsn) == 2
        assert stored_traces(settings.dsn) == set()
        receiver.assembler.finalise_rooted()
        assert stored_traces(settings.dsn) == {trace_id}
        assert journalled(settings.dsn) == 0
        # A span of the finalised trace arriving late is journalled, stored, then cleared.
        late = json.loads(trace_request(trace_id))
        late_span = late["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
        late_span["spanId"] = "e2" * 8
        late["resourceSpans"][0]["scopeSpans"][0]["spans"] = [late_span]
        assert post(receiver.port, json.dumps(late).encode()) == 200
        receiver.assembler.finalise_due()
        assert journalled(settings.dsn) == 0
        assert int(one(settings.dsn, "SELECT count(*) FROM logs_llm_execution")) == 2
    finally:
        receiver.shutdown()
        trail.close()


def test_with_redaction_on_the_journal_holds_no_secret(settings: Settings) -> None:
    trail = Trail(settings.model_copy(update={"redact": True}))
    receiver = OtlpReceiver(trail, port=0, grace_s=60.0).start()
    try:
        body = trace_request("f3" * 16, prompt=f"use key {SECRET} please")
        assert post(receiver.port, body) == 200
        held = rows(settings.dsn, "SELECT span FROM pgtrail_otlp_span")
        assert len(held) == 2
        assert all(SECRET.encode() not in bytes(r[0]) for r in held)
        assert any(b"use key" in bytes(r[0]) for r in held)  # the rest of the prompt is kept
    finally:
        receiver.shutdown()
        trail.close()


def test_no_reader_role_can_read_the_journal(settings: Settings) -> None:
    grants = rows(
        settings.dsn,
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_name = 'pgtrail_otlp_span' AND grantee <> current_user",
    )
    assert grants == []


def test_a_damaged_entry_is_retried_a_bounded_number_of_times_then_counted_as_stuck(
    settings: Settings,
) -> None:
    trail = Trail(settings)
    receiver = OtlpReceiver(trail, port=0, grace_s=60.0)
    receiver.assembler.recover_after_s = 0.0
    try:
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgtrail_otlp_span (trace_id, span_id, span) VALUES (%s, %s, %s)",
                ("a9" * 16, "b8" * 8, b"\x00 not a span"),
            )
        for _ in range(MAX_ATTEMPTS + 3):
            receiver.assembler.recover_stranded()
        assert one(settings.dsn, "SELECT attempts FROM pgtrail_otlp_span") == MAX_ATTEMPTS
        counts = receiver.assembler.journal_counts()
        assert counts is not None and (counts.waiting, counts.stuck) == (1, 1)
        assert stored_traces(settings.dsn) == set()
    finally:
        receiver.shutdown()
        trail.close()


def test_a_trace_still_assembling_in_redis_is_left_to_it_by_the_recovery(
    settings: Settings,
) -> None:
    trail = Trail(settings)
    receiver = OtlpReceiver(trail, port=0, grace_s=60.0).start()
    receiver.assembler.recover_after_s = 0.0
    try:
        body = json.loads(trace_request("b7" * 16))
        spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        body["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[1:]  # no root: stays open
        assert post(receiver.port, json.dumps(body).encode()) == 200
        for _ in range(MAX_ATTEMPTS + 3):
            receiver.assembler.recover_stranded()
        assert one(settings.dsn, "SELECT attempts FROM pgtrail_otlp_span") == 0
        assert stored_traces(settings.dsn) == set()
        assert receiver.assembler.finalise_idle(0.0)  # its own finalisation stores it
        assert stored_traces(settings.dsn) == {"b7" * 16}
        assert journalled(settings.dsn) == 0
    finally:
        receiver.shutdown()
        trail.close()


@pytest.mark.parametrize("switch", ["--durable", "--no-durable"])
def test_the_cli_answers_after_the_journal_unless_told_not_to(
    settings: Settings, switch: str
) -> None:
    # The journal table is locked by another session: a durable receiver cannot write it,
    # so its answer waits for the lock; one started with --no-durable never touches it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {
        **os.environ,
        "PGTRAIL_DSN": settings.dsn,
        "PGTRAIL_REDIS_URL": str(settings.redis_url),
        "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
        "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
    }
    command = [sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--no-grpc", "--grace", "0.1s", switch],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    trace_id = "c0ffee00" * 4
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[1]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.1)
        with psycopg.connect(settings.dsn) as locker:
            locker.execute("LOCK TABLE pgtrail_otlp_span IN ACCESS EXCLUSIVE MODE")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(post, port, trace_request(trace_id))
                concurrent.futures.wait([answer], timeout=3)
                answered_while_locked = answer.done()
                locker.rollback()
                assert answer.result(timeout=30) == 200
        assert answered_while_locked is (switch == "--no-durable")
        deadline = time.monotonic() + 20
        while trace_id not in stored_traces(settings.dsn):
            assert time.monotonic() < deadline, "the acknowledged trace was never stored"
            time.sleep(0.1)
        assert journalled(settings.dsn) == 0
    finally:
        server.terminate()
        server.wait(60)
        if server.stderr is not None:
            server.stderr.close()
