"""The data the benchmarks send and store, pre-built so the client does no work.

- :func:`events_template`: ``POST /api/v1/events`` bodies of ``n`` http events
  (the demo's routes, methods, latency shapes and error rates);
- :func:`beacon_template`: ``POST /api/v1/rum`` bodies, one page view each, from
  :meth:`perfpulse.demo.Workload.beacon`;
- :func:`http_rows`: rows in the ``http`` layout for writing to storage directly.

Timestamps are spread over the minute before the call, so every event is
accepted (the collector drops events older than raw retention or from the future).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.load import Template
from bench.servers import INGEST_HEADERS, ORIGIN, PUBLIC_KEY, RUM_HEADERS
from perfpulse.demo import ROUTES, Workload
from perfpulse.model.rows import field_names


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def http_events(n: int, rng: random.Random, now: float) -> list[dict[str, Any]]:
    weights = [r.weight for r in ROUTES]
    events = []
    for _ in range(n):
        r = rng.choices(ROUTES, weights)[0]
        status = 500 if rng.random() < r.error_rate else (201 if r.method == "POST" else 200)
        db_ms = round(len(r.queries) * 2.0 * math.exp(rng.gauss(0, 0.5)), 3)
        event: dict[str, Any] = {
            "kind": "http",
            "ts": round(now - rng.random() * 60, 3),
            "route": r.route,
            "method": r.method,
            "status": status,
            "duration_ms": round(r.median_ms * math.exp(rng.gauss(0, r.sigma)) + db_ms, 3),
            "db_time_ms": db_ms,
            "db_count": len(r.queries),
            "response_bytes": rng.randint(200, 60_000),
            "request_id": f"{rng.getrandbits(64):016x}",
        }
        if status == 500:
            event["exception"] = "TimeoutError"
        events.append(event)
    return events


def events_template(n: int, variants: int = 8, seed: int = 1) -> Template:
    """Batches of ``n`` http events; ``batch_id`` is the unique part."""
    rng = random.Random(seed)
    now = time.time()
    suffixes = []
    for v in range(variants):
        rest = {
            "resource": {
                "service": "shop",
                "environment": "production",
                "release": f"1.4.{v % 2}",
                "host": f"web-{v % 4}",
            },
            "events": http_events(n, rng, now),
        }
        suffixes.append(b'",' + _compact(rest)[1:])
    return Template("/api/v1/events", dict(INGEST_HEADERS), b'{"batch_id":"', tuple(suffixes))


def beacon_template(variants: int = 64, seed: int = 7) -> Template:
    """Single page-view beacons, sent as ``text/plain`` like ``navigator.sendBeacon``."""
    work = Workload(seed=seed)
    suffixes = []
    for _ in range(variants):
        beacon = work.beacon(ORIGIN)
        beacon.pop("id")
        suffixes.append(b'",' + _compact(beacon)[1:])
    return Template(f"/api/v1/rum?key={PUBLIC_KEY}", dict(RUM_HEADERS), b'{"id":"', tuple(suffixes))


# --- rows for the storage layer ------------------------------------------------------

METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")


def route_table(routes: int, seed: int) -> list[tuple[str, str, float, float, float]]:
    """(route, method, median ms, sigma, error rate) for ``routes`` synthetic routes."""
    rng = random.Random(seed)
    out = []
    for i in range(routes):
        route = f"/api/v{1 + i % 3}/area{i // 40}/thing{i}/{{id}}"
        median = math.exp(rng.uniform(math.log(3), math.log(800)))
        out.append(
            (
                route,
                rng.choice(METHODS),
                median,
                rng.uniform(0.3, 1.1),
                rng.choice((0.0, 0.001, 0.01, 0.05)),
            )
        )
    return out


def http_rows(
    n: int, *, routes: int, start: float, end: float, seed: int = 3, chunk: int = 50_000
) -> Iterator[list[tuple[object, ...]]]:
    """``n`` rows of the ``http`` layout in time order over ``[start, end)``, in
    chunks of ``chunk`` (one writer flush each). Route popularity follows Zipf
    (s = 0.8); each route has its own lognormal latency; 1-5 % errors on some."""
    rng = random.Random(seed)
    table = route_table(routes, seed)
    cum = list(itertools.accumulate(1.0 / (k + 1) ** 0.8 for k in range(routes)))
    total = cum[-1]
    step = (end - start) / n
    hosts = ("web-1", "web-2", "web-3")
    make = row_maker(
        "http",
        "ts",
        "service",
        "environment",
        "release",
        "host",
        "route",
        "method",
        "status",
        "duration_ms",
        "response_bytes",
        "db_time_ms",
        "db_count",
    )
    left = n
    i = 0
    while left > 0:
        size = min(chunk, left)
        rows: list[tuple[object, ...]] = []
        for _ in range(size):
            route, method, median, sigma, err = table[bisect.bisect(cum, rng.random() * total)]
            ts = start + (i + rng.random()) * step
            i += 1
            u = rng.random()
            status = 500 if u < err else 404 if u < err + 0.01 else 201 if method == "POST" else 200
            db_ms = round(median * 0.2 * math.exp(rng.gauss(0, 0.6)), 3)
            duration = round(median * math.exp(rng.gauss(0, sigma)), 3)
            rows.append(
                make(
                    ts,
                    "shop",
                    "production",
                    "1.0.0",
                    hosts[i % 3],
                    route,
                    method,
                    status,
                    duration,
                    rng.randint(200, 60_000),
                    db_ms,
                    3,
                )
            )
        left -= size
        yield rows


def row_maker(table: str, *names: str) -> Callable[..., tuple[object, ...]]:
    """A function taking ``names``' values in order and returning a row of
    ``table``'s layout (every other field None), so rows follow the layout."""
    layout = field_names(table)
    slots = [layout.index(name) for name in names]
    width = len(layout)

    def make(*values: object) -> tuple[object, ...]:
        row: list[object] = [None] * width
        for slot, value in zip(slots, values, strict=True):
            row[slot] = value
        return tuple(row)

    return make
