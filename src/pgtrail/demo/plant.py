"""Six production problems of long-running agent systems, planted on purpose.

Each one is tied to the saved report or the ``pgtrail check`` rule that finds it:

- ``decision-drift``: the coaching agent's ``intensity_level`` creeps towards ``high`` and
  ``intense`` week over week;
- ``compression-audit``: late in the window, a bug in the selling agent's compressor
  compresses significant moments aggressively;
- ``cost-anomalies``: one user's requests send ``301 Selling process`` into a retry loop on a
  large model, many calls per execution;
- ``prompt-regressions``: coaching prompt v7, rolled out mid-window, is ~60% slower than v6;
- ``score-trends`` and the ``score_avg`` rule: the model judge finds coaching v7 much less
  helpful than v6 (a mean of 0.50 against 0.82);
- the ``runaway`` rule: a research agent still running three hours after it started, and
  past $8 of model calls, when the tour checks (it needs Redis: see
  :mod:`pgtrail.demo.runaway`).

With nothing planted the same system runs with steady shares, correct compression, costs
within their baseline, a v7 exactly as fast and as helpful as v6, and no runaway.
"""

from __future__ import annotations

from dataclasses import dataclass

INTENSITY_LEVELS: tuple[str, ...] = ("low", "balanced", "high", "intense")
BASE_INTENSITY: tuple[float, ...] = (0.15, 0.55, 0.25, 0.05)
DRIFTED_INTENSITY: tuple[float, ...] = (0.04, 0.26, 0.44, 0.26)

COMPRESSION_BUG_AGENT = "selling"
COMPRESSION_BUG_FROM = 0.55
"""Share of the window after which the compression bug is live."""

EXPENSIVE_USER_NUMBER = 7
"""The user whose requests hit the expensive path (user ids are small numbers)."""
EXPENSIVE_LOOP_CALLS = (6, 10)
"""How many large-model calls one looping ``301 Selling process`` makes (inclusive range)."""

PROMPT_CANARY_FROM = 0.45
"""Share of the window after which coaching prompt v7 serves a canary share of requests."""
PROMPT_ROLLOUT_FROM = 0.55
"""Share of the window after which v7 serves every coaching request."""
PROMPT_CANARY_SHARE = 0.2
PROMPT_REGRESSION = 1.6
"""Latency factor of the regressed prompt version."""

JUDGED_SHARE = 0.5
"""Share of answers the model judge scores for ``helpfulness``."""
HELPFULNESS = 0.82
"""Mean helpfulness of every answer, but the planted one's."""
HELPFULNESS_DROPPED = 0.5
"""Mean helpfulness of coaching prompt v7's answers when the drop is planted."""
HELPFULNESS_SPREAD = 0.3
"""Width of the (uniform) spread of helpfulness around its mean."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Which problems are planted."""

    drift: bool = True
    compression_bug: bool = True
    expensive_user: bool = True
    prompt_regression: bool = True
    helpfulness_drop: bool = True
    runaway: bool = True

    @classmethod
    def nothing(cls) -> Plan:
        """A healthy system."""
        return cls(False, False, False, False, False, False)

    @property
    def any(self) -> bool:
        """True when at least one problem is planted."""
        return (
            self.drift
            or self.compression_bug
            or self.expensive_user
            or self.prompt_regression
            or self.helpfulness_drop
            or self.runaway
        )

    def intensity_weights(self, frac: float) -> tuple[float, ...]:
        """Target shares of each intensity level at ``frac`` (0..1) of the window."""
        if not self.drift:
            return BASE_INTENSITY
        return tuple(
            b + (d - b) * frac for b, d in zip(BASE_INTENSITY, DRIFTED_INTENSITY, strict=True)
        )

    def compression(
        self, agent_type: str, significant: bool, frac: float, u: float
    ) -> tuple[float, str]:
        """Score and priority the compressor gives a user input (``u`` uniform in [0, 1))."""
        if significant:
            if (
                self.compression_bug
                and agent_type == COMPRESSION_BUG_AGENT
                and frac >= COMPRESSION_BUG_FROM
            ):
                return round(0.55 + 0.4 * u, 2), "aggressive"
            return round(0.05 + 0.15 * u, 2), "preserve_full"
        score = round(0.3 + 0.65 * u, 2)
        if score < 0.45:
            return score, "light"
        if score < 0.7:
            return score, "standard"
        return score, "aggressive"

    def is_expensive_user(self, user_number: int) -> bool:
        """True for the user whose selling requests loop on a large model."""
        return self.expensive_user and user_number == EXPENSIVE_USER_NUMBER

    def coaching_latency_factor(self, version: str) -> float:
        """How much slower than v6 a coaching prompt version answers."""
        return PROMPT_REGRESSION if self.prompt_regression and version == "v7" else 1.0

    def helpfulness(self, agent_type: str, version: str, u: float) -> float:
        """The judge's helpfulness score of one answer (``u`` uniform in [0, 1))."""
        mean = HELPFULNESS
        if self.helpfulness_drop and agent_type == "coaching" and version == "v7":
            mean = HELPFULNESS_DROPPED
        return round(min(1.0, max(0.0, mean + (u - 0.5) * HELPFULNESS_SPREAD)), 2)


def coaching_prompt_version(frac: float, u: float) -> str:
    """The coaching prompt serving a request at ``frac`` of the window (canary, then all)."""
    if frac >= PROMPT_ROLLOUT_FROM:
        return "v7"
    if frac >= PROMPT_CANARY_FROM and u < PROMPT_CANARY_SHARE:
        return "v7"
    return "v6"
