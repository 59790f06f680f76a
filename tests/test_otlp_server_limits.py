"""The receiver's HTTP server under slow, idle, crowded, smuggling and impatient clients.

Each test runs a real server (in-process uvicorn on a free port, or ``pgtrail otlp serve`` as
its own process) and judges it by what clients see and what PostgreSQL holds.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dbrows import one, rows
from otlp_builders import receivers
from pgtrail.config import Settings
from pgtrail.ops.devservices import LocalRedis
from pgtrail.otlp.server import OtlpReceiver, ServerLimits

TOKEN = "limits-token-51c2"
NOW_NS = time.time_ns() - 10_000_000_000


def root_span_request(trace_id: str, span_id: str, name: str = "invoke_agent assistant") -> bytes:
    """An OTLP/JSON export of one root span."""
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": "SPAN_KIND_INTERNAL",
        "startTimeUnixNano": str(NOW_NS),
        "endTimeUnixNano": str(NOW_NS + 1_000_000),
        "status": {"code": "STATUS_CODE_OK"},
    }
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "limits"}}]
                },
                "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}],
            }
        ]
    }
    return json.dumps(request).encode()


def protobuf_root(trace_id: str, span_id: str) -> bytes:
    """An OTLP/protobuf export of one root span."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.spans.add(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        name="invoke_agent assistant",
        start_time_unix_nano=NOW_NS,
        end_time_unix_nano=NOW_NS + 1_000_000,
    )
    encoded: bytes = request.SerializeToString()
    return encoded


def executions(dsn: str) -> set[str]:
    return {r[0].hex for r in rows(dsn, "SELECT execution_id FROM logs_execution")}


def settled(receiver: OtlpReceiver) -> None:
    time.sleep(receiver.assembler.grace_s + 0.1)
    receiver.assembler.finalise_due()
    receiver.trail.flush()


@pytest.fixture
def make_receiver(settings: Settings) -> Iterator[Callable[..., OtlpReceiver]]:
    """Starts receivers (port 0, token, short grace) and stops them after the test."""
    with receivers(settings, token=TOKEN, grace_s=0.2) as make:
        yield make


def health(port: int, timeout: float = 3.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def raw_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    token: str | None = TOKEN,
    extra: str = "",
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def read_response(reader: IO[bytes]) -> tuple[int, dict[str, str], bytes]:
    """One response from a connection's reader; responses that follow stay unread."""
    status_line = reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline().strip()) != b"":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return status, headers, body


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading whatever it sent), or None."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


# -- timeouts ----------------------------------------------------------------------------------


def test_half_sent_headers_are_cut_off_while_health_keeps_answering(
    make_receiver: Callable[..., OtlpReceiver],
) -> None:
    receiver = make_receiver(limits=ServerLimits(header_timeout_s=1.0, keep_alive_s=30))
    half = socket.create_connection((receiver.host, receiver.port))
    half.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-")
    # A byte every 0.3 s: uvicorn's own keep-alive timer would restart on each one.
    trickle = socket.create_connection((receiver.host, receiver.port))
    stop = threading.Event()

    def drip() -> None:
        for byte in b"POST /v1/traces HTTP/1.1\r\nHost: t\r\n" * 10:
            if stop.wait(0.3):
                return
            try:
                trickle.send(bytes([byte]))
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        assert health(receiver.port, timeout=1.0) == 200
        assert (elapsed := closed_within(half, 4.0)) is not None and elapsed < 2.5
        assert closed_within(trickle, 4.0) is not None
        assert health(receiver.port, timeout=1.0) == 200
    finally:
        stop.set()
        half.close()
        trickle.close()


def test_a_body_slower_than_its_deadline_gets_408_and_a_closed_connection(
    make_receiver: Callable[..., OtlpReceiver],
) -> None:
    receiver = make_receiver(limits=ServerLimits(body_timeout_s=1.0))
    sock = socket.create_connection((receiver.host, receiver.port))
    body = root_span_request("ab" * 16, "cd" * 8)
    sock.sendall(raw_request("POST", "/v1/traces", body)[: -len(body) // 2])
    started = time.monotonic()
    reader = sock.makefile("rb")
    sock.settimeout(5)
    status, headers, _ = read_response(reader)
    assert (status, headers.get("connection")) == (408, "close")
    assert time.monotonic() - started < 3
    assert reader.read() == b""  # closed: the rest of the body cannot become a request
    sock.close()
    assert receiver.stats.spans_accepted == 0


def test_three_hundred_idle_connections_do_not_stop_health(
    make_receiver: Callable[..., OtlpReceiver],
) -> None:
    receiver = make_receiver(limits=ServerLimits(header_timeout_s=30.0))
    idle = [socket.create_connection((receiver.host, receiver.port)) for _ in range(300)]
    try:
        started = time.monotonic()
        assert [health(receiver.port) for _ in range(5)] == [200] * 5
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()


def _serve_command(settings: Settings, port: int, *extra: str) -> list[str]:
    # HTTP only: gRPC under load and SIGTERM is tests/test_otlp_grpc.py's.
    command = [sys.executable, "-m", "pgtrail", "otlp", "serve", "--port", str(port), "--no-grpc"]
    return [*command, *extra]


def _serve_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PGTRAIL_DSN": settings.dsn,
        "PGTRAIL_REDIS_URL": str(settings.redis_url),
        "PGTRAIL_REDIS_PREFIX": settings.redis_prefix,
        "PGTRAIL_SPOOL_DIR": str(settings.spool_dir),
        "PGTRAIL_OTLP_TOKEN": TOKEN,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, server: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the receiver did not listen in time")


def _descriptor_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@pytest.mark.slow
def test_idle_connections_beyond_the_descriptor_limit_are_shed_and_health_answers(
    settings: Settings, tmp_path: Path
) -> None:
    """The attack that silenced the old server: more idle connections than descriptors."""
    port = _free_port()
    log_path = tmp_path / "receiver.log"
    log_file = log_path.open("w")
    server = subprocess.Popen(
        _serve_command(settings, port, "--header-timeout", "1s"),
        env=_serve_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        text=True,
        preexec_fn=_descriptor_limit(256),  # the limit applies to the server only
    )
    idle: list[socket.socket] = []
    try:
        _wait_listening(port, server)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        deadline = time.monotonic() + 15
        answered = False
        while not answered and time.monotonic() < deadline:
            try:
                answered = health(port, timeout=5.0) == 200
            except OSError:
                time.sleep(0.2)
        assert answered
        assert sum(closed_within(s, 0.05) is not None for s in idle) > 250  # shed, not held
    finally:
        for sock in idle:
            sock.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log_file.close()
    assert server.returncode == 0
    said = log_path.read_text()
    assert "cannot accept connections: Too many open files" in said
    assert len(said) < 10_000  # said once in a while, not a traceback per refused accept


# -- load ----------------------------------------------------------------------------------------


def test_two_hundred_concurrent_clients_all_get_answers(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver()
    clients = 200
    barrier = threading.Barrier(clients)
    statuses: list[int | str] = []
    lock = threading.Lock()
    traces = [uuid.uuid4().hex for _ in range(clients)]

    def client(index: int) -> None:
        barrier.wait()
        try:
            conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=30)
            conn.request(
                "POST",
                "/v1/traces",
                body=root_span_request(traces[index], f"{index + 1:016x}"),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            status: int | str = conn.getresponse().status
            conn.close()
        except OSError as exc:
            status = repr(exc)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * clients
    settled(receiver)
    assert executions(settings.dsn) == set(traces)


def test_json_on_a_kept_alive_connection_does_not_stall(
    make_receiver: Callable[..., OtlpReceiver],
) -> None:
    receiver = make_receiver()
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    conn.connect()
    # As exporters' HTTP clients do: http.client writes headers and body apart, and with
    # Nagle on that is the client's own stall, not the server's.
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    conn.request("POST", "/v1/traces", body=root_span_request("1" * 32, "2" * 16), headers=headers)
    conn.getresponse().read()
    sock = conn.sock
    took: list[float] = []
    for index in range(30):
        started = time.monotonic()
        body = root_span_request(f"{index + 1:032x}", "3" * 16)
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        took.append(time.monotonic() - started)
        assert response.status == 200
    assert conn.sock is sock  # one connection throughout
    conn.close()
    assert sorted(took)[len(took) // 2] < 0.02  # the old server waited ~44 ms on each


# -- framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "token", "status"),
    [
        ("/v1/metrics", "application/json", TOKEN, 404),
        ("/v1/traces", "application/json", "wrong-token", 401),
        ("/v1/traces", "text/plain", TOKEN, 415),
    ],
)
def test_a_refused_requests_body_is_never_read_as_the_next_request(
    settings: Settings,
    make_receiver: Callable[..., OtlpReceiver],
    path: str,
    content_type: str,
    token: str,
    status: int,
) -> None:
    receiver = make_receiver()
    hidden_trace = "9" * 32
    hidden = raw_request("POST", "/v1/traces", root_span_request(hidden_trace, "8" * 16))
    sock = socket.create_connection((receiver.host, receiver.port))
    sock.settimeout(5)
    # The refused request's body is a whole export; then a real request on the same connection.
    sock.sendall(
        raw_request("POST", path, hidden, content_type=content_type, token=token)
        + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    reader = sock.makefile("rb")
    first = read_response(reader)
    second = read_response(reader)
    assert first[0] == status
    assert (second[0], second[2]) == (200, b"pgtrail OTLP receiver\n")
    visible = "7" * 32
    sock.sendall(raw_request("POST", "/v1/traces", root_span_request(visible, "6" * 16)))
    assert read_response(reader)[0] == 200
    sock.close()
    settled(receiver)
    assert executions(settings.dsn) == {visible}
    assert receiver.stats.spans_accepted == 1


def test_a_gzip_body_of_two_members_stores_both_members_spans(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver(max_body_bytes=64 * 1024)
    first, second = "a1" * 16, "b2" * 16
    # Concatenated protobuf messages merge: the inflated body is one request with both.
    body = gzip.compress(protobuf_root(first, "c3" * 8)) + gzip.compress(
        protobuf_root(second, "d4" * 8)
    )
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "gzip",
        "Authorization": f"Bearer {TOKEN}",
    }
    conn.request("POST", "/v1/traces", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    # Members each under the limit, together over it: refused, whichever member crosses it.
    member = gzip.compress(b"\x00" * (40 * 1024))
    conn.request("POST", "/v1/traces", body=member + member, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 413
    conn.close()
    settled(receiver)
    assert executions(settings.dsn) == {first, second}
    assert receiver.stats.spans_accepted == 2


# -- backpressure --------------------------------------------------------------------------------


def _post_json(receiver: OtlpReceiver, body: bytes) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=30)
    conn.request(
        "POST",
        "/v1/traces",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), answer


def test_a_full_writer_queue_gets_429_with_retry_after(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    depth = [settings.queue_size]
    receiver = make_receiver(queue_depth=lambda: depth[0])
    status, headers, answer = _post_json(receiver, root_span_request("e5" * 16, "f6" * 8))
    assert (status, headers["Retry-After"]) == (429, "1")
    assert "writer's queue is full" in json.loads(answer)["message"]
    depth[0] = 0
    assert _post_json(receiver, root_span_request("e6" * 16, "f7" * 8))[0] == 200
    settled(receiver)
    assert executions(settings.dsn) == {"e6" * 16}
    assert receiver.stats.refused == 1


def test_exports_beyond_the_pending_bound_get_429_until_one_finishes(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    receiver = make_receiver(limits=ServerLimits(max_pending_exports=1))
    gate = threading.Event()
    accept = receiver.assembler.accept

    def slow_accept(spans: Any) -> int:
        gate.wait(10)
        return accept(spans)

    receiver.assembler.accept = slow_accept  # type: ignore[method-assign]
    first: list[int] = []
    holder = threading.Thread(
        target=lambda: first.append(_post_json(receiver, root_span_request("1a" * 16, "2b" * 8))[0])
    )
    holder.start()
    deadline = time.monotonic() + 5
    while receiver.stats.requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    status, headers, _ = _post_json(receiver, root_span_request("3c" * 16, "4d" * 8))
    assert (status, headers["Retry-After"]) == (429, "1")
    gate.set()
    holder.join(10)
    assert first == [200]
    assert _post_json(receiver, root_span_request("3c" * 16, "4d" * 8))[0] == 200
    settled(receiver)
    assert executions(settings.dsn) == {"1a" * 16, "3c" * 16}


def test_a_stopped_redis_gets_503_with_retry_after(
    settings: Settings, make_receiver: Callable[..., OtlpReceiver]
) -> None:
    local = LocalRedis().start()
    try:
        receiver = make_receiver(settings.model_copy(update={"redis_url": local.url}))
        assert _post_json(receiver, root_span_request("5e" * 16, "6f" * 8))[0] == 200
    finally:
        local.stop()
    status, headers, answer = _post_json(receiver, root_span_request("7a" * 16, "8b" * 8))
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "retry later" in json.loads(answer)["message"]


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_a_stream_of_requests_keeps_every_answered_trace(
    settings: Settings,
) -> None:
    port = _free_port()
    server = subprocess.Popen(
        _serve_command(settings, port, "--grace", "1h"),
        env=_serve_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def stream() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            trace = uuid.uuid4().hex
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(
                    "POST",
                    "/v1/traces",
                    body=root_span_request(trace, "1" * 16),
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {TOKEN}",
                    },
                )
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    with lock:
                        answered.append(trace)
                if response.getheader("Connection") == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                if server.poll() is not None:
                    return
                time.sleep(0.01)

    try:
        _wait_listening(port, server)
        clients = [threading.Thread(target=stream) for _ in range(8)]
        for client in clients:
            client.start()
        time.sleep(1.5)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
            server.communicate()
    for client in clients:
        client.join(30)
    assert server.returncode == 0, err
    assert len(answered) > 20
    # The grace period was an hour: each was finalised because the receiver stopped.
    stored = executions(settings.dsn)
    assert set(answered) <= stored
    assert one(settings.dsn, "SELECT count(*) FROM logs_execution") == len(stored)
