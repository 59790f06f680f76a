"""The background flusher: drains the in-memory queue to PostgreSQL, or to the spool.

Callers only append to a deque. A daemon thread wakes on size or interval and prepares
batches (``records``); a second one writes them (``sink``), so PostgreSQL takes one batch
while the next is prepared, and the writer's waits on the network never hold up the
preparation. At most two prepared batches wait between them. When PostgreSQL is unreachable
a prepared batch is written to the spool and replayed, oldest first, once it is back. When
the queue is full the caller moves the oldest records to the spool itself, so memory stays
bounded. Only when the spool cannot be written either (disk full, folder not writable) is a
batch dropped: counted in ``stats.dropped``, said once with the reason, never raised into
the application. After ``fork`` the child starts empty: what the parent had
enqueued is the parent's to write.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import psycopg

from pgtrail.config import Settings
from pgtrail.errors import PgtrailError, SinkUnavailableError, SpoolDamagedError
from pgtrail.tables import COLUMNS, PROMPT
from pgtrail.writer import copytext
from pgtrail.writer.freeze import freeze
from pgtrail.writer.prepare import RecordPreparer, Rejected
from pgtrail.writer.record import QueuedRecord
from pgtrail.writer.sink import RejectedRow, Sink
from pgtrail.writer.spool import Batch, Spool

log = logging.getLogger("pgtrail")
_REJECTED_KEPT = 1000
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0
_OUTBOX_BATCHES = 2
_MERGED_ROWS_MAX = 20_000


class PreparedBatch(NamedTuple):
    """A batch ready for ``COPY``, handed to the writer thread."""

    batch: Batch
    """Its rows, by table."""
    rows: int
    """How many rows it holds in all."""


class Order(enum.Enum):
    """What else the writer thread is asked to do, in turn with the batches."""

    REPLAY = "replay"
    """Replay the spool."""
    STOP = "stop"
    """Finish: nothing is queued behind it."""


Job = PreparedBatch | Order
"""One item of the writer thread's queue."""


@dataclass
class FlushStats:
    """Counters of what the writer did since it started.

    ``written`` counts the rows stored straight from the queue, ``written_by_table`` the
    same rows by table (counted once per stored batch); rows stored from the spool are
    counted in ``replayed``.
    """

    enqueued: int = 0
    written: int = 0
    written_by_table: dict[str, int] = field(default_factory=dict)
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0
    dropped: int = 0
    damaged_files: int = 0
    busy_files: int = 0
    batches: int = 0
    last_error: str | None = None
    recent_rejections: collections.deque[Rejected] = field(
        default_factory=lambda: collections.deque(maxlen=_REJECTED_KEPT)
    )


@dataclass(frozen=True)
class WriterMetrics:
    """A snapshot of the writer's counters and gauges, for an application's own metrics.

    Args:
        enqueued: Records enqueued since the writer started.
        written_by_table: Rows stored straight from the queue, by table name.
        rejected: Records refused (invalid, or refused by PostgreSQL) and not stored.
        spooled: Rows written to the on-disk spool (PostgreSQL away, or the queue full).
        replayed: Spooled rows stored in PostgreSQL later.
        dropped: Rows lost because PostgreSQL and the spool both refused them.
        spool_files: Batches waiting in the spool now.
        spool_bytes: Bytes those batches take on disk.
        queue_depth: Records waiting in memory for the writer now.
        postgresql_up: False while PostgreSQL is known unreachable (its last write or probe
            failed): rows then go to the spool.
    """

    enqueued: int
    written_by_table: Mapping[str, int]
    rejected: int
    spooled: int
    replayed: int
    dropped: int
    spool_files: int
    spool_bytes: int
    queue_depth: int
    postgresql_up: bool

    @property
    def written(self) -> int:
        """Rows stored straight from the queue, all tables together."""
        return sum(self.written_by_table.values())


def _merged(first: Batch, second: Batch) -> Batch:
    """Two batches as one (the first is extended in place)."""
    for table, rows in second.items():
        first.setdefault(table, []).extend(rows)
    return first


def _row_problem(table: str, row: str) -> str | None:
    """Why a spooled row cannot be written as it is, or None when it looks whole."""
    try:
        values = copytext.fields(row)
        if len(values) != len(COLUMNS[table]):
            return f"{len(values)} fields where {len(COLUMNS[table])} are expected"
        if table != PROMPT:
            copytext.created_day(row)
    except Exception as exc:
        return f"unreadable row: {type(exc).__name__}: {exc}"
    return None


def _screened(batch: Batch) -> list[Rejected]:
    """Takes the rows that cannot be written out of a spooled batch; returns them refused."""
    refused: list[Rejected] = []
    for table, rows in batch.items():
        kept = []
        for row in rows:
            problem = _row_problem(table, row)
            if problem is None:
                kept.append(row)
            else:
                refused.append(Rejected(table, None, f"spooled row skipped: {problem}"))
        rows[:] = kept
    return refused


class Flusher:
    """Owns the queue, the flushing thread, the sink and the spool of one Trail."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        background: bool,
        on_flush: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.spool = Spool(settings.spool_dir)
        self.preparer = RecordPreparer(settings, sink.prices)
        self.stats = FlushStats()
        self.background = background
        self._on_flush = on_flush
        self._reset_state()

    def _reset_state(self) -> None:
        self.queue: collections.deque[QueuedRecord] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()  # notified when a drain or a write ends
        self._busy = False
        self._drains = 0  # drains begun; flush() waits for one begun after its call
        self._drained = 0  # drains ended
        self._lock = threading.Lock()  # one batch at a time, whoever flushes
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._outbox: queue.Queue[Job] = queue.Queue(maxsize=_OUTBOX_BATCHES)
        self._replay_queued = False
        self._stopping = False
        self._db_down_until = 0.0
        self._retry_s = _RETRY_MIN_S

    # -- the caller's side ------------------------------------------------------------

    def submit(self, item: QueuedRecord) -> None:
        """Enqueues one record; never waits on the network.

        Args:
            item: The record; its dictionaries are serialised here when they are clean.
        """
        try:
            item = freeze(item, self.settings.max_field_chars)
        except Exception:  # left as it is: the writer cleans it and says why
            log.debug("pgtrail: a record could not be frozen", exc_info=True)
        queue = self.queue
        queue.append(item)
        self.stats.enqueued += 1
        size = len(queue)
        if size >= self.settings.batch_size:
            if size >= self.settings.queue_size:
                self._spill()
            if not self.background:
                self.flush()
            elif not self._wake.is_set():  # setting it takes a lock: once per wake-up
                self._wake.set()
        if self.background and self._thread is None:
            self._start()

    def _spill(self) -> None:
        """Queue full: move the oldest batch to the spool, on the caller's thread."""
        items = self._take(self.settings.batch_size)
        if not items:
            return
        batch, rejected = self.preparer.prepare(items)
        self._record_rejections(rejected)
        if self._to_spool(batch, sum(len(rows) for rows in batch.values())):
            log.warning("pgtrail: queue full; a batch of %d records went to the spool", len(items))

    # -- the flushing side ------------------------------------------------------------

    def _start(self) -> None:
        with self._idle:
            if self._thread is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="pgtrail-writer", daemon=True
                )
                self._writer.start()
                self._thread = threading.Thread(
                    target=self._run, name="pgtrail-flusher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.settings.flush_interval_s)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # the thread must outlive any surprise
                log.exception("pgtrail: flusher error")

    def _take(self, limit: int) -> list[QueuedRecord]:
        queue = self.queue
        items: list[QueuedRecord] = []
        try:
            while len(items) < limit:
                items.append(queue.popleft())
        except IndexError:
            pass
        return items

    def _drain(self) -> None:
        """Prepares everything queued for the writer, batch by batch; then a spool replay."""
        with self._lock:
            self._busy = True
            self._drains += 1
            try:
                while self.queue:
                    self._prepare_batch(self._take(self.settings.batch_size))
                if self._on_flush:
                    self._on_flush()
                if time.monotonic() >= self._db_down_until and (
                    self._db_down_until or self.spool.files()
                ):  # a replay, or while PostgreSQL is known down, a probe of it
                    if self._writer is None:
                        self.replay_spool()
                    elif not self._replay_queued:
                        self._replay_queued = True
                        self._outbox.put(Order.REPLAY)
            finally:
                self._busy = False
                with self._idle:
                    self._drained = self._drains
                    self._idle.notify_all()

    def _prepare_batch(self, items: list[QueuedRecord]) -> None:
        """Prepares one batch and hands it to the writer thread (or writes it, without one)."""
        if not items:
            return
        # While PostgreSQL is known down, batches go straight to the spool and the writer
        # probes it (``replay_spool``): no batch waits out a connection attempt in memory.
        db_up = not self._db_down_until
        if db_up:
            try:
                self.sink.refresh_prices()  # before preparing: cost inference needs them
            except SinkUnavailableError as exc:
                self._mark_down(exc)
                db_up = False
        batch, rejected = self.preparer.prepare(items)
        self._record_rejections(rejected)
        if not batch:
            return
        rows = sum(len(r) for r in batch.values())
        if not db_up:
            self._to_spool(batch, rows)
        elif self._writer is not None:
            self._outbox.put(PreparedBatch(batch, rows))  # waits while two batches are ahead of it
        else:
            self._store(batch, rows)

    def _write_loop(self) -> None:
        """The writer thread: stores prepared batches in order, replays the spool on request.

        Batches that wait are written together, in one transaction: the round trips of a
        write are paid once for all of them.
        """
        held: Job | None = None
        while True:
            job = held if held is not None else self._outbox.get()
            held = None
            taken = 1
            try:
                if job is Order.STOP:
                    return
                if job is Order.REPLAY:
                    self._replay_queued = False
                    self.replay_spool()
                else:
                    batch, rows = job.batch, job.rows
                    while rows < _MERGED_ROWS_MAX and held is None:
                        try:
                            more = self._outbox.get_nowait()
                        except queue.Empty:
                            break
                        if isinstance(more, PreparedBatch):
                            batch, rows = _merged(batch, more.batch), rows + more.rows
                            taken += 1
                        else:
                            held = more  # an order: carried out after this write
                    job = PreparedBatch(batch, rows)
                    self._store(batch, rows)
            except Exception:  # the thread must outlive any surprise; the batch is kept
                log.exception("pgtrail: writer error")
                if isinstance(job, PreparedBatch):
                    try:
                        self._to_spool(job.batch, job.rows)
                    except Exception:
                        log.exception("pgtrail: a batch of %d rows could not be spooled", job.rows)
            finally:
                for _ in range(taken):
                    self._outbox.task_done()
                with self._idle:
                    self._idle.notify_all()

    def _store(self, batch: Batch, rows: int) -> None:
        """Writes one prepared batch; to the spool when PostgreSQL cannot take it."""
        if self._db_down_until:  # it went away since the batch was prepared
            self._to_spool(batch, rows)
            return
        refused: list[RejectedRow] = []
        try:
            self.sink.ensure_partitions(batch)
            self.sink.write(batch)
        except SinkUnavailableError as exc:
            self._mark_down(exc)
            self._to_spool(batch, rows)
            return
        except psycopg.Error:
            # A bad row (or an event already stored): write the rest through the path that
            # skips duplicates and isolates the rows PostgreSQL refuses.
            try:
                refused = self.sink.write_isolating(batch)
            except SinkUnavailableError as exc:
                self._mark_down(exc)
                self._to_spool(batch, rows)
                return
            self._record_rejections(
                [Rejected(r.table, copytext.event_id(r.row), r.reason) for r in refused]
            )
            rows -= len(refused)
        self._db_up()
        self.stats.written += rows
        self.stats.batches += 1
        by_table = self.stats.written_by_table
        for table, table_rows in batch.items():
            by_table[table] = by_table.get(table, 0) + len(table_rows)
        for r in refused:
            by_table[r.table] -= 1

    def _to_spool(self, batch: Batch, rows: int) -> bool:
        """Spools a batch; when the spool cannot take it, counts it dropped (never raises).

        Returns:
            Whether the batch reached the spool.
        """
        self.preparer.forget_prompts()  # their rows may not have been stored: send again
        try:
            self.spool.write(batch)
        except PgtrailError as exc:
            self._drop(rows, str(exc))
            return False
        self.stats.spooled += rows
        return True

    def _drop(self, rows: int, reason: str) -> None:
        first = self.stats.dropped == 0
        self.stats.dropped += rows
        self.stats.last_error = reason
        if first:  # once: a full disk would otherwise log for every batch
            log.error(
                "pgtrail: PostgreSQL and the spool both refused a batch; %d record(s) dropped "
                "(stats.dropped counts all that follow): %s",
                rows,
                reason,
            )

    def _mark_down(self, exc: Exception) -> None:
        self.stats.last_error = str(exc)
        if self._db_down_until == 0.0:
            log.warning(
                "pgtrail: PostgreSQL unavailable, spooling to %s: %s", self.spool.directory, exc
            )
        self._db_down_until = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)

    def _db_up(self) -> None:
        if self._db_down_until:
            log.warning("pgtrail: PostgreSQL reachable again")
        self._db_down_until = 0.0
        self._retry_s = _RETRY_MIN_S

    def replay_spool(self) -> int:
        """Writes spooled batches through the idempotent path; returns rows replayed."""
        replayed = 0
        self.stats.busy_files = 0
        self.spool.remove_partial()
        files = self.spool.files()
        if not files and self._db_down_until:
            self._probe()
        for path in files:
            try:
                count = self._replay_file(path)
            except SinkUnavailableError as exc:
                self._mark_down(exc)
                break
            if count is None:
                self.stats.busy_files += 1
            else:
                replayed += count
        self.stats.replayed += replayed
        if replayed:
            self._db_up()
        return replayed

    def _probe(self) -> None:
        """Tries PostgreSQL while it is known down and nothing is spooled to try it with."""
        try:
            self.sink.probe()
        except SinkUnavailableError as exc:
            self._mark_down(exc)
        else:
            self._db_up()

    def _replay_file(self, path: Path) -> int | None:
        """Replays one spooled file; rows stored, or None when another replay holds it.

        A file that cannot be read back or written (other than PostgreSQL being away) is
        moved aside, so one damaged file never blocks the others.
        """
        try:
            with self.spool.claim(path) as batch:
                if batch is None:
                    return None
                unknown = sorted(set(batch) - set(COLUMNS))
                if unknown:
                    raise SpoolDamagedError(f"unknown table(s) {', '.join(unknown)}")
                self._record_rejections(_screened(batch))
                try:
                    self.sink.refresh_prices()
                    self.preparer.fill_missing_costs(batch)
                    self.sink.ensure_partitions(batch)
                    refused = self.sink.write_isolating(batch)
                except SinkUnavailableError:
                    raise
                except Exception as exc:
                    raise SpoolDamagedError(f"{type(exc).__name__}: {exc}") from exc
                self._record_rejections([Rejected(r.table, None, r.reason) for r in refused])
                self.spool.done(path)
                return sum(len(rows) for rows in batch.values()) - len(refused)
        except SpoolDamagedError as exc:
            self.stats.damaged_files += 1
            self.spool.set_aside(path, str(exc))
            return 0

    def _record_rejections(self, rejected: list[Rejected]) -> None:
        for r in rejected:
            self.stats.rejected += 1
            self.stats.recent_rejections.append(r)
            log.error(
                "pgtrail: rejected a %s record%s: %s",
                r.table,
                f" (event {r.event_id})" if r.event_id else "",
                r.reason,
            )

    # -- control ----------------------------------------------------------------------

    def metrics(self) -> WriterMetrics:
        """A snapshot of the counters, the spool on disk and the queue (see
        :class:`WriterMetrics`); reads the spool folder, never the database."""
        stats = self.stats
        files = 0
        size = 0
        for path in self.spool.files():
            with contextlib.suppress(OSError):  # replayed and removed meanwhile
                size += path.stat().st_size
                files += 1
        return WriterMetrics(
            enqueued=stats.enqueued,
            written_by_table=dict(stats.written_by_table),
            rejected=stats.rejected,
            spooled=stats.spooled,
            replayed=stats.replayed,
            dropped=stats.dropped,
            spool_files=files,
            spool_bytes=size,
            queue_depth=len(self.queue),
            postgresql_up=not self._db_down_until,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Writes everything queued so far; True when the queue emptied in time."""
        if not self.background or self._thread is None:
            self._drain()
            return not self.queue
        deadline = None if timeout is None else time.monotonic() + timeout
        # One drain begun after this call (it hands over what is queued and replays the
        # spool when it can), then the writer's batches. The flusher is woken again only
        # for records queued meanwhile: waking it while only the writer is busy would
        # have the two threads take turns at nothing, and the lock from the writer.
        goal = self._drains + 1
        self._wake.set()
        while True:
            with self._idle:
                if self.queue:
                    self._wake.set()
                elif self._drained >= goal and not self._busy and not self._outbox.unfinished_tasks:
                    return True
                self._idle.wait(0.05)
            if deadline is not None and time.monotonic() > deadline:
                return False

    def close(self, timeout: float | None = 30.0) -> None:
        """Flushes, stops the thread, and closes the sink."""
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._writer is not None:
            try:
                self._outbox.put(Order.STOP, timeout=timeout)
            except queue.Full:
                log.warning("pgtrail: the writer thread is still busy; closing without it")
            else:
                self._writer.join(timeout)
        self.sink.close()

    def after_fork_in_child(self) -> None:
        """Drops the parent's queue, thread and connections; the child starts clean."""
        self._reset_state()
        self.sink.reset_after_fork()
