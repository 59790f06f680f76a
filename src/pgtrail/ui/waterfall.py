"""One execution as waterfall rows: each shown process with its offset and duration bar.

The rows come from a :class:`~pgtrail.read.trace_view.TraceView`, so a big execution is cut
exactly as ``pgtrail trace`` cuts it, and every cut row says what it hides. Bars are on a
0-1000 scale of the execution's span of time, drawn by the template as SVG rectangles
(never inline styles, which the Content-Security-Policy forbids).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from typing import Any

from pgtrail.read.trace import Event, TracedLlmCall
from pgtrail.read.trace_view import ShownProcess, TraceView

SCALE = 1000
"""Width of the time axis of a bar, in SVG units."""


@dataclass(frozen=True)
class CallBodies:
    """The prompt body and payload of one model call, each cut to a length.

    Attributes:
        prompt_hash: the prompt's hash, or None.
        prompt_body: the prompt's text (its start), or None when not stored.
        prompt_chars: the prompt's full length in characters.
        payload: the payload as JSON text (its start), or None.
        payload_chars: the payload's full length in characters.
    """

    prompt_hash: str | None
    prompt_body: str | None
    prompt_chars: int | None
    payload: str | None
    payload_chars: int | None

    @property
    def prompt_cut(self) -> bool:
        """Whether only the start of the prompt is shown."""
        return bool(
            self.prompt_body and self.prompt_chars and self.prompt_chars > len(self.prompt_body)
        )

    @property
    def payload_cut(self) -> bool:
        """Whether only the start of the payload is shown."""
        return bool(self.payload and self.payload_chars and self.payload_chars > len(self.payload))


@dataclass(frozen=True)
class EventRow:
    """One event under its process.

    Attributes:
        event: the event.
        offset_ms: milliseconds from the execution's start, or None when unknown.
        bodies: for a model call, its prompt and payload (when read).
    """

    event: Event
    offset_ms: int | None
    bodies: CallBodies | None = None

    @property
    def call(self) -> TracedLlmCall | None:
        """The event as a model call, or None."""
        return self.event if isinstance(self.event, TracedLlmCall) else None


@dataclass(frozen=True)
class ProcessRow:
    """One shown process.

    Attributes:
        shown: the process as the view shows it (its hidden parts included).
        offset_ms: milliseconds from the execution's start to its start, or None.
        bar_x: where its bar starts on the 0-1000 axis.
        bar_width: how wide its bar is (at least 2, so an instant still shows).
        events: its shown events.
    """

    shown: ShownProcess
    offset_ms: int | None
    bar_x: float
    bar_width: float
    events: tuple[EventRow, ...]


@dataclass(frozen=True)
class Waterfall:
    """The rows of one execution and the span of time they are drawn on.

    Attributes:
        rows: the processes, depth first in start order.
        span_ms: the time axis length, in ms.
        started_at: the moment the axis starts.
    """

    rows: tuple[ProcessRow, ...]
    span_ms: int
    started_at: dt.datetime | None


def _ms(a: dt.datetime | None, b: dt.datetime | None) -> int | None:
    if a is None or b is None:
        return None
    return int((a - b).total_seconds() * 1000)


def bodies_by_call(
    rows: list[dict[str, Any]],
) -> dict[tuple[dt.datetime, str | None], deque[CallBodies]]:
    """Prompt and payload rows (``ui_llm_call_bodies``) keyed as the calls they belong to.

    Args:
        rows: the rows, in the calls' order.
    """
    found: dict[tuple[dt.datetime, str | None], deque[CallBodies]] = {}
    for r in rows:
        found.setdefault((r["created_at"], r["span_id"]), deque()).append(
            CallBodies(
                r["prompt_hash"],
                r["prompt_body"],
                r["prompt_chars"],
                r["payload"],
                r["payload_chars"],
            )
        )
    return found


def build(
    view: TraceView, bodies: dict[tuple[dt.datetime, str | None], deque[CallBodies]] | None = None
) -> Waterfall:
    """The waterfall of a trace view.

    Args:
        view: what of the trace is shown.
        bodies: prompt and payload of the model calls, from :func:`bodies_by_call`.
    """
    trace = view.trace
    start = trace.started_at or view.root.node.started_at
    order: list[ShownProcess] = []
    stack = [view.root]
    while stack:
        shown = stack.pop()
        order.append(shown)
        stack.extend(reversed(shown.children))
    ends = [(_ms(s.node.started_at, start) or 0) + (s.node.duration_ms or 0) for s in order]
    span = max([trace.duration_ms or 0, *ends, 1])
    rows: list[ProcessRow] = []
    pending = bodies or {}
    for shown in order:
        offset = _ms(shown.node.started_at, start)
        x = 0.0 if offset is None else max(0.0, min(SCALE, offset * SCALE / span))
        width = 0.0 if shown.node.duration_ms is None else shown.node.duration_ms * SCALE / span
        events = []
        for event in shown.events:
            found = None
            if isinstance(event, TracedLlmCall):
                queue = pending.get((event.created_at, event.span_id))
                found = queue.popleft() if queue else None
            events.append(EventRow(event, _ms(event.created_at, start), found))
        rows.append(ProcessRow(shown, offset, x, max(2.0, min(width, SCALE - x)), tuple(events)))
    return Waterfall(tuple(rows), span, start)
