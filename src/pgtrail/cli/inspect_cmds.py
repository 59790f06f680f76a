"""``pgtrail trace EXECUTION_ID`` and ``pgtrail journey USER_ID``."""

from __future__ import annotations

import datetime as dt
import sys
from enum import StrEnum
from typing import Annotated

import typer

from pgtrail.cli.app import app, console, fail, settings_of
from pgtrail.cli.report_cmds import TenantOption, TimeoutOption
from pgtrail.errors import PgtrailError
from pgtrail.read import reports
from pgtrail.read.journey import journey_dict, load_journey
from pgtrail.read.render import journey_timeline, json_text, write_trace
from pgtrail.read.trace import load_trace, parse_execution_id
from pgtrail.read.trace_view import (
    DEFAULT_BREADTH,
    DEFAULT_DEPTH,
    DEFAULT_EVENTS,
    DEFAULT_LINES,
    TraceLimits,
    view_dict,
    view_trace,
)


class TraceFormat(StrEnum):
    """Output formats of ``trace``."""

    tree = "tree"
    json = "json"


class JourneyFormat(StrEnum):
    """Output formats of ``journey``."""

    timeline = "timeline"
    json = "json"


def _moment(option: str, raw: str, now: dt.datetime) -> dt.datetime:
    param = reports.Param(option, "timestamptz", None, "", 0)
    try:
        value = reports.parse_value(param, raw, now=now)
    except PgtrailError as exc:
        raise typer.BadParameter(
            str(exc).removeprefix(f"parameter {option}: "), param_hint=f"--{option}"
        ) from None
    assert isinstance(value, dt.datetime)
    return value


@app.command("trace")
def trace_command(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(help="The execution id (a UUID)")],
    fmt: Annotated[TraceFormat, typer.Option("--format", help="tree or json")] = TraceFormat.tree,
    process: Annotated[
        str | None,
        typer.Option(help="Show only this process (a span id) and what runs under it"),
    ] = None,
    depth: Annotated[
        int, typer.Option(min=0, help="Process levels shown below the root of what is shown")
    ] = DEFAULT_DEPTH,
    breadth: Annotated[
        int, typer.Option(min=1, help="Child processes shown per process, in start order")
    ] = DEFAULT_BREADTH,
    events: Annotated[
        int, typer.Option(min=0, help="Events shown per process, in time order (0: none)")
    ] = DEFAULT_EVENTS,
    limit: Annotated[
        int,
        typer.Option(min=1, help="Process and event lines in all, filled level by level"),
    ] = DEFAULT_LINES,
    show_all: Annotated[
        bool, typer.Option("--all", help="Lift every limit: the whole tree, every event")
    ] = False,
    tenant: TenantOption = None,
    timeout_ms: TimeoutOption = None,
) -> None:
    """Show one execution: its processes with duration and status, the LLM calls and agent
    events under the process they happened in, and cost rolled up to the root.

    A big execution is cut to --depth, --breadth, --events and --limit; every cut says what
    it hid (processes, failures, LLM calls, cost) and how to see it, and JSON carries the
    same counts on the process where the cut was made.
    """
    settings = settings_of(ctx)
    limits = (
        TraceLimits.unlimited(process)
        if show_all
        else TraceLimits(depth=depth, breadth=breadth, events=events, lines=limit, process=process)
    )
    try:
        trace = load_trace(
            settings, parse_execution_id(execution_id), tenant=tenant, timeout_ms=timeout_ms
        )
        view = view_trace(trace, limits)
    except PgtrailError as exc:
        fail(str(exc))
    if fmt is TraceFormat.json:
        sys.stdout.write(json_text(view_dict(view)) + "\n")
    else:
        colours = None if console.no_color else console.color_system
        write_trace(view, console.file, color_system=colours)


@app.command("journey")
def journey_command(
    ctx: typer.Context,
    user_id: Annotated[
        str, typer.Argument(help="The user id (hashed for you if the writer hashes ids)")
    ],
    since: Annotated[
        str, typer.Option(help="Start of the window: 30d, 12h, 2w, today, or 2026-11-01")
    ] = "30d",
    until: Annotated[
        str, typer.Option(help="End of the window (exclusive): now, 2026-11-01, ...")
    ] = "now",
    fmt: Annotated[
        JourneyFormat, typer.Option("--format", help="timeline or json")
    ] = JourneyFormat.timeline,
    tenant: TenantOption = None,
    timeout_ms: TimeoutOption = None,
) -> None:
    """Show one user's journey across days: sessions, executions with cost and latency,
    journey events and handoffs."""
    settings = settings_of(ctx)
    now = dt.datetime.now(dt.UTC)
    start, end = _moment("since", since, now), _moment("until", until, now)
    try:
        journey = load_journey(settings, user_id, start, end, tenant=tenant, timeout_ms=timeout_ms)
    except PgtrailError as exc:
        fail(str(exc))
    if fmt is JourneyFormat.json:
        sys.stdout.write(json_text(journey_dict(journey)) + "\n")
    else:
        console.print(journey_timeline(journey))
