"""Every saved report, checked against answers computed independently in Python.

A seeded generator writes a few thousand rows of known shape (NULLs, missing JSON keys, odd
JSON types, rows exactly on the window's edges, calls outside every process). Each report
then runs exactly as ``pgtrail report run`` runs it, and its rows must equal those a plain
Python re-statement of the report's definition computes from the same records: exact for
counts and sums, and for percentiles the same linear interpolation PostgreSQL documents for
``percentile_cont`` in the same double precision.

The second part plants each problem the four detective reports look for by hand (unlike
the demo workload in test_demo.py) and checks that a healthy twin of the data flags nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from pytest_postgresql.janitor import DatabaseJanitor

from pgtrail.config import Settings
from pgtrail.read import reports
from pgtrail.resources import queries_dir

Rec = dict[str, Any]
Row = tuple[Any, ...]
Values = Mapping[str, Any]

VALID = "llm_valid_execution"
T0 = dt.datetime(2026, 9, 28, tzinfo=dt.UTC)  # a Monday
NOW = T0 + dt.timedelta(days=40, hours=7, minutes=13, seconds=5)
SINCE = T0 + dt.timedelta(days=3, hours=5)
UNTIL = T0 + dt.timedelta(days=38, hours=18)
USERS = [f"user-{i:02d}" for i in range(15)]
TENANTS = ("acme", "globex", "initech")
WORKFLOWS = ("001 Main", "001 Main", "001 Main", "050 Billing")
AGENTS = ("coaching", "critic", "planner", None)
MODELS = (
    ("anthropic", "claude-sonnet-4"),
    ("openai", "gpt-5"),
    ("google", "gemini-2.5-flash"),
    (None, None),
)
OUTCOMES = ["llm_valid_execution", "llm_error", "llm_timeout", "llm_rate_limited"]
OUTCOMES += ["llm_invalid_output"]
OUTCOME_WEIGHTS = [85, 5, 4, 3, 3]
INTENSITY = ("low", "balanced", "high", "intense")
# A user id carrying everything that is special to SQL or to psql.
ODD_USER = "o'brien\\\" ; DROP TABLE logs_user_journey; -- :'since' :until \\g ’"
TREE_ID = uuid.UUID("0190f3e4-7a1b-7c3d-9e2f-0123456789ab")

LOG_COLUMNS = {
    "logs_execution": (
        "event_id execution_id created_at tenant_id user_id session_id span_id event_type "
        "particular_data workflow status error processes_executed context finalized_at "
        "duration_ms"
    ),
    "logs_llm_execution": (
        "event_id execution_id created_at tenant_id user_id session_id span_id event_type "
        "particular_data agent_type provider model_target prompt_hash prompt_version "
        "input_tokens output_tokens cached_input_tokens reasoning_tokens processing_time_ms "
        "time_to_first_token_ms total_cost error"
    ),
    "logs_agent_execution": (
        "event_id execution_id created_at tenant_id user_id session_id span_id event_type "
        "particular_data agent_type"
    ),
    "logs_user_journey": (
        "event_id execution_id created_at tenant_id user_id session_id span_id event_type "
        "particular_data"
    ),
}


# --------------------------------------------------------------------------- the dataset


@dataclass
class Dataset:
    """The source records, one list per log table, exactly as inserted."""

    executions: list[Rec] = field(default_factory=list)
    llm: list[Rec] = field(default_factory=list)
    agent: list[Rec] = field(default_factory=list)
    journey: list[Rec] = field(default_factory=list)

    def tables(self) -> dict[str, list[Rec]]:
        """Table name -> its records."""
        return {
            "logs_execution": self.executions,
            "logs_llm_execution": self.llm,
            "logs_agent_execution": self.agent,
            "logs_user_journey": self.journey,
        }


def _ms(n: float) -> dt.timedelta:
    return dt.timedelta(milliseconds=n)


def _steps(rng: random.Random, start: dt.datetime, variant: int) -> list[Rec]:
    """processes_executed of one execution: a small tree; names sometimes padded."""
    shapes: list[list[tuple[str, str | None, str, int]]] = [
        [
            ("p1", None, "001 Main", 0),
            ("p2", "p1", "003 Extract message", 1),
            ("p3", "p1", " 202 Agent - Coaching ", 1),
            ("p4", "p3", "101 AI Execute LLM", 2),
        ],
        [
            ("p1", None, "001 Main", 0),
            ("p2", "p1", "003 Extract message", 1),
            ("p3", "p1", "202 Agent - Coaching", 1),
            ("p4", "p3", "101 AI Execute LLM", 2),
            ("p5", "p3", "021 Send message", 2),
        ],
        [("p1", None, "001 Main", 0), ("p2", "p1", "014 Process security", 1)],
        [],
    ]
    steps: list[Rec] = []
    for span, parent, name, level in shapes[variant]:
        step: Rec = {
            "span_id": span,
            "parent_span_id": parent,
            "name": name,
            "nesting_level": level,
            "started_at": (start + _ms(rng.randint(0, 500))).isoformat(),
            "duration_ms": rng.randint(5, 9000),
            "status": "error" if variant == 2 and span == "p2" else "ok",
            "error": "blocked" if variant == 2 and span == "p2" else None,
        }
        if rng.random() < 0.05:
            del step["nesting_level"]
        steps.append(step)
    return steps


def _cost(inp: int | None, out: int | None) -> Decimal | None:
    if inp is None and out is None:
        return None
    return (Decimal(inp or 0) * 3 + Decimal(out or 0) * 15) / 1_000_000


def _llm_call(rng: random.Random, ex: Rec, at: dt.datetime, span: str | None) -> Rec:
    agent = rng.choice(AGENTS)
    provider, model = rng.choice(MODELS)
    outcome = rng.choices(OUTCOMES, OUTCOME_WEIGHTS)[0]
    late = at >= T0 + dt.timedelta(days=20)
    version = rng.choice(["v2", "v2", "v2", None] if late else ["v1", "v1", "v1", None])
    inp = None if rng.random() < 0.03 else rng.randint(100, 12000)
    if ex["user_id"] == "user-07" and inp is not None and rng.random() < 0.4:
        inp *= 9
    out = None if rng.random() < 0.03 else rng.randint(10, 4000)
    slow = 1.6 if late and agent == "coaching" else 1.0
    latency = None if rng.random() < 0.03 else int(rng.randint(200, 9000) * slow)
    if outcome == "llm_timeout":
        latency = 60000
    billed = outcome not in ("llm_timeout", "llm_rate_limited") and rng.random() > 0.02
    data: Rec = {"workflow": ex["workflow"], "feature": ex["context"]["feature"]}
    if rng.random() < 0.05:
        del data["workflow"]
    if rng.random() < 0.05:
        del data["feature"]
    return {
        "event_id": uuid.UUID(int=rng.getrandbits(128)),
        "execution_id": ex["execution_id"],
        "created_at": at,
        "tenant_id": ex["tenant_id"],
        "user_id": ex["user_id"],
        "session_id": ex["session_id"],
        "span_id": span,
        "event_type": outcome,
        "particular_data": data,
        "agent_type": agent,
        "provider": provider,
        "model_target": model,
        "prompt_hash": None,
        "prompt_version": version,
        "input_tokens": inp,
        "output_tokens": out,
        "cached_input_tokens": None if inp is None else rng.randint(0, inp),
        "reasoning_tokens": rng.choice([None, 0, rng.randint(1, 900)]),
        "processing_time_ms": latency,
        "time_to_first_token_ms": None if rng.random() < 0.1 else rng.randint(40, 2000),
        "total_cost": _cost(inp, out) if billed else None,
        "error": None if outcome == VALID else outcome,
    }


def _duration(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return "30000"  # a JSON string: not a number, so never "slow"
    if roll < 0.08:
        return True
    if roll < 0.12:
        return rng.randint(20000, 40000) + 0.5
    return rng.randint(100, 40000)


def _agent_event(rng: random.Random, ex: Rec, at: dt.datetime, span: str | None) -> Rec:
    kind = rng.choices(
        ["agent_decision", "context_compression", "tool_call", "handoff"], [40, 30, 15, 15]
    )[0]
    data: Rec = {"event_duration_ms": _duration(rng)}
    if rng.random() < 0.05:
        del data["event_duration_ms"]
    if kind == "agent_decision":
        drift = (at - T0).days / 42
        intensity: Any = rng.choices(INTENSITY, [30, 50 - 30 * drift, 15, 5 + 30 * drift])[0]
        if rng.random() < 0.04:
            intensity = None
        quality: Rec = {"intensity_level": intensity, "message_length": rng.randint(200, 3000)}
        if rng.random() < 0.04:
            del quality["intensity_level"]
        if rng.random() < 0.1:
            quality["message_length"] = rng.randint(200, 3000) + 0.25
        data["agent_decisions"] = {"coaching_quality": quality}
    elif kind == "context_compression":
        user_input: Rec = {
            "significant_moment_detected": rng.choice([True, True, False, "true"]),
            "compression_score": round(rng.random(), 2),
            "compression_priority": rng.choice(["preserve_full", "preserve_full", "compress"]),
        }
        for key in list(user_input):
            if rng.random() < 0.06:
                del user_input[key]
        data["context_management"] = {"user_input": user_input}
    return {
        "event_id": uuid.UUID(int=rng.getrandbits(128)),
        "execution_id": ex["execution_id"],
        "created_at": at,
        "tenant_id": ex["tenant_id"],
        "user_id": ex["user_id"],
        "session_id": ex["session_id"],
        "span_id": span,
        "event_type": kind,
        "particular_data": data,
        "agent_type": rng.choice(AGENTS),
    }


def _journey(rng: random.Random, ex: Rec, at: dt.datetime, kind: str) -> Rec:
    return {
        "event_id": uuid.UUID(int=rng.getrandbits(128)),
        "execution_id": ex["execution_id"],
        "created_at": at,
        "tenant_id": ex["tenant_id"],
        "user_id": ex["user_id"],
        "session_id": ex["session_id"],
        "span_id": None,
        "event_type": kind,
        "particular_data": {"text_length": rng.randint(1, 900), "kind": kind},
    }


def _execution(rng: random.Random, i: int, at: dt.datetime, variant: int) -> Rec:
    group = i // 3
    user = None if group % 29 == 5 else USERS[group % len(USERS)]
    if group % 31 == 7:
        user = ODD_USER
    duration = None if i % 23 == 0 else rng.randint(500, 40000)
    workflow = rng.choice(WORKFLOWS)
    return {
        "event_id": uuid.UUID(int=rng.getrandbits(128)),
        "execution_id": uuid.UUID(int=rng.getrandbits(128)),
        "created_at": at,
        "tenant_id": TENANTS[group % len(TENANTS)],
        "user_id": user,
        "session_id": None if i % 17 == 0 else f"sess-{group:04d}",
        "span_id": None,
        "event_type": "execution_finalized",
        "particular_data": {},
        "workflow": workflow,
        "status": rng.choices(["success", "error", "abandoned"], [80, 12, 8])[0],
        "error": None,
        "processes_executed": _steps(rng, at, variant),
        "context": {"feature": rng.choice(["chat", "chat", "summary", "upsell"])},
        "finalized_at": None if duration is None else at + _ms(duration),
        "duration_ms": duration,
    }


def build_dataset(seed: int = 20261123, executions: int = 520) -> Dataset:
    """Executions over six weeks with their LLM calls, agent events and journey events."""
    rng = random.Random(seed)
    ds = Dataset()
    for i in range(executions):
        at = T0 + dt.timedelta(seconds=rng.uniform(0, 42 * 86400))
        if i in (0, 1):
            at = SINCE if i == 0 else UNTIL  # the window's edges: one in, one out
        ex = _execution(rng, i, at, rng.choice([0, 0, 1, 1, 2, 3]))
        ds.executions.append(ex)
        spans = [s["span_id"] for s in ex["processes_executed"]] + [None, "ghost"]
        for _ in range(rng.randint(0, 7)):
            offset = _ms(rng.randint(10, 30000))
            if rng.random() < 0.05:
                offset = dt.timedelta(hours=rng.uniform(20, 30))
            ds.llm.append(_llm_call(rng, ex, at + offset, rng.choice(spans)))
        for _ in range(rng.randint(0, 4)):
            ds.agent.append(_agent_event(rng, ex, at + _ms(rng.randint(0, 9000)), "p3"))
        kinds = ["user_message_received", "user_message_sent"]
        kinds += rng.sample(["state_transition", "thumbs_down", "user_message_received"], 1)
        if ex["status"] == "abandoned" and rng.random() < 0.7:
            kinds.append("session_abandoned")
        for n, kind in enumerate(kinds):
            ds.journey.append(_journey(rng, ex, at + _ms(1000 * n + rng.randint(0, 999)), kind))
    for rows in (ds.llm, ds.agent, ds.journey):
        rows[0]["created_at"], rows[1]["created_at"] = SINCE, UNTIL
    _add_tree(rng, ds)
    _add_scores(random.Random(seed * 31 + 18), ds)
    return ds


SCORE_NAMES = ("helpfulness", "helpfulness", "thumbs", "topic", "tone")


def _score(rng: random.Random, name: str) -> Rec:
    """The particular_data of one score, as pgtrail.scores writes it (now and then odd)."""
    if name == "thumbs":
        up = rng.random() < 0.6
        data: Rec = {"value": up, "value_type": "boolean", "score": 1.0 if up else 0.0}
        data["label"] = "true" if up else "false"
    elif name == "topic":
        label = rng.choice(["on_topic", "on_topic", "off_topic", "unclear"])
        data = {"value": label, "value_type": "categorical", "label": label}
    else:
        value = round(rng.random(), 2)
        data = {"value": value, "value_type": "numeric", "score": value}
    roll = rng.random()
    if roll < 0.03:
        data["score"] = "0.5"  # a JSON string: not a number, so never averaged
    elif roll < 0.05:
        data["score"] = rng.randint(0, 1)  # a JSON integer is a number too
    data = {"name": name, **data, "source": rng.choice(["human", "model", "rule"])}
    if rng.random() < 0.02:
        del data["name"]
    return data


def _add_scores(rng: random.Random, ds: Dataset) -> None:
    """Scores on some executions: during them or hours later, in one of their processes."""
    spans: dict[uuid.UUID, list[str | None]] = defaultdict(list)
    for call in ds.llm:
        spans[call["execution_id"]].append(call["span_id"])
    for ex in ds.executions:
        if ex["execution_id"] == TREE_ID or rng.random() < 0.55:
            continue
        for _ in range(rng.randint(1, 3)):
            at = ex["created_at"] + _ms(rng.randint(0, 9000))
            if rng.random() < 0.2:
                at += dt.timedelta(hours=rng.uniform(1, 48))  # feedback given later
            span = rng.choice([*spans[ex["execution_id"]], None, "p3"])
            ds.agent.append(
                {
                    "event_id": uuid.UUID(int=rng.getrandbits(128)),
                    "execution_id": ex["execution_id"],
                    "created_at": at,
                    "tenant_id": ex["tenant_id"],
                    "user_id": ex["user_id"],
                    "session_id": ex["session_id"],
                    "span_id": span,
                    "event_type": "score",
                    "particular_data": _score(rng, rng.choice(SCORE_NAMES)),
                    "agent_type": rng.choice(AGENTS) if rng.random() < 0.3 else None,
                }
            )


def _add_tree(rng: random.Random, ds: Dataset) -> None:
    """One execution with a deeper tree, calls in nested spans, outside them and unknown."""
    ex = _execution(rng, 3, T0 + dt.timedelta(days=39, hours=2), 1)
    ex["execution_id"] = TREE_ID
    ex["processes_executed"].append(
        {"span_id": "p6", "parent_span_id": "p4", "name": "  301 Tool call", "nesting_level": 3}
    )
    ex["processes_executed"].append({"span_id": None, "name": "999 Unnamed span"})
    ds.executions.append(ex)
    for span in ["p4", "p4", "p6", "p1", None, "ghost", "p6"]:
        ds.llm.append(_llm_call(rng, ex, ex["created_at"] + _ms(rng.randint(1, 9000)), span))
    for span in ["p3", "p3", "p6", None]:
        ds.agent.append(_agent_event(rng, ex, ex["created_at"] + _ms(rng.randint(1, 9000)), span))


def insert(settings: Settings, ds: Dataset) -> None:
    """Writes the records with COPY, JSON values as jsonb."""
    with psycopg.connect(settings.dsn) as conn:
        for table, rows in ds.tables().items():
            columns = LOG_COLUMNS[table].split()
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        [
                            Jsonb(row[c]) if isinstance(row[c], dict | list) else row[c]
                            for c in columns
                        ]
                    )


# --------------------------------------------------------------------------- arithmetic


def rnd(value: Decimal | Fraction | int, places: int) -> Decimal:
    """PostgreSQL's round(numeric, places): half away from zero, exact input."""
    scaled = Fraction(value) * 10**places
    whole = math.floor(abs(scaled) + Fraction(1, 2))
    return Decimal(whole if scaled >= 0 else -whole).scaleb(-places)


def f2n(value: float) -> Decimal:
    """A double precision value cast to numeric (PostgreSQL keeps 15 significant digits)."""
    return Decimal(f"{value:.15g}")


def percentile_cont(values: Iterable[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest rows."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def sum_or_zero(values: Iterable[Any]) -> Any:
    """coalesce(sum(x), 0)."""
    present = [v for v in values if v is not None]
    return sum(present) if present else 0


def total_or_none(values: Iterable[Any]) -> Any:
    """sum(x): NULL when every value is NULL."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def mean(values: Iterable[Any]) -> Fraction | None:
    """avg(x) exactly, NULLs ignored."""
    present = [Fraction(v) for v in values if v is not None]
    return sum(present, Fraction(0)) / len(present) if present else None


def nl(value: Any) -> tuple[bool, Any]:
    """Sort key putting NULL last."""
    return (value is None, value)


def order(rows: list[Row], *keys: tuple[Callable[[Row], Any], bool]) -> list[Row]:
    """ORDER BY: (key, descending) pairs, first key most significant; sorts are stable."""
    result = list(rows)
    for key, descending in reversed(keys):
        result.sort(key=key, reverse=descending)
    return result


def group(rows: Iterable[Rec], key: Callable[[Rec], Hashable]) -> dict[Any, list[Rec]]:
    """GROUP BY."""
    groups: dict[Any, list[Rec]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def in_window(rows: Iterable[Rec], p: Values, extra: dt.timedelta = dt.timedelta()) -> list[Rec]:
    """created_at >= since AND created_at < until (+ extra)."""
    return [r for r in rows if p["since"] <= r["created_at"] < p["until"] + extra]


_MISSING = object()


def jpath(data: Any, *keys: str) -> Any:
    """data #> keys; _MISSING when a key is absent."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def is_number(value: Any) -> bool:
    """jsonb_typeof(value) = 'number'."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_text(value: Any) -> str | None:
    """data #>> path for scalars: NULL for absent or JSON null; true/false for booleans."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def as_numeric(value: Any) -> Decimal:
    """A JSON number as PostgreSQL's numeric reads it."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def local_date(at: dt.datetime, tz: str) -> dt.date:
    """(at AT TIME ZONE tz)::date."""
    return at.astimezone(ZoneInfo(tz)).date()


# --------------------------------------------------------------------------- the reports


def ref_cost_by_agent(ds: Dataset, p: Values) -> list[Row]:
    rows = []
    for agent, calls in group(in_window(ds.llm, p), lambda r: r["agent_type"]).items():
        cost = sum_or_zero(r["total_cost"] for r in calls)
        latency = mean(r["processing_time_ms"] for r in calls if r["event_type"] == VALID)
        rows.append(
            (
                agent,
                len(calls),
                sum(r["event_type"] != VALID for r in calls),
                cost,
                rnd(Fraction(cost) / len(calls), 6),
                None if latency is None else rnd(latency, 1),
                sum_or_zero(r["input_tokens"] for r in calls),
                sum_or_zero(r["output_tokens"] for r in calls),
            )
        )
    return order(rows, (lambda r: r[3], True), (lambda r: nl(r[0]), False))


def ref_cost_by_model(ds: Dataset, p: Values) -> list[Row]:
    groups = group(in_window(ds.llm, p), lambda r: (r["provider"], r["model_target"]))
    grand = total_or_none(total_or_none(r["total_cost"] for r in g) for g in groups.values())
    rows = []
    for (provider, model), calls in groups.items():
        cost = sum_or_zero(r["total_cost"] for r in calls)
        rows.append(
            (
                provider,
                model,
                len(calls),
                sum(r["event_type"] != VALID for r in calls),
                sum_or_zero(r["input_tokens"] for r in calls),
                sum_or_zero(r["cached_input_tokens"] for r in calls),
                sum_or_zero(r["output_tokens"] for r in calls),
                sum_or_zero(r["reasoning_tokens"] for r in calls),
                cost,
                rnd(Fraction(cost) / len(calls), 6),
                rnd(100 * Fraction(cost) / Fraction(grand), 2) if grand else None,
            )
        )
    return order(
        rows, (lambda r: r[8], True), (lambda r: nl(r[0]), False), (lambda r: nl(r[1]), False)
    )


def ref_cost_by_tenant_day(ds: Dataset, p: Values) -> list[Row]:
    rows = []
    groups = group(
        in_window(ds.llm, p), lambda r: (local_date(r["created_at"], p["tz"]), r["tenant_id"])
    )
    for (day, tenant), calls in groups.items():
        rows.append(
            (
                day,
                tenant,
                len(calls),
                len({r["user_id"] for r in calls if r["user_id"] is not None}),
                sum_or_zero(r["input_tokens"] for r in calls),
                sum_or_zero(r["output_tokens"] for r in calls),
                sum_or_zero(r["total_cost"] for r in calls),
            )
        )
    return order(rows, (lambda r: r[0], False), (lambda r: r[6], True), (lambda r: r[1], False))


def ref_latency_percentiles(ds: Dataset, p: Values) -> list[Row]:
    calls = [
        r
        for r in in_window(ds.llm, p)
        if r["processing_time_ms"] is not None and (p["include_failed"] or r["event_type"] == VALID)
    ]
    rows = []
    for (model, agent), g in group(calls, lambda r: (r["model_target"], r["agent_type"])).items():
        if len(g) < p["min_calls"]:
            continue
        times = [float(r["processing_time_ms"]) for r in g]
        ttft = [
            float(r["time_to_first_token_ms"]) for r in g if r["time_to_first_token_ms"] is not None
        ]
        pct = {f: percentile_cont(times, f) for f in (0.5, 0.95, 0.99)}
        first_token = percentile_cont(ttft, 0.5)
        rows.append(
            (
                model,
                agent,
                len(g),
                *(rnd(f2n(v), 1) for v in pct.values() if v is not None),
                max(r["processing_time_ms"] for r in g),
                None if first_token is None else rnd(f2n(first_token), 1),
            )
        )
    return order(
        rows, (lambda r: r[4], True), (lambda r: nl(r[0]), False), (lambda r: nl(r[1]), False)
    )


def ref_outcome_rates(ds: Dataset, p: Values) -> list[Row]:
    rows = []
    groups = group(
        in_window(ds.llm, p),
        lambda r: (as_text(jpath(r["particular_data"], "feature")), r["model_target"]),
    )
    for (feature, model), calls in groups.items():
        n = len(calls)
        if n < p["min_calls"]:
            continue
        count = {o: sum(r["event_type"] == o for r in calls) for o in OUTCOMES}
        failures = [count[o] for o in OUTCOMES[1:]]
        rows.append(
            (
                feature,
                model,
                n,
                count[VALID],
                *failures,
                *(rnd(Fraction(100 * f, n), 2) for f in failures),
                rnd(Fraction(100 * (n - count[VALID]), n), 2),
            )
        )
    return order(
        rows, (lambda r: r[12], True), (lambda r: nl(r[0]), False), (lambda r: nl(r[1]), False)
    )


def ref_large_generations(ds: Dataset, p: Values) -> list[Row]:
    rows = []
    for r in in_window(ds.llm, p):
        tokens = (r["input_tokens"] or 0) + (r["output_tokens"] or 0)
        if tokens >= p["min_tokens"]:
            rows.append(
                (
                    r["created_at"],
                    r["execution_id"],
                    r["agent_type"],
                    r["model_target"],
                    r["event_type"],
                    r["input_tokens"],
                    r["output_tokens"],
                    tokens,
                    r["total_cost"],
                    r["processing_time_ms"],
                    r["user_id"],
                    r["event_id"],
                )
            )
    rows = order(rows, (lambda r: r[7], True), (lambda r: r[0], True), (lambda r: r[11], False))
    return [r[:-1] for r in rows[: p["limit"]]]


def ref_slow_agent_executions(ds: Dataset, p: Values) -> list[Row]:
    rows = []
    for r in in_window(ds.agent, p):
        value = jpath(r["particular_data"], "event_duration_ms")
        if is_number(value) and as_numeric(value) > p["min_duration_ms"]:
            rows.append(
                (
                    r["created_at"],
                    r["execution_id"],
                    r["agent_type"],
                    r["event_type"],
                    as_numeric(value),
                    r["user_id"],
                    r["session_id"],
                    r["event_id"],
                )
            )
    rows = order(rows, (lambda r: r[0], True), (lambda r: r[7], False))
    return [r[:-1] for r in rows[: p["limit"]]]


def ref_user_journey(ds: Dataset, p: Values) -> list[Row]:
    rows = [
        (
            r["created_at"],
            r["session_id"],
            r["execution_id"],
            r["event_type"],
            r["particular_data"],
            r["event_id"],
        )
        for r in in_window(ds.journey, p)
        if r["user_id"] == p["user_id"]
    ]
    return [r[:-1] for r in order(rows, (lambda r: r[0], False), (lambda r: r[5], False))]


def _latest(rows: list[Rec]) -> Rec:
    return max(rows, key=lambda r: (r["created_at"], r["event_id"]))


def ref_session_summary(ds: Dataset, p: Values) -> list[Row]:
    def by_session(rows: list[Rec]) -> dict[Any, list[Rec]]:
        kept = [r for r in in_window(rows, p) if r["session_id"] is not None]
        return group(kept, lambda r: r["session_id"])

    executions, journeys, calls = (by_session(t) for t in (ds.executions, ds.journey, ds.llm))
    rows = []
    for session in executions.keys() | journeys.keys():
        xs, js, ls = executions.get(session, []), journeys.get(session, []), calls.get(session, [])
        x_user = min((r["user_id"] for r in xs if r["user_id"] is not None), default=None)
        j_user = min((r["user_id"] for r in js if r["user_id"] is not None), default=None)
        starts = [r["created_at"] for r in xs + js]
        ends = [r["finalized_at"] or r["created_at"] for r in xs]
        ends += [r["created_at"] for r in js]
        abandoned = any(r["event_type"] == "session_abandoned" for r in js) or bool(
            xs and _latest(xs)["status"] == "abandoned"
        )
        started, ended = min(starts), max(ends)
        if p["only_abandoned"] and not abandoned:
            continue
        seconds = Fraction((ended - started) // dt.timedelta(microseconds=1), 1_000_000)
        rows.append(
            (
                session,
                j_user if x_user is None else x_user,
                min(r["tenant_id"] for r in (xs or js)),
                started,
                ended,
                rnd(seconds, 1),
                sum(r["event_type"] == "user_message_received" for r in js),
                len(xs),
                sum(r["status"] == "error" for r in xs),
                len(ls),
                sum_or_zero(r["total_cost"] for r in ls),
                abandoned,
            )
        )
    return order(rows, (lambda r: r[3], True), (lambda r: r[0], False))[: p["limit"]]


def _path(ex: Rec) -> str:
    names = [s["name"].strip(" ") for s in ex["processes_executed"] if s.get("name") is not None]
    return " > ".join(names)


def ref_expensive_paths(ds: Dataset, p: Values) -> list[Row]:
    calls = group(in_window(ds.llm, p, dt.timedelta(days=1)), lambda r: r["execution_id"])
    paths = []
    for (workflow, path), xs in group(
        in_window(ds.executions, p), lambda r: (r["workflow"], _path(r))
    ).items():
        if len(xs) < p["min_executions"]:
            continue
        costs = [sum_or_zero(c["total_cost"] for c in calls.get(x["execution_id"], [])) for x in xs]
        duration = mean(x["duration_ms"] for x in xs)
        paths.append(
            {
                "workflow": workflow,
                "path": path,
                "executions": len(xs),
                "llm_calls": sum(len(calls.get(x["execution_id"], [])) for x in xs),
                "total": sum(costs),
                "avg": Fraction(sum(costs)) / len(xs),
                "duration": duration,
            }
        )
    grand = sum(x["total"] for x in paths)
    rows = [
        (
            1 + sum(o["total"] > x["total"] for o in paths),
            1 + sum(o["avg"] > x["avg"] for o in paths),
            x["workflow"],
            x["path"],
            x["executions"],
            x["llm_calls"],
            x["total"],
            rnd(x["avg"], 6),
            None if x["duration"] is None else rnd(x["duration"], 0),
            rnd(100 * Fraction(x["total"]) / Fraction(grand), 2) if grand else None,
        )
        for x in paths
    ]
    ordered = order(rows, (lambda r: r[6], True), (lambda r: r[2], False), (lambda r: r[3], False))
    return ordered[: p["limit"]]


def ref_compression_audit(ds: Dataset, p: Values) -> list[Row]:
    moments = []
    for r in in_window(ds.agent, p):
        ui = jpath(r["particular_data"], "context_management", "user_input")
        if r["event_type"] != "context_compression":
            continue
        if as_text(jpath(ui, "significant_moment_detected")) != "true":
            continue
        raw = jpath(ui, "compression_score")
        score = as_numeric(raw) if is_number(raw) else None
        priority = as_text(jpath(ui, "compression_priority"))
        over = (score is not None and score > p["max_score"]) or (
            priority is not None and priority != "preserve_full"
        )
        moments.append({**r, "score": score, "priority": priority, "over": over})
    rows = []
    for (day, agent), ms in group(
        moments, lambda m: (local_date(m["created_at"], p["tz"]), m["agent_type"])
    ).items():
        over = [m for m in ms if m["over"]]
        if not over:
            continue
        scores = [m["score"] for m in over if m["score"] is not None]
        priorities = sorted(
            {m["priority"] for m in over if m["priority"] not in (None, "preserve_full")}
        )
        # ORDER BY score DESC NULLS LAST, created_at, event_id
        examples = sorted(
            over,
            key=lambda m: (m["score"] is None, -(m["score"] or 0), m["created_at"], m["event_id"]),
        )
        rows.append(
            (
                day,
                agent,
                len(ms),
                len(over),
                rnd(Fraction(100 * len(over), len(ms)), 1),
                rnd(sum(scores, Decimal(0)) / len(scores), 3) if scores else None,
                max(scores) if scores else None,
                ", ".join(priorities) if priorities else None,
                " ".join(str(m["execution_id"]) for m in examples[: p["examples"]]),
            )
        )
    return order(rows, (lambda r: r[0], False), (lambda r: r[3], True), (lambda r: nl(r[1]), False))


def ref_cost_anomalies(ds: Dataset, p: Values) -> list[Row]:
    calls = [
        {
            **r,
            "workflow": as_text(jpath(r["particular_data"], "workflow")) or "(none)",
            "cost": r["total_cost"] or Decimal(0),
        }
        for r in in_window(ds.llm, p)
    ]
    subjects = []
    for (workflow, execution), cs in group(
        calls, lambda c: (c["workflow"], c["execution_id"])
    ).items():
        users = [c["user_id"] for c in cs if c["user_id"] is not None]
        subjects.append(
            (
                "execution",
                workflow,
                str(execution),
                min(users) if users else None,
                1,
                sum(c["cost"] for c in cs),
            )
        )
    for (workflow, user), cs in group(
        [c for c in calls if c["user_id"] is not None], lambda c: (c["workflow"], c["user_id"])
    ).items():
        subjects.append(
            (
                "user",
                workflow,
                user,
                user,
                len({c["execution_id"] for c in cs}),
                sum(c["cost"] for c in cs),
            )
        )
    k = float(p["k"])
    ranked: dict[str, list[Row]] = defaultdict(list)
    populations: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for subject in subjects:
        populations[subject[0], subject[1]].append(subject)
    for (level, _workflow), members in populations.items():
        if len(members) < p["min_count"]:
            continue
        median = percentile_cont([float(s[5]) for s in members], 0.5)
        assert median is not None
        mad = percentile_cont([abs(float(s[5]) - median) for s in members], 0.5)
        assert mad is not None
        threshold = median + k * max(mad, 0.05 * median)
        for s in members:
            if float(s[5]) > threshold:
                ranked[level].append((*s, len(members), median, mad, threshold))
    rows = []
    for level in sorted(ranked):
        # cost / nullif(threshold, 0) DESC NULLS FIRST, cost DESC, subject
        flagged = order(
            ranked[level],
            (lambda r: float(r[5]) / r[9] if r[9] else math.inf, True),
            (lambda r: r[5], True),
            (lambda r: r[2], False),
        )
        for r in flagged[: p["limit"]]:
            rows.append(
                (
                    *r[:5],
                    rnd(r[5], 6),
                    r[6],
                    rnd(f2n(r[7]), 6),
                    rnd(f2n(r[8]), 6),
                    rnd(f2n(r[9]), 6),
                    rnd(f2n(float(r[5]) / r[7]), 1) if r[7] else None,
                )
            )
    return rows


def ref_prompt_regressions(ds: Dataset, p: Values) -> list[Row]:
    calls = [
        r
        for r in in_window(ds.llm, p)
        if r["event_type"] == VALID and r["processing_time_ms"] is not None
    ]
    versions = []
    for (agent, model, version), g in group(
        calls, lambda r: (r["agent_type"], r["model_target"], r["prompt_version"] or "(none)")
    ).items():
        times = [float(r["processing_time_ms"]) for r in g]
        versions.append(
            {
                "agent": agent,
                "model": model,
                "version": version,
                "calls": len(g),
                "first": min(r["created_at"] for r in g),
                "last": max(r["created_at"] for r in g),
                "p50": percentile_cont(times, 0.5),
                "p95": percentile_cont(times, 0.95),
            }
        )
    rows = []
    limit = float(p["max_increase_pct"])
    for _, vs in group(versions, lambda v: (v["agent"], v["model"])).items():
        vs.sort(key=lambda v: (v["first"], v["version"]))
        previous: Rec | None = None
        for v in vs:
            prev = previous or {}
            p50_change = p95_change = None
            if prev.get("p50"):
                p50_change = 100 * (v["p50"] - prev["p50"]) / prev["p50"]
            if prev.get("p95"):
                p95_change = 100 * (v["p95"] - prev["p95"]) / prev["p95"]
            flagged = bool(
                previous
                and v["calls"] >= p["min_calls"]
                and prev["calls"] >= p["min_calls"]
                and p50_change is not None
                and p50_change > limit
            )
            previous = v
            if p["only_flagged"] and not flagged:
                continue
            rows.append(
                (
                    v["agent"],
                    v["model"],
                    v["version"],
                    prev.get("version"),
                    v["calls"],
                    v["first"],
                    v["last"],
                    rnd(f2n(v["p50"]), 1),
                    None if "p50" not in prev else rnd(f2n(prev["p50"]), 1),
                    None if p50_change is None else rnd(f2n(p50_change), 1),
                    rnd(f2n(v["p95"]), 1),
                    None if "p95" not in prev else rnd(f2n(prev["p95"]), 1),
                    None if p95_change is None else rnd(f2n(p95_change), 1),
                    flagged,
                )
            )
    return order(
        rows,
        (lambda r: nl(r[0]), False),
        (lambda r: nl(r[1]), False),
        (lambda r: r[5], False),
        (lambda r: r[2], False),
    )


def _sqrt(value: Fraction) -> Fraction:
    with localcontext() as ctx:
        ctx.prec = 50
        return Fraction((Decimal(value.numerator) / Decimal(value.denominator)).sqrt())


def ref_decision_drift(ds: Dataset, p: Values) -> list[Row]:
    keys = p["field"].split(",")
    events = []
    for r in in_window(ds.agent, p):
        if r["agent_type"] != p["agent_type"] or r["event_type"] != p["event_type"]:
            continue
        day = local_date(r["created_at"], p["tz"])
        value = jpath(r["particular_data"], *keys)
        events.append(
            {
                "week": day - dt.timedelta(days=day.weekday()),
                "v": None if value is _MISSING or value is None else value,
            }
        )
    present = [e["v"] for e in events if e["v"] is not None]
    numeric = bool(present) and all(is_number(v) for v in present)
    week_events = {w: len(es) for w, es in group(events, lambda e: e["week"]).items()}
    week_no = {w: n for n, w in enumerate(sorted(week_events), start=1)}
    bw = p["baseline_weeks"]
    rows: list[Row] = []
    if not numeric:
        counts: dict[tuple[Any, str], int] = defaultdict(int)
        for e in events:
            counts[e["week"], "(missing)" if e["v"] is None else str(as_text(e["v"]))] += 1
        values = {v for _, v in counts}
        base_weeks = [w for w in week_events if week_no[w] <= bw]
        base_total = sum(week_events[w] for w in base_weeks)
        for w in week_events:
            for v in values:
                n = counts.get((w, v), 0)
                share = Fraction(100 * n, week_events[w])
                base = Fraction(100 * sum(counts.get((b, v), 0) for b in base_weeks), base_total)
                flagged = (
                    week_no[w] > bw
                    and week_events[w] >= p["min_events"]
                    and abs(share - base) > p["max_change_pp"]
                )
                rows.append(
                    (
                        w,
                        week_no[w] <= bw,
                        "category",
                        v,
                        n,
                        week_events[w],
                        rnd(share, 2),
                        rnd(base, 2),
                        rnd(share - base, 2),
                        None,
                        None,
                        None,
                        flagged,
                    )
                )
    else:
        xs = [(e["week"], Fraction(as_numeric(e["v"]))) for e in events if is_number(e["v"])]
        base_xs = [x for w, x in xs if week_no[w] <= bw]
        base_mean = sum(base_xs, Fraction(0)) / len(base_xs)
        sd = None
        if len(base_xs) > 1:
            squares = sum(((x - base_mean) * (x - base_mean) for x in base_xs), Fraction(0))
            sd = _sqrt(squares / (len(base_xs) - 1))
        for w, ws in group([{"w": w, "x": x} for w, x in xs], lambda e: e["w"]).items():
            m = sum((e["x"] for e in ws), Fraction(0)) / len(ws)
            z = (m - base_mean) / sd if sd else None
            beyond = abs(z) > p["max_z"] if z is not None else m != base_mean
            flagged = week_no[w] > bw and len(ws) >= p["min_events"] and beyond
            rows.append(
                (
                    w,
                    week_no[w] <= bw,
                    "numeric",
                    "mean",
                    len(ws),
                    week_events[w],
                    None,
                    None,
                    None,
                    rnd(m, 3),
                    rnd(base_mean, 3),
                    None if z is None else rnd(z, 2),
                    flagged,
                )
            )
    if p["only_flagged"]:
        rows = [r for r in rows if r[12]]
    return order(rows, (lambda r: r[0], False), (lambda r: r[3], False))


def ref_execution_tree(ds: Dataset, p: Values) -> list[Row]:
    execution = p["execution_id"]
    steps = [
        (i, s)
        for x in ds.executions
        if x["execution_id"] == execution
        for i, s in enumerate(x["processes_executed"], start=1)
    ]
    calls = group([c for c in ds.llm if c["execution_id"] == execution], lambda c: c["span_id"])
    events = group([a for a in ds.agent if a["execution_id"] == execution], lambda a: a["span_id"])
    own = {span: (len(cs), sum_or_zero(c["total_cost"] for c in cs)) for span, cs in calls.items()}
    children: dict[str, list[str | None]] = defaultdict(list)
    for _, s in steps:
        if s.get("parent_span_id") is not None:
            children[s["parent_span_id"]].append(s.get("span_id"))

    def subtree(span: str) -> list[str | None]:
        found: list[str | None] = [span]
        for child in children.get(span, []):
            found += [child] if child is None else subtree(child)
        return found

    rows: list[Row] = []
    for index, s in steps:
        span = s.get("span_id")
        level = s.get("nesting_level") or 0
        name = s.get("name")
        below = [own.get(d) for d in subtree(span) if d is not None] if span else []
        mine = own.get(span) if span is not None else None
        started = s.get("started_at")
        rows.append(
            (
                index,
                level,
                None if name is None else "  " * level + name.strip(" "),
                span,
                s.get("parent_span_id"),
                None if started is None else dt.datetime.fromisoformat(started),
                s.get("duration_ms"),
                s.get("status"),
                mine[0] if mine else 0,
                mine[1] if mine else 0,
                sum(b[0] for b in below if b),
                sum_or_zero(b[1] for b in below if b),
                len(events.get(span, [])) if span is not None else 0,
                s.get("error"),
            )
        )
    known = {s.get("span_id") for _, s in steps} - {None}
    outside = [v for span, v in own.items() if span is None or span not in known]
    if outside:
        n, cost = sum(o[0] for o in outside), sum(o[1] for o in outside)
        rows.append(
            (
                None,
                None,
                "(outside any process)",
                None,
                None,
                None,
                None,
                None,
                n,
                cost,
                n,
                cost,
                None,
                None,
            )
        )
    return rows


def _scored_call(ds: Dataset, execution_id: uuid.UUID, span: str | None) -> Rec | None:
    """The execution's call in the scored process, else its latest (by time, then id)."""
    calls = [c for c in ds.llm if c["execution_id"] == execution_id]
    if not calls:
        return None
    return max(calls, key=lambda c: (c["span_id"] == span, c["created_at"], c["event_id"]))


def _numeric_scores(ds: Dataset, p: Values) -> list[Rec]:
    return [
        r
        for r in in_window(ds.agent, p)
        if r["event_type"] == "score"
        and as_text(jpath(r["particular_data"], "name")) is not None
        and is_number(r["particular_data"].get("score"))
    ]


def ref_score_trends(ds: Dataset, p: Values) -> list[Row]:
    groups: dict[tuple[Any, ...], list[Decimal]] = defaultdict(list)
    for r in _numeric_scores(ds, p):
        name = r["particular_data"]["name"]
        if p["score"] and name != p["score"]:
            continue
        day = local_date(r["created_at"], p["tz"])
        week = day - dt.timedelta(days=day.weekday())
        call = _scored_call(ds, r["execution_id"], r["span_id"]) or {}
        agent = r["agent_type"] if r["agent_type"] is not None else call.get("agent_type")
        key = (week, name, agent, call.get("model_target"), call.get("prompt_version"))
        groups[key].append(as_numeric(r["particular_data"]["score"]))
    rows = []
    for key, values in groups.items():
        if len(values) < p["min_count"]:
            continue
        under = sum(1 for v in values if v < p["threshold"])
        rows.append(
            (
                *key,
                len(values),
                rnd(mean(values) or 0, 4),
                min(values),
                max(values),
                under,
                rnd(Fraction(100 * under, len(values)), 2),
            )
        )
    return order(
        rows,
        (lambda r: r[1], False),
        (lambda r: r[0], False),
        (lambda r: nl(r[2]), False),
        (lambda r: nl(r[3]), False),
        (lambda r: nl(r[4]), False),
    )


def _execution_row(ds: Dataset, execution_id: uuid.UUID) -> Rec | None:
    """The execution's row: the latest finalised first, a join's own row never."""
    found = [
        e
        for e in ds.executions
        if e["execution_id"] == execution_id and e["event_type"] != "execution_joined"
    ]
    if not found:
        return None
    return max(
        found,
        key=lambda e: (
            e["finalized_at"] is not None,
            e["finalized_at"] or T0,
            e["created_at"],
            e["event_id"],
        ),
    )


def _top_label(labels: list[str | None]) -> str | None:
    """mode() WITHIN GROUP (ORDER BY label): NULLs skipped, a tie goes to the first label."""
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        if label is not None:
            counts[label] += 1
    if not counts:
        return None
    return min(counts, key=lambda label: (-counts[label], label))


def ref_feedback_by_feature(ds: Dataset, p: Values) -> list[Row]:
    feedback: list[tuple[Rec, str, str, Decimal | None, str | None]] = []
    for r in in_window(ds.agent, p):
        name = as_text(jpath(r["particular_data"], "name"))
        if r["event_type"] != "score" or name is None:
            continue
        raw = r["particular_data"].get("score")
        value = as_numeric(raw) if is_number(raw) else None
        label = as_text(jpath(r["particular_data"], "label"))
        feedback.append((r, "score", name, value, label))
    events = p["events"].split(",")
    for r in in_window(ds.journey, p):
        if r["event_type"] in events:
            feedback.append((r, "journey", r["event_type"], None, None))
    groups: dict[tuple[Any, ...], list[tuple[Rec, Decimal | None, str | None]]] = defaultdict(list)
    for r, kind, name, value, label in feedback:
        ex = _execution_row(ds, r["execution_id"])
        context = ex["context"] if ex is not None else {}
        call = _scored_call(ds, r["execution_id"], r["span_id"]) or {}
        version = call.get("prompt_version")
        if version is None:
            version = as_text(jpath(context, "prompt_version"))
        feature = as_text(jpath(context, "feature"))
        groups[(feature, version, kind, name)].append((r, value, label))
    rows = []
    for key, items in groups.items():
        if len(items) < p["min_count"]:
            continue
        values = [v for _, v, _ in items if v is not None]
        average = mean(values)
        rows.append(
            (
                *key,
                len(items),
                len({r["execution_id"] for r, _, _ in items}),
                None if average is None else rnd(average, 4),
                sum(1 for v in values if v < p["threshold"]),
                _top_label([label for _, _, label in items]),
            )
        )
    return order(
        rows,
        (lambda r: nl(r[0]), False),
        (lambda r: nl(r[1]), False),
        (lambda r: r[2], False),
        (lambda r: r[3], False),
    )


def ref_quality_per_dollar(ds: Dataset, p: Values) -> list[Row]:
    calls = group(in_window(ds.llm, p), lambda r: r["execution_id"])
    scores = group(
        (r for r in _numeric_scores(ds, p) if r["particular_data"]["name"] == p["score"]),
        lambda r: r["execution_id"],
    )
    versions: dict[tuple[Any, Any], list[tuple[Any, list[Decimal]]]] = defaultdict(list)
    for execution_id, own in calls.items():
        latest = max(own, key=lambda c: (c["created_at"], c["event_id"]))
        values = [as_numeric(s["particular_data"]["score"]) for s in scores.get(execution_id, [])]
        cost = sum_or_zero(c["total_cost"] for c in own)
        versions[(latest["agent_type"], latest["prompt_version"])].append((cost, values))
    rows = []
    for (agent, version), items in versions.items():
        if len(items) < p["min_executions"]:
            continue
        total = sum((Fraction(cost) for cost, _ in items), Fraction(0))
        per_execution = total / len(items)
        values = [v for _, vs in items for v in vs]
        average = mean(values)
        rows.append(
            (
                agent,
                version,
                len(items),
                sum(Decimal(cost) for cost, _ in items),
                rnd(per_execution, 6),
                sum(1 for _, vs in items if vs),
                len(values),
                None if average is None else rnd(average, 4),
                None if average is None or per_execution == 0 else rnd(average / per_execution, 2),
            )
        )
    return order(rows, (lambda r: nl(r[0]), False), (lambda r: nl(r[1]), False))


REFERENCES: dict[str, Callable[[Dataset, Values], list[Row]]] = {
    "compression-audit": ref_compression_audit,
    "cost-anomalies": ref_cost_anomalies,
    "cost-by-agent": ref_cost_by_agent,
    "cost-by-model": ref_cost_by_model,
    "cost-by-tenant-day": ref_cost_by_tenant_day,
    "decision-drift": ref_decision_drift,
    "execution-tree": ref_execution_tree,
    "expensive-paths": ref_expensive_paths,
    "feedback-by-feature": ref_feedback_by_feature,
    "large-generations": ref_large_generations,
    "latency-percentiles": ref_latency_percentiles,
    "outcome-rates": ref_outcome_rates,
    "prompt-regressions": ref_prompt_regressions,
    "quality-per-dollar": ref_quality_per_dollar,
    "score-trends": ref_score_trends,
    "session-summary": ref_session_summary,
    "slow-agent-executions": ref_slow_agent_executions,
    "user-journey": ref_user_journey,
}

# Each report runs with its defaults (the windows end at NOW) and with every parameter set.
REQUIRED: dict[str, dict[str, str]] = {
    "decision-drift": {"agent_type": "coaching"},
    "execution-tree": {"execution_id": str(TREE_ID)},
    "user-journey": {"user_id": "user-04"},
}
WINDOW = {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
CUSTOM: dict[str, list[dict[str, str]]] = {
    "compression-audit": [
        {**WINDOW, "max_score": "0.35", "examples": "2", "tz": "Asia/Kolkata"},
        {**WINDOW, "max_score": "0.9", "examples": "0", "tz": "America/New_York"},
    ],
    "cost-anomalies": [
        {**WINDOW, "k": "1.5", "min_count": "5", "limit": "7"},
        {**WINDOW, "k": "0", "min_count": "1", "limit": "1000"},
    ],
    "cost-by-agent": [WINDOW],
    "cost-by-model": [WINDOW],
    "cost-by-tenant-day": [{**WINDOW, "tz": "America/Los_Angeles"}],
    "decision-drift": [
        {
            **WINDOW,
            "agent_type": "coaching",
            "baseline_weeks": "1",
            "max_change_pp": "5",
            "min_events": "3",
            "tz": "Asia/Kolkata",
        },
        {
            **WINDOW,
            "agent_type": "critic",
            "field": "agent_decisions,coaching_quality,message_length",
            "baseline_weeks": "2",
            "max_z": "0.1",
            "min_events": "2",
            "only_flagged": "false",
        },
        {
            **WINDOW,
            "agent_type": "planner",
            "event_type": "context_compression",
            "field": "context_management,user_input,compression_priority",
            "only_flagged": "true",
            "max_change_pp": "1",
            "min_events": "1",
        },
    ],
    "execution-tree": [{"execution_id": str(TREE_ID)}],
    "expensive-paths": [
        {**WINDOW, "min_executions": "2", "limit": "5"},
        {**WINDOW, "min_executions": "1", "limit": "100"},
    ],
    "feedback-by-feature": [
        {**WINDOW, "events": "thumbs_down,state_transition", "threshold": "0.3", "min_count": "2"},
        {**WINDOW, "events": "", "threshold": "0.9", "min_count": "1"},
    ],
    "large-generations": [{**WINDOW, "min_tokens": "12000", "limit": "25"}],
    "latency-percentiles": [
        {**WINDOW, "include_failed": "true", "min_calls": "3"},
        {**WINDOW, "include_failed": "false", "min_calls": "40"},
    ],
    "outcome-rates": [{**WINDOW, "min_calls": "10"}],
    "prompt-regressions": [
        {**WINDOW, "max_increase_pct": "10", "min_calls": "5", "only_flagged": "false"},
        {**WINDOW, "max_increase_pct": "25", "min_calls": "10", "only_flagged": "true"},
    ],
    "quality-per-dollar": [
        {**WINDOW, "score": "tone", "min_executions": "3"},
        {**WINDOW, "score": "thumbs", "min_executions": "1"},
    ],
    "score-trends": [
        {**WINDOW, "score": "helpfulness", "threshold": "0.25", "tz": "Asia/Kolkata"},
        {**WINDOW, "score": "", "threshold": "0.75", "min_count": "2"},
    ],
    "session-summary": [
        {**WINDOW, "only_abandoned": "true", "limit": "1000"},
        {**WINDOW, "only_abandoned": "false", "limit": "30"},
    ],
    "slow-agent-executions": [{**WINDOW, "min_duration_ms": "25000", "limit": "40"}],
    "user-journey": [{**WINDOW, "user_id": ODD_USER}, {**WINDOW, "user_id": "nobody"}],
}
CASES = [(name, REQUIRED.get(name, {}), "defaults") for name in sorted(REFERENCES)] + [
    (name, params, f"custom{i}")
    for name, sets in sorted(CUSTOM.items())
    for i, params in enumerate(sets)
]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """The generated records (the same for every test of this module)."""
    return build_dataset()


@contextmanager
def scratch_database(server: Any) -> Iterator[Settings]:
    """A migrated database of its own on the test server, dropped afterwards."""
    name = f"pgtrail_ref_{uuid.uuid4().hex[:10]}"
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=name,
        template_dbname=server.template_dbname,
        password=server.password,
    )
    janitor.init()
    try:
        yield Settings(
            dsn=make_conninfo(
                host=server.host,
                port=server.port,
                user=server.user,
                dbname=name,
                password=server.password or None,
            ),
            redis_url=None,
        )
    finally:
        janitor.drop()


@pytest.fixture(scope="module")
def loaded(postgresql_server: Any, dataset: Dataset) -> Iterator[Settings]:
    """A database holding the dataset, shared by this module's read-only report runs."""
    with scratch_database(postgresql_server) as settings:
        insert(settings, dataset)
        yield settings


def run(settings: Settings, name: str, params: Mapping[str, str]) -> list[Row]:
    """Runs a shipped report the way the CLI does, its time windows anchored at NOW."""
    report = reports.load_catalog().get(name)
    return reports.run_report(settings, report, dict(params), now=NOW).rows


def expected(dataset: Dataset, name: str, params: Mapping[str, str]) -> list[Row]:
    """The reference answer; parameter text is converted by the library's own parser."""
    report = reports.load_catalog().get(name)
    return REFERENCES[name](dataset, reports.bind_values(report, dict(params), now=NOW))


# --------------------------------------------------------------------------- the reference


def test_every_shipped_report_has_a_python_reference() -> None:
    shipped = {path.stem for path in queries_dir().glob("*.sql")}
    assert shipped == set(REFERENCES), (
        "a report without a reference in this file (or a reference without a report): "
        f"{sorted(shipped ^ set(REFERENCES))}"
    )
    assert set(CUSTOM) == shipped


def test_the_dataset_exercises_the_edges(dataset: Dataset) -> None:
    for rows in dataset.tables().values():
        assert any(r["created_at"] == SINCE for r in rows)
        assert any(r["created_at"] == UNTIL for r in rows)
    assert any(r["total_cost"] is None for r in dataset.llm)
    assert any(r["agent_type"] is None for r in dataset.llm)
    assert any(r["span_id"] == "ghost" for r in dataset.llm)
    assert any(r["user_id"] == ODD_USER for r in dataset.journey)


def test_every_report_case_returns_rows_somewhere(dataset: Dataset) -> None:
    """Guards the comparison below against passing on empty answers only."""
    empty = {(name, label) for name, params, label in CASES if not expected(dataset, name, params)}
    assert empty == {("user-journey", "custom1")}


@pytest.mark.parametrize(("name", "params", "label"), CASES, ids=[f"{n}-{c}" for n, _, c in CASES])
def test_report_equals_its_python_reference(
    loaded: Settings, dataset: Dataset, name: str, params: dict[str, str], label: str
) -> None:
    got = run(loaded, name, params)
    want = expected(dataset, name, params)
    assert len(got) == len(want)
    for number, (row, reference) in enumerate(zip(got, want, strict=True)):
        assert row == reference, f"{name} ({label}) row {number}"


# --------------------------------------------------------------------------- planted problems
#
# test_demo.py proves the four detective reports on the demo workload: categorical drift of
# coaching intensity, compression with an aggressive priority, one expensive user in a
# workflow of varied cost, a prompt version about 60% slower. These plant the other shapes
# of the same problems by hand, each next to a healthy twin that must flag nothing.

PLANT_START = T0  # the first week of the planted data


def _event(table: str, at: dt.datetime, **values: Any) -> Rec:
    """One log row with neutral defaults for the columns a test does not care about."""
    row: Rec = {
        "event_id": uuid.uuid4(),
        "execution_id": values.pop("execution_id", None) or uuid.uuid4(),
        "created_at": at,
        "tenant_id": "acme",
        "user_id": None,
        "session_id": None,
        "span_id": None,
        "particular_data": {},
    }
    if table == "llm":
        row |= {c: None for c in LOG_COLUMNS["logs_llm_execution"].split() if c not in row}
        row["event_type"] = VALID
    else:
        row |= {"event_type": "agent_decision", "agent_type": None}
    row.update(values)
    return row


def _run_flagged(settings: Settings, name: str, **params: str) -> list[dict[str, Any]]:
    report = reports.load_catalog().get(name)
    window = {"since": PLANT_START.isoformat(), "until": (T0 + dt.timedelta(weeks=6)).isoformat()}
    if report.param("only_flagged"):
        window["only_flagged"] = "true"
    result = reports.run_report(settings, report, {**window, **params})
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _discounts(weeks: dict[int, list[float]]) -> Dataset:
    """Decision events of the pricing agent: a numeric discount per week."""
    ds = Dataset()
    for week, values in weeks.items():
        for i, value in enumerate(values):
            at = PLANT_START + dt.timedelta(weeks=week - 1, hours=3 + i)
            data = {"agent_decisions": {"discount": {"percent": value}}}
            ds.agent.append(_event("agent", at, agent_type="pricing", particular_data=data))
    return ds


STEADY = [8.0, 9.0, 10.0, 11.0, 12.0] * 5  # mean 10, sd about 1.4, 25 events a week
DISCOUNT = {"agent_type": "pricing", "field": "agent_decisions,discount,percent"}


def test_decision_drift_flags_a_numeric_decision_creeping_up(settings: Settings) -> None:
    crept = [v + 4 for v in STEADY]  # mean 14: 2.8 baseline SDs up
    few_wild = [40.0] * 5  # far off, but too few events to judge
    insert(settings, _discounts({1: STEADY, 2: STEADY, 3: STEADY, 4: crept, 5: few_wild}))
    rows = _run_flagged(settings, "decision-drift", **DISCOUNT)
    assert [(r["week"], r["kind"], r["events"], r["mean"], r["z_score"]) for r in rows] == [
        (
            (PLANT_START + dt.timedelta(weeks=3)).date(),
            "numeric",
            25,
            Decimal("14.000"),
            Decimal("2.80"),
        )
    ]


def test_decision_drift_flags_nothing_when_the_decision_is_steady(settings: Settings) -> None:
    wobble = [v + 0.5 for v in STEADY]  # 0.35 SD: within max_z = 1
    insert(settings, _discounts({1: STEADY, 2: STEADY, 3: wobble, 4: STEADY}))
    assert _run_flagged(settings, "decision-drift", **DISCOUNT) == []
    everything = _run_flagged(settings, "decision-drift", **DISCOUNT, only_flagged="false")
    assert [r["week_events"] for r in everything] == [25, 25, 25, 25]


def _moments(agent: str, scores: list[tuple[Any, str, Any]], day: int) -> list[Rec]:
    """Compression events: (significant_moment_detected, priority, score) each."""
    at = PLANT_START + dt.timedelta(days=day, hours=9)
    return [
        _event(
            "agent",
            at + dt.timedelta(minutes=i),
            agent_type=agent,
            event_type="context_compression",
            particular_data={
                "context_management": {
                    "user_input": {
                        "significant_moment_detected": significant,
                        "compression_priority": priority,
                        "compression_score": score,
                    }
                }
            },
        )
        for i, (significant, priority, score) in enumerate(scores)
    ]


def _healthy_compression() -> Dataset:
    ds = Dataset()
    preserved = [(True, "preserve_full", 0.1), (True, "preserve_full", 0.5)] * 10
    routine = [(False, "aggressive", 0.95), (False, "compress", 0.8)] * 10
    for day in range(10):
        ds.agent += _moments("memory", preserved + routine, day)
    return ds


def test_compression_audit_flags_significant_moments_scored_too_high(settings: Settings) -> None:
    ds = _healthy_compression()
    # The priority still says preserve_full, but the score shows they were squeezed.
    ds.agent += _moments("summariser", [(True, "preserve_full", 0.8)] * 3, day=6)
    ds.agent += _moments("summariser", [(True, "preserve_full", 0.2)] * 5, day=6)
    insert(settings, ds)
    rows = _run_flagged(settings, "compression-audit")
    assert [
        (
            r["day"],
            r["agent_type"],
            r["significant_moments"],
            r["over_compressed"],
            r["max_score"],
            r["priorities"],
        )
        for r in rows
    ] == [((PLANT_START + dt.timedelta(days=6)).date(), "summariser", 8, 3, Decimal("0.8"), None)]


def test_compression_audit_is_silent_when_significant_moments_are_kept(
    settings: Settings,
) -> None:
    insert(settings, _healthy_compression())
    assert _run_flagged(settings, "compression-audit") == []


def _support_calls(costs: list[Decimal], users: list[str]) -> Dataset:
    """One call per execution in the support workflow, a user each."""
    ds = Dataset()
    for i, (cost, user) in enumerate(zip(costs, users, strict=True)):
        ds.llm.append(
            _event(
                "llm",
                PLANT_START + dt.timedelta(days=2, minutes=7 * i),
                user_id=user,
                total_cost=cost,
                particular_data={"workflow": "010 Support"},
            )
        )
    return ds


NEAR_CONSTANT = [Decimal("0.0100") + Decimal("0.0001") * (i % 5) for i in range(30)]
CUSTOMERS = [f"customer-{i}" for i in range(30)]


def test_cost_anomalies_flags_one_runaway_execution_and_its_user(settings: Settings) -> None:
    ds = _support_calls([*NEAR_CONSTANT, Decimal("0.30")], [*CUSTOMERS, "whale"])
    insert(settings, ds)
    rows = _run_flagged(settings, "cost-anomalies")
    whale = next(r for r in ds.llm if r["user_id"] == "whale")
    assert [(r["level"], r["subject"], r["user_id"], r["cost"]) for r in rows] == [
        ("execution", str(whale["execution_id"]), "whale", Decimal("0.300000")),
        ("user", "whale", "whale", Decimal("0.300000")),
    ]
    assert all(r["times_median"] == Decimal("29.4") for r in rows)


def test_cost_anomalies_is_silent_on_a_near_constant_workflow(settings: Settings) -> None:
    # The MAD is 0.0001; without its floor at 5% of the median every cent above would flag.
    insert(settings, _support_calls(NEAR_CONSTANT, CUSTOMERS))
    assert _run_flagged(settings, "cost-anomalies") == []


def test_cost_anomalies_survives_a_workflow_whose_median_cost_is_zero(
    settings: Settings,
) -> None:
    # Most executions failed unbilled: median and MAD are 0, so any billed one stands out.
    costs: list[Decimal | None] = [None] * 25 + [Decimal("0.02")] * 5
    insert(settings, _support_calls(costs, CUSTOMERS))  # type: ignore[arg-type]
    rows = _run_flagged(settings, "cost-anomalies")
    assert {(r["level"], r["cost"], r["threshold"], r["times_median"]) for r in rows} == {
        ("execution", Decimal("0.020000"), Decimal("0.000000"), None),
        ("user", Decimal("0.020000"), Decimal("0.000000"), None),
    }
    assert len(rows) == 10


def _latencies(versions: dict[str, list[int]], failures: int = 0) -> Dataset:
    """Valid triage calls on gpt-5 per prompt version, in version order, plus timeouts."""
    ds = Dataset()
    at = PLANT_START
    for version, times in versions.items():
        for latency in times:
            at += dt.timedelta(minutes=13)
            ds.llm.append(
                _event(
                    "llm",
                    at,
                    agent_type="triage",
                    model_target="gpt-5",
                    prompt_version=version,
                    processing_time_ms=latency,
                )
            )
        for _ in range(failures):
            at += dt.timedelta(minutes=13)
            ds.llm.append(
                _event(
                    "llm",
                    at,
                    agent_type="triage",
                    model_target="gpt-5",
                    prompt_version=version,
                    processing_time_ms=60000,
                    event_type="llm_timeout",
                )
            )
    return ds


BEFORE = [1000 + 10 * i for i in range(30)]  # p50 1145


def test_prompt_regressions_flags_a_version_half_again_slower(settings: Settings) -> None:
    slower = [t * 3 // 2 for t in BEFORE]
    insert(settings, _latencies({"v1": BEFORE, "v2": slower, "v3": [9000] * 5}))
    rows = _run_flagged(settings, "prompt-regressions")
    assert [
        (
            r["prompt_version"],
            r["previous_version"],
            r["p50_ms"],
            r["previous_p50_ms"],
            r["p50_change_pct"],
        )
        for r in rows
    ] == [("v2", "v1", Decimal("1717.5"), Decimal("1145.0"), Decimal("50.0"))]


def test_prompt_regressions_is_silent_on_a_small_change_and_unbilled_timeouts(
    settings: Settings,
) -> None:
    # 10% slower is within the 20% threshold; timeouts are failures, not latency.
    insert(settings, _latencies({"v1": BEFORE, "v2": [t * 11 // 10 for t in BEFORE]}, 5))
    assert _run_flagged(settings, "prompt-regressions") == []
