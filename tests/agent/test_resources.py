"""Resource samples: deltas from an injected source and clock, cgroup files in a
temporary directory, the real psutil source, and samples stored by a real collector."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import perfpulse.agent
from conftest import Server
from perfpulse.agent.resources import CgroupLimits, PsutilSource, Reading, ResourceSampler

from .conftest import Start


class ScriptedSource:
    """Returns the given readings in order."""

    def __init__(self, readings: list[Reading]) -> None:
        self.readings: Iterator[Reading] = iter(readings)

    def read(self) -> Reading:
        return next(self.readings)


def reading(cpu_s: float, io: float, busy: float, total: float, net: float) -> Reading:
    return Reading(
        process_cpu_s=cpu_s,
        process_rss_bytes=50e6,
        process_threads=4,
        process_fds=12,
        process_read_bytes=io,
        process_write_bytes=2 * io,
        host_cpu_busy_s=busy,
        host_cpu_total_s=total,
        host_mem_used_bytes=3e9,
        host_mem_total_bytes=8e9,
        host_disk_read_bytes=10 * io,
        host_disk_write_bytes=None,
        host_net_sent_bytes=net,
        host_net_recv_bytes=net / 2,
    )


def test_rates_and_deltas_cover_the_interval_between_samples(tmp_path: Path) -> None:
    source = ScriptedSource(
        [
            reading(cpu_s=10.0, io=1000, busy=500, total=2000, net=10_000),
            reading(cpu_s=12.5, io=4000, busy=530, total=2040, net=12_000),
            reading(cpu_s=13.0, io=100, busy=540, total=2060, net=13_000),  # io counter reset
        ]
    )
    clock = iter([100.0, 110.0, 120.0]).__next__
    sampler = ResourceSampler(
        proc=source, clock=clock, cgroup=CgroupLimits(tmp_path), pid=lambda: 42
    )

    first = sampler.sample()
    assert first == {
        "kind": "resource",
        "ts": 100.0,
        "pid": 42,
        "process_rss_bytes": 50e6,
        "process_threads": 4,
        "process_fds": 12,
        "host_mem_used_bytes": 3e9,
        "host_mem_total_bytes": 8e9,
    }, "no interval yet: gauges only, and no cgroup limit in an empty directory"

    second = sampler.sample()
    assert second["process_cpu_pct"] == pytest.approx(25.0)  # 2.5 s of CPU in 10 s
    assert second["host_cpu_pct"] == pytest.approx(75.0)  # 30 busy of 40
    assert second["process_read_bytes"] == 3000
    assert second["process_write_bytes"] == 6000
    assert second["host_disk_read_bytes"] == 30_000
    assert "host_disk_write_bytes" not in second
    assert (second["host_net_sent_bytes"], second["host_net_recv_bytes"]) == (2000, 1000)

    third = sampler.sample()
    assert third["process_cpu_pct"] == pytest.approx(5.0)
    assert "process_read_bytes" not in third, "a counter that went backwards is no delta"
    assert third["host_net_sent_bytes"] == 1000


def write(root: Path, files: dict[str, str]) -> CgroupLimits:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return CgroupLimits(root)


def test_cgroup_v2_limits(tmp_path: Path) -> None:
    limits = write(tmp_path, {"cpu.max": "150000 100000", "memory.max": "536870912"})
    assert (limits.cpu_limit(), limits.memory_limit()) == (1.5, 536870912.0)
    unlimited = write(tmp_path / "u", {"cpu.max": "max 100000", "memory.max": "max"})
    assert (unlimited.cpu_limit(), unlimited.memory_limit()) == (None, None)


def test_cgroup_v1_limits(tmp_path: Path) -> None:
    limits = write(
        tmp_path,
        {
            "cpu/cpu.cfs_quota_us": "200000",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "1073741824",
        },
    )
    assert (limits.cpu_limit(), limits.memory_limit()) == (2.0, 1073741824.0)
    unlimited = write(
        tmp_path / "u",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert (unlimited.cpu_limit(), unlimited.memory_limit()) == (None, None)


def test_psutil_source_reads_this_process() -> None:
    sampler = ResourceSampler(proc=PsutilSource())
    sampler.sample()
    sum(i * i for i in range(300_000))  # some CPU between the samples
    sample = sampler.sample()
    assert sample["pid"] == os.getpid()
    assert sample["process_rss_bytes"] > 10e6
    assert sample["process_threads"] >= 1
    assert sample["process_fds"] >= 3
    assert sample["process_cpu_pct"] > 0
    assert 0 <= sample["host_cpu_pct"] <= 100
    assert 0 < sample["host_mem_used_bytes"] < sample["host_mem_total_bytes"]


def test_samples_reach_the_collector(server: Server, agent: Start) -> None:
    agent(endpoint=server.url, resource_interval_s=0.2)
    time.sleep(0.7)
    perfpulse.agent.shutdown(timeout_s=10)  # stops sampling, then flushes
    assert server.stop() == 0
    rows = server.rows(
        "SELECT pid, process_rss_bytes, process_threads, process_cpu_pct, host_mem_total_bytes,"
        " service, release FROM resource ORDER BY ts"
    )
    assert len(rows) >= 3
    assert {r[0] for r in rows} == {os.getpid()}
    assert all(r[1] > 10e6 and r[2] >= 2 and r[4] > 0 for r in rows)
    # CPU % needs two readings: only the sampler's first sample may lack it
    cpu = [r[3] for r in rows]
    assert sum(v is None for v in cpu) <= 1 and all(v >= 0 for v in cpu if v is not None)
    assert {(r[5], r[6]) for r in rows} == {("shop", "1.0")}
