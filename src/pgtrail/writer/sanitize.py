"""Make arbitrary caller data safe to store in PostgreSQL ``text`` and ``jsonb`` columns.

PostgreSQL refuses a few things Python produces without complaint: NUL characters (in ``text``,
and as ``\\u0000`` inside ``jsonb``), surrogate code points (UTF-8 cannot encode them, paired or
not), and NaN or infinite numbers in JSON. :class:`Sanitizer` repairs all of them (NUL removed,
each surrogate replaced by U+FFFD, non-finite numbers stored as ``null``), truncates overlong
strings, converts common Python types to their JSON form, and reports every change as a
human-readable note. In strict mode it raises :class:`~pgtrail.errors.ValidationError` at the
first problem instead.

Conversions that lose nothing are silent: aware datetimes, dates and times become ISO 8601
strings, ``UUID`` and finite ``Decimal`` become strings (a string keeps a decimal's exact
precision), ``timedelta`` becomes seconds as a float, enums become their value, pydantic models
become ``model_dump(mode="json")``, dataclasses become dicts, tuples and sets become lists (sets
sorted when their items allow it), and bytes that are valid UTF-8 become text. Everything else
that changes the data is a problem and produces a note: bytes that are not valid UTF-8 (stored
as ``"base64:"`` followed by their base64 form), naive datetimes, NaN and infinities (stored as
``null``), integers beyond ±10**300 (stored as strings), objects without a JSON form (stored as
their ``repr()``, at most 1000 characters), reference cycles (``"[cycle]"``) and containers
nested deeper than ``max_depth`` (``"[max depth]"``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json as _json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from pydantic import BaseModel

from pgtrail.errors import ConfigurationError, ValidationError

CYCLE = "[cycle]"
"""What a reference back to an enclosing container is replaced with."""

MAX_DEPTH = "[max depth]"
"""What a container nested deeper than ``max_depth`` is replaced with."""

# The walk recurses a few frames per nesting level; this bound keeps it far from Python's
# default recursion limit whatever the caller's own stack depth.
MAX_DEPTH_LIMIT = 100

_REPR_CHARS = 1000
_BIG_INT = 10**300
_MAX_NOTES = 100
_NO_PROBLEMS: tuple[str, ...] = ()
_SURROGATE = re.compile("[\ud800-\udfff]")
_PARKING = [chr(code) for code in range(0xE000, 0xF900)]  # the BMP private-use area
_FLOAT_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_ENCODER = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def compact_json(value: Any) -> str:
    """Serialise an already-sanitised structure to compact JSON text.

    Args:
        value: Output of :meth:`Sanitizer.json` (or anything equally JSON-safe).

    Returns:
        Compact JSON with non-ASCII characters kept as they are.

    Raises:
        ValueError: ``value`` holds NaN or an infinity, or a reference cycle.
        TypeError: ``value`` holds an object with no JSON form.
    """
    return _ENCODER.encode(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _utf8_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _repair(text: str, limit: int) -> tuple[str, Sequence[str]]:
    """Remove NUL, truncate and replace lone surrogates; return the text and what was done."""
    if len(text) <= limit and "\x00" not in text and _utf8_ok(text):
        return text, _NO_PROBLEMS
    problems: list[str] = []
    nuls = text.count("\x00")
    if nuls:
        text = text.replace("\x00", "")
        problems.append(f"removed {_plural(nuls, 'NUL character')}")
    cut = len(text) - limit
    if cut > 0:
        # Cut before the surrogate check so a huge string is scanned once, not twice.
        text = text[:limit]
        problems.append(f"truncated {cut} of {limit + cut} characters")
    if not _utf8_ok(text):
        text, replaced = _replace_surrogates(text)
        problems.append(f"replaced {_plural(replaced, 'lone surrogate')} with U+FFFD")
    if cut > 0:
        text = f"{text}…[truncated {cut} chars]"
    return text, problems


def _replace_surrogates(text: str) -> tuple[str, int]:
    """Replace every surrogate code point with U+FFFD; return the text and how many there were.

    UTF-8 encoding with ``errors="replace"`` writes "?" for each surrogate on a fast C path
    (UTF-16 decoding with "replace" costs a microsecond per error, seconds on a 10 MB string of
    them). The "?" then become U+FFFD; question marks already in the text are parked meanwhile
    on a private-use character the text does not contain.
    """
    parked = ""
    if "?" in text:
        parked = next((char for char in _PARKING if char not in text), "")
        if not parked:  # the text holds every private-use character: slower but exact
            return _SURROGATE.subn("\ufffd", text)
        text = text.replace("?", parked)
    raw = text.encode("utf-8", "replace")
    count = raw.count(b"?")
    text = raw.decode("utf-8").replace("?", "\ufffd")
    if parked:
        text = text.replace(parked, "?")
    return text, count


def _safe_str(value: object) -> str:
    if type(value) is int:
        return _int_text(value)  # str() refuses integers of more than 4300 digits
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
    # A broken __repr__ can return a non-str through a C extension.
    return text if isinstance(text, str) else f"<unrepresentable {type(value).__qualname__}>"


def safe_str(value: object) -> str:
    """``str(value)``, or its :func:`safe_repr` when ``__str__`` raises; never raises.

    Args:
        value: Anything, including objects whose ``__str__`` or ``__repr__`` raise.

    Returns:
        Text that may still hold NUL or surrogates (clean it with :class:`Sanitizer`).
    """
    return _safe_str(value)


def safe_repr(value: object) -> str:
    """``repr(value)``, or ``<unrepresentable TYPE>`` when ``__repr__`` fails; never raises.

    Args:
        value: Anything, including objects whose ``__repr__`` raises or returns a non-str.

    Returns:
        Text that may still hold NUL or surrogates (clean it with :class:`Sanitizer`).
    """
    return _safe_repr(value)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(); hex has no such limit
        return hex(value)


ID_MAX_CHARS = 512
"""Longest tenant, user or session id kept, in characters: at 4 bytes each they stay under
PostgreSQL's limit for an index entry (about 2700 bytes), which would fail the whole batch."""


class Sanitizer:
    """Cleans values for PostgreSQL ``text`` and ``jsonb`` columns.

    Args:
        max_field_chars: Longest string kept, in characters; longer strings (and dict keys) keep
            their first ``max_field_chars`` characters followed by ``…[truncated N chars]``.
        max_depth: Levels of nested containers kept in :meth:`json`; at most
            :data:`MAX_DEPTH_LIMIT`. ``0`` replaces even a top-level container.
        strict: Raise :class:`~pgtrail.errors.ValidationError` at the first problem instead of
            repairing it.

    Raises:
        ConfigurationError: A limit is out of range.
    """

    def __init__(
        self, max_field_chars: int = 1_000_000, max_depth: int = 32, strict: bool = False
    ) -> None:
        if max_field_chars < 1:
            raise ConfigurationError(f"max_field_chars must be at least 1, got {max_field_chars}")
        if not 0 <= max_depth <= MAX_DEPTH_LIMIT:
            raise ConfigurationError(
                f"max_depth must be between 0 and {MAX_DEPTH_LIMIT}, got {max_depth}"
            )
        self.max_field_chars = max_field_chars
        self.max_depth = max_depth
        self.strict = strict

    def text(self, value: object, field: str) -> tuple[str | None, list[str]]:
        """Clean a value for a ``text`` column.

        Args:
            value: Anything; ``None`` stays ``None``, bytes are decoded as UTF-8 and other
                non-strings go through ``str()``.
            field: Column or field name used in notes and errors.

        Returns:
            The clean string (or ``None``) and the list of problems found.

        Raises:
            ValidationError: In strict mode, at the first problem.
        """
        if value is None:
            return None, []
        problems: list[str] = []
        if isinstance(value, str):
            text = value if type(value) is str else str.__str__(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            try:
                raw = bytes(value)
            except ValueError:  # a released memoryview
                raw = _safe_repr(value).encode()
            text = raw.decode("utf-8", "replace")
            problems.append(f"expected str, got {type(value).__name__}; decoded as UTF-8")
            if "\ufffd" in text and text.count("\ufffd") != raw.count("\ufffd".encode()):
                problems.append("replaced invalid UTF-8 bytes with U+FFFD")
        else:
            text = _safe_str(value)
            problems.append(f"expected str, got {type(value).__name__}; converted with str()")
        text, repairs = _repair(text, self.max_field_chars)
        problems.extend(repairs)
        if problems and self.strict:
            raise ValidationError(f"field {field!r}: {problems[0]}")
        return text, [f"field {field!r}: {problem}" for problem in problems]

    def json(self, value: object, field: str) -> tuple[Any, list[str]]:
        """Turn a value into a structure both ``json.dumps`` and PostgreSQL ``jsonb`` accept.

        Args:
            value: Anything; see the module documentation for each type's conversion.
            field: Column or field name used in notes and errors.

        Returns:
            A new structure of dicts with str keys, lists, str, int, finite float, bool and
            ``None``, and the list of problems found (at most 100, then a count of the rest).

        Raises:
            ValidationError: In strict mode, at the first problem.
        """
        walk = _Walk(self, field)
        try:
            out = walk.value(value, 0)
        except ValidationError:
            raise
        except Exception as exc:  # never raise in production mode, even on hostile objects
            reason = _repair(_safe_str(exc), 200)[0]
            problem = f"could not be converted ({type(exc).__name__}: {reason})"
            if self.strict:
                raise ValidationError(f"field {field!r}: {problem}") from exc
            walk.path.clear()
            walk.note(f"{problem}; stored null")
            out = None
        if walk.dropped:
            walk.notes.append(
                f"field {field!r}: {_plural(walk.dropped, 'more problem')} not listed"
            )
        return out, walk.notes


class _Walk:
    """State of one :meth:`Sanitizer.json` call: notes, the path, and the containers open."""

    __slots__ = ("active", "dropped", "field", "limit", "max_depth", "notes", "path", "strict")

    def __init__(self, sanitizer: Sanitizer, field: str) -> None:
        self.field = field
        self.limit = sanitizer.max_field_chars
        self.max_depth = sanitizer.max_depth
        self.strict = sanitizer.strict
        self.notes: list[str] = []
        self.dropped = 0
        self.path: list[str | int] = []
        self.active: set[int] = set()

    def note(self, problem: str) -> None:
        where = f"field {self.field!r}"
        if self.path:
            where += " at $" + "".join(
                f"[{step}]" if isinstance(step, int) else f"[{step[:60]!r}]" for step in self.path
            )
        if self.strict:
            raise ValidationError(f"{where}: {problem}")
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(f"{where}: {problem}")
        else:
            self.dropped += 1

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.string(value)
        if value is None or kind is bool:
            return value
        if kind is int:
            return self.integer(value)
        if kind is float:
            return self.number(value)
        if kind is dict:
            return self.mapping(value, value.items(), depth)
        if kind is list or kind is tuple:
            return self.sequence(value, value, depth)
        return self.other(value, depth)

    def string(self, text: str, what: str = "") -> str:
        clean, problems = _repair(text, self.limit)
        for problem in problems:
            self.note(what + problem)
        return clean

    def integer(self, value: int) -> int | str:
        if -_BIG_INT <= value <= _BIG_INT:
            return value
        self.note(f"integer of {value.bit_length()} bits is beyond ±10**300; stored as a string")
        return self.string(_int_text(value))

    def number(self, value: float) -> float | None:
        if math.isfinite(value):
            return value
        self.note(f"{_FLOAT_NAMES[repr(value)]} is not valid JSON; stored null")
        return None

    def enter(self, container: object, depth: int) -> str | None:
        """The placeholder for ``container`` when it closes a cycle or is too deep, else None."""
        if id(container) in self.active:
            self.note(f"reference cycle replaced by {CYCLE!r}")
            return CYCLE
        if depth >= self.max_depth:
            self.note(f"nested deeper than {self.max_depth} levels; replaced by {MAX_DEPTH!r}")
            return MAX_DEPTH
        return None

    def mapping(self, owner: object, items: Iterable[tuple[Any, Any]], depth: int) -> Any:
        placeholder = self.enter(owner, depth)
        if placeholder is not None:
            return placeholder
        self.active.add(id(owner))
        out: dict[str, Any] = {}
        for raw_key, item in items:
            key, problems = self.key(raw_key)
            if key in out:
                n = 2
                while f"{key}~{n}" in out:
                    n += 1
                renamed = f"{key}~{n}"
                problems = [
                    *problems,
                    f"key {key!r} collides with another key; stored as {renamed!r}",
                ]
                key = renamed
            self.path.append(key)
            for problem in problems:
                self.note(problem)
            out[key] = self.value(item, depth + 1)
            self.path.pop()
        self.active.discard(id(owner))
        return out

    def key(self, key: Any) -> tuple[str, Sequence[str]]:
        if isinstance(key, enum.Enum):
            key = key.value
        problems: list[str] = []
        if type(key) is str:
            text = key
        elif key is None:
            text = "null"  # what json.dumps itself does with these key types
        elif isinstance(key, bool):
            text = "true" if key else "false"
        elif isinstance(key, int):
            text = _int_text(int(key))
        elif isinstance(key, float):
            text = float.__repr__(key)
        elif isinstance(key, str):
            text = str.__str__(key)
        else:
            text = _safe_str(key)
            problems.append(f"dict key of type {type(key).__qualname__} converted with str()")
        clean, repairs = _repair(text, self.limit)
        problems.extend(f"dict key: {problem}" for problem in repairs)
        return clean, problems

    def sequence(self, owner: object, items: Iterable[Any], depth: int) -> Any:
        placeholder = self.enter(owner, depth)
        if placeholder is not None:
            return placeholder
        self.active.add(id(owner))
        out: list[Any] = []
        path = self.path
        for index, item in enumerate(items):
            path.append(index)
            out.append(self.value(item, depth + 1))
            path.pop()
        self.active.discard(id(owner))
        return out

    def other(self, value: Any, depth: int) -> Any:
        if isinstance(value, enum.Enum):
            return self.value(value.value, depth)
        if isinstance(value, str):
            return self.string(str.__str__(value))
        if isinstance(value, int):
            return self.integer(int.__int__(value))
        if isinstance(value, float):
            return self.number(float.__float__(value))
        if isinstance(value, Mapping):
            return self.mapping(value, value.items(), depth)
        if isinstance(value, bytes | bytearray | memoryview):
            return self.binary(value)
        if isinstance(value, AbstractSet):
            return self.sequence(value, self.ordered(value), depth)
        if isinstance(value, Sequence) and not isinstance(value, range):
            return self.sequence(value, value, depth)
        if isinstance(value, dt.datetime):
            if value.utcoffset() is None:
                self.note("naive datetime (no time zone); stored as given")
            return value.isoformat()
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, decimal.Decimal):
            if value.is_finite():
                return str(value)
            self.note(f"Decimal {value} is not valid JSON; stored null")
            return None
        if isinstance(value, BaseModel):
            return self.model(value, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.fields(value)
            return self.mapping(value, ((f.name, getattr(value, f.name)) for f in fields), depth)
        return self.unknown(value)

    def ordered(self, items: AbstractSet[Any]) -> list[Any]:
        try:
            return sorted(items)
        except Exception:  # mixed or unorderable items keep iteration order
            return list(items)

    def binary(self, value: bytes | bytearray | memoryview) -> str:
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.note("bytes are not valid UTF-8; stored as 'base64:' + base64")
            return self.string("base64:" + base64.b64encode(raw).decode("ascii"))
        return self.string(text)

    def model(self, value: BaseModel, depth: int) -> Any:
        placeholder = self.enter(value, depth)
        if placeholder is not None:
            return placeholder
        try:
            dumped = value.model_dump(mode="json")
        except Exception:
            return self.unknown(value)
        return self.mapping(value, dumped.items(), depth)

    def unknown(self, value: object) -> str:
        self.note(f"{type(value).__qualname__} has no JSON form; stored its repr()")
        clean, _ = _repair(_safe_repr(value), min(_REPR_CHARS, self.limit))
        return clean
