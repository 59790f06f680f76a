"""Saved reports: load ``queries/*.sql``, check them, bind their parameters, run them read-only.

A report file is a header of SQL comments (name, description, typed parameters) and one
read-only statement that uses psql variables (``:'since'::timestamptz``), so the same file
runs under ``psql -v since=... -f``. Here the variables become psycopg placeholders: values
are always bound by the driver, never pasted into the SQL. The header grammar is documented
in ``queries/README.md``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import psycopg

from pgtrail import db
from pgtrail.config import Settings, extra_query_dirs
from pgtrail.errors import ReportError, ReportFileError
from pgtrail.read import sandbox, sqlcheck
from pgtrail.resources import queries_dir

PARAM_TYPES = ("timestamptz", "date", "int", "numeric", "text", "bool", "uuid")
_TYPE_ALIASES = {"integer": "int", "bigint": "int", "boolean": "bool", "timestamp": "timestamptz"}
# Types psql may paste unquoted (``:x``) without the value becoming SQL text of its own.
_UNQUOTED_OK = {"int", "numeric", "bool"}
HEADER_KEYS = ("name", "description", "rollups", "param")
DEFAULT_MAX_ROWS = 1000

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KEY = re.compile(r"^\s*([a-z_]+):(?:\s|$)")
_PARAM = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<type>[A-Za-z]+)"
    r"(?:\s*=\s*(?P<default>'(?:[^']|'')*'|[^\s']\S*))?"
    r"\s*(?:--\s*(?P<help>.*))?$"
)
_WINDOW = re.compile(r"^(?P<n>\d+)\s*(?P<unit>s|m|min|h|d|w)$", re.IGNORECASE)
_WINDOW_UNITS = {
    "s": "seconds",
    "m": "minutes",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}
_BOOLS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "on": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "off": False,
    "0": False,
}
_TYPE_HINTS = {
    "timestamptz": "a window such as 7d, 12h, 30m, 2w, 'now', 'today', or an ISO date or "
    "timestamp such as 2026-11-01 or 2026-11-01T09:30:00Z (UTC unless an offset is given)",
    "date": "an ISO date such as 2026-11-01",
    "int": "a whole number such as 20",
    "numeric": "a number such as 0.5",
    "text": "any text",
    "bool": "true or false",
    "uuid": "a UUID such as 0190f3e4-7a1b-7c3d-9e2f-0123456789ab",
}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a report."""

    name: str
    type: str
    default: str | None
    help: str
    line: int

    @property
    def required(self) -> bool:
        """Whether the caller must give a value (no default)."""
        return self.default is None


@dataclass(frozen=True)
class Report:
    """One saved report, checked and ready to run."""

    name: str
    description: str
    params: tuple[Param, ...]
    path: Path
    text: str
    driver_sql: str
    source: str
    rollups: str = ""
    """How the report uses the rollup tables, or why it reads raw rows (the ``rollups:``
    header); empty when the file does not say."""

    def param(self, name: str) -> Param | None:
        """The declared parameter called ``name``, if any."""
        return next((p for p in self.params if p.name == name), None)

    @property
    def body(self) -> str:
        """The SQL statement without the header comments."""
        return self.text[_header_end(self.text.splitlines(keepends=True)) :].strip() + "\n"


@dataclass(frozen=True)
class ReportResult:
    """Column names and rows of one run."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    elapsed_ms: float = 0.0
    truncated: bool = False


@dataclass
class Catalog:
    """The reports found in the shipped and user folders, and the files that failed checks."""

    reports: dict[str, Report] = field(default_factory=dict)
    problems: dict[str, ReportError] = field(default_factory=dict)

    def get(self, name: str) -> Report:
        """The report called ``name``; unknown names get a did-you-mean suggestion."""
        if name in self.reports:
            return self.reports[name]
        if name in self.problems:
            raise self.problems[name]
        known = sorted(self.reports)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ReportError(
            f"unknown report {name!r}{hint} (`pgtrail report list` shows all {len(known)})"
        )


# --------------------------------------------------------------------------- loading


def _header_end(lines: Sequence[str]) -> int:
    """Character offset where the leading block of comment and blank lines ends."""
    offset = 0
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        offset += len(line)
    return offset


def _display_path(path: Path) -> str:
    try:
        return f"queries/{path.relative_to(queries_dir())}"
    except ValueError:
        return str(path)


def parse_report(text: str, path: Path, *, source: str = "pgtrail") -> Report:
    """Parses and checks one report file's text; raises ReportFileError naming file and line."""
    where = _display_path(path)
    header = _parse_header(text, where)
    name, description, params = header.name, header.description, header.params
    if name is None:
        raise ReportFileError(where, 1, "missing `-- name: report-name` header line")
    if name != path.stem:
        raise ReportFileError(
            where, 1, f"report name {name!r} must equal the file name ({path.stem!r})"
        )
    if not description:
        raise ReportFileError(where, 1, "missing `-- description: ...` header line")
    uses = sqlcheck.scan_psql_variables(text, where)
    _check_variables(params, uses, where)
    sqlcheck.check_read_only(text, where, strict=True, placeholders=uses)
    return Report(
        name=name,
        description=description,
        params=tuple(params),
        path=path,
        text=text,
        driver_sql=sqlcheck.to_driver_sql(text[: _statement_end(text, uses)], uses),
        source=source,
        rollups=header.rollups,
    )


def _statement_end(text: str, uses: Sequence[sqlcheck.VariableUse]) -> int:
    """Where the report's statement ends: before its semicolon and any comment after it."""
    # Each variable becomes a literal of the same length, so offsets stay those of ``text``.
    parts: list[str] = []
    pos = 0
    for use in uses:
        width = use.end - use.start
        parts.append(text[pos : use.start])
        parts.append("'" + "x" * (width - 2) + "'" if use.quoted else "0" * width)
        pos = use.end
    parts.append(text[pos:])
    return sandbox.statement_span("".join(parts))[1]


@dataclass(frozen=True)
class _Header:
    """What a report file's header comments declare."""

    name: str | None
    description: str
    rollups: str
    params: list[Param]


def _parse_header(text: str, where: str) -> _Header:
    name: str | None = None
    description: list[str] = []
    rollups: list[str] = []
    params: list[Param] = []
    last: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        content = stripped[2:]
        key = _KEY.match(content)
        if key and key.group(1) in HEADER_KEYS:
            value = content[key.end() :].strip()
            last = key.group(1)
            if last == "name":
                if name is not None:
                    raise ReportFileError(where, lineno, "`name:` given twice")
                if not _NAME.match(value):
                    raise ReportFileError(
                        where, lineno, f"report name {value!r} must be lower-case-with-dashes"
                    )
                name = value
            elif last == "description":
                description.append(value)
            elif last == "rollups":
                rollups.append(value)
            else:
                params.append(_parse_param(value, where, lineno, params))
        elif key:
            raise ReportFileError(
                where,
                lineno,
                f"unknown header key {key.group(1)!r}; the keys are {', '.join(HEADER_KEYS)}",
            )
        elif content.startswith("  ") and content.strip() and last == "description":
            description.append(content.strip())
        elif content.startswith("  ") and content.strip() and last == "rollups":
            rollups.append(content.strip())
        elif content.startswith("  ") and content.strip() and last == "param":
            previous = params[-1]
            params[-1] = Param(
                previous.name,
                previous.type,
                previous.default,
                f"{previous.help} {content.strip()}".strip(),
                previous.line,
            )
        else:
            last = None
    return _Header(
        name=name,
        description=" ".join(d for d in description if d),
        rollups=" ".join(r for r in rollups if r),
        params=params,
    )


def _parse_param(value: str, where: str, lineno: int, seen: list[Param]) -> Param:
    match = _PARAM.match(value)
    if not match:
        raise ReportFileError(
            where,
            lineno,
            "malformed parameter; expected `-- param: NAME TYPE [= DEFAULT] [-- help]`",
        )
    name = match["name"]
    if name != name.lower():
        raise ReportFileError(where, lineno, f"parameter name {name!r} must be lower case")
    kind = _TYPE_ALIASES.get(match["type"].lower(), match["type"].lower())
    if kind not in PARAM_TYPES:
        raise ReportFileError(
            where,
            lineno,
            f"parameter {name}: unknown type {match['type']!r}; "
            f"use one of {', '.join(PARAM_TYPES)}",
        )
    if any(p.name == name for p in seen):
        raise ReportFileError(where, lineno, f"parameter {name} is declared twice")
    default = match["default"]
    if default is not None and default.startswith("'"):
        default = default[1:-1].replace("''", "'")
    param = Param(name, kind, default, (match["help"] or "").strip(), lineno)
    if default is not None:
        try:
            parse_value(param, default)
        except ReportError as exc:
            raise ReportFileError(where, lineno, f"bad default: {exc}") from exc
    return param


def _check_variables(params: list[Param], uses: list[sqlcheck.VariableUse], where: str) -> None:
    declared = {p.name: p for p in params}
    for use in uses:
        param = declared.get(use.name)
        if param is None:
            raise ReportFileError(
                where,
                use.line,
                f"variable {use.text} is not declared; "
                f"add `-- param: {use.name} TYPE` to the header",
            )
        if not use.quoted and param.type not in _UNQUOTED_OK:
            raise ReportFileError(
                where,
                use.line,
                f"write :'{use.name}' (quoted) for the {param.type} parameter {use.name}: "
                f"psql pastes {use.text} into the SQL as is",
            )
    used = {u.name for u in uses}
    for param in params:
        if param.name not in used:
            raise ReportFileError(
                where, param.line, f"parameter {param.name} is declared but never used"
            )


def load_report(path: Path, *, source: str = "pgtrail") -> Report:
    """Reads and checks one report file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportFileError(_display_path(path), None, f"cannot read: {exc}") from exc
    return parse_report(text, path, source=source)


def report_dirs(extra: Sequence[Path] = ()) -> list[tuple[Path, str]]:
    """The folders searched, in order (later ones override earlier ones by report name)."""
    dirs: list[tuple[Path, str]] = [(queries_dir(), "pgtrail")]
    dirs += [(d, str(d)) for d in extra_query_dirs()]
    dirs += [(Path(d), str(d)) for d in extra]
    return dirs


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """Loads every report: shipped ones, ``PGTRAIL_QUERIES_PATH`` folders, then ``extra``."""
    catalog = Catalog()
    for folder, source in report_dirs(extra):
        if not folder.is_dir():
            raise ReportError(f"queries folder not found: {folder}")
        for path in sorted(folder.glob("*.sql")):
            try:
                report = load_report(path, source=source)
            except ReportError as exc:
                catalog.problems[path.stem] = exc
                catalog.reports.pop(path.stem, None)
                continue
            catalog.problems.pop(report.name, None)
            catalog.reports[report.name] = report
    return catalog


# --------------------------------------------------------------------------- parameters


def parse_value(param: Param, raw: str, *, now: dt.datetime | None = None) -> object:
    """Converts a textual value to the Python value bound for ``param``; explains failures."""
    value = raw.strip()
    kind = param.type
    try:
        if kind == "text":
            if "\x00" in raw:
                raise ReportError(
                    f"parameter {param.name}: a NUL character cannot be sent to PostgreSQL"
                )
            return raw
        if kind == "int":
            if not re.fullmatch(r"[+-]?\d+", value):
                raise ValueError
            return int(value)
        if kind == "numeric":
            number = Decimal(value)
            if not number.is_finite():
                raise ValueError
            return number
        if kind == "bool":
            return _BOOLS[value.lower()]
        if kind == "uuid":
            return uuid.UUID(value)
        if kind == "date":
            return dt.date.fromisoformat(value)
        return parse_timestamptz(value, now=now)
    except (ValueError, KeyError, InvalidOperation, OverflowError):
        raise ReportError(
            f"parameter {param.name}: {raw!r} is not a valid {kind}; expected {_TYPE_HINTS[kind]}"
        ) from None


def parse_timestamptz(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``now``, ``today``, ``7d``/``12h``/``30m``/``2w`` ago, or ISO 8601 (naive means UTC)."""
    current = now or dt.datetime.now(dt.UTC)
    lowered = value.strip().lower()
    if lowered == "now":
        return current
    if lowered == "today":
        return current.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = _WINDOW.match(lowered)
    if window:
        unit = _WINDOW_UNITS[window["unit"].lower()]
        return current - dt.timedelta(**{unit: int(window["n"])})
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def bind_values(
    report: Report, raw: Mapping[str, str], *, now: dt.datetime | None = None
) -> dict[str, object]:
    """Checks the given values against the declared parameters and converts them."""
    unknown = sorted(set(raw) - {p.name for p in report.params})
    if unknown:
        names = ", ".join(p.name for p in report.params) or "none"
        close = difflib.get_close_matches(unknown[0], [p.name for p in report.params], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ReportError(
            f"report {report.name} has no parameter {unknown[0]}{hint} (its parameters: {names})"
        )
    current = now or dt.datetime.now(dt.UTC)
    values: dict[str, object] = {}
    for param in report.params:
        text = raw.get(param.name, param.default)
        if text is None:
            raise ReportError(
                f"report {report.name} needs parameter {param.name} ({param.type}"
                f"{': ' + param.help if param.help else ''}); pass --param {param.name}=VALUE"
            )
        try:
            values[param.name] = parse_value(param, text, now=current)
        except ReportError as exc:
            raise ReportError(f"report {report.name}: {exc}") from None
    return values


# --------------------------------------------------------------------------- running


@contextmanager
def read_only_transaction(
    conn: psycopg.Connection[Any], timeout_ms: int
) -> Iterator[psycopg.Connection[Any]]:
    """A READ ONLY transaction whose statements are cancelled after ``timeout_ms``.

    Only for pgtrail's own fixed statements over every tenant (alert rules); reports,
    ad-hoc SQL and every ``--tenant`` read go through :func:`pgtrail.read.sandbox.read_session`.

    Args:
        conn: an autocommit connection.
        timeout_ms: statement_timeout of every statement, in ms.
    """
    with conn.transaction():
        sandbox.configure_read_only(conn, timeout_ms)
        yield conn


def query_failure(what: str, exc: psycopg.Error, timeout_ms: int) -> ReportError:
    """The error to show for a failed read of ``what``: timeout, refusal, or the server's reason."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ReportError(
            f"{what} was cancelled after {timeout_ms} ms (statement_timeout); narrow the window "
            "or raise --timeout-ms"
        )
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ReportError(f"{what} was refused: it runs in a read-only transaction")
    message = (exc.diag.message_primary or str(exc)).strip()
    return ReportError(f"{what} failed: {message}")


def run_report(
    settings: Settings,
    report: Report,
    params: Mapping[str, str] | None = None,
    *,
    timeout_ms: int | None = None,
    now: dt.datetime | None = None,
    tenant: str | None = None,
) -> ReportResult:
    """Runs a report with its parameters bound by the driver, read-only, under a timeout.

    With ``tenant``, only that tenant's rows are visible to it (row-level security).
    """
    values = bind_values(report, params or {}, now=now)
    limit = timeout_ms or settings.statement_timeout_ms
    started = time.perf_counter()
    with db.connect(settings) as conn:
        try:
            with sandbox.read_session(conn, limit, tenant=tenant) as session:
                result = session.query(report.driver_sql, values)
        except psycopg.Error as exc:
            raise query_failure(f"report {report.name}", exc, limit) from exc
    return ReportResult(result.columns, result.rows, (time.perf_counter() - started) * 1000)


def run_sql(
    settings: Settings,
    text: str,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout_ms: int | None = None,
    tenant: str | None = None,
) -> ReportResult:
    """Runs one ad-hoc read-only statement; at most ``max_rows`` rows come back.

    With ``tenant``, only that tenant's rows are visible to it (row-level security).
    """
    sqlcheck.check_read_only(text, "sql", strict=False)
    statement = sandbox.statement_text(text)
    limit = timeout_ms or settings.statement_timeout_ms
    started = time.perf_counter()
    with db.connect(settings) as conn:
        try:
            with sandbox.read_session(conn, limit, tenant=tenant) as session:
                result = session.query(statement, max_rows=max_rows)
        except psycopg.Error as exc:
            raise query_failure("the statement", exc, limit) from exc
    return ReportResult(
        result.columns, result.rows, (time.perf_counter() - started) * 1000, result.truncated
    )
