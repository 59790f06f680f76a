"""The tour after loading: each planted problem and the saved report that finds it.

Reports run through :mod:`pgtrail.read.reports` exactly as ``pgtrail report run`` runs them, over
the simulated window. Afterwards one execution tree and one user journey show what a single
request and a single multi-day user look like.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from pgtrail.config import Settings
from pgtrail.demo.load import LoadResult
from pgtrail.demo.plant import (
    COMPRESSION_BUG_AGENT,
    EXPENSIVE_USER_NUMBER,
    HELPFULNESS,
    Plan,
)
from pgtrail.demo.runaway import RUNAWAY_WORKFLOW, planted_runaway, redis_problem
from pgtrail.errors import PgtrailError
from pgtrail.read import alerts, reports
from pgtrail.read.breaches import Breach
from pgtrail.read.journey import load_journey
from pgtrail.read.render import journey_timeline, trace_tree
from pgtrail.read.reports import ReportResult
from pgtrail.read.trace import load_trace

Window = tuple[dt.datetime, dt.datetime]
TABLE_ROWS = 8
JOURNEY_EXECUTIONS = 6
HELPFULNESS_ALERT = Decimal("0.7")
"""A mean helpfulness under this is a problem (the tour's report filter and check rule)."""
HELPFULNESS_MIN_SCORES = 15
"""Groups with fewer scores are not judged."""
CHECK_RULES: list[dict[str, Any]] = [
    {
        "name": "helpfulness by prompt",
        "kind": "score_avg",
        "score": "helpfulness",
        "min": float(HELPFULNESS_ALERT),
        "window": "7d",
        "by": "prompt_version",
        "min_count": HELPFULNESS_MIN_SCORES,
    },
    {
        "name": "runaway agents",
        "kind": "runaway",
        "max_duration": "1h",
        "max_cost_usd": 5,
        "workflow": RUNAWAY_WORKFLOW,
    },
]
"""The rules the tour checks, as a rules file would hold them."""


@dataclass(frozen=True)
class Finding:
    """A planted problem, the report that surfaces it, and how to read the report's rows."""

    problem: str
    report: str
    params: dict[str, str]
    columns: tuple[str, ...]
    explain: Callable[[list[dict[str, Any]]], str]
    planted: Callable[[Plan], bool]
    filters: dict[str, Any] = field(default_factory=dict)
    keep: Callable[[dict[str, Any]], bool] | None = None
    """Which rows show the problem, when the report has no flag of its own."""

    def run(
        self, settings: Settings, window: Window, catalog: reports.Catalog
    ) -> list[dict[str, Any]]:
        """The report's rows that show the problem (none on a healthy system)."""
        report = catalog.get(self.report)
        params = dict(self.params)
        if report.param("since"):
            params["since"] = window[0].isoformat()
        if report.param("until"):
            params["until"] = window[1].isoformat()
        result = reports.run_report(settings, report, params)
        rows = as_dicts(result)
        rows = [r for r in rows if all(r.get(k) == v for k, v in self.filters.items())]
        return [r for r in rows if self.keep is None or self.keep(r)]


def as_dicts(result: ReportResult) -> list[dict[str, Any]]:
    """Rows as dictionaries keyed by column name."""
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _drift_line(rows: list[dict[str, Any]]) -> str:
    # Drift shows as one value gaining share; the values losing it are the same move seen
    # from the other side, so lead with the largest gain.
    rising = [r for r in rows if r["change_pp"] > 0]
    top = max(rising or rows, key=lambda r: abs(r["change_pp"]))
    direction = "up" if top["change_pp"] > 0 else "down"
    return (
        f"coaching intensity '{top['value']}' went {direction} from {top['baseline_share_pct']}% "
        f"of decisions in the baseline weeks to {top['share_pct']}% in the week of "
        f"{top['week']} ({top['change_pp']:+} pp); {len(rows)} week/value cells moved > 10 pp."
    )


def _compression_line(rows: list[dict[str, Any]]) -> str:
    agents = sorted({str(r["agent_type"]) for r in rows})
    total = sum(int(r["over_compressed"]) for r in rows)
    first = min(r["day"] for r in rows)
    return (
        f"{total} significant moments of {', '.join(agents)} were compressed anyway "
        f"(score > 0.5, priority aggressive) since {first}; every other agent preserved them."
    )


def _cost_line(rows: list[dict[str, Any]]) -> str:
    users = sorted({str(r["user_id"]) for r in rows})
    executions = [r for r in rows if r["level"] == "execution"]
    worst = max(executions or rows, key=lambda r: r["times_median"] or 0)
    return (
        f"{len(executions)} execution(s) of user {', '.join(users)} cost up to "
        f"{worst['times_median']}x the median of {worst['workflow']}: the offer builder in "
        "301 Selling process retries a large model again and again "
        f"(pgtrail trace {worst['subject']})."
    )


def _prompt_line(rows: list[dict[str, Any]]) -> str:
    top = max(rows, key=lambda r: r["p50_change_pct"])
    return (
        f"{top['agent_type']} prompt {top['prompt_version']} on {top['model_target']} answers "
        f"in {top['p50_ms']} ms at p50 against {top['previous_p50_ms']} ms for "
        f"{top['previous_version']} ({top['p50_change_pct']:+}%)."
    )


def _helpfulness_line(rows: list[dict[str, Any]]) -> str:
    worst = min(rows, key=lambda r: r["mean_score"])
    versions = sorted({str(r["prompt_version"]) for r in rows})
    return (
        f"{worst['agent_type']} prompt {', '.join(versions)} scores a mean helpfulness of "
        f"{worst['mean_score']} in the week of {worst['week']} ({worst['scores']} scores, "
        f"{worst['under_threshold_pct']}% under {HELPFULNESS_ALERT}); every other version "
        f"stays near {HELPFULNESS}."
    )


FINDINGS: tuple[Finding, ...] = (
    Finding(
        problem="Decision drift: coaching intensity creeping up",
        report="decision-drift",
        params={"agent_type": "coaching", "only_flagged": "true"},
        columns=("week", "value", "week_events", "baseline_share_pct", "share_pct", "change_pp"),
        explain=_drift_line,
        planted=lambda plan: plan.drift,
    ),
    Finding(
        problem=f"Compression bug: the {COMPRESSION_BUG_AGENT} agent over-compresses "
        "significant moments",
        report="compression-audit",
        params={},
        columns=(
            "day",
            "agent_type",
            "significant_moments",
            "over_compressed",
            "avg_score",
            "priorities",
        ),
        explain=_compression_line,
        planted=lambda plan: plan.compression_bug,
    ),
    Finding(
        problem=f"Cost anomaly: user {EXPENSIVE_USER_NUMBER} triggers an expensive path",
        report="cost-anomalies",
        params={},
        columns=("level", "subject", "user_id", "cost", "workflow_median", "times_median"),
        explain=_cost_line,
        planted=lambda plan: plan.expensive_user,
    ),
    Finding(
        problem="Latency regression: coaching prompt v7",
        report="prompt-regressions",
        params={"only_flagged": "true"},
        columns=(
            "agent_type",
            "prompt_version",
            "previous_version",
            "calls",
            "previous_p50_ms",
            "p50_ms",
            "p50_change_pct",
        ),
        explain=_prompt_line,
        planted=lambda plan: plan.prompt_regression,
    ),
    Finding(
        problem="Quality drop: coaching prompt v7 judged less helpful",
        report="score-trends",
        params={
            "score": "helpfulness",
            "threshold": str(HELPFULNESS_ALERT),
            "min_count": str(HELPFULNESS_MIN_SCORES),
        },
        columns=(
            "week",
            "agent_type",
            "prompt_version",
            "scores",
            "mean_score",
            "under_threshold_pct",
        ),
        explain=_helpfulness_line,
        planted=lambda plan: plan.helpfulness_drop,
        keep=lambda row: row["mean_score"] < HELPFULNESS_ALERT,
    ),
)


def find_problems(settings: Settings, window: Window) -> dict[str, list[dict[str, Any]]]:
    """Runs the five reports over ``window``; the rows each one flags, by report name."""
    catalog = reports.load_catalog()
    return {f.report: f.run(settings, window, catalog) for f in FINDINGS}


# -- printing -------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    text = str(value)
    if len(text) == 36 and text.count("-") == 4:  # a UUID: its start tells it apart
        return text[:8] + "…"
    return text


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], limit: int) -> Table:
    """A rich table of ``columns`` for at most ``limit`` rows."""
    table = Table(*columns, show_lines=False, header_style="bold")
    for row in rows[:limit]:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more row(s): pgtrail report run ..."
    return table


def print_summary(console: Console, result: LoadResult) -> None:
    """The load's figures: what was written, and how fast."""
    counts = result.counts
    console.print(
        f"[bold green]Loaded[/] {counts.events:,} events ({counts.executions:,} executions, "
        f"{counts.llm_calls:,} LLM calls, {counts.users:,} users) in {result.elapsed_s:.1f} s: "
        f"[bold]{result.events_per_s:,.0f} events/s[/].",
        highlight=False,
    )
    if result.rejected or result.spooled:
        console.print(
            f"[yellow]{result.rejected} record(s) rejected, {result.spooled} spooled[/]",
            highlight=False,
        )


def tour(console: Console, settings: Settings, result: LoadResult) -> None:
    """Prints each planted problem with its report's rows, then one trace and one journey."""
    began = time.perf_counter()
    plan = result.options.plan
    catalog = reports.load_catalog()
    found = 0
    for finding in FINDINGS:
        rows = finding.run(settings, result.window, catalog)
        console.rule(f"[bold]{finding.problem}")
        console.print(
            f"pgtrail report run {finding.report}"
            + "".join(f" --param {k}={v}" for k, v in finding.params.items())
            + " --param since=... --param until=...",
            style="dim",
            highlight=False,
        )
        if rows:
            found += 1
            console.print(rows_table(rows, finding.columns, TABLE_ROWS))
            console.print(finding.explain(rows), highlight=False)
        else:
            planted = "planted, yet not found" if finding.planted(plan) else "not planted"
            console.print(f"nothing reported ({planted}).", highlight=False)
    breaches = print_checks(console, settings, result)
    _print_trace(console, settings, result)
    _print_journey(console, settings, result)
    console.rule("[bold]Figures")
    console.print(
        f"{result.counts.events:,} events written in {result.elapsed_s:.1f} s "
        f"({result.events_per_s:,.0f} events/s); {found} of {len(FINDINGS)} reports found a "
        f"problem; pgtrail check found {breaches} breach(es); "
        f"tour {time.perf_counter() - began:.1f} s.",
        highlight=False,
    )


def check_problems(settings: Settings, result: LoadResult) -> list[Breach]:
    """Plants the runaway (when planned and Redis is there), then runs :data:`CHECK_RULES`
    at the end of the simulated window; the breaches found.

    Raises:
        PgtrailError: the rules could not be evaluated.
    """
    end = result.window[1]
    rules = alerts.parse_rules(CHECK_RULES, source="the tour")
    if not result.options.plan.runaway:
        return alerts.evaluate(settings, rules[:1], now=end)
    tenant = "acme"
    with planted_runaway(settings, end, tenant) as runaway:
        if runaway.execution_id is None:
            return alerts.evaluate(settings, rules[:1], now=end)
        return alerts.evaluate(settings, rules, now=end)


def print_checks(console: Console, settings: Settings, result: LoadResult) -> int:
    """Prints what ``pgtrail check`` finds at the end of the window; how many breaches."""
    console.rule("[bold]Alerts: a helpfulness drop, and an agent still running up costs")
    console.print(
        f"pgtrail check --rules alerts.toml --at {result.window[1].isoformat()}  "
        "# score_avg helpfulness by prompt_version, runaway after 1h or $5",
        style="dim",
        highlight=False,
    )
    try:
        breaches = check_problems(settings, result)
    except PgtrailError as exc:
        console.print(f"could not check: {exc}", highlight=False, markup=False)
        return 0
    for breach in breaches:
        console.print(f"BREACH {breach.message}", highlight=False, soft_wrap=True, markup=False)
    if result.options.plan.runaway and not any(b.kind == "runaway" for b in breaches):
        console.print(
            "runaway not planted: it runs in Redis, and "
            f"{redis_problem(settings) or 'it finished before the check'}.",
            highlight=False,
        )
    if not breaches:
        console.print("ok: no breach.", highlight=False)
    return len(breaches)


def _print_trace(console: Console, settings: Settings, result: LoadResult) -> None:
    highlights = result.highlights
    execution_id = highlights.deep_execution or highlights.expensive_execution
    if execution_id is None:
        return
    console.rule("[bold]One execution, five levels deep")
    console.print(f"pgtrail trace {execution_id}", style="dim", highlight=False)
    console.print(trace_tree(load_trace(settings, execution_id)))


def _print_journey(console: Console, settings: Settings, result: LoadResult) -> None:
    user = result.highlights.journey_user
    if user is None:
        return
    console.rule(f"[bold]One user's journey over {result.highlights.journey_days} days")
    since, until = result.window
    console.print(
        f"pgtrail journey {user} --since {since:%Y-%m-%d} --until {until:%Y-%m-%d}",
        style="dim",
        highlight=False,
    )
    journey = load_journey(settings, user, since, until)
    console.print(journey_timeline(journey, max_executions=JOURNEY_EXECUTIONS))
