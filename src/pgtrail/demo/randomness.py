"""Randomness with guarantees: a simulated clock, stable per-day draws, reproducible ids.

The saved reports compare distributions (week against week, prompt version against prompt
version, one execution against its workflow's median). Plain independent draws would make
small simulations trip those comparisons by chance. The samplers here keep each simulated
day's draws spread evenly over their distribution, so any set of whole days has the intended
shape whatever the seed, while the order in which users meet the values stays random.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import uuid
from collections.abc import Sequence

# Irrational steps for the additive recurrences (Kronecker sequences), one per stream so two
# streams consumed in lockstep are not correlated.
_STEPS: tuple[float, ...] = tuple(
    math.sqrt(p) % 1.0 for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
)


class SimClock:
    """The simulated time every timestamp comes from; the simulation moves it."""

    __slots__ = ("now",)

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock needs an aware datetime")
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, ms: float) -> None:
        """Moves time forward by ``ms`` milliseconds."""
        self.now += dt.timedelta(milliseconds=ms)

    def set(self, at: dt.datetime) -> None:
        """Jumps to ``at`` (the next interaction may belong to another user and day)."""
        self.now = at


class Strata:
    """Uniform draws in [0, 1) that cover the interval evenly within each (stream, day)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._state: dict[tuple[str, int], list[float]] = {}
        self._streams: dict[str, float] = {}
        self._step_cycle = itertools.cycle(_STEPS)

    def u(self, stream: str, day: int) -> float:
        """The next draw of ``stream`` on ``day``."""
        state = self._state.get((stream, day))
        if state is None:
            step = self._streams.get(stream)
            if step is None:
                step = self._streams[stream] = next(self._step_cycle)
            state = self._state[(stream, day)] = [self._rng.random(), step]
        value = state[0]
        state[0] = (value + state[1]) % 1.0
        return value

    def between(self, stream: str, day: int, low: float, high: float) -> float:
        """A draw spread evenly over [low, high)."""
        return low + (high - low) * self.u(stream, day)

    def chance(self, stream: str, day: int, p: float) -> bool:
        """True for a share ``p`` of each day's draws, almost exactly."""
        return self.u(stream, day) < p


class Balanced:
    """Categorical draws whose shares in each period track the target weights within one draw."""

    def __init__(self, rng: random.Random, categories: Sequence[str]) -> None:
        self._rng = rng
        self.categories = tuple(categories)
        self._acc: dict[int, list[float]] = {}

    def pick(self, period: int, weights: Sequence[float]) -> str:
        """The next category in ``period``; ``weights`` sum to 1 and may change over time."""
        acc = self._acc.get(period)
        if acc is None:
            acc = self._acc[period] = [self._rng.random() * w for w in weights]
        best = 0
        best_value = -math.inf
        for i, w in enumerate(weights):
            acc[i] += w
            if acc[i] > best_value:
                best, best_value = i, acc[i]
        acc[best] -= 1.0
        return self.categories[best]


def cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    """Cumulative weights for ``random.choices(cum_weights=...)``."""
    return tuple(itertools.accumulate(weights))


def uuid7_at(at: dt.datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 for the simulated time ``at`` whose random bits come from ``rng``."""
    ms = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    rand = rng.getrandbits(74)
    value = ms << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)
