"""Tenant isolation: scoping reads to one tenant, and granting tenants to roles.

Row-level security (``schema/0003_tenant_isolation.sql``) decides what a role sees: a role
granted a tenant in ``pgtrail_tenant_grant`` sees that tenant's rows; a member of
``pgtrail_app`` sees the tenant named by the transaction-local setting ``pgtrail.tenant``;
the owner of the tables and superusers bypass it. Their ``--tenant`` reads are bound in the
read sandbox (``pgtrail.sandbox``), by a signed token a query cannot forge.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from pgtrail.errors import TenancyError
from pgtrail.statements import STATEMENTS
from pgtrail.tables import LOG_TABLES, MODEL_PRICE, ROLLUP_TABLES

TENANT_SETTING = "pgtrail.tenant"
"""The PostgreSQL custom setting that names the tenant a session may read."""
APP_ROLE = "pgtrail_app"
"""Group role of trusted application servers: they read the tenant ``pgtrail.tenant`` names."""
WRITER_ROLE = "pgtrail_writer"
"""Group role of writers that do not own the tables: they insert rows for any tenant."""
READABLE = (*LOG_TABLES, "logs_execution_step", MODEL_PRICE, *ROLLUP_TABLES)
"""What a tenant's role is granted SELECT on (parents, the view and the rollups; never
partitions)."""


@dataclass(frozen=True)
class TenantGrant:
    """One row of ``pgtrail_tenant_grant`` and the state of its role."""

    tenant_id: str
    role_name: str
    granted_at: dt.datetime
    granted_by: str
    role_exists: bool
    can_login: bool


def check_tenant(tenant: str) -> str:
    """Returns ``tenant`` if it can name a tenant; raises TenancyError otherwise."""
    if not tenant or not tenant.strip():
        raise TenancyError("a tenant id cannot be empty")
    if "\x00" in tenant:
        raise TenancyError("a tenant id cannot contain a NUL character")
    return tenant


def _one(conn: psycopg.Connection[Any], query: LiteralString, params: Any) -> tuple[Any, ...]:
    """The single row ``query`` returns (aggregates and VALUES always return one)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise TenancyError(f"no row from a query that always returns one: {query.strip()}")
    return tuple(row)


def require_isolation(conn: psycopg.Connection[Any]) -> None:
    """Raises unless row-level security is installed on every log table.

    Args:
        conn: a connection inside the transaction that will read.

    Raises:
        TenancyError: the tables or their row-level security are missing; run `migrate`.
    """
    found, protected = _one(conn, STATEMENTS["tenancy_isolation_installed"], (list(LOG_TABLES),))
    if found < len(LOG_TABLES):
        raise TenancyError("the pgtrail log tables were not found; run `pgtrail migrate`")
    if protected < len(LOG_TABLES):
        raise TenancyError(
            "row-level security is not installed on the log tables, so --tenant cannot be "
            "enforced; run `pgtrail migrate`"
        )


def narrow_to_tenant(conn: psycopg.Connection[Any], tenant: str, user: str) -> None:
    """Narrows what a role bound by row-level security reads to ``tenant``, for the transaction.

    This is the ``pgtrail.tenant`` setting: a query that changes it can at most see what the
    role itself may read (its granted tenants), never more. Roles that bypass row-level
    security get their tenant bound in the read sandbox instead (:mod:`pgtrail.read.sandbox`).

    Args:
        conn: a connection inside the transaction that will read.
        tenant: the tenant to show.
        user: the connected role's name, for the error message.

    Raises:
        TenancyError: the role may not read ``tenant``; the message says what to run.
    """
    conn.execute(STATEMENTS["tenancy_set_local"], (TENANT_SETTING, tenant))
    (allowed,) = _one(conn, STATEMENTS["tenancy_may_read"], (tenant,))
    if not allowed:
        raise TenancyError(
            f"role {user} may not read tenant {tenant!r}; its owner can allow it with "
            f"`pgtrail tenant grant {tenant} {user}`"
        )


# --------------------------------------------------------------------------- grants


def _role(conn: psycopg.Connection[Any], role: str) -> tuple[bool, bool, bool] | None:
    """(superuser, bypassrls, member of the tables' owner) for ``role``, None if missing."""
    row = conn.execute(STATEMENTS["tenancy_role_state"], (role,)).fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]), bool(row[2]))


def _check_grantee(role: str) -> None:
    if not role or "\x00" in role:
        raise TenancyError("a role name cannot be empty or contain a NUL character")
    if role in (APP_ROLE, WRITER_ROLE):
        raise TenancyError(
            f"{role} is one of pgtrail's group roles; grant tenants to a role of their own "
            f"(members of {APP_ROLE} choose their tenant with the pgtrail.tenant setting)"
        )


def _privilege_error(action: str, exc: psycopg.Error) -> TenancyError:
    message = (exc.diag.message_primary or str(exc)).strip()
    return TenancyError(
        f"{action} failed: {message}. Run it as the owner of the pgtrail tables (the role that "
        "ran `pgtrail migrate`); creating a role also needs CREATEROLE"
    )


def grant_tenant(
    conn: psycopg.Connection[Any], schema: str, tenant: str, role: str, *, create_role: bool
) -> tuple[bool, bool]:
    """Lets ``role`` read ``tenant``'s rows; returns (role created, grant was new).

    Records the grant and gives the role USAGE on the schema and SELECT on the log tables,
    the step view and the price table (never on partitions). Refuses roles that would see
    every tenant anyway (superusers, BYPASSRLS, members of the tables' owner).
    """
    check_tenant(tenant)
    _check_grantee(role)
    created = False
    try:
        with conn.transaction():
            state = _role(conn, role)
            if state is None:
                if not create_role:
                    raise TenancyError(
                        f"role {role} does not exist; create it (CREATE ROLE {role} LOGIN ...) "
                        "or pass --create-role to create it NOLOGIN, for others to be granted"
                    )
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                created = True
                state = _role(conn, role)
            if state is None:
                raise TenancyError("the pgtrail log tables were not found; run `pgtrail migrate`")
            if any(state):
                raise TenancyError(
                    f"role {role} bypasses row-level security (superuser, BYPASSRLS, or member "
                    "of the owner of the tables): it sees every tenant, so a tenant grant "
                    "would mean nothing; use a role of its own for the tenant"
                )
            row = conn.execute(STATEMENTS["tenancy_grant_insert"], (tenant, role)).fetchone()
            ident = sql.Identifier(role)
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
            )
            tables = sql.SQL(", ").join(sql.Identifier(schema, name) for name in READABLE)
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, ident))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _privilege_error(f"granting tenant {tenant!r} to {role}", exc) from exc
    return created, row is not None


def revoke_tenant(
    conn: psycopg.Connection[Any], schema: str, tenant: str, role: str
) -> tuple[bool, bool]:
    """Stops ``role`` reading ``tenant``; returns (grant existed, table privileges revoked).

    When the role has no tenant left here, the privileges ``grant_tenant`` gave it go too.
    """
    check_tenant(tenant)
    _check_grantee(role)
    try:
        with conn.transaction():
            removed = conn.execute(STATEMENTS["tenancy_grant_delete"], (tenant, role)).fetchone()
            left = conn.execute(STATEMENTS["tenancy_grants_of_role"], (role,)).fetchone()
            if (left and left[0]) or _role(conn, role) is None:
                return removed is not None, False
            ident = sql.Identifier(role)
            tables = sql.SQL(", ").join(sql.Identifier(schema, name) for name in READABLE)
            conn.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(tables, ident))
            conn.execute(
                sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), ident)
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _privilege_error(f"revoking tenant {tenant!r} from {role}", exc) from exc
    return removed is not None, True


def list_grants(conn: psycopg.Connection[Any]) -> list[TenantGrant]:
    """Every tenant grant this role may see (all of them for the owner), by tenant and role."""
    rows = conn.execute(STATEMENTS["tenancy_grants"]).fetchall()
    return [TenantGrant(*row) for row in rows]


def app_members(conn: psycopg.Connection[Any]) -> list[str] | None:
    """The roles directly in ``pgtrail_app`` (session-setting readers); None if it is missing."""
    exists = conn.execute(STATEMENTS["tenancy_role_exists"], (APP_ROLE,)).fetchone()
    if exists is None:
        return None
    rows = conn.execute(STATEMENTS["tenancy_role_members"], (APP_ROLE,)).fetchall()
    return [r[0] for r in rows]


def setup_roles(conn: psycopg.Connection[Any]) -> list[str]:
    """Creates and grants pgtrail's group roles where it may; returns what is left to do."""
    try:
        with conn.transaction():
            return [r[0] for r in conn.execute(STATEMENTS["tenancy_setup_roles"]).fetchall()]
    except psycopg.errors.UndefinedFunction as exc:
        raise TenancyError("tenant isolation is not installed here; run `pgtrail migrate`") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _privilege_error("setting up pgtrail's roles", exc) from exc
