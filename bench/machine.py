"""What a result was measured on, and how busy the machine was meanwhile.

The house rule: a number comes with its date and machine. :func:`describe` says
what the machine is; :class:`CpuMeter` says how many cores the server, the load
generator and everything else used during a measurement, so a result taken
while other work ran on the machine can be told apart from a quiet one::

    meter = CpuMeter(server_pid)
    ...                                  # the measurement; wrk runs as our child
    usage = meter.stop()                 # CpuUsage(server=0.98, client=0.31, other=0.12)
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata

import psutil


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, str]:
    """Date, CPU, memory and the versions that matter to the numbers."""
    wrk = "not installed"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk = (out.stdout or out.stderr).split("Copyright")[0].strip()
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores (nproc)",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "server stack": (
            f"uvicorn {_version('uvicorn')} (loop auto: uvloop {_version('uvloop')}, "
            f"http auto: httptools {_version('httptools')}), starlette {_version('starlette')}"
        ),
        "msgspec / numpy": f"{_version('msgspec')} / {_version('numpy')}",
        "load generator": wrk,
        "load average at start (1 / 5 / 15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """Average cores busy during a measurement."""

    server: float
    client: float
    other: float

    def text(self) -> str:
        return f"server {self.server:.2f}, load generator {self.client:.2f}, other {self.other:.2f}"


class CpuMeter:
    """Cores used by ``pid`` (the server), by our waited-for children (the load
    generator) and by everything else on the machine, from start to :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self._hz = os.sysconf("SC_CLK_TCK")
        self._start()

    def _start(self) -> None:
        self._t = time.perf_counter()
        self._busy = _busy_ticks()
        times = self.proc.cpu_times()
        self._server = times.user + times.system
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._kids = kids.ru_utime + kids.ru_stime
        me = resource.getrusage(resource.RUSAGE_SELF)
        self._self = me.ru_utime + me.ru_stime

    def stop(self) -> CpuUsage:
        elapsed = time.perf_counter() - self._t
        busy = (_busy_ticks() - self._busy) / self._hz
        times = self.proc.cpu_times()
        server = times.user + times.system - self._server
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = kids.ru_utime + kids.ru_stime - self._kids
        me = resource.getrusage(resource.RUSAGE_SELF)
        client += me.ru_utime + me.ru_stime - self._self
        other = max(0.0, busy - server - client)
        return CpuUsage(server / elapsed, client / elapsed, other / elapsed)
