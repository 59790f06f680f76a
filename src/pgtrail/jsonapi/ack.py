"""Answering once records are durable, with one flush shared by the requests waiting for it.

A request's records are enqueued into the client's writer, then the request waits for a
:meth:`pgtrail.Trail.flush` begun after they were enqueued: when it returns, every record
queued before it is committed to PostgreSQL or fsynced into the writer's spool. Requests
that arrive while a flush runs wait for the next one, which starts as soon as the running
one ends and serves all of them: under load, one flush (and one ``COPY`` per table) per wave
of requests rather than one per request.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgtrail.trail import Trail

log = logging.getLogger("pgtrail")

DEFAULT_TIMEOUT_S = 10.0
"""Longest wait for a flush before the records count as not durable."""


@dataclass(frozen=True)
class Durability:
    """What the flush a request waited for achieved."""

    durable: bool
    """Every record queued before it is committed to PostgreSQL or fsynced into the spool."""
    spooled: bool
    """Some went to the spool (PostgreSQL away, or the queue full): they are written when
    PostgreSQL is back."""
    reason: str | None = None
    """Why it is not durable, or None."""


@dataclass
class _Waiter:
    future: concurrent.futures.Future[Durability]
    after: Callable[[], None] | None


class SharedFlush:
    """Flushes ``trail`` for the requests waiting, one flush at a time.

    Args:
        trail: The client whose writer holds the requests' records.
        timeout_s: Longest wait for one flush; past it the waiters are told the records
            are not durable (they are still queued and may yet be written).
    """

    def __init__(self, trail: Trail, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.trail = trail
        self.timeout_s = timeout_s
        self.flushes = 0
        """Flushes run so far (each served every request waiting when it began)."""
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._running = False

    def request(
        self, after: Callable[[], None] | None = None
    ) -> concurrent.futures.Future[Durability]:
        """A future that resolves once a flush begun after this call has ended.

        Args:
            after: Called on the flushing thread when that flush made the records durable,
                before the future resolves (a failure is logged, never raised).
        """
        waiter = _Waiter(concurrent.futures.Future(), after)
        with self._lock:
            self._waiting.append(waiter)
            if self._running:
                return waiter.future
            self._running = True
        threading.Thread(target=self._run, name="pgtrail-json-ack", daemon=True).start()
        return waiter.future

    def _run(self) -> None:
        while True:
            with self._lock:
                # Taken before the flush begins: every one of them enqueued before it.
                waiting, self._waiting = self._waiting, []
                if not waiting:
                    self._running = False
                    return
            try:
                outcome = self._flush()
            except Exception as exc:  # never leave a request waiting for ever
                log.exception("pgtrail: JSON API flush failed")
                outcome = Durability(False, False, f"{type(exc).__name__}: {exc}")
            for waiter in waiting:
                if outcome.durable and waiter.after is not None:
                    try:
                        waiter.after()
                    except Exception:
                        log.exception("pgtrail: JSON API clean-up after a flush failed")
                waiter.future.set_result(outcome)

    def _flush(self) -> Durability:
        stats = self.trail.stats
        spooled, dropped = stats.spooled, stats.dropped
        started = time.monotonic()
        done = self.trail.flush(self.timeout_s)
        self.flushes += 1
        if not done:
            waited = time.monotonic() - started
            return Durability(False, False, f"the writer did not finish within {waited:.1f} s")
        if stats.dropped > dropped:
            return Durability(False, True, "PostgreSQL and the spool both refused a batch")
        return Durability(True, stats.spooled > spooled)
