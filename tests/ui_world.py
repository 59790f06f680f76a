"""Logs for the web UI's tests, written through the real writer, and a UI served over them.

Two tenants. acme has a nested execution with model calls (prompt bodies, payloads), agent
decisions and journey events, a second turn in the same session, and a user, an agent and a
prompt whose text is hostile HTML. globex has one execution whose every name carries
:data:`GLOBEX_SECRET`, so a page bound to acme that shows it has leaked.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import random
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import pgtrail
from pgtrail import AgentDecision, Handoff, Trail
from pgtrail.config import Settings
from pgtrail.ui.app import UiApp
from pgtrail.ui.reading import Reader
from pgtrail.ui.server import RunningServer, loopback_hosts, serve_in_thread

SCRIPT = "<script>alert('xss')</script>"
IMG = '"><img src=x onerror="alert(1)">'
HOSTILE_USER = f"u{IMG}"
HOSTILE_AGENT = f"agent{SCRIPT}"
HOSTILE_PROMPT = f"You are helpful. {SCRIPT} {IMG}"
GLOBEX_SECRET = "globex-secret-7f3a"
COACHING_PROMPT = "You are a careful coaching assistant. Answer briefly."


@dataclass(frozen=True)
class World:
    """What was logged.

    Attributes:
        settings: where it was logged.
        main: acme's nested execution (user 57, session s-1).
        second: acme's second turn in session s-1.
        hostile: acme's execution of the hostile user, agent and prompt.
        secret: globex's execution.
    """

    settings: Settings
    main: uuid.UUID
    second: uuid.UUID
    hostile: uuid.UUID
    secret: uuid.UUID


def _call(agent: str, cost: float, outcome: str = "llm_valid_execution", **extra: object) -> None:
    pgtrail.log_llm_execution(
        agent_type=agent,
        model=str(extra.pop("model", "claude-sonnet-4-20250514")),
        provider="anthropic",
        event_type=outcome,
        input_tokens=1200,
        output_tokens=300,
        processing_time_ms=int(str(extra.pop("latency", 1500))),
        total_cost=cost,
        **extra,  # type: ignore[arg-type]
    )


def write_world(settings: Settings) -> World:
    """Logs the two tenants' executions and returns their ids.

    Args:
        settings: where to log.
    """
    with Trail(settings, sync=True) as trail:
        with trail.execution("001 Main", user_id="57", session_id="s-1", tenant_id="acme") as main:
            pgtrail.log_user_journey("user_message_received", {"text_length": 120})
            with main.process("202 Agent - Coaching"):
                pgtrail.log_agent_execution(
                    Handoff(from_agent="router", to_agent="coaching", reason="intent:coaching"),
                    agent_type="router",
                )
                with main.process("101 AI Execute LLM"):
                    _call(
                        "coaching",
                        0.25,
                        prompt=COACHING_PROMPT,
                        payload={"messages": [{"role": "user", "content": "How do I start?"}]},
                    )
                    with main.process("110 Retry with larger model"):
                        _call(
                            "coaching", 0.5, "llm_timeout", model="claude-opus-4-1", latency=30000
                        )
                pgtrail.log_agent_execution(
                    AgentDecision(decisions={"coaching_quality": {"intensity_level": "balanced"}}),
                    agent_type="coaching",
                    duration_ms=120,
                )
            with main.process("301 Selling process"):
                _call("selling", 1.0)
        with trail.execution(
            "002 Follow-up", user_id="57", session_id="s-1", tenant_id="acme"
        ) as second:
            pgtrail.log_user_journey("user_message_received", {"text_length": 40})
            with second.process("202 Agent - Coaching"):
                _call("coaching", 0.125)
        with (
            trail.execution(
                f"003 Hostile{SCRIPT}", user_id=HOSTILE_USER, session_id=f"s{IMG}", tenant_id="acme"
            ) as hostile,
            hostile.process(f"step {IMG}"),
        ):
            _call(
                HOSTILE_AGENT,
                0.01,
                prompt=HOSTILE_PROMPT,
                payload={"messages": [{"role": "user", "content": SCRIPT + IMG}]},
            )
            pgtrail.log_agent_execution(
                event_type="agent_decision", data={"note": SCRIPT}, agent_type=HOSTILE_AGENT
            )
        with (
            trail.execution(
                f"900 {GLOBEX_SECRET}",
                user_id=f"user-{GLOBEX_SECRET}",
                session_id=f"session-{GLOBEX_SECRET}",
                tenant_id="globex",
            ) as secret,
            secret.process(f"step {GLOBEX_SECRET}"),
        ):
            _call(
                f"agent-{GLOBEX_SECRET}",
                9.0,
                prompt=f"prompt {GLOBEX_SECRET}",
                payload={"messages": [{"role": "user", "content": GLOBEX_SECRET}]},
            )
    return World(
        settings, main.execution_id, second.execution_id, hostile.execution_id, secret.execution_id
    )


@contextmanager
def serving(
    settings: Settings, *, tenant: str | None = None, token: str | None = None
) -> Iterator[RunningServer]:
    """The UI over ``settings``, served on a free loopback port while the block runs.

    Args:
        settings: where to read.
        tenant: the only tenant shown, or None.
        token: the token requests must carry, or None.
    """
    from pgtrail.ui.server import free_port

    port = free_port()
    app = UiApp(
        Reader(settings, tenant=tenant),
        token=token,
        allowed_hosts=frozenset() if token else loopback_hosts(port),
    )
    running = serve_in_thread(app, port=port)
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Answer:
    """One HTTP answer.

    Attributes:
        status: the status code.
        headers: the headers, names in lower case.
        body: the body as text.
    """

    status: int
    headers: Mapping[str, str]
    body: str

    def json(self) -> object:
        """The body parsed as JSON."""
        return json.loads(self.body)


def fetch(
    url: str, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Answer:
    """The answer to one request to the UI at ``url`` (redirects are not followed).

    Args:
        url: the UI's base URL (``http://127.0.0.1:PORT``).
        path: the path and query, from ``/``.
        method: the HTTP method.
        headers: extra request headers (a Host header replaces the default).
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read().decode("utf-8")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


class Clock:
    """A clock the caller moves by hand, so rows land on the days it chooses."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        """Moves the clock forward.

        Args:
            delta: keyword arguments of :class:`datetime.timedelta`.
        """
        self.now += dt.timedelta(**delta)


def write_week(settings: Settings) -> None:
    """Six days of acme's traffic before today, so the charts have days to show.

    Args:
        settings: where to log.
    """
    rng = random.Random(7)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    models = {"coaching": "claude-sonnet-4-20250514", "selling": "gpt-4o", "router": "gpt-4o-mini"}
    for back in range(6, 0, -1):  # ending yesterday: today may have only begun
        clock = Clock(today - dt.timedelta(days=back, hours=-1))
        with Trail(settings, sync=True, clock=clock) as trail:
            for n in range(3 + (6 - back) % 3):
                user = f"user-{n % 3 + 1}"
                with trail.execution(
                    "010 Daily check-in",
                    user_id=user,
                    session_id=f"{user}-d{back}",
                    tenant_id="acme",
                ) as ex:
                    pgtrail.log_user_journey("user_message_received", {"text_length": 80 + n})
                    for agent, model in models.items():
                        with ex.process(f"{agent} step"):
                            clock.tick(seconds=rng.uniform(0.2, 3))
                            failed = rng.random() < 0.1
                            pgtrail.log_llm_execution(
                                agent_type=agent,
                                model=model,
                                provider="openai" if model.startswith("gpt") else "anthropic",
                                event_type="llm_timeout" if failed else "llm_valid_execution",
                                input_tokens=rng.randint(500, 4000),
                                output_tokens=rng.randint(50, 800),
                                processing_time_ms=rng.randint(300, 6000),
                                total_cost=round(rng.uniform(0.002, 0.09), 5),
                            )
                            if agent == "coaching":
                                pgtrail.log_agent_execution(
                                    AgentDecision(
                                        decisions={
                                            "coaching_quality": {
                                                "intensity_level": rng.choice(
                                                    ["gentle", "balanced"]
                                                )
                                            }
                                        }
                                    ),
                                    agent_type="coaching",
                                )
                clock.tick(minutes=rng.randint(20, 90))
