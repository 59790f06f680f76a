"""``pgtrail report list|show|run`` and ``pgtrail sql``: saved and ad-hoc read-only queries."""

from __future__ import annotations

import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from pgtrail.cli.app import app, console, err_console, fail, settings_of
from pgtrail.errors import PgtrailError, ReportFileError
from pgtrail.read import reports
from pgtrail.read.render import json_text, render_rows
from pgtrail.read.reports import Catalog, Report, ReportResult


class _ReportGroup(TyperGroup):
    """Lets ``pgtrail report NAME ...`` stand for ``pgtrail report run NAME ...``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


report_app = typer.Typer(
    cls=_ReportGroup,
    help="Saved SQL reports: cost, latency, drift, anomalies, sessions, journeys. "
    "`pgtrail report NAME` is short for `pgtrail report run NAME`.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


class ListFormat(StrEnum):
    """Output formats of ``report list``."""

    table = "table"
    json = "json"


class RowFormat(StrEnum):
    """Output formats of ``report run`` and ``sql``."""

    table = "table"
    csv = "csv"
    json = "json"
    md = "md"


QueriesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--queries",
        metavar="DIR",
        help="A folder of your own reports (repeatable; also $PGTRAIL_QUERIES_PATH). "
        "A report there replaces a shipped report of the same name.",
    ),
]
TenantOption = Annotated[
    str | None,
    typer.Option(help="Read only this tenant's rows (row-level security)"),
]
TimeoutOption = Annotated[
    int | None,
    typer.Option(min=1, help="Cancel the query after this many milliseconds (default 30000)"),
]


def _catalog(queries: list[Path] | None) -> Catalog:
    try:
        return reports.load_catalog(queries or ())
    except PgtrailError as exc:
        fail(str(exc))


def _report(catalog: Catalog, name: str) -> Report:
    try:
        return catalog.get(name)
    except PgtrailError as exc:
        fail(str(exc))


def _warn_problems(catalog: Catalog) -> None:
    for problem in catalog.problems.values():
        err_console.print(
            Text.assemble(("warning: ", "bold yellow"), f"report skipped: {problem}"),
            soft_wrap=True,
        )


def _param_summary(report: Report) -> str:
    return ", ".join(p.name if p.required else f"{p.name}={p.default}" for p in report.params)


def emit_rows(result: ReportResult, fmt: RowFormat) -> None:
    """Writes the rows: a rich table for people, plain text for the other formats."""
    rendered = render_rows(result.columns, result.rows, fmt.value)
    if isinstance(rendered, Table):
        console.print(rendered)
        count = len(result.rows)
        console.print(
            f"{count} row{'s' if count != 1 else ''} in {result.elapsed_ms:.0f} ms",
            style="dim",
            highlight=False,
        )
    else:
        sys.stdout.write(rendered)
        sys.stdout.flush()


@report_app.command("list")
def list_command(
    queries: QueriesOption = None,
    fmt: Annotated[ListFormat, typer.Option("--format", help="table or json")] = ListFormat.table,
) -> None:
    """List the saved reports with their parameters and descriptions."""
    catalog = _catalog(queries)
    items = sorted(catalog.reports.values(), key=lambda r: r.name)
    if fmt is ListFormat.json:
        sys.stdout.write(
            json_text(
                [
                    {
                        "name": r.name,
                        "description": r.description,
                        "rollups": r.rollups,
                        "source": r.source,
                        "path": str(r.path),
                        "parameters": [
                            {
                                "name": p.name,
                                "type": p.type,
                                "default": p.default,
                                "required": p.required,
                                "help": p.help,
                            }
                            for p in r.params
                        ],
                    }
                    for r in items
                ]
            )
            + "\n"
        )
    else:
        table = Table("report", "parameters", "description", header_style="bold")
        for report in items:
            name = report.name if report.source == "pgtrail" else f"{report.name} ({report.source})"
            table.add_row(
                Text(name, style="bold"),
                Text(_param_summary(report)),
                Text(_first_sentence(report.description)),
            )
        console.print(table)
        console.print(
            "pgtrail report show NAME for the SQL; pgtrail report run NAME to run it",
            style="dim",
            highlight=False,
        )
    _warn_problems(catalog)


@report_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Report name, e.g. cost-by-agent")],
    queries: QueriesOption = None,
) -> None:
    """Show a report's description, parameters and SQL."""
    report = _report(_catalog(queries), name)
    console.print(Text(report.name, style="bold"))
    console.print(Text(report.description))
    if report.rollups:
        console.print(Text(f"rollups: {report.rollups}"))
    console.print(Text(f"file: {report.path}", style="dim"))
    if report.params:
        table = Table("parameter", "type", "default", "help", header_style="bold")
        for p in report.params:
            default = Text("(required)", style="dim") if p.default is None else Text(p.default)
            table.add_row(Text(p.name), Text(p.type), default, Text(p.help))
        console.print(table)
    else:
        console.print("no parameters", style="dim")
    from rich.syntax import Syntax  # pygments: only for the command that colours SQL

    console.print(Syntax(report.body, "sql", theme="ansi_dark", background_color="default"))
    run = " ".join(f"--param {p.name}=VALUE" for p in report.params if p.required)
    console.print(
        Text(f"pgtrail report run {report.name} {run}".rstrip(), style="dim"), soft_wrap=True
    )
    psql = " ".join(f"-v {p.name}={_psql_value(p)}" for p in report.params)
    console.print(
        Text(f"psql {psql} -f {report.path}".replace("  ", " "), style="dim"), soft_wrap=True
    )


def _psql_value(param: reports.Param) -> str:
    """The default where PostgreSQL reads it as psql pastes it, else a placeholder."""
    if param.default is None:
        return "VALUE"
    if param.type == "timestamptz" and param.default.strip().lower() != "now":
        return "VALUE"  # friendly windows such as 7d are pgtrail's, not PostgreSQL's
    return shlex.quote(param.default)


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + dot.strip()


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``--param k=v`` values as a dictionary; each name at most once."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        if name in values:
            raise typer.BadParameter(f"{name} is given twice", param_hint="--param")
        values[name] = value
    return values


def _window(report: Report, values: dict[str, str], since: str | None, until: str | None) -> None:
    for option, raw in (("since", since), ("until", until)):
        if raw is None:
            continue
        if report.param(option) is None:
            names = ", ".join(p.name for p in report.params) or "none"
            fail(
                f"report {report.name} has no {option} parameter, so --{option} does not apply "
                f"(its parameters: {names})"
            )
        if option in values:
            fail(f"{option} is given twice: as --{option} and as --param {option}=...")
        values[option] = raw


@report_app.command("run")
def run_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Report name, e.g. cost-by-agent")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="NAME=VALUE", help="A report parameter (repeatable)"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Start of the window: 7d, 12h, 30m, 2w, today, or 2026-11-01"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the window (exclusive): now, 2026-11-01, ...")
    ] = None,
    fmt: Annotated[
        RowFormat, typer.Option("--format", help="table, csv, json or md")
    ] = RowFormat.table,
    timeout_ms: TimeoutOption = None,
    tenant: TenantOption = None,
    queries: QueriesOption = None,
) -> None:
    """Run a saved report (read-only, with a statement timeout)."""
    settings = settings_of(ctx)
    values = parse_params(param or [])
    report = _report(_catalog(queries), name)
    _window(report, values, since, until)
    try:
        result = reports.run_report(settings, report, values, timeout_ms=timeout_ms, tenant=tenant)
    except PgtrailError as exc:
        fail(str(exc))
    emit_rows(result, fmt)


def _refusal(exc: ReportFileError) -> str:
    """The check's message without its ``sql:LINE:`` prefix, the line said in words."""
    prefix = f"{exc.path}:{exc.line}: " if exc.line else f"{exc.path}: "
    reason = str(exc).removeprefix(prefix)
    where = f" (line {exc.line})" if exc.line else ""
    return f"statement refused{where}: {reason}"


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    statement: Annotated[
        str, typer.Argument(help="One read-only query (SELECT / WITH / VALUES); - reads stdin")
    ],
    fmt: Annotated[
        RowFormat, typer.Option("--format", help="table, csv, json or md")
    ] = RowFormat.table,
    max_rows: Annotated[
        int, typer.Option(min=1, help="Return at most this many rows")
    ] = reports.DEFAULT_MAX_ROWS,
    timeout_ms: TimeoutOption = None,
    tenant: TenantOption = None,
) -> None:
    """Run one ad-hoc query in a read-only transaction with a statement timeout."""
    settings = settings_of(ctx)
    text = sys.stdin.read() if statement == "-" else statement
    try:
        result = reports.run_sql(
            settings, text, max_rows=max_rows, timeout_ms=timeout_ms, tenant=tenant
        )
    except ReportFileError as exc:
        fail(_refusal(exc))
    except PgtrailError as exc:
        fail(str(exc))
    emit_rows(result, fmt)
    if result.truncated:
        err_console.print(
            f"warning: only the first {max_rows} rows are shown; raise --max-rows for more",
            style="yellow",
            highlight=False,
        )
