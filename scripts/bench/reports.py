"""Benchmark of the saved reports on generated data (default: 1M LLM calls over 30 days).

Creates a scratch database (or uses ``--dsn``), migrates it, generates LLM calls plus
proportional executions, agent events and journey events with ``INSERT ... SELECT
generate_series``, runs the rollup refresh (``pgtrail rollup``: the insert trigger filled the
rollups as the rows went in; the refresh merges each hour's partial rows), ANALYZEs, then
runs every report ``--runs`` times and prints the median and p95 latency per report, whether
each plan used the index meant for it, and for the reports that estimate percentiles from
the rollups' histograms their largest error against exact ``percentile_cont`` on the same
window. ``--baseline-queries DIR`` also times the report files of DIR (e.g. the queries/ of
an older checkout) on the same data, for a before/after ratio.

    .venv/bin/python scripts/bench/reports.py [--rows 1000000] [--dsn DSN] [--keep]
        [--baseline-queries DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtrail.config import Settings
from pgtrail.ops import partitions
from pgtrail.ops.migrate import migrate
from pgtrail.read import reports

DAYS = 30
# The index each report's plan is meant to use (parent index names from schema/, checked to
# exist before the run); None: a sequential scan of the window's partitions is the right plan.
INTENDED_INDEX: dict[str, str | None] = {
    "compression-audit": None,
    "cost-anomalies": None,
    "cost-by-agent": None,
    "cost-by-model": None,
    "cost-by-tenant-day": None,
    "decision-drift": None,
    "execution-tree": "logs_llm_execution_execution_id_idx",
    "expensive-paths": None,
    "large-generations": None,
    "latency-percentiles": None,
    "outcome-rates": None,
    "prompt-regressions": None,
    "session-summary": None,
    "slow-agent-executions": None,
    "user-journey": "logs_user_journey_user_idx",
}

_WORKFLOWS = """
    (VALUES ('coaching', 0.40, 'coaching_session'), ('support', 0.65, 'support_chat'),
            ('onboarding', 0.80, 'onboarding'), ('billing', 0.90, 'billing_help'),
            ('selling', 1.00, 'upsell'))
"""

_STEPS = """
    CREATE TEMP TABLE bench_step (workflow text, ord int, name text, nesting_level int,
                                  parent_ord int, offset_ms int, duration_ms int);
    INSERT INTO bench_step
    SELECT w.workflow, s.ord, s.name, s.lvl, s.parent, s.off, s.dur
    FROM (VALUES ('coaching'), ('support'), ('onboarding'), ('billing'), ('selling'))
         AS w (workflow)
    CROSS JOIN LATERAL (VALUES
        (1, '001 Main', 0, NULL, 0, 9000),
        (2, '003 Extract message', 1, 1, 20, 150),
        (3, '014 Process security', 1, 1, 180, 300),
        (4, '005 Process command', 1, 1, 500, 200),
        (5, '202 Agent - ' || w.workflow, 1, 1, 720, 7000),
        (6, '101 AI Execute LLM', 2, 5, 800, 6000),
        (7, '021 Send message', 2, 5, 6850, 500),
        (8, '022 Record exchange', 3, 7, 7000, 200),
        (9, '901 Cleanup User Lock', 1, 1, 7800, 60)
    ) AS s (ord, name, lvl, parent, off, dur);
"""

_EXECUTIONS = """
    CREATE TEMP TABLE bench_exec AS
    SELECT
        i,
        md5('exec' || i)::uuid                                                  AS execution_id,
        %(t0)s::timestamptz + (i - 1) * (%(span)s::interval / %(n)s)            AS created_at,
        'u' || (abs(hashint4(((i - 1) / 4)::int)) %% %(users)s)                 AS user_id,
        's' || ((i - 1) / 4)                                                    AS session_id,
        't' || (abs(hashint4(((i - 1) / 4)::int)) %% %(users)s %% 20)           AS tenant_id,
        (SELECT w.workflow FROM {workflows} AS w (workflow, upto, feature)
         WHERE w.upto >= (abs(hashint4(i)) %% 1000) / 1000.0 ORDER BY w.upto LIMIT 1) AS workflow,
        CASE WHEN i %% 50 = 0 THEN 'abandoned' WHEN i %% 33 = 0 THEN 'error' ELSE 'success' END
                                                                                AS status
    FROM generate_series(1, %(n)s) AS i
"""

_INSERT_EXECUTIONS = """
    INSERT INTO logs_execution (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, workflow, status, error, processes_executed, context,
        finalized_at, duration_ms)
    SELECT
        md5('exec-row' || x.i)::uuid, x.execution_id, x.created_at, x.tenant_id, x.user_id,
        x.session_id, 's1', x.workflow, x.status,
        CASE WHEN x.status = 'error' THEN 'upstream failure' END,
        (SELECT jsonb_agg(jsonb_build_object(
                    'span_id', 's' || st.ord,
                    'parent_span_id',
                    CASE WHEN st.parent_ord IS NOT NULL THEN 's' || st.parent_ord END,
                    'name', st.name, 'nesting_level', st.nesting_level,
                    'started_at', x.created_at + st.offset_ms * interval '1 ms',
                    'duration_ms', st.duration_ms, 'status', 'ok', 'error', NULL)
                ORDER BY st.ord)
         FROM bench_step AS st
         WHERE st.workflow = x.workflow AND (st.ord <> 4 OR x.i %% 3 = 0)),
        jsonb_build_object('tier', CASE WHEN x.i %% 5 = 0 THEN 'pro' ELSE 'free' END,
                           'language', CASE WHEN x.i %% 3 = 0 THEN 'es' ELSE 'en' END,
                           'feature', x.workflow || '_feature', 'prompt_version', 'v1'),
        x.created_at + (9000 + x.i %% 20000) * interval '1 ms',
        9000 + x.i %% 20000
    FROM bench_exec AS x;
"""

_INSERT_LLM = """
    INSERT INTO logs_llm_execution (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, event_type, particular_data, agent_type, provider, model_target,
        prompt_hash, prompt_version, input_tokens, output_tokens, cached_input_tokens,
        reasoning_tokens, processing_time_ms, time_to_first_token_ms, input_cost, output_cost,
        total_cost, error)
    SELECT
        md5('llm' || j)::uuid, x.execution_id,
        x.created_at + (800 + (j %% 4) * 1500) * interval '1 ms',
        x.tenant_id, x.user_id, x.session_id, 's6',
        c.outcome,
        jsonb_build_object('workflow', x.workflow, 'feature', x.workflow || '_feature'),
        c.agent, c.provider, c.model, md5(c.agent), c.version,
        c.input_tokens, c.output_tokens, c.input_tokens / 4, 0,
        c.latency, c.latency / 5,
        round(c.input_tokens * 3e-6, 6), round(c.output_tokens * 15e-6, 6),
        round(c.input_tokens * 3e-6 + c.output_tokens * 15e-6, 6),
        CASE WHEN c.outcome <> 'llm_valid_execution' THEN c.outcome END
    FROM generate_series(1, %(rows)s) AS j
    JOIN bench_exec AS x ON x.i = (j - 1) / 4 + 1
    CROSS JOIN LATERAL (
        SELECT
            (ARRAY['coaching','security','selling','support','triage','billing','memory',
                   'planner','critic','summariser'])[1 + abs(hashint4(j)) %% 10] AS agent,
            (ARRAY['anthropic','anthropic','openai','openai','google'])[1 + j %% 5] AS provider,
            (ARRAY['claude-sonnet-4-20250514','claude-haiku-4-5','gpt-5','gpt-5-mini',
                   'gemini-2.5-flash'])[1 + j %% 5] AS model,
            CASE WHEN x.created_at < %(t0)s::timestamptz + interval '10 days' THEN 'v1'
                 WHEN x.created_at < %(t0)s::timestamptz + interval '20 days' THEN 'v2'
                 ELSE 'v3' END AS version,
            500 + abs(hashint4(j * 7)) %% 12000 AS input_tokens,
            50 + abs(hashint4(j * 11)) %% 3000 AS output_tokens,
            300 + abs(hashint4(j * 13)) %% 9000
                + CASE WHEN j %% 500 = 0 THEN 30000 ELSE 0 END AS latency,
            CASE abs(hashint4(j * 17)) %% 100
                WHEN 0 THEN 'llm_error' WHEN 1 THEN 'llm_timeout'
                WHEN 2 THEN 'llm_rate_limited' WHEN 3 THEN 'llm_invalid_output'
                ELSE 'llm_valid_execution' END AS outcome
    ) AS c;
"""

_INSERT_AGENT = """
    INSERT INTO logs_agent_execution (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, event_type, particular_data, agent_type)
    SELECT
        md5('agent' || k)::uuid, x.execution_id, x.created_at + (k %% 2) * interval '2 s',
        x.tenant_id, x.user_id, x.session_id, 's5', a.event_type,
        jsonb_build_object('event_duration_ms', a.duration) || CASE a.event_type
            WHEN 'agent_decision' THEN jsonb_build_object('agent_decisions', jsonb_build_object(
                'flow', jsonb_build_object('challenge_status', 'in_progress',
                                           'significant_moment_detected', k %% 7 = 0),
                'coaching_quality', jsonb_build_object(
                    'intensity_level', (ARRAY['low','balanced','balanced','high'])[1 + k %% 4],
                    'message_length', 800 + abs(hashint4(k)) %% 2500)))
            WHEN 'context_compression' THEN jsonb_build_object('context_management',
                jsonb_build_object('user_input', jsonb_build_object(
                    'compression_score', round((abs(hashint4(k * 3)) %% 100) / 100.0, 2),
                    'compression_priority', CASE WHEN k %% 5 = 0 THEN 'preserve_full'
                                                 ELSE 'compress' END,
                    'significant_moment_detected', k %% 9 = 0)))
            WHEN 'tool_call' THEN jsonb_build_object('tool', 'search', 'permission', 'allowed',
                'latency_ms', a.duration)
            WHEN 'retrieval' THEN jsonb_build_object('query', 'q', 'doc_count', 5)
            WHEN 'guardrail' THEN jsonb_build_object('name', 'pii', 'passed', true)
            ELSE jsonb_build_object('from_agent', 'triage', 'to_agent', a.agent,
                                    'reason', 'routing')
        END,
        a.agent
    FROM generate_series(1, %(rows)s / 2) AS k
    JOIN bench_exec AS x ON x.i = (k - 1) / 2 + 1
    CROSS JOIN LATERAL (
        SELECT
            (ARRAY['coaching','security','selling','support','triage','billing','memory',
                   'planner','critic','summariser'])[1 + abs(hashint4(k)) %% 10] AS agent,
            CASE abs(hashint4(k * 5)) %% 100 / 10
                WHEN 0 THEN 'tool_call' WHEN 1 THEN 'tool_call' WHEN 2 THEN 'retrieval'
                WHEN 3 THEN 'context_compression' WHEN 4 THEN 'context_compression'
                WHEN 5 THEN 'context_compression' WHEN 6 THEN 'guardrail'
                WHEN 7 THEN 'handoff' ELSE 'agent_decision' END AS event_type,
            100 + abs(hashint4(k * 19)) %% 15000
                + CASE WHEN k %% 400 = 0 THEN 20000 ELSE 0 END AS duration
    ) AS a;
"""

_INSERT_JOURNEY = """
    INSERT INTO logs_user_journey (event_id, execution_id, created_at, tenant_id, user_id,
        session_id, span_id, event_type, particular_data)
    SELECT
        md5('journey' || k)::uuid, x.execution_id, x.created_at + (k %% 2) * interval '8 s',
        x.tenant_id, x.user_id, x.session_id, 's1',
        CASE WHEN k %% 2 = 1 THEN 'user_message_received'
             WHEN x.status = 'abandoned' THEN 'session_abandoned'
             WHEN k %% 40 = 0 THEN 'thumbs_down'
             WHEN k %% 30 = 0 THEN 'draft_edited'
             WHEN k %% 10 = 0 THEN 'state_transition'
             ELSE 'user_message_sent' END,
        jsonb_build_object('text_length', 100 + k %% 900, 'is_bot_scope', true,
                           'is_coaching_scope', x.workflow = 'coaching')
    FROM generate_series(1, %(rows)s / 2) AS k
    JOIN bench_exec AS x ON x.i = (k - 1) / 2 + 1;
"""


# Exact percentiles of the same windows, to measure the rollup histograms' error: the report,
# the columns of its key, its estimated columns, and the exact query giving key + those.
_EXACT: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "latency-percentiles": (
        ("model_target", "agent_type"),
        ("p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms"),
        """
        SELECT model_target, agent_type,
               percentile_cont(0.50) WITHIN GROUP (ORDER BY processing_time_ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_time_ms),
               percentile_cont(0.50) WITHIN GROUP (ORDER BY time_to_first_token_ms)
        FROM logs_llm_execution
        WHERE created_at >= %(since)s AND created_at < %(until)s
          AND processing_time_ms IS NOT NULL AND event_type = 'llm_valid_execution'
        GROUP BY 1, 2
        """,
    ),
    "prompt-regressions": (
        ("agent_type", "model_target", "prompt_version"),
        ("p50_ms", "p95_ms"),
        """
        SELECT agent_type, model_target, coalesce(prompt_version, '(none)'),
               percentile_cont(0.50) WITHIN GROUP (ORDER BY processing_time_ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms)
        FROM logs_llm_execution
        WHERE created_at >= %(since)s AND created_at < %(until)s
          AND processing_time_ms IS NOT NULL AND event_type = 'llm_valid_execution'
        GROUP BY 1, 2, 3
        """,
    ),
}


@contextmanager
def raw_horizon(dsn: str, raw_from: str) -> Iterator[None]:
    """Moves where raw calls begin for the reports, as retention would, and back after."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT raw_from::text FROM pgtrail_rollup_horizon").fetchone()
        conn.execute("UPDATE pgtrail_rollup_horizon SET raw_from = %s", (raw_from,))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgtrail_rollup_horizon SET raw_from = %s", (row[0] if row else None,)
            )


def histogram_path(
    settings: Settings, report: reports.Report, params: dict[str, str], runs: int
) -> tuple[float | None, float | None]:
    """For a percentile report: its median with every hour read from the rollups'
    histograms (as after retention dropped the raw calls), and that path's error."""
    if report.name not in _EXACT:
        return None, None
    with raw_horizon(settings.dsn, "infinity"):
        times, _, _ = _time(settings, (report, None), params, runs)
        error = percentile_error(settings, report)
    return statistics.median(times), error


def percentile_error(settings: Settings, report: reports.Report) -> float | None:
    """The largest relative error of the report's percentiles against percentile_cont."""
    spec = _EXACT.get(report.name)
    if spec is None:
        return None
    keys, columns, exact_sql = spec
    now = dt.datetime.now(dt.UTC)
    declared = report.param("since")
    since = reports.parse_timestamptz(
        declared.default if declared and declared.default else "7d", now=now
    )
    window = {"since": since.isoformat(), "until": now.isoformat()}
    result = reports.run_report(settings, report, window)
    with psycopg.connect(settings.dsn) as conn:
        exact = {
            tuple(row[: len(keys)]): row[len(keys) :]
            for row in conn.execute(exact_sql.encode(), {"since": since, "until": now})
        }
    worst = 0.0
    for row in result.rows:
        named = dict(zip(result.columns, row, strict=True))
        truth = exact[tuple(named[k] for k in keys)]
        for column, value in zip(columns, truth, strict=True):
            if value and named[column] is not None:
                worst = max(worst, abs(float(named[column]) - value) / value)
    return worst


def refresh_rollups(dsn: str) -> dict[str, Any]:
    """Runs the refresh the design needs (``pgtrail rollup``) and sizes what it keeps."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("SELECT pgtrail_rollup_compact()")
        seconds = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE pgtrail_rollup_llm, pgtrail_rollup_llm_outcome")
        row = conn.execute(
            """
            SELECT (SELECT count(*) FROM pgtrail_rollup_llm),
                   (SELECT count(*) FROM pgtrail_rollup_llm_outcome),
                   pg_total_relation_size('pgtrail_rollup_llm')
                       + pg_total_relation_size('pgtrail_rollup_llm_outcome'),
                   (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits AS i
                    JOIN pg_class AS c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'logs_llm_execution'::regclass)
            """
        ).fetchone()
    assert row is not None
    info = {
        "refresh_s": round(seconds, 1),
        "rollup_rows": int(row[0]),
        "outcome_rollup_rows": int(row[1]),
        "rollup_bytes": int(row[2]),
        "llm_table_bytes": int(row[3]),
    }
    _log(
        f"  rollup refresh {info['refresh_s']} s: {info['rollup_rows']:,} + "
        f"{info['outcome_rollup_rows']:,} rows, {info['rollup_bytes'] / 1e6:.1f} MB "
        f"(calls table {info['llm_table_bytes'] / 1e6:.0f} MB)"
    )
    return info


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def scratch_database(admin_dsn: str, keep: bool) -> Iterator[str]:
    """A fresh database on the server of ``admin_dsn``, dropped afterwards unless ``keep``."""
    name = f"pgtrail_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = conninfo_to_dict(admin_dsn)
    parts["dbname"] = name
    try:
        yield make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})
    finally:
        if keep:
            _log(f"kept database {name}")
        else:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def generate(conn: psycopg.Connection[Any], rows: int, end: dt.datetime) -> None:
    """Fills the log tables: ``rows`` LLM calls, rows/4 executions, rows/2 agent and journey."""
    start = end - dt.timedelta(days=DAYS)
    partitions.ensure(conn, start.date() - dt.timedelta(days=1), end.date())
    executions = max(rows // 4, 1)
    params = {
        "t0": start,
        "span": dt.timedelta(days=DAYS) - dt.timedelta(minutes=5),
        "n": executions,
        "users": max(rows // 200, 50),
        "rows": rows,
    }
    conn.execute("SET synchronous_commit = off")
    conn.execute(_STEPS)
    conn.execute(_EXECUTIONS.replace("{workflows}", _WORKFLOWS).encode(), params)
    conn.execute("CREATE UNIQUE INDEX ON bench_exec (i)")
    conn.execute("ANALYZE bench_exec")
    for label, statement in [
        ("executions", _INSERT_EXECUTIONS),
        ("LLM calls", _INSERT_LLM),
        ("agent events", _INSERT_AGENT),
        ("journey events", _INSERT_JOURNEY),
    ]:
        started = time.perf_counter()
        cur = conn.execute(statement.encode(), params)
        _log(f"  {cur.rowcount:>9,} {label} in {time.perf_counter() - started:.1f} s")
    conn.execute("ANALYZE")


def bench_params(conn: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    """Values for the reports' required parameters, taken from the generated data."""
    row = conn.execute(
        "SELECT user_id FROM logs_user_journey GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    user = str(row[0]) if row else "u1"
    row = conn.execute(
        "SELECT execution_id FROM logs_execution ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    execution = str(row[0]) if row else str(uuid.uuid4())
    return {
        "user-journey": {"user_id": user},
        "decision-drift": {"agent_type": "coaching"},
        "execution-tree": {"execution_id": execution},
    }


def _index_parents(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Partition index name -> the index on the partitioned parent it belongs to."""
    rows = conn.execute(
        """
        SELECT c.relname, p.relname
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_class AS p ON p.oid = i.inhparent
        WHERE c.relkind = 'i'
        """
    ).fetchall()
    return {str(child): str(parent) for child, parent in rows}


def check_intended_indexes(conn: psycopg.Connection[Any]) -> None:
    """Fails when INTENDED_INDEX names an index the migrated schema does not have."""
    named = sorted({name for name in INTENDED_INDEX.values() if name})
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relkind IN ('i', 'I') AND relname = ANY(%s)",
        (named,),
    ).fetchall()
    missing = sorted(set(named) - {str(r[0]) for r in rows})
    if missing:
        raise SystemExit(f"INTENDED_INDEX names indexes the schema lacks: {', '.join(missing)}")


def _plan_indexes(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            found.add(str(plan["Index Name"]))
        for value in plan.values():
            found |= _plan_indexes(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= _plan_indexes(item)
    return found


def used_indexes(
    settings: Settings, report: reports.Report, params: dict[str, str], parents: dict[str, str]
) -> list[str]:
    """The parent indexes the report's plan uses (EXPLAIN (FORMAT JSON))."""
    values = reports.bind_values(report, params)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        row = conn.execute(
            b"EXPLAIN (FORMAT JSON) " + report.driver_sql.encode(), values
        ).fetchone()
    names = _plan_indexes(row[0] if row else [])
    return sorted({parents.get(n, n) for n in names})


def _time(
    settings: Settings,
    pair: tuple[reports.Report, reports.Report | None],
    params: dict[str, str],
    runs: int,
) -> tuple[list[float], list[float], int]:
    """Runs a report and its baseline twin alternately (the order swapped each round), so
    the load of a shared machine weighs on both alike; returns both timings and the rows."""
    timed: list[list[float]] = [[], []]
    rows = 0
    for report in pair:
        if report is not None:
            reports.run_report(settings, report, params)  # warm the cache
    for round_no in range(runs):
        order = [0, 1] if round_no % 2 == 0 else [1, 0]
        for which in order:
            report = pair[which]
            if report is None:
                continue
            started = time.perf_counter()
            result = reports.run_report(settings, report, params)
            timed[which].append((time.perf_counter() - started) * 1000)
            if which == 0:
                rows = len(result.rows)
    return sorted(timed[0]), sorted(timed[1]), rows


def run(settings: Settings, runs: int, baseline: Path | None = None) -> list[dict[str, Any]]:
    """Times every shipped report (and its baseline twin); returns one document per report."""
    catalog = reports.load_catalog()
    before = (
        {p.stem: reports.load_report(p, source=str(baseline)) for p in baseline.glob("*.sql")}
        if baseline
        else {}
    )
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        check_intended_indexes(conn)
        required = bench_params(conn)
        parents = _index_parents(conn)
    results: list[dict[str, Any]] = []
    for name, report in sorted(catalog.reports.items()):
        params = required.get(name, {})
        times, old_times, rows = _time(settings, (report, before.get(name)), params, runs)
        old_median = statistics.median(old_times) if old_times else None
        error = percentile_error(settings, report)
        histogram_ms, histogram_error = histogram_path(settings, report, params, runs)
        indexes = used_indexes(settings, report, params, parents)
        intended = INTENDED_INDEX.get(name)
        results.append(
            {
                "report": name,
                "rows": rows,
                "median_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
                "indexes_used": indexes,
                "intended_index": intended,
                "intended_index_used": intended is None or intended in indexes,
                "reads_rollups": "yes"
                if report.rollups.startswith("whole UTC hours")
                else ("past the raw horizon" if "pgtrail_rollup" in report.rollups else "no"),
                "histogram_path_median_ms": None
                if histogram_ms is None
                else round(histogram_ms, 1),
                "histogram_path_error_pct": None
                if histogram_error is None
                else round(100 * histogram_error, 3),
                "baseline_median_ms": None if old_median is None else round(old_median, 1),
                "speedup": None
                if old_median is None
                else round(old_median / max(statistics.median(times), 0.01), 1),
                "percentile_error_pct": None if error is None else round(100 * error, 3),
            }
        )
        _log(f"  {name}: {results[-1]['median_ms']} ms (baseline {old_median} ms)")
    return results


def print_table(results: list[dict[str, Any]], rows: int) -> None:
    """A Markdown table of the results."""
    print(f"\nreports on {rows:,} LLM calls ({DAYS} days), default parameters\n")
    print(
        "| report | rollups | rows | median ms | p95 ms | baseline median ms | speedup "
        "| percentile error % | from histograms: median ms, error % | index used (intended) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        used = ", ".join(r["indexes_used"]) or "seq scan"
        mark = "ok" if r["intended_index_used"] else "NOT USED"
        intended = r["intended_index"] or "none"
        dash = "–"
        error = dash if r["percentile_error_pct"] is None else r["percentile_error_pct"]
        histogram = (
            dash
            if r["histogram_path_median_ms"] is None
            else f"{r['histogram_path_median_ms']}, {r['histogram_path_error_pct']}"
        )
        print(
            f"| {r['report']} | {r['reads_rollups']} | {r['rows']} "
            f"| {r['median_ms']} | {r['p95_ms']} | {r['baseline_median_ms'] or dash} "
            f"| {r['speedup'] or dash} | {error} | {histogram} "
            f"| {used} ({intended}: {mark}) |"
        )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="LLM calls to generate")
    parser.add_argument(
        "--dsn", help="use this (empty or pgtrail) database instead of a scratch one"
    )
    parser.add_argument(
        "--admin-dsn",
        default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        help="server on which the scratch database is created",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per report")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--no-generate", action="store_true", help="reuse the data in --dsn")
    parser.add_argument(
        "--baseline-queries",
        type=Path,
        help="also time the report files of this folder on the same data (before/after)",
    )
    args = parser.parse_args()

    @contextmanager
    def target() -> Iterator[str]:
        if args.dsn:
            yield args.dsn
        else:
            with scratch_database(args.admin_dsn, args.keep) as dsn:
                yield dsn

    with target() as dsn:
        settings = Settings(dsn=dsn, redis_url=None, statement_timeout_ms=600_000)
        migrate(settings)
        if not args.no_generate:
            _log(f"generating {args.rows:,} LLM calls and related rows")
            with psycopg.connect(dsn, autocommit=True) as conn:
                started = time.perf_counter()
                generate(conn, args.rows, dt.datetime.now(dt.UTC))
                _log(f"  generated in {time.perf_counter() - started:.0f} s")
        rollup = refresh_rollups(dsn)
        _log("running reports")
        results = run(settings, args.runs, args.baseline_queries)
    print_table(results, args.rows)
    print(
        f"\nrollups: {rollup['rollup_rows']:,} + {rollup['outcome_rollup_rows']:,} rows, "
        f"{rollup['rollup_bytes'] / 1e6:.1f} MB beside {rollup['llm_table_bytes'] / 1e6:.0f} MB "
        f"of calls; refresh {rollup['refresh_s']} s"
    )
    document = {"rows": args.rows, "days": DAYS, "rollups": rollup, "reports": results}
    print("\n" + json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
