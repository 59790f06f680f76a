"""The ASGI application: routing, the JSON and CSV twins, access control, static files.

Plain ASGI, no framework: the UI has ten GET routes and no forms that change anything, so a
table of path patterns is the whole router. Handlers read PostgreSQL with blocking psycopg,
so each runs in a worker thread, off the event loop.

Access: with a token, every request must carry it (``Authorization: Bearer``, the cookie
set after a ``?token=`` link, or that link itself); without one, the server only listens on
loopback and only answers requests whose Host header names loopback, so a web page in the
user's browser cannot reach it through a DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pgtrail.errors import NotFoundError, PgtrailError, TenancyError
from pgtrail.read import reports
from pgtrail.read.render import json_text, rows_csv
from pgtrail.read.reports import Catalog
from pgtrail.ui import agents, executions, overview, people, report_pages, templating
from pgtrail.ui.http import CSV, HTML, JSON, Request, Response
from pgtrail.ui.pages import BadRequestError, Context, Handler, Page
from pgtrail.ui.reading import Reader

TOKEN_COOKIE = "pgtrail_ui_token"  # noqa: S105  (a cookie name, not a secret)
"""The cookie that carries the token once a ``?token=`` link was opened."""
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """One page: the fixed path segments, with None where a variable segment goes.

    Attributes:
        pattern: the segments; None matches any one segment.
        handler: the page handler.
        name: the page's name, for the navigation and the benchmark.
    """

    pattern: tuple[str | None, ...]
    handler: Handler
    name: str


ROUTES = (
    Route((), overview.overview, "overview"),
    Route(("executions",), executions.execution_list, "executions"),
    Route(("executions", None), executions.execution, "execution"),
    Route(("prompts", None), executions.prompt, "prompt"),
    Route(("users", None), people.user, "user"),
    Route(("sessions", None), people.session, "session"),
    Route(("agents", None), agents.agent, "agent"),
    Route(("reports",), report_pages.report_index, "reports"),
    Route(("reports", None), report_pages.report, "report"),
    Route(("sql",), report_pages.sql, "sql"),
)
"""Every page of the UI."""


def match(segments: tuple[str, ...]) -> tuple[Route, tuple[str, ...]] | None:
    """The route of a path and its variable segments, or None.

    Args:
        segments: the decoded path segments.
    """
    for route in ROUTES:
        if len(route.pattern) != len(segments):
            continue
        if all(p is None or p == s for p, s in zip(route.pattern, segments, strict=True)):
            variables = tuple(s for p, s in zip(route.pattern, segments, strict=True) if p is None)
            return route, variables
    return None


@dataclass(frozen=True)
class _LoadedCatalog:
    """The catalog and the report files (path, modification time) it was loaded from."""

    files: tuple[tuple[str, int], ...]
    catalog: Catalog


@dataclass
class UiApp:
    """The UI as an ASGI application.

    Args:
        reader: how pages read (settings, tenant, timeout).
        token: the token every request must carry, or None.
        allowed_hosts: Host header values answered when there is no token (loopback names
            with the port); empty to answer any.
        queries: folders of the user's own reports, besides the shipped ones.
    """

    reader: Reader
    token: str | None = None
    allowed_hosts: frozenset[str] = frozenset()
    queries: tuple[Path, ...] = field(default=())
    _catalog: _LoadedCatalog | None = field(default=None, init=False, repr=False)

    def catalog(self) -> Catalog:
        """The saved reports, read again only when a report file was added, changed or
        removed (checking each file against the server's parser costs ~10 ms)."""
        files = tuple(
            (str(path), path.stat().st_mtime_ns)
            for folder, _ in reports.report_dirs(self.queries)
            if folder.is_dir()
            for path in sorted(folder.glob("*.sql"))
        )
        cached = self._catalog
        if cached is not None and cached.files == files:
            return cached.catalog
        catalog = reports.load_catalog(self.queries)
        self._catalog = _LoadedCatalog(files, catalog)
        return catalog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.from_scope(dict(scope))
        response = self.refusal(request)
        if response is None:
            response = await asyncio.to_thread(self.answer, request)
        head = request.method == "HEAD"
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.raw_headers(),
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else response.body})

    def refusal(self, request: Request) -> Response | None:
        """The answer to a request that may not be served, or None to serve it.

        Args:
            request: the request.
        """
        if request.method not in ("GET", "HEAD"):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"405 method not allowed: pgtrail ui is read-only (GET and HEAD only)\n",
                "text/plain; charset=utf-8",
                (("allow", "GET, HEAD"),),
            )
        if self.token is None:
            host = request.headers.get("host", "")
            if self.allowed_hosts and host not in self.allowed_hosts:
                return Response(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    b"421 this UI answers only requests addressed to its loopback address\n",
                    "text/plain; charset=utf-8",
                )
            return None
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            rest = {k: v for k, v in request.query.items() if k != "token"}
            location = "/" + "/".join(templating.segment(s) for s in request.segments)
            if request.suffix:
                location += f".{request.suffix}"
            location += "?" + urlencode(rest) if rest else ""
            cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            return Response(
                HTTPStatus.SEE_OTHER, b"", HTML, (("location", location), ("set-cookie", cookie))
            )
        if self._carries_token(request):
            return None
        return Response(
            HTTPStatus.UNAUTHORIZED,
            b"401 this UI needs its token: open the link `pgtrail ui` printed (it ends in "
            b"?token=...), or send Authorization: Bearer TOKEN\n",
            "text/plain; charset=utf-8",
            (("www-authenticate", 'Bearer realm="pgtrail ui"'),),
        )

    def _carries_token(self, request: Request) -> bool:
        assert self.token is not None
        expected = self.token.encode()
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected):
            return True
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), expected):
                return True
        return False

    def answer(self, request: Request) -> Response:
        """The response to an allowed request (run in a worker thread).

        Args:
            request: the request.
        """
        if request.segments[:1] == ("static",):
            return _static(request.segments[1:])
        found = match(request.segments)
        wants_json = request.wants_json
        if found is None:
            return _error(
                HTTPStatus.NOT_FOUND, f"no page at /{'/'.join(request.segments)}", wants_json
            )
        route, variables = found
        ctx = Context(self.reader, self.catalog, request)
        try:
            page = route.handler(ctx, variables)
        except NotFoundError as exc:
            return _error(HTTPStatus.NOT_FOUND, str(exc), wants_json)
        except TenancyError as exc:
            return _error(HTTPStatus.FORBIDDEN, str(exc), wants_json)
        except (BadRequestError, PgtrailError) as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc), wants_json)
        except Exception:
            _log.exception("page %s failed", route.name)
            return _error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "the page failed; see the server log", wants_json
            )
        return _page_response(page, request, self.reader)


def _page_response(page: Page, request: Request, reader: Reader) -> Response:
    if request.suffix == "csv":
        if page.csv is None:
            return _error(HTTPStatus.NOT_FOUND, "this page has no CSV twin", False)
        text = rows_csv(page.csv.columns, page.csv.rows)
        return Response(HTTPStatus.OK, text.encode("utf-8"), CSV)
    if request.wants_json:
        return Response(
            HTTPStatus.OK, json_text(page.data).encode("utf-8"), JSON, (("vary", "accept"),)
        )
    here = "/" + "/".join(templating.segment(s) for s in request.segments)
    twin = ("/.json" if here == "/" else here + ".json") + templating.query(request.query)
    html = templating.render(
        page.template,
        {**page.values, "title": page.title, "tenant": reader.tenant, "json_href": twin},
    )
    return Response(HTTPStatus.OK, html.encode("utf-8"), HTML, (("vary", "accept"),))


def _error(status: HTTPStatus, message: str, wants_json: bool) -> Response:
    if wants_json:
        body = json_text({"error": message, "status": int(status)})
        return Response(status, body.encode("utf-8"), JSON)
    html = templating.render(
        "error.html",
        {
            "title": status.phrase,
            "status": int(status),
            "message": message,
            "tenant": None,
            "json_href": None,
        },
    )
    return Response(status, html.encode("utf-8"), HTML)


def _static(parts: tuple[str, ...]) -> Response:
    """A file of ``ui/static``: one plain name, of a known type, or 404."""
    name = parts[0] if len(parts) == 1 else ""
    kind = next((t for ext, t in STATIC_TYPES.items() if name.endswith(ext)), None)
    if kind is None or "/" in name or "\\" in name or name.startswith("."):
        return Response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    entry = resources.files("pgtrail.ui").joinpath("static", name)
    if not entry.is_file():
        return Response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    return Response(HTTPStatus.OK, entry.read_bytes(), kind)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
