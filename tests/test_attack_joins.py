"""Joins never guess: a worker in another process stores its events under the right tenant.

Each worker is a separate Python process (``multiprocessing`` with the ``spawn`` context)
that joins an execution by id and logs one journey event inside one process step. Cases:
(a) the execution is open and Redis is up; (b) it finished (finished and flushed before the
join, as feedback minutes later), with Redis up and with Redis down; (c) it is open
elsewhere but the worker's Redis is down (a closed port), with and without explicit
identity; (d) the id is unknown, with and without explicit identity. Decided by effect:
the stored rows' tenant, user and session; a tenant-scoped read (row-level security) of the
wrong tenant does not see them, the right one does; the user's journey shows them; and the
worker's step is in the execution's row, or in the join's own ``execution_joined`` row
(counted by the worker and reported).
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import socket
import threading
import uuid
from typing import Any

import pytest

import pgtrail
from dbrows import one, rows
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.executions import JOINED_EVENT
from pgtrail.read import reports
from pgtrail.read.journey import load_journey
from pgtrail.read.trace import ProcessNode, load_trace
from pgtrail.writer.redact import hash_user_id

ACME = ("acme", "u-acme", "s-acme")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"redis://127.0.0.1:{port}/0"


def worker(
    settings_json: str,
    execution_id: str,
    marker: str,
    explicit: dict[str, Any],
    results: Any,
) -> None:
    """Runs in a spawned process: joins, logs one event inside one step, reports counters."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("pgtrail").addHandler(Collect())
    settings = Settings.model_validate_json(settings_json)
    with Trail(settings, sync=True) as trail:
        with trail.join(uuid.UUID(execution_id), **explicit) as ex, ex.process(f"step {marker}"):
            pgtrail.log_user_journey(marker, {"from": "worker"})
        trail.flush(30)
        results.put({"unmerged": trail.unmerged_processes, "messages": messages})


def run_worker(
    settings: Settings, execution_id: uuid.UUID, marker: str, **explicit: str
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(
        target=worker,
        args=(settings.model_dump_json(), str(execution_id), marker, explicit, results),
    )
    process.start()
    found: dict[str, Any] = results.get(timeout=120)
    process.join(60)
    assert process.exitcode == 0
    return found


def stored_identity(settings: Settings, marker: str) -> tuple[Any, ...]:
    return tuple(
        one(
            settings.dsn,
            "SELECT tenant_id, user_id, session_id FROM logs_user_journey WHERE event_type = %s",
            marker,
        )
    )


def visible_to(settings: Settings, tenant: str, marker: str) -> int:
    """How many of the worker's events a reader scoped to ``tenant`` sees."""
    result = reports.run_sql(
        settings,
        f"SELECT count(*) FROM logs_user_journey WHERE event_type = '{marker}'",
        tenant=tenant,
    )
    return int(result.rows[0][0])


def in_journey(settings: Settings, user: str, marker: str) -> bool:
    now = dt.datetime.now(dt.UTC)
    journey = load_journey(settings, user, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    events = [
        event
        for day in journey.days
        for session in day.sessions
        for execution in session.executions
        for event in execution.events
    ]
    return any(getattr(e, "event_type", None) == marker for e in events)


def steps(settings: Settings, execution_id: uuid.UUID) -> dict[str, str]:
    """Step name -> the event type of the logs_execution row that holds it."""
    return dict(
        rows(
            settings.dsn,
            "SELECT s.name, e.event_type FROM logs_execution_step AS s "
            "JOIN logs_execution AS e ON e.execution_id = s.execution_id "
            "AND e.created_at = s.execution_created_at WHERE s.execution_id = %s",
            execution_id,
        )
    )


def tree_names(node: ProcessNode) -> list[str]:
    return [node.name, *(name for child in node.children for name in tree_names(child))]


def assert_isolated(settings: Settings, marker: str, tenant: str, user: str) -> None:
    assert visible_to(settings, "globex", marker) == 0
    assert visible_to(settings, tenant, marker) == 1
    assert in_journey(settings, user, marker)


def acme_execution(trail: Trail) -> Any:
    return trail.execution(
        "001 Main", tenant_id=ACME[0], user_id=ACME[1], session_id=ACME[2], context={"f": 1}
    )


def test_a_open_execution_with_redis_up(settings: Settings) -> None:
    with Trail(settings, sync=True) as root, acme_execution(root) as ex:
        found = run_worker(settings, ex.execution_id, "worker-a")
    assert stored_identity(settings, "worker-a") == ACME
    assert found["unmerged"] == 0
    assert steps(settings, ex.execution_id)["step worker-a"] == "execution_finalized"
    assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == 1
    assert_isolated(settings, "worker-a", "acme", ACME[1])


@pytest.mark.parametrize("worker_redis", ["up", "down"])
def test_b_finished_execution_joined_later(settings: Settings, worker_redis: str) -> None:
    with Trail(settings, sync=True) as root:
        with acme_execution(root) as ex:
            pgtrail.log_user_journey("root-event")
        assert root.flush(30)
    worker_settings = settings
    if worker_redis == "down":
        worker_settings = settings.model_copy(update={"redis_url": closed_port_url()})
    found = run_worker(worker_settings, ex.execution_id, "worker-b")
    assert stored_identity(settings, "worker-b") == ACME
    # The worker's step could not reach the finished row: its own row holds it, counted
    # and reported; the execution's row is still the one that readers pick.
    assert found["unmerged"] == 1
    assert any("could not reach its row" in m for m in found["messages"])
    assert steps(settings, ex.execution_id) == {
        "001 Main": "execution_finalized",
        "step worker-b": JOINED_EVENT,
    }
    joined = one(
        settings.dsn,
        "SELECT tenant_id, user_id, session_id, finalized_at FROM logs_execution "
        "WHERE event_type = %s",
        JOINED_EVENT,
    )
    assert tuple(joined) == (*ACME, None)
    assert_isolated(settings, "worker-b", "acme", ACME[1])
    trace = load_trace(settings, ex.execution_id)
    assert trace.root.name == "001 Main"
    assert "step worker-b" in tree_names(trace.root)


@pytest.mark.parametrize("explicit", [True, False])
def test_c_open_execution_while_the_workers_redis_is_down(
    settings: Settings, explicit: bool
) -> None:
    worker_settings = settings.model_copy(update={"redis_url": closed_port_url()})
    given = dict(zip(("tenant_id", "user_id", "session_id"), ACME, strict=True))
    with Trail(settings, sync=True) as root, acme_execution(root) as ex:
        found = run_worker(
            worker_settings, ex.execution_id, "worker-c", **(given if explicit else {})
        )
    assert found["unmerged"] == 1
    assert steps(settings, ex.execution_id) == {
        "001 Main": "execution_finalized",
        "step worker-c": JOINED_EVENT,
    }
    if explicit:
        assert stored_identity(settings, "worker-c") == ACME
        assert_isolated(settings, "worker-c", "acme", ACME[1])
    else:
        # Nothing knew the identity: stored (never lost) under no tenant of anybody's, and
        # said so; acme's readers do not get another tenant's data by guess either way.
        assert stored_identity(settings, "worker-c") == ("default", None, None)
        assert any("neither open in Redis nor stored" in m for m in found["messages"])
        assert visible_to(settings, "acme", "worker-c") == 0
        assert visible_to(settings, "default", "worker-c") == 1


@pytest.mark.parametrize("explicit", [True, False])
def test_d_unknown_execution_id(settings: Settings, explicit: bool) -> None:
    unknown = uuid.uuid4()
    given = {"tenant_id": "initech", "user_id": "u-i", "session_id": "s-i"} if explicit else {}
    found = run_worker(settings, unknown, "worker-d", **given)
    assert found["unmerged"] == 1
    assert steps(settings, unknown) == {"step worker-d": JOINED_EVENT}
    if explicit:
        assert stored_identity(settings, "worker-d") == ("initech", "u-i", "s-i")
        assert visible_to(settings, "acme", "worker-d") == 0
        assert visible_to(settings, "initech", "worker-d") == 1
        assert in_journey(settings, "u-i", "worker-d")
    else:
        assert stored_identity(settings, "worker-d") == ("default", None, None)
        assert any("neither open in Redis nor stored" in m for m in found["messages"])


def test_found_identity_wins_over_explicit_arguments(settings: Settings) -> None:
    with Trail(settings, sync=True) as root, acme_execution(root) as ex:
        pass
    found = run_worker(settings, ex.execution_id, "worker-e", tenant_id="globex", user_id="u-g")
    assert stored_identity(settings, "worker-e") == ACME
    assert any("the execution's is used" in m for m in found["messages"])


def test_the_lookup_is_bounded_when_postgres_does_not_answer(settings: Settings) -> None:
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        dead = settings.model_copy(
            update={"dsn": f"host=127.0.0.1 port={port} dbname=x", "redis_url": None}
        )
        with Trail(dead, sync=True) as trail:
            began = dt.datetime.now(dt.UTC)
            with trail.join(uuid.uuid4(), tenant_id="t", lookup_timeout_s=0.3):
                pass
            waited = (dt.datetime.now(dt.UTC) - began).total_seconds()
    assert waited < 1.5
    assert trail.stats.rejected == 0


def test_a_step_ending_after_the_root_finished_gets_the_joins_own_row(
    settings: Settings,
) -> None:
    inside, root_done = threading.Event(), threading.Event()

    def late_worker(other: Trail, execution_id: uuid.UUID) -> None:
        with other.join(execution_id), other.process("late step"):
            inside.set()
            root_done.wait(30)  # the root's row is written; this step ends only now

    with Trail(settings, sync=True) as root, Trail(settings, sync=True) as other:
        with acme_execution(root) as ex:
            thread = threading.Thread(target=late_worker, args=(other, ex.execution_id))
            thread.start()
            assert inside.wait(30)
        root_done.set()
        thread.join(30)
        assert other.unmerged_processes == 1
    assert steps(settings, ex.execution_id) == {
        "001 Main": "execution_finalized",
        "late step": JOINED_EVENT,
    }


def test_a_late_join_keeps_the_users_pseudonym(settings: Settings) -> None:
    """The stored row holds the hashed id: the join's rows hold that one, not a hash of it."""
    keyed = settings.model_copy(update={"user_hmac_key": "join-key"})
    with Trail(keyed, sync=True) as root:
        with acme_execution(root) as ex:
            pass
        assert root.flush(30)
    run_worker(keyed, ex.execution_id, "worker-hmac")
    pseudonym = hash_user_id(ACME[1], "join-key")
    assert (
        one(
            settings.dsn,
            "SELECT user_id FROM logs_execution WHERE execution_id = %s "
            "AND event_type = 'execution_finalized'",
            ex.execution_id,
        )
        == pseudonym
    )
    assert stored_identity(settings, "worker-hmac") == (ACME[0], pseudonym, ACME[2])
    assert in_journey(keyed, ACME[1], "worker-hmac")
