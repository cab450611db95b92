"""The application the agent benchmark measures, built in the server process.

A module of its own, apart from :mod:`bench.agent_overhead`: what the server
process imports is the app and the agent measured, not the driver's httpx and
psutil (3 MB that every variant would carry, and that would hide the cost of an
agent importing psutil itself). The variant and its settings come from the
environment the driver sets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

VARIANT_ENV = "PP_BENCH_VARIANT"
COLLECTOR_ENV = "PP_BENCH_COLLECTOR"
KEY_ENV = "PP_BENCH_INGEST_KEY"
SENTRY_ENV = "PP_BENCH_SENTRY_DSN"
STUB_ENV = "PP_BENCH_STUB"  # the stub receiver: for perfpulse-stub (and -python), Sentry's too


def make_app() -> Any:
    """The app for ``$PP_BENCH_VARIANT`` (uvicorn ``--factory``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    variant = os.environ.get(VARIANT_ENV, "bare")
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
