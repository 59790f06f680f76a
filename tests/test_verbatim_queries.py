"""The three queries of the four-table logging pattern pgtrail grew from run verbatim.

Slow agent executions, cost by agent type and user-journey reconstruction, exactly as
published, against the pgtrail schema.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SLOW_AGENT_EXECUTIONS = """
SELECT
execution_id,
agent_type,
particular_data->>'event_duration_ms' as duration_ms,
created_at
FROM logs_agent_execution
WHERE (particular_data->>'event_duration_ms')::int > 20000
ORDER BY created_at DESC;
"""

COST_BY_AGENT_TYPE = """
SELECT
agent_type,
COUNT(*) as executions,
SUM((total_cost)::numeric) as total_cost,
AVG((processing_time_ms)::numeric) as avg_latency
FROM logs_llm_execution
WHERE event_type = 'llm_valid_execution'
GROUP BY agent_type;
"""

USER_JOURNEY = """
SELECT
event_type,
particular_data,
created_at
FROM logs_user_journey
WHERE user_id = '57'
ORDER BY created_at;
"""

T0 = dt.datetime(2025, 11, 28, 21, 41, 34, 752000, tzinfo=dt.UTC)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _insert(conn: psycopg.Connection[Any], table: str, **row: Any) -> None:
    row.setdefault("event_id", uuid.uuid4())
    cols = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    values = [Jsonb(v) if isinstance(v, dict) else v for v in row.values()]
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", values)


def test_the_published_queries_return_their_rows(postgresql: psycopg.Connection[Any]) -> None:
    conn = postgresql
    ex = uuid.uuid4()
    for seconds, agent, duration in [
        (1, "coaching", 25937),
        (2, "security", 180),
        (3, "selling", 20001),
    ]:
        _insert(
            conn,
            "logs_agent_execution",
            execution_id=ex,
            created_at=_at(seconds),
            event_type="agent_decision",
            agent_type=agent,
            user_id="57",
            particular_data={"event_duration_ms": duration, "agent_decisions": {}},
        )
    llm_rows = [
        ("coaching", "llm_valid_execution", Decimal("0.06123"), 25937),
        ("coaching", "llm_valid_execution", Decimal("0.01000"), 4063),
        ("security", "llm_valid_execution", Decimal("0.00200"), 800),
        ("security", "llm_error", Decimal("0.5"), 99999),
    ]
    for i, (agent, outcome, cost, latency) in enumerate(llm_rows):
        _insert(
            conn,
            "logs_llm_execution",
            execution_id=ex,
            created_at=_at(10 + i),
            event_type=outcome,
            agent_type=agent,
            model_target="claude-sonnet-4-20250514",
            total_cost=cost,
            processing_time_ms=latency,
            output_tokens=1568,
        )
    journey = [
        ("user_message_received", {"text_length": 120}, 0.5),
        (
            "user_message_sent_requested",
            {
                "role": "system",
                "text_length": 934,
                "credits_used": 0,
                "is_bot_scope": True,
                "is_coaching_scope": False,
                "is_selling_scope": False,
            },
            27.3,
        ),
    ]
    for event_type, data, offset in journey:
        _insert(
            conn,
            "logs_user_journey",
            execution_id=ex,
            created_at=_at(offset),
            user_id="57",
            event_type=event_type,
            particular_data=data,
        )
    _insert(
        conn,
        "logs_user_journey",
        execution_id=uuid.uuid4(),
        created_at=_at(5),
        user_id="58",
        event_type="user_message_received",
        particular_data={},
    )
    conn.commit()

    slow = conn.execute(SLOW_AGENT_EXECUTIONS).fetchall()
    assert [(r[1], r[2]) for r in slow] == [("selling", "20001"), ("coaching", "25937")]
    assert all(r[0] == ex for r in slow)

    costs = {r[0]: r[1:] for r in conn.execute(COST_BY_AGENT_TYPE).fetchall()}
    assert costs == {
        "coaching": (2, Decimal("0.07123"), Decimal("15000")),
        "security": (1, Decimal("0.00200"), Decimal("800")),
    }

    trail = conn.execute(USER_JOURNEY).fetchall()
    assert [(r[0], r[1], r[2]) for r in trail] == [
        ("user_message_received", {"text_length": 120}, _at(0.5)),
        ("user_message_sent_requested", journey[1][1], _at(27.3)),
    ]
