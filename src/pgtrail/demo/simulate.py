"""The simulated workload: users on multi-day journeys talking to a ten-agent system.

Everything goes through the public writer API (``Trail.execution``, ``Trail.process`` and
the ``log_*`` helpers), with a simulated clock, so the rows are the ones a real deployment
would write. The generator streams: it holds one user at a time and a few counters per
simulated day, whatever the number of interactions.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pgtrail
from pgtrail import (
    AgentDecision,
    ContextCompression,
    Guardrail,
    Handoff,
    Retrieval,
    ToolCall,
    Trail,
)
from pgtrail.demo import (
    DEFAULT_DAYS,
    DEFAULT_INTERACTIONS,
    DEFAULT_SEED,
    DEFAULT_TENANTS,
)
from pgtrail.demo import catalog as c
from pgtrail.demo.plant import (
    EXPENSIVE_LOOP_CALLS,
    INTENSITY_LEVELS,
    JUDGED_SHARE,
    Plan,
    coaching_prompt_version,
)
from pgtrail.demo.randomness import Balanced, SimClock, Strata, cumulative, uuid7_at

DAY_MS = 86_400_000
_log_llm = pgtrail.log_llm_execution
_log_agent = pgtrail.log_agent_execution
_log_journey = pgtrail.log_user_journey
_log_score = pgtrail.log_score

_TIER_CUM = cumulative(c.TIER_WEIGHTS)
_LANGUAGE_CUM = cumulative(c.LANGUAGE_WEIGHTS)
_CHANNEL_CUM = cumulative(c.CHANNEL_WEIGHTS)
_INPUT_CUM = cumulative(c.INPUT_WEIGHTS)
_HOURS = tuple(range(24))
_HOUR_CUM = cumulative(c.HOUR_WEIGHTS)
# Which agent answers, by journey stage: (agents, shares).
_AGENTS_BY_STAGE: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "onboarding": (("onboarding", "support", "selling"), (0.85, 0.10, 0.05)),
    "coaching": (("coaching", "selling", "support"), (0.74, 0.15, 0.11)),
    "expensive": (("coaching", "selling", "support"), (0.45, 0.50, 0.05)),
}
_SCOPES = {
    "coaching": {"is_bot_scope": False, "is_coaching_scope": True, "is_selling_scope": False},
    "selling": {"is_bot_scope": False, "is_coaching_scope": False, "is_selling_scope": True},
    "bot": {"is_bot_scope": True, "is_coaching_scope": False, "is_selling_scope": False},
}
# Outcome shares of one model call attempt (the rest are valid executions).
RATE_LIMITED = 0.02
TIMED_OUT = 0.01
FAILED = 0.008
ROUTER_INVALID = 0.015
# Messages per user, spread evenly over a bounded range: the cost-anomalies report compares
# each user's total with the workflow's median user, and only the planted user may stand out.
INTERACTIONS_PER_USER = (12, 60)
ONBOARDING_MESSAGES = 6
"""A new user's first messages go to the onboarding stage, then coaching begins."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to simulate."""

    interactions: int = DEFAULT_INTERACTIONS
    days: int = DEFAULT_DAYS
    seed: int = DEFAULT_SEED
    tenants: int = DEFAULT_TENANTS
    plan: Plan = field(default_factory=Plan)
    end: dt.date | None = None
    """The day after the window's last day (default: today, UTC)."""

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """Start and end of the simulated window, both at midnight UTC."""
        end_day = self.end or dt.datetime.now(dt.UTC).date()
        end = dt.datetime(end_day.year, end_day.month, end_day.day, tzinfo=dt.UTC)
        return end - dt.timedelta(days=self.days), end


@dataclass(slots=True)
class Counts:
    """What the simulation has logged so far."""

    interactions: int = 0
    executions: int = 0
    events: int = 0
    llm_calls: int = 0
    users: int = 0


@dataclass(slots=True)
class Highlights:
    """A few ids worth showing afterwards (kept as the run goes, in constant memory)."""

    deep_execution: uuid.UUID | None = None
    expensive_execution: uuid.UUID | None = None
    expensive_calls: int = 0
    journey_user: str | None = None
    journey_days: int = 0


@dataclass(slots=True)
class User:
    """One end user and where they are in their journey."""

    number: int
    user_id: str
    tenant: str
    tier: str
    language: str
    channel: str
    stage: str
    expensive: bool
    challenge: str = "not_started"
    sessions: int = 0
    messages: int = 0
    mix: dict[str, Balanced] = field(default_factory=dict)
    """Per stage, which agent answers: each user's mix follows the stage's shares closely."""


@dataclass(slots=True)
class Turn:
    """Where one interaction sits in the simulation."""

    user: User
    session_id: str
    turn: int
    day: int
    frac: float


class Simulator:
    """Generates the workload into a :class:`~pgtrail.Trail` whose clock is ``clock``."""

    def __init__(self, trail: Trail, clock: SimClock, options: DemoOptions) -> None:
        if options.interactions < 1 or options.days < 1 or options.tenants < 1:
            raise ValueError("interactions, days and tenants must be at least 1")
        self.trail = trail
        self.clock = clock
        self.options = options
        self.plan = options.plan
        self.rng = random.Random(options.seed)
        self.strata = Strata(random.Random(options.seed * 7919 + 1))
        self.intensity = Balanced(random.Random(options.seed * 7919 + 2), INTENSITY_LEVELS)
        self.judge_rng = random.Random(options.seed * 7919 + 3)
        self.start, self.end = options.window()
        self.counts = Counts()
        self.highlights = Highlights()
        self.tenants = _tenant_names(options.tenants)
        self._tenant_cum = cumulative([1.0 / (i + 1) for i in range(len(self.tenants))])
        self._first_ordinal = self.start.date().toordinal()  # day 1 of the calendar, a Monday

    # -- driving ------------------------------------------------------------------------------

    def run(self, on_interaction: Callable[[], None] | None = None) -> Counts:
        """Simulates users one after another until the interactions are reached."""
        number = 0
        while self.counts.interactions < self.options.interactions:
            number += 1
            self._user(self._new_user(number), on_interaction)
        return self.counts

    def _new_user(self, number: int) -> User:
        rng = self.rng
        expensive = self.plan.is_expensive_user(number)
        return User(
            number=number,
            user_id=str(number),
            tenant=self.tenants[0] if expensive else _choice(rng, self.tenants, self._tenant_cum),
            tier=_choice(rng, c.TIERS, _TIER_CUM),
            language=_choice(rng, c.LANGUAGES, _LANGUAGE_CUM),
            channel=_choice(rng, c.CHANNELS, _CHANNEL_CUM),
            stage="onboarding",
            expensive=expensive,
        )

    def _user(self, user: User, on_interaction: Callable[[], None] | None) -> None:
        rng = self.rng
        days = self.options.days
        self.counts.users += 1
        low, high = INTERACTIONS_PER_USER
        planned = low + int((high - low + 1) * self.strata.u("messages", 0))
        first_day = rng.randint(-14, max(0, days - 2))
        if user.expensive:
            planned, first_day = max(planned, 40), min(1, days - 1)
        if first_day < 0:  # onboarded before the window opened
            user.stage = "coaching"
            user.sessions = 3
            user.messages = ONBOARDING_MESSAGES + 10
        engagement = rng.uniform(0.3, 0.8)
        left = min(planned, self.options.interactions - self.counts.interactions)
        day = max(0, first_day)
        first_active = last_active = -1
        active_days = 0
        free_at = self.start
        while left > 0 and day < days:
            if day == max(0, first_day) or rng.random() < engagement:
                active_days += 1
                first_active = day if first_active < 0 else first_active
                last_active = day
                sessions_today = 2 if rng.random() < 0.2 else 1
                for _ in range(sessions_today):
                    turns = min(left, rng.randint(2, 8))
                    free_at = self._session(user, day, turns, free_at, on_interaction)
                    left -= turns
                    if left <= 0:
                        break
            day += 1
        span = last_active - first_active + 1
        if active_days >= 4 and span > self.highlights.journey_days and not user.expensive:
            self.highlights.journey_user, self.highlights.journey_days = user.user_id, span

    def _session(
        self,
        user: User,
        day: int,
        turns: int,
        not_before: dt.datetime,
        on_interaction: Callable[[], None] | None,
    ) -> dt.datetime:
        """One conversation on ``day``; returns when the user is free for the next one."""
        rng = self.rng
        user.sessions += 1
        session_id = f"tg-{user.user_id}-{user.sessions:04d}"
        hour = _choice(rng, _HOURS, _HOUR_CUM)
        start_ms = day * DAY_MS + hour * 3_600_000 + rng.randrange(3_000_000)
        at = max(self.start + dt.timedelta(milliseconds=start_ms), not_before)
        span_s = (self.end - self.start).total_seconds()
        for turn in range(turns):
            self.clock.set(at)
            elapsed_s = (at - self.start).total_seconds()
            frac = min(0.999999, elapsed_s / span_s)
            self._interaction(Turn(user, session_id, turn, int(elapsed_s // 86_400), frac))
            self.counts.interactions += 1
            if on_interaction is not None:
                on_interaction()
            at = self.clock.now + dt.timedelta(milliseconds=rng.randint(45_000, 360_000))
        end = self.clock.now
        if turns >= 2:
            self.clock.set(end + dt.timedelta(seconds=rng.randint(60, 180)))
            self._summary(user, session_id, day, turns)
        if rng.random() < 0.1:
            self.clock.set(end + dt.timedelta(minutes=30))
            self._abandoned(user, session_id, turns)
        return end + dt.timedelta(minutes=rng.randint(40, 180))

    # -- one user message: the 001 Main execution ---------------------------------------------

    def _interaction(self, t: Turn) -> None:
        rng = self.rng
        user = t.user
        new_stage = None
        if user.messages == 0 and user.stage == "onboarding":
            new_stage = "onboarding"
        elif user.messages == ONBOARDING_MESSAGES and user.stage == "onboarding":
            user.stage = new_stage = "coaching"
        user.messages += 1
        stage = "expensive" if user.expensive else user.stage
        names, shares = _AGENTS_BY_STAGE[stage]
        mix = user.mix.get(stage)
        if mix is None:
            mix = user.mix[stage] = Balanced(rng, names)
        agent = c.AGENTS[mix.pick(0, shares)]
        version = agent.call.prompt
        if agent.agent_type == "coaching":
            version = coaching_prompt_version(t.frac, self.strata.u("canary", t.day))
        input_type = _choice(rng, c.INPUT_TYPES, _INPUT_CUM)
        significant = rng.random() < agent.significant_rate
        context = {
            "tier": user.tier,
            "language": user.language,
            "input_type": input_type,
            "feature": agent.feature,
            "channel": user.channel,
            "prompt_version": version,
            "environment": "production",
        }
        scope = _SCOPES[agent.scope]
        trail = self.trail
        proc = trail.process
        clock = self.clock
        self.counts.executions += 1
        self.counts.events += 1
        with trail.execution(
            c.MAIN,
            user_id=user.user_id,
            tenant_id=user.tenant,
            session_id=t.session_id,
            context=context,
            execution_id=uuid7_at(clock.now, rng),
        ) as ex:
            with proc(c.EXTRACT):
                clock.advance(rng.randint(20, 90))
                if input_type == "voice":
                    with proc(c.TRANSCRIBE):
                        clock.advance(rng.randint(900, 2_600))
                self._journey(
                    "user_message_received",
                    {
                        "role": "user",
                        "text_length": rng.randint(8, 600),
                        "input_type": input_type,
                        "language": user.language,
                        "credits_used": 0,
                        **scope,
                    },
                )
            with proc(c.SECURITY):
                blocked = self._security(t)
            if blocked:
                self._send(t, agent, scope, significant=False, canned=True, new_stage=new_stage)
                with proc(c.CLEANUP):
                    clock.advance(rng.randint(5, 25))
                return
            with proc(c.COMMAND):
                self._route(t, agent.agent_type)
            with proc(c.PREPARE):
                with proc(c.HISTORY):
                    clock.advance(rng.randint(15, 80))
                    if rng.random() < agent.retrieval_rate:
                        with proc(c.RETRIEVE):
                            self._retrieve(t, agent.agent_type)
                with proc(c.COMPRESS):
                    self._compress(t, agent.agent_type, significant)
            with proc(agent.process):
                answered = self._answer(t, agent, version)
                if answered:
                    self._decide(t, agent, significant)
                    if user.expensive and agent.agent_type == "selling":
                        with proc(c.BUILD_OFFER):
                            self._offer_loop(t, ex.execution_id)
                    if rng.random() < agent.tool_rate:
                        with proc(c.RUN_TOOLS):
                            self._tools(t, agent)
                    sent = self._send(
                        t, agent, scope, significant=significant, canned=False, new_stage=new_stage
                    )
                    if not sent:
                        ex.fail(c.CHANNEL_ERROR)
                else:
                    ex.fail("no model answered after retry and fallback")
            with proc(c.CLEANUP):
                clock.advance(rng.randint(5, 25))
            if significant and answered and agent.agent_type == "coaching":
                self.highlights.deep_execution = ex.execution_id
        if rng.random() < (0.03 if agent.agent_type == "coaching" else 0.05):
            self._feedback(t, agent, "thumbs_down")
        elif agent.agent_type in ("selling", "support") and rng.random() < 0.08:
            self._feedback(t, agent, "draft_edited")

    def _security(self, t: Turn) -> bool:
        rng = self.rng
        clock = self.clock
        injection = rng.random() < 0.006
        self._agent(
            AgentDecision(
                decisions={
                    "security": {
                        "user_locked": False,
                        "rate_limit_ok": True,
                        "injection_suspected": injection,
                    }
                }
            ),
            "security",
            rng.randint(4, 30),
        )
        with self.trail.process(c.GUARDRAILS):
            self._call(c.SAFETY_CALL, t.day)
            pii = rng.random() < 0.04
            self._agent(
                Guardrail(
                    name="prompt_injection",
                    passed=not injection,
                    action="block" if injection else "none",
                ),
                "safety",
                None,
            )
            self._agent(
                Guardrail(name="pii", passed=not pii, action="redact" if pii else "none"),
                "safety",
                None,
            )
            clock.advance(rng.randint(5, 20))
        return injection

    def _route(self, t: Turn, target: str) -> None:
        rng = self.rng
        if rng.random() < ROUTER_INVALID:
            self._call(c.ROUTER_CALL, t.day, outcome="llm_invalid_output", error=c.INVALID_OUTPUT)
            with self.trail.process(c.RETRY):
                self.clock.advance(rng.randint(100, 400))
                self._call(c.ROUTER_CALL, t.day)
        else:
            self._call(c.ROUTER_CALL, t.day)
        self._agent(
            Handoff(from_agent="router", to_agent=target, reason=f"intent:{target}"), "router", None
        )

    def _retrieve(self, t: Turn, agent_type: str) -> None:
        rng = self.rng
        self._call(c.EMBED_CALL, t.day)
        count = rng.randint(3, 8)
        top = rng.uniform(0.78, 0.93)
        ids = [f"kb-{agent_type[:3]}-{rng.randrange(2000):04d}" for _ in range(min(count, 5))]
        scores = [round(top - 0.06 * i - rng.uniform(0, 0.03), 3) for i in range(len(ids))]
        query = rng.choice(c.RETRIEVAL_QUERIES[agent_type])
        self._agent(
            Retrieval(query=query, doc_count=count, top_ids=ids, scores=scores),
            "retrieval",
            rng.randint(40, 180),
        )
        self.clock.advance(rng.randint(40, 180))

    def _compress(self, t: Turn, agent_type: str, significant: bool) -> None:
        rng = self.rng
        score, priority = self.plan.compression(
            agent_type, significant, t.frac, self.strata.u("compression", t.day)
        )
        history_tokens = 1_500 + 900 * min(t.user.sessions, 12) + 400 * t.turn
        output_score = round(score + rng.uniform(0.0, 0.1), 2)
        duration = rng.randint(3, 40)
        self._agent(
            ContextCompression(
                context_management={
                    "user_input": {
                        "compression_score": score,
                        "compression_priority": priority,
                        "significant_moment_detected": significant,
                    },
                    "agent_output": {
                        "compression_score": output_score,
                        "context_utilization": "high" if history_tokens > 8_000 else "medium",
                    },
                    "history_tokens": history_tokens,
                }
            ),
            agent_type,
            duration,
        )
        self.clock.advance(duration)
        if priority == "aggressive" and history_tokens > 6_000 and rng.random() < 0.3:
            with self.trail.process(c.SUMMARISE_OLD):
                self._call(c.COMPRESS_CALL, t.day)

    def _answer(self, t: Turn, agent: c.Agent, version: str) -> bool:
        """The agent's main model call, with one retry and a fallback model."""
        shape = agent.call
        factor = 1.0
        if agent.agent_type == "coaching":
            factor = self.plan.coaching_latency_factor(version)
        proc = self.trail.process
        with proc(c.EXECUTE_LLM):
            if self._attempt(t, shape, version, factor):
                self._judge(agent, version)
                return True
            with proc(c.RETRY):
                self.clock.advance(self.rng.randint(800, 4_000))
                if self._attempt(t, shape, version, factor):
                    self._judge(agent, version)
                    return True
                with proc(c.FALLBACK):
                    fallback = c.FALLBACK_CALL if agent.agent_type == "coaching" else shape
                    if self.rng.random() < 0.7:
                        self._call(fallback, t.day, version=version)
                        self._judge(agent, version)
                        return True
                    self._fail(fallback, "llm_error", version)
                    return False

    def _judge(self, agent: c.Agent, version: str) -> None:
        """A model judge's helpfulness score of the answer, in the process that made it."""
        rng = self.judge_rng  # a stream of its own: the rest of the workload stays as it was
        if rng.random() >= JUDGED_SHARE:
            return
        self.counts.events += 1
        _log_score(
            "helpfulness",
            self.plan.helpfulness(agent.agent_type, version, rng.random()),
            source="model",
            agent_type=agent.agent_type,
            data={"judge": "gpt-4o-mini"},
        )

    def _attempt(self, t: Turn, shape: c.CallShape, version: str, factor: float) -> bool:
        r = self.rng.random()
        if r < RATE_LIMITED:
            self._fail(shape, "llm_rate_limited", version)
            return False
        if r < RATE_LIMITED + TIMED_OUT:
            self._fail(shape, "llm_timeout", version)
            return False
        if r < RATE_LIMITED + TIMED_OUT + FAILED:
            self._fail(shape, "llm_error", version)
            return False
        self._call(shape, t.day, version=version, factor=factor)
        return True

    def _decide(self, t: Turn, agent: c.Agent, significant: bool) -> None:
        rng = self.rng
        user = t.user
        flow: dict[str, Any] = {"significant_moment_detected": significant}
        decisions: dict[str, Any] = {"flow": flow}
        kind = agent.agent_type
        if kind == "coaching":
            if user.challenge == "not_started" and rng.random() < 0.25:
                self._transition(user, "challenge", user.challenge, "in_progress")
                user.challenge = "in_progress"
            elif user.challenge == "in_progress" and rng.random() < 0.08:
                self._transition(user, "challenge", user.challenge, "completed")
                user.challenge = "not_started"
            flow["challenge_status"] = user.challenge
            sections = c.SECTIONS[user.language]
            count = rng.randint(3, 8)
            decisions["safety"] = {
                "meta_questions_behavior": "deflect" if rng.random() < 0.03 else "normal"
            }
            decisions["coaching_quality"] = {
                "intensity_level": self.intensity.pick(
                    self._week(t.day), self.plan.intensity_weights(t.frac)
                ),
                "message_length": rng.randint(900, 3_200),
                "response_structure": {"sections": list(sections[:3]), "section_count": count},
            }
        elif kind == "selling":
            decisions["selling"] = {
                "offer_stage": rng.choice(("discovery", "pitch", "objection", "checkout")),
                "discount_offered": rng.random() < 0.2,
            }
        elif kind == "onboarding":
            decisions["onboarding"] = {"step": min(user.sessions, 3), "profile_complete": False}
        else:
            decisions["support"] = {
                "category": rng.choice(("billing", "account", "bug", "how_to")),
                "escalate": rng.random() < 0.07,
            }
        self._agent(AgentDecision(decisions=decisions), kind, rng.randint(8, 60))

    def _week(self, day: int) -> int:
        """The calendar week (Monday to Sunday, UTC) of a simulated day: the drift report's."""
        return (self._first_ordinal + day - 1) // 7

    def _offer_loop(self, t: Turn, execution_id: uuid.UUID) -> None:
        """The planted expensive path: the offer builder retries a large model many times."""
        calls = self.rng.randint(*EXPENSIVE_LOOP_CALLS)
        proc = self.trail.process
        for i in range(calls):
            with proc(c.EXECUTE_LLM):
                if i < calls - 1:
                    self._call(
                        c.OFFER_CALL, t.day, outcome="llm_invalid_output", error=c.OFFER_INVALID
                    )
                    self.clock.advance(self.rng.randint(150, 600))
                else:
                    self._call(c.OFFER_CALL, t.day)
        if calls > self.highlights.expensive_calls:
            self.highlights.expensive_execution, self.highlights.expensive_calls = (
                execution_id,
                calls,
            )

    def _tools(self, t: Turn, agent: c.Agent) -> None:
        rng = self.rng
        user = t.user
        tool = rng.choice(agent.tools)
        permission = tool.permission
        approval: str | None = "not_required"
        error = None
        if rng.random() < tool.deny_rate:
            permission, approval = "denied", None
        elif permission == "needs_confirmation":
            approval = "rejected" if rng.random() < tool.reject_rate else "approved"
        latency = int(tool.latency_ms * rng.uniform(0.6, 1.8))
        if permission != "denied" and approval != "rejected" and rng.random() < 0.02:
            error, latency = "timeout calling upstream service", 5_000
        self._agent(
            ToolCall(
                tool=tool.name,
                call_id=f"call_{rng.getrandbits(48):012x}",
                args={"user_id": user.user_id, "tenant": user.tenant, "locale": user.language},
                permission=permission,  # type: ignore[arg-type]
                approval=approval,  # type: ignore[arg-type]
                latency_ms=latency,
                error=error,
            ),
            agent.agent_type,
            latency,
        )
        self.clock.advance(latency)
        paid = tool.name == "payments.create_checkout" and approval == "approved" and not error
        if paid and user.tier == "free":
            self._transition(user, "tier", "free", "premium")
            user.tier = "premium"

    def _send(
        self,
        t: Turn,
        agent: c.Agent,
        scope: dict[str, bool],
        *,
        significant: bool,
        canned: bool,
        new_stage: str | None,
    ) -> bool:
        """``021 Send message`` and what nests under it; False when the channel refused it."""
        rng = self.rng
        proc = self.trail.process
        clock = self.clock
        with proc(c.SEND):
            clock.advance(rng.randint(80, 400))
            if rng.random() < 0.004:
                return False
            self._journey(
                "user_message_sent",
                {
                    "role": "assistant",
                    "agent": "security" if canned else agent.agent_type,
                    "text_length": 180 if canned else rng.randint(300, 3_200),
                    "credits_used": 0 if canned else 1,
                    **scope,
                },
            )
            with proc(c.RECORD):
                clock.advance(rng.randint(10, 60))
                if significant or new_stage:
                    with proc(c.UPDATE_STATE):
                        clock.advance(rng.randint(5, 30))
                        if new_stage:
                            before = "new" if new_stage == "onboarding" else "onboarding"
                            self._transition(t.user, "stage", before, new_stage)
                        if significant:
                            with proc(c.SAVE_MOMENT):
                                clock.advance(rng.randint(10, 50))
                                self._transition(
                                    t.user, "significant_moment", "routine", "significant"
                                )
        return True

    # -- other executions ---------------------------------------------------------------------

    def _feedback(self, t: Turn, agent: c.Agent, kind: str) -> None:
        rng = self.rng
        user = t.user
        self.clock.advance(rng.randint(5_000, 40_000))
        data: dict[str, Any] = {"agent": agent.agent_type, "turn": t.turn}
        if kind == "thumbs_down":
            data["reason"] = rng.choice(("too_long", "not_helpful", "wrong_language", "too_pushy"))
        else:
            draft = rng.randint(200, 900)
            data.update(draft_length=draft, edit_distance=rng.randint(5, draft // 3))
        with self._small_execution(c.FEEDBACK, user, t.session_id, agent.feature):
            self._journey(kind, data)

    def _summary(self, user: User, session_id: str, day: int, turns: int) -> None:
        with self._small_execution(c.SESSION_SUMMARY, user, session_id, "summary"):
            proc = self.trail.process
            with proc(c.LOAD_TRANSCRIPT):
                self.clock.advance(self.rng.randint(20, 80))
            with proc(c.EXECUTE_LLM):
                # An instruction prompt plus the transcript, which grows with the session.
                self._call(c.SUMMARY_CALL, day, version="v1", size=(turns + 4) / 9)
            with proc(c.STORE_SUMMARY):
                self.clock.advance(self.rng.randint(10, 40))
                self._agent(
                    AgentDecision(decisions={"summary": {"turns": turns}}), "summariser", 12
                )

    def _abandoned(self, user: User, session_id: str, turns: int) -> None:
        with self._small_execution(c.SESSION_TIMEOUT, user, session_id, "session") as ex:
            self._journey("session_abandoned", {"turns": turns, "idle_minutes": 30})
            ex.abandon("no reply for 30 minutes")

    def _small_execution(self, workflow: str, user: User, session_id: str, feature: str) -> Any:
        self.counts.executions += 1
        self.counts.events += 1
        return self.trail.execution(
            workflow,
            user_id=user.user_id,
            tenant_id=user.tenant,
            session_id=session_id,
            context={
                "tier": user.tier,
                "language": user.language,
                "feature": feature,
                "channel": user.channel,
                "environment": "production",
            },
            execution_id=uuid7_at(self.clock.now, self.rng),
        )

    def _transition(self, user: User, kind: str, before: str, after: str) -> None:
        self._journey("state_transition", {"kind": kind, "from": before, "to": after})

    # -- the log calls ------------------------------------------------------------------------

    def _journey(self, event_type: str, data: dict[str, Any]) -> None:
        self.counts.events += 1
        _log_journey(event_type, data)

    def _agent(self, event: Any, agent_type: str, duration_ms: int | None) -> None:
        self.counts.events += 1
        _log_agent(event, agent_type=agent_type, duration_ms=duration_ms)

    def _call(
        self,
        shape: c.CallShape,
        day: int,
        *,
        version: str | None = None,
        factor: float = 1.0,
        outcome: str = "llm_valid_execution",
        error: str | None = None,
        size: float = 1.0,
    ) -> None:
        """One model call of typical size (times ``size``), its latency on the clock.

        Tokens are given and cost is not: pgtrail infers it from ``pgtrail_model_price``.
        """
        strata = self.strata
        key = shape.key
        spread = shape.spread
        model = shape.model
        input_tokens = int(
            shape.input_tokens * size * (1 - spread + 2 * spread * strata.u(key, day))
        )
        output_tokens = int(
            shape.output_tokens * size * (1 - spread + 2 * spread * strata.u(key + ".out", day))
        )
        pace = 0.85 + 0.3 * strata.u(key + ".pace", day)
        ttft = int(model.ttft_ms * pace * factor)
        elapsed = ttft
        if model.tokens_per_s:
            elapsed += int(output_tokens / model.tokens_per_s * 1000 * pace * factor)
        cached = int(input_tokens * shape.cached_share) if shape.cached_share else 0
        version = version or shape.prompt or None
        self.counts.events += 1
        self.counts.llm_calls += 1
        _log_llm(
            agent_type=shape.agent_type,
            model=model.name,
            provider=model.provider,
            event_type=outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            processing_time_ms=elapsed,
            time_to_first_token_ms=ttft,
            prompt=self._prompt(shape.agent_type, version),
            prompt_version=version,
            error=error,
        )
        self.clock.advance(elapsed)

    def _fail(self, shape: c.CallShape, outcome: str, version: str | None) -> None:
        """A call that returned no answer: nothing billed, only the time lost."""
        model = shape.model
        rng = self.rng
        if outcome == "llm_timeout":
            elapsed, error = (
                model.timeout_ms,
                f"ReadTimeout: no response after {model.timeout_ms // 1000} s",
            )
        elif outcome == "llm_rate_limited":
            elapsed, error = rng.randint(120, 600), c.RATE_LIMITS[model.provider]
        else:
            elapsed, error = rng.randint(400, 3_000), c.PROVIDER_ERRORS[model.provider]
        self.counts.events += 1
        self.counts.llm_calls += 1
        _log_llm(
            agent_type=shape.agent_type,
            model=model.name,
            provider=model.provider,
            event_type=outcome,
            processing_time_ms=elapsed,
            prompt_version=version or shape.prompt or None,
            error=error,
        )
        self.clock.advance(elapsed)

    def _prompt(self, agent_type: str, version: str | None) -> str | None:
        if agent_type == "coaching" and version in c.COACHING_PROMPTS:
            return c.COACHING_PROMPTS[version].body
        found = c.PROMPTS.get(agent_type)
        return found.body if found is not None else None


def _tenant_names(count: int) -> tuple[str, ...]:
    names = list(c.TENANT_NAMES[:count])
    names += [f"tenant-{i + 1}" for i in range(len(names), count)]
    return tuple(names)


def _choice(
    rng: random.Random, items: tuple[str, ...] | tuple[int, ...], cum: tuple[float, ...]
) -> Any:
    return rng.choices(items, cum_weights=cum)[0]
