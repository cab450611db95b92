"""Shared agent fixtures: an agent started and stopped per test, a WSGI app on a
loopback port, and an in-memory capture of what the middlewares record.

The real collector is the ``server`` fixture of ``tests/conftest.py`` (pytest
makes it visible here); ``serve_app`` there runs an ASGI app under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

import perfpulse.agent
from conftest import INGEST_KEY
from perfpulse.agent import request as agent_request
from perfpulse.agent import scope as agent_scope
from perfpulse.agent.config import Config

Start = Callable[..., None]


@pytest.fixture
def agent() -> Iterator[Start]:
    """``agent(endpoint=..., **options)`` starts the agent with test-friendly defaults
    (no resource thread, 50 ms flushes); it is shut down after the test."""

    def start(**options: Any) -> None:
        defaults: dict[str, Any] = {
            "service": "shop",
            "key": INGEST_KEY,
            "release": "1.0",
            "resource_interval_s": 0,
            "flush_interval_s": 0.05,
        }
        perfpulse.agent.init(**{**defaults, **options})

    yield start
    perfpulse.agent.shutdown(timeout_s=5)


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """Turn the middlewares on with events going to a list instead of a collector."""
    events: list[dict[str, Any]] = []
    agent_request.active = Config.resolve(service="shop", endpoint="http://127.0.0.1:9", environ={})
    agent_scope.set_sink(events.append)
    yield events
    agent_request.active = None
    agent_scope.set_sink(None)


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Run a WSGI app with werkzeug's threaded server on a loopback port; yields its URL."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        srv.server_close()


def call_asgi(
    app: Any, path: str, method: str = "GET", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> int:
    """Send one request straight into an ASGI app (no server); returns the status sent."""
    sent: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    with contextlib.suppress(Exception):  # Starlette re-raises after sending its 500 page
        asyncio.run(app(scope, receive, send))
    return sent[0] if sent else 0
