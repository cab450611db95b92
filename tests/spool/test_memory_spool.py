"""MemorySpool, and the contract it shares with FileSpool so it can stand in for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import perfpulse.spool
from perfpulse.spool import FileSpool, MemorySpool, Spool, SpoolFull


def test_the_public_surface_is_pinned() -> None:
    assert perfpulse.spool.__all__ == [
        "FileSpool",
        "MemorySpool",
        "Spool",
        "SpoolFull",
        "SpoolLocked",
        "SpoolStats",
    ]


@pytest.fixture(params=["memory", "file"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spool]:
    made: Spool = MemorySpool() if request.param == "memory" else FileSpool(tmp_path)
    yield made
    asyncio.run(made.close())


def append_all(spool: Spool, payloads: list[bytes]) -> list[int]:
    async def go() -> list[int]:
        return [await spool.append(p) for p in payloads]

    return asyncio.run(go())


def test_reads_return_records_after_the_checkpoint_within_limits(spool: Spool) -> None:
    records = [bytes([i]) * (100 * i) for i in range(1, 11)]
    assert append_all(spool, records) == list(range(1, 11))

    assert spool.read(after=0) == list(enumerate(records, start=1))
    assert spool.read(after=7) == [(8, records[7]), (9, records[8]), (10, records[9])]
    assert [s for s, _ in spool.read(after=2, max_records=3)] == [3, 4, 5]
    assert [s for s, _ in spool.read(after=0, max_bytes=650)] == [1, 2, 3]
    assert spool.read(after=9, max_bytes=1) == [(10, records[9])]  # too big, still one
    assert spool.read(after=10) == []


def test_commit_drops_stored_records_from_depth_and_bytes(spool: Spool) -> None:
    append_all(spool, [b"a" * 10, b"b" * 20, b"c" * 30])
    spool.commit(2)
    stats = spool.stats()
    assert (stats.depth, stats.committed_seq, stats.last_seq, stats.appends_total) == (1, 2, 3, 3)
    assert spool.read(after=2) == [(3, b"c" * 30)]
    spool.commit(1)  # going backwards is ignored
    assert spool.stats().committed_seq == 2


def test_wait_reports_new_records_since_the_last_read(spool: Spool) -> None:
    assert spool.read(after=0) == []
    assert spool.wait(timeout=0.01) is False

    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(spool.wait(timeout=5)))
    waiter.start()
    append_all(spool, [b"x"])
    waiter.join()
    assert result == [True]
    assert spool.read(after=0) == [(1, b"x")]
    assert spool.wait(timeout=0.01) is False


def test_memory_spool_refuses_past_max_bytes_until_commit() -> None:
    spool = MemorySpool(max_bytes=100)
    append_all(spool, [b"a" * 60])
    with pytest.raises(SpoolFull) as caught:
        append_all(spool, [b"b" * 41])
    assert caught.value.reason == "full"
    spool.commit(1)
    assert append_all(spool, [b"b" * 41]) == [2]
    stats = spool.stats()
    assert (stats.bytes, stats.depth, stats.full_rejections_total) == (41, 1, 1)


def test_memory_spool_simulates_a_full_disk() -> None:
    spool = MemorySpool()
    spool.disk_full = True
    with pytest.raises(SpoolFull) as caught:
        append_all(spool, [b"a"])
    assert caught.value.reason == "disk"
    spool.disk_full = False
    assert append_all(spool, [b"a"]) == [1]  # the failed append used no seq
    assert spool.stats().disk_full_rejections_total == 1


def test_memory_spool_numbering_moves_past_a_later_checkpoint() -> None:
    spool = MemorySpool()
    spool.commit(41)
    assert append_all(spool, [b"x"]) == [42]
