"""The rules about users, running executions and scores, and their evaluation.

- ``user_cost``: each user's model spend over a rolling window is above their budget
  (``budget_usd`` for everyone, ``budgets`` per user id as stored);
- ``runaway``: an execution still open (in Redis) is older than ``max_duration`` or has
  spent more than ``max_cost_usd`` in the model calls it has written so far;
- ``score_avg``: the mean of a numeric score over a window is under ``min``, overall, per
  agent or per prompt version, where at least ``min_count`` scores were given.

Each evaluator reads inside the read-only transaction :func:`pgtrail.read.alerts.evaluate`
opened; the runaway rule also reads the open executions from Redis.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import psycopg
from pydantic import Field, model_validator

from pgtrail.config import Settings
from pgtrail.errors import ConfigurationError
from pgtrail.read.breaches import Breach, RuleBase, describe_window
from pgtrail.shared_state import OpenExecution, open_executions
from pgtrail.statements import STATEMENTS

_MISSING_COST_DAYS = 2
"""How far before the oldest open execution its model calls are looked for (clock skew)."""


class UserCostRule(RuleBase):
    """A user's model spend over the last ``window`` above their budget in USD."""

    kind: Literal["user_cost"]
    window: dt.timedelta
    budget_usd: float | None = Field(default=None, ge=0)
    budgets: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_a_budget(self) -> UserCostRule:
        if not self.budgets and self.budget_usd is None:
            raise ValueError("give budget_usd, budgets per user, or both")
        return self

    def budget_of(self, user: str) -> float | None:
        """The user's own budget, else the default, else None (not checked)."""
        return self.budgets.get(user, self.budget_usd)


class RunawayRule(RuleBase):
    """An execution still running past ``max_duration`` or above ``max_cost_usd``."""

    kind: Literal["runaway"]
    max_duration: dt.timedelta | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    workflow: str | None = None

    @model_validator(mode="after")
    def _has_a_limit(self) -> RunawayRule:
        if self.max_duration is None and self.max_cost_usd is None:
            raise ValueError("give max_duration, max_cost_usd, or both")
        return self


class ScoreAvgRule(RuleBase):
    """The mean of score ``score`` over the last ``window`` under ``min``."""

    kind: Literal["score_avg"]
    score: str = Field(min_length=1, max_length=200)
    min: float
    window: dt.timedelta
    by: Literal["agent", "prompt_version"] | None = None
    min_count: int = Field(default=10, ge=1)
    source: str | None = None


@dataclass(frozen=True)
class Running:
    """An open execution with what it has cost so far."""

    execution: OpenExecution
    age: dt.timedelta
    cost: Decimal
    calls: int


def user_cost(conn: psycopg.Connection[Any], rule: UserCostRule, now: dt.datetime) -> list[Breach]:
    """The users over budget.

    Args:
        conn: A connection inside the evaluation's transaction.
        rule: The rule.
        now: The end of the window.
    """
    since = now - rule.window
    budgets = [b for b in (rule.budget_usd, *rule.budgets.values()) if b is not None]
    rows = conn.execute(
        STATEMENTS["alerts_user_cost"],
        {"since": since, "until": now, "floor": Decimal(repr(min(budgets)))},
    ).fetchall()
    window = describe_window(rule.window)
    breaches = []
    for tenant, user, cost, calls in rows:
        budget = rule.budget_of(user)
        if budget is None or Decimal(cost) <= Decimal(repr(budget)):
            continue
        breaches.append(
            Breach(
                rule.name,
                rule.kind,
                {"tenant": tenant, "user": user},
                float(cost),
                budget,
                "USD",
                window,
                since,
                now,
                {"calls": calls, "cost_usd": str(cost)},
                f"cost ${float(cost):.4f} > budget ${budget:.4f} over the last {window} "
                f"({calls} calls)",
            )
        )
    return breaches


def no_redis(rule: RunawayRule) -> str:
    """What to do when a runaway rule meets a configuration without Redis."""
    return (
        f"rule {rule.name!r} (runaway) reads the open executions from Redis: set "
        "PGTRAIL_REDIS_URL (or --redis-url) to the Redis the application uses"
    )


def _running(
    conn: psycopg.Connection[Any], settings: Settings, rule: RunawayRule, now: dt.datetime
) -> list[Running]:
    if settings.redis_url is None:
        raise ConfigurationError(no_redis(rule))
    found = [
        e
        for e in open_executions(settings.redis_url, settings.redis_prefix)
        if rule.workflow is None or e.workflow == rule.workflow
    ]
    if not found:
        return []
    ids = [e.execution_id for e in found]
    since = min(e.started_at for e in found) - dt.timedelta(days=_MISSING_COST_DAYS)
    window = {"ids": ids, "since": since}
    finished: set[uuid.UUID] = {
        row[0] for row in conn.execute(STATEMENTS["alerts_finished_executions"], window)
    }
    costs = {
        row[0]: (Decimal(row[1]), int(row[2]))
        for row in conn.execute(STATEMENTS["alerts_execution_cost"], window)
    }
    return [
        Running(e, now - e.started_at, *costs.get(e.execution_id, (Decimal(0), 0)))
        for e in found
        if e.execution_id not in finished and e.started_at <= now
    ]


def runaway(
    conn: psycopg.Connection[Any], settings: Settings, rule: RunawayRule, now: dt.datetime
) -> list[Breach]:
    """The open executions running too long or spending too much, oldest first.

    Args:
        conn: A connection inside the evaluation's transaction.
        settings: Where Redis is (``redis_url``, ``redis_prefix``).
        rule: The rule.
        now: The time to measure ages at.

    Raises:
        ConfigurationError: no Redis is configured.
        PgtrailError: Redis could not be read.
    """
    breaches = []
    for run in _running(conn, settings, rule, now):
        reasons = []
        limit = rule.max_duration
        if limit is not None and run.age > limit:
            reasons.append(f"running for {_age(run.age)} > {describe_window(limit)}")
        budget = rule.max_cost_usd
        over_cost = budget is not None and run.cost > Decimal(repr(budget))
        if budget is not None and over_cost:
            reasons.append(f"cost so far ${run.cost:.4f} > ${budget:.4f}")
        if not reasons:
            continue
        ex = run.execution
        if budget is not None and over_cost:
            observed, threshold, unit = float(run.cost), budget, "USD"
        else:
            observed = run.age.total_seconds()
            threshold, unit = (limit or dt.timedelta()).total_seconds(), "s"
        breaches.append(
            Breach(
                rule.name,
                rule.kind,
                {"execution": str(ex.execution_id)},
                observed,
                threshold,
                unit,
                "while running",
                ex.started_at,
                now,
                {
                    "execution_id": str(ex.execution_id),
                    "workflow": ex.workflow,
                    "tenant": ex.tenant_id,
                    "user": ex.user_id,
                    "session": ex.session_id,
                    "started_at": ex.started_at.isoformat(),
                    "last_activity": ex.last_activity.isoformat(),
                    "age_s": round(run.age.total_seconds()),
                    "cost_usd": str(run.cost),
                    "calls": run.calls,
                },
                f"{ex.workflow} of user {ex.user_id or '(none)'} (tenant {ex.tenant_id}) still "
                f"open: {'; '.join(reasons)} ({run.calls} model calls so far)",
            )
        )
    return sorted(breaches, key=lambda b: b.window_start)


def _age(age: dt.timedelta) -> str:
    """``2h05m``, ``7m12s``: an age to the second, as a person reads it."""
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def score_avg(conn: psycopg.Connection[Any], rule: ScoreAvgRule, now: dt.datetime) -> list[Breach]:
    """The subjects whose mean score is under the minimum.

    Args:
        conn: A connection inside the evaluation's transaction.
        rule: The rule.
        now: The end of the window.
    """
    since = now - rule.window
    rows = conn.execute(
        STATEMENTS["alerts_score_avg"],
        {
            "since": since,
            "until": now,
            "score": rule.score,
            "source": rule.source,
            "by": rule.by,
            "min_count": rule.min_count,
        },
    ).fetchall()
    window = describe_window(rule.window)
    return [
        Breach(
            rule.name,
            rule.kind,
            {"score": rule.score}
            | ({} if rule.by is None else {rule.by: "(none)" if who is None else str(who)}),
            round(float(mean), 6),
            rule.min,
            rule.score,
            window,
            since,
            now,
            {"score": rule.score, "scores": count, "min_count": rule.min_count},
            f"mean {rule.score} {float(mean):.3f} < {rule.min:g} over the last {window} "
            f"({count} scores)",
        )
        for who, count, mean in rows
        if mean is not None and Decimal(repr(float(mean))) < Decimal(repr(rule.min))
    ]
