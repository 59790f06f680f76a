"""Requests and responses of the UI, and the headers every response carries.

The UI changes nothing, so it answers GET and HEAD only; its pages hold no script at all,
and the Content-Security-Policy says so, so text from the database that slipped past the
escaping still could not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No script of any kind, styles and images from the UI itself, never framed."""
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)
"""Headers of every response, refusals included."""
HTML = "text/html; charset=utf-8"
JSON = "application/json"
CSV = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One request, as the pages see it.

    Attributes:
        method: the HTTP method, upper case.
        segments: the path's segments, each percent-decoded on its own (so an id holding
            ``/`` stays one segment), without a ``.json`` or ``.csv`` suffix of the last one.
        suffix: ``json``, ``csv`` or empty: the twin the path asks for.
        query: the query parameters; the last value of a repeated name wins, empty ones are
            left out.
        headers: the headers, names in lower case (the last of a repeated name wins).
    """

    method: str
    segments: tuple[str, ...]
    suffix: str
    query: dict[str, str]
    headers: dict[str, str]

    @classmethod
    def from_scope(cls, scope: dict[str, object]) -> Request:
        """The request an ASGI ``http`` scope describes.

        Args:
            scope: the ASGI connection scope.
        """
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", "/"))
        path = path.split("?", 1)[0]
        suffix = ""
        for candidate in ("json", "csv"):
            if path.endswith(f".{candidate}"):
                path, suffix = path[: -len(candidate) - 1], candidate
                break
        segments = tuple(unquote(s, errors="replace") for s in path.split("/") if s)
        query_string = scope.get("query_string", b"")
        text = query_string.decode("latin-1") if isinstance(query_string, bytes) else ""
        query = dict(parse_qsl(text, keep_blank_values=False))
        pairs = scope.get("headers", [])
        headers: dict[str, str] = {}
        if isinstance(pairs, list | tuple):
            for name, value in pairs:
                headers[bytes(name).decode("latin-1").lower()] = bytes(value).decode("latin-1")
        method = str(scope.get("method", "GET")).upper()
        return cls(method, segments, suffix, query, headers)

    @property
    def wants_json(self) -> bool:
        """Whether the JSON twin is asked for: a ``.json`` path, or JSON before HTML in Accept."""
        if self.suffix == "json":
            return True
        accept = self.headers.get("accept", "")
        kinds = [part.split(";", 1)[0].strip() for part in accept.split(",")]
        if "application/json" not in kinds:
            return False
        return "text/html" not in kinds or kinds.index("application/json") < kinds.index(
            "text/html"
        )


@dataclass(frozen=True)
class Response:
    """One response; the security headers are added when it is sent.

    Attributes:
        status: the HTTP status code.
        body: the body.
        content_type: its media type.
        headers: other headers, names in lower case.
    """

    status: int
    body: bytes
    content_type: str = HTML
    headers: tuple[tuple[str, str], ...] = field(default=())

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Every header of the response, encoded for ASGI."""
        pairs = [
            ("content-type", self.content_type),
            ("content-length", str(len(self.body))),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
