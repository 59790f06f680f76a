"""The planted runaway: a research agent still running, and spending, when the tour checks.

Alerts that look at finished executions never see it. It is opened through the public API
with Redis (as a real deployment runs), dated three hours before the end of the simulated
window, writes its model calls, and stays open while ``pgtrail check`` runs; afterwards it
is abandoned, which writes its row like any execution the user walked away from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pgtrail
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.errors import PgtrailError
from pgtrail.shared_state import open_executions

RUNAWAY_WORKFLOW = "310 Research agent"
RUNAWAY_STARTED = dt.timedelta(hours=3)
"""How long before the end of the window the runaway started."""
RUNAWAY_CALLS = 24
RUNAWAY_CALL_COST = 0.35
"""USD per model call: 24 calls are $8.40."""
RUNAWAY_USER = "runaway-user"


@dataclass(frozen=True)
class Runaway:
    """The open runaway execution, or why it could not be planted."""

    execution_id: uuid.UUID | None
    reason: str = ""


def redis_problem(settings: Settings) -> str:
    """Why Redis cannot hold the runaway (not configured, unreachable), or ``""``."""
    if settings.redis_url is None:
        return "no Redis is configured (PGTRAIL_REDIS_URL)"
    try:
        open_executions(settings.redis_url, settings.redis_prefix, limit=1)
    except PgtrailError as exc:
        return str(exc)
    return ""


@contextlib.contextmanager
def planted_runaway(settings: Settings, end: dt.datetime, tenant: str) -> Iterator[Runaway]:
    """Keeps the runaway execution open in Redis for the block's duration.

    Args:
        settings: Where the demo writes (and the Redis that correlates executions).
        end: The end of the simulated window: the runaway started three hours before.
        tenant: The tenant it runs for.
    """
    problem = redis_problem(settings)
    if problem:
        yield Runaway(None, problem)
        return
    clock = [end - RUNAWAY_STARTED]
    with (
        Trail(settings, sync=True, clock=lambda: clock[0]) as trail,
        trail.execution(
            RUNAWAY_WORKFLOW,
            tenant_id=tenant,
            user_id=RUNAWAY_USER,
            context={"feature": "research", "environment": "production"},
        ) as ex,
        trail.process("311 Search and read"),
    ):
        for _ in range(RUNAWAY_CALLS):
            clock[0] += dt.timedelta(minutes=7)
            pgtrail.log_llm_execution(
                agent_type="researcher",
                model="claude-opus-4-1",
                input_tokens=18_000,
                output_tokens=900,
                total_cost=RUNAWAY_CALL_COST,
                processing_time_ms=41_000,
                prompt_version="v1",
            )
        trail.flush(30)
        try:
            yield Runaway(ex.execution_id)
        finally:
            clock[0] = end
            ex.abandon("stopped after the demo's check")
