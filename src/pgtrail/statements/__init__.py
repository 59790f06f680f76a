"""The fixed SQL statements pgtrail runs, read from the ``*.sql`` files of this package.

Each file holds named blocks: a ``-- name: some_name`` line, optional ``--`` comment lines
describing the statement, then one statement ending with a semicolon::

    -- name: partitions_ensure
    -- Creates the missing daily partitions of every log table between two dates.
    SELECT pgtrail_ensure_partitions(%s, %s);

The text is sent as written, without the final semicolon (a read is wrapped as a subquery
in the sandbox), and keeps psycopg's placeholders (``%s``, ``%(name)s``, ``%%``): values
are bound by the driver, never pasted in. Statements whose text is built at run time, from
identifiers (partition and role names, column lists) or from user SQL, stay in Python.

The files are: ``ops.sql`` (migrations, partitions, retention, tenants), ``read.sql`` (the
read sandbox, traces, journeys, alert rules), ``writer.sql`` (the batch writer and its
price table), ``cli.sql`` (``pgtrail doctor``), ``client.sql`` (a late join's look-up of a
finished execution), ``otlp.sql`` (the OTLP receiver's span journal), ``webhooks.sql``
(the notices of ``pgtrail check --webhook``), ``ui.sql`` (the pages of ``pgtrail ui``)
and ``demo.sql`` (the demo loader). Names are unique across the files and start with the
module that runs them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import LiteralString

from pgtrail.errors import PgtrailError

_NAME_LINE = re.compile(r"^--\s*name:(?P<name>.*)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class StatementFileError(PgtrailError):
    """A statement file is malformed: a bad or repeated name, an empty or unterminated block."""


@dataclass(frozen=True)
class Statement:
    """One named block of a statement file.

    Attributes:
        name: the block's name, unique across the files.
        text: the statement as sent to PostgreSQL (no final semicolon).
        description: the comment lines after the name line, joined by spaces.
        source: the file the block is in.
        line: the line of its ``-- name:`` comment, from 1.
    """

    name: str
    text: LiteralString
    description: str
    source: str
    line: int


def parse(text: str, source: str) -> list[Statement]:
    """The named blocks of one statement file, in file order.

    Args:
        text: the content of the file.
        source: the file's name, for error messages.

    Raises:
        StatementFileError: SQL before the first name line, a malformed name, a block with
            no statement, or a statement that does not end with a semicolon.
    """
    blocks: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _NAME_LINE.match(line)
        if match:
            name = match["name"].strip()
            if not _NAME.match(name):
                raise StatementFileError(
                    f"{source}:{number}: statement name {name!r} must be lower_snake_case"
                )
            blocks.append((name, number, []))
        elif blocks:
            blocks[-1][2].append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise StatementFileError(
                f"{source}:{number}: SQL before the first '-- name:' line belongs to no statement"
            )
    return [_statement(name, number, lines, source) for name, number, lines in blocks]


def _statement(name: str, number: int, lines: list[str], source: str) -> Statement:
    description: list[str] = []
    while lines and lines[0].lstrip().startswith("--"):
        description.append(lines.pop(0).lstrip()[2:].strip())
    body = "\n".join(lines).strip()
    if not body:
        raise StatementFileError(f"{source}:{number}: statement {name} is empty")
    if not body.endswith(";"):
        raise StatementFileError(
            f"{source}:{number}: statement {name} must end with a semicolon (and nothing after)"
        )
    body = body[:-1].rstrip()
    if not body:
        raise StatementFileError(f"{source}:{number}: statement {name} is empty")
    # The one place a str becomes the LiteralString psycopg asks for: the text comes from
    # files shipped inside the package, never from input, so it is as fixed as a literal
    # in the code. (mypy treats LiteralString as str, so no cast is needed or allowed.)
    text: LiteralString = body
    return Statement(name, text, " ".join(description), source, number)


class Statements(Mapping[str, LiteralString]):
    """Statement texts by name; an unknown name raises a KeyError naming the close ones.

    Args:
        statements: the blocks of every file; their names must be unique.

    Raises:
        StatementFileError: two blocks have the same name.
    """

    def __init__(self, statements: list[Statement]) -> None:
        self._by_name: dict[str, Statement] = {}
        for statement in statements:
            first = self._by_name.get(statement.name)
            if first is not None:
                raise StatementFileError(
                    f"{statement.source}:{statement.line}: statement {statement.name} is "
                    f"already named at {first.source}:{first.line}"
                )
            self._by_name[statement.name] = statement

    def __getitem__(self, name: str) -> LiteralString:
        return self.statement(name).text

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def statement(self, name: str) -> Statement:
        """The block named ``name``, with its description and where it is.

        Args:
            name: the block's name.

        Raises:
            KeyError: no block has this name; the message names the closest ones.
        """
        try:
            return self._by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._by_name, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no SQL statement named {name!r}{hint}") from None


def load(folder: Traversable | None = None) -> Statements:
    """Reads every ``*.sql`` file of ``folder`` (by default this package's own).

    Args:
        folder: where the files are; a directory, or a package's resources (in a wheel too).

    Raises:
        StatementFileError: a file is malformed or two blocks share a name.
    """
    where = folder if folder is not None else resources.files(__name__)
    files = sorted(
        (entry for entry in where.iterdir() if entry.is_file() and entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    found: list[Statement] = []
    for entry in files:
        found.extend(parse(entry.read_text(encoding="utf-8"), entry.name))
    return Statements(found)


STATEMENTS = load()
"""Every statement shipped with pgtrail, by name."""
