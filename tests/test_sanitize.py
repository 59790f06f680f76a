"""Sanitizer: whatever callers pass ends up as text and JSON that PostgreSQL accepts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from pgtrail.errors import ConfigurationError, ValidationError
from pgtrail.writer.sanitize import CYCLE, MAX_DEPTH, MAX_DEPTH_LIMIT, Sanitizer, compact_json


def _storable(out: Any) -> str:
    """What PostgreSQL would receive; fails the test if jsonb would refuse it."""
    text = json.dumps(out, allow_nan=False)
    assert "\\u0000" not in text
    compact = compact_json(out)
    compact.encode("utf-8")  # raises on a lone surrogate
    assert "\x00" not in compact
    return text


def _clean(value: object, **options: Any) -> tuple[Any, list[str]]:
    out, notes = Sanitizer(**options).json(value, "payload")
    _storable(out)
    _storable(notes)
    return out, notes


class Color(enum.Enum):
    RED = "red"
    DEEP = ("depth", 1, float("nan"))


class Level(enum.IntEnum):
    HIGH = 3


class Call(BaseModel):
    name: str
    at: dt.datetime
    score: float


@dataclasses.dataclass
class Step:
    name: str
    started: dt.datetime
    children: list[Step] = dataclasses.field(default_factory=list)


class Opaque:
    """No JSON form and a repr far longer than 1000 characters."""

    def __repr__(self) -> str:
        return "<Opaque " + "x" * 5000 + ">"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class HostileMapping(Mapping[str, int]):
    """A mapping that fails while being read."""

    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate\x00 \ud800")

    def __len__(self) -> int:
        return 1


# -- text columns ------------------------------------------------------------------------------


def test_text_none_stays_none_without_notes() -> None:
    assert Sanitizer().text(None, "error") == (None, [])


def test_text_clean_string_is_returned_unchanged_without_notes() -> None:
    value = "ordinary text, ünïcode and emoji 🎉"
    clean, notes = Sanitizer().text(value, "error")
    assert clean == value
    assert notes == []


def test_text_nul_bytes_are_removed_with_a_note_naming_the_field() -> None:
    clean, notes = Sanitizer().text("a\x00b\x00c", "error")
    assert clean == "abc"
    assert notes == ["field 'error': removed 2 NUL characters"]


def test_text_lone_surrogates_are_replaced_with_replacement_character() -> None:
    clean, notes = Sanitizer().text("x\ud800y\udfffz", "error")
    assert clean == "x\ufffdy\ufffdz"
    assert clean is not None
    clean.encode("utf-8")
    assert notes == ["field 'error': replaced 2 lone surrogates with U+FFFD"]


def test_text_surrogate_halves_of_a_pair_are_each_replaced() -> None:
    clean, notes = Sanitizer().text("smile \ud83d\ude00", "error")
    assert clean == "smile \ufffd\ufffd"
    assert notes == ["field 'error': replaced 2 lone surrogates with U+FFFD"]


def test_text_question_marks_survive_surrogate_replacement() -> None:
    clean, notes = Sanitizer().text("why? \ud800 really?", "error")
    assert clean == "why? \ufffd really?"
    assert notes == ["field 'error': replaced 1 lone surrogate with U+FFFD"]


def test_text_surrogates_are_replaced_even_when_every_private_use_character_is_present() -> None:
    private = "".join(chr(code) for code in range(0xE000, 0xF900))
    clean, notes = Sanitizer().text(private + "?\udc80?", "error")
    assert clean == private + "?\ufffd?"
    assert notes == ["field 'error': replaced 1 lone surrogate with U+FFFD"]


def test_text_existing_replacement_characters_are_not_counted_as_repairs() -> None:
    clean, notes = Sanitizer().text("\ufffd\ud800", "error")
    assert clean == "\ufffd\ufffd"
    assert notes == ["field 'error': replaced 1 lone surrogate with U+FFFD"]


def test_text_long_string_is_truncated_and_marked() -> None:
    clean, notes = Sanitizer(max_field_chars=10).text("0123456789" * 3, "output")
    assert clean == "0123456789…[truncated 20 chars]"
    assert notes == ["field 'output': truncated 20 of 30 characters"]


def test_text_string_exactly_at_the_limit_is_kept() -> None:
    clean, notes = Sanitizer(max_field_chars=10).text("0123456789", "output")
    assert clean == "0123456789"
    assert notes == []


@pytest.mark.parametrize(
    ("value", "expected", "type_name"),
    [
        (42, "42", "int"),
        (1.5, "1.5", "float"),
        (["a", 1], "['a', 1]", "list"),
        ({"k": None}, "{'k': None}", "dict"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", "UUID"),
    ],
)
def test_text_wrong_types_are_converted_with_str_and_noted(
    value: object, expected: str, type_name: str
) -> None:
    clean, notes = Sanitizer().text(value, "tenant_id")
    assert clean == expected
    assert notes == [f"field 'tenant_id': expected str, got {type_name}; converted with str()"]


def test_text_bytes_are_decoded_as_utf8_and_invalid_bytes_replaced() -> None:
    clean, notes = Sanitizer().text(b"caf\xc3\xa9 \xff", "error")
    assert clean == "café \ufffd"
    assert notes == [
        "field 'error': expected str, got bytes; decoded as UTF-8",
        "field 'error': replaced invalid UTF-8 bytes with U+FFFD",
    ]


def test_text_bytes_with_nul_are_cleaned_after_decoding() -> None:
    clean, notes = Sanitizer().text(bytearray(b"a\x00b"), "error")
    assert clean == "ab"
    assert notes[-1] == "field 'error': removed 1 NUL character"


def test_text_object_whose_str_and_repr_raise_is_still_stored() -> None:
    clean, notes = Sanitizer().text(BrokenRepr(), "error")
    assert clean == "<unrepresentable BrokenRepr>"
    assert len(notes) == 1


def test_text_str_enum_is_stored_as_its_value_without_note() -> None:
    class Kind(enum.StrEnum):
        TOOL = "tool"

    assert Sanitizer().text(Kind.TOOL, "kind") == ("tool", [])


def test_text_strict_mode_raises_validation_error_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"field 'error': removed 1 NUL character"):
        Sanitizer(strict=True).text("bad\x00", "error")


def test_text_strict_mode_rejects_wrong_types() -> None:
    with pytest.raises(ValidationError, match=r"field 'user_id': expected str, got int"):
        Sanitizer(strict=True).text(42, "user_id")


def test_text_strict_mode_rejects_oversized_strings() -> None:
    with pytest.raises(ValidationError, match=r"field 'output': truncated 5 of 15 characters"):
        Sanitizer(max_field_chars=10, strict=True).text("x" * 15, "output")


def test_text_strict_mode_accepts_clean_strings_and_none() -> None:
    strict = Sanitizer(strict=True)
    assert strict.text("fine", "error") == ("fine", [])
    assert strict.text(None, "error") == (None, [])


# -- JSON: strings and keys --------------------------------------------------------------------


def test_nul_bytes_are_removed_before_serialising() -> None:
    out, notes = _clean({"a": "x\x00y", "b": ["\x00\x00"]})
    assert out == {"a": "xy", "b": [""]}
    assert notes == [
        "field 'payload' at $['a']: removed 1 NUL character",
        "field 'payload' at $['b'][0]: removed 2 NUL characters",
    ]


def test_nul_bytes_in_dict_keys_are_removed() -> None:
    out, notes = _clean({"ke\x00y": 1})
    assert out == {"key": 1}
    assert notes == ["field 'payload' at $['key']: dict key: removed 1 NUL character"]


def test_keys_that_collide_after_cleaning_keep_both_values() -> None:
    out, notes = _clean({"k\x00": 1, "k": 2, "k~2": 3})
    assert out == {"k": 1, "k~2": 2, "k~2~2": 3}
    assert notes == [
        "field 'payload' at $['k']: dict key: removed 1 NUL character",
        "field 'payload' at $['k~2']: key 'k' collides with another key; stored as 'k~2'",
        "field 'payload' at $['k~2~2']: key 'k~2' collides with another key; stored as 'k~2~2'",
    ]


def test_lone_surrogates_in_values_and_keys_are_replaced() -> None:
    out, notes = _clean({"\udc80key": ["v\ud800"]})
    assert out == {"\ufffdkey": ["v\ufffd"]}
    assert len(notes) == 2


def test_long_strings_and_keys_are_truncated_with_marker() -> None:
    out, notes = _clean({"k" * 20: "v" * 25}, max_field_chars=10)
    assert out == {"kkkkkkkkkk…[truncated 10 chars]": "vvvvvvvvvv…[truncated 15 chars]"}
    assert len(notes) == 2


def test_ten_megabyte_string_is_truncated_to_the_field_limit_with_marker() -> None:
    huge = "a" * 10_000_000
    out, notes = _clean({"output": huge}, max_field_chars=1_000_000)
    marker = "…[truncated 9000000 chars]"
    assert out["output"].endswith(marker)
    assert len(out["output"]) == 1_000_000 + len(marker)
    assert out["output"][:1_000_000] == "a" * 1_000_000
    assert notes == ["field 'payload' at $['output']: truncated 9000000 of 10000000 characters"]


def test_ten_megabyte_string_with_nul_and_surrogates_is_cleaned_whole() -> None:
    huge = ("ab\x00\ud800" * 2_500_000)[:10_000_000]
    out, notes = _clean([huge], max_field_chars=20_000_000)
    assert len(out[0]) == 7_500_000
    assert "\x00" not in out[0]
    assert out[0].count("\ufffd") == 2_500_000
    assert len(notes) == 2


@pytest.mark.parametrize(
    ("key", "expected"),
    [(1, "1"), (None, "null"), (True, "true"), (False, "false"), (1.5, "1.5"), (Level.HIGH, "3")],
)
def test_scalar_dict_keys_are_coerced_like_json_dumps_without_notes(
    key: object, expected: str
) -> None:
    out, notes = _clean({key: "v"})
    assert out == {expected: "v"}
    assert notes == []


def test_non_scalar_dict_keys_are_coerced_with_str_and_noted() -> None:
    out, notes = _clean({(1, 2): "v", frozenset(): "w"})
    assert out == {"(1, 2)": "v", "frozenset()": "w"}
    assert notes == [
        "field 'payload' at $['(1, 2)']: dict key of type tuple converted with str()",
        "field 'payload' at $['frozenset()']: dict key of type frozenset converted with str()",
    ]


# -- JSON: numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity")],
)
def test_nan_and_infinities_become_null_with_a_note(value: float, name: str) -> None:
    out, notes = _clean({"score": value, "ok": 0.5})
    assert out == {"score": None, "ok": 0.5}
    assert notes == [f"field 'payload' at $['score']: {name} is not valid JSON; stored null"]


def test_float_subclass_nan_is_caught_too() -> None:
    class Score(float):
        pass

    out, notes = _clean([Score("nan"), Score(2.5)])
    assert out == [None, 2.5]
    assert type(out[1]) is float
    assert len(notes) == 1


def test_big_integers_that_jsonb_accepts_are_kept() -> None:
    out, notes = _clean([2**63, -(2**64), 10**300])
    assert out == [2**63, -(2**64), 10**300]
    assert notes == []


def test_integers_beyond_ten_to_the_300_become_strings() -> None:
    out, notes = _clean([10**301, -(10**301)])
    assert out == [str(10**301), str(-(10**301))]
    assert len(notes) == 2


def test_integer_too_long_for_decimal_text_becomes_hex_string() -> None:
    out, notes = _clean(2**20_000)
    assert out == hex(2**20_000)
    assert notes == [
        "field 'payload': integer of 20001 bits is beyond ±10**300; stored as a string"
    ]


def test_bool_and_int_enum_stay_json_primitives() -> None:
    out, notes = _clean([True, False, Level.HIGH])
    assert out == [True, False, 3]
    assert type(out[2]) is int
    assert notes == []


def test_decimal_keeps_its_precision_as_a_string() -> None:
    out, notes = _clean([decimal.Decimal("0.10"), decimal.Decimal("1E+3")])
    assert out == ["0.10", "1E+3"]
    assert notes == []


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_decimal_nan_and_infinity_become_null(text: str) -> None:
    out, notes = _clean({"amount": decimal.Decimal(text)})
    assert out == {"amount": None}
    assert len(notes) == 1
    assert "stored null" in notes[0]


# -- JSON: other types -------------------------------------------------------------------------


def test_lock_is_stored_as_its_repr_with_a_note() -> None:
    out, notes = _clean({"lock": threading.Lock()})
    assert re.fullmatch(r"<unlocked _thread\.lock object at 0x[0-9a-f]+>", out["lock"])
    assert notes == ["field 'payload' at $['lock']: lock has no JSON form; stored its repr()"]


def test_socket_is_stored_as_its_repr_with_a_note() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        out, notes = _clean([sock])
    assert out[0].startswith("<socket.socket")
    assert notes == ["field 'payload' at $[0]: socket has no JSON form; stored its repr()"]


def test_custom_object_repr_is_truncated_to_1000_characters() -> None:
    out, notes = _clean({"obj": Opaque()})
    marker = f"…[truncated {len(repr(Opaque())) - 1000} chars]"
    assert out["obj"] == repr(Opaque())[:1000] + marker
    assert notes == ["field 'payload' at $['obj']: Opaque has no JSON form; stored its repr()"]


def test_object_whose_repr_raises_is_still_stored() -> None:
    out, notes = _clean(BrokenRepr())
    assert out == "<unrepresentable BrokenRepr>"
    assert len(notes) == 1


def test_generators_and_ranges_are_not_consumed_or_expanded() -> None:
    consumed: list[int] = []

    def gen() -> Iterator[int]:
        consumed.append(1)
        yield 1

    out, notes = _clean({"g": gen(), "r": range(10**12)})
    assert consumed == []
    assert out["r"] == "range(0, 1000000000000)"
    assert out["g"].startswith("<generator object")
    assert len(notes) == 2


def test_valid_utf8_bytes_become_text_without_note() -> None:
    out, notes = _clean([b"caf\xc3\xa9", bytearray(b"ok"), memoryview(b"view")])
    assert out == ["café", "ok", "view"]
    assert notes == []


def test_invalid_utf8_bytes_become_base64_with_a_note() -> None:
    out, notes = _clean({"blob": b"\xff\xfe\x00"})
    assert out == {"blob": "base64://4A"}
    assert notes == [
        "field 'payload' at $['blob']: bytes are not valid UTF-8; stored as 'base64:' + base64"
    ]


def test_utf8_bytes_containing_nul_are_cleaned_like_strings() -> None:
    out, notes = _clean(b"a\x00b")
    assert out == "ab"
    assert notes == ["field 'payload': removed 1 NUL character"]


def test_aware_datetime_becomes_iso_8601_without_note() -> None:
    at = dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    out, notes = _clean({"at": at})
    assert out == {"at": "2024-01-15T10:30:00+02:00"}
    assert notes == []


def test_naive_datetime_becomes_iso_8601_and_is_flagged() -> None:
    out, notes = _clean({"at": dt.datetime(2024, 1, 15, 10, 30)})  # noqa: DTZ001
    assert out == {"at": "2024-01-15T10:30:00"}
    assert notes == ["field 'payload' at $['at']: naive datetime (no time zone); stored as given"]


def test_date_time_and_timedelta_have_json_forms() -> None:
    out, notes = _clean([dt.date(2024, 1, 15), dt.time(10, 30, 5), dt.timedelta(minutes=1.5)])
    assert out == ["2024-01-15", "10:30:05", 90.0]
    assert notes == []


def test_uuid_becomes_its_canonical_string() -> None:
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    out, notes = _clean({"id": value})
    assert out == {"id": "12345678-1234-5678-1234-567812345678"}
    assert notes == []


def test_sets_become_sorted_lists_and_tuples_become_lists() -> None:
    out, notes = _clean({"s": {3, 1, 2}, "f": frozenset({"b", "a"}), "t": (1, (2, 3))})
    assert out == {"s": [1, 2, 3], "f": ["a", "b"], "t": [1, [2, 3]]}
    assert notes == []


def test_sets_of_unorderable_items_become_lists_of_the_same_items() -> None:
    out, notes = _clean({1, "a", None})
    assert sorted(out, key=repr) == sorted([1, "a", None], key=repr)
    assert notes == []


def test_enum_becomes_its_value_which_is_sanitised_too() -> None:
    out, notes = _clean([Color.RED, Color.DEEP])
    assert out == ["red", ["depth", 1, None]]
    assert len(notes) == 1


def test_pydantic_model_is_dumped_in_json_mode() -> None:
    call = Call(name="search\x00", at=dt.datetime(2024, 1, 15, tzinfo=dt.UTC), score=0.5)
    out, notes = _clean({"call": call})
    assert out == {"call": {"name": "search", "at": "2024-01-15T00:00:00Z", "score": 0.5}}
    assert notes == ["field 'payload' at $['call']['name']: removed 1 NUL character"]


def test_dataclass_becomes_a_dict_of_its_fields() -> None:
    at = dt.datetime(2024, 1, 15, tzinfo=dt.UTC)
    step = Step("plan", at, [Step("search", at)])
    out, notes = _clean(step)
    assert out == {
        "name": "plan",
        "started": "2024-01-15T00:00:00+00:00",
        "children": [{"name": "search", "started": "2024-01-15T00:00:00+00:00", "children": []}],
    }
    assert notes == []


def test_dataclass_class_itself_is_not_treated_as_an_instance() -> None:
    out, notes = _clean(Step)
    assert out.startswith("<class ")
    assert len(notes) == 1


def test_subclasses_of_str_and_int_become_plain_values() -> None:
    class Name(str):
        __slots__ = ()

    class Count(int):
        pass

    out, notes = _clean([Name("n\x00"), Count(7)])
    assert out == ["n", 7]
    assert type(out[0]) is str
    assert type(out[1]) is int
    assert len(notes) == 1


# -- JSON: structure ---------------------------------------------------------------------------


def test_ten_thousand_deep_nested_list_is_cut_at_max_depth() -> None:
    deep: list[Any] = []
    current = deep
    for _ in range(10_000):
        child: list[Any] = []
        current.append(child)
        current = child
    out, notes = _clean(deep, max_depth=32)
    depth = 0
    node: Any = out
    while isinstance(node, list):
        depth += 1
        node = node[0]
    assert depth == 32
    assert node == MAX_DEPTH
    assert len(notes) == 1
    assert notes[0].endswith("nested deeper than 32 levels; replaced by '[max depth]'")


def test_ten_thousand_deep_nested_dicts_do_not_raise_recursion_error() -> None:
    deep: dict[str, Any] = {}
    current = deep
    for _ in range(10_000):
        current["d"] = {}
        current = current["d"]
    out, notes = _clean(deep)
    assert "[max depth]" in json.dumps(out)
    assert len(notes) == 1


def test_max_depth_zero_replaces_even_the_top_level_container() -> None:
    out, notes = _clean({"a": 1}, max_depth=0)
    assert out == MAX_DEPTH
    assert len(notes) == 1


def test_scalars_at_the_depth_limit_are_kept() -> None:
    out, notes = _clean([[1, "two"]], max_depth=2)
    assert out == [[1, "two"]]
    assert notes == []


def test_self_referencing_dict_is_replaced_by_cycle_marker() -> None:
    loop: dict[str, Any] = {"name": "root"}
    loop["self"] = loop
    out, notes = _clean(loop)
    assert out == {"name": "root", "self": CYCLE}
    assert notes == ["field 'payload' at $['self']: reference cycle replaced by '[cycle]'"]


def test_self_referencing_list_is_replaced_by_cycle_marker() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    out, notes = _clean(loop)
    assert out == [1, CYCLE]
    assert notes == ["field 'payload' at $[1]: reference cycle replaced by '[cycle]'"]


def test_indirect_cycle_through_dict_and_list_is_cut() -> None:
    parent: dict[str, Any] = {"children": []}
    parent["children"].append({"parent": parent})
    out, notes = _clean(parent)
    assert out == {"children": [{"parent": CYCLE}]}
    assert len(notes) == 1


def test_shared_reference_that_is_not_a_cycle_is_kept_in_both_places() -> None:
    shared = {"v": 1}
    out, notes = _clean({"a": shared, "b": [shared, shared]})
    assert out == {"a": {"v": 1}, "b": [{"v": 1}, {"v": 1}]}
    assert notes == []


def test_output_is_a_new_structure_and_input_is_not_modified() -> None:
    value = {"a": ["x\x00"], "b": (1, 2)}
    out, _ = _clean(value)
    assert value == {"a": ["x\x00"], "b": (1, 2)}
    assert out["a"] is not value["a"]


def test_mapping_that_fails_while_read_becomes_null_with_a_note() -> None:
    out, notes = _clean({"m": HostileMapping()})
    assert out is None
    assert len(notes) == 1
    assert notes[0].startswith("field 'payload': could not be converted (RuntimeError: cannot")
    assert notes[0].endswith("stored null")


def test_notes_are_capped_with_a_count_of_the_rest() -> None:
    out, notes = _clean([float("nan")] * 500)
    assert out == [None] * 500
    assert len(notes) == 101
    assert notes[-1] == "field 'payload': 400 more problems not listed"


def test_clean_structure_produces_no_notes() -> None:
    value = {"model": "gpt", "tokens": 1568, "ok": True, "cost": 0.01, "tags": ["a"], "x": None}
    out, notes = _clean(value)
    assert out == value
    assert notes == []


def test_whole_bad_input_corpus_is_storable() -> None:
    loop: list[Any] = []
    loop.append(loop)
    corpus = {
        "nul\x00key": "nul\x00value",
        "surrogate": "\ud800\udc00\udfff",
        "floats": [float("nan"), float("inf"), float("-inf")],
        "lock": threading.Lock(),
        "opaque": Opaque(),
        "bytes": [b"\x00\xff", b"ok"],
        "times": [dt.datetime(2024, 1, 1), dt.datetime.now(dt.UTC)],  # noqa: DTZ001
        "decimal": [decimal.Decimal("1.5"), decimal.Decimal("NaN")],
        "uuid": uuid.uuid4(),
        "set": {1, 2},
        "cycle": loop,
        "big": 10**400,
        (1, "tuple key"): "x",
    }
    out, notes = _clean(corpus)
    assert len(notes) >= 10
    assert out["nulkey"] == "nulvalue"
    assert out["cycle"] == [CYCLE]


# -- strict mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": ["x\x00"]}, r"field 'payload' at \$\['a'\]\[0\]: removed 1 NUL character"),
        ({"k\x00": 1}, r"field 'payload' at \$\['k'\]: dict key: removed 1 NUL character"),
        ({"s": "\ud800"}, r"field 'payload' at \$\['s'\]: replaced 1 lone surrogate"),
        ([1.0, float("nan")], r"field 'payload' at \$\[1\]: NaN is not valid JSON"),
        ({"lock": threading.Lock()}, r"field 'payload' at \$\['lock'\]: lock has no JSON form"),
        ({"at": dt.datetime(2024, 1, 1)}, r"naive datetime"),  # noqa: DTZ001
        ({"m": HostileMapping()}, r"field 'payload': could not be converted \(RuntimeError"),
    ],
)
def test_strict_mode_raises_validation_error_naming_field_and_path(
    value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Sanitizer(strict=True).json(value, "payload")


def test_strict_mode_raises_on_cycles_and_excess_depth() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationError, match=r"reference cycle"):
        Sanitizer(strict=True).json(loop, "payload")
    with pytest.raises(ValidationError, match=r"nested deeper than 1 levels"):
        Sanitizer(max_depth=1, strict=True).json([[1]], "payload")


def test_strict_mode_accepts_lossless_conversions() -> None:
    value = {
        "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "id": uuid.UUID(int=7),
        "amount": decimal.Decimal("9.99"),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "color": Color.RED,
        "raw": b"text",
        1: "int key",
    }
    out, notes = Sanitizer(strict=True).json(value, "payload")
    assert notes == []
    assert out["tags"] == ["a", "b"]
    assert out["1"] == "int key"


# -- configuration and compact_json ------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_field_chars": 0}, {"max_depth": -1}, {"max_depth": MAX_DEPTH_LIMIT + 1}],
)
def test_out_of_range_limits_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Sanitizer(**options)


def test_dumps_is_compact_and_keeps_non_ascii() -> None:
    assert compact_json({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_dumps_refuses_nan_so_unsanitised_data_cannot_slip_through() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        compact_json({"x": float("nan")})


def test_dumps_round_trips_sanitised_output() -> None:
    out, _ = _clean({"s": "x\x00", "n": [1, 2.5, None, True], "t": dt.date(2024, 1, 1)})
    assert json.loads(compact_json(out)) == {"s": "x", "n": [1, 2.5, None, True], "t": "2024-01-01"}
