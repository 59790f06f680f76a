"""The read sandbox: where untrusted SQL and every tenant-scoped read run.

Two layers, each meant to stop the known attacks alone. ``sqlcheck`` checks untrusted text
with PostgreSQL's own parser against an allow-list before it gets here. Then this module runs
every read so that a hole in the check still cannot hurt:

- inside ``pgtrail_sandbox_query()`` (``schema/0004_read_sandbox.sql``), a SECURITY DEFINER
  function owned by ``pgtrail_reader``, a role holding nothing but SELECT on the log tables
  and views. PostgreSQL refuses SET ROLE inside such a function, so a query cannot climb back
  to the owner or superuser the CLI connected as;
- with the tenant bound by a token signed for this backend and this transaction, which a
  query can overwrite but not forge (``--tenant`` cannot be escaped); without ``--tenant``,
  the owner's reads are signed for every tenant;
- in a READ ONLY transaction that is always rolled back, under the statement timeout, with
  the rows limited inside the server and streamed from a server-side cursor, so ``max_rows``
  bounds memory on both sides.

A role that does not bypass row-level security and may not sign tokens (a role per tenant)
reads with its own rights, which is all it has anyway; ``--tenant`` then narrows its view
with the ``pgtrail.tenant`` setting. Values for placeholders are carried in one ``jsonb``
parameter and cast where they are used: bound by the driver, never pasted into the SQL.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.types.json import Jsonb

from pgtrail.errors import SandboxError
from pgtrail.ops import tenancy
from pgtrail.statements import STATEMENTS

READER_ROLE = "pgtrail_reader"
"""The role the sandbox runs queries as: SELECT on the log tables and views, nothing else."""
SANDBOX_FUNCTION = "pgtrail_sandbox_query(text, jsonb, bigint)"
SCOPE_SETTING = "pgtrail.sandbox"
_PARAMS = "pgtrail_params"
_LIMIT = "pgtrail_limit"
_JSONB_OID = 3802
_FETCH_CHUNK = 2000
_PLACEHOLDER = re.compile(r"%\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)s|%%")


class Mode(enum.Enum):
    """How a read session runs its queries."""

    SANDBOX = "sandbox"
    """Inside ``pgtrail_sandbox_query()`` as ``pgtrail_reader``, with a signed tenant scope."""
    OWN_RIGHTS = "own rights"
    """As the connected role, which row-level security already binds."""


@dataclass(frozen=True)
class QueryResult:
    """The columns and rows of one read.

    Attributes:
        columns: column names in order (duplicates kept).
        rows: the rows, at most ``max_rows`` of them.
        truncated: whether more rows than ``max_rows`` existed.
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name (a later duplicate wins)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class BoundQuery:
    """A statement with its placeholders turned into casts of one ``jsonb`` parameter.

    Attributes:
        server_text: the text as the server runs it, the parameter written ``$1``.
        driver_text: the same for psycopg, the parameter written ``%(pgtrail_params)s``.
        params: the values, as text, keyed by placeholder name.
    """

    server_text: str
    driver_text: str
    params: dict[str, Any]


def _sql_type(value: object) -> str:
    """The PostgreSQL type a Python value is bound as (psycopg's choices, spelled out)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return "integer"
        return "bigint" if -(2**63) <= value < 2**63 else "numeric"
    if isinstance(value, Decimal):
        return "numeric"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, uuid.UUID):
        return "uuid"
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.timedelta):
        return "interval"
    return "text"


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds()} seconds"
    return str(value)


def bind(text: str, params: Mapping[str, object] | None) -> BoundQuery:
    """Turns psycopg's ``%(name)s`` placeholders into casts of one ``jsonb`` parameter.

    Args:
        text: a statement in psycopg's named-placeholder form (``%%`` is a literal ``%``),
            or, when ``params`` is None, a statement as the server should see it.
        params: the value of each placeholder: str, int, Decimal, float, bool, UUID, date,
            datetime, timedelta, None, or a list of one of those (bound as an array).

    Raises:
        SandboxError: a placeholder has no value.
    """
    if params is None:
        return BoundQuery(text, text.replace("%", "%%"), {})
    values: dict[str, Any] = {}
    server: list[str] = []
    driver: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        server.append(text[pos : match.start()])
        driver.append(text[pos : match.start()].replace("%", "%%"))
        pos = match.end()
        name = match["name"]
        if name is None:
            server.append("%")
            driver.append("%%")
            continue
        if name not in params:
            raise SandboxError(f"no value for the placeholder %({name})s")
        expr = _expression(name, params[name], values)
        server.append(expr.format(param="$1"))
        driver.append(expr.format(param=f"%({_PARAMS})s"))
    server.append(text[pos:])
    driver.append(text[pos:].replace("%", "%%"))
    return BoundQuery("".join(server), "".join(driver), values)


def _expression(name: str, value: object, values: dict[str, Any]) -> str:
    """The SQL reading ``name`` from the parameter (``{param}`` stands for it)."""
    key = f"'{name}'"  # a placeholder name is [A-Za-z0-9_]: nothing to escape
    if isinstance(value, list | tuple):
        kinds = {_sql_type(v) for v in value if v is not None}
        kind = kinds.pop() if len(kinds) == 1 else "text"
        values[name] = [_as_text(v) for v in value]
        return f"(ARRAY(SELECT jsonb_array_elements_text({{param}} -> {key})))::{kind}[]"
    values[name] = _as_text(value)
    return f"(({{param}} ->> {key})::{_sql_type(value)})"


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class _Probe:
    """The row of the ``sandbox_probe`` statement: its columns, in order."""

    user: str
    tables: bool
    bound: bool
    installed: bool
    safe: bool
    may_run: bool
    may_sign_all: bool
    may_sign_tenant: bool


def configure_read_only(conn: psycopg.Connection[Any], timeout_ms: int) -> None:
    """Makes the open transaction one read-only snapshot with ``timeout_ms`` per statement.

    Args:
        conn: a connection inside a transaction that has run nothing yet.
        timeout_ms: statement_timeout for every statement of the transaction, in ms.
    """
    # One snapshot for every statement in it: a trace or a set of alert rules read
    # several tables and must see them as of the same moment.
    conn.execute(STATEMENTS["sandbox_read_only"])
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
    # JIT-compiling a report's plan costs more than running it (seconds at 1M rows).
    conn.execute(STATEMENTS["sandbox_jit_off"])
    # Reports sort and hash up to a million rows; at the default 4MB work_mem those spill
    # to disk. Raised for this transaction only, and never lowered below the server's.
    conn.execute(STATEMENTS["sandbox_work_mem"])


class ReadSession:
    """Reads inside one sandboxed, read-only transaction; made by :func:`read_session`."""

    def __init__(self, conn: psycopg.Connection[Any], mode: Mode) -> None:
        self._conn = conn
        self.mode = mode

    def query(
        self,
        text: str,
        params: Mapping[str, object] | None = None,
        *,
        max_rows: int | None = None,
    ) -> QueryResult:
        """Runs one read-only statement and returns at most ``max_rows`` rows.

        Args:
            text: one SELECT/WITH/VALUES statement, without a trailing semicolon; with
                ``params``, in psycopg's ``%(name)s`` form.
            params: values for the placeholders (see :func:`bind`); None for a statement
                with none (a ``%`` in it is then an ordinary character).
            max_rows: the most rows to return; None for all, streamed in chunks.

        Raises:
            psycopg.Error: the server refused or cancelled the statement.
            SandboxError: the statement returns no columns.
        """
        bound = bind(text, params)
        limit = None if max_rows is None else max_rows + 1
        names: list[str] | None = None
        if self.mode is Mode.SANDBOX:
            names, statement, values = self._sandboxed(bound, limit)
        else:
            statement = (
                f"SELECT * FROM ({bound.driver_text}\n) AS pgtrail_sandboxed LIMIT %({_LIMIT})s"
            )
            values = {_PARAMS: Jsonb(bound.params), _LIMIT: limit}
        with self._conn.cursor(name="pgtrail_read") as cur:
            cur.itersize = _FETCH_CHUNK
            cur.execute(statement.encode("utf-8"), values)
            rows: list[tuple[Any, ...]] = []
            while limit is None or len(rows) < limit:
                chunk = cur.fetchmany(_FETCH_CHUNK if limit is None else limit - len(rows))
                if not chunk:
                    break
                rows.extend(tuple(r) for r in chunk)
            columns = names or [c.name for c in cur.description or []]
        truncated = max_rows is not None and len(rows) > max_rows
        return QueryResult(columns, rows[:max_rows] if truncated else rows, truncated)

    def _sandboxed(
        self, bound: BoundQuery, limit: int | None
    ) -> tuple[list[str], str, dict[str, Any]]:
        """Column names, and the call of the sandbox function with the record they make."""
        names, types = self._describe(bound.server_text)
        text = bound.server_text
        if any(kind is None for kind in types):
            # A record or void cannot be a column of the result record: such columns
            # leave the sandbox as their text (what psql shows for them).
            aliases = ", ".join(f"c{i}" for i in range(1, len(types) + 1))
            select = ", ".join(
                f"c{i}::text" if kind is None else f"c{i}" for i, kind in enumerate(types, 1)
            )
            text = f"SELECT {select} FROM ({text}\n) AS pgtrail_columns ({aliases})"
        columns = ", ".join(f"c{i} {kind or 'text'}" for i, kind in enumerate(types, start=1))
        statement = (
            f"SELECT * FROM pgtrail_sandbox_query(%(q)s, %({_PARAMS})s, %({_LIMIT})s) "
            f"AS pgtrail_result ({columns})"
        )
        return names, statement, {"q": text, _PARAMS: Jsonb(bound.params), _LIMIT: limit}

    def _describe(self, server_text: str) -> tuple[list[str], list[str | None]]:
        """Column names and SQL types of a statement, from the server's parser (not run).

        A pseudo-type (record, void) is given as None.
        """
        pgconn = self._conn.pgconn
        encoding = self._conn.info.encoding
        prepared = pgconn.prepare(b"", server_text.encode(encoding), [_JSONB_OID])
        _raise_for(prepared, encoding)
        described = pgconn.describe_prepared(b"")
        _raise_for(described, encoding)
        names = [
            (described.fname(i) or b"?column?").decode(encoding) for i in range(described.nfields)
        ]
        if not names:
            raise SandboxError("the statement returns no columns; only a query can run here")
        oids = [described.ftype(i) for i in range(described.nfields)]
        mods = [described.fmod(i) for i in range(described.nfields)]
        rows = self._conn.execute(STATEMENTS["sandbox_column_types"], (oids, mods)).fetchall()
        return names, [None if r[0] is None else str(r[0]) for r in rows]


def _raise_for(result: pq.abc.PGresult, encoding: str) -> None:
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=encoding)


@contextmanager
def read_session(
    conn: psycopg.Connection[Any], timeout_ms: int, *, tenant: str | None = None
) -> Iterator[ReadSession]:
    """A sandboxed read-only transaction on ``conn``, rolled back when it ends.

    Args:
        conn: an autocommit connection with ``search_path`` on the pgtrail schema.
        timeout_ms: statement_timeout of every statement, in ms.
        tenant: show only this tenant's rows, bound so no query can change it.

    Raises:
        SandboxError: the sandbox is missing or unsafe and the connected role would read
            with more rights than ``pgtrail_reader``; the message says what to run.
        TenancyError: ``tenant`` cannot be applied (bad id, no row-level security, or a
            role that may not read it).
    """
    if tenant is not None:
        tenancy.check_tenant(tenant)
    with conn.transaction(force_rollback=True):
        configure_read_only(conn, timeout_ms)
        probe = _Probe(
            *conn.execute(
                STATEMENTS["sandbox_probe"], {"fn": SANDBOX_FUNCTION, "reader": READER_ROLE}
            ).fetchone()
            or ()
        )
        mode = _choose(conn, probe, tenant)
        yield ReadSession(conn, mode)


def _choose(conn: psycopg.Connection[Any], probe: _Probe, tenant: str | None) -> Mode:
    """Binds the transaction's scope and says how its queries run."""
    if tenant is not None:
        tenancy.require_isolation(conn)
    if not probe.tables:
        raise SandboxError("the pgtrail log tables were not found; run `pgtrail migrate`")
    usable = probe.installed and probe.safe and probe.may_run
    if tenant is not None and usable and probe.may_sign_tenant:
        token = conn.execute(STATEMENTS["sandbox_bind_tenant"], (tenant,)).fetchone()
        conn.execute(STATEMENTS["tenancy_set_local"], (SCOPE_SETTING, token[0] if token else ""))
        return Mode.SANDBOX
    if not probe.bound:
        if usable and probe.may_sign_all:
            token = conn.execute(STATEMENTS["sandbox_bind_all"]).fetchone()
            conn.execute(
                STATEMENTS["tenancy_set_local"], (SCOPE_SETTING, token[0] if token else "")
            )
            return Mode.SANDBOX
        raise SandboxError(_not_installed(probe))
    if tenant is not None:
        tenancy.narrow_to_tenant(conn, tenant, probe.user)
    return Mode.OWN_RIGHTS


def problem(conn: psycopg.Connection[Any]) -> str | None:
    """Why reads as the connected role cannot run sandboxed, or None when they can.

    Args:
        conn: an autocommit connection with ``search_path`` on the pgtrail schema.
    """
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            STATEMENTS["sandbox_probe"], {"fn": SANDBOX_FUNCTION, "reader": READER_ROLE}
        ).fetchone()
    probe = _Probe(*(row or ()))
    if not probe.tables:
        return "the pgtrail log tables were not found; run `pgtrail migrate`"
    if probe.bound or (probe.installed and probe.safe and probe.may_run and probe.may_sign_all):
        return None
    return _not_installed(probe)


def _not_installed(probe: _Probe) -> str:
    if not probe.installed:
        what = "pgtrail_sandbox_query() does not exist; run `pgtrail migrate`"
    elif not probe.safe:
        what = (
            f"pgtrail_sandbox_query() is not owned by a safe {READER_ROLE} role (one that is "
            "no superuser, has no BYPASSRLS and is no member of the tables' owner); as the "
            f"owner run `pgtrail tenant setup`, and if it says so, as an administrator: "
            f"GRANT {READER_ROLE} TO {probe.user}; then `pgtrail tenant setup` again"
        )
    else:
        what = (
            f"role {probe.user} may not run it; as the owner of the tables run "
            f"GRANT EXECUTE ON FUNCTION pgtrail_sandbox_query(text, jsonb, bigint) TO {probe.user}"
        )
    return (
        f"role {probe.user} bypasses row-level security (it owns the tables or is a "
        f"superuser), so its reads must run in the read sandbox, which is not ready: {what}"
    )


def statement_span(text: str) -> tuple[int, int]:
    """Where the one statement in ``text`` starts and ends, as character offsets.

    The span leaves out the semicolon and any comment after it, so the statement can be
    wrapped as a subquery.

    Args:
        text: SQL text already checked to hold exactly one statement.

    Raises:
        SandboxError: the text does not hold exactly one statement.
    """
    from pglast.parser import ParseError, parse_sql  # here: most commands never parse SQL

    try:
        statements = parse_sql(text)
    except ParseError as exc:
        raise SandboxError(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise SandboxError(f"exactly one statement is allowed, found {len(statements)}")
    encoded = text.encode("utf-8")
    start = statements[0].stmt_location or 0
    end = start + statements[0].stmt_len if statements[0].stmt_len else len(encoded)
    # The parser counts bytes; Python slices characters.
    return len(encoded[:start].decode("utf-8")), len(encoded[:end].decode("utf-8"))


def statement_text(text: str) -> str:
    """The one statement in ``text``, without the semicolon or comments after it.

    Args:
        text: SQL text already checked to hold exactly one statement.

    Raises:
        SandboxError: the text does not hold exactly one statement.
    """
    start, end = statement_span(text)
    return text[start:end]
