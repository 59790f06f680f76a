"""One user's journey: their executions, journey events, handoffs and scores, by day and
session.

Executions are found by user and time window (``logs_execution``), journey events likewise
(``logs_user_journey``); LLM totals, handoffs and scores (given however late) are looked up
by execution id. An event
whose execution has no row yet (still running) is shown under that execution, marked open.
Everything is read in one read-only transaction with a statement timeout, scoped to a
tenant when one is given, with every value bound by the driver.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import NotFoundError
from pgtrail.read import reports, sandbox
from pgtrail.read.trace import TracedAgentEvent, TracedJourneyEvent, event_dict
from pgtrail.statements import STATEMENTS
from pgtrail.writer.redact import PSEUDONYM, hash_user_id


@dataclass
class JourneyExecution:
    """One execution of the user, with its LLM totals, journey events and handoffs.

    ``finished`` is False when only its events are written (it is still running).
    """

    execution_id: uuid.UUID
    created_at: dt.datetime
    session_id: str | None
    finished: bool
    workflow: str | None = None
    status: str = "running"
    error: str | None = None
    duration_ms: int | None = None
    llm_calls: int = 0
    failed_llm_calls: int = 0
    unpriced_llm_calls: int = 0
    cost: Decimal = Decimal(0)
    events: list[TracedJourneyEvent | TracedAgentEvent] = field(default_factory=list)

    @property
    def handoffs(self) -> list[TracedAgentEvent]:
        """The agent handoffs made during this execution."""
        return [
            e for e in self.events if isinstance(e, TracedAgentEvent) and e.event_type != "score"
        ]

    @property
    def scores(self) -> list[TracedAgentEvent]:
        """The scores and feedback given on this execution, during it or later."""
        return [
            e for e in self.events if isinstance(e, TracedAgentEvent) and e.event_type == "score"
        ]


@dataclass
class Session:
    """The executions of one session on one day (``session_id`` None: outside any session).

    ``continued`` marks a session already seen on an earlier day of the journey.
    """

    session_id: str | None
    executions: list[JourneyExecution] = field(default_factory=list)
    continued: bool = False

    @property
    def started_at(self) -> dt.datetime:
        """When its first execution (or event) of the day happened."""
        return min(_first_at(x) for x in self.executions)

    @property
    def ended_at(self) -> dt.datetime:
        """When its last execution of the day ended, or its last event happened."""
        return max(_last_at(x) for x in self.executions)

    @property
    def cost(self) -> Decimal:
        """LLM cost of its executions (USD)."""
        return sum((x.cost for x in self.executions), Decimal(0))

    @property
    def llm_calls(self) -> int:
        """LLM calls of its executions."""
        return sum(x.llm_calls for x in self.executions)

    @property
    def turns(self) -> int:
        """User messages received (``user_message_received`` journey events)."""
        return sum(
            1
            for x in self.executions
            for e in x.events
            if isinstance(e, TracedJourneyEvent) and e.event_type == "user_message_received"
        )

    @property
    def abandoned(self) -> bool:
        """A ``session_abandoned`` event was logged, or an execution ended abandoned."""
        return any(x.status == "abandoned" for x in self.executions) or any(
            isinstance(e, TracedJourneyEvent) and e.event_type == "session_abandoned"
            for x in self.executions
            for e in x.events
        )


@dataclass
class Day:
    """One UTC day of the journey."""

    day: dt.date
    sessions: list[Session] = field(default_factory=list)

    @property
    def executions(self) -> list[JourneyExecution]:
        """Every execution of the day, in time order."""
        return sorted((x for s in self.sessions for x in s.executions), key=_first_at)

    @property
    def cost(self) -> Decimal:
        """LLM cost of the day (USD)."""
        return sum((s.cost for s in self.sessions), Decimal(0))


@dataclass
class Journey:
    """A user's journey over a window: days, each with its sessions."""

    user_id: str
    stored_user_id: str
    since: dt.datetime
    until: dt.datetime
    days: list[Day]

    @property
    def executions(self) -> list[JourneyExecution]:
        """Every execution in the window, in time order."""
        return [x for d in self.days for x in d.executions]

    @property
    def cost(self) -> Decimal:
        """LLM cost over the window (USD)."""
        return sum((d.cost for d in self.days), Decimal(0))

    @property
    def llm_calls(self) -> int:
        """LLM calls over the window."""
        return sum(x.llm_calls for x in self.executions)

    @property
    def session_ids(self) -> list[str | None]:
        """The distinct sessions, in order of first appearance."""
        seen: dict[str | None, None] = {}
        for day in self.days:
            for session in day.sessions:
                seen.setdefault(session.session_id)
        return list(seen)


def _first_at(execution: JourneyExecution) -> dt.datetime:
    return min([execution.created_at, *(e.created_at for e in execution.events)])


def _last_at(execution: JourneyExecution) -> dt.datetime:
    ends = [execution.created_at, *(e.created_at for e in execution.events)]
    if execution.duration_ms is not None:
        ends.append(execution.created_at + dt.timedelta(milliseconds=execution.duration_ms))
    return max(ends)


def stored_user_id(settings: Settings, user_id: str) -> str:
    """The id as the writer stored it: HMAC-hashed when ``PGTRAIL_USER_HMAC_KEY`` is set."""
    if settings.user_hmac_key and not PSEUDONYM.match(user_id):
        return hash_user_id(user_id, settings.user_hmac_key)
    return user_id


def load_journey(
    settings: Settings,
    user_id: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    tenant: str | None = None,
    timeout_ms: int | None = None,
) -> Journey:
    """Reads one user's executions and events in ``[since, until)`` and groups them.

    Raises:
        NotFoundError: the user has no execution and no journey event in the window.
        DatabaseUnavailableError: PostgreSQL cannot be reached.
        ReportError: a query failed or ran past the timeout.
    """
    if until <= since:
        raise NotFoundError(
            f"the window is empty: --until ({until}) is not after --since ({since})"
        )
    stored = stored_user_id(settings, user_id)
    limit = timeout_ms or settings.statement_timeout_ms
    window = {"user": stored, "since": since, "until": until}
    with db.connect(settings) as conn:
        try:
            with sandbox.read_session(conn, limit, tenant=tenant) as session:
                rows = session.query(STATEMENTS["journey_executions"], window).dicts()
                journey_rows = session.query(STATEMENTS["journey_events"], window).dicts()
                known = {r["execution_id"] for r in rows}
                missing = sorted({r["execution_id"] for r in journey_rows} - known)
                if missing:
                    rows += session.query(
                        STATEMENTS["journey_executions_by_id"], {"ids": missing}
                    ).dicts()
                ids = sorted(known | set(missing))
                llm = (
                    session.query(STATEMENTS["journey_llm_totals"], {"ids": ids}).dicts()
                    if ids
                    else []
                )
                handoffs = (
                    session.query(STATEMENTS["journey_handoffs"], {"ids": ids}).dicts()
                    if ids
                    else []
                )
                # Scores are agent events of their own type; shown beside the handoffs.
                handoffs += (
                    session.query(STATEMENTS["journey_scores"], {"ids": ids}).dicts() if ids else []
                )
        except psycopg.Error as exc:
            raise reports.query_failure(f"journey of user {user_id}", exc, limit) from exc
    if not rows and not journey_rows:
        scope = f" of tenant {tenant!r}" if tenant is not None else ""
        hashed = f" (stored as {stored})" if stored != user_id else ""
        raise NotFoundError(
            f"no executions or journey events for user {user_id!r}{hashed}{scope} between "
            f"{since.isoformat()} and {until.isoformat()}. Check the id, widen --since, "
            "or check --tenant."
        )
    executions = _executions(rows, journey_rows, llm, handoffs)
    return Journey(user_id, stored, since, until, group_by_day(executions))


def _executions(
    rows: list[dict[str, Any]],
    journey_rows: list[dict[str, Any]],
    llm: list[dict[str, Any]],
    handoffs: list[dict[str, Any]],
) -> list[JourneyExecution]:
    by_id: dict[uuid.UUID, JourneyExecution] = {}
    for row in rows:
        by_id.setdefault(
            row["execution_id"],
            JourneyExecution(
                execution_id=row["execution_id"],
                created_at=row["created_at"],
                session_id=row["session_id"],
                finished=True,
                workflow=row["workflow"],
                status=row["status"],
                error=row["error"],
                duration_ms=row["duration_ms"],
            ),
        )
    for row in journey_rows:
        execution = by_id.get(row["execution_id"])
        if execution is None:
            execution = JourneyExecution(
                execution_id=row["execution_id"],
                created_at=row["created_at"],
                session_id=row["session_id"],
                finished=False,
            )
            by_id[row["execution_id"]] = execution
        execution.events.append(
            TracedJourneyEvent(
                created_at=row["created_at"],
                span_id=row["span_id"],
                event_type=row["event_type"],
                data=row["particular_data"] if isinstance(row["particular_data"], dict) else {},
                session_id=row["session_id"],
                execution_id=row["execution_id"],
            )
        )
    for row in handoffs:
        execution = by_id.get(row["execution_id"])
        if execution is not None:
            execution.events.append(
                TracedAgentEvent(
                    created_at=row["created_at"],
                    span_id=row["span_id"],
                    event_type=row["event_type"],
                    agent_type=row["agent_type"],
                    data=row["particular_data"] if isinstance(row["particular_data"], dict) else {},
                    execution_id=row["execution_id"],
                )
            )
    for row in llm:
        execution = by_id.get(row["execution_id"])
        if execution is not None:
            execution.llm_calls = row["calls"]
            execution.failed_llm_calls = row["failed"]
            execution.unpriced_llm_calls = row["unpriced"]
            execution.cost = row["cost"]
    for execution in by_id.values():
        execution.events.sort(key=lambda e: (e.created_at, e.kind != "journey"))
    return sorted(by_id.values(), key=lambda x: (_first_at(x), str(x.execution_id)))


def group_by_day(executions: list[JourneyExecution]) -> list[Day]:
    """Executions (in time order) grouped by UTC day, then by session in order of appearance."""
    days: dict[dt.date, Day] = {}
    seen_sessions: set[str] = set()
    for execution in executions:
        day = _first_at(execution).astimezone(dt.UTC).date()
        bucket = days.setdefault(day, Day(day))
        session = next((s for s in bucket.sessions if s.session_id == execution.session_id), None)
        if session is None:
            session = Session(
                execution.session_id,
                continued=execution.session_id is not None
                and execution.session_id in seen_sessions,
            )
            bucket.sessions.append(session)
            if execution.session_id is not None:
                seen_sessions.add(execution.session_id)
        session.executions.append(execution)
    return list(days.values())


# --------------------------------------------------------------------------- JSON


def execution_dict(execution: JourneyExecution) -> dict[str, Any]:
    """One execution of the journey as a JSON-ready dictionary."""
    return {
        "execution_id": execution.execution_id,
        "created_at": execution.created_at,
        "state": "finished" if execution.finished else "open",
        "workflow": execution.workflow,
        "status": execution.status,
        "error": execution.error,
        "duration_ms": execution.duration_ms,
        "llm_calls": execution.llm_calls,
        "failed_llm_calls": execution.failed_llm_calls,
        "unpriced_llm_calls": execution.unpriced_llm_calls,
        "cost": execution.cost,
        "events": [event_dict(e) for e in execution.events],
    }


def journey_dict(journey: Journey) -> dict[str, Any]:
    """The whole journey as a JSON-ready dictionary."""
    return {
        "user_id": journey.user_id,
        "stored_user_id": journey.stored_user_id,
        "since": journey.since,
        "until": journey.until,
        "sessions": len(journey.session_ids),
        "executions": len(journey.executions),
        "llm_calls": journey.llm_calls,
        "cost": journey.cost,
        "days": [
            {
                "date": day.day,
                "cost": day.cost,
                "sessions": [
                    {
                        "session_id": session.session_id,
                        "continued": session.continued,
                        "started_at": session.started_at,
                        "ended_at": session.ended_at,
                        "turns": session.turns,
                        "llm_calls": session.llm_calls,
                        "cost": session.cost,
                        "abandoned": session.abandoned,
                        "executions": [execution_dict(x) for x in session.executions],
                    }
                    for session in day.sessions
                ],
            }
            for day in journey.days
        ],
    }
