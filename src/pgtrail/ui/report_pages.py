"""``/reports``: every saved report; ``/reports/{name}``: its form, table, chart, downloads,
SQL and the equivalent command lines; ``/sql``: ad-hoc read-only SQL.

Reports and SQL run through :func:`pgtrail.read.reports.run_report` and
:func:`~pgtrail.read.reports.run_sql`, the functions behind ``pgtrail report`` and
``pgtrail sql``, with the UI's tenant: the same check, sandbox and binding.
"""

from __future__ import annotations

import datetime as dt
import shlex
from decimal import Decimal
from typing import Any

from pgtrail.errors import NotFoundError, ReportError, ReportFileError, SandboxError
from pgtrail.read import reports
from pgtrail.read.reports import Report
from pgtrail.ui import charts
from pgtrail.ui.charts import Chart, Point
from pgtrail.ui.pages import Context, Page, Table

SQL_MAX_ROWS = 1000
"""Rows shown of an ad-hoc query."""
_CATEGORY_NAMES = ("day", "week", "hour", "bucket", "date")
_VALUE_NAMES = ("total_cost", "cost", "calls", "executions", "events", "sessions")


def _param_dict(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "type": p.type,
            "default": p.default,
            "required": p.required,
            "help": p.help,
        }
        for p in report.params
    ]


def report_index(ctx: Context, _path: tuple[str, ...]) -> Page:
    """The list of saved reports.

    Args:
        ctx: the request's context.
        _path: no path variables.
    """
    catalog = ctx.catalog()
    items = sorted(catalog.reports.values(), key=lambda r: r.name)
    data = [
        {"name": r.name, "description": r.description, "parameters": _param_dict(r)} for r in items
    ]
    problems = {name: str(exc) for name, exc in sorted(catalog.problems.items())}
    values = {"reports": items, "problems": problems}
    return Page("reports.html", "Reports", values, {"reports": data, "skipped": problems})


def _display_path(report: Report) -> str:
    return f"queries/{report.name}.sql" if report.source == "pgtrail" else str(report.path)


def _psql_value(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def command_lines(
    report: Report, given: dict[str, str], bound: dict[str, object] | None
) -> dict[str, str]:
    """The ``pgtrail report`` and ``psql`` commands that run the report as shown.

    Args:
        report: the report.
        given: the parameter values given in the form.
        bound: the values as bound (moments resolved), or None when it could not run.
    """
    pgtrail = " ".join(
        ["pgtrail", "report", report.name]
        + [f"--param {shlex.quote(f'{k}={v}')}" for k, v in given.items()]
    )
    values = bound or {}
    psql = " ".join(
        ["psql"]
        + [
            f"-v {shlex.quote(p.name + '=' + _psql_value(values[p.name]))}"
            if p.name in values
            else f"-v {p.name}=VALUE"
            for p in report.params
        ]
        + ["-f", shlex.quote(_display_path(report))]
    )
    return {"pgtrail": pgtrail, "psql": psql}


def report_chart(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Chart | None:
    """A bar chart of a report whose rows have a category and a value column, else None.

    The category is a time column (day, week, hour...) when there is one, else the first
    text column; the value is the first cost or count column; a text column beside a time
    axis stacks the bars.

    Args:
        title: the report's name.
        columns: its columns.
        rows: its rows.
    """
    value = next((c for c in _VALUE_NAMES if c in columns), None)
    if value is None or not rows:
        return None
    at = columns.index(value)
    time_col = next((c for c in _CATEGORY_NAMES if c in columns), None)
    text_cols = [
        i
        for i, c in enumerate(columns)
        if c != time_col and all(isinstance(r[i], str) or r[i] is None for r in rows)
    ]
    if time_col is not None:
        t = columns.index(time_col)
        series = text_cols[0] if text_cols else None
        points = [
            Point(
                _label(r[t]),
                "(none)" if series is None or r[series] is None else str(r[series]),
                charts.as_float(r[at]),
            )
            for r in rows
        ]
        categories = list(dict.fromkeys(p.category for p in points))
        split = f", by {columns[series]}" if series is not None else ""
        unit = "USD" if "cost" in value else value
        return charts.stacked_bars(
            f"{title}: {value} per {time_col}{split} (UTC)", unit, categories, points
        )
    if not text_cols:
        return None
    c = text_cols[0]
    points = [
        Point("(none)" if r[c] is None else str(r[c]), value, charts.as_float(r[at]))
        for r in rows[:30]
    ]
    unit = "USD" if "cost" in value else value
    return charts.stacked_bars(
        f"{title}: {value} by {columns[c]}",
        unit,
        list(dict.fromkeys(p.category for p in points)),
        points,
        time_axis=False,
    )


def _label(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return str(value)


def report(ctx: Context, path: tuple[str, ...]) -> Page:
    """One saved report: run when every required parameter is given.

    Args:
        ctx: the request's context; a query parameter per report parameter (others are
            ignored, so a crafted name cannot reach the report).
        path: the report's name.

    Raises:
        NotFoundError: no report has this name.
    """
    catalog = ctx.catalog()
    try:
        found = catalog.get(path[0])
    except ReportError as exc:
        raise NotFoundError(str(exc)) from None
    given = {p.name: v for p in found.params if (v := ctx.param(p.name)) is not None}
    ready = all(p.name in given or not p.required for p in found.params)
    columns: list[str] = []
    rows: list[tuple[Any, ...]] = []
    bound: dict[str, object] | None = None
    elapsed = None
    error = None
    if ready:
        try:
            bound = reports.bind_values(found, given, now=ctx.now)
            reader = ctx.reader
            result = reports.run_report(
                reader.settings,
                found,
                given,
                timeout_ms=reader.timeout_ms,
                now=ctx.now,
                tenant=reader.tenant,
            )
        except ReportError as exc:
            error = str(exc)
        else:
            columns, rows, elapsed = result.columns, result.rows, result.elapsed_ms
    lines = command_lines(found, given, bound)
    data = {
        "name": found.name,
        "description": found.description,
        "parameters": _param_dict(found),
        "values": given,
        "ran": bool(columns),
        "error": error,
        "columns": columns,
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "elapsed_ms": None if elapsed is None else round(Decimal(elapsed), 1),
        "sql": found.body,
        "commands": lines,
    }
    values = {
        "report": found,
        "given": given,
        "ready": ready,
        "error": error,
        "columns": columns,
        "rows": rows,
        "elapsed": elapsed,
        "commands": lines,
        "chart": report_chart(found.name, columns, rows) if columns else None,
        "path": _display_path(found),
    }
    return Page("report.html", f"Report {found.name}", values, data, csv=Table(columns, rows))


def sql(ctx: Context, _path: tuple[str, ...]) -> Page:
    """Ad-hoc read-only SQL: the form, and the rows of ``q`` when given.

    Args:
        ctx: the request's context; ``q`` (one SELECT, WITH or VALUES statement).
        _path: no path variables.
    """
    text = ctx.param("q")
    columns: list[str] = []
    rows: list[tuple[Any, ...]] = []
    error = None
    truncated = False
    if text is not None:
        reader = ctx.reader
        try:
            result = reports.run_sql(
                reader.settings,
                text,
                max_rows=SQL_MAX_ROWS,
                timeout_ms=reader.timeout_ms,
                tenant=reader.tenant,
            )
        except ReportFileError as exc:
            error = f"statement refused: {exc}"
        except (ReportError, SandboxError) as exc:
            error = str(exc)
        else:
            columns, rows, truncated = result.columns, result.rows, result.truncated
    data = {
        "q": text,
        "error": error,
        "columns": columns,
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "truncated": truncated,
    }
    values = {
        "q": text or "",
        "error": error,
        "columns": columns,
        "rows": rows,
        "truncated": truncated,
    }
    return Page("sql.html", "SQL", values, data, csv=Table(columns, rows))
