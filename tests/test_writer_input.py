"""Bad input through the public helpers: sanitised and stored, or refused alone, never raised."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import psycopg
import pytest

import pgtrail
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.errors import ValidationError
from pgtrail.writer.redact import hash_user_id


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def stored(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_the_bad_input_corpus_is_stored_clean_and_nothing_raises(settings: Settings) -> None:
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    deep: list[Any] = []
    cursor = deep
    for _ in range(5000):
        cursor.append([])
        cursor = cursor[0]
    sock = socket.socket()
    corpus: dict[str, Any] = {
        "nul": "a\x00b",
        "surrogate": "bad \ud800 half",
        "nan": float("nan"),
        "inf": float("inf"),
        "lock": threading.Lock(),
        "socket": sock,
        "opaque": Opaque(),
        "bytes": b"\xff\xfe raw",
        "set": {3, 1, 2},
        "cycle": cyclic,
        "deep": deep,
        "key\x00with nul": 1,
    }
    huge = "x" * 10_000_000
    with Trail(settings, sync=True, max_field_chars=100_000) as trail:
        with trail.execution("bad\x00 input", user_id="u\x00ser", context={"nan": float("-inf")}):
            pgtrail.log_user_journey("corpus", corpus)
            pgtrail.log_llm_execution(
                model="gpt-4o\x00",
                error="boom \ud83d",
                total_cost=float("nan"),
                input_tokens=10,
                output_tokens=5,
                prompt=huge,
                payload={"completion": huge},
            )
            pgtrail.log_agent_execution(
                agent_type="a", event_type="weird", data=corpus, duration_ms=float("inf")
            )
            pgtrail.log_llm_execution(model="gpt-4o", input_tokens=-5)  # refused: negative
            pgtrail.log_llm_execution(model="gpt-4o", input_tokens=3_000_000_000)  # refused: int4
            pgtrail.log_user_journey("")  # refused: empty event type
        assert trail.stats.rejected == 3
        reasons = " | ".join(r.reason for r in trail.stats.recent_rejections)
    sock.close()
    assert "input_tokens" in reasons and "2147483647" in reasons and "event_type" in reasons

    (journey,) = stored(settings.dsn, "SELECT particular_data::text FROM logs_user_journey")
    text = journey[0]
    assert "\\u0000" not in text and "\ud800" not in text
    data = json.loads(text)
    assert data["nul"] == "ab"
    assert data["nan"] is None and data["inf"] is None
    assert data["set"] == [1, 2, 3]
    assert "[cycle]" in json.dumps(data["cycle"])
    assert "Opaque" in data["opaque"]
    assert data["_pgtrail_notes"], "what was changed is recorded beside the data"

    (llm,) = stored(
        settings.dsn,
        "SELECT model_target, error, total_cost, payload::text, "
        "prompt_hash, user_id FROM logs_llm_execution",
    )
    model, error, cost, payload, prompt_hash, user = llm
    assert model == "gpt-4o" and error == "boom \ufffd" and user == "user"
    assert cost is not None, "NaN cost is dropped, so the cost is inferred from tokens"
    assert len(payload) < 200_000 and "truncated" in payload
    (body,) = stored(
        settings.dsn, f"SELECT body FROM pgtrail_prompt WHERE prompt_hash = '{prompt_hash}'"
    )
    assert len(body[0]) < 100_100 and "truncated" in body[0]

    (agent,) = stored(settings.dsn, "SELECT particular_data FROM logs_agent_execution")
    assert "event_duration_ms" not in agent[0]
    (execution,) = stored(settings.dsn, "SELECT workflow, context FROM logs_execution")
    assert execution == (
        "bad input",
        {"nan": None, "_pgtrail_notes": execution[1]["_pgtrail_notes"]},
    )


def test_strict_mode_raises_a_clear_error_into_the_caller(settings: Settings) -> None:
    with Trail(settings, sync=True, strict=True) as trail, trail.execution("strict"):
        with pytest.raises(ValidationError, match="input_tokens"):
            pgtrail.log_llm_execution(model="gpt-4o", input_tokens="many")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="NUL"):
            pgtrail.log_user_journey("x", {"text": "a\x00b"})
        pgtrail.log_user_journey("fine", {"text": "ok"})
    assert stored(settings.dsn, "SELECT event_type FROM logs_user_journey") == [("fine",)]


def test_redaction_masks_pii_and_secrets_everywhere_and_hashes_users(settings: Settings) -> None:
    key = "k3y"
    with (
        Trail(settings, sync=True, redact=True, user_hmac_key=key) as trail,
        trail.execution("redacted", user_id="57", context={"contact": "ana@example.com"}),
    ):
        pgtrail.log_user_journey(
            "message", {"text": "mail me at ana@example.com or +34 612 345 678"}
        )
        pgtrail.log_llm_execution(
            model="gpt-4o",
            input_tokens=1,
            output_tokens=1,
            prompt="Use key sk-proj-abcdefghijklmnopqrstuvwxyz123456 for ana@example.com",
            error="card 4111 1111 1111 1111 declined",
            payload={
                "messages": [{"role": "user", "content": "my api_key is secret"}],
                "api_key": "hunter2",
            },
        )
    (journey,) = stored(
        settings.dsn, "SELECT particular_data->>'text', user_id FROM logs_user_journey"
    )
    assert journey == ("mail me at [EMAIL] or [PHONE]", hash_user_id("57", key))
    (llm,) = stored(
        settings.dsn, "SELECT error, payload::text, prompt_hash FROM logs_llm_execution"
    )
    assert llm[0] == "card [CARD] declined"
    assert "hunter2" not in llm[1] and "[SECRET]" in llm[1]
    (body,) = stored(settings.dsn, "SELECT body FROM pgtrail_prompt")
    assert "sk-proj" not in body[0] and "ana@example.com" not in body[0]
    (context,) = stored(settings.dsn, "SELECT context->>'contact', user_id FROM logs_execution")
    assert context == ("[EMAIL]", hash_user_id("57", key))
