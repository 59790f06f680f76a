"""Breaches posted to a webhook, once per breach per window.

Each breach is posted as JSON: a Slack-compatible ``text`` (the line ``pgtrail check``
prints) and the breach's figures under ``breach``. Whether a breach was posted already is
kept in PostgreSQL (``pgtrail_alert_notice``, see ``schema/0007_alert_notices.sql``), so cron
runs of ``pgtrail check`` do not repeat it: a breach is posted again only once a window of
its rule has passed since the last notice (the same UTC day for a daily budget, never again
for the same runaway execution). Each breach is decided in a transaction of its own, under
an advisory lock, and its notice is written only once the webhook accepted it: a breach
that could not be posted is tried again by the next run.

A post is retried with exponential backoff on connection failures, time-outs, ``429`` and
``5xx`` answers; another ``4xx`` answer is final. Only the standard library talks HTTP.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.errors import ConfigurationError, WebhookError
from pgtrail.read.breaches import Breach
from pgtrail.statements import STATEMENTS

_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Answer:
    """What the webhook answered one post: an HTTP status, or why there was none."""

    status: int | None
    problem: str = ""


Post = Callable[[str, bytes, float], Answer]
"""Posts a JSON body to a URL within a timeout in seconds."""


@dataclass(frozen=True)
class Retry:
    """How hard a post is tried: ``attempts`` posts, waiting ``backoff_s``, doubling."""

    attempts: int = 4
    backoff_s: float = 0.5
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Delivery:
    """What became of one breach: posted now (after how many posts), or posted before."""

    breach: Breach
    posted: bool
    attempts: int = 0


def url_post(url: str, body: bytes, timeout_s: float) -> Answer:
    """Posts ``body`` as JSON with :mod:`urllib`; never raises.

    Args:
        url: The webhook.
        body: The JSON body.
        timeout_s: Seconds to connect and answer.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return Answer(None, "not an http or https URL")
    request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "pgtrail-check"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (idem)
            return Answer(int(response.status))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Answer(None, f"{type(reason).__name__}: {reason}")


def check_url(url: str) -> str:
    """The webhook URL, checked: http or https with a host.

    Args:
        url: As given to ``--webhook``.

    Raises:
        ConfigurationError: another scheme, or no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"--webhook {_shown(url)!r}: give an http:// or https:// URL with a host"
        )
    return url


def _shown(url: str) -> str:
    """The URL without its path and query, which often hold the hook's secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..." if parts.scheme else "(not a URL)"


def body_of(breach: Breach) -> bytes:
    """The JSON posted for one breach: Slack's ``text`` and the breach's figures."""
    return json.dumps(
        {"text": f"BREACH {breach.message}", "source": "pgtrail", "breach": breach.as_json()},
        default=str,
    ).encode()


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _post_with_retries(url: str, body: bytes, post: Post, retry: Retry) -> int:
    """Posts until the webhook accepts; the number of posts it took.

    Raises:
        WebhookError: refused (a final 4xx), or not accepted after every attempt.
    """
    wait = retry.backoff_s
    last = Answer(None, "not tried")
    for attempt in range(1, retry.attempts + 1):
        last = post(url, body, retry.timeout_s)
        if last.status is not None and 200 <= last.status < 300:
            return attempt
        final = last.status is not None and last.status < 500
        if final and last.status not in _RETRY_STATUSES:
            raise WebhookError(
                f"webhook {_shown(url)} refused the notice: {last.problem or last.status}"
            )
        if attempt < retry.attempts:
            time.sleep(wait)
            wait *= 2
    raise WebhookError(
        f"webhook {_shown(url)} unreachable after {retry.attempts} attempts: "
        f"{last.problem or f'HTTP {last.status}'}"
    )


def notify(
    settings: Settings,
    breaches: Sequence[Breach],
    url: str,
    *,
    retry: Retry | None = None,
    post: Post = url_post,
) -> list[Delivery]:
    """Posts each breach not yet posted in its window, and records it.

    Args:
        settings: Where ``pgtrail_alert_notice`` is.
        breaches: What ``pgtrail check`` found.
        url: The webhook (http or https).
        retry: Attempts, backoff and timeout of each post; by default 4 posts, 0.5 s apart,
            doubling.
        post: What posts a body (a test passes its own); by default :func:`url_post`.

    Returns:
        One delivery per breach, in order.

    Raises:
        ConfigurationError: the URL is not http(s), or the DSN is malformed.
        WebhookError: a breach could not be posted (the others were tried; the message
            names how many failed and why); or the notice table is missing (migrate).
    """
    check_url(url)
    retry = retry or Retry()
    target = hashlib.sha256(url.encode()).hexdigest()
    deliveries: list[Delivery] = []
    failures: list[str] = []
    try:
        with db.connect(settings) as conn:
            for breach in breaches:
                try:
                    deliveries.append(_deliver(conn, breach, url, target, post, retry))
                except WebhookError as exc:
                    failures.append(str(exc))
    except psycopg.errors.UndefinedTable as exc:
        raise WebhookError(
            "pgtrail_alert_notice is missing: run `pgtrail migrate` to keep webhook notices"
        ) from exc
    except psycopg.Error as exc:
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise WebhookError(f"webhook notices could not be read or written: {reason}") from exc
    if failures:
        raise WebhookError(
            f"{len(failures)} of {len(breaches)} breach(es) not posted; first: {failures[0]}"
        )
    return deliveries


def _deliver(
    conn: psycopg.Connection[Any],
    breach: Breach,
    url: str,
    target: str,
    post: Post,
    retry: Retry,
) -> Delivery:
    keys = {"breach_key": _key(breach.rule, breach.kind, breach.subject), "target_key": target}
    with conn.transaction():
        conn.execute(STATEMENTS["webhooks_lock_breach"], keys)
        posted_before = conn.execute(
            STATEMENTS["webhooks_last_notice"], {**keys, "since": breach.window_start}
        ).fetchone()
        if posted_before is not None:
            return Delivery(breach, posted=False)
        body = body_of(breach)
        attempts = _post_with_retries(url, body, post, retry)
        conn.execute(
            STATEMENTS["webhooks_record_notice"],
            {
                **keys,
                "rule": breach.rule,
                "kind": breach.kind,
                "subject": Jsonb(breach.subject),
                "window_start": breach.window_start,
                "window_end": breach.window_end,
                "notified_at": breach.window_end,
                "attempts": attempts,
                "body": Jsonb(json.loads(body)),
            },
        )
    return Delivery(breach, posted=True, attempts=attempts)
