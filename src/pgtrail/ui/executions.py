"""``/executions``: the filterable list with keyset pages; ``/executions/{id}``: one
execution as a waterfall with its model calls, decisions and journey events."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from pgtrail.errors import NotFoundError
from pgtrail.read.trace import load_trace, parse_execution_id
from pgtrail.read.trace_view import TraceLimits, view_dict, view_trace
from pgtrail.ui import waterfall
from pgtrail.ui.pages import BadRequestError, Context, Page
from pgtrail.ui.windows import moment

PAGE_SIZE = 50
"""Executions per page of the list, unless ``limit`` says otherwise."""
MAX_PAGE_SIZE = 500
"""The most executions one page of the list shows."""
FILTERS = ("workflow", "user", "session", "tenant", "status")
"""The list's equality filters, each a query parameter."""
SORTS = {"time": "ui_executions_by_time", "duration": "ui_executions_by_duration"}
"""How the list may be sorted (newest or longest first), and the statement of each."""
BODY_CHARS = 20_000
"""Characters of a prompt body or payload shown inline; the rest is counted."""


def _cursor(ctx: Context, sort: str) -> dict[str, object]:
    """The keyset cursor of the ``after`` parameter: ``VALUE_ID`` of the previous page's end."""
    raw = ctx.param("after")
    if raw is None:
        return {"after_at": None, "after_value": None, "after_id": None}
    value, _, ident = raw.rpartition("_")
    try:
        after_id = uuid.UUID(ident)
        if sort == "time":
            at = dt.datetime.fromisoformat(value)
            return {"after_at": at, "after_value": None, "after_id": after_id}
        return {"after_at": None, "after_value": int(value), "after_id": after_id}
    except ValueError:
        raise BadRequestError(f"after {raw!r} is not a cursor of this list") from None


def _next_cursor(row: dict[str, Any], sort: str) -> str:
    if sort == "time":
        return f"{row['created_at'].isoformat()}_{row['execution_id']}"
    duration = row["duration_ms"]
    return f"{-1 if duration is None else duration}_{row['execution_id']}"


def execution_list(ctx: Context, _path: tuple[str, ...]) -> Page:
    """The list of executions.

    Args:
        ctx: the request's context; ``since`` (default 7d), ``until``, the :data:`FILTERS`,
            ``sort`` (time or duration), ``limit`` (rows per page, default 50) and ``after``
            (the cursor of the next page).
        _path: no path variables.
    """
    sort = ctx.param("sort", "time") or "time"
    if sort not in SORTS:
        raise BadRequestError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    size = ctx.int_param("limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    params: dict[str, object] = {
        "since": moment(ctx, "since", "7d"),
        "until": moment(ctx, "until", "now"),
        **{name: ctx.param(name) for name in FILTERS},
        **_cursor(ctx, sort),
        "limit": size + 1,
    }
    with ctx.reader.session("the list of executions") as s:
        rows = s.rows(SORTS[sort], params)
        more = len(rows) > size
        rows = rows[:size]
        ids = [r["execution_id"] for r in rows]
        totals = s.rows("ui_llm_totals", {"ids": ids}) if ids else []
    by_id = {t["execution_id"]: t for t in totals}
    for row in rows:
        found = by_id.get(row["execution_id"], {})
        row["llm_calls"] = int(found.get("calls", 0))
        row["cost"] = Decimal(found.get("cost", 0))
    after = _next_cursor(rows[-1], sort) if more and rows else None
    current = {k: ctx.param(k) for k in ("since", "until", *FILTERS, "sort", "limit")}
    data = {"sort": sort, "filters": current, "executions": rows, "next": after}
    values = {"rows": rows, "sort": sort, "current": current, "after": after, "filters": FILTERS}
    return Page("executions.html", "Executions", values, data)


def _limits(ctx: Context) -> TraceLimits:
    if ctx.param("all") == "1":
        return TraceLimits.unlimited(ctx.param("process"))
    return TraceLimits(
        depth=ctx.int_param("depth", 20, 0, 10_000),
        breadth=ctx.int_param("breadth", 50, 1, 10_000),
        events=ctx.int_param("events", 50, 0, 10_000),
        lines=ctx.int_param("lines", 1000, 1, 100_000),
        process=ctx.param("process"),
    )


def execution(ctx: Context, path: tuple[str, ...]) -> Page:
    """One execution.

    Args:
        ctx: the request's context; ``process`` (a span id whose subtree is shown),
            ``depth``, ``breadth``, ``events``, ``lines`` (the limits of ``pgtrail trace``)
            and ``all=1`` (no limits).
        path: the execution id.
    """
    execution_id = parse_execution_id(path[0])
    limits = _limits(ctx)
    reader = ctx.reader
    trace = load_trace(
        reader.settings, execution_id, tenant=reader.tenant, timeout_ms=reader.timeout_ms
    )
    view = view_trace(trace, limits)
    with reader.session(f"the model calls of {execution_id}") as s:
        bodies = s.rows("ui_llm_call_bodies", {"id": execution_id, "chars": BODY_CHARS})
    rows = waterfall.build(view, waterfall.bodies_by_call(bodies))
    data = view_dict(view)
    data["model_call_bodies"] = bodies
    current = {k: ctx.param(k) for k in ("process", "depth", "breadth", "events", "lines")}
    values = {"trace": trace, "view": view, "waterfall": rows, "current": current}
    return Page("execution.html", f"Execution {execution_id}", values, data)


def prompt(ctx: Context, path: tuple[str, ...]) -> Page:
    """One prompt body, whole: what a model call's section cuts at ``BODY_CHARS``.

    Args:
        ctx: the request's context.
        path: the prompt's hash.

    Raises:
        NotFoundError: no prompt with this hash is stored where this UI may read.
    """
    prompt_hash = path[0]
    with ctx.reader.session(f"prompt {prompt_hash}") as s:
        found = s.rows("ui_prompt", {"hash": prompt_hash})
    if not found:
        raise NotFoundError(f"no prompt {prompt_hash!r} is stored")
    row = found[0]
    return Page("prompt.html", f"Prompt {prompt_hash}", {"prompt": row}, row)
