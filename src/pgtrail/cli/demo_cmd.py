"""``pgtrail demo``: load a realistic simulated workload, then tour what the reports find."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.demo import DEFAULT_DAYS, DEFAULT_INTERACTIONS, DEFAULT_SEED, DEFAULT_TENANTS
from pgtrail.errors import PgtrailError


def _parse_day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date such as 2026-11-01") from None


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    interactions: Annotated[
        int, typer.Option(min=1, help="User messages to simulate (each one a 001 Main execution)")
    ] = DEFAULT_INTERACTIONS,
    days: Annotated[
        int, typer.Option(min=1, max=400, help="Days the simulated window spans")
    ] = DEFAULT_DAYS,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data")] = (
        DEFAULT_SEED
    ),
    tenants: Annotated[int, typer.Option(min=1, max=100, help="Tenants (customers)")] = (
        DEFAULT_TENANTS
    ),
    no_plant: Annotated[
        bool, typer.Option("--no-plant", help="Simulate a healthy system: plant no problems")
    ] = False,
    end: Annotated[
        str | None,
        typer.Option(help="Day after the window's last day, e.g. 2026-11-01 (default: today UTC)"),
    ] = None,
    reset_tables: Annotated[
        bool,
        typer.Option(
            "--reset", help="Empty the pgtrail log tables first (deletes every logged event)"
        ),
    ] = False,
    no_tour: Annotated[
        bool, typer.Option("--no-tour", help="Load only; skip the report tour")
    ] = False,
) -> None:
    """Simulate a ten-agent coaching system for weeks; then show the reports finding its faults."""
    # The simulation loads the whole writer: only this command pays for it.
    from pgtrail.demo.load import check_empty, load, reset
    from pgtrail.demo.plant import Plan
    from pgtrail.demo.simulate import DemoOptions
    from pgtrail.demo.tour import print_summary, tour

    settings = settings_of(ctx)
    options = DemoOptions(
        interactions=interactions,
        days=days,
        seed=seed,
        tenants=tenants,
        plan=Plan.nothing() if no_plant else Plan(),
        end=_parse_day(end),
    )
    try:
        if reset_tables:
            reset(settings)
        check_empty(settings, options)
        start, stop = options.window()
        planted = "six planted problems" if options.plan.any else "nothing planted"
        console.print(
            f"Simulating {interactions:,} interactions over {days} days "
            f"({start:%Y-%m-%d} to {stop - dt.timedelta(days=1):%Y-%m-%d}), "
            f"{tenants} tenant(s), seed {seed}, {planted}.",
            highlight=False,
        )
        result = load(settings, options, console=console)
        print_summary(console, result)
        if not no_tour:
            tour(console, settings, result)
    except PgtrailError as exc:
        fail(str(exc))
