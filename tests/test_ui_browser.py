"""The web UI in a real browser (Debian's Chromium driven by Playwright).

A walk through overview, execution, model call, user journey and a report with parameters,
each page checked against the database; hostile text that stays inert (no dialog, no
injected element); and a tenant-bound UI that never shows the other tenant. Screenshots are
saved in the test's temporary folder, and in ``docs/screenshots/`` when
``PGTRAIL_TEST_SCREENSHOTS=1`` (the README's pictures are made this way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from pgtrail.config import Settings
from pgtrail.read import reports
from pgtrail.ui.server import RunningServer
from pgtrail.ui.templating import usd
from ui_world import (
    COACHING_PROMPT,
    GLOBEX_SECRET,
    HOSTILE_AGENT,
    HOSTILE_USER,
    IMG,
    SCRIPT,
    World,
    serving,
    write_week,
    write_world,
)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        pytest.fail(
            "Chromium is needed for the browser tests and was not found. Install it with "
            "`apt-get install -y chromium` (scripts/test does so when it is missing)."
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def world(settings: Settings) -> World:
    write_week(settings)
    return write_world(settings)


@pytest.fixture
def ui(world: World) -> Iterator[RunningServer]:
    with serving(world.settings) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: Page, tmp_path: Path, name: str) -> Path:
    """Saves a full-page screenshot; also under docs/screenshots when asked to."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("PGTRAIL_TEST_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path


def one(settings: Settings, query: str, *params: object) -> Any:
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def test_walk_from_the_overview_to_a_model_call_a_journey_and_a_report(
    ui: RunningServer, world: World, page: Page, tmp_path: Path
) -> None:
    settings = world.settings
    page.goto(ui.url + "/")
    calls = one(settings, "SELECT count(*) FROM logs_llm_execution")
    cost = one(settings, "SELECT sum(total_cost) FROM logs_llm_execution")
    assert page.inner_text("#total-calls") == str(calls)
    assert page.inner_text("#total-cost") == usd(cost)
    assert page.locator("figure.chart svg rect").count() > 7  # bars of several days
    assert "UTC" in page.inner_text("figure.chart figcaption >> nth=0")
    shot(page, tmp_path, "overview")

    page.click("nav >> text=Executions")
    page.fill("input[name=workflow]", "001 Main")
    page.click("form.filters button")
    assert page.locator("#executions tbody tr").count() == 1
    page.click("#executions tbody tr >> text=001 Main")
    assert page.url.endswith(f"/executions/{world.main}")
    assert page.inner_text("#total-cost") == usd(Decimal("1.75"))
    assert page.locator("#waterfall tr.process").count() == 5

    call = page.locator("details.event-llm", has_text="llm_timeout")
    assert not call.locator("dl.call").is_visible()
    call.locator("summary").click()
    assert call.locator("dl.call").is_visible()
    assert "claude-opus-4-1" in call.inner_text() and "30.0 s" in call.inner_text()
    first = page.locator("details.event-llm").first
    first.locator("summary").click()
    assert first.locator("pre.prompt").inner_text() == COACHING_PROMPT
    assert "How do I start?" in first.locator("pre.payload").inner_text()
    shot(page, tmp_path, "execution")

    page.click("#user-link")
    assert page.url.endswith("/users/57")
    journey_cost = one(
        settings,
        "SELECT sum(total_cost) FROM logs_llm_execution WHERE user_id = '57'",
    )
    assert page.inner_text("#executions") == "2"
    assert page.inner_text("#total-cost") == usd(journey_cost)
    assert page.locator("section.session").count() == 1
    shot(page, tmp_path, "journey")

    page.click("nav >> text=Reports")
    page.click("#reports >> text=cost-by-agent")
    page.fill("input[name=since]", "30d")
    page.click("#params button")
    expected = reports.run_report(
        settings, reports.load_catalog().get("cost-by-agent"), {"since": "30d"}
    )
    assert page.locator("#report-rows tbody tr").count() == len(expected.rows)
    shown = page.locator("#report-rows tbody tr td:first-child").all_inner_texts()
    assert shown == [str(r[0]) for r in expected.rows]
    assert "--param since=30d" in page.inner_text("#cmd-pgtrail")
    assert page.inner_text("#cmd-psql").endswith("-f queries/cost-by-agent.sql")
    assert page.locator("figure.chart").count() == 1
    shot(page, tmp_path, "report")

    page.goto(ui.url + "/agents/coaching")
    assert page.locator("figure.chart").count() == 3  # cost, latency, decision drift
    legend = page.locator("figure.chart >> nth=2").locator("ul.legend li").all_inner_texts()
    assert sorted(legend) == ["balanced", "gentle"]
    shot(page, tmp_path, "agent")


def test_hostile_text_stays_inert_in_the_browser(
    ui: RunningServer, world: World, page: Page, tmp_path: Path
) -> None:
    dialogs: list[str] = []
    violations: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    sql = urlencode({"q": f"SELECT '{SCRIPT}' AS a, '{IMG}' AS b"})
    for path in (
        f"/executions/{world.hostile}",
        f"/users/{quote(HOSTILE_USER, safe='')}",
        f"/agents/{quote(HOSTILE_AGENT, safe='')}",
        f"/sessions/{quote('s' + IMG, safe='')}",
        "/executions",
        "/",
        f"/sql?{sql}",
    ):
        page.goto(ui.url + path)
        for summary in page.locator("summary").all():
            summary.click()
        assert page.locator("script").count() == 0, path
        assert page.locator("img").count() == 0, path
        assert page.locator("[onerror]").count() == 0, path
    page.goto(ui.url + f"/executions/{world.hostile}")
    for summary in page.locator("summary").all():
        summary.click()
    assert SCRIPT in page.locator("pre.prompt").inner_text()
    assert IMG in page.locator("pre.prompt").inner_text()
    assert page.inner_text("h1") == f"Execution {world.hostile}"
    shot(page, tmp_path, "hostile")
    assert dialogs == []
    # Nothing on the pages needed what the policy forbids (inline script or style).
    assert violations == []


def test_a_tenant_bound_ui_shows_one_tenant_in_the_browser(
    world: World, page: Page, tmp_path: Path
) -> None:
    with serving(world.settings, tenant="acme") as running:
        page.goto(running.url + "/?by=tenant")
        assert "tenant acme only" in page.inner_text("header")
        legend = page.locator("figure.chart >> nth=0").locator("ul.legend li").all_inner_texts()
        assert legend == ["acme"]
        assert GLOBEX_SECRET not in page.content()

        page.goto(running.url + "/executions")
        page.fill("input[name=tenant]", "globex")
        page.click("form.filters button")
        assert page.inner_text("#executions tbody") == "No executions match."

        page.goto(running.url + f"/executions/{world.secret}")
        assert page.inner_text("h1").startswith("404")
        assert GLOBEX_SECRET not in page.content()

        page.goto(running.url + "/sql")
        page.fill("textarea[name=q]", "SELECT DISTINCT tenant_id FROM logs_llm_execution")
        page.click("#sql-form button")
        assert page.locator("#sql-rows tbody td").all_inner_texts() == ["acme"]
        shot(page, tmp_path, "tenant-sql")
