"""Starting the servers a benchmark measures, each in its own process.

``collector()`` runs ``perfpulse serve`` with fixed keys in a fresh data
directory; ``floor()`` runs an app from :mod:`bench.floor` under uvicorn with
the same loop and HTTP settings. Both wait for ``/healthz`` and stop on SIGTERM::

    with collector(tmp / "data", fsync="interval") as server:
        httpx.post(server.url("/api/v1/events"), headers=server.ingest_headers, ...)
        server.spool_depth()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
INGEST_KEY = "ppi_bench_ingest"
PUBLIC_KEY = "ppp_bench_public"
READ_TOKEN = "ppr_bench_read"
ORIGIN = "http://bench.example"
HOST = "127.0.0.1"
INGEST_HEADERS = {"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"}
READ_HEADERS = {"Authorization": f"Bearer {READ_TOKEN}"}
RUM_HEADERS = {"Origin": ORIGIN, "Content-Type": "text/plain"}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark subprocess: this one's, with the repository
    root put before (not instead of) any ``PYTHONPATH`` the caller set."""
    return {**os.environ, "PYTHONPATH": pythonpath(), **extra}


def pythonpath() -> str:
    """``PYTHONPATH`` for a child process: the repository (for ``bench``), then the caller's
    own (so a worktree's ``src`` given there still wins over an editable install)."""
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(ROOT), inherited] if inherited else [str(ROOT)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server subprocess on ``127.0.0.1:port``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started_s: float = 0.0
    stopped_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{"name{labels}": value}``."""
        response = httpx.get(self.url("/metrics"), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(
                f"{self.name}: GET /metrics answered {response.status_code}; its log ends:\n"
                + self.log.read_text(errors="replace")[-3000:]
            )
        text = response.text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def spool_depth(self) -> int:
        return int(self.metrics().get("perfpulse_spool_depth", 0))

    def wait_drained(self, timeout_s: float = 600.0, poll_s: float = 0.1) -> float:
        """Seconds until ``perfpulse_spool_depth`` is 0 (``inf`` on timeout)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.spool_depth() == 0:
                return time.perf_counter() - started
            time.sleep(poll_s)
        return float("inf")

    def stop(self, timeout_s: float = 120.0) -> float:
        """SIGTERM, then wait; returns the seconds the process took to exit."""
        if self.proc.poll() is None:
            started = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stopped_s = time.perf_counter() - started
        return self.stopped_s or 0.0


def _start(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Server:
    port = int(argv[argv.index("--port") + 1])
    full_env = child_env(**env)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    server = Server(name, proc, port, log, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url("/healthz"), timeout=2).status_code == 200:
                server.started_s = time.perf_counter() - started
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not become ready: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def collector(
    data_dir: Path, *, fsync: str = "always", args: tuple[str, ...] = (), **env: str
) -> Iterator[Server]:
    """``perfpulse serve [args]`` on a free port, keys fixed, beacons allowed from ORIGIN."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "perfpulse.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--fsync",
        fsync,
        "--log-level",
        "warning",
        *args,
    ]
    keys = {
        "PERFPULSE_INGEST_KEY": INGEST_KEY,
        "PERFPULSE_PUBLIC_KEY": PUBLIC_KEY,
        "PERFPULSE_READ_TOKEN": READ_TOKEN,
        "PERFPULSE_ALLOWED_ORIGINS": ORIGIN,
    }
    server = _start(
        f"perfpulse (fsync={fsync})", argv, data_dir.parent / "collector.log", {**keys, **env}
    )
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def floor(app: str, log_dir: Path) -> Iterator[Server]:
    """``uvicorn bench.floor:<app>`` with uvicorn's defaults, as ``perfpulse serve`` uses."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.floor:{app}",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = _start(f"floor:{app}", argv, log_dir / f"floor-{app}.log", {})
    try:
        yield server
    finally:
        server.stop()
