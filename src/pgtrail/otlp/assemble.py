"""Traces assembled into executions: spans held in Redis until the trace is complete.

The spans of one trace arrive in several requests, out of order, from several services. Each
is kept in a Redis hash per trace (keyed by span id, so a span delivered twice is kept once),
redacted first when redaction is on.
When the root span arrives the trace is due ``grace_s`` seconds later, which leaves time for
the spans other services are still exporting. A trace whose root never arrives is finalised
after ``idle_s`` seconds without activity (``pgtrail sweep`` does the same): as abandoned, or,
when it is headed by one server or consumer span whose parent lives in a system that does
not export here (a browser, an upstream proxy), with that span's outcome.

Finalising claims the trace atomically (one finaliser wins, however many receivers run),
maps every span with :func:`pgtrail.otlp.mapping.map_span` and enqueues into the writer one
``logs_execution`` row (``processes_executed`` in start order, nesting from the span tree)
and the records of each span, stamped with the span's time and id. Event ids derive from the
trace id, span id and record index, so a trace delivered again stores nothing twice. Spans
that arrive after their trace was finalised still store their records, under the ids the
execution was finalised with.

One span never costs the others: a span that cannot be held, read back or mapped is logged
with its trace and span ids, and its trace is finalised with the spans that can. The Redis
keys carry the target database's namespace
(:func:`pgtrail.shared_state.database_namespace`), so receivers writing to different
databases never finalise each other's traces.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pgtrail.context import ExecutionState, Span
from pgtrail.errors import AssemblyUnavailableError, PgtrailError
from pgtrail.executions import execution_record
from pgtrail.otlp.journal import JournalCounts, JournalEntry, SpanJournal, SpanKey
from pgtrail.otlp.mapping import (
    MappingOptions,
    identity_attributes,
    inherit_agents,
    map_span,
)
from pgtrail.otlp.redaction import redact_span
from pgtrail.otlp.spans import (
    STATUS_ERROR,
    MappedSpan,
    OtlpSpan,
    SpanEvent,
)
from pgtrail.shared_state import HeldSpan, HeldTrace, TraceBuffer, database_namespace
from pgtrail.tables import LLM
from pgtrail.trail import Trail
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.redact import Redactor
from pgtrail.writer.sanitize import MAX_DEPTH

log = logging.getLogger("pgtrail")

DEFAULT_GRACE_S = 10.0
DEFAULT_IDLE_S = 600.0
_BATCH = 500  # traces finalised per Redis round trip
SPAN_KIND_SERVER = 2
SPAN_KIND_CONSUMER = 5
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_BYTES = "$bytes"  # {"$bytes": hex}: a bytes value, in a span held in Redis
_ESCAPED = "$escaped"  # {"$escaped": {...}}: a caller's dict that would read as a marker
_MARKERS = (b'"$bytes"', b'"$escaped"')
_HELD_DEPTH = 64  # deeper values are cut when a span is serialised the careful way
_INT_RANGE = range(-(2**63), 2**64)  # the integers JSON in Redis keeps exactly

Mapper = Callable[[OtlpSpan], MappedSpan]


@dataclass(frozen=True)
class Finalised:
    """What finalising one trace enqueued."""

    execution_id: uuid.UUID
    status: str
    spans: int
    records: int


class Ids(NamedTuple):
    """Whose a trace's records are."""

    tenant_id: str
    user_id: str | None
    session_id: str | None


class TraceAssembler:
    """Holds the spans of open traces in Redis and turns complete traces into rows.

    Args:
        trail: The writer the rows are enqueued into (its settings name Redis).
        grace_s: How long after its root span arrives a trace is finalised.
        options: Which attributes name the user, tenant and session; by default from the
            ``PGTRAIL_OTLP_*_ATTRIBUTES`` variables.
        mapper: Span-to-records mapping used instead of :func:`pgtrail.otlp.mapping.map_span`.
        namespace: The namespace of the traces in Redis; by default the target database's
            (:func:`pgtrail.shared_state.database_namespace` of the settings' DSN and
            schema), so that only assemblers writing to the same database share traces.
        durable: Commit every accepted span to the span journal in PostgreSQL before
            :meth:`accept` returns (see :mod:`pgtrail.otlp.journal`), and delete it once its
            rows are stored; with False, spans held in Redis or claimed by a finaliser that
            dies are lost.
        recover_after_s: How long a journalled span may wait to be stored before
            :meth:`recover_stranded` takes its trace as lost; by default the larger of 60 s
            and three grace periods.
    """

    def __init__(
        self,
        trail: Trail,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        options: MappingOptions | None = None,
        mapper: Mapper | None = None,
        namespace: str | None = None,
        durable: bool = True,
        recover_after_s: float | None = None,
    ) -> None:
        settings = trail.settings
        if settings.redis_url is None:
            raise PgtrailError(
                "OpenTelemetry intake needs Redis: traces are assembled there "
                "(set PGTRAIL_REDIS_URL)"
            )
        self.trail = trail
        self.grace_s = grace_s
        options = options or MappingOptions.from_settings(settings)
        self._mapper = mapper or functools.partial(map_span, options=options)
        # With redaction on, spans are redacted before Redis holds them (their identity
        # attributes aside), not only once they become rows.
        self._redaction = (Redactor(), identity_attributes(options)) if settings.redact else None
        if namespace is None:
            namespace = database_namespace(settings.dsn, settings.db_schema)
        self._buffer = TraceBuffer(settings.redis_url, settings.redis_prefix, namespace=namespace)
        # One finalising round at a time in this process: a round claims traces before it
        # enqueues their records, so a call that ran alongside one (a flush, say) could
        # return while what the other claimed is not yet in the writer's queue.
        self._finalising = threading.Lock()
        self._journal = SpanJournal(settings, max_connections=8) if durable else None
        self.recover_after_s = (
            recover_after_s if recover_after_s is not None else max(60.0, 3 * grace_s)
        )
        # Spans of finalised traces whose records accept() enqueued: their journal entries
        # go once the writer has stored what is queued, at the end of the next round.
        self._stored_late: list[SpanKey] = []
        self._stored_late_lock = threading.Lock()

    @property
    def durable(self) -> bool:
        """True when accepted spans are committed to the span journal first."""
        return self._journal is not None

    # -- intake ------------------------------------------------------------------------------

    def accept(self, spans: Sequence[OtlpSpan]) -> int:
        """Holds ``spans`` until their traces are complete; returns how many were held.

        Spans of traces finalised already have their records enqueued at once. A span that
        cannot be redacted or serialised is logged and left out; the others are held.

        Args:
            spans: Decoded spans, of any traces.

        Raises:
            AssemblyUnavailableError: Redis could not be reached, or (as
                :class:`~pgtrail.errors.JournalUnavailableError`) the span journal could not
                be written; the caller should ask its sender to retry (spans held already are
                not held twice).
        """
        by_trace: dict[str, list[OtlpSpan]] = {}
        blobs: dict[str, list[HeldSpan]] = {}
        for span in spans:
            try:
                if self._redaction is not None:
                    span = redact_span(span, *self._redaction)
                held_span = HeldSpan(span_id=span.span_id, blob=_dump_span(span))
            except Exception:  # one odd span never costs its request the other spans
                log.exception(
                    "pgtrail: span %s of trace %s cannot be held; it is left out",
                    span.span_id,
                    span.trace_id,
                )
                continue
            by_trace.setdefault(span.trace_id, []).append(span)
            blobs.setdefault(span.trace_id, []).append(held_span)
        if not by_trace:
            return 0
        if self._journal is not None:
            self._journal.record(
                [
                    JournalEntry(trace_id, held_span.span_id, held_span.blob)
                    for trace_id, group_blobs in blobs.items()
                    for held_span in group_blobs
                ]
            )
        now = time.time()
        results = self._buffer.hold(
            [
                HeldTrace(
                    trace_id=trace_id,
                    due_at=(
                        now + self.grace_s if any(s.parent_span_id is None for s in group) else None
                    ),
                    spans=blobs[trace_id],
                )
                for trace_id, group in by_trace.items()
            ],
            now,
        )
        held = 0
        for (trace_id, group), final in zip(by_trace.items(), results, strict=True):
            if final is None:
                held += len(group)
            else:
                self._enqueue_late(trace_id, group, _json_dict(final))
                with self._stored_late_lock:
                    self._stored_late += [SpanKey(trace_id, span.span_id) for span in group]
        return held

    # -- finalising --------------------------------------------------------------------------

    def finalise_due(self, now: float | None = None) -> list[Finalised]:
        """Finalises the traces whose root arrived more than the grace period ago.

        A round already running in this process (the finaliser thread's) is waited for, so
        every trace due is in the writer's queue when this returns.
        """
        moment = time.time() if now is None else now
        return self._finalise_scored(True, moment)

    def finalise_idle(self, idle_s: float) -> list[Finalised]:
        """Finalises traces with no new span for ``idle_s`` seconds (root or not)."""
        return self._finalise_scored(False, time.time() - idle_s)

    def finalise_rooted(self) -> list[Finalised]:
        """Finalises every trace whose root has arrived, grace or not (at shutdown)."""
        return self._finalise_scored(True, float("inf"))

    def _finalise_scored(self, due: bool, max_score: float) -> list[Finalised]:
        with self._finalising:
            stored: list[SpanKey] = []
            try:
                return self._finalise_scored_now(due, max_score, stored)
            finally:
                self._settle(stored)

    def _finalise_scored_now(
        self, due: bool, max_score: float, stored: list[SpanKey]
    ) -> list[Finalised]:
        done: list[Finalised] = []
        while True:
            try:
                ids = self._buffer.ready(due=due, max_score=max_score, limit=_BATCH)
                if not ids:
                    return done
                claimed = self._buffer.claim(ids)
            except AssemblyUnavailableError as exc:
                log.warning("pgtrail: cannot finalise OpenTelemetry traces now: %s", exc)
                return done
            markers: dict[str, str] = {}
            for trace_id, held in zip(ids, claimed, strict=True):
                if not held:
                    continue  # another finaliser won, or nothing was held
                spans = self._load_spans(trace_id, held)
                if not spans:
                    continue
                try:
                    finalised, marker = self._finalise(trace_id, spans)
                except Exception:  # one trace never stops the others
                    log.exception("pgtrail: could not finalise trace %s", trace_id)
                    continue
                markers[trace_id] = marker
                done.append(finalised)
                stored += [SpanKey(trace_id, span.span_id) for span in spans]
            self._write_markers(markers)
            if len(ids) < _BATCH:
                return done

    # -- the journal -------------------------------------------------------------------------

    def _settle(self, stored: list[SpanKey]) -> None:
        """Once the writer has stored what is queued, forgets the journal entries of
        ``stored`` and of the late spans enqueued since the last round.

        Entries stay when the writer could not store everything (a flush that timed out, a
        row dropped): a later recovery stores their spans again, nothing twice.
        """
        if self._journal is None:
            return
        with self._stored_late_lock:
            stored += self._stored_late
            self._stored_late = []
        if not stored:
            return
        dropped = self.trail.stats.dropped
        if not self.trail.flush() or self.trail.stats.dropped != dropped:
            log.warning(
                "pgtrail: the writer did not store every row of %d span(s); their journal "
                "entries stay, and a recovery stores them again",
                len(stored),
            )
            return
        try:
            self._journal.forget(stored)
        except AssemblyUnavailableError as exc:
            log.warning("pgtrail: could not clear %d journal entries: %s", len(stored), exc)

    def recover_stranded(self, limit: int = _BATCH) -> int:
        """Stores the traces the journal still holds past the recovery delay; returns how
        many were taken.

        Such a trace was lost by a receiver: killed after it claimed the trace from Redis
        and before its rows were stored, or left out when Redis restarted without its data.
        A trace still open in Redis is left to assemble. A trace Redis knows nothing of is
        held again (and finalised in its turn); one Redis marks finalised is stored from the
        journal at once. Rows have deterministic ids, so a trace stored already is not
        stored twice.

        Args:
            limit: How many journal entries to take in one call at most.
        """
        if self._journal is None:
            return 0
        with self._finalising:
            try:
                taken = self._journal.take_stranded(self.recover_after_s, limit)
            except AssemblyUnavailableError as exc:
                log.warning("pgtrail: cannot read the span journal now: %s", exc)
                return 0
            if not taken:
                return 0
            stored: list[SpanKey] = []
            try:
                self._recover(taken, stored)
            except AssemblyUnavailableError as exc:
                log.warning("pgtrail: cannot recover journalled traces now: %s", exc)
                self._give_back(list(taken))
            finally:
                self._settle(stored)
            return len(taken)

    def _recover(self, taken: dict[str, list[JournalEntry]], stored: list[SpanKey]) -> None:
        trace_ids = list(taken)
        assembling = self._buffer.open_among(trace_ids)
        self._give_back(sorted(assembling))
        spans = {
            trace_id: self._load_spans(
                trace_id, [HeldSpan(span_id=e.span_id, blob=e.blob) for e in taken[trace_id]]
            )
            for trace_id in trace_ids
            if trace_id not in assembling
        }
        spans = {trace_id: group for trace_id, group in spans.items() if group}
        if not spans:
            return
        now = time.time()
        results = self._buffer.hold(
            [
                HeldTrace(
                    trace_id=trace_id,
                    due_at=(
                        now + self.grace_s if any(s.parent_span_id is None for s in group) else None
                    ),
                    spans=[HeldSpan(span_id=e.span_id, blob=e.blob) for e in taken[trace_id]],
                )
                for trace_id, group in spans.items()
            ],
            now,
        )
        markers: dict[str, str] = {}
        for (trace_id, group), final in zip(spans.items(), results, strict=True):
            if final is None:
                continue  # assembling again: its finalisation stores it and clears the entries
            # Finalised before (or claimed by a finaliser that never stored it): stored from
            # here, execution row included, since the rows may all have been lost.
            marker = _json_dict(final)
            try:
                markers[trace_id] = self._finalise(trace_id, group, marker)[1]
            except Exception:  # one trace never stops the others
                log.exception("pgtrail: could not recover trace %s", trace_id)
                continue
            stored += [SpanKey(trace_id, span.span_id) for span in group]
        self._write_markers(markers)
        log.warning(
            "pgtrail: recovered %d trace(s) from the span journal (%d held again, %d stored)",
            len(taken),
            sum(1 for final in results if final is None),
            sum(1 for final in results if final is not None),
        )

    def _give_back(self, trace_ids: list[str]) -> None:
        if self._journal is None or not trace_ids:
            return
        try:
            self._journal.release(trace_ids)
        except AssemblyUnavailableError as exc:
            log.warning("pgtrail: could not give back journal attempts: %s", exc)

    def _load_spans(self, trace_id: str, held: list[HeldSpan]) -> list[OtlpSpan]:
        """The spans of a claimed trace read back; one that cannot be is logged and skipped."""
        spans: list[OtlpSpan] = []
        for item in held:
            try:
                spans.append(_load_span(item.blob))
            except Exception:  # one span never costs its trace the others
                log.exception(
                    "pgtrail: span %s of trace %s cannot be read back; the trace is "
                    "finalised without it",
                    item.span_id,
                    trace_id,
                )
        if not spans:
            log.error("pgtrail: no span of trace %s could be read back; nothing stored", trace_id)
        return spans

    def _write_markers(self, markers: dict[str, str]) -> None:
        """Remembers each finalised trace's ids, for the spans that arrive late."""
        try:
            self._buffer.mark_final(markers)
        except AssemblyUnavailableError as exc:
            log.warning("pgtrail: could not record finalised traces: %s", exc)

    def _finalise(
        self, trace_id: str, spans: list[OtlpSpan], marker: dict[str, Any] | None = None
    ) -> tuple[Finalised, str]:
        """Enqueues a trace's execution row and records; returns what it did and its marker.

        ``marker`` holds the ids the trace was finalised under before (a recovery): they
        win over what the spans say, so records stored again keep their first ids.
        """
        execution_id = uuid.UUID(hex=trace_id)
        mapped = self._map_trace(spans)
        held = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_span_id is None]
        if not roots:
            # A server (or consumer) span whose parent was never received heads the trace
            # when everything else hangs under it: the trace continues one started by a
            # system that does not export here (a browser, an upstream proxy) and is whole.
            tops = [s for s in spans if s.parent_span_id not in held]
            if len(tops) == 1 and tops[0].kind in (SPAN_KIND_SERVER, SPAN_KIND_CONSUMER):
                roots = tops
        root = min(roots, key=lambda s: s.start_unix_nano) if roots else None
        levels = _levels(spans, root)
        ordered = sorted(spans, key=lambda s: (s.start_unix_nano, levels[s.span_id]))
        # The root speaks first for the execution's ids; the other spans fill what it lacks.
        speakers = [mapped[root.span_id]] if root is not None else []
        speakers += [mapped[s.span_id] for s in ordered if s is not root]
        known = marker or {}
        tenant_id = known.get("tenant_id") or _first(m.tenant_id for m in speakers) or "default"
        user_id = known.get("user_id") or _first(m.user_id for m in speakers)
        session_id = known.get("session_id") or _first(m.session_id for m in speakers)
        anchor = root or ordered[0]
        workflow = (
            known.get("workflow")
            or _first(m.workflow for m in speakers)
            or mapped[anchor.span_id].process_name
        )
        context: dict[str, Any] = {}
        for m in speakers:
            for key, value in m.context.items():
                context.setdefault(key, value)
        llm_context = {"workflow": workflow, "feature": context.get("feature")}
        records = self._records(
            execution_id, ordered, mapped, Ids(tenant_id, user_id, session_id), llm_context
        )
        processes = [_process(s, mapped[s.span_id], levels[s.span_id]) for s in ordered]
        started = _time(anchor.start_unix_nano)
        if root is not None:
            finalized = _time(max(root.end_unix_nano, root.start_unix_nano))
            status = "error" if mapped[root.span_id].status == "error" else "success"
            error = mapped[root.span_id].error if status == "error" else None
        else:
            finalized = _time(max(s.end_unix_nano or s.start_unix_nano for s in spans))
            status = "abandoned"
            error = (
                "the trace went idle before its root span arrived "
                f"({sum(1 for s in spans if s.parent_span_id not in held)} disconnected parts)"
            )
        state = ExecutionState(
            trail=self.trail,
            execution_id=execution_id,
            workflow=workflow,
            tenant_id=tenant_id,
            user_id=user_id,
            session_id=session_id,
            context=context,
            parent_execution_id=None,
            started_at=started,
            is_root=True,
            root_span=Span(anchor.span_id, None, workflow, 0, started),
        )
        # The writer's sampling applies as to its own executions: decided per execution,
        # bodies dropped from sampled-out ones unless they failed.
        sampler = self.trail.sampler
        sampler.begin(execution_id, workflow, opened_here=True)
        for item in records:
            self._route(execution_id, item)
        sampling = sampler.end(execution_id, error=status == "error")
        self.trail.enqueue_execution(
            execution_record(state, processes, status, error, max(finalized, started), sampling)
        )
        new_marker = json.dumps(
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "session_id": session_id,
                "workflow": workflow,
                "feature": context.get("feature"),
            }
        )
        return Finalised(execution_id, status, len(spans), len(records)), new_marker

    def _records(
        self,
        execution_id: uuid.UUID,
        spans: Iterable[OtlpSpan],
        mapped: dict[str, MappedSpan],
        ids: Ids,
        llm_context: dict[str, Any],
    ) -> list[QueuedRecord]:
        """The queued records of ``spans``, under the trace's ids; model calls carry the
        execution's workflow and feature."""
        items: list[QueuedRecord] = []
        for span in spans:
            made: list[QueuedRecord] = []
            try:
                for index, record in enumerate(mapped[span.span_id].records):
                    created = _aware(record.created_at)
                    made.append(
                        QueuedRecord(
                            record.table,
                            record_event_id(span.trace_id, span.span_id, index, created),
                            execution_id,
                            created,
                            ids.tenant_id,
                            ids.user_id,
                            ids.session_id,
                            span.span_id,
                            dict(record.args),
                            context=llm_context if record.table == LLM else None,
                        )
                    )
            except Exception:  # a mapper's odd record costs only its span's records
                log.exception(
                    "pgtrail: the records of span %s of trace %s cannot be made; left out",
                    span.span_id,
                    span.trace_id,
                )
                continue
            items += made
        return items

    def _route(self, execution_id: uuid.UUID, item: QueuedRecord) -> None:
        """Hands one record to the writer through the sampler; a failure costs only it."""
        try:
            self.trail.sampler.route(execution_id, item)
        except Exception:
            log.exception(
                "pgtrail: record of span %s of trace %s could not be enqueued; left out",
                item.span_id,
                execution_id.hex,
            )

    def _enqueue_late(self, trace_id: str, spans: list[OtlpSpan], marker: dict[str, Any]) -> None:
        """Spans of a trace finalised already: their records, under the trace's ids."""
        mapped = self._map_trace(spans)
        execution_id = uuid.UUID(hex=trace_id)
        ids = Ids(
            marker.get("tenant_id") or _first(m.tenant_id for m in mapped.values()) or "default",
            marker.get("user_id") or _first(m.user_id for m in mapped.values()),
            marker.get("session_id") or _first(m.session_id for m in mapped.values()),
        )
        llm_context = {"workflow": marker.get("workflow"), "feature": marker.get("feature")}
        for record in self._records(execution_id, spans, mapped, ids, llm_context):
            # Through the sampler, like every record: a late span of a sampled-out trace
            # follows its decision while this process still remembers it.
            self._route(execution_id, record)
        log.info(
            "pgtrail: %d span(s) of trace %s arrived after it was finalised; their records "
            "are stored, the execution's process list is not amended",
            len(spans),
            trace_id,
        )

    def _map(self, span: OtlpSpan) -> MappedSpan:
        try:
            return self._mapper(span)
        except Exception:  # one odd span never costs its trace the other spans
            log.exception("pgtrail: could not map span %s of trace %s", span.span_id, span.trace_id)
            return MappedSpan(
                process_name=span.name or "span",
                status="error" if span.status_code == STATUS_ERROR else "ok",
                error=span.status_message or None,
            )

    def _map_trace(self, spans: Sequence[OtlpSpan]) -> dict[str, MappedSpan]:
        """Every span mapped; records that name no agent get their agent span's."""
        return inherit_agents(spans, {span.span_id: self._map(span) for span in spans})

    def journal_counts(self) -> JournalCounts | None:
        """How many spans wait in the journal (None when not durable).

        Raises:
            AssemblyUnavailableError: PostgreSQL could not be reached.
        """
        return self._journal.counts() if self._journal is not None else None

    def close(self) -> None:
        """Closes the Redis connection and the journal's."""
        self._buffer.close()
        if self._journal is not None:
            self._journal.close()


class Finaliser:
    """A daemon thread that finalises due traces, and idle ones, every ``interval_s``, and
    recovers the traces the span journal says were lost (at its first round, then every
    half recovery delay, at most every 30 s)."""

    def __init__(
        self, assembler: TraceAssembler, *, idle_s: float = DEFAULT_IDLE_S, interval_s: float = 0.5
    ) -> None:
        self.assembler = assembler
        self.idle_s = idle_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="pgtrail-otlp-finaliser", daemon=True
        )
        self._last_idle_check = 0.0
        self._last_recovery = -math.inf

    def start(self) -> Finaliser:
        """Starts the thread."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> list[Finalised]:
        """One round: due traces, and idle ones at most every few seconds."""
        done: list[Finalised] = []
        try:
            done += self.assembler.finalise_due()
            now = time.monotonic()
            if now - self._last_idle_check >= min(30.0, self.idle_s / 2):
                self._last_idle_check = now
                done += self.assembler.finalise_idle(self.idle_s)
            if now - self._last_recovery >= min(30.0, self.assembler.recover_after_s / 2):
                self._last_recovery = now
                self.assembler.recover_stranded()
        except Exception:  # the thread must outlive any surprise
            log.exception("pgtrail: OpenTelemetry finaliser error")
        return done

    def stop(self, *, finalise_rooted: bool = True) -> None:
        """Stops the thread; by default finalises the traces whose root has arrived."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if finalise_rooted:
            self.assembler.finalise_rooted()


# -- pieces ------------------------------------------------------------------------------------


def record_event_id(trace_id: str, span_id: str, index: int, created_at: dt.datetime) -> uuid.UUID:
    """A UUIDv7 for the ``index``-th record of a span: time-ordered, and the same every time."""
    ms = int(created_at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    digest = hashlib.sha256(f"pgtrail.otlp:{trace_id}:{span_id}:{index}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")
    value = ms << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62
    return uuid.UUID(int=value | (rand & 0x3FFF_FFFF_FFFF_FFFF))


def _levels(spans: Sequence[OtlpSpan], root: OtlpSpan | None) -> dict[str, int]:
    """Nesting level of each span: the root 0, a span whose parent never arrived 1."""
    parents = {s.span_id: s.parent_span_id for s in spans}
    root_id = root.span_id if root is not None else None
    levels: dict[str, int] = {}

    def level(span_id: str) -> int:
        chain: list[str] = []
        current: str | None = span_id
        base = 0
        while current is not None:
            if current in levels:
                base = levels[current]
                break
            if current == root_id:
                base = 0
                levels[current] = 0
                break
            if current in chain:  # a cycle: treat as hanging under the root
                base = 0
                break
            chain.append(current)
            parent = parents.get(current)
            if parent is None or parent not in parents:
                base = 0  # an orphan (or a second parentless span) hangs under the root
                break
            current = parent
        for depth, sid in enumerate(reversed(chain), start=1):
            levels[sid] = base + depth
        return levels[span_id]

    return {s.span_id: level(s.span_id) for s in spans}


def _process(span: OtlpSpan, mapped: MappedSpan, level: int) -> dict[str, Any]:
    """The element of ``processes_executed`` a span becomes."""
    end = max(span.end_unix_nano, span.start_unix_nano)
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": mapped.process_name,
        "nesting_level": level,
        "started_at": _time(span.start_unix_nano).isoformat(),
        "duration_ms": round((end - span.start_unix_nano) / 1_000_000),
        "status": "error" if mapped.status == "error" else "success",
        "error": mapped.error,
    }


def _time(unix_nano: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=unix_nano // 1000)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _json_dict(raw: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# -- spans in Redis ----------------------------------------------------------------------------


def _bytes_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {_BYTES: value.hex()}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(type(value).__name__)


def _dump_span(span: OtlpSpan) -> bytes:
    """A span as Redis holds it: JSON, bytes as ``{"$bytes": hex}``.

    A caller's own dict that would read back as a marker (its one key ``$bytes`` or
    ``$escaped``) is wrapped as ``{"$escaped": dict}``, so no value is ever mistaken for
    another. The fast path serialises as is and takes the careful one only when the result
    holds a marker's key, or could not be serialised (integers beyond 64 bits, keys that are
    not strings, strings that are not UTF-8).
    """
    document = [
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.start_unix_nano,
        span.end_unix_nano,
        span.status_code,
        span.status_message,
        span.attributes,
        [[e.name, e.time_unix_nano, e.attributes] for e in span.events],
        span.resource,
        span.scope,
    ]
    try:
        blob = orjson.dumps(document, default=_bytes_default)
    except TypeError:
        pass
    else:
        if not any(marker in blob for marker in _MARKERS):
            return blob
    return orjson.dumps(_held(document, 0), option=orjson.OPT_NON_STR_KEYS)


def _held(value: Any, depth: int) -> Any:
    """``value`` made exactly serialisable: markers for bytes, caller dicts escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if value in _INT_RANGE else str(value)
    if isinstance(value, bytes | bytearray):
        return {_BYTES: bytes(value).hex()}
    if depth > _HELD_DEPTH:
        return MAX_DEPTH
    if isinstance(value, dict):
        inner = {_held_key(k): _held(v, depth + 1) for k, v in value.items()}
        if len(inner) == 1 and next(iter(inner)) in (_BYTES, _ESCAPED):
            return {_ESCAPED: inner}
        return inner
    if isinstance(value, list | tuple | set | frozenset):
        return [_held(v, depth + 1) for v in value]
    return str(value)


def _held_key(key: Any) -> str:
    return _held(key, 0) if isinstance(key, str) else str(key)


def _restore(value: Any) -> Any:
    """A value read back from Redis: the inverse of :func:`_held`."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == _BYTES and isinstance(inner, str):
                try:
                    return bytes.fromhex(inner)
                except ValueError:  # held before markers were escaped: the caller's own dict
                    return value
            if key == _ESCAPED and isinstance(inner, dict):
                return {k: _restore(v) for k, v in inner.items()}
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def _load_span(blob: bytes) -> OtlpSpan:
    """A span read back from Redis.

    Raises:
        ValueError: The blob is not a span as :func:`_dump_span` writes one.
    """
    document = orjson.loads(blob)
    if not isinstance(document, list) or len(document) != 13:
        raise ValueError("not a held span")
    (
        trace_id,
        span_id,
        parent,
        name,
        kind,
        start,
        end,
        code,
        message,
        attributes,
        events,
        resource,
        scope,
    ) = document
    if any(marker in blob for marker in _MARKERS):  # rare: only bytes and escapes need it
        attributes, resource = _restore(attributes), _restore(resource)
        events = [[n, t, _restore(a)] for n, t, a in events]
    span = OtlpSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_unix_nano=start,
        end_unix_nano=end,
        status_code=code,
        status_message=message,
        attributes=attributes,
        events=tuple(SpanEvent(n, t, a) for n, t, a in events),
        resource=resource,
        scope=scope,
    )
    _check_span(span)
    return span


def _check_span(span: OtlpSpan) -> None:
    """Raises ValueError unless every field of ``span`` has its type (a span read back)."""
    texts = [span.trace_id, span.span_id, span.name, span.status_message, span.scope]
    numbers = [span.kind, span.start_unix_nano, span.end_unix_nano, span.status_code]
    numbers += [e.time_unix_nano for e in span.events]
    maps = [span.attributes, span.resource, *(e.attributes for e in span.events)]
    if (
        not all(isinstance(t, str) for t in [*texts, *(e.name for e in span.events)])
        or not (span.parent_span_id is None or isinstance(span.parent_span_id, str))
        or not all(type(n) is int and n >= 0 for n in numbers)
        or not all(isinstance(m, dict) for m in maps)
    ):
        raise ValueError("a held span with a field of the wrong type")


__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_IDLE_S",
    "AssemblyUnavailableError",
    "Finalised",
    "Finaliser",
    "TraceAssembler",
    "record_event_id",
]
