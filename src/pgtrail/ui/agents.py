"""``/agents/{agent_type}``: an agent's calls, cost and latency per day, its events, and the
drift of one decision field (the ``decision-drift`` report, as a chart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgtrail.errors import NotFoundError, ReportError
from pgtrail.read import reports
from pgtrail.ui import charts
from pgtrail.ui.charts import Chart, Point
from pgtrail.ui.pages import Context, Page
from pgtrail.ui.windows import day_window

DRIFT_REPORT = "decision-drift"
"""The saved report whose rows the drift chart draws."""

RECENT = 50
"""Latest agent events listed."""


@dataclass(frozen=True)
class Drift:
    """The decision-drift report of one agent and field, and its chart.

    Attributes:
        field: the decision field (a comma-separated path in ``particular_data``).
        rows: the report's rows, as dictionaries.
        chart: weekly shares (a categorical field) or means (a numeric one), or None.
        error: why the report could not run, or None.
    """

    field: str
    rows: list[dict[str, Any]]
    chart: Chart | None
    error: str | None = None

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """The rows the report flags as drift."""
        return [r for r in self.rows if r.get("flagged")]


def drift(ctx: Context, agent_type: str) -> Drift:
    """Runs the decision-drift report for ``agent_type`` (``field`` from the query, else the
    report's default) and charts it.

    Args:
        ctx: the request's context.
        agent_type: the agent.
    """
    field = ctx.param("field") or ""
    reader = ctx.reader
    try:
        report = ctx.catalog().get(DRIFT_REPORT)
        declared = report.param("field")
        field = field or (declared.default if declared and declared.default else "")
        values = {"agent_type": agent_type, "field": field}
        result = reports.run_report(
            reader.settings,
            report,
            values,
            timeout_ms=reader.timeout_ms,
            now=ctx.now,
            tenant=reader.tenant,
        )
    except ReportError as exc:
        return Drift(field, [], None, str(exc))
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    weeks = list(dict.fromkeys(str(r["week"]) for r in rows))
    if any(r["kind"] == "category" for r in rows):
        chart = charts.stacked_bars(
            f"Share of each {field} value per week (%, UTC weeks from Monday)",
            "%",
            weeks,
            [Point(str(r["week"]), str(r["value"]), charts.as_float(r["share_pct"])) for r in rows],
        )
    elif rows:
        chart = charts.lines(
            f"Mean of {field} per week (UTC weeks from Monday)",
            "",
            weeks,
            [Point(str(r["week"]), "mean", charts.as_float(r["mean"])) for r in rows],
        )
    else:
        chart = None
    return Drift(field, rows, chart)


def agent(ctx: Context, path: tuple[str, ...]) -> Page:
    """One agent type.

    Args:
        ctx: the request's context; ``days`` (default 30) and ``field`` (the decision
            field whose drift is charted; the decision-drift report's default).
        path: the agent type.

    Raises:
        NotFoundError: the agent made no call and logged no event in the window.
    """
    agent_type = path[0]
    window = day_window(ctx, 30)
    span = {"since": window.since, "until": window.until, "agent": agent_type}
    with ctx.reader.session(f"agent {agent_type}") as s:
        days = s.rows("ui_calls_by_day", span)
        kinds = s.rows("ui_agent_event_types", span)
        recent = s.rows("ui_agent_recent_events", {**span, "limit": RECENT})
    if not days and not kinds:
        raise NotFoundError(
            f"agent {agent_type!r} made no LLM call and logged no event in the last "
            f"{window.days} days"
        )
    drifted = drift(ctx, agent_type)
    categories = window.categories
    cost_chart = charts.stacked_bars(
        "LLM cost per day (USD, UTC days)",
        "USD",
        categories,
        [Point(str(r["day"]), agent_type, charts.as_float(r["cost"])) for r in days],
    )
    latency_chart = charts.lines(
        "Latency of valid LLM calls per day (ms, UTC days)",
        "ms",
        categories,
        [
            Point(str(r["day"]), label, charts.as_float(r[key]))
            for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"))
            for r in days
            if r[key] is not None
        ],
    )
    data = {
        "agent_type": agent_type,
        "window": window.as_dict(),
        "days": days,
        "event_types": kinds,
        "recent_events": recent,
        "drift": {"field": drifted.field, "error": drifted.error, "rows": drifted.rows},
    }
    values = {
        "agent_type": agent_type,
        "window": window,
        "days": days,
        "kinds": kinds,
        "recent": recent,
        "charts": [cost_chart, latency_chart],
        "drift": drifted,
    }
    return Page("agent.html", f"Agent {agent_type}", values, data)
