"""OTLP/HTTP ingest with the real OpenTelemetry SDK and exporters, into a real collector."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sqlalchemy import create_engine, text

from conftest import INGEST_KEY, Server, serve_app

AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
RESOURCE = Resource.create(
    {
        "service.name": "otel-shop",
        "deployment.environment.name": "staging",
        "service.version": "2.0.1",
    }
)


@pytest.fixture
def tracer_provider(server: Server) -> Iterator[TracerProvider]:
    provider = TracerProvider(resource=RESOURCE)
    # the batch processor, as production uses: a request's spans travel together
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", headers=AUTH))
    )
    yield provider
    provider.shutdown()


def wait_for(fetch: Any, ok: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_instrumented_fastapi_and_sqlalchemy_become_http_db_and_a_trace(
    server: Server, tracer_provider: TracerProvider
) -> None:
    engine = create_engine("sqlite://")
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=tracer_provider)
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        with engine.connect() as conn:
            value = conn.execute(
                text(f"SELECT {item_id} + 1 AS n WHERE 'secret' = 'secret'")
            ).scalar()
        return {"n": int(value or 0)}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    with serve_app(app) as url:
        for i in range(3):
            assert httpx.get(f"{url}/items/{40 + i}").json() == {"n": 41 + i}
    tracer_provider.force_flush()

    http = server.wait_stored(by="route", service="otel-shop", count=3)
    assert [(g["key"]["route"], g["count"]) for g in http["groups"]] == [("/items/{item_id}", 3)]
    db = server.wait_stored(metric="db.query.duration", by="fingerprint,route", count=3)
    (group,) = db["groups"]
    assert group["key"] == {
        "fingerprint": "SELECT ? + ? AS n WHERE ? = ?",
        "route": "/items/{item_id}",
    }
    assert "secret" not in str(db)

    traces = server.get("/api/v1/traces", service="otel-shop", **{"from": time.time() - 600}).json()
    assert len(traces["traces"]) == 3
    root = traces["traces"][0]
    assert root["kind"] == "server" and root["spans"] >= 2
    tree = server.get(f"/api/v1/traces/{root['trace_id']}").json()
    (top,) = tree["roots"]
    assert top["name"].startswith("GET /items/{item_id}")
    names = []

    def walk(node: dict[str, Any]) -> None:
        names.append((node["kind"], node["name"]))
        for child in node["children"]:
            assert child["parent_id"] == node["span_id"]
            walk(child)

    walk(top)
    assert ("client", "SELECT :memory:") in names or any(k == "client" for k, _ in names)
    assert tree["span_count"] == len(names)
    # resource attributes became service, environment and release
    assert (top["service"], top["environment"], top["release"]) == ("otel-shop", "staging", "2.0.1")


def test_json_exporter_and_older_http_attributes(server: Server) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(
        SimpleSpanProcessor(JsonSpanExporter(endpoint=f"{server.url}/v1/traces", headers=AUTH))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "legacy",
        kind=SpanKind.SERVER,
        attributes={
            "http.method": "POST",
            "http.target": "/orders/12345?x=1",
            "http.status_code": 502,
        },
    ):
        time.sleep(0.01)
    provider.force_flush()
    provider.shutdown()
    body = server.wait_stored(by="route,status", service="otel-shop")
    (g,) = body["groups"]
    assert g["key"] == {"route": "/orders/{id}", "status": "502"}
    assert g["quantiles"]["0.5"] >= 10.0 * 0.99


def test_partial_success_and_errors(server: Server) -> None:
    now = time.time_ns()
    good = trace_pb2.Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="ok",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 5_000_000,
    )
    backwards = trace_pb2.Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x03" * 8,
        name="neg",
        start_time_unix_nano=now,
        end_time_unix_nano=now - 5_000_000,
    )
    bad_id = trace_pb2.Span(
        trace_id=b"\x01" * 3,
        span_id=b"\x04" * 8,
        name="id",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1,
    )
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[trace_pb2.ScopeSpans(spans=[good, backwards, bad_id])]
            )
        ]
    )
    headers = {**AUTH, "Content-Type": "application/x-protobuf"}
    r = httpx.post(f"{server.url}/v1/traces", content=request.SerializeToString(), headers=headers)
    assert r.status_code == 200
    answer = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 2
    assert answer.partial_success.error_message == "2 traces rejected: 1 bad_id, 1 negative_value"
    r = httpx.post(f"{server.url}/v1/traces", content=b"\xff\xff not protobuf", headers=headers)
    assert r.status_code == 400 and "ExportTraceServiceRequest" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/traces", content=request.SerializeToString())
    assert r.status_code == 401
    stored = wait_for(
        lambda: server.get(f"/api/v1/traces/{'01' * 16}").json(), lambda t: t["span_count"] >= 1
    )
    assert [s["name"] for s in stored["roots"]] == ["ok"]


def test_metrics_histogram_counter_and_gauge(server: Server) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{server.url}/v1/metrics", headers=AUTH),
        export_interval_millis=60_000,
    )
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("test")
    hist = meter.create_histogram("checkout.latency", unit="ms")
    counter = meter.create_counter("orders.placed")
    for v in range(1, 101):
        hist.record(float(v), {"region": "eu"})
    counter.add(7, {"region": "eu"})
    meter.create_observable_gauge("queue.depth", callbacks=[lambda options: [Observation(42.0)]])
    reader.force_flush()
    provider.shutdown()
    names = wait_for(
        lambda: server.get("/api/v1/otel/metrics", **{"from": time.time() - 600}).json()["metrics"],
        lambda m: len(m) >= 3,
    )
    assert {(m["name"], m["type"]) for m in names} >= {
        ("checkout.latency", "histogram"),
        ("orders.placed", "sum"),
        ("queue.depth", "gauge"),
    }
    window = {"from": time.time() - 600, "to": time.time() + 60, "step": 3600}
    h = server.get(
        "/api/v1/otel/series", name="checkout.latency", by="region", q="0.5,0.99", **window
    ).json()
    (series,) = h["series"]
    assert series["key"] == {"region": "eu"}
    (point,) = series["points"]
    assert point["count"] == 100 and point["sum"] == 5050.0
    # the SDK's default bounds put 50 in (25, 50] and 99 in (75, 100]: interpolated estimates
    assert 25 < point["quantiles"]["0.5"] <= 50
    assert 75 < point["quantiles"]["0.99"] <= 100
    g = server.get("/api/v1/otel/series", name="queue.depth", **window).json()
    assert g["series"][0]["points"][0]["last"] == 42.0
    r = server.get("/api/v1/otel/series", **window)
    assert r.status_code == 400


def test_logs_search_by_text_level_and_trace(
    server: Server, tracer_provider: TracerProvider
) -> None:
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{server.url}/v1/logs", headers=AUTH))
    )
    logger = logging.getLogger("otel-test")
    logger.propagate = False
    with warnings.catch_warnings():  # the SDK's own handler, deprecated upstream but working
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    tracer = tracer_provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("job") as span:
            logger.error("payment gateway timeout for order 77")
            trace_id = format(span.get_span_context().trace_id, "032x")
        for i in range(5):
            logger.info("routine message %d", i)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    since = {"from": time.time() - 600}
    hits = wait_for(
        lambda: server.get("/api/v1/logs", q="GATEWAY timeout", **since).json()["logs"],
        lambda x: len(x) >= 1,
    )
    (hit,) = hits
    assert hit["message"] == "payment gateway timeout for order 77"
    assert hit["level"] == "error" and hit["trace_id"] == trace_id and hit["service"] == "otel-shop"
    by_trace = server.get("/api/v1/logs", trace_id=trace_id, **since).json()["logs"]
    assert [x["id"] for x in by_trace] == [hit["id"]]
    # newest first, paginated with a cursor
    page1 = wait_for(
        lambda: server.get("/api/v1/logs", level="info", limit=3, **since).json(),
        lambda p: len(p["logs"]) == 3 and p["next_cursor"],
    )
    page2 = server.get(
        "/api/v1/logs", level="info", limit=3, cursor=page1["next_cursor"], **since
    ).json()
    messages = [x["message"] for x in page1["logs"] + page2["logs"]]
    assert messages == [f"routine message {i}" for i in (4, 3, 2, 1, 0)]
    assert page2["next_cursor"] is None
    assert server.get("/api/v1/logs", level="loud", **since).status_code == 400
