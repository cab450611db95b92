"""Dashboard: the server time of every page with about 10 million events stored
(``--quick``: about 1 million; the generator works in whole rounds of demo
payloads, so it lands a little under, and the stored row counts are listed).
The demo payloads hold no spans or log lines, so Traces and Logs are measured
over empty tables here.

The data goes in the way users' data does: a real ``perfpulse serve``
subprocess receives the demo workload's agent batches (requests with their DB
statements, N+1 findings and cache calls, resource and pool samples) and
browser beacons over HTTP, spread over the 24 hours before the build, with
routes spread over :data:`ROUTE_SPREAD` templates so tables have breadth. The
data directory is cached under ``$TMPDIR/perfpulse-bench/`` (or
``$PERFPULSE_BENCH_CACHE``) by event count and :data:`VERSION`; a re-run starts
at once.

Each page is then requested over loopback with a logged-in session, for the
last 24 hours and for the last 7 days, :data:`RUNS` times after one warm-up;
the figure is the median of the ``Server-Timing: render;dur=`` the page
reports (the time from the request reaching the page to its HTML being ready,
all its queries included). The baseline, in the same run: the same pages from
a collector with an empty store, the floor of rendering and routing alone.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.report import Report, Result, table
from perfpulse.demo import Workload

NAME = "dashboard"
TITLE = "Dashboard page server time"
VERSION = 1  # bump when the data shape changes
TARGET_MS = 300.0
RUNS = 5
ROUTE_SPREAD = 150
REQUESTS_PER_BATCH = 500
READ_TOKEN = "ppr_bench_read_token_0123456789"
INGEST_KEY = "ppi_bench_ingest_key_0123456789"
PUBLIC_KEY = "ppp_bench_public_key_0123456789"
ORIGIN = "http://shop.example"
PAGES = (
    "/",
    "/vitals",
    "/assets",
    "/backend",
    "/backend/route?route=/orders/{id}&method=GET",
    "/database",
    "/cache",
    "/resources",
    "/traces",
    "/logs",
    "/compare",
    "/setup",
)
RANGES = ("24h", "7d")
WORDS = [
    "users",
    "orders",
    "items",
    "carts",
    "search",
    "products",
    "reviews",
    "stock",
    "prices",
    "payments",
    "invoices",
    "shipping",
    "returns",
    "coupons",
    "wishlist",
    "sessions",
    "accounts",
    "addresses",
    "ratings",
    "images",
]


def _cache_root() -> Path:
    root = (
        os.environ.get("PERFPULSE_BENCH_CACHE") or Path(tempfile.gettempdir()) / "perfpulse-bench"
    )
    return Path(root)


class Collector:
    """``perfpulse serve`` on a free loopback port over ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PERFPULSE_READ_TOKEN": READ_TOKEN,
            "PERFPULSE_INGEST_KEY": INGEST_KEY,
            "PERFPULSE_PUBLIC_KEY": PUBLIC_KEY,
            "PERFPULSE_ALLOWED_ORIGINS": ORIGIN,
        }
        self.log = (data_dir.parent / "collector.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "perfpulse.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--fsync",
                "never",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("collector did not start")

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)
        self.log.close()


def _spread(batch: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Give the demo's requests :data:`ROUTE_SPREAD` route templates instead of seven."""
    for event in batch["events"]:
        if "route" in event and event["route"] not in ("/health",):
            k = rng.randrange(ROUTE_SPREAD)
            event["route"] = f"/{WORDS[k % len(WORDS)]}/{k}" + event["route"]
    return batch


def _templates(count: int) -> list[tuple[str, dict[str, Any]]]:
    """Demo payloads made once (timestamps relative to 0), re-stamped for each send."""
    rng = random.Random(11)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        work = Workload(seed=i, clock=lambda: 0.0)
        out.append(("/api/v1/events", _spread(work.batch(REQUESTS_PER_BATCH), rng)))
        out.append(("/api/v1/events", work.resources()))
        out += [(f"/api/v1/rum?key={PUBLIC_KEY}", work.beacon(ORIGIN)) for _ in range(12)]
    return out


def _stamp(payload: dict[str, Any], at: float) -> bytes:
    if "events" in payload:
        events = [{**e, "ts": at + e["ts"]} for e in payload["events"]]
        return json.dumps({**payload, "batch_id": uuid.uuid4().hex, "events": events}).encode()
    return json.dumps({**payload, "id": uuid.uuid4().hex, "ts": at + payload["ts"]}).encode()


def _batches(n: int, start: float, end: float) -> Iterator[tuple[str, bytes]]:
    """(path, body) pairs of about ``n`` events in time order over [start, end)."""
    templates = _templates(8)
    per_round = sum(len(p.get("events", ())) or 15 for _, p in templates)  # a beacon: ~15 rows
    rounds = max(1, round(n / per_round))
    for r in range(rounds):
        for j, (path, payload) in enumerate(templates):
            at = start + (end - start) * (r * len(templates) + j) / (rounds * len(templates))
            yield path, _stamp(payload, at)


def build(n: int) -> dict[str, Any]:
    d = _cache_root() / f"dashboard-{n}-v{VERSION}"
    meta_path = d / "meta.json"
    if meta_path.exists():
        return {**json.loads(meta_path.read_text()), "dir": str(d / "data"), "cached": True}
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    end = time.time()
    start = end - 86_400 + 600
    c = Collector(d / "data")
    accepted = 0
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=c.url, timeout=60) as client:

            def send(item: tuple[str, bytes]) -> int:
                path, body = item
                headers = (
                    {"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"}
                    if path.startswith("/api/v1/events")
                    else {"Origin": ORIGIN, "Content-Type": "text/plain"}
                )
                for _ in range(100):
                    r = client.post(path, content=body, headers=headers)
                    if r.status_code == 202:
                        return int(r.json().get("accepted", 0))
                    if r.status_code != 503:
                        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
                    time.sleep(float(r.headers.get("retry-after", "1")))
                raise RuntimeError("collector stayed full")

            with ThreadPoolExecutor(4) as pool:
                pending: collections.deque[Future[int]] = collections.deque()
                for i, item in enumerate(_batches(n, start, end)):
                    pending.append(pool.submit(send, item))
                    while len(pending) > 16:  # a bounded number in flight
                        accepted += pending.popleft().result()
                    if i % 500 == 0:
                        print(f"  dashboard data: {accepted:,} events", file=sys.stderr, flush=True)
                while pending:
                    accepted += pending.popleft().result()
        while c.metric("perfpulse_spool_depth") > 0:
            time.sleep(1)
        rows = {
            m.group(1): float(m.group(2))
            for m in re.finditer(
                r'perfpulse_table_rows\{table="([a-z_0-9]+)"\} ([0-9.e+]+)',
                httpx.get(f"{c.url}/metrics", timeout=10).text,
            )
        }
    finally:
        c.stop()
    meta = {
        "events": accepted,
        "rows": rows,
        "load_s": time.perf_counter() - started,
        "bytes": (d / "data" / "perfpulse.duckdb").stat().st_size,
    }
    meta_path.write_text(json.dumps(meta))
    return {**meta, "dir": str(d / "data"), "cached": False}


def _login(client: httpx.Client) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
    assert csrf, form.text
    r = client.post("/login", data={"csrf": csrf.group(1), "token": READ_TOKEN})
    assert r.status_code == 303, r.text


def _server_ms(client: httpx.Client, path: str, rng: str) -> list[float]:
    sep = "&" if "?" in path else "?"
    out = []
    for i in range(RUNS + 1):
        r = client.get(f"{path}{sep}range={rng}")
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
        timing = re.search(r"render;dur=([0-9.]+)", r.headers.get("server-timing", ""))
        assert timing, r.headers
        if i:  # the first is a warm-up
            out.append(float(timing.group(1)))
    return out


def _measure(data_dir: Path) -> dict[tuple[str, str], list[float]]:
    c = Collector(data_dir)
    try:
        with httpx.Client(base_url=c.url, timeout=120) as client:
            _login(client)
            return {(p, rng): _server_ms(client, p, rng) for p in PAGES for rng in RANGES}
    finally:
        c.stop()


def run(quick: bool = False) -> Report:
    n = 1_000_000 if quick else 10_000_000
    meta = build(n)
    loaded = _measure(Path(meta["dir"]))
    with tempfile.TemporaryDirectory() as empty:
        floor = _measure(Path(empty) / "data")
    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    rows = []
    for (path, rng), times in loaded.items():
        med, base = statistics.median(times), statistics.median(floor[(path, rng)])
        report.results.append(
            Result(
                f"{path.split('?')[0]} ({rng})",
                med,
                "ms",
                "same page, empty store",
                base,
                target=f"≤ {TARGET_MS:.0f} ms",
                passed=med <= TARGET_MS,
            )
        )
        rows.append([f"`{path}` ({rng})", f"{med:.1f}", f"{max(times):.1f}", f"{base:.1f}"])
    report.details.append(table(["page (range)", "median ms", "max ms", "empty store ms"], rows))
    stored = meta["rows"]
    report.details.append(
        f"Stored: {meta['events']:,} events accepted → "
        + ", ".join(f"{t} {int(v):,}" for t, v in sorted(stored.items()) if v)
        + f" rows; DuckDB file {meta['bytes'] / 2**20:,.0f} MiB "
        + ("(cached)" if meta["cached"] else f"(loaded in {meta['load_s']:.0f} s this run)")
        + "."
    )
    return report


if __name__ == "__main__":
    from bench.report import summary

    result = run(quick="--quick" in sys.argv)
    print(summary([result]))
    for block in result.details:
        print(block)
