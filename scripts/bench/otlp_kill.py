"""What a SIGKILL of the OTLP receiver under load costs, with the span journal and without.

Each round starts a receiver in a child process (grace 0.05 s, the writer flushing every
0.5 s as by default), posts traces from 8 clients (a root span and a model call each), kills
the child with SIGKILL mid-load, then counts the traces it had answered 200 for that are
not in ``logs_execution``: right after the kill, and after a new receiver has recovered what
the journal holds. Both modes alternate in one run.

    .venv/bin/python scripts/bench/otlp_kill.py [--kills 5] [--traces 1500] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from benchlib import machine, median, report, scratch_database

from pgtrail.config import Settings
from pgtrail.ops import devservices
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail

_CHILD = """
import sys
from pgtrail.config import Settings
from pgtrail.otlp.server import OtlpReceiver
from pgtrail.trail import Trail

settings = Settings.model_validate_json(sys.argv[1])
trail = Trail(settings)
receiver = OtlpReceiver(trail, port=0, grace_s=0.05, durable=sys.argv[2] == "durable").start()
print(receiver.port, flush=True)
receiver.wait(3600)
"""
_NOW_NS = time.time_ns() - 10_000_000_000


@dataclass(frozen=True)
class Round:
    """One kill."""

    mode: str
    acknowledged: int
    missing_after_kill: int
    missing_after_recovery: int


def trace_body(trace_id: str) -> bytes:
    def span(span_id: str, name: str, parent: str, attributes: list[Any]) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "startTimeUnixNano": str(_NOW_NS),
            "endTimeUnixNano": str(_NOW_NS + 1_000_000_000),
            "attributes": attributes,
        }

    chat = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 100}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
    ]
    root = trace_id[:16]
    spans = [span(root, "invoke_agent assistant", "", []), span(trace_id[16:], "chat", root, chat)]
    return json.dumps(
        {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    ).encode()


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def stored(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT execution_id FROM logs_execution").fetchall()
    return {row[0].hex for row in found}


def journalled(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgtrail_otlp_span").fetchone()
    return int(row[0]) if row else 0


def one_round(settings: Settings, mode: str, traces: int) -> Round:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE logs_execution, logs_llm_execution, logs_agent_execution")
        conn.execute("TRUNCATE logs_user_journey, pgtrail_otlp_span")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, settings.model_dump_json(), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    prefix = uuid.uuid4().hex[:8]

    def send(n: int) -> str | None:
        trace_id = f"{prefix}{n:08x}" + "cd" * 8
        try:
            return trace_id if post(port, trace_body(trace_id)) == 200 else None
        except (OSError, http.client.HTTPException):  # the kill cut the answer off
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, n) for n in range(traces)]
        while sum(f.done() for f in futures) < traces // 2:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        acknowledged = {t for f in futures if (t := f.result()) is not None}
    after_kill = len(acknowledged - stored(settings.dsn))
    with Trail(settings) as trail:
        receiver = OtlpReceiver(trail, port=0, grace_s=0.05)
        receiver.assembler.recover_after_s = 0.0
        deadline = time.monotonic() + 120
        while journalled(settings.dsn) and time.monotonic() < deadline:
            receiver.assembler.recover_stranded(limit=1_000_000)
            receiver.assembler.finalise_rooted()
        receiver.assembler.finalise_rooted()
        receiver.shutdown()
    after_recovery = len(acknowledged - stored(settings.dsn))
    return Round(mode, len(acknowledged), after_kill, after_recovery)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--traces", type=int, default=1500)
    parser.add_argument("--dsn", default=None, help="admin DSN (default: local server)")
    opts = parser.parse_args()
    local_redis = None
    redis_url = "redis://127.0.0.1:6379/0"
    if not devservices.port_open("127.0.0.1", 6379):
        local_redis = devservices.LocalRedis().start()
        redis_url = local_redis.url
    rounds: list[Round] = []
    try:
        with scratch_database(opts.dsn) as dsn:
            for kill in range(opts.kills):
                for mode in ("durable", "volatile"):
                    key_prefix = f"pgtrail-bench-kill:{uuid.uuid4().hex[:8]}:"
                    settings = Settings(dsn=dsn, redis_url=redis_url, redis_prefix=key_prefix)
                    rounds.append(one_round(settings, mode, opts.traces))
                    client = redis.Redis.from_url(redis_url)
                    for key in client.scan_iter(f"{key_prefix}*"):
                        client.delete(key)
                    client.close()
                    print(f"kill {kill + 1} {mode}: {rounds[-1]}", file=sys.stderr)
    finally:
        if local_redis is not None:
            local_redis.stop()
    table: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for mode in ("durable", "volatile"):
        mine = [r for r in rounds if r.mode == mode]
        row = {
            "acknowledged": median([r.acknowledged for r in mine]),
            "missing_after_kill": median([r.missing_after_kill for r in mine]),
            "missing_after_recovery": median([r.missing_after_recovery for r in mine]),
            "worst_missing_after_recovery": max(r.missing_after_recovery for r in mine),
        }
        summary[mode] = row
        table.append([mode, *row.values()])
    report(
        "SIGKILL of the OTLP receiver under load (medians)",
        ["mode", "acknowledged", "missing after kill", "missing after recovery", "worst"],
        table,
        {
            "machine": machine(),
            "kills": opts.kills,
            "traces": opts.traces,
            "summary": summary,
            "rounds": [r.__dict__ for r in rounds],
        },
    )


if __name__ == "__main__":
    main()
