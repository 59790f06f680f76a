"""Decoded OTLP spans for tests: one call builds one span, every field given or defaulted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from pgtrail.config import Settings
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.otlp.spans import STATUS_OK, OtlpSpan, SpanEvent
from pgtrail.trail import Trail

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in nanoseconds
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SPAN_ID = "a1b2c3d4e5f60718"
SPAN_KIND_INTERNAL = 1


def otel_span(
    name: str,
    attributes: dict[str, Any],
    *,
    trace_id: str = TRACE,
    span_id: str = SPAN_ID,
    parent: str | None = PARENT,
    start: int = T0,
    duration_ms: int = 1500,
    end: int | None = None,
    status: int = STATUS_OK,
    message: str = "",
    events: tuple[SpanEvent, ...] = (),
    resource: dict[str, Any] | None = None,
    scope: str = "",
) -> OtlpSpan:
    """An internal span as the decoder yields it.

    Args:
        name: The span's name.
        attributes: Its attributes, as plain Python values.
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent: The parent's span id; None for a root span.
        start: Start time, nanoseconds since 1970.
        duration_ms: How long it ran, unless ``end`` is given.
        end: End time, nanoseconds since 1970.
        status: OTLP status code.
        message: Status message.
        events: Span events.
        resource: Resource attributes; by default (or when empty) a ``travel-agent``
            service.
        scope: Instrumentation scope name.
    """
    return OtlpSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=SPAN_KIND_INTERNAL,
        start_unix_nano=start,
        end_unix_nano=start + duration_ms * 1_000_000 if end is None else end,
        status_code=status,
        status_message=message,
        attributes=attributes,
        events=events,
        resource=resource or {"service.name": "travel-agent"},
        scope=scope,
    )


@contextlib.contextmanager
def receivers(settings: Settings, **defaults: Any) -> Iterator[Callable[..., OtlpReceiver]]:
    """A factory of started receivers on a free port (``defaults`` for each, then the
    call's own options), all shut down with their writers on leaving."""
    started: list[tuple[OtlpReceiver, Trail]] = []

    def make(settings_: Settings = settings, **options: Any) -> OtlpReceiver:
        trail = Trail(settings_)
        receiver = OtlpReceiver(trail, port=0, **{**defaults, **options}).start()
        started.append((receiver, trail))
        return receiver

    try:
        yield make
    finally:
        for receiver, trail in started:
            receiver.shutdown()
            trail.close()
