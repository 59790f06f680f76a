"""``pgtrail check``: evaluate budget and alert rules; exit non-zero on a breach.

Exit status: 0 no breach, 1 at least one breach, 2 the rules or options are wrong,
3 the rules could not be evaluated (PostgreSQL unreachable, timeout).
"""

from __future__ import annotations

import datetime as dt
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pgtrail.cli.app import app, fail, settings_of
from pgtrail.durations import parse_duration
from pgtrail.errors import ConfigurationError, EvaluationError
from pgtrail.read import alerts
from pgtrail.read.reports import parse_timestamptz

EXIT_BREACH = 1
EXIT_CONFIG = 2
EXIT_UNEVALUATED = 3


class OutputFormat(StrEnum):
    """How breaches are printed."""

    text = "text"
    json = "json"


class LatencyBy(StrEnum):
    """Subjects of the p95 latency rule."""

    model = "model"
    agent = "agent"


class ErrorBy(StrEnum):
    """Subjects of the error-rate rule."""

    feature = "feature"
    model = "model"


def _flag_rules(
    *,
    window: str,
    latency_p95: float | None,
    latency_by: LatencyBy | None,
    error_rate: float | None,
    error_rate_by: ErrorBy,
    min_calls: int | None,
    daily_budget: float | None,
    tenant_budgets: list[str],
    canaries: list[str],
) -> list[dict[str, Any]]:
    """The rules given as options, as the same mappings a rules file holds."""
    rules: list[dict[str, Any]] = []
    if latency_p95 is not None:
        rule: dict[str, Any] = {
            "name": "latency-p95",
            "kind": "latency_p95",
            "threshold_s": latency_p95,
            "window": window,
        }
        if latency_by is not None:
            rule["by"] = latency_by.value
        if min_calls is not None:
            rule["min_calls"] = min_calls
        rules.append(rule)
    if error_rate is not None:
        rule = {
            "name": "error-rate",
            "kind": "error_rate",
            "threshold_pct": error_rate,
            "window": window,
            "by": error_rate_by.value,
        }
        if min_calls is not None:
            rule["min_calls"] = min_calls
        rules.append(rule)
    if daily_budget is not None or tenant_budgets:
        budgets: dict[str, float] = {}
        for entry in tenant_budgets:
            tenant, sep, amount = entry.rpartition("=")
            try:
                budgets[tenant.strip()] = float(amount)
            except ValueError:
                tenant = ""
            if not sep or not tenant.strip():
                raise ConfigurationError(
                    f"--tenant-budget {entry!r}: write TENANT=USD, e.g. acme=200"
                )
        rules.append(
            {
                "name": "daily-cost",
                "kind": "daily_cost",
                "budgets": budgets,
                "default_budget_usd": daily_budget,
            }
        )
    rules.extend(
        {"name": f"canary:{workflow}", "kind": "canary", "workflow": workflow, "window": window}
        for workflow in canaries
    )
    return rules


@app.command("check")
def check_command(
    ctx: typer.Context,
    rules_file: Annotated[
        Path | None,
        typer.Option("--rules", help="Rules file: TOML (an array of tables named rules) or JSON"),
    ] = None,
    window: Annotated[
        str, typer.Option(help="Window of the rules given as options (e.g. 10m, 1h)")
    ] = "15m",
    latency_p95: Annotated[
        float | None, typer.Option(help="Breach when p95 model-call latency exceeds SECONDS")
    ] = None,
    latency_by: Annotated[
        LatencyBy | None, typer.Option(help="p95 per model or per agent (default: overall)")
    ] = None,
    error_rate: Annotated[
        float | None, typer.Option(help="Breach when failed calls exceed PERCENT")
    ] = None,
    error_rate_by: Annotated[ErrorBy, typer.Option(help="Error rate per feature or model")] = (
        ErrorBy.feature
    ),
    min_calls: Annotated[
        int | None,
        typer.Option(min=1, help="Calls needed for a p95 (default 1) or error rate (20)"),
    ] = None,
    daily_budget: Annotated[
        float | None, typer.Option(help="Default daily budget per tenant, USD (UTC day)")
    ] = None,
    tenant_budget: Annotated[
        list[str] | None,
        typer.Option(metavar="TENANT=USD", help="A tenant's own daily budget (repeatable)"),
    ] = None,
    canary: Annotated[
        list[str] | None,
        typer.Option(metavar="WORKFLOW", help="Breach when WORKFLOW has no run in --window"),
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="text or json")] = (
        OutputFormat.text
    ),
    at: Annotated[
        str | None, typer.Option(help="Evaluate as of this time (ISO; default: now)")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="Print nothing when no rule is broken")
    ] = False,
    timeout_ms: Annotated[
        int | None, typer.Option(min=1, help="Statement timeout (default: 30000)")
    ] = None,
) -> None:
    """Evaluate latency, error-rate, budget and canary rules; exit 1 on any breach.

    Exit status: 0 quiet, 1 breach, 2 bad rules or options, 3 could not evaluate.
    """
    settings = settings_of(ctx)
    try:
        parse_duration(window)
        now = parse_timestamptz(at) if at else dt.datetime.now(dt.UTC)
        rules = alerts.load_rules(rules_file) if rules_file is not None else []
        flagged = _flag_rules(
            window=window,
            latency_p95=latency_p95,
            latency_by=latency_by,
            error_rate=error_rate,
            error_rate_by=error_rate_by,
            min_calls=min_calls,
            daily_budget=daily_budget,
            tenant_budgets=tenant_budget or [],
            canaries=canary or [],
        )
        if flagged:
            rules += alerts.parse_rules(flagged, source="options")
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc), EXIT_CONFIG)
    if not rules:
        fail(
            "no rules to check: give --rules FILE or a rule option "
            "(--latency-p95, --error-rate, --daily-budget, --tenant-budget, --canary)",
            EXIT_CONFIG,
        )
    names = [r.name for r in rules]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        fail(f"two rules are named {duplicate!r}; rule names must be unique", EXIT_CONFIG)
    try:
        breaches = alerts.evaluate(settings, rules, now=now, timeout_ms=timeout_ms)
    except ConfigurationError as exc:
        fail(str(exc), EXIT_CONFIG)
    except EvaluationError as exc:
        fail(str(exc), EXIT_UNEVALUATED)
    if output is OutputFormat.json:
        document = {
            "ok": not breaches,
            "checked_at": now.isoformat(),
            "rules": names,
            "breaches": [b.as_json() for b in breaches],
        }
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        for breach in breaches:
            typer.echo(f"BREACH {breach.message}")
        if breaches:
            typer.echo(
                f"{len(breaches)} breach(es) of {len(rules)} rule(s), checked at {now.isoformat()}"
            )
        elif not quiet:
            typer.echo(f"ok: {len(rules)} rule(s), no breach, checked at {now.isoformat()}")
    if breaches:
        raise typer.Exit(EXIT_BREACH)
