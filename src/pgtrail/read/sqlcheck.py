"""SQL text checks for reports and ad-hoc queries: psql variables and an allow-list.

``scan_psql_variables`` finds ``:name`` and ``:'name'`` outside literals and comments, the
way psql's lexer does. ``check_read_only`` is the first layer of the SQL sandbox: it parses
the text with PostgreSQL's own parser (pglast, the libpg_query binding), so identifiers come
back decoded (``U&"\\0070g_read_file"`` is ``pg_read_file``) and comments, dollar quotes and
semicolons inside strings are read exactly as the server reads them. It then accepts only
what is on an allow-list:

* exactly one plain query (SELECT, WITH ... SELECT, VALUES, set operations), without
  data-modifying CTEs, SELECT INTO or locking clauses;
* relations from a given list (pgtrail's tables and views), unqualified or qualified with
  the configured schema, and CTE names in scope;
* calls to curated built-in functions that neither have side effects nor run SQL given as
  text (no ``pg_*``, ``lo_*``, ``dblink*``, ``query_to_xml``, ``ts_stat``...);
* casts to built-in scalar types (no ``reg*`` types, which look up the catalogs);
* standard operator symbols, never ``OPERATOR(schema.op)`` outside ``pg_catalog``;
* expression node types known to be inert; anything else (XML, TABLESAMPLE...) is refused.

Known limit: a column reference written in functional notation (``t.somefunc``) calls a
function, and the parser cannot tell it from a column. The second layer covers it and
everything else a parser cannot see: the statement runs read-only, as a role that holds
only SELECT on the log tables, inside a SECURITY DEFINER function (:mod:`pgtrail.read.sandbox`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pgtrail.errors import ReportFileError

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT_CHARS = re.compile(r"[A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

DEFAULT_RELATIONS: frozenset[str] = frozenset(
    {
        "logs_execution",
        "logs_user_journey",
        "logs_agent_execution",
        "logs_llm_execution",
        "logs_execution_step",
        "pgtrail_model_price",
        "pgtrail_prompt",
        "pgtrail_rollup_llm",
        "pgtrail_rollup_llm_outcome",
        "pgtrail_rollup_horizon",
    }
)
"""The tables and views a query may read unless the caller says otherwise."""


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``: the allow-lists read best as prose."""
    return frozenset(text.split())


_READ_ONLY = "reports and `pgtrail sql` are read-only"

_AGGREGATES = """
count sum avg min max percentile_cont percentile_disc mode stddev stddev_pop stddev_samp
variance var_pop var_samp array_agg string_agg jsonb_agg jsonb_object_agg json_agg
json_object_agg bool_and bool_or every bit_and bit_or bit_xor corr covar_pop covar_samp
regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
any_value range_agg range_intersect_agg
"""
_WINDOW = """
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
nth_value
"""
_MATH = """
abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi
power radians round scale sign sqrt trim_scale trunc width_bucket random random_normal
acos acosd asin asind atan atan2 atan2d atand cos cosd cot cotd sin sind tan tand
sinh cosh tanh asinh acosh atanh erf erfc
"""
_STRING = """
lower upper length char_length character_length octet_length bit_length substr substring
left right position strpos replace split_part regexp_count regexp_instr regexp_like
regexp_match regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table
regexp_substr trim btrim ltrim rtrim lpad rpad concat concat_ws format md5 sha224 sha256
sha384 sha512 encode decode to_char to_number initcap repeat reverse starts_with translate
quote_literal quote_nullable quote_ident ascii chr overlay normalize is_normalized
unistr like_escape similar_to_escape similar_escape to_hex to_ascii string_to_table
convert_from convert_to get_byte get_bit bit_count crc32 crc32c
"""
_DATETIME = """
now current_date current_time current_timestamp localtime localtimestamp date_trunc
date_part extract date_bin age make_interval make_date make_time make_timestamp
make_timestamptz to_timestamp to_date justify_days justify_hours justify_interval isfinite
clock_timestamp statement_timestamp transaction_timestamp timeofday generate_series
timezone overlaps date_add date_subtract
"""
_JSON = """
to_json to_jsonb row_to_json array_to_json json_build_object jsonb_build_object
json_build_array jsonb_build_array json_object jsonb_object json_array_elements
jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_each
jsonb_each json_each_text jsonb_each_text json_object_keys jsonb_object_keys json_typeof
jsonb_typeof json_array_length jsonb_array_length json_extract_path jsonb_extract_path
json_extract_path_text jsonb_extract_path_text json_strip_nulls jsonb_strip_nulls
jsonb_pretty jsonb_set jsonb_set_lax jsonb_insert jsonb_concat json_populate_record
jsonb_populate_record json_populate_recordset jsonb_populate_recordset json_to_record
jsonb_to_record json_to_recordset jsonb_to_recordset jsonb_path_exists jsonb_path_match
jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_path_exists_tz
jsonb_path_match_tz jsonb_path_query_tz jsonb_path_query_array_tz jsonb_path_query_first_tz
json_scalar json_serialize jsonb_exists jsonb_exists_any jsonb_exists_all jsonb_contains
jsonb_contained
"""
_ARRAY = """
unnest array_length array_lower array_upper array_ndims array_dims cardinality
array_position array_positions array_remove array_replace array_to_string string_to_array
array_append array_prepend array_cat array_fill trim_array array_reverse array_sample
array_shuffle array_sort
"""
_OTHER = """
coalesce nullif greatest least num_nulls num_nonnulls gen_random_uuid uuid_extract_time
uuid_extract_version uuidv4 uuidv7 pg_typeof to_tsvector to_tsquery plainto_tsquery
phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd ts_headline setweight strip
numnode querytree tsvector_to_array array_to_tsvector ts_delete ts_filter length
bool int4 int8 numeric text float8
pgtrail_latency_bucket pgtrail_latency_value pgtrail_hist_percentile
"""
ALLOWED_FUNCTIONS: frozenset[str] = _words(
    " ".join((_AGGREGATES, _WINDOW, _MATH, _STRING, _DATETIME, _JSON, _ARRAY, _OTHER))
)
"""Built-in functions a query may call: no side effects, no SQL run from text."""

ALLOWED_TYPES: frozenset[str] = _words(
    """
    int int2 int4 int8 integer smallint bigint numeric decimal real float float4 float8
    text varchar char bpchar bool boolean date time timetz timestamp timestamptz interval
    uuid json jsonb jsonpath bytea tsvector tsquery
    """
)
"""Type names a cast may name (after ``pg_catalog.`` is stripped); arrays of them too."""

ALLOWED_OPERATORS: frozenset[str] = _words(
    """
    + - * / % ^ = <> != < > <= >= || ~ ~* !~ !~* ~~ ~~* !~~ !~~* -> ->> #> #>> #- @> <@
    ? ?| ?& @? @@ && & | # << >> @ |/ ||/
    BETWEEN NOT_BETWEEN BETWEEN_SYM NOT_BETWEEN_SYM
    """
) | {"NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC"}
"""Operator symbols (and the BETWEEN forms the parser spells as names)."""

_ALLOWED_VALUE_FUNCTIONS = frozenset(
    {
        "SVFOP_CURRENT_DATE",
        "SVFOP_CURRENT_TIME",
        "SVFOP_CURRENT_TIME_N",
        "SVFOP_CURRENT_TIMESTAMP",
        "SVFOP_CURRENT_TIMESTAMP_N",
        "SVFOP_LOCALTIME",
        "SVFOP_LOCALTIME_N",
        "SVFOP_LOCALTIMESTAMP",
        "SVFOP_LOCALTIMESTAMP_N",
    }
)

# Inert syntax: the nodes below only compute from their children, which are checked too.
_INERT_NODES = _words(
    """
    ResTarget ColumnRef A_Const A_Star A_Indirection A_Indices A_ArrayExpr BoolExpr NullTest
    BooleanTest CaseExpr CaseWhen CoalesceExpr MinMaxExpr SubLink RangeSubselect JoinExpr
    SortBy WindowDef Alias ColumnDef RowExpr GroupingSet GroupingFunc CollateClause ParamRef
    NamedArgExpr
    CTESearchClause CTECycleClause String Integer Float Boolean BitString
    JsonObjectConstructor JsonArrayConstructor JsonArrayQueryConstructor JsonAggConstructor
    JsonObjectAgg JsonArrayAgg JsonKeyValue JsonValueExpr JsonOutput JsonReturning JsonFormat
    JsonIsPredicate JsonParseExpr JsonScalarExpr JsonSerializeExpr JsonFuncExpr JsonBehavior
    JsonArgument
    """
)

_STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "CreateStmt": "CREATE",
    "CreateTableAsStmt": "CREATE",
    "ViewStmt": "CREATE VIEW",
    "DropStmt": "DROP",
    "TruncateStmt": "TRUNCATE",
    "CopyStmt": "COPY",
    "VariableSetStmt": "SET/RESET",
    "VariableShowStmt": "SHOW",
    "DoStmt": "DO",
    "CallStmt": "CALL",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "ExplainStmt": "EXPLAIN",
    "TransactionStmt": "a transaction command (BEGIN, COMMIT...)",
    "NotifyStmt": "NOTIFY",
    "ListenStmt": "LISTEN",
    "LockStmt": "LOCK",
    "GrantStmt": "GRANT",
    "GrantRoleStmt": "GRANT",
    "VacuumStmt": "VACUUM/ANALYZE",
    "DeclareCursorStmt": "DECLARE CURSOR",
    "LoadStmt": "LOAD",
    "DiscardStmt": "DISCARD",
    "CommentStmt": "COMMENT",
}

_NODE_NAMES = {
    "IntoClause": "SELECT INTO",
    "LockingClause": "a locking clause (FOR UPDATE/SHARE)",
    "XmlExpr": "an XML expression",
    "XmlSerialize": "XMLSERIALIZE",
    "RangeTableFunc": "XMLTABLE",
    "RangeTableSample": "TABLESAMPLE",
    "JsonTable": "JSON_TABLE",
}


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
    """Variables replaced by literals the parser accepts; newlines (line numbers) preserved."""
    parts: list[str] = []
    pos = 0
    for use in uses:
        parts.append(text[pos : use.start])
        parts.append("'0'" if use.quoted else "0")
        pos = use.end
    parts.append(text[pos:])
    return "".join(parts)


def _names(items: Iterable[Any] | None) -> list[str]:
    """The string values of a parser name list (``funcname``, ``names``, ``name``)."""
    return [str(getattr(item, "sval", "")) for item in items or ()]


def _children(node: Any) -> Iterable[Any]:
    """The nodes directly below ``node`` (lists flattened; scalars and enums skipped)."""
    from pglast import ast

    stack: list[Any] = [getattr(node, slot, None) for slot in node.__slots__]
    while stack:
        value = stack.pop(0)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, (list, tuple)):
            stack[:0] = list(value)


class _Checker:
    """Walks one parsed statement and raises at the first thing off the allow-lists."""

    def __init__(
        self, source: str, where: str, relations: frozenset[str], schema: str, start: int
    ) -> None:
        self.source = source
        self.start = start
        self.where = where
        self.relations = relations
        self.schema = schema

    def refuse(self, node: Any, message: str) -> ReportFileError:
        """The error for ``node``, at its own line or the first located line below it."""
        location = self._location(node)
        line = _line_at(self.source, self.start if location is None else location)
        return ReportFileError(self.where, line, message)

    def _location(self, node: Any) -> int | None:
        relation = getattr(node, "relation", None)
        for candidate in (node, relation):
            location = getattr(candidate, "location", None)
            if isinstance(location, int) and location >= 0:
                return location
        for child in _children(node):
            location = self._location(child)
            if location is not None:
                return location
        return None

    def statement(self, node: Any) -> None:
        """Checks the statement: it must be a query, and everything in it allowed."""
        kind = type(node).__name__
        if kind != "SelectStmt":
            what = _STATEMENT_NAMES.get(kind, f"a {kind.removesuffix('Stmt')} statement")
            raise self.refuse(
                node,
                f"{what} is not allowed: {_READ_ONLY}; only a query (SELECT, "
                "WITH ... SELECT, VALUES) is allowed",
            )
        self.visit(node, frozenset())

    def visit(self, node: Any, ctes: frozenset[str]) -> None:
        """Checks ``node`` and everything below it; ``ctes``: the CTE names in scope."""
        kind = type(node).__name__
        if kind == "SelectStmt":
            self._select(node, ctes)
            return
        if kind == "RangeVar":
            self._relation(node, ctes)
        elif kind == "FuncCall":
            self._function(node)
        elif kind == "TypeName":
            self._type(node)
        elif kind == "A_Expr":
            self._operator(node, node.name)
        elif kind == "SortBy" and node.useOp:
            self._operator(node, node.useOp)
        elif kind == "SubLink" and node.operName:
            self._operator(node, node.operName)
        elif kind == "SQLValueFunction":
            self._value_function(node)
        elif kind in _STATEMENT_NAMES:
            raise self.refuse(node, f"{_STATEMENT_NAMES[kind]} is not allowed: {_READ_ONLY}")
        elif kind not in _INERT_NODES and kind not in ("RangeFunction", "TypeCast"):
            what = _NODE_NAMES.get(kind, kind)
            raise self.refuse(node, f"{what} is not allowed: {_READ_ONLY}")
        for child in _children(node):
            self.visit(child, ctes)

    def _select(self, node: Any, ctes: frozenset[str]) -> None:
        if node.intoClause is not None:
            raise self.refuse(node.intoClause, f"SELECT INTO is not allowed: {_READ_ONLY}")
        if node.lockingClause:
            raise self.refuse(
                node, f"a locking clause (FOR UPDATE/SHARE) is not allowed: {_READ_ONLY}"
            )
        scope = self._with(node.withClause, ctes) if node.withClause else ctes
        for child in _children(node):
            if child is not node.withClause:
                self.visit(child, scope)

    def _with(self, clause: Any, ctes: frozenset[str]) -> frozenset[str]:
        """Checks the CTEs; returns the names in scope after them."""
        defined = [str(cte.ctename) for cte in clause.ctes]
        scope = set(ctes)
        for cte in clause.ctes:
            # A non-recursive CTE sees only those before it; its own name is the table.
            visible = ctes | set(defined) if clause.recursive else frozenset(scope)
            self.visit(cte.ctequery, frozenset(visible))
            for child in (cte.search_clause, cte.cycle_clause):
                if child is not None:
                    self.visit(child, frozenset(visible))
            scope.add(str(cte.ctename))
        return frozenset(scope)

    def _relation(self, node: Any, ctes: frozenset[str]) -> None:
        name = str(node.relname)
        qualified = ".".join(p for p in (node.catalogname, node.schemaname, name) if p)
        if node.catalogname is None and node.schemaname is None and name in ctes:
            return
        allowed_schema = node.catalogname is None and node.schemaname in (None, self.schema)
        if allowed_schema and name in self.relations:
            return
        raise self.refuse(
            node,
            f"reading {qualified} is not allowed: only the pgtrail tables and views "
            f"({', '.join(sorted(self.relations))}) may be read",
        )

    def _function(self, node: Any) -> None:
        parts = _names(node.funcname)
        name = ".".join(parts)
        bare = parts[-1] if len(parts) == 1 or parts[:-1] == ["pg_catalog"] else None
        if bare is None or bare not in ALLOWED_FUNCTIONS:
            raise self.refuse(
                node,
                f"calling {name}() is not allowed: {_READ_ONLY} and may call only "
                "allow-listed built-in functions",
            )

    def _type(self, node: Any) -> None:
        parts = _names(node.names)
        name = ".".join(parts)
        bare = parts[-1] if len(parts) == 1 or parts[:-1] == ["pg_catalog"] else None
        if node.setof or node.pct_type or bare is None or bare not in ALLOWED_TYPES:
            raise self.refuse(
                node,
                f"the type {name} is not allowed: casts may name only built-in scalar types "
                "(no reg* types)",
            )

    def _operator(self, node: Any, operator: Any) -> None:
        parts = _names(operator)
        name = ".".join(parts)
        symbol_ok = parts[-1] in ALLOWED_OPERATORS if parts else True
        schema_ok = len(parts) <= 1 or parts[:-1] == ["pg_catalog"]
        if not (symbol_ok and schema_ok):
            raise self.refuse(node, f"the operator {name} is not allowed: {_READ_ONLY}")

    def _value_function(self, node: Any) -> None:
        op = getattr(node.op, "name", str(node.op))
        if op not in _ALLOWED_VALUE_FUNCTIONS:
            what = op.removeprefix("SVFOP_").lower()
            raise self.refuse(node, f"{what} is not allowed: it reveals session details")


def _line_at(source: str, offset: int | None) -> int | None:
    """1-based line of a character offset (pglast gives character, not byte, offsets)."""
    if offset is None or offset < 0:
        return None
    return source.count("\n", 0, offset) + 1


def _first_token(source: str, offset: int) -> int:
    """The offset of the first token at or after ``offset`` (whitespace and comments skipped)."""
    n = len(source)
    while offset < n:
        if source[offset].isspace():
            offset += 1
        elif source.startswith("--", offset):
            end = source.find("\n", offset)
            offset = n if end < 0 else end
        elif source.startswith("/*", offset):
            offset = _skip_block_comment(source, offset)
        else:
            break
    return offset


def check_read_only(
    text: str,
    where: str,
    *,
    strict: bool = True,
    placeholders: Sequence[VariableUse] = (),
    relations: Collection[str] | None = None,
    schema: str = "public",
) -> None:
    """Raises unless ``text`` is exactly one query that uses only allow-listed things.

    Args:
        text: The SQL text as the user wrote it (psql variables included).
        where: Where the text comes from (a report file, ``sql``); starts each message.
        strict: Accepted for compatibility; saved reports and ``pgtrail sql`` get the same
            allow-list now.
        placeholders: The psql variable uses in ``text``; replaced by literals to parse.
        relations: The tables and views the query may read (default: pgtrail's own).
        schema: The schema name a relation may be qualified with.

    Raises:
        ReportFileError: The text has a NUL byte, does not parse, holds no statement or
            more than one, or uses something outside the allow-lists; ``line`` is 1-based.
    """
    del strict
    if "\x00" in text:
        # libpq would send only the text before it: the server must run what was checked.
        nul_line = text.count("\n", 0, text.index("\x00")) + 1
        raise ReportFileError(where, nul_line, "a NUL byte is not allowed in SQL text")
    # Imported here: most commands never parse SQL.
    from pglast import parse_sql
    from pglast.parser import ParseError

    source = _parse_text(text, placeholders)
    try:
        statements = parse_sql(source)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        raise ReportFileError(
            where, _line_at(source, offset), f"SQL does not parse: {exc.args[0]}"
        ) from None
    if not statements:
        raise ReportFileError(where, None, "no SQL statement found")
    if len(statements) > 1:
        second = _first_token(source, statements[1].stmt_location or 0)
        raise ReportFileError(
            where,
            _line_at(source, second),
            f"exactly one statement is allowed, found {len(statements)}",
        )
    allowed = frozenset(DEFAULT_RELATIONS if relations is None else relations)
    start = _first_token(source, statements[0].stmt_location or 0)
    checker = _Checker(source, where, allowed, schema, start)
    checker.statement(statements[0].stmt)
