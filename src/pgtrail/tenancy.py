"""Tenant scoping of read paths (reports, trace, journey, sql) under row-level security."""

from __future__ import annotations

from typing import Any

import psycopg

TENANT_SETTING = "pgtrail.tenant"
"""The PostgreSQL custom setting that names the tenant a session may read."""


def scope_to_tenant(conn: psycopg.Connection[Any], tenant: str) -> None:
    """Limits what the open transaction on ``conn`` reads to ``tenant``'s rows.

    Called inside an open transaction, before the statement runs; effects end with it.
    """
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
