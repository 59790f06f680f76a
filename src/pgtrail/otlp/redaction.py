"""Redacting a span before Redis holds it while its trace assembles, redaction being on.

The mapping then reads the redacted span, and the writer redacts the rows it becomes
again (a placeholder stays what it is), so no secret reaches Redis, the spool or
PostgreSQL. Identifiers are kept as given: the writer hashes a user id from its raw value.
"""

from __future__ import annotations

from dataclasses import replace

from pgtrail.otlp.spans import OtlpSpan
from pgtrail.writer.redact import Redactor

__all__ = ["redact_span"]


def redact_span(span: OtlpSpan, redactor: Redactor, keep: frozenset[str]) -> OtlpSpan:
    """The span as it may be held in Redis while its trace assembles, redaction being on.

    Its name, status message, attributes, events and resource are redacted as the rows they
    become would be.

    Args:
        span: A decoded span.
        redactor: The redactor in use.
        keep: Attributes holding identifiers (see
            :func:`pgtrail.otlp.mapping.identity_attributes`), kept as they are.
    """
    return replace(
        span,
        name=redactor.redact_text(span.name) if isinstance(span.name, str) else span.name,
        status_message=(
            redactor.redact_text(span.status_message)
            if isinstance(span.status_message, str)
            else span.status_message
        ),
        attributes=redactor.redact_json(span.attributes, keep),
        events=tuple(
            replace(event, attributes=redactor.redact_json(event.attributes, keep))
            for event in span.events
        ),
        resource=redactor.redact_json(span.resource, keep),
    )
