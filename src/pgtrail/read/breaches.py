"""What every alert rule shares: its base model, its durations, and the breach it reports.

A :class:`Breach` is one rule broken for one subject (a tenant, a user, a model, a running
execution...), with the figures a person reads and the values a machine reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pgtrail.durations import parse_duration


def parse_window(value: Any) -> dt.timedelta:
    """A rule's duration: a ``timedelta``, or text such as ``10m``, ``1h``, ``30d``.

    Args:
        value: What the rules file holds.

    Raises:
        ValueError: not a duration, or not longer than zero.
    """
    if isinstance(value, dt.timedelta):
        window = value
    elif isinstance(value, str):
        window = parse_duration(value)
    else:
        raise ValueError("give a duration such as '10m', '1h' or '1d'")
    if window <= dt.timedelta(0):
        raise ValueError("the window must be longer than zero")
    return window


class RuleBase(BaseModel):
    """What every rule has: a name (unique in a run), and durations written as text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=200)

    @field_validator("window", "max_duration", mode="before", check_fields=False)
    @classmethod
    def _parse_window(cls, value: Any) -> dt.timedelta | None:
        return None if value is None else parse_window(value)


@dataclass(frozen=True)
class Breach:
    """One rule broken for one subject, with the figures that break it."""

    rule: str
    kind: str
    subject: dict[str, str]
    observed: float
    threshold: float
    unit: str
    window: str
    window_start: dt.datetime
    window_end: dt.datetime
    detail: dict[str, Any] = field(default_factory=dict)
    figures: str = ""
    """The figures as a person reads them, for the kinds that write their own."""

    @property
    def message(self) -> str:
        """One line for a person."""
        who = " ".join(f"{k}={v}" for k, v in self.subject.items()) or "all calls"
        if self.figures:
            figures = self.figures
        elif self.kind == "latency_p95":
            figures = (
                f"p95 latency {self.observed:.3f} s > {self.threshold:g} s "
                f"over the last {self.window} ({self.detail['calls']} calls)"
            )
        elif self.kind == "error_rate":
            figures = (
                f"error rate {self.observed:.2f}% > {self.threshold:g}% over the last "
                f"{self.window} ({self.detail['errors']} of {self.detail['calls']} calls failed)"
            )
        elif self.kind == "daily_cost":
            figures = (
                f"cost ${self.observed:.4f} > budget ${self.threshold:.4f} {self.window} "
                f"({self.detail['calls']} calls)"
            )
        else:
            figures = f"no execution in the last {self.window}"
            if self.detail.get("require_success"):
                figures = f"no successful execution in the last {self.window}"
        return f"{self.rule} [{self.kind}] {who}: {figures}"

    def as_json(self) -> dict[str, Any]:
        """The breach as plain JSON values."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "subject": self.subject,
            "observed": self.observed,
            "threshold": self.threshold,
            "unit": self.unit,
            "window": self.window,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "detail": self.detail,
            "message": self.message,
        }


def describe_window(window: dt.timedelta) -> str:
    """``0:10:00`` -> ``10m``; ``1 day, 1:00:00`` -> ``25h``."""
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
