"""The application the agent benchmark measures, built in the server process.

A module of its own, apart from :mod:`bench.agent_overhead`: what the server
process imports is the app and the agent measured, not the driver's httpx and
psutil (3 MB that every variant would carry, and that would hide the cost of an
agent importing psutil itself). The variant and its settings come from the
environment the driver sets.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

VARIANT_ENV = "PP_BENCH_VARIANT"
COLLECTOR_ENV = "PP_BENCH_COLLECTOR"
KEY_ENV = "PP_BENCH_INGEST_KEY"
SENTRY_ENV = "PP_BENCH_SENTRY_DSN"
STUB_ENV = "PP_BENCH_STUB"  # the stub receiver: for perfpulse-stub (and -python), Sentry's too
#: with ``$PP_BENCH_VARIANT`` = ``alternate``: the variant that takes turns with the bare app
ALTERNATE_ENV = "PP_BENCH_ALTERNATE"


def make_app() -> Any:
    """The app for ``$PP_BENCH_VARIANT`` (uvicorn ``--factory``)."""
    variant = os.environ.get(VARIANT_ENV, "bare")
    if variant == "alternate":
        return Alternating(_build("bare"), _build(os.environ[ALTERNATE_ENV]))
    return _build(variant)


def _build(variant: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    if variant == "sentry":  # before the app exists: it patches Starlette
        import sentry_sdk

        sentry_sdk.init(dsn=os.environ[SENTRY_ENV], traces_sample_rate=1.0)

    async def item(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app: Any = Starlette(routes=[Route("/items/{item_id}", item), Route("/healthz", healthz)])
    if variant in ("perfpulse", "perfpulse-stub", "perfpulse-python"):
        import perfpulse.agent
        from perfpulse.agent.asgi import PerfpulseMiddleware, PythonMiddleware

        perfpulse.agent.init(
            service="bench",
            endpoint=os.environ[COLLECTOR_ENV if variant == "perfpulse" else STUB_ENV],
            key=os.environ.get(KEY_ENV, ""),
            release="b",
        )
        # perfpulse-python: the middleware's Python twin, which runs where the compiled
        # one was not built
        app.add_middleware(
            PythonMiddleware if variant == "perfpulse-python" else PerfpulseMiddleware
        )
    elif variant == "prometheus":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app)
    elif variant == "otel":
        from opentelemetry import trace
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Discard(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
        app = OpenTelemetryMiddleware(app)
    return app


class Alternating:
    """The bare app and a measured one in one server, taking turns window by window.

    Every request goes to the app whose turn it is; the turn passes every
    ``window_s``. At each turn the event loop's thread CPU time and the process's
    are read, so each window has its app, its requests and the CPU the loop and the
    whole process spent in it. Both apps thus see the same machine from one second
    to the next, and the slow drifts of a shared machine, which separate server
    processes see differently, cancel window by window (see
    :func:`bench.agent_overhead.alternate`). Every request pays for the same
    dispatch whichever app serves it.

    ``GET /_alternate/start?window=<s>`` starts the turns (the bare app first);
    ``GET /_alternate/stop`` ends them and answers the windows as JSON:
    ``[[app (0 bare, 1 measured), requests, loop CPU s, process CPU s, end], ...]``,
    ``end`` by ``time.monotonic()`` (to line a window up with a profiler's samples).
    Other ASGI traffic (lifespan) goes to the measured app.
    """

    def __init__(self, bare: Any, measured: Any) -> None:
        self.apps = (bare, measured)
        self.turn = 0
        self.requests = [0, 0]
        self.windows: list[tuple[int, int, float, float, float]] = []
        self.window_s = 1.0
        self.timer: Any = None
        self.cpu = (0.0, 0.0)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.apps[1](scope, receive, send)  # type: ignore[no-any-return]
        if scope["path"].startswith("/_alternate/"):
            return await self.control(scope, send)
        turn = self.turn
        self.requests[turn] += 1
        return await self.apps[turn](scope, receive, send)  # type: ignore[no-any-return]

    async def control(self, scope: Any, send: Any) -> None:
        body = b"{}"
        if scope["path"] == "/_alternate/start":
            query = parse_qs(scope["query_string"].decode())
            self.window_s = float(query.get("window", ["1.0"])[0])
            self.turn, self.requests, self.windows = 0, [0, 0], []
            self.cpu = (time.thread_time(), time.process_time())
            self.timer = asyncio.get_running_loop().call_later(self.window_s, self.pass_turn)
        elif scope["path"] == "/_alternate/stop":
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.pass_turn(again=False)
            body = json.dumps(self.windows).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def pass_turn(self, again: bool = True) -> None:
        now = (time.thread_time(), time.process_time())
        turn = self.turn
        loop_s, process_s = now[0] - self.cpu[0], now[1] - self.cpu[1]
        self.windows.append((turn, self.requests[turn], loop_s, process_s, time.monotonic()))
        self.requests[turn] = 0
        self.turn = 1 - turn
        self.cpu = now
        if again:
            self.timer = asyncio.get_running_loop().call_later(self.window_s, self.pass_turn)
