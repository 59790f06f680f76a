"""What a page handler returns, what it is given, and the errors it may answer with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgtrail.errors import PgtrailError
from pgtrail.read.reports import Catalog
from pgtrail.ui.http import Request
from pgtrail.ui.reading import Reader

MAX_WINDOW_DAYS = 366
"""The widest window a page reads, in days."""


@dataclass(frozen=True)
class Table:
    """The columns and rows of a table page, for its CSV twin.

    Attributes:
        columns: the column names.
        rows: the rows.
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Page:
    """A page: its template and values, and the data of its JSON twin.

    Attributes:
        template: the template file under ``ui/templates``.
        title: the page title.
        values: what the template shows.
        data: the JSON twin (values ready for :func:`pgtrail.read.render.json_text`).
        csv: for a table page, its table, so it can be downloaded as CSV.
    """

    template: str
    title: str
    values: Mapping[str, Any]
    data: Any
    csv: Table | None = None


@dataclass(frozen=True)
class Context:
    """What every page handler is given.

    Attributes:
        reader: the sandboxed, tenant-bound reader.
        catalog: loads the saved reports (shipped and the user's folders).
        request: the request.
        now: the moment the request is answered, in UTC.
    """

    reader: Reader
    catalog: Callable[[], Catalog]
    request: Request
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def param(self, name: str, default: str | None = None) -> str | None:
        """A query parameter, stripped; ``default`` when absent or blank.

        Args:
            name: the parameter's name.
            default: the value when it is not given.
        """
        value = self.request.query.get(name, "").strip()
        return value or default

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """A whole-number query parameter within ``[low, high]``.

        Args:
            name: the parameter's name.
            default: the value when it is not given.
            low: the smallest value accepted.
            high: the largest value accepted.

        Raises:
            BadRequestError: the value is not a whole number in the range.
        """
        raw = self.param(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequestError(f"{name} must be a whole number, not {raw!r}") from None
        if not low <= value <= high:
            raise BadRequestError(f"{name} must be between {low} and {high}, not {value}")
        return value


class BadRequestError(PgtrailError):
    """A query parameter or path cannot be used; answered with 400 and the reason."""


Handler = Callable[[Context, tuple[str, ...]], Page]
"""A page handler: the context and the path's variable segments."""
