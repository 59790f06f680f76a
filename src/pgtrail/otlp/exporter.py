"""A span exporter for the OpenTelemetry SDK that writes to pgtrail in-process.

It feeds the same path as the OTLP receiver (trace assembly in Redis, the attribute mapping,
the writer), with no HTTP hop::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from pgtrail.otlp.exporter import PgtrailSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(PgtrailSpanExporter()))

This module needs ``opentelemetry-sdk``; the rest of pgtrail does not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pgtrail.errors import PgtrailError

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise PgtrailError(
        "pgtrail.otlp.exporter needs the OpenTelemetry SDK: pip install opentelemetry-sdk"
    ) from exc

from pgtrail.otlp.assemble import (
    DEFAULT_GRACE_S,
    DEFAULT_IDLE_S,
    AssemblyUnavailableError,
    Finaliser,
    Mapper,
    TraceAssembler,
)
from pgtrail.otlp.mapping import MappingOptions
from pgtrail.otlp.spans import OtlpSpan, SpanEvent
from pgtrail.trail import Trail

log = logging.getLogger("pgtrail")


class PgtrailSpanExporter(SpanExporter):
    """Exports finished spans to pgtrail's four tables.

    Args:
        trail: The writer to use; by default one is created from ``PGTRAIL_*`` variables
            (and closed with the exporter).
        grace_s: How long after its root span a trace is finalised (spans of other services
            may still be on their way).
        idle_s: How long a trace whose root never arrives waits before it is finalised.
        options: Which attributes name the user, tenant and session (see
            :class:`~pgtrail.otlp.mapping.MappingOptions`).
        retry_s: How long one export retries while Redis is unreachable.
        mapper: Span mapping to use instead of the default one.
        durable: Commit spans to the span journal before an export returns, as the
            receiver does (see :mod:`pgtrail.otlp.journal`). Off by default: in-process,
            there is no sender to acknowledge, and without it the writer's spool keeps the
            rows while PostgreSQL is away; on, exports fail (and the SDK drops the spans)
            while PostgreSQL is unreachable, but a killed process loses no exported span.
    """

    def __init__(
        self,
        trail: Trail | None = None,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        idle_s: float = DEFAULT_IDLE_S,
        options: MappingOptions | None = None,
        retry_s: float = 30.0,
        mapper: Mapper | None = None,
        durable: bool = False,
    ) -> None:
        self._owns_trail = trail is None
        self.trail = trail if trail is not None else Trail()
        self.assembler = TraceAssembler(
            self.trail, grace_s=grace_s, options=options, mapper=mapper, durable=durable
        )
        self._idle_s = idle_s
        self._interval_s = min(0.5, max(0.05, grace_s / 4))
        self._finaliser: Finaliser | None = None
        self._pid = 0
        self._shut = False
        self._retry_s = retry_s

    def _ensure_finaliser(self) -> Finaliser:
        # Threads do not survive fork: a child starts its own.
        if self._finaliser is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._finaliser = Finaliser(
                self.assembler, idle_s=self._idle_s, interval_s=self._interval_s
            ).start()
        return self._finaliser

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Holds the spans until their traces complete.

        While Redis is unreachable it retries, with backoff, for up to ``retry_s`` seconds
        (on the SDK's export thread, not the application's), then gives up with FAILURE.
        """
        if self._shut:
            return SpanExportResult.FAILURE
        self._ensure_finaliser()
        converted = [to_otlp_span(span) for span in spans]
        deadline = time.monotonic() + self._retry_s
        pause = 0.25
        while True:
            try:
                self.assembler.accept(converted)
            except AssemblyUnavailableError as exc:
                if time.monotonic() + pause > deadline or self._shut:
                    log.error("pgtrail: %d span(s) not exported: %s", len(converted), exc)
                    return SpanExportResult.FAILURE
                time.sleep(pause)
                pause = min(pause * 2, 4.0)
                continue
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Finalises the traces that are due and writes what is queued."""
        self.assembler.finalise_due()
        return self.trail.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Finalises the traces whose root has ended, flushes, and releases connections."""
        if self._shut:
            return
        self._shut = True
        if self._finaliser is not None and self._pid == os.getpid():
            self._finaliser.stop(finalise_rooted=True)
        else:
            self.assembler.finalise_rooted()
        self.trail.flush()
        self.assembler.close()
        if self._owns_trail:
            self.trail.close()


def to_otlp_span(span: ReadableSpan) -> OtlpSpan:
    """An SDK span in the shape the mapping reads."""
    context = span.context
    parent = span.parent
    status = span.status
    scope = span.instrumentation_scope
    return OtlpSpan(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        kind=int(span.kind.value) + 1,  # the SDK counts from INTERNAL=0, OTLP from 1
        start_unix_nano=span.start_time or 0,
        end_unix_nano=span.end_time or span.start_time or 0,
        status_code=int(status.status_code.value),
        status_message=status.description or "",
        attributes=_plain(span.attributes),
        events=tuple(
            SpanEvent(event.name, event.timestamp, _plain(event.attributes))
            for event in span.events
        ),
        resource=_plain(span.resource.attributes),
        scope=scope.name if scope is not None else "",
    )


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attribute values as the decoder produces them (sequences become lists)."""
    if not attributes:
        return {}
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in attributes.items()
    }
