"""The JSON API over real HTTP, against real receivers, PostgreSQL and Redis, judged by what
was stored: tables, the spool, Redis."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

import pgtrail
from dbrows import count, one, rows
from pgtrail.config import Settings
from pgtrail.jsonapi.api import JsonApi
from pgtrail.otlp.server import OtlpReceiver, json_api_of
from pgtrail.trail import Trail
from test_attack_redaction import SECRETS, database_text, redis_text

TOKEN = "json-api-token-5c1d"
UNREACHABLE = "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=1"
README = Path(__file__).resolve().parent.parent / "README.md"
LOG_TABLES = ("logs_execution", "logs_llm_execution", "logs_agent_execution", "logs_user_journey")
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)


def at(seconds: float) -> str:
    """A time ``seconds`` after T0, as ISO 8601 text."""
    return (T0 + dt.timedelta(seconds=seconds)).isoformat()


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def post(
    receiver: OtlpReceiver,
    path: str,
    document: Any,
    *,
    token: str | None = TOKEN,
    key: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    body = raw if raw is not None else json.dumps(document).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if key is not None:
        sent["Idempotency-Key"] = key
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        return Reply(
            response.status,
            json.loads(data) if data else {},
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()


def counts(dsn: str) -> dict[str, int]:
    return {table: count(dsn, table) for table in LOG_TABLES}


def start(trail: Trail, **options: Any) -> OtlpReceiver:
    return OtlpReceiver(trail, port=0, token=TOKEN, **options).start()


@pytest.fixture
def trail(settings: Settings) -> Iterator[Trail]:
    with Trail(settings) as client:
        yield client


@pytest.fixture
def receiver(trail: Trail) -> Iterator[OtlpReceiver]:
    running = start(trail)
    yield running
    running.shutdown()


def whole_execution() -> dict[str, Any]:
    """One execution of each kind of thing: nested processes, every event type."""
    return {
        "workflow": "001 Main",
        "tenant_id": "acme",
        "user_id": 57,
        "session_id": "tg-57-0004",
        "context": {"tier": "premium", "feature": "coaching"},
        "started_at": at(0),
        "finalized_at": at(30),
        "processes": [
            {
                "id": "agent",
                "name": "202 Agent - Coaching",
                "started_at": at(1),
                "ended_at": at(28),
                "processes": [
                    {
                        "id": "llm",
                        "name": "101 AI Execute LLM",
                        "started_at": at(2),
                        "duration_ms": 25_000,
                        "events": [
                            {
                                "type": "llm",
                                "agent_type": "coaching",
                                "model": "gpt-4o-mini",
                                "provider": "openai",
                                "input_tokens": 1000,
                                "cached_input_tokens": 200,
                                "output_tokens": 500,
                                "processing_time_ms": 24_900,
                                "prompt": "You are a coach.",
                                "prompt_version": "v6",
                                "payload": {"messages": [{"role": "user", "content": "hi"}]},
                                "created_at": at(27),
                            }
                        ],
                    }
                ],
            },
            {"id": "send", "name": "021 Send message", "parent": "agent", "started_at": at(28.5)},
        ],
        "events": [
            {"type": "journey", "event_type": "user_message_received", "data": {"len": 120}},
            {
                "type": "agent",
                "process": "agent",
                "agent_type": "coaching",
                "event_type": "agent_decision",
                "event": {"decisions": {"coaching_quality": {"intensity_level": "balanced"}}},
                "duration_ms": 25937,
                "created_at": at(28),
            },
            {
                "type": "agent",
                "process": "send",
                "agent_type": "scheduler",
                "event_type": "tool_call",
                "event": {"tool": "calendar.book", "permission": "allowed", "latency_ms": 220},
            },
        ],
    }


# -- a whole execution ---------------------------------------------------------------------------


def test_a_whole_execution_lands_in_the_four_tables(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    reply = post(receiver, "/v1/executions", whole_execution())
    assert reply.status == 201, reply.body
    assert reply.body["stored"] == "postgresql"
    assert reply.body["accepted"] == {"events": 4, "processes": 3}
    assert reply.body["rejected"] == []
    execution_id = uuid.UUID(reply.body["execution_id"])
    dsn = settings.dsn

    row = one(
        dsn,
        "SELECT execution_id, workflow, tenant_id, user_id, session_id, status, error, "
        "context, created_at, finalized_at, duration_ms, processes_executed "
        "FROM logs_execution",
    )
    (
        eid,
        workflow,
        tenant,
        user,
        session,
        status,
        error,
        context,
        started,
        finalized,
        duration,
        processes,
    ) = row
    assert eid == execution_id and workflow == "001 Main"
    assert (tenant, user, session) == ("acme", "57", "tg-57-0004")
    assert (status, error) == ("success", None)
    assert context == {"tier": "premium", "feature": "coaching"}
    assert started == T0 and finalized == T0 + dt.timedelta(seconds=30) and duration == 30_000
    by_name = {p["name"]: p for p in processes}
    assert [p["name"] for p in processes] == [
        "001 Main",
        "202 Agent - Coaching",
        "101 AI Execute LLM",
        "021 Send message",
    ]
    root, agent, llm, send = (by_name[n] for n in by_name)
    assert [p["nesting_level"] for p in processes] == [0, 1, 2, 2]
    assert agent["parent_span_id"] == root["span_id"]
    assert llm["parent_span_id"] == send["parent_span_id"] == agent["span_id"]
    assert (agent["duration_ms"], llm["duration_ms"], send["duration_ms"]) == (27_000, 25_000, None)

    call = one(
        dsn,
        "SELECT tenant_id, user_id, session_id, span_id, agent_type, provider, model_target, "
        "input_tokens, cached_input_tokens, output_tokens, processing_time_ms, input_cost, "
        "output_cost, total_cost, prompt_version, prompt_hash, payload, particular_data, "
        "created_at FROM logs_llm_execution WHERE execution_id = %s",
        execution_id,
    )
    assert call[:4] == ("acme", "57", "tg-57-0004", llm["span_id"])
    assert call[4:11] == ("coaching", "openai", "gpt-4o-mini", 1000, 200, 500, 24_900)
    # Priced as the writer prices gpt-4o-mini (0.15 / 0.075 cached / 0.60 per million):
    expected_in = (Decimal(800) * Decimal("0.15") + Decimal(200) * Decimal("0.075")) / 10**6
    expected_out = Decimal(500) * Decimal("0.60") / 10**6
    assert (call[11], call[12]) == (expected_in, expected_out)
    assert call[13] == expected_in + expected_out
    assert call[14] == "v6"
    assert one(dsn, "SELECT body FROM pgtrail_prompt WHERE prompt_hash = %s", call[15]) == (
        "You are a coach."
    )
    assert call[16] == {"messages": [{"role": "user", "content": "hi"}]}
    assert call[17]["workflow"] == "001 Main" and call[17]["feature"] == "coaching"
    assert call[18] == T0 + dt.timedelta(seconds=27)

    agents = rows(
        dsn,
        "SELECT event_type, agent_type, span_id, particular_data FROM logs_agent_execution "
        "ORDER BY created_at",
    )
    assert [(a[0], a[1], a[2]) for a in agents] == [
        ("agent_decision", "coaching", agent["span_id"]),
        ("tool_call", "scheduler", send["span_id"]),
    ]
    decision, tool = agents[0][3], agents[1][3]
    assert decision["agent_decisions"] == {"coaching_quality": {"intensity_level": "balanced"}}
    assert decision["event_duration_ms"] == 25937
    assert (tool["tool"], tool["permission"], tool["latency_ms"]) == (
        "calendar.book",
        "allowed",
        220,
    )
    journey = one(
        dsn,
        "SELECT event_type, span_id, particular_data, tenant_id, user_id, created_at "
        "FROM logs_user_journey",
    )
    # No created_at: the execution's start, one microsecond per event before it in the body.
    assert journey == ("user_message_received", root["span_id"], {"len": 120}, "acme", "57", T0)


# -- the incremental form ------------------------------------------------------------------------


def test_an_execution_built_across_two_receivers_and_a_python_join_keeps_its_identity(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    """Opened on one receiver, added to from another and from Python, finished on the first:
    every row under the tenant, user and session given when it was opened."""
    with Trail(settings) as first_trail, Trail(settings) as second_trail:
        first, second = start(first_trail), start(second_trail)
        try:
            opened = post(
                first,
                "/v1/executions/open",
                {
                    "workflow": "300 Long job",
                    "tenant_id": "globex",
                    "user_id": "u-9",
                    "session_id": "s-9",
                    "context": {"feature": "batch"},
                    "started_at": at(0),
                },
            )
            assert opened.status == 201, opened.body
            execution_id = opened.body["execution_id"]
            assert opened.body["traceparent"].startswith(f"00-{uuid.UUID(execution_id).hex}-")

            added = post(
                second,
                f"/v1/executions/{execution_id}/events",
                {
                    "processes": [
                        {"id": "fetch", "name": "310 Fetch", "started_at": at(1), "ended_at": at(5)}
                    ],
                    "events": [
                        {
                            "type": "llm",
                            "process": "fetch",
                            "model": "gpt-4o-mini",
                            "input_tokens": 10,
                            "output_tokens": 5,
                            "created_at": at(4),
                        },
                    ],
                },
            )
            assert added.status == 200, added.body
            assert added.body["stored"] == "postgresql"
            assert added.body["accepted"] == {"events": 1, "processes": 1}

            with Trail(settings, sync=True) as python, python.join(execution_id):  # noqa: SIM117
                with python.process("320 Python step"):
                    pgtrail.log_user_journey("python_step", {"ok": True})

            finished = post(
                first,
                f"/v1/executions/{execution_id}/finish",
                {
                    "status": "error",
                    "error": "step 330 failed",
                    "finalized_at": at(20),
                    "processes": [
                        {
                            "id": "store",
                            "name": "330 Store",
                            "parent": "fetch",
                            "started_at": at(6),
                            "ended_at": at(19),
                            "error": "disk full",
                        }
                    ],
                    "events": [
                        {"type": "journey", "event_type": "job_failed", "process": "store"},
                        {
                            "type": "agent",
                            "process": "store",
                            "event_type": "tool_call",
                            "event": {"tool": "fs.write", "error": "disk full"},
                        },
                    ],
                },
            )
            assert finished.status == 200, finished.body
            assert finished.body["status"] == "error" and finished.body["finished"] == "now"
        finally:
            first.shutdown()
            second.shutdown()

    dsn = settings.dsn
    identity = ("globex", "u-9", "s-9")
    for table in LOG_TABLES:
        found = rows(dsn, f"SELECT DISTINCT tenant_id, user_id, session_id FROM {table}")
        assert found == [identity], (table, found)
    row = one(
        dsn,
        "SELECT workflow, status, error, context, created_at, finalized_at, processes_executed, "
        "event_type FROM logs_execution",
    )
    workflow, status, error, context, started, finalized, processes, event_type = row
    assert (workflow, status, error, event_type) == (
        "300 Long job",
        "error",
        "step 330 failed",
        "execution_finalized",
    )
    assert context == {"feature": "batch"}
    assert (started, finalized) == (T0, T0 + dt.timedelta(seconds=20))
    names = {p["name"]: p for p in processes}
    assert set(names) == {"300 Long job", "310 Fetch", "320 Python step", "330 Store"}
    assert names["330 Store"]["parent_span_id"] == names["310 Fetch"]["span_id"]
    assert names["330 Store"]["nesting_level"] == 2
    assert names["330 Store"]["status"] == "error" and names["330 Store"]["error"] == "disk full"
    assert names["310 Fetch"]["duration_ms"] == 4000
    assert one(dsn, "SELECT span_id FROM logs_llm_execution") == names["310 Fetch"]["span_id"]
    assert rows(dsn, "SELECT event_type FROM logs_user_journey ORDER BY event_type") == [
        ("job_failed",),
        ("python_step",),
    ]
    # The execution is no longer open in Redis.
    client = redis.Redis.from_url(redis_url)
    try:
        assert not client.exists(f"{redis_prefix}ex:{execution_id}")
        assert client.zscore(f"{redis_prefix}open", execution_id) is None
    finally:
        client.close()


def test_events_after_the_finish_join_the_stored_execution(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    """Feedback minutes later: found by its stored row, as a late ``Trail.join`` is."""
    opened = post(
        receiver,
        "/v1/executions/open",
        {"workflow": "w", "tenant_id": "t1", "user_id": "u1", "session_id": "s1"},
    )
    execution_id = opened.body["execution_id"]
    assert post(receiver, f"/v1/executions/{execution_id}/finish", {}).status == 200
    late = post(
        receiver,
        f"/v1/executions/{execution_id}/events",
        {
            "events": [{"type": "journey", "event_type": "feedback", "data": {"stars": 5}}],
            "processes": [{"name": "late step"}],
        },
    )
    assert late.status == 200, late.body
    assert rows(settings.dsn, "SELECT tenant_id, user_id, session_id FROM logs_user_journey") == [
        ("t1", "u1", "s1")
    ]
    # The late process cannot reach the stored row: a join's own row holds it.
    assert rows(
        settings.dsn,
        "SELECT event_type, tenant_id FROM logs_execution ORDER BY finalized_at NULLS LAST",
    ) == [("execution_finalized", "t1"), ("execution_joined", "t1")]
    again = post(receiver, f"/v1/executions/{execution_id}/finish", {})
    assert again.status == 200 and again.body["finished"] == "earlier"
    assert count(settings.dsn, "logs_execution") == 2


def test_an_unknown_execution_cannot_be_finished(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    reply = post(receiver, f"/v1/executions/{uuid.uuid4()}/finish", {"status": "success"})
    assert reply.status == 404 and "neither open nor stored" in reply.body["message"]
    assert post(receiver, "/v1/executions/not-a-uuid/finish", {}).status == 404
    assert counts(settings.dsn) == dict.fromkeys(LOG_TABLES, 0)


# -- retries -------------------------------------------------------------------------------------


def test_a_request_retried_with_its_idempotency_key_stores_once(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    """No ids and no times in the body: the key and the time of its first use make them."""
    document = {
        "workflow": "n8n: Onboarding",
        "tenant_id": "acme",
        "processes": [{"name": "HTTP Request"}, {"name": "OpenAI", "processes": [{"name": "x"}]}],
        "events": [
            {"type": "llm", "model": "gpt-4o-mini", "input_tokens": 3, "output_tokens": 1},
            {"type": "journey", "event_type": "signup"},
            {"type": "agent", "event_type": "route", "data": {"to": "sales"}},
        ],
    }
    first = post(receiver, "/v1/executions", document, key="n8n-4711")
    assert first.status == 201, first.body
    stored = counts(settings.dsn)
    assert stored == dict.fromkeys(LOG_TABLES, 1)
    time.sleep(0.05)  # a retry arrives later: its default times must still be the first's
    again = post(receiver, "/v1/executions", document, key="n8n-4711")
    assert again.status == 201 and again.body == first.body
    assert counts(settings.dsn) == stored
    processes = one(settings.dsn, "SELECT processes_executed FROM logs_execution")
    assert len(processes) == 4

    other = post(receiver, "/v1/executions", {**document, "tenant_id": "globex"}, key="n8n-4711")
    assert other.status == 422 and "another body" in other.body["message"]
    new_key = post(receiver, "/v1/executions", document, key="n8n-4712")
    assert new_key.status == 201 and new_key.body["execution_id"] != first.body["execution_id"]
    assert count(settings.dsn, "logs_execution") == 2


def test_a_request_retried_with_the_same_ids_stores_once(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    """No key: the client's UUIDv7 ids (whose times are the rows') make the retry a no-op."""
    execution_id = str(pgtrail.ids.uuid7())
    events = [
        {"type": "journey", "event_type": "a", "event_id": str(pgtrail.ids.uuid7())},
        {"type": "journey", "event_type": "b", "event_id": str(uuid.uuid4()), "created_at": at(1)},
    ]
    document = {
        "workflow": "w",
        "execution_id": execution_id,
        "events": events,
        "processes": [{"id": "p", "name": "step"}],
    }
    for _ in range(2):
        reply = post(receiver, "/v1/executions", document)
        assert reply.status == 201, reply.body
        assert reply.body["execution_id"] == execution_id
    assert count(settings.dsn, "logs_execution") == 1
    assert count(settings.dsn, "logs_user_journey") == 2

    opened = post(receiver, "/v1/executions/open", {"workflow": "w2"})
    path = f"/v1/executions/{opened.body['execution_id']}/events"
    retried = {
        "events": [{"type": "journey", "event_type": "c", "event_id": str(pgtrail.ids.uuid7())}],
        "processes": [{"id": "q", "name": "q-step", "started_at": at(2)}],
    }
    for _ in range(2):
        assert post(receiver, path, retried).status == 200
    finished = post(receiver, path.replace("/events", "/finish"), {})
    assert finished.status == 200
    assert count(settings.dsn, "logs_user_journey") == 3
    steps = rows(settings.dsn, "SELECT name FROM logs_execution_step WHERE name = 'q-step'")
    assert steps == [("q-step",)]


def test_an_event_id_a_retry_could_not_recognise_is_refused(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    opened = post(receiver, "/v1/executions/open", {"workflow": "w"})
    reply = post(
        receiver,
        f"/v1/executions/{opened.body['execution_id']}/events",
        {
            "events": [
                {"type": "journey", "event_type": "kept"},
                {"type": "journey", "event_type": "refused", "event_id": str(uuid.uuid4())},
            ]
        },
    )
    assert reply.status == 200, reply.body
    (refused,) = reply.body["rejected"]
    assert refused["path"] == "events[1]" and refused["errors"][0]["field"] == "event_id"
    assert rows(settings.dsn, "SELECT event_type FROM logs_user_journey") == [("kept",)]
    # A whole execution with an id of the client's but no time to go with it: refused whole.
    whole = post(receiver, "/v1/executions", {"workflow": "w", "execution_id": str(uuid.uuid4())})
    assert whole.status == 400 and whole.body["errors"][0]["field"] == "started_at"


def test_concurrent_requests_share_flushes(settings: Settings, receiver: OtlpReceiver) -> None:
    """Many requests waiting at once are acknowledged by fewer flushes than requests."""
    results: list[int] = []

    def send(i: int) -> None:
        reply = post(receiver, "/v1/executions", {"workflow": f"w{i}"})
        results.append(reply.status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 24
    assert count(settings.dsn, "logs_execution") == 24
    assert json_api_of(receiver).acks.flushes < 24


# -- what is refused -----------------------------------------------------------------------------


def test_an_invalid_event_is_named_and_the_others_are_stored(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    document = {
        "workflow": "w",
        "events": [
            {"type": "llm", "model": "gpt-4o-mini", "input_tokens": 10},
            {"type": "llm", "model": "gpt-4o-mini", "input_tokens": -5, "modle": "typo"},
            {"type": "journey", "event_type": "ok"},
            {"type": "agent", "event_type": "tool_call", "event": {"permission": "maybe"}},
            {"type": "telemetry"},
            "not an object",
        ],
        "processes": [{"name": "p", "events": [{"type": "journey", "event_type": ""}]}],
    }
    reply = post(receiver, "/v1/executions", document)
    assert reply.status == 201, reply.body
    assert reply.body["accepted"] == {"events": 2, "processes": 1}
    rejected = {r["path"]: r for r in reply.body["rejected"]}
    assert set(rejected) == {
        "events[1]",
        "events[3]",
        "events[4]",
        "events[5]",
        "processes[0].events[0]",
    }
    assert rejected["events[1]"]["index"] == 1
    assert {e["field"] for e in rejected["events[1]"]["errors"]} == {"input_tokens", "modle"}
    assert {e["field"] for e in rejected["events[3]"]["errors"]} == {
        "event.tool",
        "event.permission",
    }
    assert rejected["events[4]"]["errors"][0]["field"] == "type"
    assert rejected["processes[0].events[0]"]["errors"][0]["field"] == "event_type"
    assert count(settings.dsn, "logs_llm_execution") == 1
    assert rows(settings.dsn, "SELECT event_type FROM logs_user_journey") == [("ok",)]
    assert count(settings.dsn, "logs_execution") == 1

    opened = post(receiver, "/v1/executions/open", {"workflow": "w"})
    only_bad = post(
        receiver,
        f"/v1/executions/{opened.body['execution_id']}/events",
        {"events": [{"type": "llm", "output_tokens": "many"}]},
    )
    assert only_bad.status == 400
    assert only_bad.body["rejected"][0]["errors"][0]["field"] == "output_tokens"


def test_a_wrong_or_missing_token_is_refused_and_nothing_is_stored(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    for token in ("wrong", None):
        reply = post(receiver, "/v1/executions", whole_execution(), token=token)
        assert reply.status == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
    receiver.trail.flush()
    assert counts(settings.dsn) == dict.fromkeys(LOG_TABLES, 0)


def test_malformed_bodies_are_refused_with_the_reason(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    broken = post(receiver, "/v1/executions", None, raw=b'{"workflow": "w", ')
    assert broken.status == 400 and "not valid JSON" in broken.body["message"]
    array = post(receiver, "/v1/executions", [1, 2])
    assert array.status == 400 and "JSON object" in array.body["message"]
    bad_process = post(
        receiver,
        "/v1/executions",
        {
            "workflow": "w",
            "events": [{"type": "journey", "event_type": "x"}],
            "processes": [{"name": "a", "started_at": "yesterday-ish"}],
        },
    )
    assert bad_process.status == 400
    assert bad_process.body["errors"][0]["field"] == "processes[0].started_at"
    unknown_parent = post(
        receiver, "/v1/executions", {"workflow": "w", "processes": [{"name": "a", "parent": "z"}]}
    )
    assert unknown_parent.status == 400
    assert unknown_parent.body["errors"][0]["field"] == "processes[0].parent"
    typo = post(receiver, "/v1/executions", {"workflow": "w", "tenant": "acme"})
    assert typo.status == 400 and typo.body["errors"][0]["field"] == "tenant"
    form = post(
        receiver,
        "/v1/executions",
        None,
        raw=b"workflow=w",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415
    assert post(receiver, "/v1/executions/nowhere", {}).status == 404
    receiver.trail.flush()
    assert counts(settings.dsn) == dict.fromkeys(LOG_TABLES, 0)


def test_oversize_bodies_are_refused_and_gzip_ones_are_taken(
    settings: Settings, trail: Trail
) -> None:
    small = start(trail, max_body_bytes=4096)
    try:
        big = {"workflow": "w", "context": {"blob": "x" * 8000}}
        assert post(small, "/v1/executions", big).status == 413
        bomb = gzip.compress(json.dumps(big).encode())
        assert len(bomb) < 4096
        inflated = post(
            small, "/v1/executions", None, raw=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert inflated.status == 413
        fine = gzip.compress(json.dumps(whole_execution()).encode())
        zipped = post(small, "/v1/executions", None, raw=fine, headers={"Content-Encoding": "gzip"})
        assert zipped.status == 201, zipped.body
    finally:
        small.shutdown()
    assert count(settings.dsn, "logs_execution") == 1


# -- through the writer: redaction, sampling, pricing, the spool ---------------------------------


@pytest.mark.parametrize("shape", ["email", "openai-key", "jwt", "card"])
def test_secrets_sent_to_the_json_api_are_redacted_everywhere(
    settings: Settings, redis_url: str, redis_prefix: str, shape: str
) -> None:
    secret, needle = SECRETS[shape]
    text = f"note {secret} end"
    redacting = settings.model_copy(update={"redact": True})
    with Trail(redacting) as trail:
        running = start(trail)
        try:
            whole = post(
                running,
                "/v1/executions",
                {
                    "workflow": f"wf {secret}",
                    "status": "error",
                    "error": f"failed for {secret}",
                    "context": {"contact": text, "api_key": "hunter2x"},
                    "processes": [{"name": f"step {secret}", "error": text}],
                    "events": [
                        {
                            "type": "llm",
                            "model": "gpt-4o-mini",
                            "prompt": f"Mail {secret}",
                            "payload": {"messages": [{"content": text}]},
                            "data": {"to": secret},
                            "error": text,
                        },
                        {
                            "type": "agent",
                            "event_type": "tool_call",
                            "event": {
                                "tool": "send",
                                "args": {"to": secret, "password": "hunter2x"},
                                "result": text,
                            },
                        },
                        {"type": "journey", "event_type": "message", "data": {"text": text}},
                    ],
                },
            )
            assert whole.status == 201, whole.body
            opened = post(
                running,
                "/v1/executions/open",
                {"workflow": f"open {secret}", "context": {"note": text}},
            )
            assert opened.status == 201
            path = f"/v1/executions/{opened.body['execution_id']}/events"
            added = post(running, path, {"processes": [{"name": f"p {secret}", "error": text}]})
            assert added.status == 200 and added.body["stored"] == "redis"
            # Held in Redis until the finish: redacted there too.
            assert needle not in redis_text(redis_url, redis_prefix)
            assert post(running, path.replace("events", "finish"), {}).status == 200
        finally:
            running.shutdown()
    stored = database_text(settings.dsn)
    assert needle not in stored and "hunter2x" not in stored
    assert count(settings.dsn, "logs_llm_execution") == 1
    assert rows(settings.dsn, "SELECT count(*) FROM logs_execution_step") == [(4,)]


def test_sampling_drops_bodies_of_a_sampled_out_execution_and_keeps_a_failed_one_whole(
    settings: Settings,
) -> None:
    sampled = settings.model_copy(update={"default_sample_rate": 0.0})

    def document(status: str) -> dict[str, Any]:
        return {
            "workflow": "sampled",
            "status": status,
            "events": [
                {
                    "type": "llm",
                    "model": "gpt-4o-mini",
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "prompt": "a long system prompt",
                    "payload": {"messages": ["hello"]},
                }
            ],
        }

    with Trail(sampled) as trail:
        running = start(trail)
        try:
            quiet = post(running, "/v1/executions", document("success"))
            failed = post(running, "/v1/executions", document("error"))
            assert quiet.status == failed.status == 201
        finally:
            running.shutdown()
    by_execution = {
        str(r[0]): r[1:]
        for r in rows(
            settings.dsn,
            "SELECT execution_id, payload, particular_data ? '_pgtrail_sampled', total_cost "
            "FROM logs_llm_execution",
        )
    }
    payload, marked, cost = by_execution[quiet.body["execution_id"]]
    assert payload is None and marked and cost is not None  # every figure, no body
    payload, marked, cost = by_execution[failed.body["execution_id"]]
    assert payload == {"messages": ["hello"]} and not marked
    assert rows(settings.dsn, "SELECT count(*) FROM pgtrail_prompt") == [(1,)]
    sampling = dict(
        rows(
            settings.dsn,
            "SELECT execution_id::text, particular_data->'sampling'->>'bodies' FROM logs_execution",
        )
    )
    assert sampling[quiet.body["execution_id"]] == "dropped"
    assert sampling[failed.body["execution_id"]] == "kept"


def test_with_postgresql_away_the_answer_says_spooled_and_the_rows_arrive_later(
    settings: Settings,
) -> None:
    offline = settings.model_copy(update={"dsn": UNREACHABLE})
    with Trail(offline) as trail:
        running = start(trail)
        try:
            reply = post(running, "/v1/executions", whole_execution())
        finally:
            running.shutdown()
    assert reply.status == 201, reply.body
    assert reply.body["stored"] == "spool"
    assert list(settings.spool_dir.glob("*.jsonl"))
    with Trail(settings) as replayer:
        assert replayer.replay_spool() > 0
    assert counts(settings.dsn) == {
        "logs_execution": 1,
        "logs_llm_execution": 1,
        "logs_agent_execution": 2,
        "logs_user_journey": 1,
    }
    # Priced at replay, as the writer prices spooled calls.
    assert one(settings.dsn, "SELECT total_cost FROM logs_llm_execution") == Decimal("0.000435")


def test_with_redis_away_what_needs_it_gets_503_and_the_rest_is_stored(settings: Settings) -> None:
    no_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with Trail(no_redis) as trail:
        running = start(trail)
        try:
            opened = post(running, "/v1/executions/open", {"workflow": "w"})
            assert opened.status == 503 and opened.headers["retry-after"] == "5"
            keyed = post(running, "/v1/executions", {"workflow": "w"}, key="k-1")
            assert keyed.status == 503
            events = post(running, f"/v1/executions/{uuid.uuid4()}/events", {"events": []})
            assert events.status == 503
            plain = post(running, "/v1/executions", {"workflow": "w"})
            assert plain.status == 201 and plain.body["stored"] == "postgresql"
        finally:
            running.shutdown()
    assert count(settings.dsn, "logs_execution") == 1


def test_metrics_count_the_json_routes_by_their_names(receiver: OtlpReceiver) -> None:
    post(receiver, "/v1/executions", {"workflow": "w"})
    opened = post(receiver, "/v1/executions/open", {"workflow": "w"})
    post(receiver, f"/v1/executions/{opened.body['execution_id']}/events", {"events": []})
    post(receiver, f"/v1/executions/{uuid.uuid4()}/finish", {})
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        page = conn.getresponse().read().decode()
    finally:
        conn.close()
    for route, code in (
        ("/v1/executions", 201),
        ("/v1/executions/open", 201),
        ("/v1/executions/{execution_id}/events", 200),
        ("/v1/executions/{execution_id}/finish", 404),
    ):
        assert re.search(
            rf'pgtrail_otlp_requests_total\{{route="{re.escape(route)}",code="{code}"\}} 1', page
        ), (route, code)


# -- the README's examples -----------------------------------------------------------------------


def readme_curl_blocks() -> list[str]:
    """The ``sh`` blocks with ``curl`` in the README's JSON API subsection."""
    text = README.read_text()
    section = text[text.index("### Any language in: the JSON API") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [block for block in blocks if "curl" in block]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_examples_run(settings: Settings, receiver: OtlpReceiver) -> None:
    blocks = readme_curl_blocks()
    assert len(blocks) == 2
    env = {
        **os.environ,
        "PGTRAIL_URL": f"http://{receiver.host}:{receiver.port}",
        "PGTRAIL_OTLP_TOKEN": TOKEN,
    }
    for block in blocks:
        if "jq" in block and shutil.which("jq") is None:
            pytest.skip("jq is not installed")
        for _ in range(2):  # each runs twice: the second time must store nothing more
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            if "jq" in block:
                break  # opening again is a new execution: no key in that example
    assert rows(
        settings.dsn, "SELECT workflow, status, tenant_id FROM logs_execution ORDER BY workflow"
    ) == [("001 Main", "success", "acme"), ("300 Nightly import", "success", "acme")]
    costs = rows(settings.dsn, "SELECT model_target, total_cost FROM logs_llm_execution")
    assert len(costs) == 2 and all(cost is not None for _, cost in costs)
    assert count(settings.dsn, "logs_agent_execution") == 1
    assert count(settings.dsn, "logs_user_journey") == 1
    steps = {r[0] for r in rows(settings.dsn, "SELECT name FROM logs_execution_step")}
    assert steps == {"001 Main", "202 Agent - Coaching", "300 Nightly import", "310 Fetch"}


# -- without a server ----------------------------------------------------------------------------


def test_the_api_answers_without_any_http_server(settings: Settings) -> None:
    with Trail(settings) as trail:
        api = JsonApi(trail)
        headers = {"content-type": "application/json; charset=utf-8"}
        created = api.handle("POST", "/v1/executions/", headers, b'{"workflow": "direct"}')
        assert created.status == 201 and created.content_type == "application/json"
        assert json.loads(created.body)["stored"] == "postgresql"
        wrong = api.handle("GET", "/v1/executions", headers, b"")
        assert (wrong.status, wrong.headers["Allow"]) == (405, "POST")
        assert api.handle("POST", "/v1/nothing", headers, b"{}").status == 404
    assert rows(settings.dsn, "SELECT workflow FROM logs_execution") == [("direct",)]


def test_an_open_execution_nobody_finishes_is_swept_as_abandoned(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    opened = post(
        receiver,
        "/v1/executions/open",
        {"workflow": "forgotten", "tenant_id": "acme", "user_id": "u", "started_at": at(0)},
    )
    execution_id = opened.body["execution_id"]
    added = post(
        receiver,
        f"/v1/executions/{execution_id}/events",
        {"processes": [{"name": "half done", "started_at": at(1)}]},
    )
    assert added.status == 200
    with Trail(settings, sync=True) as sweeper:
        assert [str(swept) for swept in sweeper.sweep(0)] == [execution_id]
    row = one(
        settings.dsn, "SELECT status, tenant_id, user_id, processes_executed FROM logs_execution"
    )
    assert row[:3] == ("abandoned", "acme", "u")
    assert [p["name"] for p in row[3]] == ["forgotten", "half done"]


def test_a_finish_sent_again_stores_nothing_twice(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    opened = post(receiver, "/v1/executions/open", {"workflow": "w", "tenant_id": "acme"})
    path = f"/v1/executions/{opened.body['execution_id']}/finish"
    document = {
        "processes": [{"id": "last", "name": "last step", "started_at": at(1)}],
        "events": [{"type": "journey", "event_type": "done", "event_id": str(pgtrail.ids.uuid7())}],
    }
    first = post(receiver, path, document, key="finish-1")
    assert first.status == 200 and first.body["finished"] == "now"
    replayed = post(receiver, path, document, key="finish-1")
    assert replayed.body == first.body and replayed.headers["idempotent-replayed"] == "true"
    keyless = post(receiver, path, document)  # a client without a key retries
    assert keyless.status == 200
    assert (keyless.body["finished"], keyless.body["processes_left_out"]) == ("earlier", 1)
    assert rows(settings.dsn, "SELECT event_type FROM logs_execution") == [("execution_finalized",)]
    assert count(settings.dsn, "logs_user_journey") == 1
    assert rows(settings.dsn, "SELECT count(*) FROM logs_execution_step") == [(2,)]


def test_a_lone_surrogate_costs_only_its_event(settings: Settings, receiver: OtlpReceiver) -> None:
    raw = (
        b'{"workflow": "w", "events": ['
        b'{"type": "journey", "event_type": "bad \\ud800"},'
        b'{"type": "journey", "event_type": "kept", "data": {"text": "half \\udfff pair"}}]}'
    )
    reply = post(receiver, "/v1/executions", None, raw=raw)
    assert reply.status == 201, reply.body
    assert [r["path"] for r in reply.body["rejected"]] == ["events[0]"]
    # Cleaned by the writer, as a Python caller's would be, and said in the row.
    ((data,),) = rows(settings.dsn, "SELECT particular_data FROM logs_user_journey")
    assert data["text"].startswith("half ") and "\udfff" not in data["text"]
    assert any("surrogate" in note for note in data["_pgtrail_notes"])
