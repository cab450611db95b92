"""Shared fixtures: a real collector process on a loopback port, with a real
DuckDB file and spool in a temporary data directory."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

INGEST_KEY = "ppi_test_ingest_key_0123456789"
PUBLIC_KEY = "ppp_test_public_key_0123456789"
READ_TOKEN = "ppr_test_read_token_0123456789"
ORIGIN = "http://shop.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``perfpulse serve`` subprocess that tests can start, stop and kill."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 20.0) -> Server:
        env = {
            **os.environ,
            "PERFPULSE_INGEST_KEY": INGEST_KEY,
            "PERFPULSE_PUBLIC_KEY": PUBLIC_KEY,
            "PERFPULSE_READ_TOKEN": READ_TOKEN,
            "PERFPULSE_ALLOWED_ORIGINS": ORIGIN,
        }
        cmd = [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
            *self.args,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"collector did not become ready: {self.log.read_text()}")

    def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the DuckDB file directly (only while the server is stopped)."""
        assert self.proc is None, "stop the server before reading its file"
        con = duckdb.connect(str(self.data_dir / "perfpulse.duckdb"), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    # --- client helpers ---------------------------------------------------------

    def send(
        self, batch: dict[str, Any], *, key: str | None = INGEST_KEY, gz: bool = False
    ) -> httpx.Response:
        body = json.dumps(batch).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if gz:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return httpx.post(f"{self.url}/api/v1/events", content=body, headers=headers, timeout=10)

    def beacon(
        self, beacon: dict[str, Any], *, key: str | None = PUBLIC_KEY, origin: str | None = ORIGIN
    ) -> httpx.Response:
        headers = {"Content-Type": "text/plain"}
        if origin:
            headers["Origin"] = origin
        url = f"{self.url}/api/v1/rum" + (f"?key={key}" if key is not None else "")
        return httpx.post(url, content=json.dumps(beacon).encode(), headers=headers, timeout=10)

    def beacon_raw(self, body: bytes) -> httpx.Response:
        """A beacon body sent as it is, with the public key, from ``ORIGIN``."""
        return httpx.post(
            f"{self.url}/api/v1/rum?key={PUBLIC_KEY}",
            content=body,
            headers={"Content-Type": "text/plain", "Origin": ORIGIN},
            timeout=10,
        )

    def get(self, path: str, token: str | None = READ_TOKEN, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", params=params, headers=headers, timeout=30)

    def wait_stored(
        self,
        metric: str = "http.server.duration",
        count: int = 1,
        timeout: float = 10.0,
        **params: Any,
    ) -> dict[str, Any]:
        """Poll the percentiles API until ``count`` values are visible."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.get(
                "/api/v1/percentiles", metric=metric, **{"from": time.time() - 7200}, **params
            )
            body = r.json()
            if r.status_code == 200 and sum(g["count"] for g in body["groups"]) >= count:
                return body
            time.sleep(0.1)
        raise AssertionError(f"only saw {body} after {timeout}s")

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the writer has stored everything acknowledged so far (the
        spool is empty): under light load it flushes every two seconds or so."""
        deadline = time.monotonic() + timeout
        while self.metric_value("perfpulse_spool_depth") > 0:
            assert time.monotonic() < deadline, "the spool did not drain"
            time.sleep(0.05)

    def metric_value(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        found = False
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        assert found, f"{name} not in /metrics"
        return total


def http_batch(
    n: int = 3, *, ts: float | None = None, service: str = "checkout", **overrides: Any
) -> dict[str, Any]:
    now = time.time() if ts is None else ts
    events = [
        {
            "kind": "http",
            "ts": now,
            "route": "/users/{id}",
            "method": "GET",
            "status": 200,
            "duration_ms": 10.0 + i,
            **overrides,
        }
        for i in range(n)
    ]
    return {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": service, "release": "1.0"},
        "events": events,
    }


def beacon(**overrides: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "ts": time.time(),
        "url": "https://shop.example/orders/12345?token=secret#frag",
        "device": "mobile",
        "browser": "chrome",
        "connection": "4g",
        "vitals": [
            {
                "name": "LCP",
                "value": 2100.0,
                "attribution": {"element": "img.hero", "url": "https://cdn.example/a.jpg?sig=xyz"},
            },
            {"name": "CLS", "value": 0.05},
            {"name": "INP", "value": 180.0},
        ],
        **overrides,
    }


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a loopback port in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "app server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data").start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.kill()
