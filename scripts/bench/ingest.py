"""Sustained ingest of mixed events into PostgreSQL: the writer beside raw COPY.

The writer's figure runs from the first ``log_*`` call to the moment ``flush()`` returns with
every row committed: validation, sanitising, cost inference, COPY. The baseline is raw
binary COPY of the very same rows (read back from the writer's first run, as Python values),
already built, in batches of the same size, on one connection: what PostgreSQL itself can
take on this machine right now. Runs alternate. Beside the rates: the CPU time each part
of both runs used per row (the caller's thread, the preparing and writing threads, the
baseline's client, and PostgreSQL's processes, where Linux's /proc shows them), to say where
the time goes, and the time one row may take at 0.70 of raw COPY beside the Python work the
writer spends on a row: its three threads share one interpreter lock, so that sum caps it.

    .venv/bin/python scripts/bench/ingest.py [--events 200000] [--runs 3] [--dsn DSN]
        [--processes N]

With ``--processes N`` each round also runs the same workload split over N forked worker
processes, each with its own Trail and connections, as an application served by N
gunicorn or celery workers logs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from benchlib import cpu_by_thread, machine, median, postgres_cpu, report, scratch_database
from psycopg import sql
from psycopg.types.json import set_json_dumps

import pgtrail
from pgtrail import AgentDecision, ContextCompression, Trail
from pgtrail.tables import COLUMNS

TABLES = ["logs_llm_execution", "logs_agent_execution", "logs_user_journey", "logs_execution"]
EVENTS_PER_EXECUTION = 20
DECISION = {
    "flow": {"challenge_status": "in_progress", "significant_moment_detected": True},
    "safety": {"meta_questions_behavior": "normal"},
    "coaching_quality": {
        "intensity_level": "balanced",
        "message_length": 2325,
        "response_structure": {
            "sections": ["ANÁLISIS", "ESTRATEGIA", "CALIBRACIÓN"],
            "section_count": 7,
        },
    },
}
COMPRESSION = {
    "user_input": {
        "compression_score": 0.1,
        "compression_priority": "preserve_full",
        "significant_moment_detected": True,
    },
    "agent_output": {"compression_score": 0.15, "context_utilization": "high"},
}
JOURNEY = {
    "role": "system",
    "text_length": 934,
    "credits_used": 0,
    "is_bot_scope": True,
    "is_coaching_scope": False,
    "is_selling_scope": False,
    "channel": "telegram",
    "note": "x" * 200,
}


def log_workload(trail: Trail, events: int, seed: int) -> None:
    """The mixed workload: per execution 8 LLM calls, 6 agent events, 6 journey events."""
    rng = random.Random(seed)
    executions = events // (EVENTS_PER_EXECUTION + 1)
    for e in range(executions):
        with trail.execution(
            "001 Main",
            user_id=str(rng.randrange(5000)),
            session_id=f"s{e // 5}",
            context={"feature": "coaching", "tier": "premium"},
        ):
            with trail.process("202 Agent - Coaching"):
                for i in range(8):
                    pgtrail.log_llm_execution(
                        agent_type="coaching",
                        model="claude-sonnet-4-20250514",
                        provider="anthropic",
                        input_tokens=rng.randrange(2000, 20000),
                        output_tokens=rng.randrange(100, 2000),
                        processing_time_ms=rng.randrange(800, 30000),
                        prompt_version="v6",
                        data={"turn": i, "scope": "coaching"},
                    )
                for _ in range(3):
                    pgtrail.log_agent_execution(
                        AgentDecision(decisions=DECISION),
                        agent_type="coaching",
                        duration_ms=rng.randrange(10, 30000),
                    )
                    pgtrail.log_agent_execution(
                        ContextCompression(context_management=COMPRESSION),
                        agent_type="compression",
                        duration_ms=3,
                    )
            for _ in range(6):
                pgtrail.log_user_journey("user_message_sent_requested", JOURNEY)


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + ", pgtrail_prompt")


def rows_in(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in TABLES]
        return sum(int(c[0]) for c in counts if c is not None)


CPU_PARTS = {
    "MainThread": "caller (log_* calls)",
    "pgtrail-flusher": "preparation",
    "pgtrail-writer": "writing (COPY)",
}


def writer_run(dsn: str, events: int, batch_size: int) -> tuple[float, int, dict[str, float]]:
    """Seconds from the first log_* call to flush() returning, rows stored, CPU by part."""
    truncate(dsn)
    trail = Trail(
        dsn=dsn,
        redis_url=None,
        batch_size=batch_size,
        spool_dir=Path(tempfile.gettempdir()) / "pgtrail-bench",
    )
    threads_before, postgres_before = cpu_by_thread(), postgres_cpu()
    start = time.perf_counter()
    log_workload(trail, events, seed=1)
    assert trail.flush(600)
    elapsed = time.perf_counter() - start
    threads_after, postgres_after = cpu_by_thread(), postgres_cpu()
    trail.close()
    cpu = {
        part: threads_after.get(name, 0.0) - threads_before.get(name, 0.0)
        for name, part in CPU_PARTS.items()
    }
    if postgres_before is not None and postgres_after is not None:
        cpu["postgres (all processes)"] = postgres_after - postgres_before
    return elapsed, rows_in(dsn), cpu


def _worker(dsn: str, events: int, batch_size: int, seed: int, start: Any, done: Any) -> None:
    """One worker process of :func:`workers_run`: its own Trail, then its share of the load."""
    trail = Trail(
        dsn=dsn,
        redis_url=None,
        batch_size=batch_size,
        spool_dir=Path(tempfile.gettempdir()) / f"pgtrail-bench-{seed}",
    )
    start.wait()
    log_workload(trail, events, seed)
    done.put(trail.flush(600))
    trail.close()


def workers_run(dsn: str, events: int, batch_size: int, processes: int) -> tuple[float, int]:
    """Seconds for the workload split over forked worker processes, and the rows stored.

    Each process has its own Trail, as each gunicorn or celery worker does; the time runs
    from their common start until the last of them has flushed.
    """
    truncate(dsn)
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(processes + 1, timeout=120), context.Queue()
    workers = [
        context.Process(
            target=_worker, args=(dsn, events // processes, batch_size, i + 1, start, done)
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    flushed: list[bool] = []
    while len(flushed) < processes:
        try:
            flushed.append(done.get(timeout=1))
        except queue.Empty:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(
                    f"a worker process failed (exit codes {failed}); its traceback is above"
                ) from None
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    assert all(flushed), "a worker did not flush in time"
    return elapsed, rows_in(dsn)


Rows = dict[str, list[tuple[Any, ...]]]


def stored_rows(dsn: str) -> Rows:
    """Every row the writer stored, as Python values (jsonb as its text), in event order."""
    rows: Rows = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            names = [
                sql.SQL("{}::text").format(sql.Identifier(name))
                if kind == "jsonb"
                else sql.Identifier(name)
                for name, kind in COLUMNS[table]
            ]
            query = sql.SQL("SELECT {} FROM {} ORDER BY event_id").format(
                sql.SQL(", ").join(names), sql.Identifier(table)
            )
            rows[table] = conn.execute(query).fetchall()
    return rows


def copy_run(dsn: str, rows: Rows, batch_size: int) -> tuple[float, int, dict[str, float]]:
    """Raw binary COPY of ``rows``, in the writer's batch size, one transaction per batch.

    Returns the seconds it took, the rows stored and the CPU seconds of its two parts.
    """
    truncate(dsn)
    statements = {
        table: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS[table]),
        )
        for table in rows
    }
    # Batches hold each table's share, as the writer's do.
    total = sum(len(r) for r in rows.values())
    batches = max(1, -(-total // batch_size))
    with psycopg.connect(dsn) as conn:
        set_json_dumps(str, conn)  # jsonb values are already JSON text
        client_before, postgres_before = time.thread_time(), postgres_cpu()
        start = time.perf_counter()
        for i in range(batches):
            with conn.transaction():
                for table, table_rows in rows.items():
                    share = -(-len(table_rows) // batches)
                    part = table_rows[i * share : (i + 1) * share]
                    if not part:
                        continue
                    with conn.cursor().copy(statements[table]) as copy:
                        copy.set_types([kind for _, kind in COLUMNS[table]])
                        for row in part:
                            copy.write_row(row)
        elapsed = time.perf_counter() - start
        client_after, postgres_after = time.thread_time(), postgres_cpu()
    cpu = {"client (write_row)": client_after - client_before}
    if postgres_before is not None and postgres_after is not None:
        cpu["postgres (all processes)"] = postgres_after - postgres_before
    return elapsed, rows_in(dsn), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--dsn", help="admin DSN of the server to create a scratch database on")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="also run the workload split over this many worker processes (Linux: fork)",
    )
    args = parser.parse_args()
    writer_rates: list[float] = []
    copy_rates: list[float] = []
    workers_rates: list[float] = []
    cpu_per_row: dict[str, list[float]] = {}
    copy_cpu_per_row: dict[str, list[float]] = {}
    with scratch_database(args.dsn) as dsn:
        writer_run(dsn, args.events, args.batch_size)  # warm-up; its rows are the baseline's
        baseline = stored_rows(dsn)
        rows = sum(len(r) for r in baseline.values())
        for _ in range(args.runs):
            elapsed, stored, copy_cpu = copy_run(dsn, baseline, args.batch_size)
            assert stored == rows, (stored, rows)
            copy_rates.append(rows / elapsed)
            for part, seconds in copy_cpu.items():
                copy_cpu_per_row.setdefault(part, []).append(seconds / rows * 1e6)
            elapsed, stored, cpu = writer_run(dsn, args.events, args.batch_size)
            assert stored == rows, (stored, rows)
            writer_rates.append(rows / elapsed)
            for part, seconds in cpu.items():
                cpu_per_row.setdefault(part, []).append(seconds / rows * 1e6)
            if args.processes > 0:
                elapsed, stored = workers_run(dsn, args.events, args.batch_size, args.processes)
                workers_rates.append(stored / elapsed)
    summary: dict[str, Any] = {
        "benchmark": "ingest",
        "rows_per_run": rows,
        "runs": args.runs,
        "batch_size": args.batch_size,
        "writer_rows_per_s": round(median(writer_rates)),
        "raw_copy_rows_per_s": round(median(copy_rates)),
        "ratio_writer_over_copy": round(median(writer_rates) / median(copy_rates), 3),
        "writer_us_per_row": round(1e6 / median(writer_rates), 1),
        # What one row may take at the target, and the Python work under one interpreter
        # lock that the writer spends on a row now: the second caps the rate.
        "us_per_row_at_0_70_of_copy": round(1e6 / (0.7 * median(copy_rates)), 1),
        "writer_python_cpu_us_per_row": round(
            sum(median(v) for p, v in cpu_per_row.items() if p in CPU_PARTS.values()), 1
        ),
        "writer_cpu_us_per_row": {p: round(median(v), 1) for p, v in cpu_per_row.items()},
        "raw_copy_cpu_us_per_row": {p: round(median(v), 1) for p, v in copy_cpu_per_row.items()},
        "all_writer": [round(r) for r in writer_rates],
        **(
            {
                "processes": args.processes,
                "workers_rows_per_s": round(median(workers_rates)),
                "ratio_workers_over_copy": round(median(workers_rates) / median(copy_rates), 3),
                "all_workers": [round(r) for r in workers_rates],
            }
            if workers_rates
            else {}
        ),
        "all_copy": [round(r) for r in copy_rates],
        "machine": machine(),
    }
    report(
        f"sustained ingest, {rows:,} mixed rows per run (median of {args.runs} runs)",
        ["what", "rows/s"],
        [
            ["pgtrail writer (log_* to committed)", float(summary["writer_rows_per_s"])],
            ["raw binary COPY of the same rows", float(summary["raw_copy_rows_per_s"])],
            ["ratio", summary["ratio_writer_over_copy"]],
            *(
                [
                    [
                        f"writer, {args.processes} worker processes",
                        float(summary["workers_rows_per_s"]),
                    ],
                    ["ratio, worker processes", summary["ratio_workers_over_copy"]],
                ]
                if workers_rates
                else []
            ),
            ["µs per row at 0.70 of raw COPY", summary["us_per_row_at_0_70_of_copy"]],
            ["writer run: Python CPU µs/row (one lock)", summary["writer_python_cpu_us_per_row"]],
            *[
                [f"writer run CPU µs/row: {part}", us]
                for part, us in summary["writer_cpu_us_per_row"].items()
            ],
            *[
                [f"raw COPY run CPU µs/row: {part}", us]
                for part, us in summary["raw_copy_cpu_us_per_row"].items()
            ],
        ],
        summary,
    )


if __name__ == "__main__":
    main()
