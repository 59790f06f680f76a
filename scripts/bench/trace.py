"""Benchmark of ``pgtrail trace`` and the execution-tree report on one big execution.

Builds one finished execution with ``--processes`` processes (default 10,000: a root, ten
phases, a thousand agents under them and their steps) and ``--calls`` model calls (default
10,000) plus agent and journey events, COPYs it into a scratch database (on the server of
``--dsn``, else a local one), then times ``pgtrail trace ID`` as a person runs it (text and
``--format json``, with the default limits and with ``--all``) and ``psql -v execution_id=ID
-f queries/execution-tree.sql``, ``--runs`` times each, medians. Commands run with their
bytecode cached, as an installed package has it. The command's own work (read and print,
without starting Python and importing the CLI) is timed too, in a worker process.

The baseline, in the same run and on the same data, is the code of another source tree:
``--baseline-src DIR`` (a ``src`` folder), or by default the commit ``--baseline-rev``
(HEAD) checked out in a temporary git worktree that is removed afterwards. A baseline
without limits prints the whole tree whatever the arguments.

    .venv/bin/python scripts/bench/trace.py [--processes 10000] [--calls 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from benchlib import machine, median, report, scratch_database
from psycopg.types.json import Jsonb

from pgtrail.ops import partitions
from pgtrail.tables import AGENT, COLUMNS, EXECUTION, JOURNEY, LLM

ROOT = Path(__file__).resolve().parents[2]
REPORT = Path("queries") / "execution-tree.sql"


@dataclass(frozen=True)
class Workload:
    """One command timed on both trees.

    Attributes:
        name: as the table shows it.
        args: ``pgtrail trace`` arguments after the execution id, for this code.
        baseline_args: the same for the baseline, which has no limits: it prints everything.
    """

    name: str
    args: tuple[str, ...]
    baseline_args: tuple[str, ...]


WORKLOADS = (
    Workload("trace", (), ()),
    Workload("trace --all", ("--all",), ()),
    Workload("trace --format json", ("--format", "json"), ("--format", "json")),
    Workload("trace --format json --all", ("--format", "json", "--all"), ("--format", "json")),
)


@dataclass(frozen=True)
class Shape:
    """What the generated execution holds.

    Attributes:
        processes: processes in all, the root included.
        calls: model calls, spread over the steps (the agents when there are no steps).
        agent_events: agent decisions and tool calls, on the agents.
        phases: children of the root.
        agents_per_phase: children of each phase; the remaining processes are the agents'
            steps, spread evenly over them.
    """

    processes: int
    calls: int
    agent_events: int
    phases: int = 10
    agents_per_phase: int = 100


@dataclass(frozen=True)
class Built:
    """The generated execution: its id and what it holds."""

    execution_id: uuid.UUID
    processes: int
    calls: int
    agent_events: int
    journey_events: int


def _span(index: int) -> str:
    return f"{index + 1:016x}"


def _parents(shape: Shape) -> list[int | None]:
    """Each process's parent index (None for the root), in start order."""
    phases = min(shape.phases, shape.processes - 1)
    agents = min(phases * shape.agents_per_phase, shape.processes - 1 - phases)
    parents: list[int | None] = [None]
    parents += [0] * phases
    parents += [1 + a % phases for a in range(agents)]
    first_agent = 1 + phases
    steps = shape.processes - 1 - phases - agents
    parents += [first_agent + s % agents for s in range(steps)] if agents else [0] * steps
    return parents


def _levels(parents: list[int | None]) -> list[int]:
    levels: list[int] = []
    for parent in parents:
        levels.append(0 if parent is None else levels[parent] + 1)
    return levels


def build(conn: psycopg.Connection[Any], shape: Shape, start: dt.datetime) -> Built:
    """COPYs one finished execution of ``shape`` into the log tables."""
    partitions.ensure(conn, start.date() - dt.timedelta(days=1), start.date() + dt.timedelta(1))
    execution_id = uuid.uuid4()
    parents = _parents(shape)
    levels = _levels(parents)
    count = len(parents)
    names = {0: "001 Orchestrate", 1: "1{:02d} Phase", 2: "2{:02d} Agent", 3: "3{:02d} Step"}
    processes = []
    for index, parent in enumerate(parents):
        level = min(levels[index], 3)
        failed = level == 3 and index % 97 == 0
        processes.append(
            {
                "span_id": _span(index),
                "parent_span_id": None if parent is None else _span(parent),
                "name": names[level].format(index % 100),
                "nesting_level": levels[index],
                "started_at": (start + dt.timedelta(milliseconds=index)).isoformat(),
                "duration_ms": 50 + index % 900 if index else count + 5000,
                "status": "error" if failed else "success",
                "error": "tool timed out" if failed else None,
            }
        )
    leaves = [i for i, level in enumerate(levels) if level == max(levels)] or [0]
    agents = [i for i, level in enumerate(levels) if level == 2] or [0]
    common = {"tenant_id": "bench", "user_id": "u-1", "session_id": "s-1"}
    with conn.cursor() as cur:
        _copy(
            cur,
            EXECUTION,
            [
                {
                    **common,
                    "event_id": uuid.uuid4(),
                    "execution_id": execution_id,
                    "created_at": start,
                    "span_id": _span(0),
                    "event_type": "execution_finalized",
                    "particular_data": Jsonb({}),
                    "workflow": "001 Orchestrate",
                    "status": "success",
                    "processes_executed": Jsonb(processes),
                    "context": Jsonb({"feature": "bench"}),
                    "finalized_at": start + dt.timedelta(milliseconds=count + 5000),
                    "duration_ms": count + 5000,
                }
            ],
        )
        _copy(cur, LLM, (_call(k, execution_id, start, leaves, common) for k in range(shape.calls)))
        _copy(
            cur,
            AGENT,
            (_agent(k, execution_id, start, agents, common) for k in range(shape.agent_events)),
        )
        journey = [
            {
                **common,
                "event_id": uuid.uuid4(),
                "execution_id": execution_id,
                "created_at": start + dt.timedelta(milliseconds=k),
                "span_id": _span(0),
                "event_type": "user_message_received" if k == 0 else "user_message_sent",
                "particular_data": Jsonb({"text_length": 100 + k}),
            }
            for k in range(2)
        ]
        _copy(cur, JOURNEY, journey)
    conn.execute("ANALYZE")
    return Built(execution_id, count, shape.calls, shape.agent_events, len(journey))


def _call(
    k: int, execution_id: uuid.UUID, start: dt.datetime, spans: list[int], common: dict[str, str]
) -> dict[str, Any]:
    failed = k % 53 == 0
    cost = None if k % 211 == 0 else Decimal("0.001") + Decimal(k % 50) / 10000
    return {
        **common,
        "event_id": uuid.uuid4(),
        "execution_id": execution_id,
        "created_at": start + dt.timedelta(milliseconds=k),
        "span_id": _span(spans[k % len(spans)]),
        "event_type": "llm_error" if failed else "llm_valid_execution",
        "particular_data": Jsonb({}),
        "agent_type": ("coaching", "selling", "support")[k % 3],
        "provider": "anthropic",
        "model_target": "claude-sonnet-4-20250514",
        "prompt_version": "v3",
        "input_tokens": 1000 + k % 700,
        "output_tokens": 200 + k % 90,
        "processing_time_ms": 800 + k % 1500,
        "total_cost": cost,
        "error": "overloaded" if failed else None,
    }


def _agent(
    k: int, execution_id: uuid.UUID, start: dt.datetime, spans: list[int], common: dict[str, str]
) -> dict[str, Any]:
    decision = k % 2 == 0
    data = (
        {"agent_decisions": {"route": "coaching", "confidence": 0.8}, "event_duration_ms": 12}
        if decision
        else {"tool": "crm.lookup", "permission": "allowed", "latency_ms": 40}
    )
    return {
        **common,
        "event_id": uuid.uuid4(),
        "execution_id": execution_id,
        "created_at": start + dt.timedelta(milliseconds=k),
        "span_id": _span(spans[k % len(spans)]),
        "event_type": "agent_decision" if decision else "tool_call",
        "particular_data": Jsonb(data),
        "agent_type": "coaching",
    }


def _copy(cur: psycopg.Cursor[Any], table: str, rows: Any) -> None:
    columns = [name for name, _ in COLUMNS[table]]
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row.get(c) for c in columns])


# --------------------------------------------------------------------------- timing


def _env(src: Path, cache: Path) -> dict[str, str]:
    """The environment of a timed command: ``src`` first on the path, bytecode cached (as
    an installed package has it) in a folder of this run, a fixed terminal width."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(src), PYTHONPYCACHEPREFIX=str(cache), COLUMNS="160")
    return env


def _timed(command: list[str], env: dict[str, str], runs: int) -> tuple[list[float], int]:
    """Wall times (s) of ``runs`` runs after one warm-up, and the lines the command wrote."""
    lines = 0
    times: list[float] = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=True)
        if attempt:
            times.append(time.perf_counter() - started)
        lines = done.stdout.count(b"\n")
    return times, lines


def _work_times(src: Path, cache: Path, dsn: str, args: list[str], runs: int) -> list[float]:
    """The command's own work (s): timed in a worker process, without start-up and imports."""
    command = [sys.executable, __file__, "--worker", "--dsn", dsn, "--runs", str(runs), *args]
    done = subprocess.run(command, env=_env(src, cache), capture_output=True, check=True)
    times: list[float] = json.loads(done.stdout)
    return times


def worker(dsn: str, runs: int, args: list[str]) -> None:
    """Runs ``pgtrail trace ARGS`` in this process ``runs`` times after a warm-up, output
    discarded, and prints the wall times as JSON."""
    from pgtrail.cli import app

    command = ["--dsn", dsn, "--redis-url", "off", "trace", *args]
    times: list[float] = []
    with open(os.devnull, "w") as sink:
        for attempt in range(runs + 1):
            started = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                app(command, standalone_mode=False)
            if attempt:
                times.append(time.perf_counter() - started)
    print(json.dumps(times))


@dataclass(frozen=True)
class Tree:
    """A source tree to time: its ``src`` folder and its report file."""

    label: str
    src: Path
    report: Path


@contextlib.contextmanager
def baseline_tree(src: str | None, rev: str) -> Iterator[Tree]:
    """The baseline: ``src`` when given, else ``rev`` in a temporary git worktree."""
    if src is not None:
        root = Path(src).resolve().parent
        yield Tree(f"{src}", Path(src).resolve(), root / REPORT)
        return
    with tempfile.TemporaryDirectory(prefix="pgtrail-trace-baseline-") as scratch:
        checkout = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(checkout), rev],
            check=True,
            capture_output=True,
        )
        try:
            label = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            yield Tree(f"commit {label}", checkout / "src", checkout / REPORT)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                check=False,
                capture_output=True,
            )


def measure(
    tree: Tree, dsn: str, built: Built, runs: int, cache: Path, *, baseline: bool
) -> dict[str, dict[str, Any]]:
    """Median wall time (s) of each workload on ``tree``, whole command and own work."""
    env = _env(tree.src, cache)
    python = [sys.executable, "-m", "pgtrail", "--dsn", dsn, "--redis-url", "off", "trace"]
    results: dict[str, dict[str, Any]] = {}
    for workload in WORKLOADS:
        args = [str(built.execution_id), *(workload.baseline_args if baseline else workload.args)]
        times, lines = _timed([*python, *args], env, runs)
        work = _work_times(tree.src, cache, dsn, args, runs)
        results[workload.name] = {
            "median_s": round(median(times), 3),
            "work_median_s": round(median(work), 3),
            "runs": times,
            "lines": lines,
        }
        _log(f"  {tree.label}: {workload.name}: {results[workload.name]['median_s']} s")
    psql = ["psql", dsn, "-X", "-q", "-v", f"execution_id={built.execution_id}"]
    times, lines = _timed([*psql, "-f", str(tree.report)], env, runs)
    results["psql -f execution-tree.sql"] = {
        "median_s": round(median(times), 3),
        "work_median_s": None,
        "runs": times,
        "lines": lines,
    }
    times, _ = _timed([sys.executable, "-c", "import pgtrail.cli"], env, runs)
    results["import pgtrail.cli"] = {
        "median_s": round(median(times), 3),
        "work_median_s": None,
        "runs": times,
        "lines": 0,
    }
    return results


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=10_000, help="processes in all")
    parser.add_argument("--calls", type=int, default=10_000, help="model calls")
    parser.add_argument("--agent-events", type=int, default=2_000, help="agent events")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per workload")
    parser.add_argument("--baseline-runs", type=int, default=3, help="timed runs, baseline")
    parser.add_argument("--baseline-src", help="the baseline's src folder (default: a worktree)")
    parser.add_argument("--baseline-rev", default="HEAD", help="the baseline commit")
    parser.add_argument("--no-baseline", action="store_true", help="time this code only")
    parser.add_argument("--dsn", help="admin DSN of the server for the scratch database")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        worker(args.dsn, args.runs, rest)
        return
    shape = Shape(args.processes, args.calls, args.agent_events)
    with (
        scratch_database(args.dsn) as dsn,
        tempfile.TemporaryDirectory(prefix="pgtrail-trace-bytecode-") as cache_dir,
    ):
        with psycopg.connect(dsn, autocommit=True) as conn:
            built = build(conn, shape, dt.datetime.now(dt.UTC))
        _log(f"built {built.processes:,} processes, {built.calls:,} calls: {built.execution_id}")
        cache = Path(cache_dir)
        mine = Tree("this code", ROOT / "src", ROOT / REPORT)
        results = {"this code": measure(mine, dsn, built, args.runs, cache, baseline=False)}
        label = None
        if not args.no_baseline:
            with baseline_tree(args.baseline_src, args.baseline_rev) as old:
                label = old.label
                results[label] = measure(
                    old, dsn, built, args.baseline_runs, cache / "baseline", baseline=True
                )
    rows = []
    for name, now in results["this code"].items():
        before = results[label][name] if label else None
        ratio = now["median_s"] / before["median_s"] if before and before["median_s"] else None
        rows.append(
            [
                name,
                now["median_s"],
                "-" if now["work_median_s"] is None else now["work_median_s"],
                now["lines"],
                "-" if before is None else before["median_s"],
                "-" if before is None else before["work_median_s"] or "-",
                "-" if before is None else before["lines"],
                "-" if ratio is None else round(ratio, 3),
            ]
        )
    title = (
        f"one execution of {built.processes:,} processes, {built.calls:,} LLM calls and "
        f"{built.agent_events:,} agent events: medians in seconds"
    )
    columns = ["command", "s", "work s", "lines", "before s", "work s", "lines"]
    report(
        title,
        [*columns, "ratio"],
        rows,
        {
            "machine": machine(),
            "shape": vars(shape),
            "baseline": label,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
