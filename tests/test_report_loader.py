"""The report loader: malformed files are refused with file and line; user folders add and
override reports (``PGTRAIL_QUERIES_PATH`` and extra folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgtrail.config import Settings
from pgtrail.errors import ReportError, ReportFileError
from pgtrail.read import reports
from pgtrail.resources import queries_dir

GOOD = """\
-- name: {name}
-- description: Calls per agent type.
-- param: since timestamptz = 7d   -- start of the window
-- param: min_calls int = 1        -- hide smaller groups

SELECT agent_type, count(*) AS calls
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
GROUP BY agent_type
HAVING count(*) >= :min_calls
ORDER BY calls DESC;
"""

# (case, file text, the line the error must name, a phrase of the message)
MALFORMED: list[tuple[str, str, int, str]] = [
    (
        "no name",
        "-- description: d\n\nSELECT 1;\n",
        1,
        "missing `-- name: report-name` header line",
    ),
    ("name differs from the file", GOOD.format(name="other-name"), 1, "must equal the file name"),
    ("no description", "-- name: broken\n\nSELECT 1;\n", 1, "missing `-- description: ...`"),
    (
        "undeclared variable",
        "-- name: broken\n-- description: d\n\nSELECT 1\nFROM logs_execution\n"
        "WHERE user_id = :'user_id';\n",
        6,
        "variable :'user_id' is not declared",
    ),
    (
        "declared but unused parameter",
        "-- name: broken\n-- description: d\n-- param: since timestamptz = 7d\n"
        "-- param: limit int = 5\n\nSELECT 1 WHERE now() > :'since'::timestamptz;\n",
        4,
        "parameter limit is declared but never used",
    ),
    (
        "two statements",
        "-- name: broken\n-- description: d\n\nSELECT 1;\n\nSELECT 2;\n",
        6,
        "exactly one statement is allowed, found 2",
    ),
    (
        "a write",
        "-- name: broken\n-- description: d\n\nWITH x AS (SELECT 1)\nDELETE FROM logs_execution;\n",
        5,
        "DELETE is not allowed",
    ),
    (
        "a write hidden in a CTE",
        "-- name: broken\n-- description: d\n\nWITH gone AS (\n"
        "    UPDATE logs_execution SET status = 'error' RETURNING 1\n)\nSELECT * FROM gone;\n",
        5,
        "UPDATE is not allowed",
    ),
    (
        "a bad type",
        "-- name: broken\n-- description: d\n-- param: since timestamp = 7d\n"
        "-- param: n integr = 5\n\nSELECT :'since'::timestamptz, :n;\n",
        4,
        "parameter n: unknown type 'integr'",
    ),
    (
        "a bad default",
        "-- name: broken\n-- description: d\n-- param: n int = five\n\nSELECT :n;\n",
        3,
        "bad default: parameter n: 'five' is not a valid int",
    ),
    (
        "a bad timestamp default",
        "-- name: broken\n-- description: d\n-- param: since timestamptz = 'last week'\n\n"
        "SELECT :'since'::timestamptz;\n",
        3,
        "bad default: parameter since: 'last week' is not a valid timestamptz",
    ),
    (
        "a text variable pasted unquoted",
        "-- name: broken\n-- description: d\n-- param: who text\n\nSELECT 1\nWHERE :who = 'x';\n",
        6,
        "write :'who' (quoted) for the text parameter who",
    ),
    (
        "an unknown header key",
        "-- name: broken\n-- description: d\n-- params: n int = 1\n\nSELECT 1;\n",
        3,
        "unknown header key 'params'",
    ),
    (
        "a parameter declared twice",
        "-- name: broken\n-- description: d\n-- param: n int = 1\n-- param: n int = 2\n\n"
        "SELECT :n;\n",
        4,
        "parameter n is declared twice",
    ),
    (
        "a server file function",
        "-- name: broken\n-- description: d\n\nSELECT\n    pg_read_file('/etc/passwd');\n",
        5,
        "calling pg_read_file() is not allowed",
    ),
    (
        "SQL that does not parse",
        "-- name: broken\n-- description: d\n\nSELECT\nFROM WHERE (;\n",
        5,
        "SQL does not parse",
    ),
    (
        "an upper-case name",
        "-- name: Broken\n-- description: d\n\nSELECT 1;\n",
        1,
        "must be lower-case-with-dashes",
    ),
]


def write(folder: Path, name: str, text: str) -> Path:
    """A report file in ``folder``."""
    path = folder / f"{name}.sql"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "text", "line", "phrase"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_file_is_refused_naming_file_and_line(
    tmp_path: Path, case: str, text: str, line: int, phrase: str
) -> None:
    path = write(tmp_path, "broken", text)
    with pytest.raises(ReportFileError) as refused:
        reports.load_report(path)
    error = refused.value
    assert (error.path, error.line) == (str(path), line), f"{case}: {error}"
    assert str(error).startswith(f"{path}:{line}: ")
    assert phrase in str(error), f"{case}: {error}"


def test_an_unreadable_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.sql"
    path.write_bytes(b"-- name: latin\n-- description: caf\xe9\nSELECT 1;\n")
    with pytest.raises(ReportFileError, match=r"latin\.sql: cannot read"):
        reports.load_report(path)


def test_every_shipped_report_loads_cleanly() -> None:
    catalog = reports.load_catalog()
    assert catalog.problems == {}
    assert sorted(catalog.reports) == sorted(p.stem for p in queries_dir().glob("*.sql"))
    for report in catalog.reports.values():
        assert report.source == "pgtrail"
        assert report.description
        assert all(p.help for p in report.params), report.name


def test_a_shipped_report_names_its_file_relative_to_queries() -> None:
    text = (queries_dir() / "cost-by-agent.sql").read_text(encoding="utf-8")
    with pytest.raises(ReportFileError) as refused:
        reports.parse_report(text + "\nSELECT 2;\n", queries_dir() / "cost-by-agent.sql")
    assert str(refused.value).startswith("queries/cost-by-agent.sql:")


def test_an_unknown_report_suggests_near_names() -> None:
    with pytest.raises(ReportError, match="did you mean cost-by-agent"):
        reports.load_catalog().get("cost-by-agnet")


def test_queries_path_adds_and_overrides_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    first, second = tmp_path / "team", tmp_path / "mine"
    first.mkdir()
    second.mkdir()
    write(first, "calls-per-agent", GOOD.format(name="calls-per-agent"))
    write(first, "cost-by-agent", GOOD.format(name="cost-by-agent"))
    write(second, "cost-by-agent", GOOD.format(name="cost-by-agent").replace("DESC", "ASC"))
    monkeypatch.setenv("PGTRAIL_QUERIES_PATH", f"{first}{os.pathsep}{second}")

    catalog = reports.load_catalog()
    added = catalog.get("calls-per-agent")
    overridden = catalog.get("cost-by-agent")
    assert added.source == str(first)
    assert (overridden.source, overridden.path) == (str(second), second / "cost-by-agent.sql")
    assert "ORDER BY calls ASC" in overridden.text
    assert "latency-percentiles" in catalog.reports  # the shipped ones stay
    assert reports.run_report(settings, added).columns == ["agent_type", "calls"]


def test_an_extra_folder_overrides_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_folder, extra = tmp_path / "env", tmp_path / "extra"
    env_folder.mkdir()
    extra.mkdir()
    write(env_folder, "calls-per-agent", GOOD.format(name="calls-per-agent"))
    write(extra, "calls-per-agent", GOOD.format(name="calls-per-agent").replace("7d", "30d"))
    monkeypatch.setenv("PGTRAIL_QUERIES_PATH", str(env_folder))
    report = reports.load_catalog([extra]).get("calls-per-agent")
    assert report.source == str(extra)
    assert report.param("since") == reports.Param(
        "since", "timestamptz", "30d", "start of the window", 3
    )


def test_a_broken_user_report_is_listed_as_a_problem_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "cost-by-agent", "-- name: cost-by-agent\n-- description: d\nDELETE FROM x;\n")
    write(tmp_path, "calls-per-agent", GOOD.format(name="calls-per-agent"))
    monkeypatch.setenv("PGTRAIL_QUERIES_PATH", str(tmp_path))
    catalog = reports.load_catalog()
    assert "calls-per-agent" in catalog.reports
    assert "cost-by-agent" not in catalog.reports  # the user's broken override wins, loudly
    with pytest.raises(ReportFileError, match=r"cost-by-agent\.sql:3: DELETE is not allowed"):
        catalog.get("cost-by-agent")


def test_a_missing_user_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTRAIL_QUERIES_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ReportError, match=r"queries folder not found: .*nowhere"):
        reports.load_catalog()


def test_colons_and_percent_signs_in_literals_and_comments_are_not_variables(
    tmp_path: Path, settings: Settings
) -> None:
    text = (
        "-- name: literal-colons\n"
        "-- description: Text that only looks like variables.\n"
        "-- param: pattern text = 'a%'\n\n"
        "SELECT '10:30' AS clock, $$:'x' :y$$ AS dollar, E'\\\\:z' AS escaped, -- :'w'\n"
        "       /* :v */ '50%' LIKE :'pattern' AS unmatched, 'abc' LIKE 'a%' AS matched,\n"
        "       now()::date IS NOT NULL AS cast;\n"
    )
    report = reports.load_report(write(tmp_path, "literal-colons", text))
    assert [p.name for p in report.params] == ["pattern"]
    result = reports.run_report(settings, report)
    assert result.rows == [("10:30", ":'x' :y", "\\:z", False, True, True)]
