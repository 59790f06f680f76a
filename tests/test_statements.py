"""The SQL statement files: every block parses, prepares, is used, and names are unique."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pglast.parser import ParseError, parse_sql
from psycopg import pq

from pgtrail.statements import STATEMENTS, StatementFileError, load, parse

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pgtrail"
_PLACEHOLDER = re.compile(r"%\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)s|%s|%%")
_LOOKUP = re.compile(r"""STATEMENTS\[\s*["'](?P<name>[^"']+)["']\s*\]""")


def server_text(text: str) -> str:
    """The statement with psycopg's placeholders as the server's ``$1``, ``$2``... and
    ``%%`` as ``%``; a named placeholder keeps one number wherever it is used."""
    numbers: dict[str, int] = {}
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match[0] == "%%":
            return "%"
        if match["name"] is not None and match["name"] in numbers:
            return f"${numbers[match['name']]}"
        count += 1
        if match["name"] is not None:
            numbers[match["name"]] = count
        return f"${count}"

    return _PLACEHOLDER.sub(number, text)


def _sources() -> dict[Path, str]:
    """The package's Python files, but the loader's own."""
    return {
        path: path.read_text(encoding="utf-8")
        for path in PACKAGE.rglob("*.py")
        if path.parent.name != "statements"
    }


def test_the_statement_files_ship_inside_the_package() -> None:
    files = {p.name for p in (PACKAGE / "statements").glob("*.sql")}
    assert {"ops.sql", "read.sql", "writer.sql"} <= files
    assert {STATEMENTS.statement(name).source for name in STATEMENTS} == files


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_statement_is_one_statement_pglast_parses(name: str) -> None:
    text = STATEMENTS[name]
    assert text == text.strip() and not text.endswith(";")
    try:
        statements = parse_sql(server_text(text))
    except ParseError as exc:
        pytest.fail(f"{name} does not parse: {exc}")
    assert len(statements) == 1, f"{name} holds {len(statements)} statements"


def test_every_statement_prepares_against_the_migrated_schema(
    postgresql: psycopg.Connection[Any],
) -> None:
    pgconn = postgresql.pgconn
    refused = []
    for name in STATEMENTS:
        result = pgconn.prepare(b"", server_text(STATEMENTS[name]).encode("utf-8"))
        if result.status != pq.ExecStatus.COMMAND_OK:
            refused.append(f"{name}: {(result.error_message or b'').decode().strip()}")
    assert refused == []


def test_every_statement_is_used_in_the_package() -> None:
    text = "\n".join(_sources().values())
    unused = [name for name in STATEMENTS if f'"{name}"' not in text]
    assert unused == []


def test_every_statement_the_package_looks_up_exists() -> None:
    missing = [
        f"{path.relative_to(PACKAGE)}: {match['name']}"
        for path, text in _sources().items()
        for match in _LOOKUP.finditer(text)
        if match["name"] not in STATEMENTS
    ]
    assert missing == []


def test_names_are_unique_across_the_files(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: other\nSELECT 2;\n\n-- name: same\nSELECT 3;\n")
    with pytest.raises(
        StatementFileError, match=r"b\.sql:4: statement same is already named at a\.sql:1"
    ):
        load(tmp_path)


def test_a_file_of_blocks_loads_with_descriptions_and_without_semicolons(tmp_path: Path) -> None:
    (tmp_path / "x.sql").write_text(
        "-- A header comment belongs to no block.\n\n"
        "-- name: first\n-- What it does,\n-- on two lines.\nSELECT %s\nFROM t;\n\n"
        "-- name: second\nSELECT 'a;b' AS x;\n"
    )
    (tmp_path / "notes.txt").write_text("-- name: ignored\nSELECT 1;\n")
    found = load(tmp_path)
    assert list(found) == ["first", "second"]
    assert found["first"] == "SELECT %s\nFROM t"
    assert found["second"] == "SELECT 'a;b' AS x"
    first = found.statement("first")
    assert (first.description, first.source, first.line) == (
        "What it does, on two lines.",
        "x.sql",
        3,
    )
    assert "first" in found and "third" not in found and len(found) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: empty\n\n-- name: next\nSELECT 1;\n", r"x\.sql:1: statement empty is empty"),
        (
            "-- name: only_comments\n-- a description\n",
            r"x\.sql:1: statement only_comments is empty",
        ),
        ("-- name: just_semicolon\n;\n", r"x\.sql:1: statement just_semicolon is empty"),
        ("-- name: open\nSELECT 1\n", r"x\.sql:1: statement open must end with a semicolon"),
        ("-- name: tail\nSELECT 1;\n-- trailing\n", r"statement tail must end with a semicolon"),
        ("SELECT 1;\n-- name: late\nSELECT 2;\n", r"x\.sql:1: SQL before the first"),
        ("-- name: Bad-Name\nSELECT 1;\n", r"x\.sql:1: statement name 'Bad-Name'"),
        ("-- name:\nSELECT 1;\n", r"x\.sql:1: statement name ''"),
        ("-- name: two words\nSELECT 1;\n", r"x\.sql:1: statement name 'two words'"),
    ],
)
def test_malformed_files_are_refused_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(StatementFileError, match=message):
        parse(text, "x.sql")


def test_an_unknown_name_raises_a_key_error_naming_the_close_ones() -> None:
    with pytest.raises(
        KeyError,
        match="no SQL statement named 'tenancy_grant_insrt'; did you mean tenancy_grant_insert",
    ):
        STATEMENTS["tenancy_grant_insrt"]
    with pytest.raises(KeyError, match=r"no SQL statement named 'zzz'\"?$"):
        STATEMENTS["zzz"]


def test_server_text_numbers_the_placeholders() -> None:
    assert server_text("SELECT %s, %s") == "SELECT $1, $2"
    assert server_text("%(a)s %(b)s %(a)s LIKE 'x%%'") == "$1 $2 $1 LIKE 'x%'"
