"""The Jinja2 environment of the UI: autoescaped templates shipped in the package.

Autoescaping is on for every template, so each value from the database (prompt bodies,
payloads, agent names, user ids) is HTML-escaped where it is written; no template marks a
database value safe. Links are built with :func:`segment` and :func:`query`, so an id that
holds ``/``, ``?`` or quotes stays one path segment or one parameter value.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from pgtrail.read.render import jsonable


def segment(value: object) -> str:
    """``value`` as one percent-encoded path segment.

    Args:
        value: an id, a name.
    """
    return quote(str(value), safe="")


def query(values: Mapping[str, object], **changes: object) -> str:
    """A query string of ``values`` with ``changes`` applied; None or empty values dropped.

    Args:
        values: the current parameters.
        changes: parameters to set (None removes one).
    """
    merged = {**values, **changes}
    pairs = [(k, str(v)) for k, v in merged.items() if v is not None and str(v) != ""]
    return "?" + urlencode(pairs) if pairs else ""


def usd(value: object) -> str:
    """A cost in USD, with more places below a cent; an em dash when unknown.

    Args:
        value: the cost.
    """
    if value is None:
        return "—"
    number = Decimal(str(value))
    if number == 0:
        return "$0"
    if abs(number) < Decimal("0.01"):
        return f"${number:.6f}".rstrip("0")
    return f"${number:,.4f}" if abs(number) < 1 else f"${number:,.2f}"


def ms(value: object) -> str:
    """A duration in ms (seconds past ten thousand); an em dash when unknown.

    Args:
        value: the duration in milliseconds.
    """
    if value is None:
        return "—"
    number = float(str(value))
    if number >= 10_000:
        return f"{number / 1000:,.1f} s"
    return f"{number:,.0f} ms"


def when(value: object) -> str:
    """A moment in UTC, to the second (dates as they are); an em dash when unknown.

    Args:
        value: a datetime or date.
    """
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def pretty(value: object) -> str:
    """A JSON value as indented text, for ``<pre>``.

    Args:
        value: a dict, list or scalar from a jsonb column.
    """
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False, default=str)


def cell(value: Any) -> str:
    """A report cell as text: JSON for containers, UTC for moments, empty for NULL.

    Args:
        value: the value.
    """
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(jsonable(value), ensure_ascii=False, default=str)
    if isinstance(value, dt.datetime):
        return when(value)
    return str(value)


@cache
def environment() -> jinja2.Environment:
    """The environment, built once: package templates, autoescape, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pgtrail.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(segment=segment, usd=usd, ms=ms, when=when, pretty=pretty, cell=cell)
    env.globals.update(query=query)
    return env


def render(template: str, values: Mapping[str, Any]) -> str:
    """The HTML of ``template`` with ``values``.

    Args:
        template: a file under ``ui/templates``.
        values: what it shows.
    """
    return environment().get_template(template).render(values)
