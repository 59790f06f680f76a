"""Runs the simulation into PostgreSQL through a background-flushing Trail, with a progress bar."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pgtrail import Trail, db
from pgtrail.config import Settings
from pgtrail.demo.randomness import SimClock
from pgtrail.demo.simulate import Counts, DemoOptions, Highlights, Simulator
from pgtrail.errors import DemoDataExistsError
from pgtrail.statements import STATEMENTS
from pgtrail.tables import LOG_TABLES

BATCH_SIZE = 10_000
# The generator outruns the writer; past this many records in flight it waits, so the queue
# never fills up (a full queue would send batches to the on-disk spool).
MAX_IN_FLIGHT = 4 * BATCH_SIZE
RESUME_IN_FLIGHT = 2 * BATCH_SIZE
_PACE_EVERY = 16
_PROGRESS_EVERY = 250


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one demo load did, and how fast."""

    options: DemoOptions
    counts: Counts
    highlights: Highlights
    window: tuple[dt.datetime, dt.datetime]
    written: int
    rejected: int
    spooled: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        """Events (rows) written per second of wall time, flushing included."""
        return self.counts.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Pacer:
    """Holds the generator back while too many records wait for the flusher."""

    def __init__(self, trail: Trail, counts: Counts) -> None:
        self.trail = trail
        self.counts = counts
        self.calls = 0

    def in_flight(self) -> int:
        stats = self.trail.stats
        return self.counts.events - stats.written - stats.rejected - stats.spooled

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % _PACE_EVERY or self.in_flight() < MAX_IN_FLIGHT:
            return
        while self.in_flight() > RESUME_IN_FLIGHT:
            time.sleep(0.005)


def rows_in_window(settings: Settings, window: tuple[dt.datetime, dt.datetime]) -> int:
    """How many executions the database already holds in the simulated window."""
    with db.connect(settings) as conn:
        row = conn.execute(STATEMENTS["demo_executions_in_window"], window).fetchone()
    return int(row[0]) if row else 0


def reset(settings: Settings) -> None:
    """Empties the four log tables (every logged event): for demo databases only."""
    with db.connect(settings) as conn:
        conn.execute("TRUNCATE " + ", ".join(LOG_TABLES))


def check_empty(settings: Settings, options: DemoOptions) -> None:
    """Refuses to mix a second workload into a window that already holds one."""
    window = options.window()
    found = rows_in_window(settings, window)
    if found:
        raise DemoDataExistsError(
            f"the database already holds {found} execution(s) between {window[0]:%Y-%m-%d} and "
            f"{window[1]:%Y-%m-%d}; a second simulated workload on top would blur what the "
            "reports find. Use an empty database, or --reset to empty the pgtrail log tables "
            "first (it deletes every logged event)."
        )


def load(settings: Settings, options: DemoOptions, *, console: Console | None = None) -> LoadResult:
    """Simulates ``options`` into the database of ``settings``; shows progress on ``console``.

    Redis is not used: the simulation runs in one process, so correlation stays in memory.
    """
    start, end = options.window()
    clock = SimClock(start)
    trail = Trail(settings, clock=clock, redis_url=None, batch_size=BATCH_SIZE)
    simulator = Simulator(trail, clock, options)
    pacer = _Pacer(trail, simulator.counts)
    began = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("interactions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("simulating", total=options.interactions)
            counts = simulator.counts

            def tick() -> None:
                pacer()
                if counts.interactions % _PROGRESS_EVERY == 0:
                    progress.update(task, completed=counts.interactions)

            simulator.run(tick)
            progress.update(task, completed=counts.interactions, description="flushing")
            trail.flush(timeout=None)
            progress.update(task, description="loaded")
    finally:
        trail.close()
    stats = trail.stats
    return LoadResult(
        options=options,
        counts=simulator.counts,
        highlights=simulator.highlights,
        window=(start, end),
        written=stats.written,
        rejected=stats.rejected,
        spooled=stats.spooled,
        elapsed_s=time.perf_counter() - began,
    )
