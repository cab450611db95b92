"""The /proc source: exact values from a fake /proc tree, the same numbers as psutil
for this process and host, and None (never an error) for what cannot be read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfpulse.agent import procfs
from perfpulse.agent.procfs import ProcfsSource
from perfpulse.agent.resources import PsutilSource, Reading, ResourceSampler, default_source

STAT = "4242 (gunicorn: worker (app)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 130 0 0 20 0 7 0"
HOST_STAT = "cpu  1000 50 300 8000 200 0 40 10 100 0\ncpu0 500 25 150 4000 100 0 20 5 50 0\n"
DISKSTATS = (
    "   8       0 sda 100 0 2048 10 50 0 4096 20 0 30 30 0 0 0 0\n"
    "   8       1 sda1 90 0 2000 10 40 0 4000 20 0 30 30 0 0 0 0\n"  # a partition of sda
    " 259       0 nvme0n1 10 0 8 1 5 0 16 1 0 2 2 0 0 0 0 0 0 0 0 0\n"
)
NET_DEV = (
    "Inter-|   Receive                            |  Transmit\n"
    " face |bytes packets errs drop fifo frame compressed multicast|bytes packets ...\n"
    "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
    "  eth0: 5000 40 0 0 0 0 0 0 7000 50 0 0 0 0 0 0\n"
)


def fake_proc(tmp_path: Path) -> ProcfsSource:
    root, block = tmp_path / "proc", tmp_path / "block"
    files = {
        "self/stat": STAT,
        "self/statm": "50000 10000 2000 100 0 30000 0",
        "self/io": "rchar: 1\nwchar: 2\nread_bytes: 4096\nwrite_bytes: 8192\n",
        "stat": HOST_STAT,
        "meminfo": "MemTotal:  8000000 kB\nMemFree:  1000000 kB\nMemAvailable:  6000000 kB\n",
        "diskstats": DISKSTATS,
        "net/dev": NET_DEV,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for fd in range(5):
        (root / "self" / "fd").mkdir(parents=True, exist_ok=True)
        (root / "self" / "fd" / str(fd)).touch()
    for disk in ("sda", "nvme0n1"):
        (block / disk).mkdir(parents=True)
    return ProcfsSource(root, block, clock_ticks=100, page_size=4096)


def test_a_proc_tree_is_read_as_psutil_reads_it(tmp_path: Path) -> None:
    assert fake_proc(tmp_path).read() == Reading(
        process_cpu_s=3.8,  # (250 + 130) ticks at 100 a second
        process_rss_bytes=10000 * 4096.0,
        process_threads=7.0,
        process_fds=5.0,
        process_read_bytes=4096.0,
        process_write_bytes=8192.0,
        host_cpu_total_s=96.0,  # user..steal; guest is already in user
        host_cpu_busy_s=14.0,  # minus idle and iowait
        host_mem_used_bytes=2000000 * 1024.0,
        host_mem_total_bytes=8000000 * 1024.0,
        host_disk_read_bytes=(2048 + 8) * 512.0,  # whole disks only: not sda1
        host_disk_write_bytes=(4096 + 16) * 512.0,
        host_net_sent_bytes=8000.0,
        host_net_recv_bytes=6000.0,
    )


def test_what_cannot_be_read_is_none(tmp_path: Path) -> None:
    source = fake_proc(tmp_path)
    for name in ("self/io", "diskstats", "meminfo"):
        (source.root / name).unlink()
    reading = source.read()
    assert reading.process_read_bytes is None and reading.host_disk_read_bytes is None
    assert reading.host_mem_total_bytes is None and reading.host_mem_used_bytes is None
    assert reading.process_threads == 7.0
    assert ProcfsSource(tmp_path / "nothing").read() == Reading()


@pytest.mark.skipif(not procfs.available(), reason="no Linux /proc")
def test_this_process_reads_as_psutil_reads_it() -> None:
    assert isinstance(default_source(), ProcfsSource)
    ours, theirs = ProcfsSource().read(), PsutilSource().read()
    assert ours.process_threads == theirs.process_threads
    assert ours.host_mem_total_bytes == theirs.host_mem_total_bytes
    assert ours.process_fds is not None and theirs.process_fds is not None
    assert abs(ours.process_fds - theirs.process_fds) <= 2
    for name in ("process_rss_bytes", "process_cpu_s", "host_cpu_total_s", "host_disk_read_bytes"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a is not None and b is not None
        assert a == pytest.approx(b, rel=0.1, abs=0.5), name
    sample = ResourceSampler(pid=os.getpid).sample()
    assert sample["process_rss_bytes"] > 10e6


@pytest.mark.skipif(not procfs.available(), reason="no Linux /proc")
def test_sampling_on_linux_does_not_import_psutil() -> None:
    code = (
        "import sys, perfpulse.agent.resources as r\n"
        "assert r.ResourceSampler().sample()['process_rss_bytes'] > 0\n"
        "print('psutil' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
