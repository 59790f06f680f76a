"""``pgtrail check --webhook``: each breach posted once per window, retried, never repeated.

A local HTTP server in a thread plays the webhook; it answers with the statuses a test gives
it, then 200. The state that stops a cron run from posting a breach again is in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pgtrail
from dbrows import rows
from pgtrail import Trail
from pgtrail.cli import app
from pgtrail.config import Settings
from pgtrail.ops.devservices import free_port

runner = CliRunner()
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
RULES = """
[[rules]]
name = "hourly user budget"
kind = "user_cost"
window = "1h"
budget_usd = 5
"""


@dataclass
class Hook:
    """The webhook: what it received, and the statuses it answers before 200."""

    url: str
    failures: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    posts: int = 0


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.posts += 1
            status = state.failures.pop(0) if state.failures else 200
            if status == 200:
                assert self.headers["Content-Type"] == "application/json"
                state.received.append(json.loads(body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def spend(settings: Settings, user: str, cost: float, at: dt.datetime) -> None:
    plain = settings.model_copy(update={"redis_url": None})
    with (
        Trail(plain, sync=True, clock=lambda: at) as trail,
        trail.execution("001 Main", tenant_id="acme", user_id=user),
    ):
        pgtrail.log_llm_execution(model="gpt-4o", total_cost=cost, input_tokens=10)


def check(settings: Settings, tmp_path: Path, url: str, at: dt.datetime = NOW) -> Any:
    path = tmp_path / "alerts.toml"
    path.write_text(RULES)
    return runner.invoke(
        app,
        [
            *("--dsn", settings.dsn, "check", "--at", at.isoformat()),
            *("--rules", str(path), "--webhook", url),
        ],
    )


def notices(settings: Settings) -> list[tuple[Any, ...]]:
    return rows(
        settings.dsn,
        "SELECT rule, subject, attempts, notified_at FROM pgtrail_alert_notice ORDER BY notice_id",
    )


def test_each_breach_is_posted_once_and_not_repeated_by_the_next_run(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    spend(settings, "u-1", 6, NOW - dt.timedelta(minutes=10))
    spend(settings, "u-2", 7, NOW - dt.timedelta(minutes=20))
    spend(settings, "u-3", 1, NOW - dt.timedelta(minutes=20))
    first = check(settings, tmp_path, hook.url)
    assert first.exit_code == 1, first.output
    assert "webhook: 2 breach(es) posted, 0 already posted in their window" in first.stdout
    assert [body["breach"]["subject"] for body in hook.received] == [
        {"tenant": "acme", "user": "u-2"},
        {"tenant": "acme", "user": "u-1"},
    ]
    body = hook.received[0]
    assert body["text"] == (
        "BREACH hourly user budget [user_cost] tenant=acme user=u-2: cost $7.0000 > budget "
        "$5.0000 over the last 1h (1 calls)"
    )
    assert body["breach"]["rule"] == "hourly user budget"
    assert body["breach"]["observed"] == 7
    # A cron run five minutes later: the same breaches, in the same window, are not posted.
    again = check(settings, tmp_path, hook.url, NOW + dt.timedelta(minutes=5))
    assert again.exit_code == 1, again.output
    assert "webhook: 0 breach(es) posted, 2 already posted in their window" in again.stdout
    assert hook.posts == 2
    assert [(n[0], n[1], n[2]) for n in notices(settings)] == [
        ("hourly user budget", {"tenant": "acme", "user": "u-2"}, 1),
        ("hourly user budget", {"tenant": "acme", "user": "u-1"}, 1),
    ]
    stored = json.dumps([str(n) for n in notices(settings)])
    assert "secret-token" not in stored  # the hook's URL is kept as a hash only


def test_a_breach_still_there_a_window_later_is_posted_again(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    spend(settings, "u-1", 6, NOW - dt.timedelta(minutes=10))
    assert check(settings, tmp_path, hook.url).exit_code == 1
    spend(settings, "u-1", 6, NOW + dt.timedelta(minutes=50))
    later = NOW + dt.timedelta(minutes=70)  # the first notice is older than the window
    result = check(settings, tmp_path, hook.url, later)
    assert result.exit_code == 1, result.output
    assert hook.posts == 2
    assert [n[3] for n in notices(settings)] == [NOW, later]


def test_a_failing_webhook_is_retried_until_it_accepts(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    spend(settings, "u-1", 6, NOW - dt.timedelta(minutes=10))
    hook.failures = [500, 503]
    result = check(settings, tmp_path, hook.url)
    assert result.exit_code == 1, result.output
    assert hook.posts == 3
    assert len(hook.received) == 1
    assert [n[2] for n in notices(settings)] == [3]


def test_an_unreachable_webhook_is_said_and_tried_again_by_the_next_run(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    spend(settings, "u-1", 6, NOW - dt.timedelta(minutes=10))
    closed = f"http://127.0.0.1:{free_port()}/hooks/secret-token"
    result = check(settings, tmp_path, closed)
    assert result.exit_code == 1, result.output  # a breach: the status says so, as always
    message = " ".join(result.stderr.split())
    assert "webhook http://127.0.0.1:" in message
    assert "unreachable after 4 attempts" in message
    assert "secret-token" not in message
    assert notices(settings) == []
    retried = check(settings, tmp_path, hook.url)
    assert "webhook: 1 breach(es) posted" in retried.stdout
    assert len(hook.received) == 1


def test_a_webhook_that_refuses_is_not_retried(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    spend(settings, "u-1", 6, NOW - dt.timedelta(minutes=10))
    hook.failures = [404]
    result = check(settings, tmp_path, hook.url)
    assert result.exit_code == 1, result.output
    assert "refused the notice: HTTP 404" in " ".join(result.stderr.split())
    assert hook.posts == 1
    assert notices(settings) == []


def test_no_breach_posts_nothing(settings: Settings, hook: Hook, tmp_path: Path) -> None:
    spend(settings, "u-1", 1, NOW - dt.timedelta(minutes=10))
    result = check(settings, tmp_path, hook.url)
    assert result.exit_code == 0, result.output
    assert hook.posts == 0


def test_a_webhook_that_is_not_http_is_a_bad_option(settings: Settings, tmp_path: Path) -> None:
    result = check(settings, tmp_path, "file:///etc/passwd")
    assert result.exit_code == 2, result.output
    assert "give an http:// or https:// URL" in " ".join(result.stderr.split())
