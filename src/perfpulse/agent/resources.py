"""Process, host and container resources, sampled by a background thread.

Every ``resource_interval_s`` (10 s by default) the agent's one background
thread (:meth:`perfpulse.agent.transport.Transport.every`) records one
``resource`` event built by :class:`ResourceSampler`:

- gauges, as read: the process's RSS, threads and open file descriptors, the
  host's used and total memory, and the container's limits (cgroup v2
  ``cpu.max`` and ``memory.max``, else cgroup v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` and ``memory.limit_in_bytes``; no limit is ``null``);
- rates and deltas over the interval since the previous sample: process and
  host CPU in percent (process CPU is of one core, so 4 busy cores read 400),
  process read/write bytes, host disk read/write and network sent/received
  bytes. The first sample has no interval, so these are ``null`` in it.

What cannot be read on this system (``num_fds`` on Windows, ``io_counters``
without permission, no disks in a container) is ``null`` rather than an error.

Where the numbers come from is injected, so tests need no real process::

    sampler = ResourceSampler(proc=FakeSource([...]), clock=iter([100.0, 110.0]).__next__)
    sampler.sample()["process_cpu_pct"]

The real source (:func:`default_source`) is
:class:`~perfpulse.agent.procfs.ProcfsSource` on Linux: it reads ``/proc`` as
psutil does there, without importing psutil (0.9 MB of RSS). Elsewhere it is
:class:`PsutilSource`, which re-opens the process after a ``fork``. Both report
the process reading them, so a gunicorn worker reports its own pid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported by PsutilSource only: 0.9 MB that Linux does without
    import psutil

__all__ = ["CgroupLimits", "PsutilSource", "Reading", "ResourceSampler", "Source", "default_source"]


@dataclass(frozen=True, slots=True)
class Reading:
    """Gauges and cumulative counters at one moment; ``None``: not readable here."""

    process_cpu_s: float | None = None
    process_rss_bytes: float | None = None
    process_threads: float | None = None
    process_fds: float | None = None
    process_read_bytes: float | None = None
    process_write_bytes: float | None = None
    host_cpu_busy_s: float | None = None
    host_cpu_total_s: float | None = None
    host_mem_used_bytes: float | None = None
    host_mem_total_bytes: float | None = None
    host_disk_read_bytes: float | None = None
    host_disk_write_bytes: float | None = None
    host_net_sent_bytes: float | None = None
    host_net_recv_bytes: float | None = None


class Source(Protocol):
    """Where a :class:`ResourceSampler` reads the process and the host."""

    def read(self) -> Reading: ...


class PsutilSource:
    """Reads this process and its host with psutil."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._pid = -1
        self._process: psutil.Process | None = None

    def read(self) -> Reading:
        psutil = self._psutil
        if self._pid != os.getpid():  # first use, or a forked child
            self._pid, self._process = os.getpid(), psutil.Process()
        proc = self._process
        assert proc is not None
        values: dict[str, float | None] = {}
        with proc.oneshot():
            cpu = _try(proc.cpu_times)
            if cpu is not None:
                values["process_cpu_s"] = cpu.user + cpu.system
            mem = _try(proc.memory_info)
            values["process_rss_bytes"] = None if mem is None else float(mem.rss)
            values["process_threads"] = _float(_try(proc.num_threads))
            values["process_fds"] = _float(_try(getattr(proc, "num_fds", _none)))
            io = _try(getattr(proc, "io_counters", _none))
            if io is not None:
                values["process_read_bytes"] = float(io.read_bytes)
                values["process_write_bytes"] = float(io.write_bytes)
        times = _try(psutil.cpu_times)
        if times is not None:
            total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
            idle = times.idle + getattr(times, "iowait", 0.0)
            values["host_cpu_total_s"] = total
            values["host_cpu_busy_s"] = total - idle
        vm = _try(psutil.virtual_memory)
        if vm is not None:
            values["host_mem_used_bytes"] = float(vm.total - vm.available)
            values["host_mem_total_bytes"] = float(vm.total)
        disk = _try(psutil.disk_io_counters)
        if disk is not None:
            values["host_disk_read_bytes"] = float(disk.read_bytes)
            values["host_disk_write_bytes"] = float(disk.write_bytes)
        net = _try(psutil.net_io_counters)
        if net is not None:
            values["host_net_sent_bytes"] = float(net.bytes_sent)
            values["host_net_recv_bytes"] = float(net.bytes_recv)
        return Reading(**values)


def _none() -> None:
    return None


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # psutil.Error, OSError, NotImplementedError: not readable here
        return None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


_NO_LIMIT = float(2**60)  # cgroup v1 writes "no limit" as a huge number


class CgroupLimits:
    """The container's CPU limit (in cores) and memory limit, from the cgroup files."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.root = root

    def cpu_limit(self) -> float | None:
        v2 = self._read("cpu.max")
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            return _ratio(quota, period or "100000")
        quota_v1 = self._read("cpu/cpu.cfs_quota_us") or self._read("cpu,cpuacct/cpu.cfs_quota_us")
        period_v1 = self._read("cpu/cpu.cfs_period_us") or self._read(
            "cpu,cpuacct/cpu.cfs_period_us"
        )
        return None if quota_v1 is None or period_v1 is None else _ratio(quota_v1, period_v1)

    def memory_limit(self) -> float | None:
        raw = self._read("memory.max") or self._read("memory/memory.limit_in_bytes")
        if raw is None or raw == "max":
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if 0 < value < _NO_LIMIT else None

    def _read(self, name: str) -> str | None:
        try:
            return (self.root / name).read_text().strip() or None
        except OSError:
            return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:  # "max": no limit
        return None
    return q / p if q > 0 and p > 0 else None


_DELTAS = (
    "process_read_bytes",
    "process_write_bytes",
    "host_disk_read_bytes",
    "host_disk_write_bytes",
    "host_net_sent_bytes",
    "host_net_recv_bytes",
)


def default_source() -> Source:
    """:class:`~perfpulse.agent.procfs.ProcfsSource` where there is a Linux ``/proc``,
    else :class:`PsutilSource` (psutil is imported only then)."""
    from perfpulse.agent import procfs  # it imports Reading from here

    return procfs.ProcfsSource() if procfs.available() else PsutilSource()


class ResourceSampler:
    """Builds ``resource`` events from a :class:`Source`; keeps the previous reading for deltas."""

    def __init__(
        self,
        proc: Source | None = None,
        clock: Callable[[], float] = time.time,
        cgroup: CgroupLimits | None = None,
        pid: Callable[[], int] = os.getpid,
    ) -> None:
        self.proc = proc or default_source()
        self.clock = clock
        self.cgroup = cgroup or CgroupLimits()
        self.pid = pid
        self._last: tuple[float, Reading] | None = None

    def reset(self) -> None:
        """Forget the previous reading (after a fork: the counters are another process's)."""
        self._last = None

    def sample(self) -> dict[str, Any]:
        now = self.clock()
        reading = self.proc.read()
        event: dict[str, Any] = {
            "kind": "resource",
            "ts": now,
            "pid": self.pid(),
            "process_rss_bytes": reading.process_rss_bytes,
            "process_threads": reading.process_threads,
            "process_fds": reading.process_fds,
            "host_mem_used_bytes": reading.host_mem_used_bytes,
            "host_mem_total_bytes": reading.host_mem_total_bytes,
            "cgroup_cpu_limit": self.cgroup.cpu_limit(),
            "cgroup_mem_limit_bytes": self.cgroup.memory_limit(),
        }
        last = self._last
        self._last = (now, reading)
        if last is not None and now > last[0]:
            before = last[1]
            seconds = now - last[0]
            cpu = _delta(reading.process_cpu_s, before.process_cpu_s)
            if cpu is not None:
                event["process_cpu_pct"] = 100.0 * cpu / seconds
            busy = _delta(reading.host_cpu_busy_s, before.host_cpu_busy_s)
            total = _delta(reading.host_cpu_total_s, before.host_cpu_total_s)
            if busy is not None and total:
                event["host_cpu_pct"] = min(100.0, 100.0 * busy / total)
            for name in _DELTAS:
                event[name] = _delta(getattr(reading, name), getattr(before, name))
        return {k: v for k, v in event.items() if v is not None}


def _delta(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or now < before:  # unreadable, or a counter reset
        return None
    return now - before
