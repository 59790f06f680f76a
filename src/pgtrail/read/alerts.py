"""Budget and alert rules, and their evaluation against the log tables.

Four kinds of rule, each a pydantic model so a rules file is checked before anything runs:

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
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
import pydantic
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.durations import parse_duration
from pgtrail.errors import ConfigurationError, EvaluationError, PgtrailError
from pgtrail.read.reports import read_only_transaction
from pgtrail.statements import STATEMENTS

RULE_KINDS = ("latency_p95", "error_rate", "daily_cost", "canary")


# -- the rules --------------------------------------------------------------------------------


def _window(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        window = value
    elif isinstance(value, str):
        window = parse_duration(value)
    else:
        raise ValueError("give a duration such as '10m', '1h' or '1d'")
    if window <= dt.timedelta(0):
        raise ValueError("the window must be longer than zero")
    return window


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=200)

    @field_validator("window", mode="before", check_fields=False)
    @classmethod
    def _parse_window(cls, value: Any) -> dt.timedelta | None:
        return None if value is None else _window(value)


class LatencyP95Rule(_Rule):
    """p95 latency of model calls above ``threshold_s`` over the last ``window``."""

    kind: Literal["latency_p95"]
    threshold_s: float = Field(gt=0)
    window: dt.timedelta
    by: Literal["model", "agent"] | None = None
    min_calls: int = Field(default=1, ge=1)


class ErrorRateRule(_Rule):
    """Failed model calls above ``threshold_pct`` percent per feature or model."""

    kind: Literal["error_rate"]
    threshold_pct: float = Field(ge=0, lt=100)
    window: dt.timedelta
    by: Literal["feature", "model"] = "feature"
    min_calls: int = Field(default=20, ge=1)


class DailyCostRule(_Rule):
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


class CanaryRule(_Rule):
    """No execution of ``workflow`` started in the last ``window``."""

    kind: Literal["canary"]
    workflow: str = Field(min_length=1)
    window: dt.timedelta
    require_success: bool = False


Rule = Annotated[
    LatencyP95Rule | ErrorRateRule | DailyCostRule | CanaryRule, Field(discriminator="kind")
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

    @property
    def message(self) -> str:
        """One line for a person."""
        who = " ".join(f"{k}={v}" for k, v in self.subject.items()) or "all calls"
        if self.kind == "latency_p95":
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
}


def evaluate(
    settings: Settings,
    rules: Sequence[Rule],
    *,
    now: dt.datetime | None = None,
    timeout_ms: int | None = None,
) -> list[Breach]:
    """Evaluates every rule in one read-only snapshot; returns the breaches found.

    Raises:
        ConfigurationError: the DSN is malformed.
        EvaluationError: PostgreSQL is unreachable, a statement timed out or failed.
    """
    at = now or dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        raise ConfigurationError("the evaluation time must carry a time zone")
    limit = timeout_ms or settings.statement_timeout_ms
    breaches: list[Breach] = []
    try:
        with db.connect(settings) as conn, read_only_transaction(conn, limit):
            for rule in rules:
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
