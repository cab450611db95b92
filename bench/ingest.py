"""Ingest: events/s for batches of 1,000 http events and requests/s for single
RUM beacons into one ``perfpulse serve`` process, each against a floor.

The floor is :data:`bench.floor.raw`, a bare ASGI endpoint that reads and
discards the same body, under uvicorn with the collector's loop and HTTP
settings, in its own process; :data:`bench.floor.starlette` (the same endpoint
as a Starlette route) is measured too, to show how much of the gap is the
framework. Load comes from ``wrk`` (one thread) in another process, with
pre-built bodies whose ids are unique. Each configuration runs with
``--fsync always`` and ``--fsync interval``, in fresh data directories.

After each collector run: the spool depth when the load stopped, and the seconds
until the writer had drained it (``perfpulse_spool_depth`` back to 0), and the
process's peak resident memory (``VmHWM``, warm-up and drain included). Every
configuration runs twice, interleaved, for 20 s after a 3 s warm-up; the best run
counts. The CPU time the server process used per event is reported too: unlike
requests/s it hardly moves when other work shares the machine. With py-spy
installed, a separate profiled run of each load is summarized. ``--quick``: one
2 s run each, ``--fsync interval`` only, no Starlette floor, no profile.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import profile, servers
from bench.load import LoadResult, Template, blast
from bench.machine import CpuMeter, CpuUsage
from bench.memory import vm_hwm
from bench.report import Report, Result, number, table
from bench.workload import beacon_template, events_template

NAME = "ingest"
TITLE = "Ingest throughput"
BATCH = 1000
EVENTS_TARGET = 200_000.0
BEACON_TARGET = 0.5
PROFILE_S = 8.0


@dataclass(slots=True)
class Run:
    """One measured configuration."""

    kind: str  # "events" or "beacons"
    server: str  # "floor:raw", "floor:starlette", "perfpulse fsync=always", ...
    load: LoadResult
    cpu: CpuUsage
    accepted: float | None = None  # events the collector counted as accepted
    depth_at_end: int | None = None
    drain_s: float | None = None
    writer_rows_per_s: float | None = None
    peak_rss: int = 0  # the server's VmHWM (bytes) at the end, the warm-up and drain included

    @property
    def per_s(self) -> float:
        return self.load.ok_per_s

    @property
    def stored_per_s(self) -> float | None:
        """Requests whose records the writer stored during the run (the spool
        started empty), i.e. the rate the collector sustained end to end."""
        if self.depth_at_end is None:
            return None
        return max(0.0, self.load.ok - self.depth_at_end) / self.load.duration_s


def _phase(
    server: servers.Server, t: Template, conns: int, duration_s: float
) -> tuple[LoadResult, CpuUsage]:
    meter = CpuMeter(server.pid)
    result = blast(server.base, t, connections=conns, duration_s=duration_s)
    return result, meter.stop()


def _floor(app: str, kind: str, t: Template, conns: int, dur: float, warm: float, tmp: Path) -> Run:
    with servers.floor(app, tmp) as server:
        blast(server.base, t, connections=conns, duration_s=warm)
        load, cpu = _phase(server, t, conns, dur)
        peak = vm_hwm(server.pid)
    return Run(kind, f"floor:{app}", load, cpu, peak_rss=peak)


def _collector(
    fsync: str, kind: str, t: Template, conns: int, dur: float, warm: float, tmp: Path
) -> Run:
    with servers.collector(Path(tempfile.mkdtemp(dir=tmp)) / "data", fsync=fsync) as server:
        blast(server.base, t, connections=conns, duration_s=warm)
        server.wait_drained()
        before = server.metrics()
        load, cpu = _phase(server, t, conns, dur)
        after = server.metrics()
        depth = int(after.get("perfpulse_spool_depth", 0))
        drain_s = server.wait_drained()
        peak = vm_hwm(server.pid)
    key = 'perfpulse_events_accepted_total{endpoint="%s"}' % (
        "events" if kind == "events" else "rum"
    )
    rows = "perfpulse_writer_rows_total"
    return Run(
        kind,
        f"perfpulse --fsync {fsync}",
        load,
        cpu,
        accepted=after.get(key, 0) - before.get(key, 0),
        depth_at_end=depth,
        drain_s=drain_s,
        writer_rows_per_s=(after.get(rows, 0) - before.get(rows, 0)) / load.duration_s,
        peak_rss=peak,
    )


def _profile(kind: str, t: Template, conns: int, tmp: Path) -> str:
    out = tmp / f"profile-{kind}.txt"
    with servers.collector(Path(tempfile.mkdtemp(dir=tmp)) / "data", fsync="interval") as server:
        blast(server.base, t, connections=conns, duration_s=2.0)
        with profile.record(server.pid, PROFILE_S, out) as running:
            blast(server.base, t, connections=conns, duration_s=PROFILE_S)
    if not running:
        return "(py-spy is not installed: `pip install py-spy` into the virtualenv for a profile)"
    return profile.summarize(out)


def _best(runs: list[Run], kind: str, server: str) -> Run:
    return max((r for r in runs if r.kind == kind and r.server == server), key=lambda r: r.per_s)


def run(quick: bool = False) -> Report:
    dur, warm, rounds = (2.0, 1.0, 1) if quick else (20.0, 3.0, 2)
    floors = ("raw",) if quick else ("raw", "starlette")
    fsyncs = ("interval",) if quick else ("always", "interval")
    kinds = {
        "events": (events_template(BATCH), 8),
        "beacons": (beacon_template(), 64),
    }
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        for _ in range(rounds):
            for kind, (t, conns) in kinds.items():
                for app in floors:
                    runs.append(_floor(app, kind, t, conns, dur, warm, tmp))
                for fsync in fsyncs:
                    runs.append(_collector(fsync, kind, t, conns, dur, warm, tmp))
        profiles = {} if quick else {k: _profile(k, t, c, tmp) for k, (t, c) in kinds.items()}

    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    ev_floor = _best(runs, "events", "floor:raw")
    bc_floor = _best(runs, "beacons", "floor:raw")
    for fsync in fsyncs:
        ev = _best(runs, "events", f"perfpulse --fsync {fsync}")
        report.results.append(
            Result(
                f"events/s, batches of {BATCH:,} http events, --fsync {fsync}",
                ev.per_s * BATCH,
                "events/s",
                "bare ASGI floor",
                ev_floor.per_s * BATCH,
                f"≥ {EVENTS_TARGET:,.0f} events/s",
                ev.per_s * BATCH >= EVENTS_TARGET,
            )
        )
    for fsync in fsyncs:
        bc = _best(runs, "beacons", f"perfpulse --fsync {fsync}")
        ratio = bc.per_s / bc_floor.per_s
        report.results.append(
            Result(
                f"single-beacon requests/s, --fsync {fsync}",
                bc.per_s,
                "req/s",
                "bare ASGI floor",
                bc_floor.per_s,
                f"≥ {BEACON_TARGET:.0%} of floor",
                ratio >= BEACON_TARGET,
            )
        )
    report.details.append(_runs_table(runs, kinds))
    for kind, per, floor in (("events", BATCH, ev_floor), ("beacons", 1, bc_floor)):
        unit = "event" if kind == "events" else "beacon"
        for fsync in fsyncs:
            sustained = max(
                (r for r in runs if r.kind == kind and r.server == f"perfpulse --fsync {fsync}"),
                key=lambda r: r.stored_per_s or 0.0,
            )
            report.results.append(
                Result(
                    f"{unit}s stored per second during the load (the writer's pace), --fsync {fsync}",
                    (sustained.stored_per_s or 0.0) * per,
                    "events/s" if kind == "events" else "req/s",
                    "bare ASGI floor",
                    floor.per_s * per,
                )
            )
        run_ = _best(runs, kind, "perfpulse --fsync interval")
        report.results.append(
            Result(
                f"server CPU per {unit} (--fsync interval; robust to other load)",
                run_.cpu.server / run_.per_s / per * 1e6,
                "µs",
                "bare ASGI floor",
                floor.cpu.server / floor.per_s / per * 1e6,
            )
        )
    for kind, text in profiles.items():
        report.details.append(
            f"Profile of the collector under the {kind} load (`--fsync interval`, py-spy, "
            f"{PROFILE_S:.0f} s, all threads; a separate run, not one of the measured ones):\n\n"
            + text
        )
    report.details.append(
        "Ratios use the best of the rounds for each configuration (interference from other "
        "work on the machine only lowers throughput). `cores` is the average number of CPU "
        "cores busy during the measured run: the server process, the load generator, and "
        "everything else on the machine (other work that was running meanwhile)."
    )
    return report


def _runs_table(runs: list[Run], kinds: dict[str, tuple[Template, int]]) -> str:
    rows = []
    for r in runs:
        conns = kinds[r.kind][1]
        per = BATCH if r.kind == "events" else 1
        rows.append(
            [
                r.kind,
                r.server,
                f"{conns}",
                number(r.per_s, "req/s"),
                number(r.per_s * per, "ev/s") if r.kind == "events" else "–",
                f"{r.load.p50_ms:.1f} / {r.load.p99_ms:.1f}",
                f"{r.load.errors}",
                r.cpu.text(),
                f"{r.cpu.server / r.per_s * 1e6 / per:,.1f} µs",
                "–" if r.accepted is None else number(r.accepted / r.load.duration_s, "/s"),
                "–" if r.stored_per_s is None else number(r.stored_per_s, "req/s"),
                "–" if r.writer_rows_per_s is None else number(r.writer_rows_per_s, "rows/s"),
                "–" if r.depth_at_end is None else f"{r.depth_at_end}",
                "–" if r.drain_s is None else f"{r.drain_s:.2f} s",
                f"{r.peak_rss / 2**20:.0f} MB",
            ]
        )
    sizes = ", ".join(
        f"{k}: {number(t.size / 1024, 'KiB')} per body" for k, (t, _) in kinds.items()
    )
    return (
        f"Every run ({sizes}; tool: {runs[0].load.tool}, {runs[0].load.duration_s:.0f} s each "
        "after a warm-up):\n\n"
        + table(
            [
                "kind",
                "server",
                "conns",
                "requests",
                "events",
                "latency p50 / p99 ms",
                "errors",
                "cores",
                "server CPU per event",
                "events accepted (server count)",
                "stored while loading",
                "writer rows",
                "spool depth at end",
                "drain",
                "peak RSS",
            ],
            rows,
        )
    )
