"""Memory: peak resident memory of one ``perfpulse serve`` process while it
ingests 10,000 http events/s for 60 s (``--quick``: 10 s), sent as 20 batches of
500 events per second on a fixed schedule (open loop, up to 8 in flight).

RSS is sampled every 100 ms with psutil from the start of the load until the
spool has drained and one more compaction interval has passed; the kernel's own
high-water mark (``VmHWM`` in ``/proc/PID/status``) is read at the end and is the
number judged. Baselines in the same run: the collector idle after start (so the
difference is what ingesting costs), and a bare uvicorn + Starlette process
(:data:`bench.floor.starlette`) idle and under the same load, which is what any
Python web service on this stack costs before perfpulse adds anything. The full
run also measures the collector with ``--memory-limit 512MB`` (DuckDB's buffer
pool while the collector only ingests; the default is 32MB, and 512MB was the
default before reads got a burst limit of their own) to show how much of the
peak that setting decides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench import servers
from bench.load import Template
from bench.report import Report, Result, table
from bench.workload import events_template
from perfpulse.store.duckdb.backend import DEFAULT_MEMORY_LIMIT

NAME = "memory"
TITLE = "Collector memory"
BATCH = 500
PER_S = 20
TARGET_MB = 150.0
VARIANT_LIMIT = "512MB"
MB = 2**20


def vm_hwm(pid: int) -> int:
    """The process's peak resident set (bytes), as the kernel counts it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Sampler:
    """RSS of ``pid`` every ``every_s`` seconds in a background thread."""

    pid: int
    every_s: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        proc = psutil.Process(self.pid)
        t0 = time.perf_counter()

        def loop() -> None:
            while not self._stop.is_set():
                self.samples.append((time.perf_counter() - t0, proc.memory_info().rss))
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return max(rss for _, rss in self.samples)


def idle_rss(pid: int, seconds: float = 2.0) -> int:
    s = Sampler(pid).start()
    time.sleep(seconds)
    return s.stop()


@dataclass
class Sent:
    ok: int = 0
    failed: int = 0
    max_late_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


def send_paced(base: str, t: Template, seconds: float) -> Sent:
    """``PER_S`` POSTs a second on a fixed schedule, from a pool of 8 threads."""
    sent = Sent()
    lock = threading.Lock()
    local = threading.local()
    run = uuid.uuid4().hex[:8]

    def post(i: int, due: float) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base, timeout=30)
        late = time.perf_counter() - due
        try:
            r = client.post(t.path, content=t.body(f"{run}-{i}", i), headers=t.headers)
            code = r.status_code
        except httpx.HTTPError:
            code = 0
        with lock:
            sent.max_late_s = max(sent.max_late_s, late)
            sent.statuses[code] = sent.statuses.get(code, 0) + 1
            if code == 202:
                sent.ok += 1
            else:
                sent.failed += 1

    with ThreadPoolExecutor(8) as pool:
        start = time.perf_counter()
        for i in range(int(seconds * PER_S)):
            due = start + i / PER_S
            time.sleep(max(0.0, due - time.perf_counter()))
            pool.submit(post, i, due)
    return sent


@dataclass
class Measured:
    """One collector run: idle RSS, the load, and the peak."""

    idle: int
    idle_hwm: int
    peak: int
    peak_sampled: int
    samples: list[tuple[float, int]]
    sent: Sent
    load_s: float
    accepted: float
    depth: int
    drain_s: float


def measure_collector(
    tmp: Path, t: Template, seconds: float, settle_s: float, args: tuple[str, ...] = ()
) -> Measured:
    with servers.collector(tmp / "data", args=args) as server:
        time.sleep(1.0)
        idle = idle_rss(server.pid)
        idle_hwm = vm_hwm(server.pid)
        sampler = Sampler(server.pid).start()
        started = time.perf_counter()
        sent = send_paced(server.base, t, seconds)
        load_s = time.perf_counter() - started
        depth = server.spool_depth()
        drain_s = server.wait_drained()
        time.sleep(settle_s)  # at least one more compaction (every 30 s)
        peak_sampled = sampler.stop()
        peak = vm_hwm(server.pid)
        accepted = server.metrics().get('perfpulse_events_accepted_total{endpoint="events"}', 0)
    return Measured(
        idle, idle_hwm, peak, peak_sampled, sampler.samples, sent, load_s, accepted, depth, drain_s
    )


_IMPORTS = """
import json, psutil
p = psutil.Process()
out = [("python", p.memory_info().rss)]
for name in ("duckdb", "nanoarrow", "starlette.applications", "uvicorn", "msgspec",
             "prometheus_client", "perfpulse.server"):  # what a collector that only ingests loads
    __import__(name)
    out.append((name, p.memory_info().rss))
import tempfile, pathlib
from perfpulse.store.duckdb.backend import DuckDBBackend
DuckDBBackend(pathlib.Path(tempfile.mkdtemp()) / "x.duckdb")
out.append(("DuckDBBackend(file) opened", p.memory_info().rss))
print(json.dumps(out))
"""


def import_costs() -> list[tuple[str, int]]:
    """RSS after each import of the collector, in a fresh interpreter, in order."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS], capture_output=True, text=True, check=True
    )
    steps = json.loads(out.stdout)
    return [
        (name, rss - prev) for (name, rss), (_, prev) in zip(steps, [("", 0), *steps], strict=False)
    ]


def run(quick: bool = False) -> Report:
    seconds, settle_s, floor_s = (10.0, 3.0, 5.0) if quick else (60.0, 35.0, 15.0)
    t = events_template(BATCH, variants=40)
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        with servers.floor("starlette", tmp) as floor:
            time.sleep(1.0)
            floor_idle = idle_rss(floor.pid)
            sampler = Sampler(floor.pid).start()
            floor_sent = send_paced(floor.base, t, floor_s)
            floor_peak = max(sampler.stop(), vm_hwm(floor.pid))
        m = measure_collector(tmp / "default", t, seconds, settle_s)
        variant = None
        if not quick:
            variant = measure_collector(
                tmp / "small", t, seconds, settle_s, ("--memory-limit", VARIANT_LIMIT)
            )

    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    rate = m.accepted / m.load_s
    report.results += [
        Result(
            f"collector peak RSS (VmHWM), {rate:,.0f} events/s for {seconds:.0f} s",
            m.peak / MB,
            "MB",
            "bare uvicorn+Starlette idle",
            floor_idle / MB,
            f"≤ {TARGET_MB:.0f} MB",
            m.peak / MB <= TARGET_MB,
        ),
        Result(
            "collector RSS idle after start",
            m.idle / MB,
            "MB",
            "bare uvicorn+Starlette idle",
            floor_idle / MB,
        ),
        Result(
            "bare uvicorn+Starlette peak under the same load",
            floor_peak / MB,
            "MB",
            "bare uvicorn+Starlette idle",
            floor_idle / MB,
        ),
    ]
    if variant is not None:
        report.results.append(
            Result(
                f"collector peak RSS with --memory-limit {VARIANT_LIMIT} (the former default)",
                variant.peak / MB,
                "MB",
                f"default --memory-limit {DEFAULT_MEMORY_LIMIT}",
                m.peak / MB,
            )
        )
    step = max(1, len(m.samples) // 16)
    timeline = [[f"{ts:.0f} s", f"{rss / MB:.1f} MB"] for ts, rss in m.samples[::step]]
    rows = [
        ["DuckDB `--memory-limit` (default)", DEFAULT_MEMORY_LIMIT],
        ["perfpulse adds (peak − bare Starlette idle)", f"{(m.peak - floor_idle) / MB:.1f} MB"],
        ["ingesting adds (peak − collector idle)", f"{(m.peak - m.idle) / MB:.1f} MB"],
        ["collector VmHWM before the load", f"{m.idle_hwm / MB:.1f} MB"],
        ["largest 100 ms RSS sample", f"{m.peak_sampled / MB:.1f} MB ({len(m.samples)} samples)"],
        [
            "batches accepted / refused",
            f"{m.sent.ok:,} / {m.sent.failed:,} (statuses {m.sent.statuses})",
        ],
        ["events accepted (server count)", f"{m.accepted:,.0f} in {m.load_s:.1f} s"],
        ["latest send behind schedule", f"{m.sent.max_late_s * 1e3:.0f} ms"],
        ["spool depth when the load stopped / drain", f"{m.depth} / {m.drain_s:.2f} s"],
        [
            "bare Starlette under load: batches ok / failed",
            f"{floor_sent.ok:,} / {floor_sent.failed:,} in {floor_s:.0f} s",
        ],
    ]
    if variant is not None:
        rows.append(
            [
                f"--memory-limit {VARIANT_LIMIT}: idle / peak / events accepted",
                f"{variant.idle / MB:.1f} / {variant.peak / MB:.1f} MB / {variant.accepted:,.0f}",
            ]
        )
    report.details.append(table(["", ""], rows))
    costs = import_costs()
    report.details.append(
        "Where the idle RSS comes from (a fresh interpreter, RSS added by each step in order):\n\n"
        + table(["step", "RSS added"], [[f"`{n}`", f"{b / MB:.1f} MB"] for n, b in costs])
    )
    report.details.append(
        "RSS over time (collector, default settings, from the start of the load):\n\n"
        + table(["t", "RSS"], timeline)
    )
    return report
