"""How many appends per second FileSpool takes, against one fsync per record.

The baseline, measured in the same run on the same disk, is what a naive spool
does: ``f.write(record)`` then ``os.fsync`` for every record. The spool is driven
the way ingest drives it: many concurrent HTTP handlers awaiting ``append`` on one
event loop (and, for the latency floor, a single handler awaiting one at a time).

    python bench/bench_spool.py [--dir /var/lib/perfpulse/bench] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from perfpulse.spool import FileSpool
from perfpulse.spool.file import FsyncPolicy

SIZES = {"100 KB": 100_000, "2 KB": 2_000}
POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")


def baseline(directory: Path, payload: bytes, count: int) -> float:
    """Appends/s for write() + fsync per record."""
    path = directory / "baseline.bin"
    started = time.perf_counter()
    with open(path, "ab", buffering=0) as f:
        for _ in range(count):
            f.write(payload)
            os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return count / elapsed


def spool_rate(
    directory: Path, payload: bytes, count: int, policy: FsyncPolicy, concurrency: int
) -> tuple[float, float]:
    """Appends/s through FileSpool, and fsyncs per append."""
    spool = FileSpool(directory, fsync=policy, max_bytes=8 << 30)

    async def handler(n: int) -> None:
        for _ in range(n):
            await spool.append(payload)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(handler(count // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await spool.close()
        return elapsed

    elapsed = asyncio.run(run())
    stats = spool.stats()
    shutil.rmtree(directory)
    return stats.appends_total / elapsed, stats.fsyncs_total / stats.appends_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="a directory on the disk to test")
    parser.add_argument("--rounds", type=int, default=3, help="report the median of this many")
    args = parser.parse_args()
    configs = [(policy, handlers) for policy in POLICIES for handlers in (1, 64)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(
            f"{'record':>7} {'policy':>9} {'handlers':>8} {'appends/s':>10} "
            f"{'fsync/append':>12} {'vs baseline':>11}"
        )
        for label, size in SIZES.items():
            payload = os.urandom(size)
            many = 1_000 if size > 10_000 else 6_400
            # fsync latency drifts on shared disks: interleave, then take medians.
            base: list[float] = []
            runs: dict[tuple[FsyncPolicy, int], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                base.append(baseline(root, payload, 300))
                for policy, handlers in configs:
                    count = many if handlers > 1 else 300
                    result = spool_rate(root / policy, payload, count, policy, handlers)
                    runs.setdefault((policy, handlers), []).append(result)
            b = statistics.median(base)
            print(f"{label:>7} {'baseline':>9} {1:>8} {b:>10,.0f} {1.0:>12.3f} {1.0:>10.2f}x")
            for (policy, handlers), results in runs.items():
                rate = statistics.median(r for r, _ in results)
                per = statistics.median(f for _, f in results)
                print(
                    f"{label:>7} {policy:>9} {handlers:>8} {rate:>10,.0f} "
                    f"{per:>12.3f} {rate / b:>10.2f}x"
                )


if __name__ == "__main__":
    main()
