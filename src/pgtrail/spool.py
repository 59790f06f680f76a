"""The on-disk spool: batches that could not reach PostgreSQL wait here as JSON lines.

Each line is ``[table, row]``, the row being its ``COPY`` text line as the writer prepared
it; files written by earlier versions hold ``[table, [values...]]`` and are read too.

Each batch is one file, written to a temporary name, fsynced, renamed, and the folder
fsynced, so a file either holds a whole batch or does not exist. Replay takes an exclusive
``flock`` on a file so several processes sharing a spool never replay the same batch twice
at once; the rows are written through the idempotent path, so even a replay repeated after a
crash stores each event once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from pgtrail import copytext
from pgtrail.errors import PgtrailError

SUFFIX = ".jsonl"

Row = str
"""One row as its ``COPY`` text line (see :mod:`pgtrail.copytext`)."""
Batch = dict[str, list[Row]]
"""Rows by table."""


class Spool:
    """A folder of spooled batches."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, batch: Batch) -> Path:
        """Stores one batch durably; returns its file."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            final = self.directory / f"{stamp}-{uuid.uuid4().hex[:12]}{SUFFIX}"
            temp = final.with_suffix(".tmp")
            with open(temp, "w", encoding="utf-8") as fh:
                for table, rows in batch.items():
                    for row in rows:
                        fh.write(json.dumps([table, row], ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, final)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise PgtrailError(
                f"cannot write to the spool folder {self.directory}: {exc}. "
                "Set PGTRAIL_SPOOL_DIR to a writable folder."
            ) from exc
        return final

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
        """
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115  (held open for the lock)
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
            batch: Batch = {}
            for line in fh:
                if line.strip():
                    table, row = json.loads(line)
                    if isinstance(row, list):  # values, as earlier versions spooled them
                        row = copytext.line(row)
                    batch.setdefault(table, []).append(row)
            yield batch

    @staticmethod
    def done(path: Path) -> None:
        """Removes a replayed batch."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
