"""Records the OTLP/JSON fixtures of tests/fixtures/otlp/ from real instrumentation libraries.

Not part of the test suite and not run in CI: it needs the instrumentations, which pgtrail
does not depend on. In a virtualenv of its own, install ``openai``,
``openinference-instrumentation-openai``, ``opentelemetry-instrumentation-openai``,
``langgraph``, ``langchain-openai``, ``openinference-instrumentation-langchain`` and
``opentelemetry-sdk``, then run ``python scripts/record_otlp_fixtures.py [OUT_DIR]``
(OUT_DIR defaults to tests/fixtures/otlp/ beside this script).

A fake OpenAI-compatible server on 127.0.0.1 answers every call, so nothing leaves the
machine: plain completions, streamed completions whose first chunk comes after
:data:`FIRST_CHUNK_DELAY_S`, HTTP 429 for clients that send ``X-Fake-Status: 429``, and a
tool call whenever the request offers tools and holds no tool result yet. Each scenario's
spans are caught in memory, written as OTLP/JSON (``resourceSpans``), and scrubbed: file
paths in stack traces are moved under ``/srv/app``, the server's port is fixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIRST_CHUNK_DELAY_S = 0.35
"""How long the fake server waits before a stream's first chunk."""
MODEL = "gpt-4o-mini"
USER_ID = "u-1042"
SESSION_ID = "sess-7f3a"
FIXED_PORT = 8000
NEUTRAL_ROOT = "/srv/app"
GRAPH_NAME = "travel_agent"
# Inner runnables of create_react_agent's model node, left out to keep the fixtures small:
# their children hang from the node instead.
TRIMMED = frozenset({"Prompt", "RunnableSequence", "call_model", "should_continue"})

# -- the fake model server --------------------------------------------------------------------


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _needs_tool_call(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(body.get("tools")) and not any(m.get("role") == "tool" for m in messages)


def _tool_call(body: dict[str, Any]) -> dict[str, Any]:
    function = body["tools"][0]["function"]
    properties = list((function.get("parameters") or {}).get("properties") or {"city": {}})
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": function["name"], "arguments": json.dumps({properties[0]: "Lisbon"})},
    }


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers ``POST /v1/chat/completions`` as OpenAI would, without a model."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
            return
        if self.headers.get("X-Fake-Status") == "429":
            self._json(
                429,
                {
                    "error": {
                        "message": "Rate limit reached for gpt-4o-mini: 3 requests per minute.",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                {"Retry-After": "20"},
            )
            return
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:20]
        model = body.get("model") or MODEL
        if _needs_tool_call(body):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [_tool_call(body)],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": "Sunny in Lisbon, 21 °C."}
            finish = "stop"
        if body.get("stream"):
            self._stream(completion_id, model, message, finish, body)
            return
        self._json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model + "-2024-07-18",
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": _usage(42, 9),
                "system_fingerprint": "fp_fake",
            },
        )

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self,
        completion_id: str,
        model: str,
        message: dict[str, Any],
        finish: str,
        body: dict[str, Any],
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        time.sleep(FIRST_CHUNK_DELAY_S)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model + "-2024-07-18",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*", message.get("content") or ""):
            time.sleep(0.02)
            chunk({"content": piece})
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model + "-2024-07-18",
                "choices": [],
                "usage": _usage(42, 9),
            }
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


# -- OTLP/JSON ---------------------------------------------------------------------------------


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (values or {}).items()]


def otlp_json(spans: list[Any]) -> dict[str, Any]:
    """The spans as an OTLP/JSON trace request, grouped by resource and scope."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    resources: dict[str, Any] = {}
    for span in spans:
        resource = json.dumps(dict(span.resource.attributes), sort_keys=True)
        resources[resource] = span.resource
        scope = span.instrumentation_scope
        groups.setdefault((resource, scope.name, scope.version or ""), []).append(span)
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for (resource, scope_name, scope_version), members in groups.items():
        by_resource.setdefault(resource, []).append(
            {
                "scope": {"name": scope_name, "version": scope_version},
                "spans": [_span(s) for s in sorted(members, key=lambda s: s.start_time)],
            }
        )
    return {
        "resourceSpans": [
            {"resource": {"attributes": _attributes(resources[r].attributes)}, "scopeSpans": scopes}
            for r, scopes in by_resource.items()
        ]
    }


def _span(span: Any) -> dict[str, Any]:
    context = span.context
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK counts from INTERNAL = 0, OTLP from UNSPECIFIED
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [
            {
                "timeUnixNano": str(e.timestamp),
                "name": e.name,
                "attributes": _attributes(e.attributes),
            }
            for e in span.events
        ]
    return out


def trim(request: dict[str, Any]) -> dict[str, Any]:
    """Leaves out the spans named in :data:`TRIMMED`, their children moved to their parent."""
    spans = [
        span
        for resource in request["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    parents = {s["spanId"]: s.get("parentSpanId") for s in spans}
    dropped = {s["spanId"] for s in spans if s["name"] in TRIMMED}
    for span in spans:
        parent = span.get("parentSpanId")
        while parent in dropped:
            parent = parents.get(parent)
        if parent:
            span["parentSpanId"] = parent
    for resource in request["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            scope["spans"] = [s for s in scope["spans"] if s["spanId"] not in dropped]
    return request


def _scrubber(port: int) -> Callable[[str], str]:
    """Replaces this machine's paths and the server's port with neutral ones."""
    site = sysconfig.get_paths()["purelib"]
    stdlib = sysconfig.get_paths()["stdlib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    here = str(Path(__file__).resolve().parent)
    home = os.path.expanduser("~")
    replacements = [
        (site, f"{NEUTRAL_ROOT}/.venv/lib/{version}/site-packages"),
        (stdlib, f"/usr/lib/{version}"),
        (here, NEUTRAL_ROOT),
        (home, NEUTRAL_ROOT),
        (f"127.0.0.1:{port}", f"127.0.0.1:{FIXED_PORT}"),
    ]
    replacements = [(a, b) for a, b in replacements if a and a != "/"]

    def scrub(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text

    return scrub


# -- scenarios ---------------------------------------------------------------------------------


def _openai_scenarios(client_factory: Callable[..., Any]) -> dict[str, Callable[[], None]]:
    messages = [
        {"role": "system", "content": "You are a terse weather assistant."},
        {"role": "user", "content": "Weather in Lisbon?"},
    ]

    def plain() -> None:
        client_factory().chat.completions.create(model=MODEL, messages=messages, temperature=0.2)

    def stream() -> None:
        chunks = client_factory().chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        for _ in chunks:
            pass

    def rate_limited() -> None:
        import openai

        with contextlib.suppress(openai.RateLimitError):
            client_factory(headers={"X-Fake-Status": "429"}).chat.completions.create(
                model=MODEL, messages=messages, temperature=0.2
            )

    return {"": plain, "_stream": stream, "_429": rate_limited}


def _langgraph_run(base_url: str, failing: bool) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    @tool  # type: ignore[untyped-decorator]
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        if failing:
            raise ConnectionError(f"weather service unreachable for {city}")
        return f"Sunny in {city}, 21 °C."

    model = ChatOpenAI(model=MODEL, base_url=base_url, api_key="sk-fake", max_retries=0)
    agent = create_react_agent(model, [get_weather], name=GRAPH_NAME)
    config = {
        "metadata": {"user_id": USER_ID, "session_id": SESSION_ID},
        "configurable": {"thread_id": "thread-12"},
    }
    try:
        agent.invoke({"messages": [("user", "Weather in Lisbon?")]}, config=config)
    except ConnectionError:
        if not failing:
            raise


GROUPS = ("openinference-openai", "openllmetry-openai", "openinference-langchain")
"""Each group records in a process of its own: instrumentors do not all undo their patches."""


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "--group":
        _record_group(argv[2], argv[3], Path(argv[4]), int(argv[5]))
        return 0
    out_dir = (
        Path(argv[1])
        if len(argv) > 1
        else Path(__file__).resolve().parent.parent / "tests/fixtures/otlp"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for group in GROUPS:
            command = [sys.executable, __file__, "--group", group, f"http://127.0.0.1:{port}/v1"]
            subprocess.run([*command, str(out_dir), str(port)], check=True)
    finally:
        server.shutdown()
    return 0


def _record_group(group: str, base_url: str, out_dir: Path, port: int) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    scrub = _scrubber(port)
    exporter = InMemorySpanExporter()
    resource = Resource.create(
        {"service.name": "travel-agent", "service.instance.id": "instance-1"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def save(name: str) -> None:
        spans = list(exporter.get_finished_spans())
        exporter.clear()
        request = trim(otlp_json(spans))
        text = scrub(json.dumps(request, indent=1, ensure_ascii=False))
        (out_dir / f"{name}.json").write_text(text + "\n", encoding="utf-8")
        kept = sum(
            len(scope["spans"]) for r in request["resourceSpans"] for scope in r["scopeSpans"]
        )
        print(f"{name}.json: {kept} spans, {len(text)} bytes")

    def client_factory(headers: dict[str, str] | None = None) -> Any:
        import openai

        return openai.OpenAI(
            base_url=base_url, api_key="sk-fake", max_retries=0, default_headers=headers
        )

    if group == "openinference-langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
        _langgraph_run(base_url, failing=False)
        save("openinference_langgraph_agent")
        _langgraph_run(base_url, failing=True)
        save("openinference_langgraph_tool_error")
        return
    if group == "openinference-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        family = "openinference"
        scenarios: tuple[str, ...] = ("", "_stream", "_429")
    else:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

        OpenLLMetry().instrument(tracer_provider=provider)
        family, scenarios = "openllmetry", ("", "_stream")
    runs = _openai_scenarios(client_factory)
    for suffix in scenarios:
        runs[suffix]()
        save(f"{family}_openai{suffix}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
