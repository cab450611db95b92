"""Light load: what a collector costs a small site. One ``perfpulse serve``
process (``--fsync interval``) takes a steady trickle for 20 s each (``--quick``:
8 s): 20 single beacons a second, 200 a second, and one agent batch of 100 http
events a second. Measured: the collector process's CPU time over the trickle, as
a share of one core, and per request.

The baseline in the same run is :data:`bench.floor.raw` (a bare ASGI endpoint
that reads and discards the body, under the same uvicorn) taking the same 200
beacons a second: what answering the requests alone costs. The rest is storing
them: a flush's fixed price (its statements are planned afresh each time) and
the rollups. The sender is one HTTP client on a fixed schedule (open loop); the
server starts fresh for each load.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench import servers
from bench.load import Template
from bench.report import Report, Result, table
from bench.workload import beacon_template, events_template

NAME = "light"
TITLE = "Light load"


@dataclass(slots=True)
class Trickle:
    """One load: ``rate`` requests a second of ``template`` for ``seconds``."""

    name: str
    template: Template
    rate: float


@dataclass(slots=True)
class Measured:
    load: Trickle
    sent: int
    seconds: float
    cpu_s: float

    @property
    def share(self) -> float:
        """Cores the server used on average (1.0: one core all the time)."""
        return self.cpu_s / self.seconds

    @property
    def per_request_ms(self) -> float:
        return self.cpu_s / max(self.sent, 1) * 1e3


def trickle(base: str, pid: int, load: Trickle, seconds: float) -> Measured:
    """Send ``load`` on a fixed schedule and read the server's CPU time around it."""
    proc = psutil.Process(pid)
    t = load.template
    run = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=base, headers=t.headers, timeout=10) as client:
        client.post(t.path, content=t.body(f"{run}-warm"))  # connected and warm
        time.sleep(0.5)
        cpu = proc.cpu_times()
        before = cpu.user + cpu.system
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < seconds:
            r = client.post(t.path, content=t.body(f"{run}-{sent:08d}", sent))
            if r.status_code >= 300:
                raise RuntimeError(f"{load.name}: {r.status_code} {r.text[:200]}")
            sent += 1
            time.sleep(max(0.0, start + sent / load.rate - time.perf_counter()))
        elapsed = time.perf_counter() - start
        cpu = proc.cpu_times()
    return Measured(load, sent, elapsed, cpu.user + cpu.system - before)


def run(quick: bool = False) -> Report:
    seconds = 8.0 if quick else 20.0
    beacons = beacon_template()
    loads = [
        Trickle("20 beacons/s", beacons, 20.0),
        Trickle("200 beacons/s", beacons, 200.0),
        Trickle("1 batch of 100 http events/s", events_template(100), 1.0),
    ]
    measured: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-light-") as tmp_name:
        tmp = Path(tmp_name)
        with servers.floor("raw", tmp) as floor:
            base = trickle(floor.base, floor.pid, loads[1], seconds)
        for i, load in enumerate(loads):
            with servers.collector(tmp / f"data{i}", fsync="interval") as server:
                measured.append(trickle(server.base, server.pid, load, seconds))

    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    for m in measured:
        report.results.append(
            Result(
                f"collector CPU, {m.load.name}",
                m.share * 100,
                "% of a core",
                f"bare ASGI floor, {base.load.name}" if m.load is loads[1] else "",
                base.share * 100 if m.load is loads[1] else None,
            )
        )
    rows = [
        [
            who,
            m.load.name,
            f"{m.sent / m.seconds:.1f}",
            f"{m.share * 100:.1f} %",
            f"{m.per_request_ms:.2f} ms",
        ]
        for who, m in [("floor:raw", base), *(("perfpulse", m) for m in measured)]
    ]
    report.details.append(
        f"Every run ({seconds:.0f} s each):\n\n"
        + table(
            ["server", "load", "requests/s sent", "CPU, one core = 100 %", "CPU a request"], rows
        )
    )
    return report
