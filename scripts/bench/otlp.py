"""Spans per second sustained into PostgreSQL through the OTLP receiver, beside the writer.

``pgtrail otlp serve`` runs as its own process, as in production. Client threads send
OTLP/HTTP protobuf requests (512 spans each, the SDK's default batch) over keep-alive
connections; each trace is a multi-agent run of 10 spans (workflow, two agents, four model
calls, three tool calls) with GenAI attributes. The clock runs from the first request to the
moment every trace's ``logs_execution`` row is queryable (its records are committed in the
same or an earlier transaction), so the figure includes decoding, assembly in Redis, the
grace period of the last traces, mapping, and COPY. The writer's own ingest rate
(``ingest.py``'s workload, ``log_*`` to committed) is measured in the same run, alternately,
and the receiver is measured as one process and as ``--receivers`` processes sharing the port
(``--reuse-port``); the one-process setup is measured once more with the same requests in
the OTLP/JSON encoding.

    .venv/bin/python scripts/bench/otlp.py [--spans 50000] [--runs 3] [--receivers 2] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import redis
from benchlib import machine, median, report, scratch_database
from google.protobuf.json_format import MessageToDict
from ingest import TABLES, rows_in, truncate, writer_run
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPANS_PER_TRACE = 10
SPANS_PER_REQUEST = 512
CLIENTS = 2  # sending threads (at least one per receiver process)
GRACE = "0.2s"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
REDIS_URL = os.environ.get("PGTRAIL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _attrs(span: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        target = span.attributes.add(key=key).value
        if isinstance(value, bool):
            target.bool_value = value
        elif isinstance(value, int):
            target.int_value = value
        elif isinstance(value, float):
            target.double_value = value
        else:
            target.string_value = value


def _add_span(
    scope: Any,
    trace_id: bytes,
    ids: list[bytes],
    trace_start_ns: int,
    i: int,
    parent: int | None,
    name: str,
    offset_ms: int,
    ms: int,
    values: dict[str, Any],
) -> None:
    start_ns = trace_start_ns + offset_ms * 1_000_000
    span = scope.spans.add(
        trace_id=trace_id,
        span_id=ids[i],
        parent_span_id=ids[parent] if parent is not None else b"",
        name=name,
        kind=1,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + ms * 1_000_000,
    )
    _attrs(span, values)


def requests_for(traces: int, seed: int) -> list[bytes]:
    """Pre-encoded export requests: the client's cost stays out of the measurement."""
    bodies: list[bytes] = []
    request = ExportTraceServiceRequest()
    scope: Any = None
    in_request = 0
    now = time.time_ns() - 5_000_000_000
    system = json.dumps([{"type": "text", "content": "You are a support agent. " * 20}])
    for t in range(traces):
        if scope is None:
            resource = request.resource_spans.add()
            _attrs(resource.resource, {"service.name": "support-bot"})
            scope = resource.scope_spans.add()
            scope.scope.name = "bench"
        trace_id = secrets.token_bytes(16)
        ids = [secrets.token_bytes(8) for _ in range(SPANS_PER_TRACE)]
        start = now + t * 1000

        add = functools.partial(_add_span, scope, trace_id, ids, start)
        add(
            0,
            None,
            "invoke_workflow support",
            0,
            900,
            {
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": "support",
                "user.id": f"u-{(seed + t) % 5000}",
                "gen_ai.conversation.id": f"c-{(seed + t) // 5}",
            },
        )
        for agent, (first, offset) in (("triage", (1, 10)), ("billing", (6, 450))):
            add(
                first,
                0,
                f"invoke_agent {agent}",
                offset,
                440,
                {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent},
            )
            for k in range(2):
                add(
                    first + 1 + k,
                    first,
                    "chat gpt-4o",
                    offset + 5 + k * 200,
                    150,
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 1000 + t % 500,
                        "gen_ai.usage.output_tokens": 100 + t % 50,
                        "gen_ai.system_instructions": system,
                    },
                )
            tools = 2 if agent == "triage" else 1
            for k in range(tools):
                add(
                    first + 3 + k,
                    first,
                    "execute_tool lookup_order",
                    offset + 160 + k * 200,
                    30,
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "lookup_order",
                        "gen_ai.tool.call.id": f"call_{t}_{k}",
                        "gen_ai.tool.call.arguments": '{"order": 17}',
                    },
                )
        in_request += SPANS_PER_TRACE
        if in_request >= SPANS_PER_REQUEST or t == traces - 1:
            bodies.append(request.SerializeToString())
            request = ExportTraceServiceRequest()
            scope = None
            in_request = 0
    return bodies


def as_otlp_json(body: bytes) -> bytes:
    """A protobuf export request in the OTLP/JSON encoding (ids as hex, not base64)."""
    document = MessageToDict(ExportTraceServiceRequest.FromString(body))
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for field in _ID_FIELDS:
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(document, separators=(",", ":")).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def send(port: int, bodies: list[bytes], content_type: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for body in bodies:
        while True:
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                break
            if response.status not in (429, 502, 503, 504):
                raise RuntimeError(f"receiver answered {response.status}")
            time.sleep(0.2)
    conn.close()


def count_executions(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM logs_execution").fetchone()
        return int(row[0]) if row else 0


def otlp_run(
    dsn: str, traces: int, seed: int, receivers: int, content_type: str = PROTOBUF
) -> tuple[float, int]:
    """One run: spans sent through receiver processes until every execution is queryable."""
    truncate(dsn)
    prefix = f"pgtrail-bench:{secrets.token_hex(4)}:"
    port = _free_port()
    env = {
        **os.environ,
        "PGTRAIL_DSN": dsn,
        "PGTRAIL_REDIS_URL": REDIS_URL,
        "PGTRAIL_REDIS_PREFIX": prefix,
        "PGTRAIL_SPOOL_DIR": str(Path(tempfile.gettempdir()) / "pgtrail-bench-otlp"),
    }
    command = [sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(port)]
    command += ["--grace", GRACE, "--reuse-port", "--no-grpc"]
    servers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(receivers)
    ]
    try:
        _wait_port(port)
        time.sleep(0.5 * receivers)  # every process listening before the clock starts
        bodies = requests_for(traces, seed)
        if content_type == JSON:
            bodies = [as_otlp_json(body) for body in bodies]
        clients = max(CLIENTS, receivers)
        shares = [bodies[i::clients] for i in range(clients)]
        start = time.perf_counter()
        threads = [
            threading.Thread(target=send, args=(port, share, content_type)) for share in shares
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while count_executions(dsn) < traces:
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(60)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return elapsed, rows_in(dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=100_000, help="writer workload size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--receivers", type=int, default=2, help="processes in the wide setup")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--dsn", help="admin DSN of the server to create a scratch database on")
    args = parser.parse_args()
    traces = max(1, args.spans // SPANS_PER_TRACE)
    spans = traces * SPANS_PER_TRACE
    setups = sorted({1, max(1, args.receivers)})
    span_rates: dict[int, list[float]] = {n: [] for n in setups}
    json_rates: list[float] = []
    writer_rates: list[float] = []
    rows_per_run = 0
    with scratch_database(args.dsn) as dsn:
        for run in range(args.runs):
            elapsed, rows, _ = writer_run(dsn, args.events, args.batch_size)
            writer_rates.append(rows / elapsed)
            for n in setups:
                elapsed, rows_per_run = otlp_run(dsn, traces, run * traces, n)
                span_rates[n].append(spans / elapsed)
            elapsed, _ = otlp_run(dsn, traces, run * traces, 1, JSON)
            json_rates.append(spans / elapsed)
    writer_per_s = median(writer_rates)
    one = median(span_rates[1])
    best = max(setups, key=lambda n: median(span_rates[n]))
    summary: dict[str, Any] = {
        "benchmark": "otlp",
        "spans_per_run": spans,
        "traces_per_run": traces,
        "rows_per_run": rows_per_run,
        "rows_per_span": round(rows_per_run / spans, 2),
        "runs": args.runs,
        "grace": GRACE,
        "spans_per_request": SPANS_PER_REQUEST,
        "otlp_spans_per_s": round(one),
        "otlp_rows_per_s": round(one * rows_per_run / spans),
        "otlp_json_spans_per_s": round(median(json_rates)),
        "json_cost_per_span_over_protobuf": round(one / median(json_rates), 3),
        "all_json_spans_per_s": [round(r) for r in json_rates],
        "writer_rows_per_s": round(writer_per_s),
        "ratio_spans_over_writer_rows": round(one / writer_per_s, 3),
        "receivers_setups": {
            str(n): {
                "spans_per_s": round(median(span_rates[n])),
                "all_spans_per_s": [round(r) for r in span_rates[n]],
            }
            for n in setups
        },
        "best_setup_receivers": best,
        "best_ratio_spans_over_writer_rows": round(median(span_rates[best]) / writer_per_s, 3),
        "all_writer_rows_per_s": [round(r) for r in writer_rates],
        "tables": list(TABLES),
        "machine": machine(),
    }
    table_rows: list[list[Any]] = [
        [f"spans queryable, {n} receiver process(es)", float(median(span_rates[n]))] for n in setups
    ]
    table_rows += [
        ["spans queryable, 1 receiver process, OTLP/JSON", float(median(json_rates))],
        ["JSON cost per span / protobuf's", summary["json_cost_per_span_over_protobuf"]],
        ["rows written per span (all tables)", summary["rows_per_span"]],
        ["pgtrail writer rows (log_* to committed)", float(summary["writer_rows_per_s"])],
        ["ratio spans (1 process) / writer rows", summary["ratio_spans_over_writer_rows"]],
        [
            f"ratio spans ({best} processes) / writer rows",
            summary["best_ratio_spans_over_writer_rows"],
        ],
    ]
    report(
        f"OTLP intake, {spans:,} spans in {traces:,} traces per run (median of {args.runs})",
        ["what", "per second"],
        table_rows,
        summary,
    )


if __name__ == "__main__":
    main()
