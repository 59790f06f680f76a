"""pgtrail: structured logs of LLM agent systems, in your PostgreSQL.

Open an execution per request, mark its processes, and log model calls, agent decisions
and user-journey events from anywhere below it::

    trail = pgtrail.Trail()
    with trail.execution("001 Main", user_id="57", context={"feature": "coaching"}):
        with trail.process("101 AI Execute LLM"):
            pgtrail.log_llm_execution(agent_type="coaching", model="claude-sonnet-4-20250514",
                                      input_tokens=12570, output_tokens=1568)
"""

from importlib.metadata import PackageNotFoundError, version

from pgtrail.config import Settings
from pgtrail.errors import PgtrailError
from pgtrail.helpers import log_agent_execution, log_llm_execution, log_user_journey
from pgtrail.models import (
    AgentDecision,
    ContextCompression,
    Guardrail,
    Handoff,
    Retrieval,
    ToolCall,
)
from pgtrail.propagation import extract, inject
from pgtrail.trail import Execution, Trail

try:
    __version__ = version("pgtrail")
    """The installed version of pgtrail."""
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"

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
    "__version__",
    "extract",
    "inject",
    "log_agent_execution",
    "log_llm_execution",
    "log_user_journey",
]
