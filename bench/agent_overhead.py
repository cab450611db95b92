"""What an APM agent costs a Starlette app: perfpulse against the usual alternatives.

One do-nothing Starlette route (``GET /items/{item_id}`` answering ``ok``,
built by :mod:`bench.agent_app`, which the server process imports alone),
served by uvicorn (one process, uvloop + httptools), measured in the same run
in seven variants:

- ``bare``: no instrumentation, the baseline;
- ``perfpulse``: :class:`perfpulse.agent.asgi.PerfpulseMiddleware`, sending to a
  real ``perfpulse serve`` on loopback (resource sampler on, every 10 s);
- ``perfpulse-stub``: the same agent sending to the stub receiver the Sentry
  variant sends to (below), which answers 200 to every batch. The agent's work
  is the same (encoding, gzip, one ``POST`` a batch); what is left out is the
  collector's storage work, which runs on wrk's CPU (below) and, even at nice
  19, slows wrk enough to raise the server's CPU per request (about 7 µs in 20
  paired rounds on Nov 27, 2026). The peers send nothing to a real backend
  either (the OTel exporter drops the spans; nobody scrapes Prometheus);
- ``perfpulse-python``: as ``perfpulse-stub``, with the middleware's Python twin
  (:class:`perfpulse.agent.asgi.PythonMiddleware`, what runs where the compiled
  one was not built);
- ``prometheus``: ``prometheus-fastapi-instrumentator`` (``instrument(app)``);
- ``otel``: OpenTelemetry's ASGI middleware with the SDK's ``TracerProvider``
  and a ``BatchSpanProcessor`` whose exporter drops the spans (no-op exporter,
  so no export cost is counted, only the spans' creation and batching);
- ``sentry``: ``sentry-sdk`` with ``traces_sample_rate=1.0`` (its Starlette
  integration is enabled automatically), DSN pointing at the stub receiver, an
  HTTP server on 127.0.0.1 that answers 200 to every envelope.

**Method.** The app server is pinned to CPU 1; ``wrk`` (one thread, 16
connections), the collector and the stub receiver share CPU 0, the last
two at nice 19 so that they do not slow wrk down (see :func:`background`). The
headline figure is the **server's CPU time per request**: the user + system
time of the server process (all its threads: the agent's sender, OTel's batch
processor, Sentry's transport) over the load, divided by the requests ``wrk``
completed; "µs added" is that minus the bare app's. Unlike ``1 / throughput``
(also shown, with the mean latency, which at 16 connections is about 16 × the
per-request time) it does not move when other processes take CPU 1 away, which
on a shared machine they do. Each variant is started fresh in each round
(variants interleaved, every other round in reverse order) once the collector
is idle again after the previous variant (:func:`settle`), warmed up, then
loaded; the median round counts. A second table pairs each round with the bare
app's in the same round (slow drifts of a shared machine cancel) and splits the
CPU between the event loop's thread and the agents' own threads. It also gives
each variant's best round against the bare app's best: what other work on the
machine does to a round only ever adds CPU per request (a slowed load generator,
caches taken), so the least disturbed rounds are the fastest ones, and on a busy
machine their difference is the steadier figure. RSS
is read from the server process after the load. perfpulse and ``bench/`` are
byte-compiled first, as the installed peers are (``--no-compile`` skips it; see
:func:`compile_sources`).

The in-process columns call the ASGI app directly (no server, no sockets) N
times per variant, each variant in its own interpreter pinned to CPU 1, and
count the CPU time of that process (its background threads included) per call:
best of 5 runs in each of 3 fresh interpreters. It is the low-noise figure on a
busy machine.

``--instructions`` replaces the timing with instruction counts: each variant's
server runs once under valgrind's callgrind and the instructions a request are
reported per thread (see :func:`instructions`). They are exact and repeatable,
so they show what a change to the agent saves; the time an instruction takes
is not in them.

``--alternate`` measures each variant against the bare app in one server
process, the two taking turns every ``--window`` seconds (see
:func:`alternate`): the precise figure. Separate server processes see the
machine at different moments, and on this shared machine the bare app's CPU a
request moved by 30 % from one round to the next, so a few µs were out of
reach of their medians; turns of 0.1 s put a 60 s run's quartiles within
±3 µs of its median.

Run::

    python -m bench.agent_overhead --duration 10 --rounds 3
    python -m bench.agent_overhead --instructions --duration 20
    python -m bench.agent_overhead --alternate --duration 60 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.agent_app import (
    ALTERNATE_ENV,
    COLLECTOR_ENV,
    KEY_ENV,
    SENTRY_ENV,
    STUB_ENV,
    VARIANT_ENV,
    make_app,
)
from bench.servers import INGEST_KEY, collector, free_port, pythonpath

VARIANTS = (
    "bare",
    "perfpulse",
    "perfpulse-stub",
    "perfpulse-python",
    "prometheus",
    "otel",
    "sentry",
)
ROOT = Path(__file__).resolve().parent.parent


# --- helpers of the driving process ----------------------------------------------


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # an app server stopped between rounds resets its kept-alive connection: expected
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Envelopes(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def background(pid: int) -> None:
    """Every thread of process ``pid`` at nice 19 (the threads it starts later inherit it).

    For what the agents send to (the collector, the stub receiver): on CPU 0
    they would take time from wrk, and a server loaded with fewer requests a second
    spends more CPU on each (its event loop handles fewer per wake-up), which would
    count their receiver's work against perfpulse and Sentry.
    """
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(task), 19)


def settle(
    pid: int, quiet_share: float = 0.02, window_s: float = 0.5, limit_s: float = 60.0
) -> float:
    """Wait until process ``pid`` (the collector) is idle; returns the seconds waited.

    After a ``perfpulse`` round the collector may still be storing what it was
    sent (the writer drains its spool, rollups follow), on CPU 0 with wrk. The
    next variant's round must not run against a load generator slowed by that.
    Idle: less than ``quiet_share`` of a CPU over ``window_s``.
    """
    proc = psutil.Process(pid)
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = sum(proc.cpu_times()[:2])
        time.sleep(window_s)
        if sum(proc.cpu_times()[:2]) - before < quiet_share * window_s:
            break
    return time.monotonic() - started


@contextlib.contextmanager
def stub_receiver() -> Iterator[str]:
    """An HTTP server on loopback that answers 200 to every ``POST``; yields its base URL.

    Sentry's envelopes and, for ``perfpulse-stub``, the agent's batches go here.
    """
    httpd = _StubServer(("127.0.0.1", 0), _Envelopes)

    def serve() -> None:
        with contextlib.suppress(OSError):  # this thread, and the ones it starts
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        httpd.serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def app_server(
    variant: str,
    env: dict[str, str],
    log: Path,
    prefix: tuple[str, ...] = (),
    start_s: float = 60.0,
) -> Iterator[tuple[str, int]]:
    """The app of ``variant`` under uvicorn, pinned to CPU 1; yields its URL and pid.

    ``prefix`` goes before the command (valgrind, for :func:`instructions`).
    """
    port = free_port()
    argv = [
        *prefix, sys.executable, "-m", "uvicorn", "bench.agent_app:make_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    full_env = {**os.environ, "PYTHONPATH": pythonpath(), VARIANT_ENV: variant, **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=full_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(proc.pid, {1})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{variant} exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant} did not start")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(start_s)  # under valgrind, writing its counts takes a while
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Load:
    rps: float
    latency_us: float
    errors: int
    requests: int
    cpu_us: float = 0.0  # server CPU (all its threads) per request
    main_us: float = 0.0  # of it, the event loop's thread (the one serving requests)


def wrk(url: str, duration_s: float, connections: int) -> Load:
    for _ in range(3):
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", f"{url}/items/42"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            break
        print(f"wrk failed ({done.stdout} {done.stderr}); again", file=sys.stderr)
        time.sleep(1)
    else:
        raise RuntimeError("wrk kept failing")
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    latency_us = float(value) * {"us": 1.0, "ms": 1e3, "s": 1e6}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return Load(rps, latency_us, int(errors[1]) if errors else 0, requests)


@dataclass
class Counted:
    requests: int
    main: float  # instructions a request on the event loop's thread
    other: float  # on every other thread together (the agents' own)


def instructions(variant: str, env: dict[str, str], seconds: float, tmp: Path) -> Counted:
    """Instructions a request for ``variant``, counted by valgrind's callgrind.

    The server runs under ``valgrind --tool=callgrind --instr-atstart=no
    --separate-threads=yes``; counting is switched on (``callgrind_control -i
    on``) after a warm-up and off after ``seconds`` of wrk with 4 connections. A
    count does not move with the machine's speed or with what else runs, so it
    shows a change of a few hundred instructions that CPU time, ±30 % from one
    round to the next, cannot. It leaves out the kernel's work and the cost of
    each instruction (cache misses, branch mispredictions).
    """
    out = tmp / f"callgrind.{variant}"
    prefix = (
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
        f"--callgrind-out-file={out}.%p",
    )  # fmt: skip
    with app_server(variant, env, tmp / f"{variant}.log", prefix, start_s=300) as (url, pid):
        wrk(url, 5, 4)
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True, check=True)
        load = wrk(url, seconds, 4)
        subprocess.run(
            ["callgrind_control", "-i", "off", str(pid)], capture_output=True, check=True
        )
    main = other = 0
    for part in tmp.glob(f"callgrind.{variant}.{pid}-*"):
        totals = re.search(r"^totals:\s+(\d+)", part.read_text(), re.M)
        count = int(totals[1]) if totals else 0
        if part.name.endswith("-01"):  # thread 1: the main thread, the event loop's
            main += count
        else:
            other += count
    if main == 0:
        raise RuntimeError(f"valgrind left no counts for {variant} (see {tmp / variant}.log)")
    return Counted(load.requests, main / load.requests, other / load.requests)


def instructions_report(counted: dict[str, Counted], seconds: float) -> str:
    base = counted.get("bare")
    lines = [
        f"Instructions a request (valgrind callgrind, user space only; wrk -c4, {seconds:g} s"
        " under valgrind; the collector and stub receiver as in the timed runs)",
        "",
        "| variant | requests counted | event loop's thread | other threads | total |"
        " added on the loop's thread | added in all |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, c in counted.items():
        total = c.main + c.other
        loop = f"{c.main - base.main:+,.0f}" if base else "n/a"
        added = f"{total - (base.main + base.other):+,.0f}" if base else "n/a"
        lines.append(
            f"| {v} | {c.requests:,} | {c.main:,.0f} | {c.other:,.0f} | {total:,.0f} | {loop} |"
            f" {added} |"
        )
    return "\n".join(lines)


@dataclass
class Alternated:
    """What :func:`alternate` measured of one variant against the bare app."""

    variant: str
    pairs: int  # measured windows with a bare window on each side
    requests: int  # requests the measured app served in them
    bare_loop_us: float  # the bare app's loop CPU a request, median window
    loop_added: list[float]  # per measured window: loop µs a request over its neighbours'
    other_us: float  # the agents' threads: CPU a measured request, over the whole run

    @property
    def added_us(self) -> float:
        return statistics.median(self.loop_added) + self.other_us


def alternate(
    variant: str, env: dict[str, str], seconds: float, window_s: float, tmp: Path
) -> Alternated:
    """``variant`` and the bare app in one server, taking turns every ``window_s``.

    :class:`bench.agent_app.Alternating` serves each request with the app whose
    turn it is and reads the CPU time of the event loop's thread and of the
    process at each turn, so each window has its requests and its CPU. A window of
    ``variant`` is set against the mean of the bare windows on either side of it
    (which cancels a drift that is linear over three windows) as loop µs a
    request added; the median of those is the loop's figure. The agents' own
    threads (perfpulse's sender, OTel's batch processor) are counted over the
    whole run, per request of ``variant``: their work lags the requests it comes
    of, so it is not split by window; the bare app has no threads of its own. In
    separate server processes, rounds seconds apart, the bare app's CPU a
    request moved by 30 % on this machine; the windows see the same machine to
    within a second. What runs on the loop's thread for ``variant`` after its
    window ends (a sender's last batch taking the GIL) counts against the bare
    app, so the loop figure may be slightly low; its sum over the run is in the
    agents' threads' figure either way.
    """
    full_env = {**env, VARIANT_ENV: "alternate", ALTERNATE_ENV: variant}
    with app_server("alternate", full_env, tmp / f"alternate-{variant}.log") as (url, _):
        httpx.get(f"{url}/_alternate/start", params={"window": 0.25})
        wrk(url, 2.0, 16)  # both apps warm (Starlette builds its middleware at first call)
        httpx.get(f"{url}/_alternate/stop")
        httpx.get(f"{url}/_alternate/start", params={"window": window_s})
        wrk(url, seconds, 16)
        windows = httpx.get(f"{url}/_alternate/stop").json()
    return alternated(variant, windows)


def alternate_all(
    variants: list[str],
    env: dict[str, str],
    seconds: float,
    rounds: int,
    window_s: float,
    tmp: Path,
    collector_pid: int,
) -> list[Alternated]:
    """:func:`alternate` for every variant but ``bare`` and ``sentry`` (whose
    ``sentry_sdk.init`` patches Starlette itself, so the bare app too), ``rounds``
    times each, each once the collector is idle (:func:`settle`)."""
    results = []
    for variant in variants:
        if variant == "bare":
            continue
        if variant == "sentry":
            print("sentry cannot take turns with the bare app; left out", file=sys.stderr)
            continue
        for _ in range(rounds):
            settle(collector_pid)
            results.append(alternate(variant, env, seconds, window_s, tmp))
            print(f"alternate {variant}: {results[-1].added_us:+.1f} µs", file=sys.stderr)
    return results


def alternated(variant: str, windows: list[list[float]]) -> Alternated:
    """The figures of :func:`alternate` from the server's windows (see
    :class:`bench.agent_app.Alternating`); the first and last, partly idle, are left out."""
    kept = windows[1:-1]
    loop_us = [w[2] / w[1] * 1e6 if w[1] else float("nan") for w in kept]
    added, requests = [], 0
    for i in range(1, len(kept) - 1):
        if kept[i][0] == 1 and kept[i - 1][0] == 0 and kept[i + 1][0] == 0 and kept[i][1]:
            added.append(loop_us[i] - (loop_us[i - 1] + loop_us[i + 1]) / 2)
    measured = sum(int(w[1]) for w in kept if w[0] == 1)
    requests = measured
    other_s = sum(w[3] - w[2] for w in kept)
    if not added or not measured:
        raise RuntimeError(f"alternate {variant}: no complete windows ({windows})")
    bare = [u for w, u in zip(kept, loop_us, strict=True) if w[0] == 0]
    return Alternated(
        variant, len(added), requests, statistics.median(bare), added, other_s / measured * 1e6
    )


def alternate_report(results: list[Alternated], seconds: float, window_s: float) -> str:
    lines = [
        f"One server process pinned to 1 CPU, the bare app and the variant taking turns every"
        f" {window_s:g} s for {seconds:g} s; wrk -t1 -c16",
        "",
        "| variant | windows paired | requests measured | bare app, loop µs/request |"
        " loop µs added, median | quartiles | agent threads µs/request | µs added |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q = statistics.quantiles(r.loop_added, n=4) if len(r.loop_added) > 1 else [0.0] * 3
        lines.append(
            f"| {r.variant} | {r.pairs} | {r.requests:,} | {r.bare_loop_us:.1f} |"
            f" {statistics.median(r.loop_added):+.1f} | {q[0]:+.1f} .. {q[2]:+.1f} |"
            f" {r.other_us:.1f} | {r.added_us:+.1f} |"
        )
    return "\n".join(lines)


def compile_sources() -> None:
    """Byte-compile perfpulse and ``bench/`` (into their ``__pycache__``), as
    ``pip install`` does for every installed package.

    The peers are installed, with their bytecode; perfpulse runs from a source
    checkout. Without bytecode (``PYTHONDONTWRITEBYTECODE=1``, or a read-only
    tree) every server start compiles the agent again, and the compiler's work
    stays in the RSS: about 1 MB more for perfpulse, which the peers never pay.
    """
    import compileall

    import perfpulse

    for directory in (Path(perfpulse.__file__).parent, ROOT / "bench"):
        compileall.compile_dir(directory, quiet=1)


def cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of the process (all its threads), and of its main thread alone."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    main = next((t.user_time + t.system_time for t in proc.threads() if t.id == pid), 0.0)
    return float(times.user + times.system), float(main)


def inprocess(variant: str, n: int, env: dict[str, str], interpreters: int = 3) -> float:
    """µs per request, calling the app in fresh interpreters (see ``--inprocess``):
    the best of ``interpreters``. One interpreter's figure is bimodal on a shared
    machine (the same code measures 21 or 36 µs from one start to the next, with
    its hash seed and memory layout), so several start and the best counts."""
    best = float("inf")
    for _ in range(interpreters):
        out = subprocess.run(
            [sys.executable, "-m", "bench.agent_overhead", "--inprocess", variant, "--calls", str(n)],
            env={**os.environ, "PYTHONPATH": pythonpath(), VARIANT_ENV: variant, **env},
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        best = min(best, float(out.strip().splitlines()[-1]))
    return best


def _call_app(n: int) -> float:
    app = make_app()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/items/42", "raw_path": b"/items/42", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run(k: int) -> float:
        started = time.process_time()  # CPU of this process, its background threads included
        for _ in range(k):
            await app(dict(scope), receive, send)
        return time.process_time() - started

    asyncio.run(run(2000))  # warm up
    best = min(asyncio.run(run(n)) for _ in range(5))
    return best / n * 1e6


# --- the run ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per round")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--calls", type=int, default=10_000, help="in-process calls per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--no-compile",
        action="store_true",
        help="do not byte-compile perfpulse and bench/ first (see compile_sources)",
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions a request under valgrind instead of timing (see instructions)",
    )
    ap.add_argument(
        "--alternate",
        action="store_true",
        help="each variant taking turns with the bare app in one server (see alternate);"
        " --duration is then the length of each variant's run",
    )
    ap.add_argument("--window", type=float, default=0.1, help="seconds a turn (see alternate)")
    ap.add_argument(
        "--turns",
        type=float,
        default=30.0,
        help="after the rounds, each variant taking turns with the bare app for this many"
        " seconds (see alternate; 0: not)",
    )
    ap.add_argument("--inprocess", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inprocess:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {1})
        print(f"{_call_app(args.calls):.3f}")
        return
    if shutil.which("wrk") is None:
        sys.exit("needs wrk (apt-get install wrk)")
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    variants = args.variants.split(",")
    if not args.no_compile:
        compile_sources()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})  # wrk, the collector and the stub receiver: CPU 0
    tmp = Path(tempfile.mkdtemp(prefix="pp-agent-bench-"))
    loads: dict[str, list[Load]] = {v: [] for v in variants}
    rss: dict[str, list[float]] = {v: [] for v in variants}
    inproc: dict[str, float] = {}
    with collector(tmp / "data", fsync="interval") as server, stub_receiver() as stub:
        background(server.proc.pid)
        dsn = stub.replace("http://", "http://public@", 1) + "/1"
        env = {COLLECTOR_ENV: server.base, KEY_ENV: INGEST_KEY, SENTRY_ENV: dsn, STUB_ENV: stub}
        if args.instructions:
            counted: dict[str, Counted] = {}
            for variant in variants:
                counted[variant] = instructions(variant, env, args.duration, tmp)
                print(f"{variant}: {counted[variant]}", file=sys.stderr)
            print(instructions_report(counted, args.duration))
            return
        if args.alternate:
            results = alternate_all(
                variants, env, args.duration, args.rounds, args.window, tmp, server.proc.pid
            )
            print(alternate_report(results, args.duration, args.window))
            return
        for variant in variants:
            inproc[variant] = inprocess(variant, args.calls, env)
            print(f"in-process {variant}: {inproc[variant]:.2f} µs/request", file=sys.stderr)
        for r in range(args.rounds):
            # every other round in reverse, so no variant always follows the same one
            for variant in variants if r % 2 == 0 else variants[::-1]:
                settle(server.proc.pid)
                with app_server(variant, env, tmp / f"{variant}.log") as (url, pid):
                    wrk(url, args.warmup, args.connections)
                    before = cpu_s(pid)
                    load = wrk(url, args.duration, args.connections)
                    after = cpu_s(pid)
                    load.cpu_us = (after[0] - before[0]) / max(1, load.requests) * 1e6
                    load.main_us = (after[1] - before[1]) / max(1, load.requests) * 1e6
                    loads[variant].append(load)
                    rss[variant].append(psutil.Process(pid).memory_info().rss / 1e6)
                print(
                    f"round {r + 1} {variant}: {load.rps:.0f} req/s, {load.cpu_us:.1f} µs CPU/req",
                    file=sys.stderr,
                )
        stored = server.metrics().get('perfpulse_events_accepted_total{kind="http"}')
        turns: list[Alternated] = []
        if args.turns > 0:
            turns = alternate_all(variants, env, args.turns, 1, args.window, tmp, server.proc.pid)
    print(report(variants, loads, rss, inproc, args))
    if turns:
        print(
            "\nTaking turns with the bare app in one server (see alternate): the figure the"
            " 10 µs target is read from\n"
        )
        print(alternate_report(turns, args.turns, args.window))
    if stored is not None:
        print(f"\nhttp events accepted by the collector during the run: {stored:.0f}")


def report(
    variants: list[str],
    loads: dict[str, list[Load]],
    rss: dict[str, list[float]],
    inproc: dict[str, float],
    args: argparse.Namespace,
) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    base_us = med([1e6 / x.rps for x in loads["bare"]]) if "bare" in loads else 0.0
    base_cpu = med([x.cpu_us for x in loads["bare"]]) if "bare" in loads else 0.0
    base_rss = med(rss["bare"]) if "bare" in rss else 0.0
    base_in = inproc.get("bare", 0.0)
    lines = [
        f"uvicorn + Starlette, 1 server process pinned to 1 CPU; wrk -t1 -c{args.connections},"
        f" {args.duration:g} s x {args.rounds} rounds (median); {os.cpu_count()} CPUs",
        "",
        "| variant | server CPU µs/request | CPU µs added | in-process µs/request |"
        " in-process µs added | RSS (MB) | RSS added (MB) | req/s | 1/throughput µs |"
        " mean latency (µs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        rps = med([x.rps for x in loads[v]])
        us = med([1e6 / x.rps for x in loads[v]])
        lat = med([x.latency_us for x in loads[v]])
        errors = sum(x.errors for x in loads[v])
        note = f" ({errors} non-2xx)" if errors else ""
        cpu = med([x.cpu_us for x in loads[v]])
        lines.append(
            f"| {v}{note} | {cpu:.1f} | {cpu - base_cpu:+.1f} | {inproc[v]:.2f} |"
            f" {inproc[v] - base_in:+.2f} | {med(rss[v]):.1f} | {med(rss[v]) - base_rss:+.1f} |"
            f" {rps:,.0f} | {us:.1f} ({us - base_us:+.1f}) | {lat:,.0f} |"
        )
    spread = {v: [round(x.cpu_us, 1) for x in loads[v]] for v in variants}
    lines += ["", f"server CPU µs/request per round: {spread}"]
    if "bare" in loads:
        lines += [
            "",
            "Per round, against the bare app measured in the same round (paired, which"
            " cancels the slow drifts of a shared machine); the main thread is the event"
            " loop's, the other threads the agents' own (sender, batch processor):",
            "",
            "| variant | CPU µs added, paired median | quartiles | main thread µs added |"
            " other threads µs/request | best round µs/request | best round added |",
            "|---|---|---|---|---|---|---|",
        ]
        base_best = min(x.cpu_us for x in loads["bare"])
        for v in variants:
            if v == "bare":
                continue
            pairs = list(zip(loads["bare"], loads[v], strict=False))
            added = [x.cpu_us - b.cpu_us for b, x in pairs]
            main = [x.main_us - b.main_us for b, x in pairs]
            other = [x.cpu_us - x.main_us for x in loads[v]]
            q = statistics.quantiles(added, n=4) if len(added) > 1 else [added[0]] * 3
            best = min(x.cpu_us for x in loads[v])
            lines.append(
                f"| {v} | {med(added):+.1f} | {q[0]:+.1f} .. {q[2]:+.1f} | {med(main):+.1f} |"
                f" {med(other):.1f} | {best:.1f} | {best - base_best:+.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
