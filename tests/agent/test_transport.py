"""The transport against a collector stand-in on loopback (answers from a script),
and against the real collector for fork and exit."""

from __future__ import annotations

import gzip
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import perfpulse.agent
from conftest import INGEST_KEY, Server, free_port, serve_app
from perfpulse.agent.asgi import PerfpulseMiddleware
from perfpulse.agent.scope import record
from perfpulse.agent.transport import Transport

from .conftest import Start

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    raw_bytes: int
    batch: dict[str, Any]


class StandIn:
    """A collector stand-in: answers each POST with the next scripted status (then 202)."""

    def __init__(self, script: list[int | tuple[int, dict[str, str]]], port: int = 0) -> None:
        self.script = list(script)
        self.got: list[Received] = []
        self.fail_with: int | None = None  # answer every request with this while set
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = (
                    gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                )
                stand_in.got.append(
                    Received(time.monotonic(), dict(self.headers), len(body), json.loads(body))
                )
                status, headers = 202, {}
                if stand_in.fail_with is not None:
                    status = stand_in.fail_with
                elif stand_in.script:
                    step = stand_in.script.pop(0)
                    status, headers = step if isinstance(step, tuple) else (step, {})
                answer = b'{"accepted":1}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.got for e in r.batch["events"]]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    s = StandIn([])
    yield s
    s.close()


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "http", "ts": time.time(), "route": "/n", "method": "GET", "status": 200,
            "duration_ms": 1.0, "request_id": f"r{n}", **extra}  # fmt: skip


def started(transport: Transport) -> Transport:
    transport.start()
    return transport


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def test_5xx_and_429_are_retried_with_the_same_batch_and_the_app_never_notices(
    stand_in: StandIn, agent: Start
) -> None:
    stand_in.script = [500, (429, {"Retry-After": "1"}), 202]
    agent(endpoint=stand_in.url, environment="staging", flush_interval_s=60)
    app = Starlette(routes=[Route("/hello/{name}", hello)])
    app.add_middleware(PerfpulseMiddleware)
    with serve_app(app) as url:
        answers = [httpx.get(f"{url}/hello/{i}").status_code for i in range(3)]
    assert answers == [200, 200, 200]
    assert perfpulse.agent.flush(timeout_s=15)

    assert len(stand_in.got) == 3
    ids = {r.batch["batch_id"] for r in stand_in.got}
    assert len(ids) == 1, "a retry reuses the batch id"
    assert all(r.batch == stand_in.got[0].batch for r in stand_in.got)
    assert stand_in.got[2].at - stand_in.got[1].at >= 0.95, "Retry-After: 1 is honoured"
    first = stand_in.got[0]
    assert first.headers["Authorization"] == f"Bearer {INGEST_KEY}"
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.batch["resource"] == {
        "service": "shop", "environment": "staging", "release": "1.0",
        "host": socket.gethostname(),
    }  # fmt: skip
    assert first.batch["dropped"] == 0
    assert [e["route"] for e in first.batch["events"]] == ["/hello/{name}"] * 3
    s = perfpulse.agent.stats()
    assert (s.sent_events, s.sent_batches, s.retries, s.queued) == (3, 1, 2, 0)


def test_other_4xx_are_not_retried_and_the_agent_goes_on(stand_in: StandIn) -> None:
    stand_in.script = [400]
    transport = started(Transport(stand_in.url, "k", {"service": "s"}, flush_interval_s=0.02))
    try:
        transport.enqueue(event(1))
        assert transport.flush(5)
        time.sleep(0.3)
        assert len(stand_in.got) == 1
        transport.enqueue(event(2))
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert [r.batch["events"][0]["request_id"] for r in stand_in.got] == ["r1", "r2"]
    s = transport.stats()
    assert (s.rejected_batches, s.retries, s.sent_events) == (1, 0, 1)


def test_overflow_drops_the_oldest_and_reports_how_many(stand_in: StandIn) -> None:
    transport = Transport(stand_in.url, "k", {"service": "s"}, queue_size=5, flush_interval_s=0.02)
    for n in range(8):
        transport.enqueue(event(n))
    assert transport.stats().dropped_events == 3
    started(transport)
    try:
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    (batch,) = [r.batch for r in stand_in.got]
    assert [e["request_id"] for e in batch["events"]] == ["r3", "r4", "r5", "r6", "r7"]
    assert batch["dropped"] == 3


def test_connection_errors_are_retried_until_the_collector_answers() -> None:
    port = free_port()
    transport = Transport(
        f"http://127.0.0.1:{port}", "k", {"service": "s"}, flush_interval_s=0.02,
        backoff_base_s=0.05, backoff_cap_s=0.2,
    )  # fmt: skip
    started(transport)
    transport.enqueue(event(1))
    time.sleep(0.6)
    late = StandIn([], port=port)
    try:
        assert transport.flush(10)
    finally:
        transport.shutdown(2)
        late.close()
    assert [e["request_id"] for e in late.events()] == ["r1"]
    assert transport.stats().retries >= 2


def test_a_batch_given_up_on_is_reported_as_dropped(stand_in: StandIn) -> None:
    stand_in.fail_with = 503
    transport = Transport(
        stand_in.url, "k", {"service": "s"}, flush_interval_s=0.02,
        backoff_base_s=0.02, backoff_cap_s=0.05, give_up_after_s=0.3,
    )  # fmt: skip
    started(transport)
    try:
        transport.enqueue(event(1))
        transport.enqueue(event(2))
        assert transport.flush(5)
        assert len(stand_in.got) >= 2
        stand_in.fail_with = None
        transport.enqueue(event(3))
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    last = stand_in.got[-1].batch
    assert [e["request_id"] for e in last["events"]] == ["r3"]
    assert last["dropped"] == 2
    assert transport.stats().dropped_events == 2


def test_batches_are_cut_by_count_and_by_size(stand_in: StandIn) -> None:
    transport = Transport(stand_in.url, "k", {"service": "s"}, batch_size=10, flush_interval_s=5)
    for n in range(25):
        transport.enqueue(event(n))
    started(transport)
    try:
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert [len(r.batch["events"]) for r in stand_in.got] == [10, 10, 5]
    assert len({r.batch["batch_id"] for r in stand_in.got}) == 3

    stand_in.got.clear()
    transport = Transport(stand_in.url, "k", {"service": "s"}, max_body_bytes=2_000)
    for n in range(40):
        transport.enqueue(event(n, padding="x" * 200))
    started(transport)
    try:
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert len(stand_in.got) > 5
    assert all(r.raw_bytes <= 2_000 for r in stand_in.got)
    assert [e["request_id"] for e in stand_in.events()] == [f"r{n}" for n in range(40)]


def test_an_event_json_cannot_hold_is_skipped_alone(stand_in: StandIn) -> None:
    transport = started(Transport(stand_in.url, "k", {"service": "s"}, flush_interval_s=0.02))
    try:
        transport.enqueue(event(1, duration_ms=math.nan))
        transport.enqueue(event(2, extra=object()))
        transport.enqueue(event(3))
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert [e["request_id"] for e in stand_in.events()] == ["r3"]
    assert transport.stats().unencodable_events == 2


def test_a_batch_refused_for_a_nan_is_sent_again_without_it(server: Server) -> None:
    transport = Transport(server.url, INGEST_KEY, {"service": "nan"}, flush_interval_s=0.02)
    transport.enqueue(event(1, duration_ms=math.nan))  # msgspec sends null: the collector says 400
    transport.enqueue(event(2))
    started(transport)
    try:
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert server.stop() == 0
    assert server.rows("SELECT request_id, service FROM http") == [("r2", "nan")]
    s = transport.stats()
    assert (s.sent_batches, s.rejected_batches, s.unencodable_events) == (1, 0, 1)


def test_a_failing_periodic_job_does_not_stop_the_sender(stand_in: StandIn) -> None:
    runs: list[float] = []

    def job() -> None:
        runs.append(time.monotonic())
        raise RuntimeError("sampler broke")

    transport = Transport(stand_in.url, "k", {"service": "s"}, flush_interval_s=0.02)
    transport.every(0.05, job)
    started(transport)
    try:
        time.sleep(0.3)
        transport.enqueue(event(1))
        assert transport.flush(5)
    finally:
        transport.shutdown(2)
    assert len(runs) >= 4, "the job keeps its schedule after raising"
    assert [e["request_id"] for e in stand_in.events()] == ["r1"]


def test_enqueue_never_waits_for_a_hung_collector() -> None:
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen()  # accepts connections, never answers
    port = hung.getsockname()[1]
    transport = started(
        Transport(f"http://127.0.0.1:{port}", "k", {"service": "s"}, batch_size=100)
    )
    try:
        begin = time.perf_counter()
        for n in range(50_000):
            transport.enqueue(event(n))
        elapsed = time.perf_counter() - begin
    finally:
        transport._stop.set()  # the sender is stuck in a read: do not wait for it
        hung.close()
    assert elapsed < 1.0
    assert transport.stats().dropped_events >= 50_000 - 10_000 - 100


def _fork_and_record_in_child() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            record(event(0, route="/child", request_id="child"))
            code = 0 if perfpulse.agent.flush(timeout_s=10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_sends_its_own_events(server: Server, agent: Start) -> None:
    agent(endpoint=server.url, flush_interval_s=60, batch_size=1000)
    record(event(0, route="/before-fork", request_id="before"))  # still queued at the fork
    assert _fork_and_record_in_child() == 0
    record(event(0, route="/parent", request_id="parent"))
    assert perfpulse.agent.flush(timeout_s=10)
    server.wait_stored(count=3, service="shop")
    assert server.stop() == 0
    rows = server.rows("SELECT route, request_id FROM http ORDER BY route")
    assert rows == [("/before-fork", "before"), ("/child", "child"), ("/parent", "parent")]


def test_what_is_queued_at_exit_is_flushed(stand_in: StandIn) -> None:
    script = (
        "import perfpulse.agent\n"
        "from perfpulse.agent.scope import record\n"
        f"perfpulse.agent.init(service='exiting', endpoint={stand_in.url!r}, key='k',"
        " flush_interval_s=60, resource_interval_s=0)\n"
        "record({'kind': 'http', 'ts': 1.0, 'route': '/last', 'method': 'GET',"
        " 'status': 200, 'duration_ms': 1.0})\n"
    )
    started_at = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=30, check=False)
    assert done.returncode == 0
    assert time.monotonic() - started_at < 10
    assert [e["route"] for e in stand_in.events()] == ["/last"]
    assert stand_in.got[0].batch["resource"]["service"] == "exiting"
