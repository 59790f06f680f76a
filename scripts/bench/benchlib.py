"""Shared by the benchmarks: a scratch database, timing statistics, the result table."""

from __future__ import annotations

import json
import os
import statistics
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.table import Table

from pgtrail.config import Settings
from pgtrail.ops import devservices
from pgtrail.ops.migrate import migrate

console = Console()


@contextmanager
def scratch_database(admin_dsn: str | None) -> Iterator[str]:
    """A freshly migrated database, dropped afterwards. Uses a throwaway server if needed."""
    local = None
    if admin_dsn is None:
        if devservices.port_open("127.0.0.1", 5432):
            admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
        else:
            local = devservices.LocalPostgres().start()
            admin_dsn = local.dsn
    name = f"pgtrail_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(admin_dsn, autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = conninfo_to_dict(admin_dsn)
    parts["dbname"] = name
    dsn = make_conninfo("", **parts)
    try:
        migrate(Settings(dsn=dsn, redis_url=None))
        yield dsn
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()
        if local is not None:
            local.destroy()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def report(title: str, columns: list[str], rows: list[list[Any]], document: dict[str, Any]) -> None:
    """Prints a table for people and one JSON document for machines."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    print(json.dumps(document, indent=2, default=str))


def _proc_cpu_seconds(stat_path: str) -> float | None:
    """User plus system CPU time from a Linux ``/proc/.../stat`` file."""
    try:
        with open(stat_path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread() -> dict[str, float]:
    """CPU seconds used so far by each live thread of this process, by name (Linux only)."""
    used: dict[str, float] = {}
    for thread in threading.enumerate():
        seconds = _proc_cpu_seconds(f"/proc/self/task/{thread.native_id}/stat")
        if seconds is not None:
            used[thread.name] = used.get(thread.name, 0.0) + seconds
    return used


def postgres_cpu() -> float | None:
    """CPU seconds used so far by the ``postgres`` processes this user can see (Linux only)."""
    if not os.path.isdir("/proc"):
        return None
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        total += _proc_cpu_seconds(f"/proc/{pid}/stat") or 0.0
    return total


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": os.sys.version.split()[0]}  # type: ignore[attr-defined]
