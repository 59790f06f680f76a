"""``pgtrail tenant grant|revoke|list|setup``: who may read which tenant's rows."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgtrail import db
from pgtrail.cli.app import app, console, err_console, fail, settings_of
from pgtrail.errors import PgtrailError
from pgtrail.ops import tenancy

tenant_app = typer.Typer(
    help="Tenant isolation: which database roles may read which tenant's rows.",
    no_args_is_help=True,
)
app.add_typer(tenant_app, name="tenant")


@tenant_app.command("grant")
def grant_command(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id, as stored in tenant_id")],
    role: Annotated[str, typer.Argument(help="Database role that may read the tenant's rows")],
    create_role: Annotated[
        bool, typer.Option("--create-role", help="Create the role (NOLOGIN) if it is missing")
    ] = False,
) -> None:
    """Let ROLE (and its members) read TENANT's rows, and nothing else of the log tables."""
    settings = settings_of(ctx)
    try:
        with db.connect(settings) as conn:
            created, new = tenancy.grant_tenant(
                conn, settings.db_schema, tenant, role, create_role=create_role
            )
    except PgtrailError as exc:
        fail(str(exc))
    if created:
        console.print(f"created role {role} (NOLOGIN); grant it to login roles that read {tenant}")
    state = "granted" if new else "already granted"
    console.print(f"{state}: {role} reads tenant {tenant!r}", highlight=False)


@tenant_app.command("revoke")
def revoke_command(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    role: Annotated[str, typer.Argument(help="Database role")],
) -> None:
    """Stop ROLE reading TENANT's rows (its last tenant gone, its table privileges go too)."""
    settings = settings_of(ctx)
    try:
        with db.connect(settings) as conn:
            existed, revoked = tenancy.revoke_tenant(conn, settings.db_schema, tenant, role)
    except PgtrailError as exc:
        fail(str(exc))
    if not existed:
        console.print(f"nothing to revoke: {role} had no grant of tenant {tenant!r}")
        return
    console.print(f"revoked: {role} no longer reads tenant {tenant!r}", highlight=False)
    if revoked:
        console.print(f"{role} has no tenant left; its SELECT on the log tables was revoked")


@tenant_app.command("list")
def list_command(ctx: typer.Context) -> None:
    """Show the tenant grants, and the roles that read by the pgtrail.tenant setting."""
    settings = settings_of(ctx)
    try:
        with db.connect(settings) as conn:
            grants = tenancy.list_grants(conn)
            members = tenancy.app_members(conn)
    except PgtrailError as exc:
        fail(str(exc))
    if grants:
        table = Table("tenant", "role", "login", "granted at", "granted by")
        for g in grants:
            role = g.role_name if g.role_exists else f"{g.role_name} (missing)"
            table.add_row(
                g.tenant_id,
                role,
                "yes" if g.can_login else "no",
                f"{g.granted_at:%Y-%m-%d %H:%M}",
                g.granted_by,
            )
        console.print(table)
    else:
        console.print("no tenant grants (`pgtrail tenant grant TENANT ROLE` adds one)")
    if members is None:
        err_console.print(
            f"[yellow]warning:[/] role {tenancy.APP_ROLE} does not exist; run "
            "`pgtrail tenant setup` for what to do",
            highlight=False,
        )
    else:
        names = ", ".join(members) if members else "none"
        console.print(
            f"members of {tenancy.APP_ROLE} (read the tenant named by pgtrail.tenant): {names}",
            highlight=False,
        )


@tenant_app.command("setup")
def setup_command(ctx: typer.Context) -> None:
    """Create pgtrail_app and pgtrail_writer where allowed and grant them their privileges."""
    settings = settings_of(ctx)
    try:
        with db.connect(settings) as conn:
            notes = tenancy.setup_roles(conn)
    except PgtrailError as exc:
        fail(str(exc))
    for note in notes:
        err_console.print(f"[yellow]to do:[/] {note}", highlight=False, soft_wrap=True)
    if notes:
        raise typer.Exit(1)
    console.print(
        f"{tenancy.APP_ROLE} and {tenancy.WRITER_ROLE} are ready: grant {tenancy.APP_ROLE} to "
        f"application logins that set pgtrail.tenant, {tenancy.WRITER_ROLE} to writers that do "
        "not own the tables"
    )
