"""``/``: cost per day stacked by agent, model or tenant; calls, error rate, latency; the top
workflows and users by cost, for a window of whole UTC days."""

from __future__ import annotations

from decimal import Decimal

from pgtrail.ui import charts
from pgtrail.ui.charts import Point
from pgtrail.ui.pages import BadRequestError, Context, Page
from pgtrail.ui.windows import day_window

DIMENSIONS = {"agent": "agent type", "model": "model", "tenant": "tenant"}
"""What the cost chart may be stacked by, and how the chart names it."""
TOP = 10
"""Rows of the top-workflow and top-user tables."""


def overview(ctx: Context, _path: tuple[str, ...]) -> Page:
    """The overview page.

    Args:
        ctx: the request's context; ``days`` (default 7) and ``by`` (agent, model, tenant).
        _path: no path variables.
    """
    window = day_window(ctx, 7)
    by = ctx.param("by", "agent") or "agent"
    if by not in DIMENSIONS:
        raise BadRequestError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    span = {"since": window.since, "until": window.until}
    with ctx.reader.session("the overview") as s:
        cost_rows = s.rows("ui_cost_by_day", {**span, "by": by})
        day_rows = s.rows("ui_calls_by_day", {**span, "agent": None})
        workflows = s.rows("ui_top_workflows", {**span, "limit": TOP})
        users = s.rows("ui_top_users", {**span, "limit": TOP})
    days = window.categories
    cost_chart = charts.stacked_bars(
        f"LLM cost per day (USD, UTC days), by {DIMENSIONS[by]}",
        "USD",
        days,
        [Point(str(r["day"]), r["key"] or "(none)", charts.as_float(r["cost"])) for r in cost_rows],
    )
    calls_chart = charts.stacked_bars(
        "LLM calls per day (UTC days), by outcome",
        "calls",
        days,
        [
            p
            for r in day_rows
            for p in (
                Point(str(r["day"]), "valid", float(r["calls"] - r["failed"])),
                Point(str(r["day"]), "failed", float(r["failed"])),
            )
        ],
    )
    latency_chart = charts.lines(
        "Latency of valid LLM calls per day (ms, UTC days)",
        "ms",
        days,
        [
            Point(str(r["day"]), label, charts.as_float(r[key]))
            for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"))
            for r in day_rows
            if r[key] is not None
        ],
    )
    calls = sum(int(r["calls"]) for r in day_rows)
    failed = sum(int(r["failed"]) for r in day_rows)
    totals = {
        "calls": calls,
        "failed_calls": failed,
        "error_rate": None if calls == 0 else round(Decimal(failed) * 100 / calls, 2),
        "cost": sum((Decimal(r["cost"]) for r in day_rows), Decimal(0)),
    }
    data = {
        "window": window.as_dict(),
        "by": by,
        "totals": totals,
        "cost_by_day": cost_rows,
        "days": day_rows,
        "top_workflows": workflows,
        "top_users": users,
    }
    values = {
        "window": window,
        "by": by,
        "dimensions": DIMENSIONS,
        "totals": totals,
        "days": day_rows,
        "workflows": workflows,
        "users": users,
        "charts": [cost_chart, calls_chart, latency_chart],
    }
    return Page("overview.html", "Overview", values, data)
