"""The never-raise guard of every public entry point, and the live clients it consults.

Outside strict mode a failure inside pgtrail is reported once in the log and the
application goes on; in strict mode it raises. Which mode applies is the current
execution's client's, else that of any live client. Live clients are also closed at
interpreter exit and reset in a forked child.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import weakref
from typing import TYPE_CHECKING, Protocol

from pgtrail import context as execution_context
from pgtrail.writer.sanitize import safe_str

if TYPE_CHECKING:
    from pgtrail.config import Settings
    from pgtrail.scores import ScoreRequest

log = logging.getLogger("pgtrail")


class LiveClient(Protocol):
    """What the guard needs of a client (a :class:`pgtrail.Trail`)."""

    settings: Settings
    """The client's settings (``strict`` among them)."""

    def close(self) -> None:
        """Flushes and releases the client."""

    def after_fork_in_child(self) -> None:
        """Forgets what the parent process held."""

    def attach_score(self, request: ScoreRequest) -> None:
        """Stores one score (see :meth:`pgtrail.Trail.attach_score`)."""


live_clients: weakref.WeakSet[LiveClient] = weakref.WeakSet()
"""Every open client; a closed one removes itself."""

_reported: set[str] = set()


def report_once(key: str, message: str, exc: BaseException | None = None) -> None:
    """Logs ``message`` as an error the first time ``key`` is reported in this process.

    Args:
        key: What the report is about (entry point and kind of failure).
        message: The text to log.
        exc: The exception whose traceback goes with it, or None.
    """
    if key not in _reported:
        _reported.add(key)
        log.error(message, exc_info=exc)


def strict_anywhere() -> bool:
    """Whether any live client runs in strict mode."""
    return any(client.settings.strict for client in live_clients)


def strict_now() -> bool:
    """Strict mode of the current execution's client, else of any live client."""
    state, _ = execution_context.current()
    if state is not None:
        return state.trail.settings.strict
    return strict_anywhere()


def swallow(entry: str, exc: Exception, strict: bool) -> None:
    """The one guard of each public entry point: raises ``exc`` in strict mode, else reports.

    Reported once per entry point and kind of failure, with its traceback: a bad value
    logged in a loop must not flood the application's log.

    Args:
        entry: The public entry point that failed, e.g. ``"log_llm_execution"``.
        exc: What it raised.
        strict: Whether to raise it.
    """
    if strict:
        raise exc
    report_once(
        f"failed:{entry}:{type(exc).__qualname__}",
        f"pgtrail: {entry} failed ({type(exc).__qualname__}: {safe_str(exc)[:500]}); "
        "the application goes on (said once)",
        exc,
    )


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, even one whose ``__str__`` raises.

    Args:
        exc: The exception.
    """
    return f"{type(exc).__name__}: {safe_str(exc)}"


def _close_all() -> None:
    for client in list(live_clients):
        with contextlib.suppress(Exception):
            client.close()


def _after_fork_in_child() -> None:
    for client in list(live_clients):
        client.after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
