"""What the typed queued record costs beside the plain tuples it replaced: to build, and to
the garbage collector while a queue of them waits for the writer.

The baseline is the previous shape, ``(table, (event_id, execution, created_at, tenant,
user, session, span), args)``, built and held the same way in the same run; the typed shape
is :class:`pgtrail.writer.record.QueuedRecord`. Records carry frozen arguments (strings
and numbers only), as the ``log_*`` helpers enqueue them. For each shape and queue depth the
benchmark fills a queue while allocating what a caller allocates, and times every collection
the interpreter runs meanwhile (``gc.callbacks``), then one full collection of the queue.

    .venv/bin/python scripts/bench/queued.py [--records 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, median, report

from pgtrail.writer.record import QueuedRecord

_NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
_EXECUTION = uuid.uuid4().hex
_DATA = '{"turn":3,"feature":"coaching"}'


def plain(i: int) -> tuple[Any, ...]:
    """The previous shape: a tuple holding a stamp tuple and the arguments."""
    args = {"model": "gpt-4o-mini", "input_tokens": i, "output_tokens": 80, "_data_json": _DATA}
    return ("logs_llm_execution", (None, _EXECUTION, _NOW, "acme", "u1", "s1", "ab12"), args)


_new_tuple = tuple.__new__


def typed(i: int) -> QueuedRecord:
    """The typed shape, built as ``Trail.log_record`` builds it (tuple's constructor)."""
    args = {"model": "gpt-4o-mini", "input_tokens": i, "output_tokens": 80}
    return _new_tuple(
        QueuedRecord,
        (
            "logs_llm_execution",
            None,
            _EXECUTION,
            _NOW,
            "acme",
            "u1",
            "s1",
            "ab12",
            args,
            _DATA,
            None,
            None,
            None,
            None,
        ),
    )


class Pauses:
    """Sums the time of every collection the interpreter runs while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.count += 1


def one_round(build: Callable[[int], object], records: int) -> dict[str, float]:
    """Fills a queue of ``records`` and drains it, as the flusher would."""
    gc.collect()
    pauses = Pauses()
    gc.callbacks.append(pauses)
    queue: collections.deque[object] = collections.deque()
    started = time.perf_counter()
    for i in range(records):
        queue.append(build(i))
        if i % 64 == 0:
            [object() for _ in range(8)]  # the caller's own short-lived allocations
    filled = time.perf_counter() - started
    gc.callbacks.remove(pauses)
    full_started = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - full_started
    queue.clear()
    return {
        "build_ns": filled / records * 1e9,
        "pause_ns_per_record": pauses.seconds / records * 1e9,
        "collections": float(pauses.count),
        "full_collection_ms": full * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, dict[int, list[dict[str, float]]]] = {"tuple": {}, "QueuedRecord": {}}
    depths = sorted({args.records // 20, args.records})
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        for depth in depths:
            for name, build in (("tuple", plain), ("QueuedRecord", typed)):
                results[name].setdefault(depth, []).append(one_round(build, depth))
    summary: dict[str, Any] = {"rounds": args.rounds, "machine": machine(), "shapes": {}}
    rows = []
    for name, by_depth in results.items():
        for depth, runs in by_depth.items():
            stats = {key: round(median([r[key] for r in runs]), 2) for key in runs[0]}
            summary["shapes"].setdefault(name, {})[depth] = stats
            rows.append(
                [
                    name,
                    f"{depth:,}",
                    stats["build_ns"],
                    stats["pause_ns_per_record"],
                    stats["full_collection_ms"],
                ]
            )
    for depth in depths:
        before = summary["shapes"]["tuple"][depth]
        after = summary["shapes"]["QueuedRecord"][depth]
        summary.setdefault("ratios", {})[depth] = {
            key: round(after[key] / before[key], 3) if before[key] else None for key in before
        }
    report(
        "Queued record: build and garbage-collector cost (medians)",
        ["shape", "queue", "build ns/record", "GC pause ns/record", "full collection ms"],
        rows,
        summary,
    )


if __name__ == "__main__":
    main()
