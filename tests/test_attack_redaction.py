"""Redaction holds on every path: nothing planted in what a caller or a span sends is kept.

With ``redact=True`` a secret of each shape the redactor knows is planted in every input a
caller controls (workflow and process names, exception messages, context keys and values,
journey data, agent events, model calls, OpenTelemetry spans), and the outcome is judged by
effect only: every row of the four tables, the step view and the prompt table cast to text,
the spool files' bytes and every Redis value under the test's prefix must not hold it.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

import pgtrail
from dbrows import rows
from otlp_builders import otel_span
from pgtrail import ToolCall
from pgtrail.config import Settings
from pgtrail.otlp.assemble import TraceAssembler
from pgtrail.otlp.exporter import PgtrailSpanExporter
from pgtrail.otlp.spans import STATUS_ERROR, STATUS_UNSET, OtlpSpan, SpanEvent
from pgtrail.trail import Trail
from pgtrail.writer.redact import hash_user_id

HMAC_KEY = "attack-k3y"
OFFLINE_DSN = "postgresql://nobody@127.0.0.1:1/none"
JWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# shape: (what is planted, the part of it that must never be stored)
SECRETS: dict[str, tuple[str, str]] = {
    "email": ("ana.lopez@example.com", "ana.lopez@"),
    "phone": ("+34 612 345 678", "612 345 678"),
    "us-phone": ("(415) 555-0132", "555-0132"),
    "card": ("4111 1111 1111 1111", "4111 1111 1111"),
    "openai-key": ("sk-proj-Ab3dEfGh1jKlMn0pQrStUvWxYz9876543210", "Ab3dEfGh1jKlMn0p"),
    "anthropic-key": ("sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeAA", "Zx9Yw8Vu7Ts6Rq5P"),
    "jwt": (JWT_TOKEN, "SflKxwRJSMeKKF2QT4fw"),
    "aws-key": ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    "github-token": ("ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5", "aB3dE5gH7jK9mN1pQ3sT"),
    "stripe-key": ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zd"),
}
SHAPES = list(SECRETS)
STORED_TABLES = [
    "logs_execution",
    "logs_execution_step",
    "logs_llm_execution",
    "logs_agent_execution",
    "logs_user_journey",
    "pgtrail_prompt",
]


# -- reading back everything that was stored -----------------------------------------------------


def database_text(dsn: str) -> str:
    """Every row of every table and view pgtrail writes, each row cast to text."""
    found = []
    for table in STORED_TABLES:
        found += [str(row[0]) for row in rows(dsn, f"SELECT t::text FROM {table} AS t")]
    return "\n".join(found)


def redis_text(redis_url: str, prefix: str) -> str:
    """Every key and value under ``prefix``, whatever the key's type."""
    # Any: redis-py's synchronous and asynchronous return types are one union.
    client: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    parts: list[str] = []
    try:
        for key in client.scan_iter(f"{prefix}*"):
            kind = client.type(key)
            parts.append(key)
            if kind == "hash":
                parts += [f"{k}={v}" for k, v in client.hgetall(key).items()]
            elif kind == "list":
                parts += client.lrange(key, 0, -1)
            elif kind == "string":
                parts.append(str(client.get(key)))
            elif kind == "zset":
                parts += client.zrange(key, 0, -1)
            elif kind == "set":
                parts += client.smembers(key)
    finally:
        client.close()
    return "\n".join(parts)


def spool_bytes(spool_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(spool_dir.rglob("*")) if path.is_file())


def redacted(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"redact": True, "user_hmac_key": HMAC_KEY, **changes})


# -- the writer: every input of every helper ------------------------------------------------------


def plant_in_writer(trail: Trail, secret: str, on_open: Callable[[], None] = lambda: None) -> None:
    """One execution with ``secret`` in every text a caller gives; it fails with it too."""
    text = f"note {secret} end"
    with (
        contextlib.suppress(RuntimeError),
        trail.execution(
            f"wf {secret}",
            user_id="user-1",
            tenant_id="acme",
            session_id="session-1",
            context={"contact": text, f"key {secret}": "v", "nested": {"list": [text]}},
        ) as ex,
    ):
        pgtrail.log_user_journey(
            f"journey {secret}", {"text": text, text: [text], "deep": {"x": text}}
        )
        with contextlib.suppress(ValueError), ex.process(f"step {secret}"):
            raise ValueError(f"step failed: {text}")
        with ex.process(f"outer {secret}"), ex.process(f"inner {secret}"):
            pgtrail.log_llm_execution(
                agent_type=f"agent {secret}",
                model="gpt-4o",
                provider=f"provider {secret}",
                event_type="llm_error",
                input_tokens=10,
                output_tokens=5,
                prompt=f"You are a bot. Owner: {text}",
                prompt_version=f"v {secret}",
                error=f"model said {text}",
                payload={
                    "messages": [{"role": "user", "content": text}],
                    "tool_calls": [{"arguments": json.dumps({"to": secret, "token": "t"})}],
                    text: "key",
                },
                data={"request": text},
            )
            pgtrail.log_agent_execution(
                ToolCall(
                    tool=f"send {secret}",
                    args={"to": secret, "body": text},
                    error=f"tool failed {text}",
                    result={"echo": text},
                ),
                agent_type=f"agent {secret}",
                data={"extra": text},
            )
            pgtrail.log_agent_execution(
                agent_type="planner", event_type=f"custom {secret}", data={text: text}
            )
            trail.flush()  # publishes the finished step to Redis, as in the background
            on_open()
            raise RuntimeError(f"inner failed: {text}")


def plant_in_a_join(trail: Trail, joiner: Trail, secret: str, on_open: Callable[[], None]) -> None:
    """A second service joins an open execution and fails one of its steps."""
    text = f"note {secret} end"
    with trail.execution(f"wf {secret}", user_id="user-1", context={"c": text}) as ex:
        with joiner.join(ex.traceparent()):
            with contextlib.suppress(ValueError), joiner.process(f"remote {secret}"):
                raise ValueError(f"remote failed: {text}")
            pgtrail.log_user_journey("remote_event", {"text": text})
        on_open()


@pytest.mark.parametrize("shape", SHAPES)
def test_writer_rows_hold_no_planted_secret(settings: Settings, shape: str) -> None:
    secret, needle = SECRETS[shape]
    with Trail(redacted(settings), sync=True) as trail:
        plant_in_writer(trail, secret)
    stored = database_text(settings.dsn)
    assert needle not in stored
    assert rows(settings.dsn, "SELECT count(*) FROM logs_execution_step") == [(4,)]
    assert rows(settings.dsn, "SELECT count(*) FROM logs_agent_execution") == [(2,)]
    assert rows(settings.dsn, "SELECT count(*) FROM pgtrail_prompt") == [(1,)]
    assert "RuntimeError: inner failed: note [" in stored  # the error is kept, redacted


@pytest.mark.parametrize("shape", SHAPES)
def test_redis_state_of_an_open_execution_holds_no_planted_secret(
    settings: Settings, redis_url: str, redis_prefix: str, shape: str
) -> None:
    secret, needle = SECRETS[shape]
    seen: list[str] = []

    def look() -> None:
        seen.append(redis_text(redis_url, redis_prefix))

    with (
        Trail(redacted(settings), sync=True) as trail,
        Trail(redacted(settings), sync=True) as joiner,
    ):
        plant_in_writer(trail, secret, look)
        plant_in_a_join(trail, joiner, secret, look)
    first, joined = seen
    assert ":procs" in first and "step " in first  # the finished step was published
    assert "remote " in joined and "wf " in joined
    assert needle not in first
    assert needle not in joined
    assert needle not in database_text(settings.dsn)


@pytest.mark.parametrize("shape", SHAPES)
def test_spool_files_hold_no_planted_secret(settings: Settings, shape: str) -> None:
    secret, needle = SECRETS[shape]
    offline = redacted(settings, dsn=OFFLINE_DSN)
    with Trail(offline, sync=True) as trail:
        plant_in_writer(trail, secret)
    spooled = spool_bytes(settings.spool_dir)
    assert b"execution_finalized" in spooled  # the batches did go to the spool
    assert needle.encode() not in spooled
    assert json.dumps(needle)[1:-1].encode() not in spooled
    with Trail(redacted(settings), sync=True) as replayer:
        assert replayer.replay_spool() > 0
    assert needle not in database_text(settings.dsn)


def test_the_corpus_finds_secrets_when_redaction_is_off(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    """The checks above would see a leak: without redaction every planted secret is found."""
    seen: list[str] = []
    with Trail(settings, sync=True) as trail:
        plant_in_writer(
            trail, SECRETS["email"][0], lambda: seen.append(redis_text(redis_url, redis_prefix))
        )
    assert SECRETS["email"][1] in database_text(settings.dsn)
    assert SECRETS["email"][1] in seen[0]


# -- OpenTelemetry in ----------------------------------------------------------------------------

TRACE_T0 = time.time_ns() - 60 * 1_000_000_000


def secret_spans(trace_id: str, secret: str) -> list[OtlpSpan]:
    """A workflow with an agent, a model call and a failing tool, every text holding ``secret``."""
    text = f"note {secret} end"

    def span(
        span_id: str,
        name: str,
        parent: str | None,
        attributes: dict[str, Any],
        *,
        status: int = STATUS_UNSET,
        message: str = "",
        events: tuple[SpanEvent, ...] = (),
    ) -> OtlpSpan:
        return otel_span(
            name,
            attributes,
            trace_id=trace_id,
            span_id=span_id,
            parent=parent,
            start=TRACE_T0 + int(span_id[-1]) * 1_000_000,
            end=TRACE_T0 + 500_000_000,
            status=status,
            message=message,
            events=events,
            resource={"service.name": "bot", "host.note": text},
            scope="attack",
        )

    failure = SpanEvent(
        "exception",
        TRACE_T0,
        {
            "exception.type": "ValueError",
            "exception.message": f"failed for {text}",
            "exception.stacktrace": f'Traceback:\n  File "x.py"\nValueError: {text}',
        },
    )
    return [
        span(
            "a000000000000001",
            f"invoke_workflow {secret}",
            None,
            {
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": f"support {secret}",
                "user.id": "otlp-user",
                "tenant.id": "acme",
                "custom.note": text,
                f"custom.key {secret}": "key holds it",
                "traceloop.association.properties.contact": text,
            },
            status=STATUS_ERROR,
            message=f"workflow failed: {text}",
            events=(failure,),
        ),
        span(
            "a000000000000002",
            f"invoke_agent {secret}",
            "a000000000000001",
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"agent {secret}"},
        ),
        span(
            "a000000000000003",
            "chat gpt-4o",
            "a000000000000002",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
                "gen_ai.input.messages": json.dumps(
                    [
                        {"role": "system", "content": f"System prompt: {text}"},
                        {"role": "user", "content": text},
                    ]
                ),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": text}]),
            },
            status=STATUS_ERROR,
            message=f"rate limited for {text}",
        ),
        span(
            "a000000000000004",
            f"execute_tool send {secret}",
            "a000000000000002",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "send",
                "gen_ai.tool.call.arguments": json.dumps({"to": secret, "api_key": "hunter2x"}),
                "gen_ai.tool.call.result": text,
            },
            status=STATUS_ERROR,
            message=f"refused: {text}",
            events=(failure,),
        ),
    ]


@pytest.fixture
def otlp_trail(settings: Settings) -> Iterator[Trail]:
    with Trail(redacted(settings), sync=True) as trail:
        yield trail


@pytest.mark.parametrize("shape", SHAPES)
def test_otlp_rows_hold_no_planted_secret(
    settings: Settings, otlp_trail: Trail, shape: str
) -> None:
    secret, needle = SECRETS[shape]
    assembler = TraceAssembler(otlp_trail, grace_s=5.0)
    try:
        assert assembler.accept(secret_spans(uuid.uuid4().hex, secret)) == 4
        assert len(assembler.finalise_due(now=time.time() + 6)) == 1
    finally:
        assembler.close()
    otlp_trail.flush()
    stored = database_text(settings.dsn)
    assert needle not in stored
    assert "hunter2x" not in stored  # a secret-looking key inside JSON text
    assert rows(settings.dsn, "SELECT count(*) FROM logs_execution_step") == [(4,)]
    assert rows(settings.dsn, "SELECT status FROM logs_execution") == [("error",)]


@pytest.mark.parametrize("shape", SHAPES)
def test_spans_held_in_redis_hold_no_planted_secret(
    settings: Settings, otlp_trail: Trail, redis_url: str, redis_prefix: str, shape: str
) -> None:
    secret, needle = SECRETS[shape]
    assembler = TraceAssembler(otlp_trail, grace_s=5.0)
    try:
        assembler.accept(secret_spans(uuid.uuid4().hex, secret))
        held = redis_text(redis_url, redis_prefix)
        assert "invoke_workflow" in held and "otlp-user" in held  # ids stay identifiers
        assert needle not in held
        assert "hunter2x" not in held
        assembler.finalise_due(now=time.time() + 6)
        assert needle not in redis_text(redis_url, redis_prefix)  # the finalised marker
    finally:
        assembler.close()


@pytest.mark.parametrize("shape", SHAPES)
def test_the_in_process_exporter_stores_no_planted_secret(
    settings: Settings, otlp_trail: Trail, redis_url: str, redis_prefix: str, shape: str
) -> None:
    secret, needle = SECRETS[shape]
    text = f"note {secret} end"
    exporter = PgtrailSpanExporter(otlp_trail, grace_s=0.1)
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc {secret}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("attack")
    with tracer.start_as_current_span(
        f"invoke_agent {secret}",
        attributes={"gen_ai.operation.name": "invoke_agent", "enduser.id": "u-9", "n": text},
    ) as root:
        with tracer.start_as_current_span(
            f"execute_tool {secret}",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send"},
        ) as tool:
            tool.record_exception(ValueError(f"tool crashed: {text}"))
            tool.set_status(Status(StatusCode.ERROR, f"refused: {text}"))
        assert needle not in redis_text(redis_url, redis_prefix)
        root.set_status(Status(StatusCode.ERROR, f"agent failed: {text}"))
    provider.shutdown()
    stored = database_text(settings.dsn)
    assert rows(settings.dsn, "SELECT count(*) FROM logs_execution_step") == [(2,)]
    assert needle not in stored


# -- user ids: hashed from the raw value, never redacted -----------------------------------------


def stored_users(dsn: str) -> list[str]:
    found = rows(dsn, "SELECT user_id FROM logs_execution ORDER BY created_at, workflow")
    return [row[0] for row in found]


@pytest.mark.parametrize(
    "users",
    [
        ("ana@example.com", "bob@example.com"),
        ("+34 612 345 678", "+34 699 888 777"),
        ("4111 1111 1111 1111", "5555 5555 5555 4444"),
    ],
    ids=["emails", "phones", "cards"],
)
def test_different_pii_shaped_user_ids_stay_different_people(
    settings: Settings, users: tuple[str, str]
) -> None:
    first, second = users
    with Trail(redacted(settings), sync=True) as trail:
        for index, user in enumerate((first, second, first)):
            with trail.execution(f"run {index}", user_id=user):
                pgtrail.log_user_journey("message", {"i": index})
    expected = [hash_user_id(u, HMAC_KEY) for u in (first, second, first)]
    assert stored_users(settings.dsn) == expected
    assert expected[0] != expected[1]
    journeys = rows(settings.dsn, "SELECT DISTINCT user_id FROM logs_user_journey")
    assert sorted(r[0] for r in journeys) == sorted(set(expected))


def test_otlp_user_ids_are_hashed_from_their_raw_value(settings: Settings) -> None:
    with Trail(redacted(settings), sync=True) as trail:
        assembler = TraceAssembler(trail, grace_s=5.0)
        try:
            for user in ("ana@example.com", "bob@example.com"):
                spans = secret_spans(uuid.uuid4().hex, "x")
                root = spans[0]
                spans[0] = OtlpSpan(
                    **{**root.__dict__, "attributes": {**root.attributes, "user.id": user}}
                )
                assembler.accept(spans)
            assert len(assembler.finalise_due(now=time.time() + 6)) == 2
        finally:
            assembler.close()
        trail.flush()
    expected = {hash_user_id(u, HMAC_KEY) for u in ("ana@example.com", "bob@example.com")}
    assert set(stored_users(settings.dsn)) == expected


def test_without_a_key_user_ids_are_identifiers_and_kept(settings: Settings) -> None:
    plain = settings.model_copy(update={"redact": True})
    with Trail(plain, sync=True) as trail:
        for user in ("ana@example.com", "bob@example.com"):
            with trail.execution("run", user_id=user, session_id=f"s-{user}", tenant_id="t"):
                pgtrail.log_user_journey("message", {"from": user})
    assert sorted(stored_users(settings.dsn)) == ["ana@example.com", "bob@example.com"]
    data = rows(settings.dsn, "SELECT particular_data->>'from' FROM logs_user_journey")
    assert data == [("[EMAIL]",), ("[EMAIL]",)]  # the same text in free data is redacted
