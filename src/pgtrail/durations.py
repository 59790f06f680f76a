"""Friendly durations: ``30s``, ``15m``, ``12h``, ``7d``, ``2w``."""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    """``7d`` -> 7 days. Raises ValueError naming the accepted forms."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and s, m, h, d or w (e.g. 7d)")
    return dt.timedelta(seconds=float(match[1]) * _UNIT_S[match[2].lower()])
