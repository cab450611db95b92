"""The collector: one ASGI app that ingests, stores and answers queries.

``create_app(settings)`` wires the parts in the order data flows — receiver →
spool → writer → storage → query — and owns their life cycle: on start it
replays what the spool still holds (so ``/healthz`` is green only once replay is
done), on SIGTERM uvicorn stops accepting and finishes in-flight requests, then
the writer drains the spool and the database is checkpointed and closed.

Example::

    app = create_app(Settings(data_dir=Path("data")))
    uvicorn.run(app, host="127.0.0.1", port=8600)
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from perfpulse.alerts.api import routes as alert_routes
from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.source import QuerySource
from perfpulse.ingest.dedupe import RecentBatches
from perfpulse.ingest.normalize import Normalizer
from perfpulse.ingest.receiver import DEFAULT_MAX_BODY, Receiver
from perfpulse.ingest.routes import RouteFolder
from perfpulse.keys import Keys, bearer, matches
from perfpulse.query.rows import rows as breakdown
from perfpulse.query.service import Query, QueryError
from perfpulse.query.telemetry import Telemetry
from perfpulse.spool.file import FileSpool
from perfpulse.store.duckdb.backend import (
    DEFAULT_BURST_MEMORY_LIMIT,
    DEFAULT_MEMORY_LIMIT,
    DuckDBBackend,
)
from perfpulse.store.retention import DAY, Retention
from perfpulse.store.writer import Writer
from perfpulse.telemetry import CollectorMetrics, gauge
from perfpulse.web.app import routes as dashboard_routes

log = logging.getLogger("perfpulse")
STATIC = Path(__file__).parent / "web" / "static"


@dataclass(slots=True)
class Settings:
    """Everything ``perfpulse serve`` can be told; defaults suit a laptop."""

    data_dir: Path
    keys: Keys | None = None
    allowed_origins: frozenset[str] = frozenset()
    max_body: int = DEFAULT_MAX_BODY
    spool_max_bytes: int = 1 << 30
    fsync: Literal["always", "interval", "never"] = "always"
    route_cap: int = 1000
    retention: Retention = field(default_factory=Retention)
    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB's, while only ingesting
    burst_memory_limit: str | None = DEFAULT_BURST_MEMORY_LIMIT  # while reads run
    compact_every_s: float = 30.0
    clock: Callable[[], float] = time.time
    rules: Path | None = None  # alerting file; default <data dir>/rules.yaml
    budgets: Path | None = None  # budgets file; default <data dir>/perfpulse-budgets.yaml


class Collector:
    """The running parts, built by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        s = settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = s
        if s.keys is None:
            keys, generated = Keys.load(s.data_dir)
            for name in generated:
                log.warning(
                    "generated %s=%s (kept in %s)",
                    name,
                    getattr(keys, _ATTR[name]),
                    s.data_dir / "keys.json",
                )
            s.keys = keys
        self.keys = s.keys
        self.metrics = CollectorMetrics()
        self.backend = DuckDBBackend(
            s.data_dir / "perfpulse.duckdb",
            retention=s.retention,
            memory_limit=s.memory_limit,
            burst_memory_limit=s.burst_memory_limit,
        )
        self.spool = FileSpool(s.data_dir / "spool", max_bytes=s.spool_max_bytes, fsync=s.fsync)
        self.writer = Writer(
            self.spool,
            self.backend,
            self.metrics,
            compact_every_s=s.compact_every_s,
            clock=s.clock,
            quarantine_dir=s.data_dir / "quarantine",
        )
        self.writer.drain()  # replay what the spool holds before accepting anything new
        folder = RouteFolder(cap=s.route_cap)
        for service, routes in self.backend.known_routes().items():
            folder.seed(service, routes)
        self.folder = folder
        recent = RecentBatches()
        recent.seed(self.backend.recent_batches(s.clock() - recent.window_s))
        self.receiver = Receiver(
            keys=self.keys,
            allowed_origins=s.allowed_origins,
            spool=self.spool,
            normalizer=Normalizer(folder=folder, raw_retention_s=s.retention.raw_s, clock=s.clock),
            recent=recent,
            metrics=self.metrics,
            clock=s.clock,
            max_body=s.max_body,
        )
        self.query = Query(self.backend, clock=s.clock)
        self.telemetry = Telemetry(self.query)
        self.metrics.live(self._live_metrics)
        self.writer.start()
        self.alerts = AlertEngine.for_collector(
            s.data_dir, QuerySource(self.query), rules=s.rules, budgets=s.budgets, clock=s.clock
        )
        self.alerts.start()

    def _live_metrics(self) -> Iterable[Metric]:
        st = self.spool.stats()
        yield gauge("perfpulse_spool_bytes", "Spool bytes not yet stored.", st.bytes)
        yield gauge("perfpulse_spool_depth", "Spool records not yet stored.", st.depth)
        yield gauge(
            "perfpulse_spool_corrupt_records",
            "Torn or corrupt spool records dropped at start.",
            st.corrupt_records,
        )
        yield gauge(
            "perfpulse_routes_folded",
            "Events whose route or page folded into 'other'.",
            self.folder.folded_total,
        )
        for table, n in self.backend.row_counts().items():
            yield gauge("perfpulse_table_rows", "Rows per table.", n, {"table": table})

    async def close(self) -> None:
        self.alerts.stop()
        self.writer.stop()
        await self.spool.close()
        self.backend.close()


_agent_cache: dict[str, tuple[float, bytes, str]] = {}


def _agent_script() -> tuple[bytes, str] | None:
    """The built browser agent and its content hash, re-read only when it changes."""
    path = STATIC / "rum.js"
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    cached = _agent_cache.get("rum")
    if cached is None or cached[0] != mtime:
        data = path.read_bytes()
        cached = (mtime, data, hashlib.sha256(data).hexdigest()[:12])
        _agent_cache["rum"] = cached
    return cached[1], cached[2]


_ATTR = {
    "PERFPULSE_INGEST_KEY": "ingest_key",
    "PERFPULSE_PUBLIC_KEY": "public_key",
    "PERFPULSE_READ_TOKEN": "read_token",
}


def _reader(
    collector: Callable[[], Collector],
    answer: Callable[[Collector, dict[str, str]], dict[str, Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """A read-token-protected query endpoint; QueryError becomes a 400."""

    async def endpoint(request: Request) -> Response:
        c = collector()
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return JSONResponse({"error": "missing read token"}, status_code=401)
        if not matches(token, c.keys.read_token):
            return JSONResponse({"error": "wrong read token"}, status_code=403)
        params = {**request.query_params, **request.path_params}
        try:
            body = await run_in_threadpool(answer, c, params)
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(body)

    return endpoint


#: Allocations between two collections of the garbage collector's youngest
#: generation in a collector process (Python's default: 700). With 64 beacons in
#: flight, a collection every 700 allocations walked the live requests' frames,
#: coroutines and futures again and again: 9,500 instructions of a beacon's 264,000
#: (``bench.handler``); from 2,000 on, that cost is gone.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """For a process that serves from now on: what is alive goes to the garbage
    collector's permanent generation, and its youngest generation is collected
    every :data:`GC_YOUNG_THRESHOLD` allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings, *, freeze_gc: bool = False) -> Front:
    """The collector's ASGI app. ``freeze_gc`` (what ``perfpulse serve`` and
    ``perfpulse demo`` set, for a process of its own): once started, :func:`settle_gc`
    freezes everything alive and makes the youngest generation's collections
    rarer. Under single-beacon load a full collection otherwise walked every
    object of the imported libraries and the storage, 57 ms each, five times in 8 s
    (10 µs a beacon, the event loop stalled meanwhile); see docs/benchmarks.md."""
    state: dict[str, Collector] = {}
    fast: dict[tuple[str, str], ASGIApp] = {}  # Front's ingest endpoints

    def collector() -> Collector:
        return state["c"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        c = state["c"] = await run_in_threadpool(Collector, settings)
        # the ingest endpoints, reached without a call in between once there is a collector
        fast.update({EVENTS: c.receiver.events, RUM: c.receiver.rum})
        if freeze_gc:
            settle_gc()
        try:
            yield
        finally:
            fast.update({EVENTS: events, RUM: rum})
            await state.pop("c").close()

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok" if "c" in state else "starting"}, 200 if "c" in state else 503
        )

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            generate_latest(collector().metrics.registry),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def otlp(request: Request) -> Response:
        return await collector().receiver.otlp(request)

    async def rum_preflight(request: Request) -> Response:
        return await collector().receiver.rum_preflight(request)

    async def rum_js(request: Request) -> Response:
        agent = _agent_script()
        if agent is None:
            return JSONResponse({"error": "browser agent not built (make demo builds it)"}, 404)
        data, digest = agent
        wanted = request.path_params.get("version")
        if wanted is not None and wanted != digest:
            return RedirectResponse(f"/rum.{digest}.js", status_code=302)
        # the versioned URL never changes content; the plain one is re-checked hourly
        cache = "public, max-age=31536000, immutable" if wanted else "public, max-age=3600"
        return Response(
            data,
            media_type="text/javascript; charset=utf-8",
            headers={
                "Cache-Control": cache,
                "ETag": f'"{digest}"',
                "Link": f'</rum.{digest}.js>; rel="canonical"',
                "Access-Control-Allow-Origin": "*",
            },
        )

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/v1/traces", otlp, methods=["POST"]),
        Route("/v1/metrics", otlp, methods=["POST"]),
        Route("/v1/logs", otlp, methods=["POST"]),
        Route("/api/v1/rum", rum_preflight, methods=["OPTIONS"]),
        Route("/rum.js", rum_js),
        Route("/rum.{version}.js", rum_js),
        Route("/api/v1/percentiles", _reader(collector, lambda c, p: c.query.percentiles(p))),
        Route("/api/v1/timeseries", _reader(collector, lambda c, p: c.query.timeseries(p))),
        Route("/api/v1/top", _reader(collector, lambda c, p: c.query.top(p))),
        Route("/api/v1/vitals", _reader(collector, lambda c, p: c.query.vitals(p))),
        Route("/api/v1/rum/views", _reader(collector, lambda c, p: c.query.views(p))),
        Route("/api/v1/metrics", _reader(collector, lambda c, p: Query.catalog())),
        Route("/api/v1/breakdown", _reader(collector, lambda c, p: breakdown(c.query, p))),
        Route("/api/v1/traces", _reader(collector, lambda c, p: c.telemetry.traces(p))),
        Route(
            "/api/v1/traces/{trace_id}",
            _reader(collector, lambda c, p: c.telemetry.trace(p["trace_id"])),
        ),
        Route("/api/v1/logs", _reader(collector, lambda c, p: c.telemetry.logs(p))),
        Route("/api/v1/otel/metrics", _reader(collector, lambda c, p: c.telemetry.otel_metrics(p))),
        Route("/api/v1/otel/series", _reader(collector, lambda c, p: c.telemetry.otel_series(p))),
        *alert_routes(lambda: collector().alerts, lambda: collector().keys.read_token),
        *dashboard_routes(collector),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.collector = collector

    async def events(scope: Scope, receive: Receive, send: Send) -> None:
        await collector().receiver.events(scope, receive, send)

    async def rum(scope: Scope, receive: Receive, send: Send) -> None:
        await collector().receiver.rum(scope, receive, send)

    fast.update({EVENTS: events, RUM: rum})
    return Front(app, fast)


EVENTS = ("POST", "/api/v1/events")
RUM = ("POST", "/api/v1/rum")


class Front:
    """The collector's ASGI app: the ingest endpoints, the busiest, are pure ASGI and
    reached with one dict lookup; every other request (and the lifespan) goes to
    the Starlette app."""

    def __init__(self, app: Starlette, fast: dict[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.state = app.state
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.fast.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


__all__ = [
    "DAY",
    "GC_YOUNG_THRESHOLD",
    "Collector",
    "Front",
    "Settings",
    "create_app",
    "settle_gc",
]
