"""pgtrail: structured logs of LLM agent systems, in your PostgreSQL.

Open an execution per request, mark its processes, and log model calls, agent decisions
and user-journey events from anywhere below it::

    trail = pgtrail.Trail()
    with trail.execution("001 Main", user_id="57", context={"feature": "coaching"}):
        with trail.process("101 AI Execute LLM"):
            pgtrail.log_llm_execution(agent_type="coaching", model="claude-sonnet-4-20250514",
                                      input_tokens=12570, output_tokens=1568)
"""

from pgtrail.config import Settings
from pgtrail.correlation import extract, inject
from pgtrail.errors import PgtrailError
from pgtrail.models import (
    AgentDecision,
    ContextCompression,
    Guardrail,
    Handoff,
    Retrieval,
    ToolCall,
)
from pgtrail.trail import Execution, Trail, log_agent_execution, log_llm_execution, log_user_journey

__all__ = [
    "AgentDecision",
    "ContextCompression",
    "Execution",
    "Guardrail",
    "Handoff",
    "PgtrailError",
    "Retrieval",
    "Settings",
    "ToolCall",
    "Trail",
    "extract",
    "inject",
    "log_agent_execution",
    "log_llm_execution",
    "log_user_journey",
]
