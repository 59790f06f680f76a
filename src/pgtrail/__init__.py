"""pgtrail: structured logs of LLM agent systems, in your PostgreSQL.

Open an execution per request, mark its processes, and log model calls, agent decisions
and user-journey events from anywhere below it::

    trail = pgtrail.Trail()
    with trail.execution("001 Main", user_id="57", context={"feature": "coaching"}):
        with trail.process("101 AI Execute LLM"):
            pgtrail.log_llm_execution(agent_type="coaching", model="claude-sonnet-4-20250514",
                                      input_tokens=12570, output_tokens=1568)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgtrail.config import Settings
    from pgtrail.errors import PgtrailError
    from pgtrail.helpers import (
        log_agent_execution,
        log_llm_execution,
        log_score,
        log_user_journey,
    )
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

    __version__: str
    """The installed version of pgtrail."""

# Loaded on first use: a command such as `pgtrail trace` never pays for the writer, the
# Redis client or the connection pool it does not use.
_HOMES = {
    "Settings": "pgtrail.config",
    "PgtrailError": "pgtrail.errors",
    "log_agent_execution": "pgtrail.helpers",
    "log_llm_execution": "pgtrail.helpers",
    "log_score": "pgtrail.helpers",
    "log_user_journey": "pgtrail.helpers",
    "AgentDecision": "pgtrail.models",
    "ContextCompression": "pgtrail.models",
    "Guardrail": "pgtrail.models",
    "Handoff": "pgtrail.models",
    "Retrieval": "pgtrail.models",
    "ToolCall": "pgtrail.models",
    "extract": "pgtrail.propagation",
    "inject": "pgtrail.propagation",
    "Execution": "pgtrail.trail",
    "Trail": "pgtrail.trail",
}


if not TYPE_CHECKING:  # hidden from type checkers, which then still refuse unknown names

    def __getattr__(name: str) -> Any:
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                value: Any = version("pgtrail")
            except PackageNotFoundError:  # imported from a source tree that was never installed
                value = "0.0.0+unknown"
        elif name in _HOMES:
            value = getattr(importlib.import_module(_HOMES[name]), name)
        else:
            raise AttributeError(f"module 'pgtrail' has no attribute {name!r}")
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "log_score",
    "log_user_journey",
]
