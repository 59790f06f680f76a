"""The queued record: one row on its way from the caller's call to the flusher.

A :class:`QueuedRecord` is what the ``log_*`` helpers, the OTLP assembler and the execution
row enqueue. It carries who and when (the execution, tenant, user, session, span and time),
the caller's own arguments untouched, and what was serialised on the caller's side as fields
of its own: the ``data`` and ``payload`` dictionaries frozen to JSON, the execution's
context, and the sampling mark of a sampled-out execution. The preparer
(:mod:`pgtrail.writer.prepare`) turns it into ``COPY`` text.

It is a NamedTuple: built positionally it costs what a tuple costs, and it is read by name.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, NamedTuple


class QueuedRecord(NamedTuple):
    """One record of a log table, as enqueued."""

    table: str
    """The log table it goes to (:mod:`pgtrail.tables`)."""
    event_id: uuid.UUID | None
    """Its ``event_id``; None lets the writer assign a UUIDv7 of ``created_at``."""
    execution_id: uuid.UUID | str
    """The execution it belongs to: a UUID or its 32 hex digits."""
    created_at: dt.datetime
    """When it happened (aware; stored in UTC)."""
    tenant_id: Any
    """The execution's tenant (cleaned by the writer; ``default`` when empty)."""
    user_id: Any
    """The execution's user, or None (hashed by the writer when a key is set)."""
    session_id: Any
    """The execution's session, or None."""
    span_id: Any
    """The process (span) it happened in."""
    args: dict[str, Any]
    """The caller's arguments, as given: the writer validates and cleans them."""
    data_json: str | None = None
    """``data`` already serialised as a clean JSON object on the caller's side, or None."""
    payload_json: str | None = None
    """``payload`` already serialised as a clean JSON object, or None."""
    context_members: str | None = None
    """The execution's context for ``particular_data`` as serialised JSON members, or None."""
    context: dict[str, Any] | None = None
    """The same context as a dictionary, when it was not serialised."""
    sampled_out: float | None = None
    """The sampling rate of a sampled-out execution whose bodies are dropped, or None."""
