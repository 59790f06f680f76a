"""Caller-side cost of one ``log_llm_execution`` beside one OpenTelemetry SDK span.

Both run in the same process, the same run, with the same fields: pgtrail with its
background flusher writing to a real PostgreSQL, the OpenTelemetry SDK with a
BatchSpanProcessor and an exporter that discards (its network cost is not the caller's).

    .venv/bin/python scripts/bench/overhead.py [--calls 20000] [--rounds 5] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, median, percentile, report, scratch_database
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import pgtrail
from pgtrail import Trail


class DiscardingExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def time_calls(call: Callable[[int], None], count: int) -> list[float]:
    """Per-call wall time in microseconds."""
    clock = time.perf_counter_ns
    samples = [0.0] * count
    for i in range(count):
        start = clock()
        call(i)
        samples[i] = (clock() - start) / 1000
    return samples


def pgtrail_round(dsn: str, count: int) -> list[float]:
    trail = Trail(dsn=dsn, redis_url=None, spool_dir=Path(tempfile.gettempdir()) / "pgtrail-bench")

    def call(i: int) -> None:
        pgtrail.log_llm_execution(
            agent_type="coaching",
            model="claude-sonnet-4-20250514",
            provider="anthropic",
            input_tokens=12570 + i,
            output_tokens=1568,
            cached_input_tokens=0,
            processing_time_ms=25937,
            time_to_first_token_ms=900,
            prompt_version="v6",
            data={"turn": i, "scope": "coaching"},
        )

    with trail.execution("bench", user_id="57", session_id="s1"):
        samples = time_calls(call, count)
    trail.close()
    return samples


def otel_round(count: int) -> list[float]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
    tracer = provider.get_tracer("bench")

    def call(i: int) -> None:
        with tracer.start_as_current_span("chat claude-sonnet-4-20250514") as span:
            span.set_attributes(
                {
                    "gen_ai.agent.name": "coaching",
                    "gen_ai.request.model": "claude-sonnet-4-20250514",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.usage.input_tokens": 12570 + i,
                    "gen_ai.usage.output_tokens": 1568,
                    "gen_ai.usage.cache_read.input_tokens": 0,
                    "pgtrail.processing_time_ms": 25937,
                    "gen_ai.response.time_to_first_chunk": 0.9,
                    "pgtrail.prompt_version": "v6",
                    "turn": i,
                    "scope": "coaching",
                }
            )

    with tracer.start_as_current_span("bench"):
        samples = time_calls(call, count)
    provider.shutdown()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dsn", help="admin DSN of the server to create a scratch database on")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"pgtrail": {}, "otel": {}}
    with scratch_database(args.dsn) as dsn:
        pgtrail_round(dsn, 2000)  # warm-up: imports, pool, prices
        otel_round(2000)
        for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
            for name, samples in (
                ("pgtrail", pgtrail_round(dsn, args.calls)),
                ("otel", otel_round(args.calls)),
            ):
                results[name].setdefault("p50", []).append(percentile(samples, 50))
                results[name].setdefault("p99", []).append(percentile(samples, 99))
                results[name].setdefault("mean", []).append(sum(samples) / len(samples))
    summary: dict[str, Any] = {
        name: {stat: round(median(vals), 2) for stat, vals in stats.items()}
        for name, stats in results.items()
    }
    summary["ratio_p50_pgtrail_over_otel"] = round(
        summary["pgtrail"]["p50"] / summary["otel"]["p50"], 3
    )
    summary["calls_per_round"] = args.calls
    summary["rounds"] = args.rounds
    summary["machine"] = machine()
    rows = [
        [name, s["p50"], s["p99"], s["mean"]]
        for name, s in (
            ("pgtrail log_llm_execution", summary["pgtrail"]),
            ("OpenTelemetry SDK span", summary["otel"]),
        )
    ]
    report(
        "caller-side cost per call, µs (median of rounds)",
        ["what", "p50", "p99", "mean"],
        rows,
        {"benchmark": "overhead", **summary},
    )


if __name__ == "__main__":
    main()
