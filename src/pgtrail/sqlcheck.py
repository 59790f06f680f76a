"""SQL text checks for reports and ad-hoc queries: psql variables and read-only statements.

``scan_psql_variables`` finds ``:name`` and ``:'name'`` outside literals and comments, the
way psql's lexer does. ``check_read_only`` parses with sqlglot (postgres dialect) and
refuses anything but one query. The READ ONLY transaction the statements run in is the real
guarantee; these checks give an early, precise error and close the gaps a read-only
transaction leaves open (``COPY ... TO PROGRAM``, ``dblink``, server file functions).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pgtrail.errors import ReportError

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT_CHARS = re.compile(r"[A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

_QUERY_ROOTS = ("Select", "Union", "Except", "Intersect", "Subquery", "Values")
_FORBIDDEN_NODES = {
    "Insert": "INSERT",
    "Update": "UPDATE",
    "Delete": "DELETE",
    "Merge": "MERGE",
    "Create": "CREATE",
    "Drop": "DROP",
    "Alter": "ALTER",
    "AlterTable": "ALTER",
    "TruncateTable": "TRUNCATE",
    "Copy": "COPY",
    "Set": "SET",
    "Command": "a command",
    "Into": "SELECT INTO",
    "Lock": "a locking clause (FOR UPDATE/SHARE)",
    "Transaction": "BEGIN",
    "Commit": "COMMIT",
    "Rollback": "ROLLBACK",
    "Grant": "GRANT",
    "Revoke": "REVOKE",
    "Use": "USE",
    "Analyze": "ANALYZE",
    "Comment": "COMMENT",
}
_NODE_KEYWORDS = {
    "Insert": ("INSERT",),
    "Update": ("UPDATE",),
    "Delete": ("DELETE",),
    "Merge": ("MERGE",),
    "Into": ("INTO",),
    "Lock": ("FOR",),
    "Copy": ("COPY",),
    "Set": ("SET",),
}
# Functions that change settings, reach outside the database or read server files.
_ALWAYS_FORBIDDEN = {
    "set_config",
    "setval",
    "nextval",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_create",
    "lo_from_bytea",
    "lo_put",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "database_to_xml",
    "txid_current",
    "pg_current_xact_id",
}
_ALWAYS_FORBIDDEN_PREFIXES = (
    "dblink",
    "pg_read_",
    "pg_ls_",
    "pg_stat_file",
    "pg_file_",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_advisory",
    "pg_try_advisory",
    "pg_notify",
    "pg_import_",
    "pg_log_",
    "pg_copy_",
    "pg_wal_replay_",
    "pg_stat_reset",
)


class ReportFileError(ReportError):
    """A malformed report file or refused statement; the message starts with ``file:line:``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(frozen=True)
class VariableUse:
    """One psql variable reference in the SQL text."""

    name: str
    quoted: bool
    start: int
    end: int
    line: int

    @property
    def text(self) -> str:
        """How it is written in the file."""
        return f":'{self.name}'" if self.quoted else f":{self.name}"


def _skip_block_comment(text: str, i: int) -> int:
    depth = 0
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _skip_quoted(text: str, i: int, quote: str, backslash: bool) -> int:
    """Index after the literal that opens at ``i`` (a doubled quote is a quote)."""
    n = len(text)
    i += 1
    while i < n:
        ch = text[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def scan_psql_variables(text: str, where: str) -> list[VariableUse]:
    """The psql variables used outside literals and comments, in order of appearance."""
    uses: list[VariableUse] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        elif ch == "'":
            escaped = i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            i = _skip_quoted(text, i, "'", backslash=escaped)
        elif ch == '"':
            i = _skip_quoted(text, i, '"', backslash=False)
        elif ch == "$" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            tag = _DOLLAR_TAG.match(text, i)
            if tag:
                close = text.find(tag.group(0), tag.end())
                i = n if close < 0 else close + len(tag.group(0))
            else:
                i += 1
        elif ch == ":":
            i = _scan_colon(text, i, where, uses)
        else:
            i += 1
    return uses


def _scan_colon(text: str, i: int, where: str, uses: list[VariableUse]) -> int:
    nxt = text[i + 1 : i + 2]
    line = text.count("\n", 0, i) + 1
    if nxt == ":":
        return i + 2
    if nxt == "'":
        close = text.find("'", i + 2)
        name = text[i + 2 : close] if close > 0 else ""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ReportFileError(
                where, line, f"bad psql variable :'{name}'; names are lower_snake_case"
            )
        uses.append(VariableUse(name, True, i, close + 1, line))
        return close + 1
    if nxt in ('"', "{"):
        raise ReportFileError(
            where,
            line,
            f"psql :{nxt}...{nxt if nxt == chr(34) else '}'} variables are not "
            "supported; use :'name' and a cast",
        )
    if nxt and _IDENT_START.match(nxt):
        ident = _IDENT_CHARS.match(text, i + 1)
        assert ident is not None
        name = ident.group(0)
        if name != name.lower():
            raise ReportFileError(where, line, f"psql variable :{name} must be lower case")
        uses.append(VariableUse(name, False, i, ident.end(), line))
        return ident.end()
    return i + 1


def to_driver_sql(text: str, uses: Sequence[VariableUse]) -> str:
    """The text with ``:'x'``/``:x`` turned into ``%(x)s`` and every other ``%`` doubled."""
    parts: list[str] = []
    pos = 0
    for use in uses:
        parts.append(text[pos : use.start].replace("%", "%%"))
        parts.append(f"%({use.name})s")
        pos = use.end
    parts.append(text[pos:].replace("%", "%%"))
    return "".join(parts)


def _parse_text(text: str, uses: Sequence[VariableUse]) -> str:
    """Variables replaced by literals sqlglot can parse; newlines (line numbers) preserved."""
    parts: list[str] = []
    pos = 0
    for use in uses:
        parts.append(text[pos : use.start])
        parts.append("'0'" if use.quoted else "0")
        pos = use.end
    parts.append(text[pos:])
    return "".join(parts)


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning when it falls back to a Command; the check reports it instead."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _function_name(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


def forbidden_function(name: str, *, strict: bool) -> bool:
    """Whether a call to ``name`` is refused (``strict``: saved reports; no ``pg_*`` at all)."""
    if name in _ALWAYS_FORBIDDEN or name.startswith(_ALWAYS_FORBIDDEN_PREFIXES):
        return True
    return strict and (name.startswith(("pg_", "lo_")) or name == "current_setting")


def check_read_only(
    text: str,
    where: str,
    *,
    strict: bool,
    placeholders: Sequence[VariableUse] = (),
) -> None:
    """Raises unless ``text`` is exactly one read-only query (SELECT / WITH / VALUES)."""
    if "\x00" in text:
        # libpq would send only the text before it: the server must run what was checked.
        nul_line = text.count("\n", 0, text.index("\x00")) + 1
        raise ReportFileError(where, nul_line, "a NUL byte is not allowed in SQL text")
    # Imported here: sqlglot takes a second to import, and most commands never parse SQL.
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    source = _parse_text(text, placeholders)
    tokens: list[Any] = []
    with _quiet_sqlglot():
        try:
            tokens = list(sqlglot.Dialect.get_or_raise("postgres").tokenize(source))
            statements = [s for s in sqlglot.parse(source, read="postgres") if s is not None]
        except ParseError as exc:
            first = exc.errors[0] if exc.errors else {}
            line = first.get("line")
            detail = first.get("description") or str(exc).splitlines()[0]
            raise ReportFileError(where, line, f"SQL does not parse: {detail}") from None
        except TokenError as exc:
            raise ReportFileError(where, None, f"SQL does not parse: {exc}") from None
    if not statements:
        raise ReportFileError(where, None, "no SQL statement found")
    if len(statements) > 1:
        raise ReportFileError(
            where,
            _second_statement_line(tokens),
            f"exactly one statement is allowed, found {len(statements)}",
        )
    statement = statements[0]
    for node in statement.walk():
        kind = type(node).__name__
        if kind in _FORBIDDEN_NODES:
            raise ReportFileError(
                where,
                _line_of(node, tokens),
                f"{_FORBIDDEN_NODES[kind]} is not allowed: reports and `pgtrail sql` are read-only",
            )
        name = _function_name(node)
        if name and forbidden_function(name, strict=strict):
            raise ReportFileError(
                where, _line_of(node, tokens), f"calling {name}() is not allowed here"
            )
    if type(statement).__name__ not in _QUERY_ROOTS:
        raise ReportFileError(
            where,
            _line_of(statement, tokens),
            "only a query (SELECT, WITH ... SELECT, VALUES) is allowed",
        )


def _second_statement_line(tokens: Sequence[Any]) -> int | None:
    seen_semicolon = False
    for token in tokens:
        if token.token_type.name == "SEMICOLON":
            seen_semicolon = True
        elif seen_semicolon:
            return int(token.line)
    return None


def _line_of(node: Any, tokens: Sequence[Any]) -> int | None:
    """Best line for an error about ``node`` (a sqlglot node; its base class moved across
    versions, hence ``Any``): its own position, a keyword's, or a child's."""
    line = node.meta.get("line") if node.meta else None
    if line:
        return int(line)
    for keyword in _NODE_KEYWORDS.get(type(node).__name__, ()):
        for token in tokens:
            if str(token.text).upper() == keyword:
                return int(token.line)
    for child in node.walk():
        if child.meta and child.meta.get("line"):
            return int(child.meta["line"])
    return int(tokens[0].line) if tokens else None
