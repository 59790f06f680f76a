"""The execution row: merging process records, and reading a stored execution back for a
late join."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgtrail.ids import execution_event_id
from pgtrail.statements import STATEMENTS
from pgtrail.tables import EXECUTION
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.redact import as_pseudonym

if TYPE_CHECKING:
    from pgtrail.config import Settings
    from pgtrail.context import ExecutionState


log = logging.getLogger("pgtrail")

JOINED_EVENT = "execution_joined"
"""``event_type`` of a joined worker's own execution row: its steps, when they could not
reach the execution's row (Redis down, or the execution already finished)."""


@dataclass(frozen=True)
class Identity:
    """Who a joined execution belongs to, and where that was learnt."""

    tenant_id: str
    user_id: str | None
    session_id: str | None
    workflow: str | None
    source: str
    """``redis`` (open), ``database`` (its stored row), ``join`` (the arguments), ``unknown``."""
    root_span_id: str | None = None
    """The execution's root process, when known (what a late score attaches to)."""


_RECENT_DAYS = 7


def _windows(execution_id: uuid.UUID, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """``created_at`` ranges to search, narrowest first: each prunes the day partitions.

    A root's row is created at the time its UUIDv7 holds (pgtrail makes the id from it), so
    the days around that time hold it; an id of the caller's own (``execution_id=``) is
    looked for over the last week.
    """
    windows = []
    if execution_id.version == 7:
        at = dt.datetime.fromtimestamp((execution_id.int >> 80) / 1000, dt.UTC)
        if now - dt.timedelta(days=3650) < at < now + dt.timedelta(days=1):
            windows.append((at - dt.timedelta(days=1), at + dt.timedelta(days=1)))
    windows.append((now - dt.timedelta(days=_RECENT_DAYS), now + dt.timedelta(days=1)))
    return windows


def _lookup(settings: Settings, execution_id: uuid.UUID, timeout_s: float) -> Identity | None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(settings.dsn).get("options") or ""
    options = (
        f"{given} -c search_path={settings.db_schema},public "
        f"-c statement_timeout={max(1, int(timeout_s * 1000))}"
    ).strip()
    # libpq waits at least 2 s to connect whatever is asked; the caller waits no longer
    # than timeout_s in any case (see stored_identity).
    with psycopg.connect(
        settings.dsn, autocommit=True, connect_timeout=max(2, math.ceil(timeout_s)), options=options
    ) as conn:
        now = dt.datetime.now(dt.UTC)
        for since, until in _windows(execution_id, now):
            row = conn.execute(
                STATEMENTS["executions_stored_identity"],
                {"id": execution_id, "since": since, "until": until},
            ).fetchone()
            if row is not None:
                tenant, user, session, workflow, span = row
                if settings.user_hmac_key:
                    user = as_pseudonym(user)  # written hashed: not to be hashed again
                return Identity(tenant or "default", user, session, workflow, "database", span)
    return None


def stored_identity(
    settings: Settings, execution_id: uuid.UUID, timeout_s: float
) -> Identity | None:
    """Tenant, user and session of an execution's stored row; None when not found in time.

    Args:
        settings: Where the rows are (``dsn``, ``db_schema``).
        execution_id: The execution whose ``logs_execution`` row is looked up.
        timeout_s: Longest wait, in seconds. The look-up runs on a thread of its own, so
            the caller never waits longer, whatever the network does; it never raises (a
            failure is said once in the log, and counts as not found).
    """
    found: list[Identity | None] = []
    problem: list[str] = []
    done = threading.Event()

    def look() -> None:
        try:
            found.append(_lookup(settings, execution_id, timeout_s))
        except Exception as exc:
            problem.append(f"{type(exc).__name__}: {exc}")
        finally:
            done.set()

    threading.Thread(target=look, name="pgtrail-join-lookup", daemon=True).start()
    if not done.wait(timeout_s):
        problem.append(f"no answer within {timeout_s:g} s")
    if problem:
        key = problem[0].split(":")[0]
        if key not in _lookup_reported:
            _lookup_reported.add(key)
            log.error(
                "pgtrail: could not look up execution %s in PostgreSQL (%s); said once",
                execution_id,
                problem[0],
            )
        return None
    return found[0] if found else None


_lookup_reported: set[str] = set()


def merge_process_records(records: list[dict[str, Any]], root_span_id: str) -> list[dict[str, Any]]:
    """One record per span (finished beats running), in start order, levels from the tree."""
    by_span: dict[str, dict[str, Any]] = {}
    for record in records:
        known = by_span.get(record["span_id"])
        if known is None or (
            known.get("status") == "running" and record.get("status") != "running"
        ):
            by_span[record["span_id"]] = record
    parents = {sid: rec.get("parent_span_id") for sid, rec in by_span.items()}

    def level(span_id: str) -> int:
        depth, current_id, seen = 0, span_id, set()
        while current_id != root_span_id:
            parent = parents.get(current_id)
            if parent is None or parent in seen:
                # A parent this execution never recorded (another service's span): one level
                # below its own recorded level, at least under the root.
                return max(depth + 1, int(by_span[span_id].get("nesting_level") or 1))
            seen.add(current_id)
            current_id = parent
            depth += 1
        return depth

    merged = sorted(by_span.values(), key=lambda r: (r["started_at"], r["nesting_level"]))
    for record in merged:
        record["nesting_level"] = level(record["span_id"])
    return merged


def json_dict(raw: str | None) -> dict[str, Any]:
    """A JSON object held in Redis metadata, or ``{}`` when absent or not an object."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def execution_record(
    state: ExecutionState,
    processes: list[dict[str, Any]],
    status: str,
    error: str | None,
    finalized: dt.datetime,
    sampling: dict[str, Any] | None = None,
) -> QueuedRecord:
    """The ``logs_execution`` record of ``state``: the one place that row is made.

    :class:`pgtrail.Trail` and the OTLP assembler enqueue it through
    :meth:`pgtrail.Trail.enqueue_execution`.

    Args:
        state: The execution; a root's row, or a join's own ``execution_joined`` row.
        processes: Every process of the execution in start order, as stored.
        status: ``success``, ``error`` or ``abandoned``.
        error: What went wrong, or None.
        finalized: When it ended (its duration is counted to here, never below zero).
        sampling: The sampling decision to record in ``particular_data``, or None.
    """
    duration = round((finalized - state.started_at).total_seconds() * 1000)
    args: dict[str, Any] = {
        "workflow": state.workflow,
        "parent_execution_id": state.parent_execution_id,
        "status": status,
        "error": error,
        "processes": processes,
        "context": state.context,
        "finalized_at": finalized,
        "duration_ms": max(0, duration),
    }
    if sampling is not None:
        args["sampling"] = sampling
    event_id: uuid.UUID | None = execution_event_id(state.execution_id)
    if not state.is_root:
        # A join's own row (see `join`): an event id of its own, and no finalisation
        # time, so that readers of "the" row of the execution pick the root's.
        event_id = None
        args["event_type"] = JOINED_EVENT
        args["finalized_at"] = None
    return QueuedRecord(
        EXECUTION,
        event_id,
        state.execution_id,
        state.started_at,
        state.tenant_id,
        state.user_id,
        state.session_id,
        state.root_span.span_id,
        args,
    )
