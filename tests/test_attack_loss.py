"""What a ``kill -9`` loses with PostgreSQL down: a bounded window, and a prompt spool.

The child logs at a steady rate into a Trail whose DSN points at a closed port, so every
event must reach the spool; it is killed with SIGKILL after about two seconds. What it said
it had logged, minus what the spool holds, is what the kill lost.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pgtrail.writer.spool import Spool

RATE = 2000  # events a second
FLUSH_INTERVAL_S = 0.2
# What the design leaves in memory with PostgreSQL known down: one flush interval of
# events, plus the first connection attempt's wait (0.75 s) before the breaker opens.
# One second of events is a bound with margin for a loaded 2-core machine.
MAX_LOST = RATE * 1.0
MAX_TIME_TO_SPOOL_S = 1.5

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import pgtrail
    from pgtrail import Trail
    from pgtrail.config import Settings
    dsn, spool, count, rate, interval = sys.argv[1:6]
    trail = Trail(Settings(dsn=dsn, redis_url=None, spool_dir=Path(spool),
                           flush_interval_s=float(interval)))
    fd = os.open(count, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    rate = float(rate)
    logged = 0
    with trail.execution("kill me"):
        start = time.monotonic()
        Path(count + ".start").write_text(f"{time.time():.6f}")
        while True:
            due = int((time.monotonic() - start) * rate)
            while logged < due:
                pgtrail.log_user_journey("tick", {"i": logged})
                logged += 1
            os.pwrite(fd, f"{logged:020d}".encode(), 0)
            time.sleep(0.002)
    """
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spooled_ticks(folder: Path) -> int:
    return sum(
        1
        for path in Spool(folder).files()
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)[0] == "logs_user_journey"
    )


def test_kill_9_with_postgres_down_loses_at_most_a_second(tmp_path: Path) -> None:
    spool, count = tmp_path / "spool", tmp_path / "count"
    dsn = f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    args = [dsn, str(spool), str(count), str(RATE), str(FLUSH_INTERVAL_S)]
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # the interpreter's start is not what is measured
        while not (count.exists() and count.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        first_logged = float(Path(f"{count}.start").read_text())
        first_spooled = None
        while time.time() < first_logged + 2.0:  # poll the spool for its first file
            if first_spooled is None and Spool(spool).files():
                first_spooled = time.time()
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    logged = int(count.read_text())
    lost = logged - spooled_ticks(spool)
    assert logged > RATE  # it really logged for the whole window
    assert 0 <= lost <= MAX_LOST, f"{lost} of {logged} events lost"
    assert first_spooled is not None, "nothing reached the spool in two seconds"
    assert first_spooled - first_logged <= MAX_TIME_TO_SPOOL_S
    # A kill in the middle of a spool write leaves that write's partial file: it held rows
    # never acknowledged as spooled, and the next replay deletes it (nobody holds it).
    partial = list(spool.glob("*.tmp"))
    assert Spool(spool).remove_partial(stale_s=0) == len(partial)
    assert list(spool.glob("*.tmp")) == []
    assert logged - spooled_ticks(spool) == lost
