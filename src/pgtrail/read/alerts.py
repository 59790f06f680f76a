"""Budget and alert rules, and their evaluation against the log tables.

Seven kinds of rule, each a pydantic model so a rules file is checked before anything runs;
four here, and ``user_cost``, ``runaway`` and ``score_avg`` in
:mod:`pgtrail.read.alert_rules`:

- ``latency_p95``: the 95th percentile of model-call latency over a window is above a number
  of seconds (overall, per model or per agent);
- ``error_rate``: the share of failed model calls over a window is above a percentage, per
  feature or per model, counted only where there were at least ``min_calls`` calls;
- ``daily_cost``: a tenant's model spend today (UTC), or over a rolling window, is above its
  budget (per-tenant budgets and a default);
- ``canary``: no execution of a workflow started within a window.

Every rule runs in one read-only transaction under a statement timeout; values are bound by
the driver and the only SQL fragments chosen at run time come from fixed tables here.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
import pydantic
from psycopg import sql
from pydantic import Field, model_validator

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import ConfigurationError, EvaluationError, PgtrailError
from pgtrail.read import alert_rules
from pgtrail.read.alert_rules import RunawayRule, ScoreAvgRule, UserCostRule
from pgtrail.read.breaches import Breach, RuleBase, describe_window
from pgtrail.read.reports import read_only_transaction
from pgtrail.statements import STATEMENTS

RULE_KINDS = (
    "latency_p95",
    "error_rate",
    "daily_cost",
    "canary",
    "user_cost",
    "runaway",
    "score_avg",
)


# -- the rules --------------------------------------------------------------------------------


class LatencyP95Rule(RuleBase):
    """p95 latency of model calls above ``threshold_s`` over the last ``window``."""

    kind: Literal["latency_p95"]
    threshold_s: float = Field(gt=0)
    window: dt.timedelta
    by: Literal["model", "agent"] | None = None
    min_calls: int = Field(default=1, ge=1)


class ErrorRateRule(RuleBase):
    """Failed model calls above ``threshold_pct`` percent per feature or model."""

    kind: Literal["error_rate"]
    threshold_pct: float = Field(ge=0, lt=100)
    window: dt.timedelta
    by: Literal["feature", "model"] = "feature"
    min_calls: int = Field(default=20, ge=1)


class DailyCostRule(RuleBase):
    """A tenant's model spend today (UTC), or over ``window``, above its budget in USD."""

    kind: Literal["daily_cost"]
    budgets: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    default_budget_usd: float | None = Field(default=None, ge=0)
    window: dt.timedelta | None = None

    @model_validator(mode="after")
    def _has_a_budget(self) -> DailyCostRule:
        if not self.budgets and self.default_budget_usd is None:
            raise ValueError("give budgets per tenant, default_budget_usd, or both")
        return self

    def budget_of(self, tenant: str) -> float | None:
        """The tenant's budget, else the default, else None (not checked)."""
        return self.budgets.get(tenant, self.default_budget_usd)


class CanaryRule(RuleBase):
    """No execution of ``workflow`` started in the last ``window``."""

    kind: Literal["canary"]
    workflow: str = Field(min_length=1)
    window: dt.timedelta
    require_success: bool = False


Rule = Annotated[
    LatencyP95Rule
    | ErrorRateRule
    | DailyCostRule
    | CanaryRule
    | UserCostRule
    | RunawayRule
    | ScoreAvgRule,
    Field(discriminator="kind"),
]
_RULE = pydantic.TypeAdapter(Rule)


def _label(index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"rule {index}" + (f" ({name!r})" if isinstance(name, str) and name else "")


def parse_rules(raw_rules: Any, *, source: str = "rules") -> list[Rule]:
    """Validates a list of rule mappings; errors name the rule and the field.

    Raises:
        ConfigurationError: a rule is malformed, or two rules share a name.
    """
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigurationError(f"{source}: expected a non-empty list of rules under `rules`")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules, start=1):
        label = _label(index, raw)
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{source}: {label} must be a table of settings")
        if raw.get("kind") not in RULE_KINDS:
            raise ConfigurationError(
                f"{source}: {label}: kind is {raw.get('kind')!r}; use one of "
                + ", ".join(RULE_KINDS)
            )
        try:
            rule = _RULE.validate_python(dict(raw))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][1:]) or 'rule'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise ConfigurationError(f"{source}: {label}: {problems}") from None
        if not rule.name:
            rule = rule.model_copy(update={"name": f"{rule.kind}#{index}"})
        if rule.name in seen:
            raise ConfigurationError(f"{source}: {label}: another rule is already named so")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_rules(path: Path) -> list[Rule]:
    """Reads rules from a TOML (``[[rules]]`` tables) or JSON (``{"rules": [...]}``) file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read rules file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            document: Any = json.loads(text)
        else:
            document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: not valid {path.suffix[1:] or 'TOML'}: {exc}") from None
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"rules"})
        if unknown:
            raise ConfigurationError(f"{path}: unknown top-level key {unknown[0]!r}; use `rules`")
        document = document.get("rules")
    return parse_rules(document, source=str(path))


# -- evaluation -------------------------------------------------------------------------------


_LATENCY_SUBJECT = {"model": sql.SQL("model_target"), "agent": sql.SQL("agent_type")}
_ERROR_SUBJECT = {
    "feature": sql.SQL("particular_data ->> 'feature'"),
    "model": sql.SQL("model_target"),
}

_LATENCY_SQL = """
SELECT {subject} AS subject,
       count(*) AS calls,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) / 1000.0 AS p95_s
FROM logs_llm_execution
WHERE created_at > %(since)s
  AND created_at <= %(until)s
  AND processing_time_ms IS NOT NULL
GROUP BY 1
HAVING count(*) >= %(min_calls)s
ORDER BY 1 NULLS FIRST
"""

_ERROR_RATE_SQL = """
SELECT {subject} AS subject,
       count(*) AS calls,
       count(*) FILTER (WHERE event_type <> 'llm_valid_execution') AS errors
FROM logs_llm_execution
WHERE created_at > %(since)s
  AND created_at <= %(until)s
GROUP BY 1
HAVING count(*) >= %(min_calls)s
ORDER BY 1 NULLS FIRST
"""


def _subject(by: str | None, value: Any) -> dict[str, str]:
    if by is None:
        return {}
    return {by: "(none)" if value is None else str(value)}


def _latency(conn: psycopg.Connection[Any], rule: LatencyP95Rule, now: dt.datetime) -> list[Breach]:
    subject = _LATENCY_SUBJECT[rule.by] if rule.by else sql.SQL("NULL::text")
    since = now - rule.window
    rows = conn.execute(
        sql.SQL(_LATENCY_SQL).format(subject=subject),
        {"since": since, "until": now, "min_calls": rule.min_calls},
    ).fetchall()
    return [
        Breach(
            rule.name,
            rule.kind,
            _subject(rule.by, who),
            float(p95),
            rule.threshold_s,
            "s",
            describe_window(rule.window),
            since,
            now,
            {"calls": calls},
        )
        for who, calls, p95 in rows
        if p95 is not None and Decimal(repr(float(p95))) > Decimal(repr(rule.threshold_s))
    ]


def _error_rate(
    conn: psycopg.Connection[Any], rule: ErrorRateRule, now: dt.datetime
) -> list[Breach]:
    since = now - rule.window
    rows = conn.execute(
        sql.SQL(_ERROR_RATE_SQL).format(subject=_ERROR_SUBJECT[rule.by]),
        {"since": since, "until": now, "min_calls": rule.min_calls},
    ).fetchall()
    threshold = Decimal(repr(rule.threshold_pct))
    return [
        Breach(
            rule.name,
            rule.kind,
            _subject(rule.by, who),
            round(errors * 100 / calls, 4),
            rule.threshold_pct,
            "%",
            describe_window(rule.window),
            since,
            now,
            {"calls": calls, "errors": errors, "min_calls": rule.min_calls},
        )
        for who, calls, errors in rows
        if Decimal(errors) * 100 > threshold * calls  # exact: no rounding at the boundary
    ]


def _daily_cost(
    conn: psycopg.Connection[Any], rule: DailyCostRule, now: dt.datetime
) -> list[Breach]:
    if rule.window is None:
        since = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        window = "today (UTC)"
    else:
        since = now - rule.window
        window = f"over the last {describe_window(rule.window)}"
    rows = conn.execute(STATEMENTS["alerts_daily_cost"], {"since": since, "until": now}).fetchall()
    breaches = []
    for tenant, cost, calls in rows:
        budget = rule.budget_of(tenant)
        if budget is not None and Decimal(cost) > Decimal(repr(budget)):
            breaches.append(
                Breach(
                    rule.name,
                    rule.kind,
                    {"tenant": tenant},
                    float(cost),
                    budget,
                    "USD",
                    window,
                    since,
                    now,
                    {"calls": calls, "cost_usd": str(cost)},
                )
            )
    return breaches


def _canary(conn: psycopg.Connection[Any], rule: CanaryRule, now: dt.datetime) -> list[Breach]:
    since = now - rule.window
    row = conn.execute(
        STATEMENTS["alerts_canary"],
        {
            "workflow": rule.workflow,
            "since": since,
            "until": now,
            "require_success": rule.require_success,
        },
    ).fetchone()
    runs = row[0] if row else 0
    if runs:
        return []
    return [
        Breach(
            rule.name,
            rule.kind,
            {"workflow": rule.workflow},
            0,
            1,
            "executions",
            describe_window(rule.window),
            since,
            now,
            {"runs": 0, "require_success": rule.require_success},
        )
    ]


_EVALUATORS: dict[str, Any] = {
    "latency_p95": _latency,
    "error_rate": _error_rate,
    "daily_cost": _daily_cost,
    "canary": _canary,
    "user_cost": alert_rules.user_cost,
    "score_avg": alert_rules.score_avg,
}


def evaluate(
    settings: Settings,
    rules: Sequence[Rule],
    *,
    now: dt.datetime | None = None,
    timeout_ms: int | None = None,
) -> list[Breach]:
    """Evaluates every rule in one read-only snapshot; returns the breaches found.

    Args:
        settings: Where the tables are; for ``runaway`` rules, where Redis is too.
        rules: The rules, validated (:func:`parse_rules`, :func:`load_rules`).
        now: The time to evaluate at (aware); by default now.
        timeout_ms: The statement timeout; by default ``statement_timeout_ms``.

    Raises:
        ConfigurationError: the DSN is malformed, or a ``runaway`` rule has no Redis.
        EvaluationError: PostgreSQL or Redis is unreachable, a statement timed out or failed.
    """
    at = now or dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        raise ConfigurationError("the evaluation time must carry a time zone")
    limit = timeout_ms or settings.statement_timeout_ms
    if settings.redis_url is None:
        for rule in rules:
            if isinstance(rule, RunawayRule):
                raise ConfigurationError(alert_rules.no_redis(rule))
    breaches: list[Breach] = []
    try:
        with db.connect(settings) as conn, read_only_transaction(conn, limit):
            for rule in rules:
                if isinstance(rule, RunawayRule):  # the one kind that reads Redis too
                    breaches.extend(alert_rules.runaway(conn, settings, rule, at))
                else:
                    breaches.extend(_EVALUATORS[rule.kind](conn, rule, at))
    except ConfigurationError:
        raise
    except PgtrailError as exc:
        raise EvaluationError(str(exc)) from exc
    except psycopg.errors.QueryCanceled as exc:
        raise EvaluationError(
            f"checking the rules was cancelled after {limit} ms (statement_timeout); "
            "shorten the windows or raise --timeout-ms"
        ) from exc
    except psycopg.Error as exc:
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise EvaluationError(f"checking the rules failed: {reason}") from exc
    return breaches
