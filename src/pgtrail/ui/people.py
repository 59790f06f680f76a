"""``/users/{user_id}``: a user's journey over days; ``/sessions/{session_id}``: the turns of
one conversation in order, with cost and latency."""

from __future__ import annotations

from decimal import Decimal

from pgtrail.errors import NotFoundError
from pgtrail.read.journey import journey_dict, load_journey
from pgtrail.ui.pages import Context, Page
from pgtrail.ui.windows import moment

SESSION_ROWS = 1000
"""Executions and journey events shown of one session, each."""


def user(ctx: Context, path: tuple[str, ...]) -> Page:
    """One user's journey.

    Args:
        ctx: the request's context; ``since`` (default 30d) and ``until`` (default now).
        path: the user id (hashed for the lookup if the writer hashes ids).
    """
    user_id = path[0]
    since, until = moment(ctx, "since", "30d"), moment(ctx, "until", "now")
    reader = ctx.reader
    journey = load_journey(
        reader.settings, user_id, since, until, tenant=reader.tenant, timeout_ms=reader.timeout_ms
    )
    current = {"since": ctx.param("since"), "until": ctx.param("until")}
    values = {"journey": journey, "current": current}
    return Page("user.html", f"User {user_id}", values, journey_dict(journey))


def session(ctx: Context, path: tuple[str, ...]) -> Page:
    """One session's turns.

    Args:
        ctx: the request's context.
        path: the session id.

    Raises:
        NotFoundError: no execution and no journey event carries this session id.
    """
    session_id = path[0]
    key = {"session": session_id, "limit": SESSION_ROWS}
    with ctx.reader.session(f"session {session_id}") as s:
        executions = s.rows("ui_session_executions", key)
        events = s.rows("ui_session_events", key)
        ids = [r["execution_id"] for r in executions]
        totals = s.rows("ui_llm_totals", {"ids": ids}) if ids else []
    if not executions and not events:
        raise NotFoundError(f"no executions or journey events carry session {session_id!r}")
    by_id = {t["execution_id"]: t for t in totals}
    by_execution: dict[object, list[dict[str, object]]] = {}
    for event in events:
        by_execution.setdefault(event["execution_id"], []).append(event)
    for row in executions:
        found = by_id.get(row["execution_id"], {})
        row["llm_calls"] = int(found.get("calls", 0))
        row["cost"] = Decimal(found.get("cost", 0))
        row["events"] = by_execution.get(row["execution_id"], [])
    cost = sum((r["cost"] for r in executions), Decimal(0))
    users = sorted({str(r["user_id"]) for r in executions if r["user_id"] is not None})
    data = {
        "session_id": session_id,
        "turns": len(executions),
        "cost": cost,
        "users": users,
        "executions": executions,
        "events": events,
    }
    values = {"session_id": session_id, "rows": executions, "cost": cost, "users": users}
    return Page("session.html", f"Session {session_id}", values, data)
