"""The receiver's ``/metrics`` page: its counters and the writer's, in Prometheus text format.

One job: turn a :class:`ReceiverMetrics` and a :class:`~pgtrail.writer.flusher.WriterMetrics`
snapshot into the text exposition format (version 0.0.4), with ``HELP`` and ``TYPE`` lines.
Every name starts with ``pgtrail_``; counters end in ``_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pgtrail.otlp.journal import MAX_ATTEMPTS, JournalCounts
from pgtrail.writer.flusher import WriterMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the text exposition format."""

Labels = tuple[tuple[str, str], ...]
"""A sample's labels, as (name, value) pairs in the order they are written."""


@dataclass(frozen=True)
class ReceiverMetrics:
    """A snapshot of the receiver's own counters and gauges.

    Args:
        responses: Requests answered, by (route, status code); gRPC calls under the route
            ``grpc`` with their numeric gRPC status code (0 is OK).
        spans_accepted: Spans held in Redis for assembly.
        spans_refused: Spans not held, by reason (``invalid``: left out of an accepted
            request; ``redis_unavailable``: decoded, but Redis could not hold them).
        exports_in_progress: Exports decoding, assembling or waiting for a worker now.
        redis_up: Whether Redis answered the last probe.
        traces_pending: Open traces waiting in Redis, or None when Redis did not answer.
        journal: The span journal's counts, or None when it did not answer or the receiver
            keeps no journal.
        journal_up: Whether the span journal answered; None when the receiver keeps none.
    """

    responses: Mapping[tuple[str, int], int]
    spans_accepted: int
    spans_refused: Mapping[str, int]
    exports_in_progress: int
    redis_up: bool
    traces_pending: int | None
    journal: JournalCounts | None = None
    journal_up: bool | None = None


def render(receiver: ReceiverMetrics, writer: WriterMetrics) -> bytes:
    """The metrics page for one scrape.

    Args:
        receiver: The receiver's counters.
        writer: The writer's counters (from :meth:`pgtrail.Trail.metrics`).

    Returns:
        The page, UTF-8, ending with a newline.
    """
    lines: list[str] = []
    _family(
        lines,
        "pgtrail_otlp_requests_total",
        "counter",
        "Requests answered, by route and status code (route grpc: gRPC calls, by gRPC status"
        " code).",
        (
            ((("route", route), ("code", str(code))), count)
            for (route, code), count in sorted(receiver.responses.items())
        ),
    )
    _family(
        lines,
        "pgtrail_otlp_spans_accepted_total",
        "counter",
        "Spans held in Redis for assembly.",
        [((), receiver.spans_accepted)],
    )
    _family(
        lines,
        "pgtrail_otlp_spans_refused_total",
        "counter",
        "Spans not held, by reason.",
        (
            (
                ((("reason", reason),), count)
                for reason, count in sorted(receiver.spans_refused.items())
            )
        ),
    )
    _family(
        lines,
        "pgtrail_otlp_exports_in_progress",
        "gauge",
        "Exports decoding, assembling or waiting for a worker.",
        [((), receiver.exports_in_progress)],
    )
    _family(
        lines,
        "pgtrail_redis_up",
        "gauge",
        "1 when Redis, where traces assemble, answered; 0 when it did not.",
        [((), int(receiver.redis_up))],
    )
    if receiver.traces_pending is not None:  # unknown while Redis is down: no sample at all
        _family(
            lines,
            "pgtrail_otlp_traces_pending",
            "gauge",
            "Open traces waiting in Redis to be finalised.",
            [((), receiver.traces_pending)],
        )
    if receiver.journal_up is not None:
        _family(
            lines,
            "pgtrail_otlp_journal_up",
            "gauge",
            "1 when the span journal in PostgreSQL answered; 0 when it did not.",
            [((), int(receiver.journal_up))],
        )
    if receiver.journal is not None:
        _family(
            lines,
            "pgtrail_otlp_journal_spans",
            "gauge",
            "Spans acknowledged and not yet stored as rows.",
            [((), receiver.journal.waiting)],
        )
        _family(
            lines,
            "pgtrail_otlp_journal_stuck_spans",
            "gauge",
            f"Journalled spans recovered {MAX_ATTEMPTS} times and still not stored: see the log.",
            [((), receiver.journal.stuck)],
        )
    _family(
        lines,
        "pgtrail_postgresql_up",
        "gauge",
        "0 while PostgreSQL is known unreachable (rows go to the spool), else 1.",
        [((), int(writer.postgresql_up))],
    )
    _family(
        lines,
        "pgtrail_records_enqueued_total",
        "counter",
        "Records enqueued for the writer.",
        [((), writer.enqueued)],
    )
    _family(
        lines,
        "pgtrail_rows_written_total",
        "counter",
        "Rows stored in PostgreSQL straight from the queue, by table.",
        (((("table", table),), count) for table, count in sorted(writer.written_by_table.items())),
    )
    _family(
        lines,
        "pgtrail_records_rejected_total",
        "counter",
        "Records refused (invalid, or refused by PostgreSQL) and not stored.",
        [((), writer.rejected)],
    )
    _family(
        lines,
        "pgtrail_records_spooled_total",
        "counter",
        "Rows written to the on-disk spool.",
        [((), writer.spooled)],
    )
    _family(
        lines,
        "pgtrail_spool_replayed_total",
        "counter",
        "Spooled rows stored in PostgreSQL later.",
        [((), writer.replayed)],
    )
    _family(
        lines,
        "pgtrail_records_dropped_total",
        "counter",
        "Rows lost because PostgreSQL and the spool both refused them.",
        [((), writer.dropped)],
    )
    _family(
        lines,
        "pgtrail_spool_files",
        "gauge",
        "Batches waiting in the spool.",
        [((), writer.spool_files)],
    )
    _family(
        lines,
        "pgtrail_spool_bytes",
        "gauge",
        "Bytes the spooled batches take on disk.",
        [((), writer.spool_bytes)],
    )
    _family(
        lines,
        "pgtrail_writer_queue_depth",
        "gauge",
        "Records waiting in memory for the writer.",
        [((), writer.queue_depth)],
    )
    return ("\n".join(lines) + "\n").encode()


def _family(
    lines: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Iterable[tuple[Labels, int]],
) -> None:
    lines.append(f"# HELP {name} {_escape_help(help_text)}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{_labels(labels)} {value}")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
