"""Hostile input through every public entry point: nothing raises, nothing else is lost.

Each value of the corpus goes through every slot of every entry point at once (``log_*``
arguments, ``execution()`` identity and context, ``process()`` names, ``join()`` targets,
``inject()`` headers, ``flush()`` timeouts) with Redis on, off and down (a closed port).
Decided by effect: the calls return, the application's code after them runs, the clean
records around them are stored in PostgreSQL, what was cleaned is marked in
``_pgtrail_notes``, and with Redis on the client still publishes executions that another
``Trail`` joins. In strict mode each value that would be cleaned raises instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import math
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import pgtrail
from dbrows import one, rows
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.errors import PgtrailError, ValidationError

try:  # a real array when numpy is there; the fake below behaves the same way
    import numpy  # type: ignore[import-not-found, unused-ignore]

    REAL_ARRAY: Any = numpy.array([1.0, float("nan"), 3.0])
except ImportError:
    REAL_ARRAY = None

MAX_CHARS = 10_000


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- hostile objects ---------------------------------------------------------------------


class Boom(Exception):
    """What the hostile objects raise."""


class FakeArray:
    """Behaves like a numpy array where it hurts: truth, equality, length, hashing."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    def __eq__(self, other: object) -> Any:
        return FakeArray(*[v == other for v in self.values])

    def __len__(self) -> int:
        raise TypeError("len() of unsized object")

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def __repr__(self) -> str:
        return f"array({self.values})"


class RaisingStr:
    def __str__(self) -> str:
        raise Boom("str")


class RaisingRepr:
    def __repr__(self) -> str:
        raise Boom("repr")


class RaisingEverything:
    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        raise Boom("str")

    def __repr__(self) -> str:
        raise Boom("repr")

    def __bool__(self) -> bool:
        raise Boom("bool")

    def __eq__(self, other: object) -> bool:
        raise Boom("eq")

    def __len__(self) -> int:
        raise Boom("len")

    def __iter__(self) -> Iterator[Any]:
        raise Boom("iter")


class RaisingBool:
    def __bool__(self) -> bool:
        raise Boom("bool")

    def __repr__(self) -> str:
        return "<RaisingBool>"


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise Boom("eq")

    def __hash__(self) -> int:
        return 7


class RaisingHash:
    def __hash__(self) -> int:
        raise Boom("hash")


class ReprNotStr:
    def __repr__(self) -> Any:
        return 42


class BadSequence(Sequence[Any]):
    def __getitem__(self, index: Any) -> Any:
        raise Boom("getitem")

    def __len__(self) -> int:
        raise Boom("len")


class BadMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise Boom("getitem")

    def __iter__(self) -> Iterator[str]:
        raise Boom("iter")

    def __len__(self) -> int:
        return 1


class BadStr(str):
    def __str__(self) -> str:
        raise Boom("str")


class Colour(enum.Enum):
    RED = "red\x00"


@dataclasses.dataclass
class Node:
    name: str
    child: Any = None


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


def cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def cyclic_mixed() -> dict[str, Any]:
    outer: dict[str, Any] = {"items": []}
    outer["items"].append({"back": outer})
    return outer


def cyclic_dataclass() -> Node:
    node = Node("a")
    node.child = node
    return node


def deep_dict(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    cursor = root
    for _ in range(levels):
        cursor["d"] = {}
        cursor = cursor["d"]
    return root


def deep_list(levels: int) -> list[Any]:
    root: list[Any] = []
    cursor = root
    for _ in range(levels):
        cursor.append([])
        cursor = cursor[0]
    return root


def released_view() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


def generator() -> Iterator[int]:
    return (i for i in range(3))


# Label -> (factory, dirty): dirty values are cleaned (so marked, and strict mode raises).
CORPUS: dict[str, tuple[Any, bool]] = {
    "none": (lambda: None, False),
    "lone-low-surrogate": (lambda: "\udc80", True),
    "lone-high-surrogate": (lambda: "bad \ud800 half", True),
    "surrogate-pair-halves": (lambda: "\udfff\ud83d", True),
    "nul": (lambda: "a\x00b", True),
    "only-nul": (lambda: "\x00", True),
    "nul-and-surrogate": (lambda: "\x00\udc80\x00", True),
    "huge-string": (lambda: "x" * (MAX_CHARS * 5), True),
    "huge-with-surrogates": (lambda: "\ud800" * (MAX_CHARS * 2), True),
    "control-chars": (lambda: "tab\tnew\nline\rbell\x07", False),
    "empty-string": (lambda: "", False),
    "nan": (lambda: float("nan"), True),
    "inf": (lambda: float("inf"), True),
    "minus-inf": (lambda: float("-inf"), True),
    "minus-zero": (lambda: -0.0, False),
    "decimal-nan": (lambda: Decimal("NaN"), True),
    "decimal-snan": (lambda: Decimal("sNaN"), True),
    "decimal-inf": (lambda: Decimal("-Infinity"), True),
    "decimal-exact": (lambda: Decimal("0.1000000000000000000001"), False),
    "huge-int": (lambda: 10**400, True),
    "enormous-int": (lambda: -(10**5000), True),
    "negative-int": (lambda: -5, False),
    "int4-overflow": (lambda: 3_000_000_000, False),
    "bool": (lambda: True, False),
    "cycle-dict": (cyclic_dict, True),
    "cycle-list": (cyclic_list, True),
    "cycle-mixed": (cyclic_mixed, True),
    "cycle-dataclass": (cyclic_dataclass, True),
    "deep-dict-10k": (lambda: deep_dict(10_000), True),
    "deep-list-10k": (lambda: deep_list(10_000), True),
    "tuple-key": (lambda: {(1, 2): "t"}, True),
    "object-key": (lambda: {RaisingRepr(): "o"}, True),
    "raising-str-key": (lambda: {RaisingStr(): "s"}, True),
    "frozenset-key": (lambda: {frozenset({1}): "f"}, True),
    "bytes-key": (lambda: {b"\xff": 1}, True),
    "none-and-nan-keys": (lambda: {None: 1, float("nan"): 2, 3: 4}, False),
    "colliding-keys": (lambda: {1: "int", "1": "str"}, True),
    "nul-key": (lambda: {"k\x00": 1}, True),
    "surrogate-key": (lambda: {"k\udc80": 1}, True),
    "raising-str": (RaisingStr, True),
    "raising-repr": (RaisingRepr, True),
    "raising-everything": (RaisingEverything, True),
    "raising-bool": (RaisingBool, True),
    "raising-eq": (RaisingEq, True),
    "raising-hash": (RaisingHash, True),
    "repr-not-str": (ReprNotStr, True),
    "bad-sequence": (BadSequence, True),
    "bad-mapping": (BadMapping, True),
    "bad-str-subclass": (lambda: BadStr("sub\x00"), True),
    "enum-with-nul": (lambda: Colour.RED, True),
    "fake-array": (lambda: FakeArray(1.0, float("nan")), True),
    "bytes-utf8": (lambda: b"plain", False),
    "bytes-invalid": (lambda: b"\xff\xfe raw", True),
    "bytearray": (lambda: bytearray(b"\x00\xff"), True),
    "memoryview": (lambda: memoryview(b"view"), False),
    "released-memoryview": (released_view, True),
    "set": (lambda: {3, 1, 2}, False),
    "mixed-set": (lambda: {1, "a", (2,)}, False),
    "frozenset": (lambda: frozenset({"x"}), False),
    "generator": (generator, True),
    "lock": (threading.Lock, True),
    "naive-datetime": (lambda: dt.datetime(2026, 1, 1, 12, 0), False),  # noqa: DTZ001
    "aware-datetime": (lambda: dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC), False),
    "date": (lambda: dt.date(2026, 1, 1), False),
    "timedelta": (lambda: dt.timedelta(seconds=1.5), False),
    "uuid": (uuid.uuid4, False),
    "exception": (lambda: Boom("as a value"), True),
    "type-object": (lambda: object, True),
    "list-of-hostiles": (lambda: [RaisingEverything(), float("nan"), "\x00"], True),
    "dict-of-hostiles": (lambda: {"a": RaisingStr(), "b": Decimal("NaN")}, True),
    "real-or-fake-array": (
        lambda: REAL_ARRAY if REAL_ARRAY is not None else FakeArray(float("nan")),
        True,
    ),
}

MODES = ("redis-on", "redis-off", "redis-down")


def trail_for(settings: Settings, mode: str, **extra: Any) -> Trail:
    url: str | None = settings.redis_url
    if mode == "redis-off":
        url = None
    elif mode == "redis-down":
        url = f"redis://127.0.0.1:{closed_port()}/0"
    return Trail(settings, sync=True, redis_url=url, max_field_chars=MAX_CHARS, **extra)


def journey_types(dsn: str) -> list[str]:
    return [r[0] for r in rows(dsn, "SELECT event_type FROM logs_user_journey")]


def notes_of(dsn: str, event_type: str) -> list[str]:
    data = one(
        dsn, "SELECT particular_data FROM logs_user_journey WHERE event_type = %s", event_type
    )
    return list(data.get("_pgtrail_notes", []))


def exercise(trail: Trail, value: Any) -> list[str]:
    """Every slot of every entry point gets ``value``; returns the markers the app reached."""
    reached: list[str] = []
    with trail.execution(
        "attack",
        tenant_id=value,
        user_id=value,
        session_id=value,
        context={"v": value, "feature": value},
    ) as ex:
        pgtrail.log_user_journey("before")
        pgtrail.log_user_journey(value)
        pgtrail.log_user_journey("data", value)
        pgtrail.log_user_journey("data-dict", {"v": value})
        pgtrail.log_agent_execution(
            agent_type=value, event_type=value, duration_ms=value, data=value
        )
        pgtrail.log_agent_execution(value)
        pgtrail.log_agent_execution(event_type="agent-dict", data={"v": value})
        pgtrail.log_llm_execution(
            model=value,
            provider=value,
            agent_type=value,
            error=value,
            prompt=value,
            prompt_version=value,
            prompt_hash=value,
            event_type=value,
        )
        pgtrail.log_llm_execution(
            model="gpt-4o",
            input_tokens=value,
            output_tokens=value,
            total_cost=value,
            input_cost=value,
            processing_time_ms=value,
        )
        pgtrail.log_llm_execution(model="gpt-4o", data={"v": value}, payload=value)
        pgtrail.log_llm_execution(model="gpt-4o", data=value, payload={"v": value})
        if callable(value):  # a callable is decorated, whatever it is
            trail.process(value)()
            with ex.process(str(id(value))):
                pgtrail.log_user_journey("in-process")
        else:
            with ex.process(value):
                pgtrail.log_user_journey("in-process")
            with trail.process(value):
                pass
            assert trail.process(value)(lambda: "decorated")() == "decorated"
        ex.fail(value)
        pgtrail.inject(value)
        headers: dict[str, str] = {}
        pgtrail.inject(headers)
        assert "traceparent" in headers
        with trail.join(value, tenant_id=value, user_id=value, session_id=value):
            pgtrail.log_user_journey("joined-hostile-target")
        with trail.join(ex.execution_id, tenant_id=value, lookup_timeout_s=value):
            pgtrail.log_user_journey("joined-self")
        ex.traceparent()
        pgtrail.log_user_journey("after")
        reached.append("inside")
    with trail.execution("ctx", context=value):
        pgtrail.log_user_journey("ctx-inside")
        reached.append("ctx")
    with trail.execution(value, execution_id=value, parent_execution_id=value):
        pgtrail.log_user_journey("wf-inside")
        reached.append("wf")
    trail.flush(value)
    reached.append("after-flush")
    return reached


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", list(CORPUS))
def test_every_entry_point_survives_the_value_and_keeps_the_rest(
    settings: Settings, mode: str, label: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory, dirty = CORPUS[label]
    trail = trail_for(settings, mode)
    try:
        assert exercise(trail, factory()) == ["inside", "ctx", "wf", "after-flush"]
        assert trail.flush(30)
    finally:
        trail.close()
    stored = journey_types(settings.dsn)
    for marker in (
        "before",
        "data",
        "data-dict",
        "in-process",
        "joined-hostile-target",
        "joined-self",
        "after",
        "ctx-inside",
        "wf-inside",
    ):
        assert marker in stored, (marker, stored)
    assert (
        one(
            settings.dsn,
            "SELECT count(*) FROM logs_execution WHERE event_type = 'execution_finalized'",
        )
        == 3
    )
    assert one(settings.dsn, "SELECT count(*) FROM logs_agent_execution") >= 1
    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution") >= 2
    if dirty and label != "none":
        assert notes_of(settings.dsn, "data-dict"), "what was cleaned is marked"
    # Nothing PostgreSQL would refuse got through, and no pgtrail failure traceback that
    # names the application's frames escaped as an exception (it was reported instead).
    text = json.dumps([r.getMessage() for r in caplog.records])
    assert "Traceback" not in text


def joined_tenant(settings: Settings, trail: Trail) -> tuple[Any, ...]:
    """Opens an execution with ``trail``; another Trail joins it and logs one event."""
    with Trail(settings, sync=True) as other:
        with (
            trail.execution("probe", tenant_id="probe-tenant", user_id="u1") as ex,
            other.join(ex.execution_id),
        ):
            pgtrail.log_user_journey("joined-probe")
        trail.flush(30)
        other.flush(30)
    return tuple(
        one(
            settings.dsn,
            "SELECT tenant_id, user_id FROM logs_user_journey WHERE event_type = 'joined-probe'",
        )
    )


@pytest.mark.parametrize("label", list(CORPUS))
def test_redis_stays_on_for_the_client_after_the_value(settings: Settings, label: str) -> None:
    factory, _ = CORPUS[label]
    with trail_for(settings, "redis-on") as trail:
        value = factory()
        with trail.execution(value, tenant_id=value, user_id=value, context={"v": value}):
            pgtrail.log_user_journey("x")
        assert joined_tenant(settings, trail) == ("probe-tenant", "u1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workflow": None},
        {"workflow": 123},
        {"workflow": "ok", "tenant_id": object()},
        {"workflow": "ok", "context": {(1, 2): "tuple key"}},
        {"workflow": "ok", "context": cyclic_dict()},
        {"workflow": "ok", "tenant_id": "\udc80", "user_id": "\udc80", "session_id": "\udc80"},
    ],
    ids=["workflow-none", "workflow-int", "tenant-object", "tuple-key", "cycle", "surrogates"],
)
def test_the_reported_redis_cases_are_joinable_with_clean_identity(
    settings: Settings, kwargs: dict[str, Any]
) -> None:
    workflow = kwargs.pop("workflow")
    with Trail(settings, sync=True) as root, Trail(settings, sync=True) as worker:
        with root.execution(workflow, **kwargs) as ex:
            with worker.join(ex.execution_id):
                pgtrail.log_user_journey("worker-event")
            pgtrail.log_user_journey("root-event")
        assert joined_tenant(settings, root) == ("probe-tenant", "u1")
    found = dict(
        rows(
            settings.dsn,
            "SELECT event_type, (tenant_id, user_id, session_id)::text FROM logs_user_journey "
            "WHERE execution_id = %s",
            ex.execution_id,
        )
    )
    # The worker learnt the identity from Redis, cleaned by the same sanitiser: its events
    # are stored with exactly what the root's are.
    assert found["worker-event"] == found["root-event"]
    if kwargs.get("tenant_id") == "\udc80":
        assert found["root-event"] == "(\ufffd,\ufffd,\ufffd)"


def test_a_numpy_like_journey_value_is_stored_and_marked(settings: Settings) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("np"):
        pgtrail.log_user_journey("array", FakeArray(1.0, 2.0))  # type: ignore[arg-type]
        pgtrail.log_user_journey("array-in-dict", {"a": FakeArray(1.0)})
        pgtrail.log_user_journey("bool-raises", RaisingBool())  # type: ignore[arg-type]
    data = dict(rows(settings.dsn, "SELECT event_type, particular_data FROM logs_user_journey"))
    # No JSON form: stored as its repr(), and marked.
    assert data["array"]["value"] == "array([1.0, 2.0])"
    assert "data: expected a dict" in " ".join(data["array"]["_pgtrail_notes"])
    assert data["array-in-dict"]["a"] == "array([1.0])"
    assert data["array-in-dict"]["_pgtrail_notes"]
    assert "RaisingBool" in data["bool-raises"]["value"]


@pytest.mark.parametrize("event_type", ["a\x00b", "a\udc80b", "\ud800x"])
def test_an_event_type_with_nul_or_surrogate_is_cleaned_and_stored(
    settings: Settings, event_type: str
) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("et"):
        pgtrail.log_user_journey(event_type, {"k": 1})
        pgtrail.log_agent_execution(event_type=event_type, agent_type=event_type, data={})
        assert trail.stats.rejected == 0
    journey_type, notes = one(
        settings.dsn, "SELECT event_type, particular_data->'_pgtrail_notes' FROM logs_user_journey"
    )
    assert ("\x00" not in journey_type and "\ufffd" in journey_type) or journey_type == "ab"
    assert notes and "event_type" in json.dumps(notes)
    agent_type, agent = one(settings.dsn, "SELECT event_type, agent_type FROM logs_agent_execution")
    assert agent_type == journey_type and agent == journey_type


@pytest.mark.parametrize(
    "cost", [float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal("Infinity")]
)
@pytest.mark.parametrize("field", ["input_cost", "output_cost", "total_cost"])
def test_strict_mode_raises_for_non_finite_costs(settings: Settings, field: str, cost: Any) -> None:
    with (
        Trail(settings, sync=True, strict=True, redis_url=None, max_field_chars=MAX_CHARS) as trail,
        trail.execution("strict"),
    ):
        with pytest.raises(ValidationError, match=field):
            pgtrail.log_llm_execution(model="gpt-4o", input_tokens=1, **{field: cost})
        pgtrail.log_llm_execution(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert one(settings.dsn, "SELECT count(*) FROM logs_llm_execution") == 1


@pytest.mark.parametrize("duration", [float("nan"), float("inf")])
def test_strict_mode_raises_for_non_finite_durations(settings: Settings, duration: float) -> None:
    with (
        Trail(settings, sync=True, strict=True, redis_url=None, max_field_chars=MAX_CHARS) as trail,
        trail.execution("strict"),
        pytest.raises(ValidationError, match="duration_ms"),
    ):
        pgtrail.log_agent_execution(event_type="e", duration_ms=duration)


DIRTY = [label for label, (_, dirty) in CORPUS.items() if dirty]


@pytest.mark.parametrize("label", DIRTY)
def test_strict_mode_raises_for_every_value_it_would_clean(settings: Settings, label: str) -> None:
    factory, _ = CORPUS[label]
    with Trail(
        settings, sync=True, strict=True, redis_url=None, max_field_chars=MAX_CHARS
    ) as trail:
        with trail.execution("strict"):
            with pytest.raises(ValidationError):
                pgtrail.log_user_journey("data", {"v": factory()})
            with pytest.raises(ValidationError):
                pgtrail.log_agent_execution(event_type="data", data={"v": factory()})
            with pytest.raises(ValidationError):
                pgtrail.log_llm_execution(model="gpt-4o", data={"v": factory()})
            pgtrail.log_user_journey("fine", {"ok": 1})
        with pytest.raises(ValidationError), trail.execution("strict", context={"v": factory()}):
            pass
    assert journey_types(settings.dsn) == ["fine"]


TEXT_DIRTY = ["\udc80", "a\x00b", "x" * (MAX_CHARS + 1), b"bytes", 1.5, RaisingStr()]


@pytest.mark.parametrize("value", TEXT_DIRTY, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("field", ["tenant_id", "user_id", "session_id", "workflow"])
def test_strict_mode_raises_for_identity_values_it_would_clean(
    settings: Settings, field: str, value: Any
) -> None:
    kwargs = {"workflow": "strict", field: value}
    workflow = kwargs.pop("workflow")
    with Trail(settings, sync=True, strict=True, max_field_chars=MAX_CHARS) as trail:
        with pytest.raises(ValidationError), trail.execution(workflow, **kwargs):
            pytest.fail("the block must not run")  # pragma: no cover
        if field != "workflow":
            with pytest.raises(ValidationError), trail.join(uuid.uuid4(), **kwargs):
                pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize("value", ["a\x00b", "\udc80"])
def test_strict_mode_raises_for_event_types_and_process_names(
    settings: Settings, value: str
) -> None:
    with (
        Trail(settings, sync=True, strict=True, redis_url=None, max_field_chars=MAX_CHARS) as trail,
        trail.execution("strict") as ex,
    ):
        with pytest.raises(ValidationError):
            pgtrail.log_user_journey(value)
        with pytest.raises(ValidationError):
            pgtrail.log_agent_execution(event_type=value)
        with pytest.raises(ValidationError), ex.process(value):
            pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": "12a"},
        {"input_tokens": -1},
        {"input_tokens": 1.5},
        {"input_tokens": 3_000_000_000},
        {"event_type": "not-an-outcome"},
        {"model": 42},
    ],
    ids=["token-str", "token-negative", "token-float", "token-int4", "outcome", "model-int"],
)
def test_strict_mode_raises_for_values_it_would_refuse(
    settings: Settings, kwargs: dict[str, Any]
) -> None:
    with (
        Trail(settings, sync=True, strict=True, redis_url=None, max_field_chars=MAX_CHARS) as trail,
        trail.execution("strict"),
        pytest.raises(ValidationError),
    ):
        pgtrail.log_llm_execution(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": "12a"},
        {"input_tokens": -1},
        {"output_tokens": 1.5},
        {"input_tokens": 3_000_000_000},
        {"event_type": "not-an-outcome"},
        {"model": None, "provider": None, "agent_type": None},
        {"model": 42},
        {"total_cost": -1.0},
        {"total_cost": "free"},
    ],
    ids=[
        "token-str",
        "token-negative",
        "token-float",
        "token-int4",
        "outcome",
        "all-none",
        "model-int",
        "cost-negative",
        "cost-str",
    ],
)
def test_wrong_types_are_refused_alone_or_cleaned_and_the_rest_is_stored(
    settings: Settings, kwargs: dict[str, Any]
) -> None:
    with Trail(settings, sync=True) as trail, trail.execution("types"):
        pgtrail.log_llm_execution(model="gpt-4o", input_tokens=1, output_tokens=1)
        pgtrail.log_llm_execution(**kwargs)
        pgtrail.log_llm_execution(model="gpt-4o", input_tokens=2, output_tokens=2)
        pgtrail.log_user_journey("after")
    tokens = sorted(
        r[0] for r in rows(settings.dsn, "SELECT input_tokens FROM logs_llm_execution") if r[0]
    )
    assert [t for t in tokens if t in (1, 2)] == [1, 2]
    assert journey_types(settings.dsn) == ["after"]


class AppError(Exception):
    """The application's own exception."""


class AppErrorWithBadStr(Exception):
    def __str__(self) -> str:
        raise Boom("str of the application's exception")


@pytest.mark.parametrize("error_type", [AppError, AppErrorWithBadStr, KeyboardInterrupt])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strict", [False, True])
def test_the_applications_exception_propagates_unchanged(
    settings: Settings, mode: str, error_type: type[BaseException], strict: bool
) -> None:
    trail = trail_for(settings, mode, strict=strict)
    raised = error_type()

    @trail.process("sync step")
    def sync_step() -> None:
        raise raised

    @trail.process("async step")
    async def async_step() -> None:
        await asyncio.sleep(0)
        raise raised

    try:
        for run in (
            sync_step,
            lambda: asyncio.run(async_step()),
        ):
            with pytest.raises(error_type) as caught, trail.execution("app"):
                run()
            assert caught.value is raised
        with (
            pytest.raises(error_type) as caught,
            trail.execution("app") as ex,
            ex.process("inner"),
            trail.join(ex.execution_id),
        ):
            raise raised
        assert caught.value is raised
        with pytest.raises(error_type) as caught, trail.join(uuid.uuid4(), tenant_id="t"):
            raise raised
        assert caught.value is raised
    finally:
        trail.close()
    statuses = rows(
        settings.dsn,
        "SELECT status, error FROM logs_execution WHERE event_type = 'execution_finalized'",
    )
    assert len(statuses) == 3 and all(s[0] == "error" for s in statuses)


def test_flush_and_close_never_raise(settings: Settings) -> None:
    trail = Trail(settings, sync=True)
    for timeout in ("soon", float("nan"), -1, RaisingEverything()):
        assert trail.flush(timeout) in (True, False)  # type: ignore[arg-type]
    trail.close()
    trail.close()
    assert trail.flush(1) in (True, False)


def test_logging_with_a_broken_clock_never_raises(settings: Settings) -> None:
    ticks = iter(range(1000))

    def clock() -> dt.datetime:
        if next(ticks) % 2:
            raise Boom("clock")
        return dt.datetime.now(dt.UTC)

    with Trail(settings, sync=True, clock=clock) as trail:
        for _ in range(4):
            with trail.execution("clock") as ex, ex.process("p"):
                pgtrail.log_user_journey("tick")
    assert journey_types(settings.dsn)


def test_values_are_stored_cleaned(settings: Settings, tmp_path: Path) -> None:
    with (
        Trail(settings, sync=True, max_field_chars=MAX_CHARS) as trail,
        trail.execution(
            "clean\x00", tenant_id="t\x00", user_id="u\udc80", session_id="x" * 600
        ) as ex,
        ex.process("step\udc80"),
    ):
        pgtrail.log_user_journey("e", {"k\x00": "v\udc80", "n": math.nan})
    tenant, user, session, data = one(
        settings.dsn,
        "SELECT tenant_id, user_id, session_id, particular_data FROM logs_user_journey",
    )
    assert (tenant, user) == ("t", "u\ufffd")
    # Ids are cut at 512 characters (they are indexed: PostgreSQL refuses longer entries).
    assert session.startswith("x" * 512) and "truncated 88" in session
    assert data["k"] == "v\ufffd" and data["n"] is None
    notes = " ".join(data["_pgtrail_notes"])
    assert "tenant_id" in notes and "user_id" in notes and "NaN" in notes
    workflow, processes = one(
        settings.dsn, "SELECT workflow, processes_executed FROM logs_execution"
    )
    assert workflow == "clean"
    assert [p["name"] for p in processes] == ["clean", "step\ufffd"]


@pytest.mark.parametrize(
    "target",
    ["not-an-id", 12, None, {"traceparent": "00-zz-zz-01"}, RaisingEverything(), BadMapping()],
    ids=["text", "int", "none", "bad-header", "hostile", "bad-mapping"],
)
def test_a_join_target_naming_no_execution(settings: Settings, target: Any) -> None:
    with Trail(settings, sync=True, redis_url=None) as trail:
        with trail.join(target, tenant_id="acme", user_id="u"):
            pgtrail.log_user_journey("joined")
        with (
            Trail(settings, sync=True, strict=True, redis_url=None) as strict,
            pytest.raises(PgtrailError),
            strict.join(target),
        ):
            pytest.fail("the block must not run")  # pragma: no cover
    assert tuple(one(settings.dsn, "SELECT tenant_id, user_id FROM logs_user_journey")) == (
        "acme",
        "u",
    )
