"""The web UI over HTTP: headers, methods, access control, the JSON twins checked against the
database, hostile text escaped, and a tenant-bound UI that shows one tenant only."""

from __future__ import annotations

import csv
import html
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from typer.testing import CliRunner

import pgtrail
from pgtrail import Trail
from pgtrail.cli import app as cli_app
from pgtrail.config import Settings
from pgtrail.errors import ConfigurationError
from pgtrail.read import reports
from pgtrail.ui.server import RunningServer, check_listen, free_port
from ui_world import (
    GLOBEX_SECRET,
    HOSTILE_AGENT,
    HOSTILE_USER,
    IMG,
    SCRIPT,
    World,
    fetch,
    serving,
    write_world,
)

TOKEN = "a-test-token-of-32-characters-xx"


@pytest.fixture
def world(settings: Settings) -> World:
    return write_world(settings)


@pytest.fixture
def ui(world: World) -> Iterator[RunningServer]:
    with serving(world.settings) as running:
        yield running


def one(settings: Settings, query: str, *params: object) -> Any:
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def pages(world: World) -> list[str]:
    """One URL of every page, for the execution, user, session and agent of acme."""
    return [
        "/",
        "/?by=model&days=30",
        "/?by=tenant",
        "/executions",
        "/executions?sort=duration",
        f"/executions/{world.main}",
        f"/executions/{world.hostile}",
        "/users/57",
        f"/users/{quote(HOSTILE_USER, safe='')}",
        "/sessions/s-1",
        "/agents/coaching",
        f"/agents/{quote(HOSTILE_AGENT, safe='')}",
        "/reports",
        "/reports/cost-by-agent",
        "/reports/cost-by-tenant-day",
        "/reports/user-journey?user_id=57",
        "/sql?" + urlencode({"q": "SELECT workflow, user_id FROM logs_execution"}),
    ]


# --------------------------------------------------------------------------- protocol


def test_every_page_answers_with_the_security_headers_and_its_json_twin(
    ui: RunningServer, world: World
) -> None:
    for path in pages(world):
        html = fetch(ui.url, path)
        assert html.status == 200, (path, html.body[:500])
        assert html.headers["content-type"] == "text/html; charset=utf-8"
        policy = html.headers["content-security-policy"]
        assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        assert "default-src 'self'" in policy
        assert html.headers["x-content-type-options"] == "nosniff"
        assert html.headers["x-frame-options"] == "DENY"
        assert "<script" not in html.body.lower(), path
        by_suffix = fetch(ui.url, _json_path(path))
        by_accept = fetch(ui.url, path, headers={"Accept": "application/json"})
        assert by_suffix.status == by_accept.status == 200, (path, by_suffix.body[:300])
        assert by_suffix.headers["content-type"] == "application/json"
        twin, negotiated = by_suffix.json(), by_accept.json()
        # The same data (a window ending "now" moves between the two requests).
        assert isinstance(twin, dict) and isinstance(negotiated, dict), path
        assert twin.keys() == negotiated.keys(), path


def _json_path(path: str) -> str:
    base, sep, rest = path.partition("?")
    return ("/.json" if base == "/" else base + ".json") + sep + rest


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head_are_answered(ui: RunningServer, method: str) -> None:
    answer = fetch(ui.url, "/sql?q=SELECT+1", method=method)

    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"
    assert "content-security-policy" in answer.headers


def test_head_answers_the_headers_without_a_body(ui: RunningServer) -> None:
    answer = fetch(ui.url, "/reports", method="HEAD")

    assert answer.status == 200 and answer.body == ""
    assert int(answer.headers["content-length"]) > 0


def test_without_a_token_only_requests_addressed_to_loopback_are_answered(
    ui: RunningServer,
) -> None:
    # A page on another site whose name was rebound to 127.0.0.1 sends its own Host.
    rebound = fetch(ui.url, "/", headers={"Host": "attacker.example:8321"})
    direct = fetch(ui.url, "/")

    assert rebound.status == 421 and GLOBEX_SECRET not in rebound.body
    assert direct.status == 200


def test_a_token_is_required_on_every_request_when_one_is_set(world: World) -> None:
    with serving(world.settings, token=TOKEN) as running:
        missing = fetch(running.url, "/executions.json")
        wrong = fetch(running.url, "/executions.json", headers={"Authorization": "Bearer nope"})
        bearer = fetch(
            running.url, "/executions.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        link = fetch(running.url, f"/executions?token={TOKEN}&status=success")
        cookie = link.headers["set-cookie"].split(";", 1)[0]
        with_cookie = fetch(running.url, "/executions.json", headers={"Cookie": cookie})
        static = fetch(running.url, "/static/ui.css")

    assert missing.status == wrong.status == static.status == 401
    assert "www-authenticate" in missing.headers and str(world.main) not in missing.body
    assert bearer.status == 200 and str(world.main) in bearer.body
    assert link.status == 303 and link.headers["location"] == "/executions?status=success"
    assert (
        "HttpOnly" in link.headers["set-cookie"] and "SameSite=Strict" in link.headers["set-cookie"]
    )
    assert with_cookie.status == 200 and str(world.main) in with_cookie.body


def test_a_non_loopback_address_is_refused_without_a_token_or_an_authenticating_proxy() -> None:
    with pytest.raises(ConfigurationError, match="without a token"):
        check_listen("192.0.2.10", None, trust_proxy=False)
    with pytest.raises(ConfigurationError, match="at least 16"):
        check_listen("192.0.2.10", "short", trust_proxy=False)
    with pytest.raises(ConfigurationError, match="only letters"):
        check_listen("192.0.2.10", "a token; with spaces and semicolons", trust_proxy=False)
    check_listen("192.0.2.10", TOKEN, trust_proxy=False)
    check_listen("10.1.2.3", None, trust_proxy=True)
    check_listen("127.0.0.1", None, trust_proxy=False)
    check_listen("::1", None, trust_proxy=False)


def test_the_command_refuses_a_public_address_without_a_token(settings: Settings) -> None:
    result = CliRunner().invoke(cli_app, ["--dsn", settings.dsn, "ui", "--host", "192.0.2.10"])

    assert result.exit_code == 1
    assert "refusing to serve the UI on 192.0.2.10 without a token" in result.output


def test_static_files_are_served_and_nothing_outside_them(ui: RunningServer) -> None:
    css = fetch(ui.url, "/static/ui.css")
    escape = fetch(ui.url, "/static/%2e%2e%2fapp.py")
    other = fetch(ui.url, "/static/..%2F..%2Fpyproject.toml")

    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert escape.status == other.status == 404


# --------------------------------------------------------------------------- pages vs database


def test_overview_totals_match_the_database(ui: RunningServer, world: World) -> None:
    data = fetch(ui.url, "/.json?by=tenant").json()
    assert isinstance(data, dict)

    calls = one(world.settings, "SELECT count(*) FROM logs_llm_execution")
    failed = one(
        world.settings,
        "SELECT count(*) FROM logs_llm_execution WHERE event_type <> 'llm_valid_execution'",
    )
    cost = one(world.settings, "SELECT sum(total_cost) FROM logs_llm_execution")
    assert data["totals"]["calls"] == calls == 6
    assert data["totals"]["failed_calls"] == failed == 1
    assert Decimal(str(data["totals"]["cost"])) == cost
    by_tenant = {r["key"]: Decimal(str(r["cost"])) for r in data["cost_by_day"]}
    assert by_tenant == {"acme": Decimal("1.885"), "globex": Decimal("9.0")}
    assert data["window"]["time_zone"] == "UTC" and data["window"]["days"] == 7
    top_user = data["top_users"][0]
    assert top_user["user_id"] == f"user-{GLOBEX_SECRET}"


def test_execution_list_pages_by_keyset_and_carries_each_cost(
    ui: RunningServer, world: World
) -> None:
    seen: list[str] = []
    path = "/executions.json?limit=1"
    for _ in range(10):
        data = fetch(ui.url, path).json()
        assert isinstance(data, dict)
        seen += [r["execution_id"] for r in data["executions"]]
        if data["next"] is None:
            break
        path = "/executions.json?" + urlencode({"limit": 1, "after": data["next"]})
    with psycopg.connect(world.settings.dsn) as conn:
        rows = conn.execute(b"SELECT execution_id FROM logs_execution ORDER BY created_at DESC")
        newest_first = [str(r[0]) for r in rows.fetchall()]
    assert seen == newest_first and len(seen) == 4

    listed = fetch(ui.url, "/executions.json?workflow=001+Main").json()
    assert isinstance(listed, dict)
    [row] = listed["executions"]
    assert row["execution_id"] == str(world.main)
    assert Decimal(str(row["cost"])) == Decimal("1.75") and row["llm_calls"] == 3


def test_execution_page_shows_the_tree_calls_and_bodies_as_stored(
    ui: RunningServer, world: World
) -> None:
    data = fetch(ui.url, f"/executions/{world.main}.json").json()
    assert isinstance(data, dict)

    assert data["workflow"] == "001 Main" and Decimal(str(data["total_cost"])) == Decimal("1.75")
    names = [c["name"] for c in data["root"]["children"]]
    assert names == ["202 Agent - Coaching", "301 Selling process"]
    prompt = one(
        world.settings,
        "SELECT p.body FROM logs_llm_execution c JOIN pgtrail_prompt p USING (prompt_hash) "
        "WHERE c.execution_id = %s",
        world.main,
    )
    bodies = [b["prompt_body"] for b in data["model_call_bodies"] if b["prompt_body"]]
    assert bodies == [prompt]
    html = fetch(ui.url, f"/executions/{world.main}").body
    assert "How do I start?" in html and "llm_timeout" in html and "balanced" in html


def test_user_session_and_agent_pages_match_the_database(ui: RunningServer, world: World) -> None:
    journey = fetch(ui.url, "/users/57.json").json()
    session = fetch(ui.url, "/sessions/s-1.json").json()
    agent = fetch(ui.url, "/agents/coaching.json").json()
    assert isinstance(journey, dict) and isinstance(session, dict) and isinstance(agent, dict)

    assert journey["executions"] == 2 and journey["sessions"] == 1
    assert Decimal(str(journey["cost"])) == Decimal("1.875")
    assert session["turns"] == 2 and session["users"] == ["57"]
    assert [r["workflow"] for r in session["executions"]] == ["001 Main", "002 Follow-up"]
    calls = one(
        world.settings, "SELECT count(*) FROM logs_llm_execution WHERE agent_type = 'coaching'"
    )
    assert sum(d["calls"] for d in agent["days"]) == calls == 3
    assert {e["event_type"] for e in agent["event_types"]} == {"agent_decision"}
    drift = agent["drift"]
    assert drift["field"] == "agent_decisions,coaching_quality,intensity_level"
    assert drift["error"] is None and {r["value"] for r in drift["rows"]} == {"balanced"}
    unknown = fetch(ui.url, "/agents/coaching.json?field=no,such,field").json()
    assert isinstance(unknown, dict)
    assert {r["value"] for r in unknown["drift"]["rows"]} == {"(missing)"}
    # Changing the window keeps the charted field: the days form carries it.
    page = fetch(ui.url, "/agents/coaching?field=no,such,field").body
    days_form = page.split("<form", 2)[1]
    assert 'name="field" value="no,such,field"' in days_form


def test_unknown_things_answer_404(ui: RunningServer) -> None:
    for path in [
        f"/executions/{uuid.uuid4()}",
        "/users/nobody",
        "/sessions/none",
        "/agents/nobody",
        "/reports/no-such-report",
        "/nowhere",
    ]:
        assert fetch(ui.url, path).status == 404, path
        assert fetch(ui.url, _json_path(path)).json()["status"] == 404, path  # type: ignore[index]
    assert fetch(ui.url, "/executions/not-a-uuid").status == 404
    assert fetch(ui.url, "/?days=nope").status == 400


def test_report_page_runs_with_the_form_values_and_offers_csv_and_commands(
    ui: RunningServer, world: World
) -> None:
    query = "?since=30d&until=now"
    data = fetch(ui.url, f"/reports/cost-by-agent.json{query}").json()
    assert isinstance(data, dict)
    report = reports.load_catalog().get("cost-by-agent")
    expected = reports.run_report(world.settings, report, {"since": "30d"})
    assert [r["agent_type"] for r in data["rows"]] == [r[0] for r in expected.rows]
    assert data["commands"]["pgtrail"] == (
        "pgtrail report cost-by-agent --param since=30d --param until=now"
    )
    assert data["commands"]["psql"].startswith("psql -v since=")
    assert data["commands"]["psql"].endswith("-f queries/cost-by-agent.sql")
    table = list(csv.reader(io.StringIO(fetch(ui.url, f"/reports/cost-by-agent.csv{query}").body)))
    assert table[0] == expected.columns and len(table) == len(expected.rows) + 1
    needs = fetch(ui.url, "/reports/user-journey.json").json()
    assert isinstance(needs, dict) and needs["ran"] is False


def test_sql_page_refuses_writes_and_runs_reads(ui: RunningServer, world: World) -> None:
    refused = fetch(ui.url, "/sql.json?" + urlencode({"q": "DELETE FROM logs_execution"})).json()
    rows = fetch(
        ui.url, "/sql.json?" + urlencode({"q": "SELECT count(*) AS n FROM logs_execution"})
    ).json()
    assert isinstance(refused, dict) and isinstance(rows, dict)

    assert refused["error"] and refused["rows"] == []
    assert rows["rows"] == [{"n": 4}]
    assert one(world.settings, "SELECT count(*) FROM logs_execution") == 4


# --------------------------------------------------------------------------- hostile data


def test_hostile_text_from_the_database_is_escaped_on_every_page(
    ui: RunningServer, world: World
) -> None:
    for path in pages(world):
        body = fetch(ui.url, path).body
        assert "<script>alert" not in body, path
        assert "<img src=x" not in body, path
        assert IMG not in body and SCRIPT not in body, path
    execution = fetch(ui.url, f"/executions/{world.hostile}").body
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in execution
    assert "&#34;&gt;&lt;img src=x onerror=" in execution


# --------------------------------------------------------------------------- tenants


def test_a_tenant_bound_ui_never_shows_another_tenants_rows(world: World) -> None:
    crafted = [
        *pages(world),
        "/executions?tenant=globex",
        "/reports/cost-by-tenant-day?tenant_id=globex&since=30d",
        "/sql?"
        + urlencode(
            {
                "q": "SELECT tenant_id, payload::text, workflow FROM logs_llm_execution "
                "FULL JOIN logs_execution USING (execution_id)"
            }
        ),
        "/sql?"
        + urlencode(
            {
                "q": "WITH s AS MATERIALIZED (SELECT set_config('pgtrail.tenant', "
                "'globex', true) AS x) SELECT l.payload::text FROM s, "
                "logs_llm_execution AS l"
            }
        ),
        "/sql?" + urlencode({"q": "SELECT body FROM pgtrail_prompt"}),
    ]
    with serving(world.settings) as unbound:
        # Unbound, the same pages do show globex: the checks below can fail.
        assert GLOBEX_SECRET in fetch(unbound.url, "/.json").body
        assert fetch(unbound.url, f"/executions/{world.secret}").status == 200
    with serving(world.settings, tenant="acme") as running:
        for path in crafted:
            for answer in (fetch(running.url, path), fetch(running.url, _json_path(path))):
                assert answer.status in (200, 404), (path, answer.body[:300])
                assert GLOBEX_SECRET not in answer.body, path
                # No row of globex: its id appears neither as a field nor as a table cell.
                assert '"tenant_id": "globex"' not in answer.body, path
                assert ">globex<" not in answer.body, path
        for hidden in (
            f"/executions/{world.secret}",
            f"/users/user-{GLOBEX_SECRET}",
            f"/sessions/session-{GLOBEX_SECRET}",
            f"/agents/agent-{GLOBEX_SECRET}",
        ):
            assert fetch(running.url, hidden).status == 404, hidden
        # Asking for globex's user by name finds nothing (the name is only echoed back).
        by_user = fetch(running.url, f"/executions.json?user=user-{GLOBEX_SECRET}").json()
        journey = fetch(
            running.url, f"/reports/user-journey.json?user_id=user-{GLOBEX_SECRET}&since=30d"
        ).json()
        banner = fetch(running.url, "/").body
        own = fetch(running.url, "/executions.json").json()
        overview = fetch(running.url, "/.json?by=tenant").json()
    assert isinstance(own, dict) and isinstance(overview, dict)
    assert {r["tenant_id"] for r in own["executions"]} == {"acme"} and len(own["executions"]) == 3
    assert {r["key"] for r in overview["cost_by_day"]} == {"acme"}
    assert "tenant <strong>acme</strong> only" in banner
    assert isinstance(by_user, dict) and by_user["executions"] == []
    assert isinstance(journey, dict) and journey["ran"] and journey["rows"] == []


# --------------------------------------------------------------------------- big executions

_BIG = """
    INSERT INTO logs_execution (event_id, execution_id, created_at, tenant_id, user_id,
        span_id, workflow, status, processes_executed, finalized_at, duration_ms)
    SELECT gen_random_uuid(), %(id)s, now() - interval '1 hour', 'acme', 'big-user', 's1',
           '777 Big run', 'success',
           jsonb_agg(jsonb_build_object(
               'span_id', 's' || n,
               'parent_span_id', CASE WHEN n > 1 THEN 's' || (1 + (n - 2) / 20) END,
               'name', 'step ' || n,
               'nesting_level', CASE WHEN n = 1 THEN 0 WHEN n <= 21 THEN 1 ELSE 2 END,
               'started_at', now() - interval '1 hour' + n * interval '10 ms',
               'duration_ms', 5, 'status', CASE WHEN n = 3000 THEN 'error' ELSE 'success' END)
               ORDER BY n),
           now() - interval '59 minutes', 60000
    FROM generate_series(1, 4200) AS n
"""


def test_an_execution_of_4000_processes_opens_fast_and_states_what_it_hides(
    ui: RunningServer, world: World
) -> None:
    big = uuid.uuid4()
    with psycopg.connect(world.settings.dsn) as conn:
        conn.execute(_BIG.encode(), {"id": big})

    started = time.perf_counter()
    page = fetch(ui.url, f"/executions/{big}")
    elapsed = time.perf_counter() - started
    data = fetch(ui.url, f"/executions/{big}.json").json()
    assert isinstance(data, dict)

    assert page.status == 200 and elapsed < 3.0
    assert data["hidden"]["processes"] > 0 and not data["complete"]
    assert data["shown"]["processes"] + data["hidden"]["processes"] == 4200
    assert f"hidden: {data['hidden']['processes']} processes" in page.body
    assert "show everything" in page.body and "child processes hidden (limit: lines)" in page.body
    one_branch = fetch(ui.url, f"/executions/{big}.json?process=s2&breadth=10000").json()
    assert isinstance(one_branch, dict) and one_branch["complete"]
    assert len(one_branch["root"]["children"]) == 20


def test_the_command_serves_the_ui_on_loopback(world: World) -> None:
    port = free_port()
    env = {**os.environ, "PGTRAIL_DSN": world.settings.dsn}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "pgtrail"), "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"open http://127.0.0.1:{port}/" in first
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = fetch(f"http://127.0.0.1:{port}", "/executions.json")
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "pgtrail ui did not start"
                time.sleep(0.1)
        assert answer.status == 200 and str(world.main) in answer.body
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def test_a_cut_prompt_links_to_its_whole_body_which_a_tenant_bound_ui_keeps_to_its_tenant(
    world: World,
) -> None:
    long_prompt = "You coach runners. " * 1_500  # 28,500 characters: the call's section cuts it
    with (
        Trail(world.settings, sync=True) as trail,
        trail.execution("004 Long prompt", user_id="57", tenant_id="acme") as long_run,
    ):
        pgtrail.log_llm_execution(
            agent_type="coaching", model="claude-sonnet-4-20250514", prompt=long_prompt
        )
    prompt_hash = str(
        one(
            world.settings,
            "SELECT prompt_hash FROM logs_llm_execution WHERE execution_id = %s",
            long_run.execution_id,
        )
    )
    secret_hash = str(
        one(
            world.settings,
            "SELECT prompt_hash FROM logs_llm_execution WHERE execution_id = %s",
            world.secret,
        )
    )
    with serving(world.settings) as ui:
        page = fetch(ui.url, f"/executions/{long_run.execution_id}").body
        assert f'href="/prompts/{prompt_hash}"' in page
        whole = fetch(ui.url, f"/prompts/{prompt_hash}.json").json()
        assert isinstance(whole, dict)
        assert whole["body"] == long_prompt and whole["calls"] == 1
        assert (
            html.unescape(fetch(ui.url, f"/prompts/{prompt_hash}").body).count("You coach runners.")
            == 1_500
        )
    with serving(world.settings, tenant="acme") as acme:
        assert fetch(acme.url, f"/prompts/{prompt_hash}").status == 200
        refused = fetch(acme.url, f"/prompts/{secret_hash}")
        assert refused.status == 404 and GLOBEX_SECRET not in refused.body
        assert fetch(acme.url, "/prompts/" + quote("' OR true --")).status == 404
