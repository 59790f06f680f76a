"""psql parity: every saved report gives the same rows under the real psql binary.

``psql -X -v name=value -f queries/NAME.sql`` must return, cell for cell, what
``reports.run_report`` (the code behind ``pgtrail report run``) returns for the same parameter
values: with the defaults, with every parameter set, and with text values full of quotes,
backslashes and characters that mean something to psql.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

import test_reports_reference as reference
from pgtrail.config import Settings
from pgtrail.read import reports

NULL = "<NULL:7f3a>"  # psql's text for NULL in these runs; no value in the data looks like it
TRICKY = [
    "it's",
    "back\\slash\\",
    "'; DROP TABLE logs_agent_execution; --",
    ":'since' :until :\"x\" \\g \\! echo hi",
    "‘curly’ “quotes” ’",
    "semi;colon /* not a comment */ $$ $tag$",
]
PARITY_CASES: list[tuple[str, dict[str, str], str]] = [
    (name, reference.REQUIRED.get(name, {}), "defaults") for name in sorted(reference.CUSTOM)
] + [
    (name, params, f"custom{i}")
    for name, sets in sorted(reference.CUSTOM.items())
    for i, params in enumerate(sets)
]
PARITY_CASES += [
    ("decision-drift", {**reference.WINDOW, "agent_type": text, "tz": "UTC"}, f"tricky{i}")
    for i, text in enumerate(TRICKY)
]
PARITY_CASES += [
    ("user-journey", {**reference.WINDOW, "user_id": text}, f"tricky{i}")
    for i, text in enumerate(TRICKY)
]


def psql_binary() -> Path:
    """The psql client: on PATH, else in the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("psql")
    if found:
        return Path(found)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True)
    if candidates:
        return candidates[0]
    pytest.fail(
        "psql not found on PATH or in /usr/lib/postgresql/*/bin; the parity tests need the "
        "real client: install it with `apt-get install -y postgresql-client`"
    )


@pytest.fixture(scope="module")
def loaded(postgresql_server: Any) -> Iterator[Settings]:
    """A database holding the reference dataset."""
    with reference.scratch_database(postgresql_server) as settings:
        reference.insert(settings, reference.build_dataset())
        yield settings


def psql_values(report: reports.Report, given: Mapping[str, str]) -> dict[str, str]:
    """What a psql user passes with -v: every parameter, windows written as timestamps."""
    values: dict[str, str] = {}
    for param in report.params:
        raw = given.get(param.name, param.default)
        assert raw is not None, f"{report.name} needs {param.name}"
        if param.type == "timestamptz":
            raw = reports.parse_timestamptz(raw, now=reference.NOW).isoformat()
        values[param.name] = raw
    return values


def run_psql(
    settings: Settings, report: reports.Report, values: Mapping[str, str]
) -> list[list[str]]:
    """The report under psql: header and rows as psql prints them in CSV."""
    parts = conninfo_to_dict(settings.dsn)
    command = [
        str(psql_binary()),
        "-X",
        "--quiet",
        "--no-password",
        "--csv",
        "-v",
        "ON_ERROR_STOP=1",
        "-P",
        f"null={NULL}",
        "-h",
        str(parts["host"]),
        "-p",
        str(parts["port"]),
        "-U",
        str(parts["user"]),
        "-d",
        str(parts["dbname"]),
        "-f",
        str(report.path),
    ]
    for name, value in values.items():
        command += ["-v", f"{name}={value}"]
    env = {**os.environ, "PGTZ": "UTC", "PGCLIENTENCODING": "UTF8"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, f"psql failed for {report.name}: {done.stderr}"
    assert done.stderr == ""
    return list(csv.reader(io.StringIO(done.stdout)))


def as_psql_text(value: Any) -> str:
    """How psql prints a value the driver returned (JSON is compared parsed, see below)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC)
        text = utc.strftime("%Y-%m-%d %H:%M:%S")
        if utc.microsecond:
            text += f".{utc.microsecond:06d}".rstrip("0")
        return text + "+00"
    if isinstance(value, dt.date | uuid.UUID | int | float):
        return str(value)
    assert isinstance(value, str), f"unexpected value type {type(value).__name__}"
    return value


def same_cell(printed: str, value: Any) -> bool:
    """Whether psql's text for a cell is the driver's value."""
    if isinstance(value, dict | list):
        return bool(json.loads(printed) == value)
    return printed == as_psql_text(value)


def test_psql_is_the_real_client() -> None:
    done = subprocess.run(
        [str(psql_binary()), "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("psql (PostgreSQL)")


@pytest.mark.parametrize(
    ("name", "params", "label"), PARITY_CASES, ids=[f"{n}-{c}" for n, _, c in PARITY_CASES]
)
def test_psql_returns_what_report_run_returns(
    loaded: Settings, name: str, params: dict[str, str], label: str
) -> None:
    report = reports.load_catalog().get(name)
    ours = reports.run_report(loaded, report, params, now=reference.NOW)
    printed = run_psql(loaded, report, psql_values(report, params))
    assert printed[0] == ours.columns
    assert len(printed) - 1 == len(ours.rows)
    for number, (line, row) in enumerate(zip(printed[1:], ours.rows, strict=True)):
        mismatched = [
            (column, text, value)
            for column, text, value in zip(ours.columns, line, row, strict=True)
            if not same_cell(text, value)
        ]
        assert not mismatched, f"{name} ({label}) row {number}: {mismatched}"


def test_a_tricky_user_id_finds_that_users_rows_under_both(loaded: Settings) -> None:
    report = reports.load_catalog().get("user-journey")
    params = {**reference.WINDOW, "user_id": reference.ODD_USER}
    ours = reports.run_report(loaded, report, params, now=reference.NOW)
    printed = run_psql(loaded, report, psql_values(report, params))
    assert len(ours.rows) > 3
    assert len(printed) - 1 == len(ours.rows)
