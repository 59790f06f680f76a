"""Time windows of the pages: whole UTC days for charts, friendly windows for lists."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pgtrail.errors import ReportError
from pgtrail.read import reports
from pgtrail.ui.pages import MAX_WINDOW_DAYS, BadRequestError, Context


@dataclass(frozen=True)
class DayWindow:
    """The last ``days`` UTC days, today included: from a midnight to now.

    Attributes:
        days: how many days.
        since: the first day's midnight, UTC.
        until: now.
    """

    days: int
    since: dt.datetime
    until: dt.datetime

    @property
    def categories(self) -> list[str]:
        """Each day of the window as ``YYYY-MM-DD``, oldest first."""
        first = self.since.date()
        return [(first + dt.timedelta(days=i)).isoformat() for i in range(self.days)]

    def as_dict(self) -> dict[str, object]:
        """The window as JSON-ready values."""
        return {"days": self.days, "since": self.since, "until": self.until, "time_zone": "UTC"}


def day_window(ctx: Context, default: int) -> DayWindow:
    """The window of the ``days`` parameter (1 to :data:`MAX_WINDOW_DAYS`).

    Args:
        ctx: the request's context.
        default: days when the parameter is not given.

    Raises:
        BadRequestError: ``days`` is not a whole number in range.
    """
    days = ctx.int_param("days", default, 1, MAX_WINDOW_DAYS)
    midnight = ctx.now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return DayWindow(days, midnight - dt.timedelta(days=days - 1), ctx.now)


def moment(ctx: Context, name: str, default: str) -> dt.datetime:
    """A moment parameter: ``7d``, ``12h``, ``now``, ``today`` or an ISO date (UTC).

    Args:
        ctx: the request's context.
        name: the parameter's name.
        default: its value when not given.

    Raises:
        BadRequestError: the value is not a moment.
    """
    raw = ctx.param(name, default) or default
    param = reports.Param(name, "timestamptz", None, "", 0)
    try:
        value = reports.parse_value(param, raw, now=ctx.now)
    except ReportError as exc:
        raise BadRequestError(str(exc)) from None
    assert isinstance(value, dt.datetime)
    return value
