"""Benchmark of the web UI's pages: server time per page on generated data.

Creates a scratch database (or uses ``--dsn``), fills it with the report benchmark's
generator (``--rows`` LLM calls over 30 days, with executions, agent and journey events),
adds one execution of ``--big`` processes with a model call in each, compacts the rollups,
ANALYZEs, then answers every page ``--runs`` times through the UI application itself (the
page handler, its reads and its template or JSON, without the network) and prints the median
and p95 per page, for every tenant and bound to one tenant.

    .venv/bin/python scripts/bench/ui.py [--rows 200000] [--big 4000] [--runs 5] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

import psycopg
from benchlib import machine, median, percentile, report, scratch_database
from reports import generate

from pgtrail.config import Settings
from pgtrail.ops import rollups
from pgtrail.ui.app import UiApp
from pgtrail.ui.http import Request
from pgtrail.ui.reading import Reader

_BIG_EXECUTION = """
    WITH steps AS (
        SELECT n, 's' || n AS span_id,
               CASE WHEN n = 1 THEN NULL ELSE 's' || (1 + (n - 2) / 20) END AS parent,
               CASE WHEN n = 1 THEN 0 WHEN n <= 21 THEN 1 ELSE 2 END AS level
        FROM generate_series(1, %(n)s) AS n
    )
    INSERT INTO logs_execution (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, workflow, status, processes_executed, finalized_at, duration_ms)
    SELECT md5('big-row')::uuid, %(id)s, %(at)s, 't1', 'u-big', 's-big', 's1', '777 Big run',
           'success',
           jsonb_agg(jsonb_build_object('span_id', span_id, 'parent_span_id', parent,
                     'name', 'step ' || n, 'nesting_level', level,
                     'started_at', %(at)s::timestamptz + n * interval '10 ms',
                     'duration_ms', 5 + n %% 50, 'status', 'success') ORDER BY n),
           %(at)s::timestamptz + interval '1 minute', 60000
    FROM steps;
"""
_BIG_CALLS = """
    INSERT INTO logs_llm_execution (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, agent_type, model_target, input_tokens, output_tokens,
        processing_time_ms, total_cost)
    SELECT md5('big-call' || n)::uuid, %(id)s, %(at)s::timestamptz + n * interval '10 ms',
           't1', 'u-big', 's-big', 's' || n, 'coaching', 'gpt-5', 1000, 100, 800, 0.001
    FROM generate_series(1, %(n)s) AS n;
"""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pages(conn: psycopg.Connection[Any], big: str) -> dict[str, str]:
    """The path of every page, with ids of tenant t1 taken from the generated data."""
    row = conn.execute(
        "SELECT execution_id, user_id, session_id FROM logs_execution "
        "WHERE workflow <> '777 Big run' AND tenant_id = 't1' ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    execution, user, session = row
    return {
        "overview (7 days)": "/",
        "overview (30 days, by model)": "/?days=30&by=model",
        "executions": "/executions",
        "executions (longest first)": "/executions?sort=duration",
        "executions (one workflow)": "/executions?workflow=coaching",
        "execution": f"/executions/{execution}",
        "execution (4,000+ processes)": f"/executions/{big}",
        "execution JSON (4,000+ processes)": f"/executions/{big}.json",
        "user journey (30 days)": f"/users/{user}",
        "session": f"/sessions/{session}",
        "agent (30 days)": "/agents/coaching",
        "reports": "/reports",
        "report cost-by-agent (7 days)": "/reports/cost-by-agent",
        "report latency-percentiles (7 days)": "/reports/latency-percentiles",
        "sql": "/sql?q=SELECT+count(*)+FROM+logs_execution",
    }


def request(path: str) -> Request:
    """The request the server would build for ``path``."""
    raw, _, query = path.partition("?")
    return Request.from_scope(
        {"method": "GET", "raw_path": raw.encode(), "query_string": query.encode(), "headers": []}
    )


def time_page(app: UiApp, path: str, runs: int) -> dict[str, Any]:
    """Median and p95 server time of one page over ``runs`` answers (after one warm-up)."""
    app.answer(request(path))
    times: list[float] = []
    status = size = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = app.answer(request(path))
        times.append((time.perf_counter() - started) * 1000)
        status, size = response.status, len(response.body)
    return {
        "median_ms": round(median(times), 1),
        "p95_ms": round(percentile(times, 95), 1),
        "status": status,
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="LLM calls to generate")
    parser.add_argument("--big", type=int, default=4000, help="processes of the big execution")
    parser.add_argument("--runs", type=int, default=5, help="answers per page")
    parser.add_argument("--dsn", help="admin DSN of the server to create the database on")
    args = parser.parse_args()
    end = dt.datetime.now(dt.UTC)
    with scratch_database(args.dsn) as dsn:
        _log(f"generating {args.rows:,} LLM calls over 30 days")
        big = "00000000-0000-7000-8000-00000000b16e"
        with psycopg.connect(dsn, autocommit=True) as conn:
            generate(conn, args.rows, end)
            spot = {"id": big, "at": end - dt.timedelta(hours=2), "n": args.big}
            conn.execute(_BIG_EXECUTION.encode(), spot)
            conn.execute(_BIG_CALLS.encode(), spot)
            rollups.compact(conn)
            conn.execute("ANALYZE")
            paths = pages(conn, big)
        settings = Settings(dsn=dsn, redis_url=None)
        rows: list[list[Any]] = []
        results: dict[str, dict[str, Any]] = {}
        for scope, tenant in (("all tenants", None), ("tenant t1", "t1")):
            app = UiApp(Reader(settings, tenant=tenant))
            for name, path in paths.items():
                figures = time_page(app, path, args.runs)
                results[f"{scope}: {name}"] = {"path": path, **figures}
                rows.append(
                    [
                        scope,
                        name,
                        figures["median_ms"],
                        figures["p95_ms"],
                        figures["status"],
                        f"{figures['bytes']:,}",
                    ]
                )
                _log(f"  {scope}: {name}: {figures['median_ms']} ms")
    report(
        f"pgtrail ui: server time per page, {args.rows:,} LLM calls, {args.runs} runs",
        ["scope", "page", "median ms", "p95 ms", "status", "bytes"],
        rows,
        {
            "rows": args.rows,
            "big_processes": args.big,
            "runs": args.runs,
            "machine": machine(),
            "pages": results,
        },
    )


if __name__ == "__main__":
    main()
