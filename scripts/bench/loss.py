"""What a ``kill -9`` of a logging process loses: events at risk, and milliseconds at risk.

A child process logs journey events at a steady rate through the public API and writes how
many ``log_*`` calls have returned to a file every few milliseconds; the parent kills it
with SIGKILL after a few seconds, then counts what reached PostgreSQL and the spool. What
the child said it logged minus what was found is what the kill lost (events at risk);
divided by the rate, the milliseconds of logging at risk. Two cases: PostgreSQL up, and
PostgreSQL unreachable (the Trail's DSN points at a closed port), where everything must go
through the spool. Each setting (flush interval, batch size) is killed several times and
the medians are reported side by side: what waits in memory is what a kill loses.

    .venv/bin/python scripts/bench/loss.py [--kills 5] [--seconds 3] [--rate 2000] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from benchlib import machine, median, report, scratch_database

import pgtrail
from pgtrail import Trail
from pgtrail.config import Settings
from pgtrail.writer.spool import Spool

_TICK_S = 0.002
_EVENT = "loss_tick"


@dataclass(frozen=True)
class Knobs:
    """One writer setting under test.

    Args:
        flush_interval_s: The Trail's flush interval.
        batch_size: The Trail's batch size.
    """

    flush_interval_s: float
    batch_size: int

    @property
    def label(self) -> str:
        """How the table names this setting."""
        return f"flush {self.flush_interval_s:g} s, batch {self.batch_size}"


SETTINGS = [Knobs(0.5, 5000), Knobs(0.1, 5000), Knobs(0.05, 500)]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child(dsn: str, spool_dir: Path, count_path: Path, rate: float, knobs: Knobs) -> None:
    """Logs ``rate`` events a second until killed, reporting the count of returned calls.

    Args:
        dsn: Where the Trail writes (a closed port for the PostgreSQL-down case).
        spool_dir: The Trail's spool.
        count_path: Receives the count, as fixed-width text overwritten in place.
        rate: Events per second.
        knobs: Flush interval and batch size.
    """
    settings = Settings(
        dsn=dsn,
        redis_url=None,
        spool_dir=spool_dir,
        flush_interval_s=knobs.flush_interval_s,
        batch_size=knobs.batch_size,
    )
    trail = Trail(settings)
    fd = os.open(count_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    logged = 0
    start = time.monotonic()
    with trail.execution("loss bench"):
        while True:
            due = int((time.monotonic() - start) * rate)
            while logged < due:
                pgtrail.log_user_journey(_EVENT, {"i": logged})
                logged += 1
            os.pwrite(fd, f"{logged:020d}".encode(), 0)  # one write: never read half-done
            time.sleep(_TICK_S)


def spooled_events(spool_dir: Path) -> int:
    """Journey rows waiting in a spool folder."""
    total = 0
    for path in Spool(spool_dir).files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and json.loads(line)[0] == "logs_user_journey":
                total += 1
    return total


def stored_events(dsn: str) -> int:
    """Journey rows in the scratch database (cleared afterwards for the next kill)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM logs_user_journey WHERE event_type = %s", (_EVENT,)
        ).fetchone()
        conn.execute("TRUNCATE logs_user_journey, logs_execution")
    return int(row[0]) if row else 0


def kill_once(
    scratch_dsn: str, db_up: bool, knobs: Knobs, seconds: float, rate: float
) -> dict[str, float]:
    """Runs one child, kills it with SIGKILL after ``seconds``, counts what survived.

    Args:
        scratch_dsn: The scratch database (stored rows are counted there).
        db_up: Whether the child's Trail writes to it, or to a closed port.
        knobs: The writer setting.
        seconds: How long the child logs before the kill.
        rate: Events per second.

    Returns:
        Logged, stored, spooled, lost events and milliseconds at risk.
    """
    target = scratch_dsn if db_up else f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    with tempfile.TemporaryDirectory(prefix="pgtrail-loss-") as tmp:
        spool_dir, count_path = Path(tmp) / "spool", Path(tmp) / "count"
        args = [target, str(spool_dir), str(count_path), str(rate)]
        args += [str(knobs.flush_interval_s), str(knobs.batch_size)]
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", *args], stderr=subprocess.DEVNULL
        )
        time.sleep(seconds)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        text = count_path.read_text() if count_path.exists() else ""
        logged = int(text) if text.strip() else 0
        spooled = spooled_events(spool_dir)
    stored = stored_events(scratch_dsn)
    lost = max(logged - stored - spooled, 0)
    return {
        "logged": logged,
        "stored": stored,
        "spooled": spooled,
        "lost": lost,
        "ms_at_risk": lost / rate * 1000,
    }


def main() -> None:
    """Runs the kills and prints the table and the JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument("--dsn", help="admin DSN of the server to create a scratch database on")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        dsn, spool, count, rate, interval, batch = opts.child
        child(dsn, Path(spool), Path(count), float(rate), Knobs(float(interval), int(batch)))
        return
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    with scratch_database(opts.dsn) as dsn:
        for db_up in (True, False):
            for knobs in SETTINGS:
                kills = [
                    kill_once(dsn, db_up, knobs, opts.seconds, opts.rate) for _ in range(opts.kills)
                ]
                lost = median([k["lost"] for k in kills])
                at_risk_ms = median([k["ms_at_risk"] for k in kills])
                case = "up" if db_up else "down"
                rows.append([case, knobs.label, lost, at_risk_ms, max(k["lost"] for k in kills)])
                results.append(
                    {
                        "postgresql": case,
                        "flush_interval_s": knobs.flush_interval_s,
                        "batch_size": knobs.batch_size,
                        "median_events_at_risk": lost,
                        "median_ms_at_risk": at_risk_ms,
                        "kills": kills,
                    }
                )
    report(
        f"kill -9 after {opts.seconds:g} s at {opts.rate:g} events/s, median of {opts.kills}",
        ["PostgreSQL", "setting", "events at risk", "ms at risk", "worst kill (events)"],
        rows,
        {"rate": opts.rate, "seconds": opts.seconds, "results": results, "machine": machine()},
    )


if __name__ == "__main__":
    main()
