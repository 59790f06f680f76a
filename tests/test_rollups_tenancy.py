"""Tenant isolation holds on the rollup tables: a tenant reader never sees another's buckets.

The rollups carry the same row-level security as the log tables (a role per tenant, the
pgtrail.tenant setting of a pooled application login, the read sandbox), and only the owner
writes or rebuilds them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from pgtrail.config import Settings
from pgtrail.errors import TenancyError
from pgtrail.ops import tenancy
from pgtrail.read import reports
from pgtrail.tables import ROLLUP_TABLES
from test_rollups import _call_row, _insert
from test_tenancy import Roles, with_user

NOW = dt.datetime.now(dt.UTC)
ACME_COST = Decimal("0.50") * 40
GLOBEX_COST = Decimal("7.00") * 25


@pytest.fixture
def acme_reader(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """Two tenants' calls, folded into the rollups, and a login role granted acme alone."""
    old = NOW - dt.timedelta(days=3)
    _insert(
        settings.dsn,
        [
            _call_row(
                old + dt.timedelta(minutes=i), i, tenant_id="acme", total_cost=Decimal("0.50")
            )
            for i in range(40)
        ],
    )
    _insert(
        settings.dsn,
        [
            _call_row(
                old + dt.timedelta(minutes=i), i, tenant_id="globex", total_cost=Decimal("7.00")
            )
            for i in range(25)
        ],
    )
    made = Roles(settings.dsn)
    made.used_in(str(psycopg.conninfo.conninfo_to_dict(settings.dsn)["dbname"]))
    try:
        role = made.make("acme")
        app_login = made.make("app", member_of=(tenancy.APP_ROLE,))
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            tenancy.grant_tenant(conn, "public", "acme", role, create_role=False)
            conn.execute("SELECT pgtrail_rollup_compact()")
        yield settings.model_copy(update={"dsn": with_user(settings.dsn, role)}), app_login
    finally:
        made.drop_all()


def _costs(conn: psycopg.Connection[Any], table: str, where: str = "true") -> dict[str, Any]:
    cost = "sum(total_cost)" if table == "pgtrail_rollup_llm" else "sum(calls)"
    rows = conn.execute(
        f"SELECT tenant_id, {cost} FROM {table} WHERE {where} GROUP BY 1"
    ).fetchall()
    return {str(r[0]): r[1] for r in rows}


def test_a_tenant_role_reads_only_its_own_buckets(acme_reader: tuple[Settings, str]) -> None:
    reader, _ = acme_reader
    with psycopg.connect(reader.dsn) as conn:
        assert _costs(conn, "pgtrail_rollup_llm") == {"acme": ACME_COST}
        assert _costs(conn, "pgtrail_rollup_llm_outcome") == {"acme": 40}
        # Asking for the other tenant by name, or through the setting, gives nothing.
        assert _costs(conn, "pgtrail_rollup_llm", "tenant_id = 'globex'") == {}
        conn.execute("SELECT set_config('pgtrail.tenant', 'globex', false)")
        for table in ROLLUP_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_a_tenant_role_may_not_write_or_rebuild_the_rollups(
    acme_reader: tuple[Settings, str],
) -> None:
    reader, _ = acme_reader
    attacks = [
        "INSERT INTO pgtrail_rollup_llm (bucket, tenant_id, event_type, calls, first_at, "
        "last_at, latency_calls, latency_buckets, latency_counts, ttft_buckets, ttft_counts) "
        "VALUES (now(), 'globex', 'x', 1, now(), now(), 0, '{}', '{}', '{}', '{}')",
        "UPDATE pgtrail_rollup_llm SET total_cost = 0",
        "DELETE FROM pgtrail_rollup_llm_outcome",
        "SELECT pgtrail_rollup_rebuild('-infinity', 'infinity')",
        "SELECT pgtrail_rollup_compact()",
        "SELECT pgtrail_rollup_prune('infinity')",
    ]
    for attack in attacks:
        with (
            psycopg.connect(reader.dsn) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(attack)


def test_reports_from_rollups_show_a_scoped_reader_its_own_cost(
    settings: Settings, acme_reader: tuple[Settings, str]
) -> None:
    reader, app_login = acme_reader
    report = reports.load_catalog().get("cost-by-model")
    window = {"since": "7d", "until": "now"}
    everything = reports.run_report(settings, report, window)
    assert sum(r[everything.columns.index("total_cost")] for r in everything.rows) == (
        ACME_COST + GLOBEX_COST
    )
    as_app = settings.model_copy(update={"dsn": with_user(settings.dsn, app_login)})
    for scoped, flag in ((reader, None), (as_app, "acme"), (settings, "acme")):
        result = reports.run_report(scoped, report, window, tenant=flag)
        assert sum(r[result.columns.index("total_cost")] for r in result.rows) == ACME_COST
    got = reports.run_sql(reader, "SELECT DISTINCT tenant_id FROM pgtrail_rollup_llm")
    assert got.rows == [("acme",)]
    with pytest.raises(TenancyError, match="may not read tenant 'globex'"):
        reports.run_sql(reader, "SELECT 1 FROM pgtrail_rollup_llm", tenant="globex")
