"""``pgtrail report list|show|run`` and ``pgtrail sql``: every format, and errors that help."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pgtrail
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops.devservices import free_port
from pgtrail.read.render import json_text, rows_csv, rows_markdown, unique_names
from pgtrail.resources import queries_dir

runner = CliRunner()

# (agent, cost, latency ms, outcome) of the calls logged 3 days ago; one more call 10 days ago.
CALLS = [
    ("coaching", "0.061230", 25937, "llm_valid_execution"),
    ("coaching", "0.000012", 1200, "llm_valid_execution"),
    ("coaching", "0.5", 900, "llm_timeout"),
    ("selling", "0.25", 3000, "llm_valid_execution"),
]
OLD_CALL = ("archive", "7.0", 100, "llm_valid_execution")


def cli(settings: Settings, *args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, ["--dsn", settings.dsn, "--redis-url", "off", *args], **kwargs)


def log_calls(settings: Settings, at: dt.datetime, calls: list[tuple[str, str, int, str]]) -> None:
    with (
        Trail(
            settings.model_copy(update={"redis_url": None}), sync=True, clock=lambda: at
        ) as trail,
        trail.execution("001 Main", user_id="57", session_id="s-1"),
    ):
        for agent, cost, latency, outcome in calls:
            pgtrail.log_llm_execution(
                agent_type=agent,
                model="claude-sonnet-4-20250514",
                event_type=outcome,
                input_tokens=100,
                output_tokens=10,
                processing_time_ms=latency,
                total_cost=float(cost),
            )


@pytest.fixture
def logged(settings: Settings) -> Settings:
    now = dt.datetime.now(dt.UTC)
    log_calls(settings, now - dt.timedelta(days=3), CALLS)
    log_calls(settings, now - dt.timedelta(days=10), [OLD_CALL])
    return settings


def expected_cost_by_agent(
    calls: list[tuple[str, str, int, str]],
) -> dict[str, tuple[int, Decimal]]:
    """Calls and total cost per agent, computed here rather than by the report's SQL."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for agent, cost, _, _ in calls:
        count, total = totals.get(agent, (0, Decimal(0)))
        totals[agent] = (count + 1, total + Decimal(cost))
    return totals


# --------------------------------------------------------------------------- list and show


def test_report_list_shows_every_shipped_report() -> None:
    shipped = sorted(p.stem for p in queries_dir().glob("*.sql"))

    as_json = runner.invoke(app, ["report", "list", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)
    assert [r["name"] for r in listed] == shipped
    by_name = {r["name"]: r for r in listed}
    since = by_name["cost-by-agent"]["parameters"][0]
    assert (since["name"], since["type"], since["default"], since["required"]) == (
        "since",
        "timestamptz",
        "7d",
        False,
    )
    assert by_name["execution-tree"]["parameters"][0]["required"] is True

    table = runner.invoke(app, ["report", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    for name in shipped:
        assert name in table.stdout


def test_report_show_gives_description_parameters_and_sql() -> None:
    result = runner.invoke(app, ["report", "show", "cost-by-agent"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "LLM cost, calls, tokens and average latency per agent type" in out
    assert "since" in out and "timestamptz" in out and "7d" in out
    assert "start of the window (inclusive)" in out
    assert "FROM logs_llm_execution" in out and ":'since'::timestamptz" in out
    assert "-- name:" not in out  # the header is shown as a table, not repeated
    assert "psql -v since=VALUE -v until=now -f" in out


def test_an_unknown_report_suggests_near_names() -> None:
    result = runner.invoke(app, ["report", "show", "cost-by-agnet"])

    assert result.exit_code == 1
    assert "unknown report 'cost-by-agnet'; did you mean cost-by-agent" in result.stderr
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- run


def test_report_run_json_matches_the_logged_calls_with_exact_decimals(logged: Settings) -> None:
    result = cli(logged, "report", "run", "cost-by-agent", "--since", "7d", "--format", "json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout, parse_float=Decimal)
    got = {r["agent_type"]: (r["calls"], r["total_cost"]) for r in rows}
    assert got == expected_cost_by_agent(CALLS)
    assert {r["agent_type"]: r["failed_calls"] for r in rows} == {"coaching": 1, "selling": 0}


def test_report_name_alone_is_short_for_report_run(logged: Settings) -> None:
    result = cli(logged, "report", "cost-by-agent", "--since", "7d", "--format", "json")

    assert result.exit_code == 0, result.output
    assert {r["agent_type"] for r in json.loads(result.stdout)} == {"coaching", "selling"}


def test_since_and_until_choose_the_window(logged: Settings) -> None:
    wide = cli(logged, "report", "run", "cost-by-agent", "--since", "14d", "--format", "json")
    assert wide.exit_code == 0, wide.output
    assert {r["agent_type"] for r in json.loads(wide.stdout)} == {"coaching", "selling", "archive"}

    until = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).date().isoformat()
    old_only = cli(
        logged, "report", "run", "cost-by-agent", "-p", "since=30d", "--until", until,
        "--format", "json",
    )  # fmt: skip
    assert old_only.exit_code == 0, old_only.output
    assert [r["agent_type"] for r in json.loads(old_only.stdout)] == ["archive"]


def test_report_run_csv_is_plain_rfc_4180(logged: Settings) -> None:
    result = cli(logged, "report", "run", "cost-by-agent", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["agent_type"]: (int(r["calls"]), Decimal(r["total_cost"])) for r in rows} == (
        expected_cost_by_agent(CALLS)
    )
    assert "\x1b" not in result.stdout and "\r" not in result.stdout


def test_report_run_markdown_and_table(logged: Settings) -> None:
    md = cli(logged, "report", "run", "cost-by-agent", "--format", "md")
    assert md.exit_code == 0, md.output
    lines = md.stdout.splitlines()
    assert lines[0].startswith("| agent_type | calls | failed_calls | total_cost |")
    assert lines[1].startswith("|---|---:|---:|---:|")
    assert lines[2].startswith("| coaching | 3 | 1 | 0.561242 |")

    table = cli(logged, "report", "run", "cost-by-agent", env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "coaching" in table.stdout and "0.561242" in table.stdout
    assert "2 rows in" in table.stdout


def test_since_on_a_report_without_a_window_is_refused(settings: Settings) -> None:
    result = cli(
        settings, "report", "run", "execution-tree", "--since", "7d",
        "-p", f"execution_id={uuid.uuid4()}",
    )  # fmt: skip

    assert result.exit_code == 1
    assert "report execution-tree has no since parameter" in result.stderr
    assert "its parameters: execution_id" in result.stderr


def test_bad_parameters_say_which_and_why(settings: Settings) -> None:
    bad_value = cli(settings, "report", "run", "cost-by-agent", "--since", "last week")
    assert bad_value.exit_code == 1
    assert "parameter since: 'last week' is not a valid timestamptz" in bad_value.stderr
    assert "7d" in bad_value.stderr

    unknown = cli(settings, "report", "run", "cost-by-agent", "-p", "sinse=7d")
    assert unknown.exit_code == 1
    assert "has no parameter sinse; did you mean since?" in unknown.stderr

    missing = cli(settings, "report", "run", "execution-tree")
    assert missing.exit_code == 1
    assert "needs parameter execution_id (uuid" in missing.stderr

    malformed = cli(settings, "report", "run", "cost-by-agent", "-p", "since")
    assert malformed.exit_code == 2
    assert "'since' is not NAME=VALUE" in malformed.output

    twice = cli(settings, "report", "run", "cost-by-agent", "-p", "since=1d", "--since", "2d")
    assert twice.exit_code == 1
    assert "since is given twice" in twice.stderr


def test_user_report_folders_by_option_and_environment(logged: Settings, tmp_path: Path) -> None:
    (tmp_path / "agent-calls.sql").write_text(
        "-- name: agent-calls\n"
        "-- description: Calls of one agent.\n"
        "-- param: agent text -- the agent\n"
        "SELECT count(*) AS calls FROM logs_llm_execution WHERE agent_type = :'agent';\n"
    )
    by_option = cli(
        logged, "report", "run", "agent-calls", "--queries", str(tmp_path),
        "-p", "agent=coaching", "--format", "json",
    )  # fmt: skip
    assert by_option.exit_code == 0, by_option.output
    assert json.loads(by_option.stdout) == [{"calls": 3}]

    listed = cli(
        logged, "report", "list", "--format", "json", env={"PGTRAIL_QUERIES_PATH": str(tmp_path)}
    )
    assert listed.exit_code == 0, listed.output
    mine = next(r for r in json.loads(listed.stdout) if r["name"] == "agent-calls")
    assert mine["source"] == str(tmp_path)


def test_a_report_file_that_fails_its_checks_names_file_and_line(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "purge.sql").write_text(
        "-- name: purge\n-- description: Not a report at all.\n\nDELETE FROM logs_llm_execution;\n"
    )
    run = cli(settings, "report", "run", "purge", "--queries", str(tmp_path))
    assert run.exit_code == 1
    assert f"{tmp_path / 'purge.sql'}:4: DELETE is not allowed" in run.stderr

    listed = cli(settings, "report", "list", "--queries", str(tmp_path), "--format", "json")
    assert listed.exit_code == 0
    assert "purge" not in [r["name"] for r in json.loads(listed.stdout)]
    assert "report skipped:" in listed.stderr and "purge.sql:4" in listed.stderr


def test_unreachable_database_shows_the_masked_dsn_and_what_to_check() -> None:
    dsn = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/logs"
    for command in (
        ["report", "run", "cost-by-agent"],
        ["sql", "SELECT 1"],
        ["trace", str(uuid.uuid4())],
        ["journey", "57"],
    ):
        result = runner.invoke(app, ["--dsn", dsn, *command])
        assert result.exit_code == 1, command
        assert "hunter2" not in result.output
        assert "postgresql://app:***@127.0.0.1:" in result.stderr
        assert "Check that the server is running" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_json_stays_clean_when_colour_is_forced_and_the_terminal_is_narrow(
    settings: Settings,
) -> None:
    long_text = "word " * 80
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "20", "PGTRAIL_DSN": settings.dsn}
    done = subprocess.run(
        [sys.executable, "-m", "pgtrail", "sql", f"SELECT '{long_text}' AS t", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert json.loads(done.stdout) == [{"t": long_text}]


# --------------------------------------------------------------------------- sql


def test_sql_runs_a_query_in_every_format(logged: Settings) -> None:
    query = (
        "SELECT agent_type, count(*) AS calls, sum(total_cost) AS cost, 'a|b' AS odd "
        "FROM logs_llm_execution GROUP BY agent_type ORDER BY agent_type"
    )
    as_json = cli(logged, "sql", query, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout, parse_float=Decimal) == [
        {"agent_type": "archive", "calls": 1, "cost": Decimal("7"), "odd": "a|b"},
        {"agent_type": "coaching", "calls": 3, "cost": Decimal("0.561242"), "odd": "a|b"},
        {"agent_type": "selling", "calls": 1, "cost": Decimal("0.25"), "odd": "a|b"},
    ]
    md = cli(logged, "sql", query, "--format", "md")
    assert "| coaching | 3 | 0.561242 | a\\|b |" in md.stdout
    csv_out = cli(logged, "sql", query, "--format", "csv")
    assert csv_out.stdout.splitlines()[0] == "agent_type,calls,cost,odd"
    table = cli(logged, "sql", query, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "selling" in table.stdout


def test_sql_reads_stdin_and_caps_rows(settings: Settings) -> None:
    result = cli(
        settings,
        "sql",
        "-",
        "--max-rows",
        "3",
        "--format",
        "json",
        input="SELECT g FROM generate_series(1, 10) AS g",
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"g": 1}, {"g": 2}, {"g": 3}]
    assert "only the first 3 rows" in result.stderr


def test_sql_refuses_writes_and_several_statements(settings: Settings) -> None:
    delete = cli(settings, "sql", "DELETE FROM logs_llm_execution")
    assert delete.exit_code == 1
    assert "statement refused (line 1): DELETE is not allowed" in delete.stderr

    two = cli(settings, "sql", "SELECT 1;\nSELECT 2")
    assert two.exit_code == 1
    assert "statement refused (line 2): exactly one statement is allowed" in two.stderr

    broken = cli(settings, "sql", "SELEC 1")
    assert broken.exit_code == 1 and "statement refused" in broken.stderr
    assert "Traceback" not in broken.output


def test_server_errors_are_shown_literally_even_with_brackets(settings: Settings) -> None:
    result = cli(settings, "sql", "SELECT '[/x]'::int")

    assert result.exit_code == 1
    assert 'the statement failed: invalid input syntax for type integer: "[/x]"' in result.stderr
    assert "Traceback" not in result.output


def test_sql_is_cancelled_after_the_timeout(settings: Settings) -> None:
    endless = "SELECT count(*) FROM generate_series(1, 1000000000000) AS g"
    result = cli(settings, "sql", endless, "--timeout-ms", "200")

    assert result.exit_code == 1
    assert "cancelled after 200 ms" in result.stderr


# --------------------------------------------------------------------------- render


def test_json_writes_decimals_as_exact_numbers_and_times_in_iso() -> None:
    when = dt.datetime(2026, 11, 1, 9, 30, tzinfo=dt.UTC)
    text = json_text(
        {
            "cost": Decimal("0.037710000000000000"),
            "big": Decimal("12345678901234567890.123456789"),
            "nan": Decimal("NaN"),
            "at": when,
            "id": uuid.UUID(int=1),
            "span": dt.timedelta(minutes=1, milliseconds=500),
        },
        indent=None,
    )
    assert text == (
        '{"cost": 0.03771, "big": 12345678901234567890.123456789, "nan": null, '
        '"at": "2026-11-01T09:30:00+00:00", "id": "00000000-0000-0000-0000-000000000001", '
        '"span": 60.5}'
    )
    assert json.loads(text, parse_float=Decimal)["big"] == Decimal("12345678901234567890.123456789")


def test_csv_and_markdown_cells_keep_their_text() -> None:
    rows = [(1, "a,b", {"k": [1, 2]}, None, True), (2, "line\nbreak|pipe", [], "x", False)]
    columns = ["n", "text", "doc", "maybe", "flag"]

    parsed = list(csv.reader(io.StringIO(rows_csv(columns, rows))))
    assert parsed == [
        columns,
        ["1", "a,b", '{"k": [1, 2]}', "", "true"],
        ["2", "line\nbreak|pipe", "[]", "x", "false"],
    ]
    md = rows_markdown(columns, rows).splitlines()
    assert md[1] == "|---:|---|---|---|---|"
    assert md[3] == "| 2 | line<br>break\\|pipe | [] | x | false |"


def test_duplicate_column_names_stay_distinct_in_json() -> None:
    assert unique_names(["a", "a", "a_2", "b"]) == ["a", "a_2", "a_2_2", "b"]
