"""Rows travel as COPY text lines: what goes in comes back out, whatever its characters."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

import pgtrail
from dbrows import one, rows
from pgtrail import AgentDecision, Trail
from pgtrail.config import Settings
from pgtrail.writer import copytext
from pgtrail.writer.prepare import RecordPreparer
from pgtrail.writer.pricing import PriceBook
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.sink import PgSink
from pgtrail.writer.spool import Spool

NASTY = "back\\slash\ttab\nnew line\r\ncarriage \\N \\t é ✓ 'quote' \"double\" \x7f"


@pytest.mark.parametrize(
    "text",
    ["", "plain", "\\", "\\N", "a\tb", "a\nb", "a\rb", NASTY, "\\\\t", "tab at end\t"],
)
def test_escape_and_unescape_are_inverse(text: str) -> None:
    field = copytext.escape(text)
    assert "\t" not in field and "\n" not in field and "\r" not in field
    assert field != copytext.NULL
    assert copytext.unescape(field) == text


def test_a_line_splits_back_into_its_fields() -> None:
    when = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    event = uuid.uuid4()
    line = copytext.line([event, None, when, NASTY, 7, Decimal("0.0031"), {"k": NASTY}, True])
    fields = copytext.fields(line)
    assert fields[0] == event.hex
    assert fields[1] is None
    assert fields[2] == "2026-03-02 02:30:00+00:00"  # stored in UTC
    assert fields[3] == NASTY
    assert fields[4:6] == ["7", "0.0031"]
    assert json.loads(str(fields[6])) == {"k": NASTY}
    assert fields[7] == "t"
    assert copytext.created_day(line) == "2026-03-02"
    assert copytext.event_id(line) == event


def test_the_day_of_a_row_is_its_utc_day_whatever_offset_it_was_written_with() -> None:
    line = copytext.line([uuid.uuid4(), uuid.uuid4(), "2026-03-01T23:30:00-03:00"])
    assert copytext.created_day(line) == "2026-03-02"


def test_only_plain_text_skips_escaping() -> None:
    assert copytext.plain("claude-sonnet-4 v6 (eu)")
    for text in ("tab\t", "nl\n", "back\\slash", "nul\x00", "é", "\ud800"):
        assert not copytext.plain(text)


def test_special_characters_are_stored_exactly_in_every_column_kind(settings: Settings) -> None:
    with (
        Trail(settings, sync=True) as trail,
        trail.execution(
            f"workflow {NASTY}", user_id=f"user {NASTY}", session_id=NASTY, context={"c": NASTY}
        ) as ex,
        trail.process(f"step {NASTY}"),
    ):
        pgtrail.log_llm_execution(
            agent_type=NASTY,
            model=f"model {NASTY}",
            provider=NASTY,
            prompt_version=NASTY,
            error=NASTY,
            prompt=NASTY,
            input_tokens=10,
            output_tokens=5,
            data={"text": NASTY, NASTY: 1},
            payload={"completion": NASTY},
        )
        pgtrail.log_agent_execution(
            AgentDecision(decisions={"why": NASTY}), agent_type=NASTY, duration_ms=3
        )
        pgtrail.log_user_journey(f"event {NASTY}", {"note": NASTY})
    dsn = settings.dsn
    assert trail.stats.rejected == 0
    llm = one(
        dsn,
        "SELECT agent_type, model_target, provider, prompt_version, error, particular_data, "
        "payload, user_id, session_id FROM logs_llm_execution",
    )
    assert llm[:5] == (NASTY, f"model {NASTY}", NASTY, NASTY, NASTY)
    assert llm[5]["text"] == NASTY and llm[5][NASTY] == 1
    assert llm[6] == {"completion": NASTY}
    assert llm[7:] == (f"user {NASTY}", NASTY)
    assert one(dsn, "SELECT body FROM pgtrail_prompt") == NASTY
    agent = one(dsn, "SELECT agent_type, particular_data FROM logs_agent_execution")
    assert agent[0] == NASTY
    assert agent[1]["agent_decisions"] == {"why": NASTY}
    journey = one(dsn, "SELECT event_type, particular_data FROM logs_user_journey")
    assert journey == (f"event {NASTY}", {"note": NASTY})
    execution = one(
        dsn,
        "SELECT workflow, context, processes_executed, execution_id FROM logs_execution",
    )
    assert execution[0] == f"workflow {NASTY}"
    assert execution[1] == {"c": NASTY}
    assert [p["name"] for p in execution[2]] == [f"workflow {NASTY}", f"step {NASTY}"]
    assert execution[3] == ex.execution_id


def test_spool_files_of_earlier_versions_are_replayed(settings: Settings, tmp_path: Path) -> None:
    """Earlier versions spooled each row as a JSON list of values; those files still replay."""
    spool_dir = tmp_path / "old-spool"
    spool_dir.mkdir()
    event, execution = uuid.uuid4(), uuid.uuid4()
    created = "2026-03-01T10:00:00.123456+00:00"
    values = [str(event), str(execution), created, "acme", "u1", None, "ab12", "note"]
    values.append('{"a": "x\\ty"}')
    (spool_dir / "20260301T100000000000-abc.jsonl").write_text(
        json.dumps(["logs_user_journey", values]) + "\n", encoding="utf-8"
    )
    assert Spool(spool_dir).pending_rows() == 1
    with Trail(settings.model_copy(update={"spool_dir": spool_dir}), sync=True) as trail:
        assert trail.replay_spool() == 1
    stored = one(
        settings.dsn,
        "SELECT event_id, execution_id, created_at, tenant_id, particular_data "
        "FROM logs_user_journey",
    )
    assert stored[:2] == (event, execution)
    assert stored[2] == dt.datetime.fromisoformat(created)
    assert stored[3:] == ("acme", {"a": "x\ty"})
    assert not list(spool_dir.glob("*.jsonl"))


def test_costs_of_spooled_calls_are_filled_from_their_lines(settings: Settings) -> None:
    prices = PriceBook()
    preparer = RecordPreparer(settings, prices)  # no prices loaded: costs stay null
    stamp = (None, uuid.uuid4(), dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "t", None, None, "s")
    args = {"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 0, "agent_type": NASTY}
    batch, rejected = preparer.prepare([QueuedRecord("logs_llm_execution", *stamp, args)])
    assert not rejected
    fields = copytext.fields(batch["logs_llm_execution"][0])
    assert fields[-5:-2] == [None, None, None]
    sink = PgSink(settings)
    sink.refresh_prices()
    RecordPreparer(settings, sink.prices).fill_missing_costs(batch)
    sink.close()
    fields = copytext.fields(batch["logs_llm_execution"][0])
    assert fields[-5] is not None and Decimal(str(fields[-5])) > 0
    assert fields[9] == NASTY  # the other fields are untouched
    assert rows(settings.dsn, "SELECT 1 FROM logs_llm_execution") == []


@pytest.mark.parametrize(
    "args",
    [
        {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 80, "agent_type": "coach"},
        {
            "model": "gpt-4o",
            "provider": "openai",
            "event_type": "llm_error",
            "error": "upstream 503",
            "input_tokens": 10,
            "cached_input_tokens": 4,
            "reasoning_tokens": 2,
            "processing_time_ms": 900,
            "time_to_first_token_ms": 120,
            "prompt_hash": "abc",
            "prompt_version": "v6",
            "payload": {"completion": "hi"},
            "data": {"turn": 3},
        },
        {"model": "no-such-model", "input_tokens": 5, "data": {"x": None}},
        {"agent_type": None, "model": None, "data": None},
    ],
)
def test_the_one_pass_row_of_a_plain_call_is_the_general_paths_row(
    settings: Settings, args: dict[str, object]
) -> None:
    sink = PgSink(settings)
    sink.refresh_prices()
    prices = sink.prices
    sink.close()
    when = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    stamp = (uuid.uuid4(), uuid.uuid4(), when, "acme", "u1", "s1", "ab12")
    context = {"workflow": "001 Main", "feature": None}

    def call() -> QueuedRecord:
        return QueuedRecord("logs_llm_execution", *stamp, dict(args), context=context)

    one_pass = RecordPreparer(settings, prices)
    general = RecordPreparer(settings, prices)
    general.plain_llm_row = lambda *_: None  # type: ignore[method-assign]
    fast = one_pass.prepare_one(call())
    slow = general.prepare_one(call())
    assert one_pass.plain_llm_row("common", call()) is not None  # took the one pass
    assert fast == slow
    assert len(copytext.fields(fast[0][1])) == 25
