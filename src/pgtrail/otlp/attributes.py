"""Reading a span's values: typed conversions, and attribute maps that remember what was used.

Each conversion returns None for a value it cannot read (a wrong type, a negative or
oversized number, malformed JSON), so that the mapping ignores the value and keeps it among
the span's unmapped attributes. :class:`Attrs` wraps one attribute map and records which
keys the mapping read, so the rest can be kept as given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pgtrail.otlp.spans import OtlpSpan, SpanEvent
from pgtrail.writer.copytext import INT4_MAX

T = TypeVar("T")

__all__ = [
    "NAME_CHARS",
    "Attrs",
    "as_amount",
    "as_count",
    "as_mapping",
    "as_name",
    "as_number",
    "as_sequence",
    "as_text",
    "nanos_to_datetime",
    "present",
    "prune",
    "span_duration_ms",
    "span_events",
]

NAME_CHARS = 200
"""Longest process, agent, tool, model or provider name kept."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST_NANOS = 946_684_800 * 10**9  # 2000-01-01
_LATEST_NANOS = 4_102_444_800 * 10**9  # 2100-01-01
# Traceloop serialises every entity input and output as JSON, strings included.
_ALWAYS_JSON = frozenset({"traceloop.entity.input", "traceloop.entity.output"})


def as_text(value: Any, limit: int | None = None) -> str | None:
    """Text without NUL characters or surrounding blanks; numbers are written out.

    Args:
        value: An attribute value of any type.
        limit: The most characters kept (None: all).

    Returns:
        The text, or None for an empty text, a bool, or a value that is not text or a number.
    """
    if type(value) is str:  # the common case, first
        text: str = value.strip()
        if "\x00" in text:
            text = text.replace("\x00", "").strip()
        if not text:
            return None
        return text[:limit] if limit else text
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        value = str(value)
    return as_text(value, limit) if type(value) is str else None


def as_name(value: Any) -> str | None:
    """A name (process, agent, tool, model, provider): text of at most :data:`NAME_CHARS`.

    Args:
        value: An attribute value of any type.
    """
    return as_text(value, NAME_CHARS)


def as_count(value: Any) -> int | None:
    """A token count: a non-negative integer that fits PostgreSQL's integer.

    Args:
        value: An integer, an integral float, or decimal digits as text.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 10:
            return None
        value = int(stripped)
    if not isinstance(value, int) or not 0 <= value <= INT4_MAX:
        return None
    return value


def as_amount(value: Any) -> float | None:
    """A cost or a duration: a finite, non-negative number.

    Args:
        value: A number, or a number written as text.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        if abs(value) > 10**15:
            return None
        value = float(value)
    if not isinstance(value, float) or not math.isfinite(value) or value < 0:
        return None
    return value


def as_number(value: Any) -> float | None:
    """A finite number of either sign (an evaluation score).

    Args:
        value: An attribute value of any type; text is not read.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _structured(value: Any) -> Any:
    """A JSON object or array sent as text, parsed (instrumentations often do that)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") or stripped == "null":
            try:
                return json.loads(stripped)
            except ValueError:
                return value
    return value


def present(value: Any) -> Any:
    """A value worth keeping, JSON text parsed; None for None, JSON ``null`` and ``""``.

    Args:
        value: An attribute value of any type.
    """
    value = _structured(value)
    return None if value is None or value == "" else value


def _present_json(value: Any) -> Any:
    """Like :func:`present`, for attributes that always hold JSON (a string is quoted)."""
    if isinstance(value, str) and value.strip()[:1] == '"':
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return present(value)


def as_mapping(value: Any) -> dict[str, Any] | None:
    """A JSON object, given as one or as its text.

    Args:
        value: An attribute value of any type.
    """
    value = _structured(value)
    return value if isinstance(value, dict) else None


def as_sequence(value: Any) -> list[Any] | None:
    """A JSON array, given as a list, a tuple or its text.

    Args:
        value: An attribute value of any type.
    """
    value = _structured(value)
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, list) else None


def nanos_to_datetime(nanos: Any) -> dt.datetime | None:
    """A span clock reading as an aware datetime, to the microsecond.

    Args:
        nanos: Nanoseconds since 1970.

    Returns:
        The time, or None for one no real span can have (unset, 1970, the year 3000).
    """
    if isinstance(nanos, bool) or not isinstance(nanos, int):
        return None
    if not _EARLIEST_NANOS <= nanos < _LATEST_NANOS:
        return None
    # Integer arithmetic: a float of nanoseconds since 1970 loses the microseconds.
    return _EPOCH + dt.timedelta(microseconds=nanos // 1000)


def span_duration_ms(span: OtlpSpan) -> int | None:
    """How long the span took, in whole milliseconds; None unless both clocks are readable.

    Args:
        span: A decoded span.
    """
    start, end = span.start_unix_nano, span.end_unix_nano
    if nanos_to_datetime(start) is None or nanos_to_datetime(end) is None:
        return None
    millis = round((end - start) / 1e6)
    return millis if 0 <= millis <= INT4_MAX else None


def span_events(span: OtlpSpan) -> tuple[SpanEvent, ...]:
    """The span's events, leaving out anything that is not a :class:`SpanEvent`.

    Args:
        span: A decoded span.
    """
    events = span.events if isinstance(span.events, tuple | list) else ()
    return tuple(e for e in events if isinstance(e, SpanEvent))


def prune(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that hold something: not None, not an empty list or object.

    Args:
        values: Field names and values.
    """
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


class Attrs:
    """A span's attributes, remembering which ones the mapping used.

    Args:
        raw: The attribute map; anything that is not a mapping reads as empty.
    """

    def __init__(self, raw: Any) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.used: set[str] = set()

    def first(self, keys: Iterable[str], convert: Callable[[Any], T | None]) -> T | None:
        """The first of ``keys`` whose value ``convert`` can read; that key counts as used.

        Args:
            keys: Attribute names, in order of preference.
            convert: Reads one value, returning None for what it cannot read.
        """
        for key in keys:
            if key in self.raw:
                value = convert(self.raw[key])
                if value is not None:
                    self.used.add(key)
                    return value
        return None

    def text(self, *keys: str) -> str | None:
        """The first readable text among ``keys`` (see :func:`as_text`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_text)

    def name(self, *keys: str) -> str | None:
        """The first readable name among ``keys`` (see :func:`as_name`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_name)

    def count(self, *keys: str) -> int | None:
        """The first readable token count among ``keys`` (see :func:`as_count`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_count)

    def amount(self, *keys: str) -> float | None:
        """The first readable cost or duration among ``keys`` (see :func:`as_amount`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_amount)

    def value(self, *keys: str) -> Any:
        """The first value among ``keys`` worth keeping (see :func:`present`).

        Args:
            keys: Attribute names, in order of preference.
        """
        for key in keys:
            if key in self.raw:
                convert = _present_json if key in _ALWAYS_JSON else present
                found = convert(self.raw[key])
                if found is not None:
                    self.used.add(key)
                    return found
        return None

    def mapping(self, *keys: str) -> dict[str, Any] | None:
        """The first JSON object among ``keys`` (see :func:`as_mapping`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_mapping)

    def sequence(self, *keys: str) -> list[Any] | None:
        """The first JSON array among ``keys`` (see :func:`as_sequence`).

        Args:
            keys: Attribute names, in order of preference.
        """
        return self.first(keys, as_sequence)

    def flag(self, key: str) -> bool | None:
        """The attribute ``key`` if it is a bool.

        Args:
            key: Attribute name.
        """
        return self.first((key,), lambda v: v if isinstance(v, bool) else None)

    def drop(self, *keys: str) -> None:
        """Marks attributes as mapped (or as noise) without reading them.

        Args:
            keys: Attribute names; those the span does not have are ignored.
        """
        self.used.update(k for k in keys if k in self.raw)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Attributes under ``prefix``, keyed by the rest of their name.

        Args:
            prefix: The start of the attribute names, dot included.
        """
        found = {k[len(prefix) :]: v for k, v in self.raw.items() if k.startswith(prefix)}
        self.used.update(prefix + k for k in found)
        return {k: v for k, v in found.items() if k}

    def unflatten(self, prefix: str) -> list[Any] | None:
        """Rebuilds a list flattened into ``prefix.N.path`` attributes.

        Args:
            prefix: The start of the flattened names, dot included.

        Returns:
            The list, or None when no attribute is under ``prefix``. A path flattened
            twice, or as both a value and an object, keeps its first reading; the other
            attribute stays unused.
        """
        tree: dict[str, Any] = {}
        taken: list[str] = []
        for key, value in self.raw.items():
            if not key.startswith(prefix):
                continue
            parts = key[len(prefix) :].split(".")
            if not _is_index(parts[0]) or not all(parts):
                continue
            node: Any = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict) or parts[-1] in node:
                continue  # the same path flattened twice, or as a value and an object
            node[parts[-1]] = value
            taken.append(key)
        if not taken:
            return None
        self.used.update(taken)
        rebuilt = _listify(tree)
        return rebuilt if isinstance(rebuilt, list) else None

    def rest(self) -> dict[str, Any]:
        """The attributes the mapping did not use, as given."""
        return {k: v for k, v in self.raw.items() if k not in self.used}


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit() and len(part) < 10


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(_is_index(k) for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}
