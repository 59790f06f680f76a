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
from rich.markup import escape

from pgtrail.cli.app import app, err_console, fail, settings_of
from pgtrail.config import Settings
from pgtrail.durations import parse_duration
from pgtrail.errors import ConfigurationError, EvaluationError, PgtrailError
from pgtrail.ops import webhooks
from pgtrail.read import alerts
from pgtrail.read.breaches import Breach
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


def _watch_rules(
    *,
    user_budget: float | None,
    user_window: str,
    runaway_after: str | None,
    runaway_cost: float | None,
) -> list[dict[str, Any]]:
    """The user-budget and runaway rules given as options, as a rules file holds them."""
    rules: list[dict[str, Any]] = []
    if user_budget is not None:
        rules.append(
            {
                "name": "user-cost",
                "kind": "user_cost",
                "window": user_window,
                "budget_usd": user_budget,
            }
        )
    if runaway_after is not None or runaway_cost is not None:
        rule: dict[str, Any] = {"name": "runaway", "kind": "runaway"}
        if runaway_after is not None:
            rule["max_duration"] = runaway_after
        if runaway_cost is not None:
            rule["max_cost_usd"] = runaway_cost
        rules.append(rule)
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
    user_budget: Annotated[
        float | None,
        typer.Option(metavar="USD", help="Breach when a user spends more over --user-window"),
    ] = None,
    user_window: Annotated[
        str, typer.Option(help="Rolling window of --user-budget (e.g. 30d)")
    ] = "30d",
    runaway_after: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Breach when an execution still runs after this"),
    ] = None,
    runaway_cost: Annotated[
        float | None,
        typer.Option(metavar="USD", help="Breach when a running execution has spent more"),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="POST each breach as JSON (Slack-compatible text) once per breach per window",
        ),
    ] = None,
) -> None:
    """Evaluate latency, error-rate, budget, canary, user-cost, runaway and score rules.

    Exit status: 0 quiet, 1 breach, 2 bad rules or options, 3 could not evaluate. A webhook
    that cannot be reached is said on stderr and leaves the exit status as it is.
    """
    settings = settings_of(ctx)
    try:
        if webhook is not None:
            webhooks.check_url(webhook)
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
        flagged += _watch_rules(
            user_budget=user_budget,
            user_window=user_window,
            runaway_after=runaway_after,
            runaway_cost=runaway_cost,
        )
        if flagged:
            rules += alerts.parse_rules(flagged, source="options")
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc), EXIT_CONFIG)
    if not rules:
        fail(
            "no rules to check: give --rules FILE or a rule option (--latency-p95, "
            "--error-rate, --daily-budget, --tenant-budget, --canary, --user-budget, "
            "--runaway-after, --runaway-cost)",
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
    if webhook is not None and breaches:
        _post(settings, breaches, webhook, quiet=quiet or output is OutputFormat.json)
    if breaches:
        raise typer.Exit(EXIT_BREACH)


def _post(settings: Settings, breaches: list[Breach], url: str, *, quiet: bool) -> None:
    """Posts the breaches to the webhook; a failure is said on stderr, never an exit."""
    try:
        deliveries = webhooks.notify(settings, breaches, url)
    except PgtrailError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return
    if not quiet:
        posted = sum(d.posted for d in deliveries)
        typer.echo(
            f"webhook: {posted} breach(es) posted, {len(deliveries) - posted} already posted "
            "in their window"
        )
