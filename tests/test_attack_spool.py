"""The spool under attack: damaged files, modes, failed writes, concurrent replays."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from typer.testing import CliRunner

import pgtrail
from dbrows import count
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.writer.spool import DAMAGED, Spool

OFFLINE = "postgresql://nobody@127.0.0.1:1/none"
PGTRAIL = Path(sys.executable).with_name("pgtrail")


def spool_offline(settings: Settings, batches: int, per_batch: int = 10) -> list[Path]:
    """Writes ``batches`` spool files of ``per_batch`` journey rows (and one execution row)."""
    trail = Trail(settings.model_copy(update={"dsn": OFFLINE}), sync=True, batch_size=per_batch)
    with trail.execution("offline"):
        for i in range(batches * per_batch):
            pgtrail.log_user_journey("queued", {"i": i})
            if (i + 1) % per_batch == 0:
                trail.flush()
    trail.close()
    return Spool(settings.spool_dir).files()


def replay(settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["--dsn", settings.dsn, "spool", "replay", "--spool-dir", str(settings.spool_dir)]
    )
    return result.exit_code, result.output


def test_damaged_files_are_moved_aside_and_the_rest_replays(settings: Settings) -> None:
    files = spool_offline(settings, 6)
    journey_rows = sum(
        1 for path in files for line in path.read_text().splitlines() if "logs_user_journey" in line
    )
    cases: dict[str, Callable[[Path], object]] = {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:-7]),
        "garbage": lambda p: p.write_bytes(b"\x00\xff not json at all\n"),
        "wrong version": lambda p: p.write_text(json.dumps({"version": 99, "rows": []}) + "\n"),
        "unknown table": lambda p: p.write_text(json.dumps(["pg_authid", "x\ty"]) + "\n"),
    }
    spoiled = {}
    for (name, spoil), path in zip(cases.items(), files, strict=False):
        lost = sum(1 for line in path.read_text().splitlines() if "logs_user_journey" in line)
        spoil(path)
        spoiled[path.name] = (name, lost)
    bad_rows = files[len(cases)]
    with bad_rows.open("a") as fh:  # bad rows inside an otherwise good file
        fh.write(json.dumps(["logs_user_journey", "only\ttwo fields"]) + "\n")
        fh.write(json.dumps(["logs_user_journey", [1, 2, 3]]) + "\n")

    code, output = replay(settings)

    assert code == 0, output
    assert f"{len(cases)} damaged file(s)" in output
    moved = sorted(p.name for p in (settings.spool_dir / DAMAGED).iterdir())
    assert moved == sorted(spoiled)
    assert Spool(settings.spool_dir).files() == []
    lost = sum(n for _, n in spoiled.values())
    assert count(settings.dsn, "logs_user_journey") == journey_rows - lost


def test_damage_is_reported_naming_the_file_and_the_reason(
    settings: Settings, caplog: object
) -> None:
    files = spool_offline(settings, 2)
    files[0].write_bytes(files[0].read_bytes()[:-3])
    with Trail(settings, sync=True) as trail:
        trail.replay_spool()
        assert trail.stats.damaged_files == 1
    text = "\n".join(r.getMessage() for r in caplog.records)  # type: ignore[attr-defined]
    assert files[0].name in text and "truncated" in text


def test_files_and_folder_are_private_whatever_the_umask(settings: Settings) -> None:
    old = os.umask(0)
    try:
        files = spool_offline(settings, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(settings.spool_dir.stat().st_mode) == 0o700
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_an_existing_open_folder_is_tightened(settings: Settings) -> None:
    settings.spool_dir.mkdir(parents=True)
    os.chmod(settings.spool_dir, 0o777)  # noqa: S103  (the folder the test tightens)
    spool_offline(settings, 1)
    assert stat.S_IMODE(settings.spool_dir.stat().st_mode) == 0o700


_FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    import pgtrail
    from pgtrail import Trail
    from pgtrail.config import Settings
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as ENOSPC would
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
    settings = Settings(dsn=sys.argv[1], redis_url=None, spool_dir=Path(sys.argv[2]))
    trail = Trail(settings, sync=True, batch_size=100)
    with trail.execution("full disk"):
        for i in range(300):
            pgtrail.log_user_journey("big", {"pad": "x" * 200, "i": i})
    trail.close()
    print(trail.stats.spooled, trail.stats.dropped, trail.stats.enqueued)
    """
)


def test_a_failed_write_leaves_no_partial_file_and_counts_the_batch(tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: the write fails with EFBIG mid-file."""
    folder = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, OFFLINE, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr  # nothing raised into the application
    spooled, dropped, enqueued = map(int, done.stdout.split())
    assert dropped > 0 and spooled + dropped == enqueued  # every record accounted for
    assert list(folder.glob("*.tmp")) == []
    for path in Spool(folder).files():  # what did reach the spool is whole
        assert all(json.loads(line) for line in path.read_text().splitlines())
    assert "dropped" in done.stderr


def test_an_unwritable_spool_and_a_full_queue_do_not_raise(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("a file where the spool folder should be")
    settings = Settings(dsn=OFFLINE, redis_url=None, spool_dir=folder)
    trail = Trail(settings, queue_size=20, batch_size=10, flush_interval_s=60)
    with trail.execution("nowhere"):
        for i in range(200):
            pgtrail.log_user_journey("burst", {"i": i})
    trail.close()
    stats = trail.stats
    assert stats.dropped > 0
    assert stats.dropped + stats.spooled + stats.written == stats.enqueued


_REPLAYERS = 2


def test_two_processes_replaying_at_once_both_succeed_once_each(settings: Settings) -> None:
    spool_offline(settings, 40)
    expected = 40 * 10
    procs = [
        subprocess.Popen(
            [
                str(PGTRAIL),
                "--dsn",
                settings.dsn,
                "spool",
                "replay",
                "--spool-dir",
                str(settings.spool_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(_REPLAYERS)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert "None" not in output
    assert Spool(settings.spool_dir).files() == []
    assert count(settings.dsn, "logs_user_journey") == expected
    with psycopg.connect(settings.dsn) as conn:
        distinct = conn.execute(
            "SELECT count(DISTINCT (particular_data->>'i')::int) FROM logs_user_journey"
        ).fetchone()
    assert distinct == (expected,)


def test_threads_replaying_at_once_replay_every_record_exactly_once(settings: Settings) -> None:
    spool_offline(settings, 30)
    results: list[int] = []
    trails = [Trail(settings, sync=True) for _ in range(3)]

    def run(trail: Trail) -> None:
        results.append(trail.replay_spool())

    threads = [threading.Thread(target=run, args=(t,)) for t in trails]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for trail in trails:
        trail.close()
    assert count(settings.dsn, "logs_user_journey") == 300
    assert count(settings.dsn, "logs_execution") == 1
    assert sum(results) == 301  # every record counted by exactly one replayer
    assert Spool(settings.spool_dir).files() == []


def test_partial_files_of_killed_writers_are_removed_and_live_ones_kept(
    settings: Settings,
) -> None:
    """What a ``kill -9`` mid-write leaves goes at the next replay; a write in progress stays."""
    files = spool_offline(settings, 2)
    folder = settings.spool_dir
    old = time.time() - 3600
    dead = folder / "20260101T000000000000-deadbeef0000.tmp"
    dead.write_text('["logs_user_journey", "half a ro')
    os.utime(dead, (old, old))
    young = folder / "20260101T000000000001-deadbeef0001.tmp"
    young.write_text("being written")
    held = folder / "20260101T000000000002-deadbeef0002.tmp"
    held.write_text("being written slowly")
    os.utime(held, (old, old))
    with open(held, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        code, output = replay(settings)
        assert code == 0, output
        assert not dead.exists()
        assert young.exists() and held.exists()
    assert Spool(folder).files() == []
    assert count(settings.dsn, "logs_user_journey") == 2 * 10
    assert len(files) >= 2
