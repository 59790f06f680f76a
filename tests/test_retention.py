"""Retention against real partitions: whole days leave, nothing inside the window does.

Rows are planted at the first and last instants of each UTC day, so a partition dropped one
day too early, or a DEFAULT row deleted one instant too early, shows up as a missing row.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

import pgtrail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops import partitions, retention
from pgtrail.tables import LOG_TABLES

TENANTS = ("acme", "globex")
# Offsets inside a day: its first instant, noon, its last instant.
OFFSETS = ("0 seconds", "12 hours", "23:59:59.999999")
LONG = 3000  # characters of each long body planted in particular_data


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def plant(conn: psycopg.Connection[Any], first: dt.date, last: dt.date, now: dt.datetime) -> None:
    """Rows in every log table for each day of [first, last], partitions created first."""
    partitions.ensure(conn, first, last)
    params = {
        "first": midnight(first),
        "last": midnight(last),
        "tenants": list(TENANTS),
        "offsets": list(OFFSETS),
        "long": LONG,
        "recent": now - dt.timedelta(days=10),
    }
    days = """
        FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, '1 day') AS d
        CROSS JOIN unnest(%(offsets)s::interval[]) AS o
        CROSS JOIN unnest(%(tenants)s::text[]) AS t
        CROSS JOIN LATERAL (SELECT d + o AS at) AS w
    """
    data = """jsonb_build_object('category', 'short', 'notes', repeat('n', %(long)s),
                                 'nested', jsonb_build_object('reason', repeat('r', %(long)s),
                                                              'score', 0.5),
                                 'event_duration_ms', 1234)"""
    conn.execute(
        f"""
        INSERT INTO logs_llm_execution
            (event_id, execution_id, created_at, tenant_id, particular_data, model_target,
             prompt_hash, input_tokens, output_tokens, processing_time_ms,
             time_to_first_token_ms, total_cost, payload)
        SELECT gen_random_uuid(), gen_random_uuid(), w.at, t, {data}, 'gpt-4o',
               CASE WHEN w.at < %(recent)s THEN 'h-old' ELSE 'h-shared' END,
               1000 + extract(day FROM w.at)::int, 200, 900, 150,
               0.0123 * extract(day FROM w.at)::int,
               jsonb_build_object('messages', jsonb_build_array(jsonb_build_object(
                   'role', 'user', 'content', repeat('m', %(long)s))),
                   'completion', repeat('c', %(long)s), 'temperature', 0.2)
        {days}
        """.encode(),
        params,
    )
    conn.execute(
        f"""
        INSERT INTO logs_agent_execution
            (event_id, execution_id, created_at, tenant_id, event_type, agent_type,
             particular_data)
        SELECT gen_random_uuid(), gen_random_uuid(), w.at, t, 'agent_decision', 'coaching',
               {data}
        {days}
        """.encode(),
        params,
    )
    conn.execute(
        f"""
        INSERT INTO logs_user_journey
            (event_id, execution_id, created_at, tenant_id, event_type, particular_data)
        SELECT gen_random_uuid(), gen_random_uuid(), w.at, t, 'user_message_received', {data}
        {days}
        """.encode(),
        params,
    )
    conn.execute(
        f"""
        INSERT INTO logs_execution
            (event_id, execution_id, created_at, tenant_id, workflow, duration_ms,
             particular_data)
        SELECT gen_random_uuid(), gen_random_uuid(), w.at, t, '001 Main', 4321, {data}
        {days}
        """.encode(),
        params,
    )
    conn.execute(
        "INSERT INTO pgtrail_prompt (prompt_hash, body, body_chars, first_seen_at) VALUES "
        "('h-old', repeat('o', 5000), 5000, %(at)s), "
        "('h-shared', repeat('s', 5000), 5000, %(at)s), "
        "('h-unused-but-new', repeat('u', 5000), 5000, now())",
        {"at": midnight(first)},
    )


def event_ids(conn: psycopg.Connection[Any], table: str, since: dt.datetime) -> set[uuid.UUID]:
    rows = conn.execute(
        sql.SQL("SELECT event_id FROM {} WHERE created_at >= %s").format(sql.Identifier(table)),
        (since,),
    ).fetchall()
    return {r[0] for r in rows}


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every partition and every row of every table, in a comparable form."""
    found: dict[str, Any] = {
        "partitions": sorted(p.name for p in retention.list_partitions(conn)),
    }
    for table in (*LOG_TABLES, "pgtrail_prompt"):
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} AS t"
            ).format(sql.Identifier(table))
        ).fetchone()
        found[table] = row
    return found


def test_retention_while_ingesting_drops_past_days_and_keeps_the_window(
    settings: Settings,
) -> None:
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    keep = dt.timedelta(days=28)
    cutoff = now - keep
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        plant(conn, today - dt.timedelta(days=40), today - dt.timedelta(days=1), now)
        for at in (now - dt.timedelta(days=500), now + dt.timedelta(days=60)):
            conn.execute(
                "INSERT INTO logs_user_journey (event_id, execution_id, created_at, event_type) "
                "VALUES (%s, %s, %s, 'stray')",
                (uuid.uuid4(), uuid.uuid4(), at),
            )
        straddling = conn.execute(
            f"SELECT count(*) FROM logs_llm_execution_p{cutoff.date():%Y%m%d} "
            "WHERE created_at < %s",
            (cutoff,),
        ).fetchone()
        inside = {t: event_ids(conn, t, cutoff) for t in LOG_TABLES}
    assert straddling is not None and straddling[0] > 0, "a row just past the cut-off"

    stop = threading.Event()
    logged: list[uuid.UUID] = []
    trail = pgtrail.Trail(settings, redis_url=None, batch_size=50)

    def ingest() -> None:
        while not stop.is_set():
            with trail.execution("001 Main", tenant_id=TENANTS[len(logged) % 2]) as ex:
                pgtrail.log_llm_execution(
                    model="gpt-4o", input_tokens=100, output_tokens=20, total_cost=0.001
                )
            logged.append(ex.execution_id)
            time.sleep(0.002)

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        time.sleep(0.5)
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            report = retention.run(conn, keep=keep, now=now)
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join()
        trail.close()

    assert trail.stats.rejected == 0 and trail.stats.spooled == 0
    assert len(logged) > 20
    expected_gone = {
        f"{table}_p{day:%Y%m%d}"
        for table in LOG_TABLES
        for day in (today - dt.timedelta(days=n) for n in range(29, 41))
        if midnight(day) + dt.timedelta(days=1) <= cutoff
    }
    assert {d.name for d in report.dropped} == expected_gone
    assert report.rows_dropped == len(expected_gone) * len(OFFSETS) * len(TENANTS)
    assert report.default_rows_deleted == 1 and not report.busy
    with psycopg.connect(settings.dsn) as conn:
        left = retention.list_partitions(conn)
        assert not [p.name for p in left if p.upper is not None and p.upper <= cutoff]
        assert {p.name for p in left}.isdisjoint(expected_gone)
        for table in LOG_TABLES:
            assert inside[table] <= event_ids(conn, table, cutoff), f"{table} lost a row"
        assert (
            conn.execute(
                f"SELECT count(*) FROM logs_llm_execution_p{cutoff.date():%Y%m%d} "
                "WHERE created_at < %s",
                (cutoff,),
            ).fetchone()
            == straddling
        ), "the straddling partition is kept whole"
        strays = conn.execute(
            "SELECT created_at > now() FROM logs_user_journey WHERE event_type = 'stray'"
        ).fetchall()
        assert strays == [(True,)], "past DEFAULT rows deleted, future ones kept"
        for table in ("logs_execution", "logs_llm_execution"):
            stored = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE execution_id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (logged,),
            ).fetchone()
            assert stored == (len(logged),), f"{table}: every ingested row is stored"
        assert partitions.days_ahead(conn) >= partitions.DAYS_AHEAD


FIGURES = {
    "logs_llm_execution": "count(*), sum(input_tokens), sum(output_tokens), "
    "sum(processing_time_ms), sum(time_to_first_token_ms), sum(total_cost), "
    "sum((particular_data ->> 'event_duration_ms')::int), "
    "sum((particular_data #>> '{nested,score}')::numeric)",
    "logs_agent_execution": "count(*), sum((particular_data ->> 'event_duration_ms')::int)",
    "logs_user_journey": "count(*), "
    "count(*) FILTER (WHERE particular_data ->> 'category' = 'short')",
    "logs_execution": "count(*), sum(duration_ms)",
    "pgtrail_prompt": "count(*), sum(body_chars)",
}


def figures(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return {
        table: conn.execute(f"SELECT {what} FROM {table}".encode()).fetchone()
        for table, what in FIGURES.items()
    }


def recent_rows(conn: psycopg.Connection[Any], since: dt.datetime) -> dict[str, Any]:
    return {
        table: conn.execute(
            sql.SQL(
                "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} AS t "
                "WHERE created_at >= %s"
            ).format(sql.Identifier(table)),
            (since,),
        ).fetchone()
        for table in LOG_TABLES
    }


def test_keep_payloads_blanks_bodies_and_keeps_every_figure(settings: Settings) -> None:
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    cutoff = now - dt.timedelta(days=7)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        plant(conn, today - dt.timedelta(days=20), today, now)
        before = figures(conn)
        inside = recent_rows(conn, cutoff)
        everything = fingerprint(conn)
        old_llm = conn.execute(
            "SELECT count(*) FROM logs_llm_execution WHERE created_at < %s", (cutoff,)
        ).fetchone()
        planned = retention.run(conn, keep_payloads=dt.timedelta(days=7), dry_run=True, now=now)
        assert fingerprint(conn) == everything, "a dry run changes nothing"
        done = retention.run(conn, keep_payloads=dt.timedelta(days=7), now=now)

        assert old_llm is not None and old_llm[0] > 0
        assert (done.payloads_blanked, done.prompts_blanked) == (old_llm[0], 1)
        assert done.fields_blanked == 4 * old_llm[0]  # every old row of the four tables
        assert (planned.payloads_blanked, planned.prompts_blanked, planned.fields_blanked) == (
            done.payloads_blanked,
            done.prompts_blanked,
            done.fields_blanked,
        )
        assert figures(conn) == before, "cost, token and latency figures stay"
        assert recent_rows(conn, cutoff) == inside, "rows inside the window are untouched"
        old = conn.execute(
            "SELECT DISTINCT payload IS NULL, particular_data ->> 'category', "
            "particular_data ->> 'notes', particular_data #>> '{nested,reason}' "
            "FROM logs_llm_execution WHERE created_at < %s",
            (cutoff,),
        ).fetchall()
        marker = f"[removed: {LONG} chars]"
        assert old == [(True, "short", marker, marker)]
        prompts = {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT prompt_hash, body, body_chars FROM pgtrail_prompt")
        }
        assert prompts["h-old"] == ("", 5000), "no call in the window uses it"
        assert prompts["h-shared"] == ("s" * 5000, 5000)
        assert prompts["h-unused-but-new"] == ("u" * 5000, 5000)

        again = retention.run(conn, keep_payloads=dt.timedelta(days=7), now=now)
    assert (again.payloads_blanked, again.prompts_blanked, again.fields_blanked) == (0, 0, 0)


def test_a_dry_run_lists_what_a_real_run_then_does_and_changes_nothing(dsn: str) -> None:
    today = partitions.utc_today()
    with psycopg.connect(dsn, autocommit=True) as conn:
        plant(conn, today - dt.timedelta(days=35), today, dt.datetime.now(dt.UTC))
        before = fingerprint(conn)
    runner = CliRunner()
    dry = runner.invoke(
        app, ["--dsn", dsn, "retention", "--keep", "28d", "--keep-payloads", "7d", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    with psycopg.connect(dsn) as conn:
        assert fingerprint(conn) == before
    assert "dry run" in dry.output and "would drop 28 partition(s)" in dry.output
    oldest = f"logs_llm_execution_p{today - dt.timedelta(days=35):%Y%m%d}"
    assert oldest in dry.output
    real = runner.invoke(app, ["--dsn", dsn, "retention", "--keep", "28d", "--keep-payloads", "7d"])
    assert real.exit_code == 0, real.output
    assert "dropped 28 partition(s)" in real.output  # 7 days x 4 tables
    with psycopg.connect(dsn) as conn:
        names = {p.name for p in retention.list_partitions(conn)}
    assert oldest not in names
    keep = f"logs_llm_execution_p{today - dt.timedelta(days=27):%Y%m%d}"
    assert keep in names


def test_retention_explains_bad_windows(dsn: str) -> None:
    runner = CliRunner()
    cases = [
        (["--keep", "28x"], "not a duration"),
        ([], "give --keep, --keep-payloads or --keep-rollups"),
        (["--keep", "7d", "--keep-payloads", "28d"], "must not be longer"),
        (["--keep", "10m"], "too short"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["--dsn", dsn, "retention", *args])
        assert result.exit_code == 1, result.output
        assert message in result.output, result.output


def test_retention_as_a_role_that_does_not_own_the_tables_says_who_must_run_it(
    dsn: str,
) -> None:
    role = f"pgtrail_t_{uuid.uuid4().hex[:8]}_notowner"
    ident = sql.Identifier(role)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgtrail_writer").format(ident))
    try:
        today = partitions.utc_today()
        with psycopg.connect(dsn, autocommit=True) as conn:
            partitions.ensure(conn, today - dt.timedelta(days=40), today)
        result = CliRunner().invoke(
            app, ["--dsn", make_conninfo(dsn, user=role), "retention", "--keep", "28d"]
        )
        assert result.exit_code == 1
        assert "must run as the owner of the pgtrail tables" in result.output
        with psycopg.connect(dsn) as conn:
            names = {p.name for p in retention.list_partitions(conn)}
        assert f"logs_llm_execution_p{today - dt.timedelta(days=40):%Y%m%d}" in names
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))
