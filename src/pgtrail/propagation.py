"""W3C ``traceparent`` headers: the execution id (as the trace id) and the current span,
carried between services."""

from __future__ import annotations

import logging
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass

from pgtrail.context import current

log = logging.getLogger("pgtrail")
_reported: set[str] = set()  # failures said once


@dataclass(frozen=True)
class TraceContext:
    """What a ``traceparent`` header carries: the execution and the calling process."""

    execution_id: uuid.UUID
    parent_span_id: str | None


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds ``traceparent`` for the current execution and process to ``headers``.

    Args:
        headers: A mutable mapping of header names to values; returned as given (and the
            failure logged) when it cannot take the header, except in strict mode.
    """
    state, span = current()
    if state is None:
        return headers
    try:
        span_id = (span or state.root_span).span_id
        headers["traceparent"] = f"00-{state.execution_id.hex}-{span_id}-01"
    except Exception:
        if state.trail.settings.strict:
            raise
        if "inject" not in _reported:
            _reported.add("inject")
            log.exception("pgtrail: inject failed; the headers carry no traceparent (said once)")
    return headers


def extract(headers: MutableMapping[str, str] | dict[str, str]) -> TraceContext | None:
    """Reads a ``traceparent`` header (any case); None when absent or malformed."""
    try:
        value = next(
            (v for k, v in headers.items() if isinstance(k, str) and k.lower() == "traceparent"),
            None,
        )
    except Exception:  # not a mapping, or one whose items() fails: no trace context
        return None
    if not value or not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        execution_id = uuid.UUID(hex=parts[1])
        int(parts[2], 16)
    except ValueError:
        return None
    if execution_id.int == 0 or parts[2] == "0" * 16:
        return None
    return TraceContext(execution_id, parts[2])


# -- Redis-held open executions -------------------------------------------------------------
