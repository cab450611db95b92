"""``perfpulse demo``: the collector plus a workload that keeps it fed.

The generator sends through the public endpoints, exactly as agents do, at a
bounded rate: lognormal latencies per route (two slow routes, a few errors),
database statements with one N+1 pattern and one slow query, cache hits and
misses, CPU and memory samples, browser page views from several pages,
devices and browsers with plausible Core Web Vitals, the shop's log lines, and
an OpenTelemetry-instrumented ``inventory`` service exporting traces (server,
internal, database and HTTP client spans) and trace-correlated logs over OTLP/JSON.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("perfpulse.demo")


@dataclass(frozen=True, slots=True)
class DemoRoute:
    route: str
    method: str
    median_ms: float
    sigma: float
    weight: float
    error_rate: float
    queries: tuple[str, ...]


ROUTES = (
    DemoRoute("/", "GET", 18, 0.4, 30, 0.001, ("SELECT * FROM pages WHERE slug = 'home'",)),
    DemoRoute(
        "/products/{id}", "GET", 35, 0.5, 25, 0.002, ("SELECT * FROM products WHERE id = 7",)
    ),
    DemoRoute(
        "/orders/{id}",
        "GET",
        60,
        0.6,
        10,
        0.005,
        # the N+1: one order, then each line item on its own
        ("SELECT * FROM orders WHERE id = 1",) + ("SELECT * FROM items WHERE order_id = 1",) * 8,
    ),
    DemoRoute(
        "/search", "GET", 240, 0.7, 8, 0.01, ("SELECT * FROM products WHERE name LIKE '%x%'",)
    ),
    DemoRoute(
        "/checkout/pay", "POST", 420, 0.5, 3, 0.03, ("UPDATE orders SET paid = true WHERE id = 3",)
    ),
    DemoRoute("/api/cart", "POST", 25, 0.4, 12, 0.002, ("INSERT INTO carts VALUES (1, 2)",)),
    DemoRoute("/health", "GET", 1.5, 0.2, 5, 0.0, ()),
)
PAGES = ("/", "/products/1234", "/products/98", "/search?q=shoes", "/checkout", "/blog/how-we-ship")
DEVICES = (("desktop", 0.55), ("mobile", 0.4), ("tablet", 0.05))
BROWSERS = (("chrome", 0.65), ("safari", 0.2), ("firefox", 0.1), ("edge", 0.05))
CONNECTIONS = ("4g", "4g", "4g", "3g", "wifi")
RELEASES = ("1.4.1", "1.4.2")


@dataclass(frozen=True, slots=True)
class DemoOperation:
    """One route of the OpenTelemetry-instrumented service and the work it does."""

    method: str
    route: str
    path: str
    median_ms: float
    error_rate: float
    statement: str
    calls_pricing: bool


OTEL_SERVICE = "inventory"
OPERATIONS = (
    DemoOperation(
        "GET",
        "/stock/{sku}",
        "/stock/SKU-1042",
        6,
        0.0,
        "SELECT qty FROM stock WHERE sku = $1",
        False,
    ),
    DemoOperation(
        "POST",
        "/reservations",
        "/reservations",
        14,
        0.08,
        "UPDATE stock SET qty = qty - $1 WHERE sku = $2",
        True,
    ),
    DemoOperation(
        "GET",
        "/warehouses/{id}/stock",
        "/warehouses/3/stock",
        40,
        0.02,
        "SELECT sku, qty FROM stock WHERE warehouse_id = $1",
        True,
    ),
)
# OTLP span kinds and severity numbers (opentelemetry-proto's enums)
_INTERNAL, _SERVER, _CLIENT = 1, 2, 3
_SEVERITY = {"debug": 5, "info": 9, "warn": 13, "error": 17}


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def _otlp_attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Attributes as OTLP/JSON ``KeyValue`` objects."""
    out = []
    for key, v in values.items():
        if isinstance(v, bool):
            value: dict[str, Any] = {"boolValue": v}
        elif isinstance(v, int):
            value = {"intValue": str(v)}
        elif isinstance(v, float):
            value = {"doubleValue": v}
        else:
            value = {"stringValue": str(v)}
        out.append({"key": key, "value": value})
    return out


def _nanos(ts: float) -> str:
    return str(round(ts * 1e9))


def _otlp_resource(service: str, release: str) -> dict[str, Any]:
    return {
        "attributes": _otlp_attributes(
            {
                "service.name": service,
                "deployment.environment.name": "production",
                "service.version": release,
                "host.name": "inv-1",
            }
        )
    }


class Workload:
    """Builds realistic batches and beacons; deterministic for a given seed."""

    def __init__(self, seed: int = 7, clock: Any = time.time) -> None:
        self.rng = random.Random(seed)
        self.clock = clock

    def batch(self, requests: int, service: str = "shop") -> dict[str, Any]:
        rng, now = self.rng, self.clock()
        events: list[dict[str, Any]] = []
        for _ in range(requests):
            r = rng.choices(ROUTES, [x.weight for x in ROUTES])[0]
            ts = now - rng.random()
            duration = _lognormal(rng, r.median_ms, r.sigma)
            status = 500 if rng.random() < r.error_rate else (201 if r.method == "POST" else 200)
            db_ms = 0.0
            request_id = uuid.uuid4().hex[:16]
            for sql in r.queries:
                q_ms = _lognormal(rng, 2.0, 0.5)
                if "LIKE" in sql:
                    q_ms = _lognormal(rng, 180.0, 0.4)  # the slow query
                db_ms += q_ms
                events.append(
                    {
                        "kind": "db",
                        "ts": ts,
                        "fingerprint": sql,
                        "system": "postgresql",
                        "duration_ms": q_ms,
                        "rows": rng.randint(0, 20),
                        "pool_wait_ms": _lognormal(rng, 0.3, 1.0),
                        "route": r.route,
                        "request_id": request_id,
                        **({"statement": sql} if q_ms > 100 else {}),
                    }
                )
            if len(r.queries) >= 5:
                events.append(
                    {
                        "kind": "n_plus_one",
                        "ts": ts,
                        "route": r.route,
                        "fingerprint": r.queries[-1],
                        "count": len(r.queries) - 1,
                        "total_ms": db_ms,
                        "request_id": request_id,
                    }
                )
            hit = rng.random() < 0.82
            events.append(
                {
                    "kind": "cache",
                    "ts": ts,
                    "cache": "products",
                    "op": "get",
                    "hit": hit,
                    "duration_ms": _lognormal(rng, 0.2 if hit else 0.5, 0.3),
                    "route": r.route,
                }
            )
            events.append(
                {
                    "kind": "http",
                    "ts": ts,
                    "route": r.route,
                    "method": r.method,
                    "status": status,
                    "duration_ms": duration + db_ms,
                    "db_time_ms": db_ms,
                    "db_count": len(r.queries),
                    "response_bytes": rng.randint(200, 60_000),
                    "request_id": request_id,
                    **({"exception": "TimeoutError"} if status == 500 else {}),
                }
            )
        return {
            "batch_id": uuid.uuid4().hex,
            "resource": {
                "service": service,
                "environment": "production",
                "release": rng.choice(RELEASES),
                "host": "web-1",
            },
            "events": events,
        }

    def resources(self, service: str = "shop") -> dict[str, Any]:
        rng = self.rng
        return {
            "batch_id": uuid.uuid4().hex,
            "resource": {"service": service, "environment": "production", "host": "web-1"},
            "events": [
                {
                    "kind": "resource",
                    "ts": self.clock(),
                    "pid": 4242,
                    "process_cpu_pct": max(0.0, rng.gauss(35, 10)),
                    "process_rss_bytes": rng.gauss(180e6, 5e6),
                    "process_threads": 12,
                    "process_fds": 48,
                    "host_cpu_pct": max(0.0, rng.gauss(40, 8)),
                    "host_mem_used_bytes": rng.gauss(6e9, 1e8),
                    "host_mem_total_bytes": 16e9,
                },
                {
                    "kind": "pool",
                    "ts": self.clock(),
                    "pool": "primary",
                    "size": 10,
                    "checked_out": rng.randint(2, 10),
                    "overflow": 0,
                    "wait_ms": _lognormal(rng, 1.0, 1.0),
                },
            ],
        }

    def beacon(self, origin: str) -> dict[str, Any]:
        rng = self.rng
        device = _pick(rng, DEVICES)
        slow = 1.8 if device == "mobile" else 1.0
        page = rng.choice(PAGES)
        vitals = [
            {
                "name": "LCP",
                "value": _lognormal(rng, 1700 * slow, 0.45),
                "attribution": {"element": "main > img.hero", "url": f"{origin}/img/hero.jpg?v=3"},
            },
            {
                "name": "INP",
                "value": _lognormal(rng, 110 * slow, 0.6),
                "attribution": {"target": "button#add-to-cart", "type": "pointer"},
            },
            {
                "name": "CLS",
                "value": max(0.0, rng.gauss(0.06, 0.05)),
                "attribution": {"target": "div.banner"},
            },
            {"name": "FCP", "value": _lognormal(rng, 1100 * slow, 0.4)},
            {"name": "TTFB", "value": _lognormal(rng, 380, 0.5)},
            {"name": "FID", "value": _lognormal(rng, 12 * slow, 0.8)},
        ]
        return {
            "id": uuid.uuid4().hex,
            "ts": self.clock(),
            "url": f"{origin}{page}",
            "release": rng.choice(RELEASES),
            "device": device,
            "browser": _pick(rng, BROWSERS),
            "connection": rng.choice(CONNECTIONS),
            "vitals": vitals,
            "nav": {
                "type": "navigate",
                "dns_ms": rng.uniform(0, 30),
                "connect_ms": rng.uniform(5, 40),
                "tls_ms": rng.uniform(5, 30),
                "request_ms": _lognormal(rng, 300, 0.5),
                "response_ms": rng.uniform(5, 80),
                "dom_interactive_ms": _lognormal(rng, 900, 0.4),
                "dom_complete_ms": _lognormal(rng, 1800, 0.4),
                "load_ms": _lognormal(rng, 2000, 0.4),
            },
            "resources": [
                {
                    "type": "script",
                    "count": 6,
                    "transfer_bytes": 184_000,
                    "encoded_bytes": 180_000,
                    "decoded_bytes": 620_000,
                    "duration_ms": 420.0,
                    "cache_hits": 2,
                    "render_blocking": 1,
                    "third_party": 2,
                },
                {
                    "type": "image",
                    "count": 14,
                    "transfer_bytes": 910_000,
                    "encoded_bytes": 905_000,
                    "decoded_bytes": 905_000,
                    "duration_ms": 1900.0,
                    "cache_hits": 5,
                    "third_party": 1,
                },
                {
                    "type": "font",
                    "count": 2,
                    "transfer_bytes": 48_000,
                    "encoded_bytes": 48_000,
                    "decoded_bytes": 48_000,
                    "duration_ms": 120.0,
                },
            ],
            "long_tasks": {
                "count": rng.randint(0, 6),
                "total_ms": rng.uniform(0, 600),
                "tbt_ms": rng.uniform(0, 300),
                "max_ms": rng.uniform(50, 250),
            },
            "memory": {"used_bytes": rng.gauss(24e6, 4e6), "source": "performance.memory"},
        }

    def logs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The shop's log lines for the requests of ``batch`` (from :meth:`batch`):
        an error with its traceback per failed request, a warning per slow one and
        an access line for about one request in ten, each with its request id."""
        rng = self.rng
        events: list[dict[str, Any]] = []
        for e in batch["events"]:
            if e["kind"] != "http":
                continue
            line = f"{e['method']} {e['route']} {e['status']} in {e['duration_ms']:.1f} ms"
            common = {"kind": "log", "ts": e["ts"], "request_id": e["request_id"]}
            if e["status"] >= 500:
                events.append(
                    {
                        **common,
                        "level": "error",
                        "logger": "shop.views",
                        "message": f"{e['method']} {e['route']} failed: upstream timed out",
                        "exception": (
                            "Traceback (most recent call last):\n"
                            '  File "shop/views.py", line 88, in handle\n'
                            "    answer = inventory.reserve(order)\n"
                            "TimeoutError: inventory did not answer within 2.0 s"
                        ),
                        "attributes": {"route": e["route"], "status": e["status"]},
                    }
                )
            elif e["duration_ms"] > 500:
                events.append(
                    {
                        **common,
                        "level": "warn",
                        "logger": "shop.requests",
                        "message": f"slow request: {line}",
                        "attributes": {"route": e["route"], "db_ms": round(e["db_time_ms"], 1)},
                    }
                )
            elif rng.random() < 0.1:
                events.append(
                    {**common, "level": "info", "logger": "shop.requests", "message": line}
                )
        return {"batch_id": uuid.uuid4().hex, "resource": batch["resource"], "events": events}

    def traces(self, requests: int, service: str = OTEL_SERVICE) -> dict[str, Any]:
        """``requests`` traces of an OpenTelemetry-instrumented service, as an
        OTLP/JSON ``ExportTraceServiceRequest`` (``POST /v1/traces``): a server
        span with an auth check, a database statement and, for some routes, a
        reservation step calling a pricing service (which sometimes times out)."""
        rng, now = self.rng, self.clock()
        spans: list[dict[str, Any]] = []

        def span(
            trace_id: str,
            parent: str | None,
            name: str,
            kind: int,
            start: float,
            duration_ms: float,
            attributes: dict[str, Any],
            error: str | None = None,
        ) -> str:
            span_id = f"{rng.getrandbits(64) | 1:016x}"
            spans.append(
                {
                    "traceId": trace_id,
                    "spanId": span_id,
                    **({"parentSpanId": parent} if parent else {}),
                    "name": name,
                    "kind": kind,
                    "startTimeUnixNano": _nanos(start),
                    "endTimeUnixNano": _nanos(start + duration_ms / 1000),
                    "attributes": _otlp_attributes(attributes),
                    "status": {"code": 2, "message": error} if error else {"code": 0},
                }
            )
            return span_id

        for _ in range(requests):
            op = rng.choice(OPERATIONS)
            trace_id = f"{rng.getrandbits(128) | 1:032x}"
            start = now - rng.random()
            failed = rng.random() < op.error_rate
            auth_ms = _lognormal(rng, 0.8, 0.3)
            db_ms = _lognormal(rng, op.median_ms * 0.4, 0.5)
            pricing_ms = 2000.0 if failed else _lognormal(rng, op.median_ms * 0.5, 0.6)
            reserve_ms = pricing_ms + 1.5 if op.calls_pricing else 0.0
            total = auth_ms + db_ms + reserve_ms + _lognormal(rng, 1.5, 0.3)
            status = 503 if failed else (201 if op.method == "POST" else 200)
            root = span(
                trace_id,
                None,
                f"{op.method} {op.route}",
                _SERVER,
                start,
                total,
                {
                    "http.request.method": op.method,
                    "http.route": op.route,
                    "url.path": op.path,
                    "http.response.status_code": status,
                    "request_id": f"{rng.getrandbits(64):016x}",
                },
                "pricing timed out" if failed else None,
            )
            at = start + 0.0005
            span(trace_id, root, "auth.verify", _INTERNAL, at, auth_ms, {"auth.scheme": "bearer"})
            at += auth_ms / 1000
            span(
                trace_id,
                root,
                op.statement.split(" ", 1)[0] + " stock",
                _CLIENT,
                at,
                db_ms,
                {"db.system.name": "postgresql", "db.query.text": op.statement},
            )
            at += db_ms / 1000
            if op.calls_pricing:
                reserve = span(
                    trace_id,
                    root,
                    "reserve",
                    _INTERNAL,
                    at,
                    reserve_ms,
                    {"items": rng.randint(1, 4)},
                )
                span(
                    trace_id,
                    reserve,
                    "GET pricing",
                    _CLIENT,
                    at + 0.001,
                    pricing_ms,
                    {
                        "http.request.method": "GET",
                        "server.address": "pricing.internal",
                        "url.full": "http://pricing.internal/quote",
                        **({} if failed else {"http.response.status_code": 200}),
                    },
                    "timeout after 2000 ms" if failed else None,
                )
        return {
            "resourceSpans": [
                {
                    "resource": _otlp_resource(service, rng.choice(RELEASES)),
                    "scopeSpans": [{"scope": {"name": "perfpulse.demo"}, "spans": spans}],
                }
            ]
        }

    def trace_logs(self, traces: dict[str, Any]) -> dict[str, Any]:
        """Log records for the traces of :meth:`traces`, as an OTLP/JSON
        ``ExportLogsServiceRequest`` (``POST /v1/logs``), each carrying its trace
        and span id: an access line per request, a warning per slow one and an
        error with the exception for each failed pricing call."""
        by_logger: dict[str, list[dict[str, Any]]] = {}

        def record(
            logger: str, level: str, ts: float, text: str, s: dict[str, Any], **attrs: Any
        ) -> None:
            by_logger.setdefault(logger, []).append(
                {
                    "timeUnixNano": _nanos(ts),
                    "severityNumber": _SEVERITY[level],
                    "severityText": level.upper(),
                    "body": {"stringValue": text},
                    "traceId": s["traceId"],
                    "spanId": s["spanId"],
                    "attributes": _otlp_attributes(attrs),
                }
            )

        rs = traces["resourceSpans"][0]
        spans = rs["scopeSpans"][0]["spans"]
        request_ids: dict[str, str] = {}
        for s in spans:
            attrs = {a["key"]: a["value"] for a in s["attributes"]}
            start, end = int(s["startTimeUnixNano"]) / 1e9, int(s["endTimeUnixNano"]) / 1e9
            ms = (end - start) * 1000
            if "parentSpanId" not in s:
                rid = attrs["request_id"]["stringValue"]
                request_ids[s["traceId"]] = rid
                code = attrs["http.response.status_code"]["intValue"]
                record(
                    "inventory.http",
                    "info",
                    end,
                    f"{s['name']} {code} in {ms:.1f} ms",
                    s,
                    request_id=rid,
                )
                if ms > 250:
                    record(
                        "inventory.http",
                        "warn",
                        end,
                        f"slow request: {s['name']} took {ms:.0f} ms",
                        s,
                        request_id=rid,
                    )
            elif s["status"]["code"] == 2:
                record(
                    "inventory.pricing",
                    "error",
                    end,
                    f"pricing call failed: {s['status']['message']}",
                    s,
                    request_id=request_ids.get(s["traceId"], ""),
                    **{
                        "exception.type": "httpx.ReadTimeout",
                        "exception.message": "timed out",
                        "exception.stacktrace": (
                            "Traceback (most recent call last):\n"
                            '  File "inventory/pricing.py", line 31, in quote\n'
                            "    response = client.get(url, timeout=2.0)\n"
                            "httpx.ReadTimeout: timed out"
                        ),
                    },
                )
        return {
            "resourceLogs": [
                {
                    "resource": rs["resource"],
                    "scopeLogs": [
                        {"scope": {"name": name}, "logRecords": records}
                        for name, records in by_logger.items()
                    ],
                }
            ]
        }


def _generate(
    base: str, ingest_key: str, origin: str, public_key: str, rate: float, stop: threading.Event
) -> None:
    work = Workload()
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.is_set():
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            stop.wait(0.2)
        auth = {"Authorization": f"Bearer {ingest_key}"}
        tick = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                batch = work.batch(max(1, int(rate)))
                client.post("/api/v1/events", json=batch, headers=auth)
                logs = work.logs(batch)
                if logs["events"]:
                    client.post("/api/v1/events", json=logs, headers=auth)
                traces = work.traces(max(1, int(rate / 10)))
                client.post("/v1/traces", json=traces, headers=auth)
                client.post("/v1/logs", json=work.trace_logs(traces), headers=auth)
                if tick % 10 == 0:
                    client.post("/api/v1/events", json=work.resources(), headers=auth)
                for _ in range(max(1, int(rate / 40))):
                    client.post(
                        f"/api/v1/rum?key={public_key}",
                        content=httpx.Request("POST", "/", json=work.beacon(origin)).content,
                        headers={"Origin": origin, "Content-Type": "text/plain"},
                    )
            except httpx.HTTPError as exc:
                log.warning("demo workload: %s", exc)
            tick += 1
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def run_demo(settings: Any, *, host: str, port: int, rate: float) -> int:
    import uvicorn

    from perfpulse.keys import Keys
    from perfpulse.server import create_app

    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys, _ = Keys.load(settings.data_dir)
    settings.keys = keys
    origin = f"http://{host}:{port}"
    settings.allowed_origins = settings.allowed_origins | {origin}
    base = f"http://{host}:{port}"
    print(f"perfpulse demo on {base}")
    print(f"  read token:  {keys.read_token}")
    print(f"  ingest key:  {keys.ingest_key}")
    print(f"  public key:  {keys.public_key}")
    print(
        f"  try: perfpulse query percentiles --metric http.server.duration --by route "
        f"--data-dir {settings.data_dir}"
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=_generate,
        args=(base, keys.ingest_key, origin, keys.public_key, rate, stop),
        name="perfpulse-demo",
        daemon=True,
    )
    thread.start()
    try:
        uvicorn.run(
            create_app(settings, freeze_gc=True),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    finally:
        stop.set()
        thread.join(timeout=5)
    return 0
