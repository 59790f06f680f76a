"""The on-disk spool: batches that could not reach PostgreSQL wait here as JSON lines.

Each line is ``[table, row]``, the row being its ``COPY`` text line as the writer prepared
it; files written by earlier versions hold ``[table, [values...]]`` and are read too.

Each batch is one file, written to a temporary name, fsynced, renamed, and the folder
fsynced, so a file either holds a whole batch or does not exist; a write that fails (disk
full, I/O error) removes its temporary file. Files are private to their owner (``0600`` in
a ``0700`` folder, whatever the umask): they hold the events themselves. Replay takes an
exclusive ``flock`` on a file so several processes sharing a spool never replay the same
batch twice at once; the rows are written through the idempotent path, so even a replay
repeated after a crash stores each event once. A file that cannot be read back (truncated,
not JSON, an unknown layout) is moved into ``damaged/`` with the reason, and the others
still replay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pgtrail.errors import PgtrailError, SpoolDamagedError
from pgtrail.writer import copytext

log = logging.getLogger("pgtrail")

SUFFIX = ".jsonl"
DAMAGED = "damaged"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_PARTIAL = ".tmp"
_PARTIAL_STALE_S = 60.0
"""Age after which an unlocked partial file is the remains of a killed writer."""

Row = str
"""One row as its ``COPY`` text line (see :mod:`pgtrail.writer.copytext`)."""
Batch = dict[str, list[Row]]
"""Rows by table."""


def _parse(lines: Iterator[str]) -> Batch:
    """The batch a spool file holds; raises SpoolDamagedError naming the first bad line."""
    batch: Batch = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not line.endswith("\n"):
            raise SpoolDamagedError(f"line {number} is cut short (truncated file)")
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise SpoolDamagedError(f"line {number} is not JSON: {exc}") from None
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise SpoolDamagedError(f"line {number} is not a [table, row] pair")
        table, row = entry
        if isinstance(row, list):  # values, as earlier versions spooled them
            try:
                row = copytext.line(row)
            except Exception as exc:
                raise SpoolDamagedError(f"line {number} holds unusable values: {exc}") from None
        if not isinstance(row, str):
            raise SpoolDamagedError(f"line {number}: the row is neither text nor values")
        batch.setdefault(table, []).append(row)
    return batch


class Spool:
    """A folder of spooled batches.

    Args:
        directory: The folder; created ``0700`` when missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._checked = False

    def _ensure_directory(self) -> None:
        """Creates the folder private, or tightens an existing one once per process."""
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        if self._checked:
            return
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode & 0o077:
            try:
                os.chmod(self.directory, mode & ~0o077 | _DIR_MODE)
                log.warning(
                    "pgtrail: spool folder %s was readable by others (%o); set to 0700",
                    self.directory,
                    mode,
                )
            except OSError as exc:
                log.warning(
                    "pgtrail: spool folder %s is readable by others (%o) and could not be "
                    "tightened: %s",
                    self.directory,
                    mode,
                    exc,
                )
        self._checked = True

    def write(self, batch: Batch) -> Path:
        """Stores one batch durably; returns its file.

        Args:
            batch: Rows by table.

        Raises:
            PgtrailError: The folder is not writable (no temporary file is left behind).
        """
        temp: Path | None = None
        try:
            self._ensure_directory()
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            final = self.directory / f"{stamp}-{uuid.uuid4().hex[:12]}{SUFFIX}"
            temp = final.with_suffix(_PARTIAL)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            with open(fd, "w", encoding="utf-8") as fh:
                # Held until the file is whole: a partial file nobody holds is a dead writer's.
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.fchmod(fd, _FILE_MODE)  # the umask may have taken bits from O_CREAT's mode
                for table, rows in batch.items():
                    for row in rows:
                        fh.write(json.dumps([table, row], ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                os.replace(temp, final)  # under the lock: remove_partial never races it
            temp = None
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            if temp is not None:
                with contextlib.suppress(OSError):
                    temp.unlink()
            raise PgtrailError(
                f"cannot write to the spool folder {self.directory}: {exc}. "
                "Set PGTRAIL_SPOOL_DIR to a writable folder."
            ) from exc
        return final

    def remove_partial(self, stale_s: float = _PARTIAL_STALE_S) -> int:
        """Deletes what killed writers left: partial files no process holds, older than
        ``stale_s``. Their rows were never acknowledged as spooled (the write had not
        finished), so nothing that was kept is lost; returns how many were deleted.

        Args:
            stale_s: Least age, in seconds, of a partial file that is deleted.
        """
        if not self.directory.is_dir():
            return 0
        removed = 0
        now = time.time()
        for path in self.directory.glob(f"*{_PARTIAL}"):
            try:
                if now - path.stat().st_mtime < stale_s:
                    continue
                with open(path, "rb") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
                removed += 1
            except (BlockingIOError, FileNotFoundError):
                continue  # a live writer holds it, or it was just finished or removed
            except OSError as exc:
                log.warning("pgtrail: could not remove partial spool file %s: %s", path, exc)
        return removed

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def pending_rows(self) -> int:
        """How many rows wait in the spool."""
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                total += sum(1 for _ in fh)
        return total

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[Batch | None]:
        """Locks one file and yields its batch; None when another process holds it.

        The caller deletes the file (``done``) once the batch is committed.

        Args:
            path: One of ``files()``.

        Raises:
            SpoolDamagedError: The file cannot be read back; the caller moves it aside
                (``set_aside``) while it still holds the lock.
        """
        try:
            fh = open(path, encoding="utf-8", errors="strict")  # noqa: SIM115  (held for the lock)
        except FileNotFoundError:
            yield None
            return
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if not path.exists():  # replayed and removed by another process meanwhile
                yield None
                return
            try:
                batch = _parse(iter(fh))
            except UnicodeDecodeError as exc:
                raise SpoolDamagedError(f"not UTF-8 text: {exc}") from None
            yield batch

    def set_aside(self, path: Path, reason: str) -> Path | None:
        """Moves a damaged file into ``damaged/`` so the rest of the spool replays.

        Args:
            path: The spooled file.
            reason: Why it cannot be replayed; logged with the file's name.

        Returns:
            Where the file now is, or None when it could not be moved.
        """
        target_dir = self.directory / DAMAGED
        target = target_dir / path.name
        try:
            target_dir.mkdir(mode=_DIR_MODE, exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            log.error(
                "pgtrail: spool file %s is damaged (%s) and could not be moved: %s",
                path,
                reason,
                exc,
            )
            return None
        log.error(
            "pgtrail: spool file %s cannot be replayed (%s); moved to %s", path.name, reason, target
        )
        return target

    def damaged(self) -> list[Path]:
        """Files moved aside as damaged."""
        folder = self.directory / DAMAGED
        return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []

    @staticmethod
    def done(path: Path) -> None:
        """Removes a replayed batch.

        Args:
            path: The spooled file.
        """
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
