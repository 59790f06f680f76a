"""PostgreSQL ``COPY`` text format: a prepared row is one line of tab-separated fields.

The writer prepares every row straight into this form, once: the fast path, the idempotent
path, the spool and its replay all carry the same lines, so no row is formatted twice and a
batch is sent with one ``write`` per table. Fields are escaped as ``COPY ... FROM STDIN``
(text format) reads them: backslash, tab, newline and carriage return become two-character
escapes, and ``\\N`` is null.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

NULL = "\\N"
"""A null field."""

INT4_MAX = 2_147_483_647
"""The largest value of an ``integer`` column (token counts, durations in milliseconds)."""

_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def plain(value: str) -> bool:
    """True when ``value`` needs no cleaning nor escaping (printable ASCII, no backslash)."""
    return value.isascii() and value.isprintable() and "\\" not in value


def escape(value: str) -> str:
    """One clean string as a ``COPY`` text field."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if not value.isprintable():
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def escape_json(text: str) -> str:
    """Compact JSON text as a ``COPY`` field: it holds no raw control character, only ``\\``."""
    return text.replace("\\", "\\\\") if "\\" in text else text


def timestamp(value: dt.datetime) -> str:
    """An aware datetime as UTC text (so the first ten characters are its UTC day)."""
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.isoformat(" ")


def field(value: Any) -> str:
    """Any stored value as a field: the slow, general form (spool files of older versions)."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float | decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, dt.datetime):
        return timestamp(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return escape_json(orjson.dumps(value).decode())


def line(values: Sequence[Any]) -> str:
    """A row of values as one line (without its newline)."""
    return "\t".join(field(value) for value in values)


def fields(text: str) -> list[str | None]:
    """A line back into its fields, unescaped; ``None`` for null."""
    return [None if raw == NULL else unescape(raw) for raw in text.split("\t")]


def unescape(raw: str) -> str:
    """One field's text as it was before :func:`escape`."""
    if "\\" not in raw:
        return raw
    return _ESCAPED.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), raw)


def created_day(text: str) -> str:
    """The UTC day (``YYYY-MM-DD``) of a log row's ``created_at``, its third field."""
    created = text.split("\t", 3)[2]
    if created.endswith("+00:00"):  # as the writer formats it
        return created[:10]
    at = dt.datetime.fromisoformat(unescape(created))
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date().isoformat()


def event_id(text: str) -> uuid.UUID | None:
    """The ``event_id`` of a log row (its first field), if it is one."""
    try:
        return uuid.UUID(text.split("\t", 1)[0])
    except ValueError:
        return None
