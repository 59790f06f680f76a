"""Serving the UI with uvicorn: where it may listen, and how it is started and stopped.

Without a token the UI listens on loopback only: it shows every tenant's logs to whoever
reaches it. On any other address it needs a token, or ``trust_proxy`` for a reverse proxy
that authenticates every request itself (the proxy then owns access; see README).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from pgtrail.errors import ConfigurationError
from pgtrail.ui.app import UiApp

_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
DEFAULT_HOST = "127.0.0.1"
"""Where the UI listens unless told otherwise."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``.

    Args:
        host: an IP address or host name.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(port: int) -> frozenset[str]:
    """The Host header values of a request addressed to loopback on ``port``.

    Args:
        port: the port the UI listens on.
    """
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset({*(f"{n}:{port}" for n in names), *names})


def check_listen(host: str, token: str | None, trust_proxy: bool) -> None:
    """Refuses a non-loopback address without a token or a trusted authenticating proxy.

    Args:
        host: the address to listen on.
        token: the token requests must carry, or None.
        trust_proxy: whether a reverse proxy in front authenticates every request.

    Raises:
        ConfigurationError: the address is not loopback and nothing guards it.
    """
    if token is not None and len(token) < 16:
        raise ConfigurationError("a UI token must be at least 16 characters; try --token auto")
    if token is not None and not _TOKEN.fullmatch(token):
        # It travels in a URL and a cookie: nothing there may need quoting.
        raise ConfigurationError(
            "a UI token may hold only letters, digits and - _ . ~; try --token auto"
        )
    if not is_loopback(host) and token is None and not trust_proxy:
        raise ConfigurationError(
            f"refusing to serve the UI on {host} without a token: anyone who reaches it "
            "would read your logs. Pass --token (or --token auto), or --trust-proxy when a "
            "reverse proxy in front of it authenticates every request."
        )


def new_token() -> str:
    """A fresh random token (URL-safe, 32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def build_server(app: UiApp, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` (not started).

    Args:
        app: the UI application.
        host: the address to listen on.
        port: the port (0 for a free one).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


@dataclass
class RunningServer:
    """A UI served from a background thread (tests and the benchmark).

    Attributes:
        server: the uvicorn server.
        thread: the thread running it.
        url: its base URL, without a trailing slash.
    """

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        """Stops serving and waits for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port free on ``host`` now.

    Args:
        host: the address.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def serve_in_thread(app: UiApp, host: str = DEFAULT_HOST, port: int | None = None) -> RunningServer:
    """Serves ``app`` from a daemon thread; returns once it accepts connections.

    Args:
        app: the UI application.
        host: the address to listen on.
        port: the port; None for a free one.

    Raises:
        RuntimeError: the server did not start within 10 s.
    """
    chosen = port or free_port(host)
    server = build_server(app, host, chosen)
    thread = threading.Thread(target=server.run, name="pgtrail-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the UI server did not start")
        time.sleep(0.02)
    return RunningServer(server, thread, f"http://{host}:{chosen}")
