"""FileSpool against real segment files: replay, rotation, recovery, capacity, fsync."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from perfpulse.spool import FileSpool, SpoolFull, SpoolLocked
from perfpulse.spool.file import HEADER, FsyncPolicy, Opener

OpenSpool = Callable[..., FileSpool]


@pytest.fixture
def open_spool() -> Iterator[OpenSpool]:
    """Open spools like ``FileSpool(...)`` does, and close any a failing test left open."""
    opened: list[FileSpool] = []

    def open_(*args: Any, **kwargs: Any) -> FileSpool:
        opened.append(FileSpool(*args, **kwargs))
        return opened[-1]

    yield open_
    for spool in opened:
        asyncio.run(spool.close())


def payloads(n: int, size: int = 100) -> list[bytes]:
    """Distinct payloads, so a record returned under the wrong seq is caught."""
    return [(f"record-{i:05d}|".encode() * size)[: size + i % 7] for i in range(1, n + 1)]


def fill(spool: FileSpool, records: list[bytes]) -> list[int]:
    async def go() -> list[int]:
        return [await spool.append(p) for p in records]

    return asyncio.run(go())


def close(spool: FileSpool) -> None:
    asyncio.run(spool.close())


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_reopen_replays_exactly_the_records_after_a_checkpoint(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    records = payloads(40)
    spool = open_spool(tmp_path / "spool")
    assert spool.read(after=0) == []  # the writer may replay before any append
    assert fill(spool, records) == list(range(1, 41))
    close(spool)

    spool = open_spool(tmp_path / "spool")
    assert spool.read(after=0) == list(enumerate(records, start=1))
    assert spool.read(after=25) == list(enumerate(records, start=1))[25:]
    assert spool.read(after=40) == []
    assert fill(spool, [b"next"]) == [41]  # numbering continues, never restarts
    stats = spool.stats()
    assert (stats.last_seq, stats.depth, stats.corrupt_records) == (41, 41, 0)
    close(spool)


def test_rotation_names_segments_by_first_seq_and_reads_across_them(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    records = [bytes([i]) * 300 for i in range(1, 21)]  # 320 bytes framed
    spool = open_spool(tmp_path, segment_bytes=1000)
    fill(spool, records)

    # Three records fit under 1000 bytes, so segments start at 1, 4, 7, ..., 19.
    assert [p.name for p in segment_files(tmp_path)] == [
        f"{first:020d}.seg" for first in range(1, 21, 3)
    ]
    assert {p.stat().st_size for p in segment_files(tmp_path)[:-1]} == {960}
    assert spool.read(after=2, max_records=8) == [(s, records[s - 1]) for s in range(3, 11)]
    assert spool.read(after=5, max_bytes=650) == [(6, records[5]), (7, records[6])]
    # A record larger than max_bytes still comes back, alone.
    assert spool.read(after=9, max_bytes=10) == [(10, records[9])]
    assert spool.stats().segments == 7
    close(spool)


def test_a_read_takes_records_in_order_while_they_fit_its_budgets(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    """Whatever the records' sizes and segments: a read returns the records after
    ``after`` in order, as many as fit ``max_records`` and ``max_bytes`` of payload
    (the first one always), across segments."""
    rng = random.Random(7)
    records = [bytes([i % 251]) * rng.choice([0, 1, 5, 40, 90, 300, 700]) for i in range(160)]
    spool = open_spool(tmp_path, segment_bytes=1500)
    fill(spool, records)
    assert spool.stats().segments > 10
    for _ in range(400):
        after = rng.randrange(0, len(records) + 2)
        most, budget = rng.randrange(1, 60), rng.choice([0, 1, 50, 300, 1000, 5000, 1 << 20])
        want: list[tuple[int, bytes]] = []
        size = 0
        for seq in range(after + 1, len(records) + 1):
            record = records[seq - 1]
            if len(want) == most or (want and size + len(record) > budget):
                break
            want.append((seq, record))
            size += len(record)
        assert spool.read(after=after, max_records=most, max_bytes=budget) == want
    close(spool)


def test_commit_deletes_whole_segments_and_stats_shrink(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    records = [bytes([i]) * 300 for i in range(1, 21)]
    spool = open_spool(tmp_path, segment_bytes=1000)
    fill(spool, records)
    assert (spool.stats().depth, spool.stats().bytes) == (20, 20 * 320)

    spool.commit(6)  # segments 1-3 and 4-6 are done
    assert [int(p.stem) for p in segment_files(tmp_path)] == [7, 10, 13, 16, 19]
    assert (spool.stats().depth, spool.stats().bytes) == (14, 14 * 320)
    spool.commit(8)  # 7-9 still holds record 9, so it stays
    assert [int(p.stem) for p in segment_files(tmp_path)] == [7, 10, 13, 16, 19]
    stats = spool.stats()
    assert (stats.depth, stats.bytes, stats.segments, stats.committed_seq) == (12, 12 * 320, 5, 8)
    assert spool.read(after=8, max_records=2) == [(9, records[8]), (10, records[9])]

    spool.commit(20)  # everything stored: only the active segment stays
    assert [p.name for p in segment_files(tmp_path)] == [f"{19:020d}.seg"]
    assert (spool.stats().depth, spool.stats().bytes) == (0, 0)
    close(spool)


def test_restart_from_a_checkpoint_skips_stored_records(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    records = payloads(30, size=200)
    spool = open_spool(tmp_path, segment_bytes=2000)
    fill(spool, records)
    close(spool)

    spool = open_spool(tmp_path, segment_bytes=2000)
    spool.commit(22)  # the writer's checkpoint, read from the database
    stats = spool.stats()
    assert stats.depth == 8
    assert stats.bytes == sum(HEADER.size + len(p) for p in records[22:])
    assert [seq for seq, _ in spool.read(after=22)] == list(range(23, 31))
    assert min(int(p.stem) for p in segment_files(tmp_path)) > 9  # old segments gone
    close(spool)


def test_commit_beyond_the_last_record_moves_numbering_past_it(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    """After a machine crash under fsync="interval", the database may hold seqs the
    spool lost; they must never be handed out again."""
    spool = open_spool(tmp_path)
    fill(spool, payloads(3))
    close(spool)

    spool = open_spool(tmp_path)
    spool.commit(10)
    assert fill(spool, [b"after the crash"]) == [11]
    close(spool)
    spool = open_spool(tmp_path)
    assert spool.read(after=10) == [(11, b"after the crash")]
    assert spool.stats().last_seq == 11
    close(spool)


def _torn(keep: int) -> Callable[[bytes, int], bytes]:
    return lambda data, last: data[: last + keep]


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        pytest.param(_torn(60), 4, id="mid-payload"),
        pytest.param(_torn(7), 4, id="mid-header"),
        pytest.param(
            lambda data, last: data[:last] + b"XXXX" + data[last + 4 :], 4, id="bad-magic"
        ),
        pytest.param(lambda data, last: data + bytes(13), 5, id="zero-filled-tail"),
        # A stale copy of record 5: its crc is right, but seq 5 cannot follow seq 5.
        pytest.param(lambda data, last: data + data[last:], 5, id="repeated-seq"),
    ],
)
def test_a_torn_tail_is_cut_and_counted(
    open_spool: OpenSpool, tmp_path: Path, damage: Callable[[bytes, int], bytes], kept: int
) -> None:
    records = payloads(5, size=150)
    spool = open_spool(tmp_path)
    fill(spool, records)
    close(spool)

    (segment,) = segment_files(tmp_path)
    data = segment.read_bytes()
    last = sum(HEADER.size + len(p) for p in records[:4])  # where record 5 starts
    damaged = damage(data, last)
    segment.write_bytes(damaged)
    expected_cut = len(damaged) - (last if kept == 4 else len(data))

    spool = open_spool(tmp_path)
    stats = spool.stats()
    assert (stats.corrupt_records, stats.truncated_bytes) == (1, expected_cut)
    assert segment.stat().st_size == len(damaged) - expected_cut
    assert spool.read(after=0) == list(enumerate(records[:kept], start=1))
    assert fill(spool, [b"fresh"]) == [kept + 1]
    close(spool)

    spool = open_spool(tmp_path)  # the cut is permanent: the next open is clean
    assert spool.stats().corrupt_records == 0
    assert spool.read(after=kept) == [(kept + 1, b"fresh")]
    close(spool)


def test_numbering_survives_when_the_only_segment_left_is_torn_empty(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    """Committed segments are gone, and the active one lost its only record: the
    segment's name still says where numbering stands, so seq 1 is not handed out again."""
    spool = open_spool(tmp_path, segment_bytes=1000)
    fill(spool, [bytes([i]) * 300 for i in range(1, 8)])  # segments 1-3, 4-6, 7
    spool.commit(6)
    close(spool)
    (segment,) = segment_files(tmp_path)
    segment.write_bytes(segment.read_bytes()[:5])

    spool = open_spool(tmp_path, segment_bytes=1000)
    stats = spool.stats()
    assert (stats.corrupt_records, stats.truncated_bytes, stats.last_seq) == (1, 5, 6)
    assert fill(spool, [b"next"]) == [7]
    assert spool.read(after=6) == [(7, b"next")]
    close(spool)


def test_a_flipped_payload_byte_fails_the_crc(open_spool: OpenSpool, tmp_path: Path) -> None:
    records = payloads(5, size=150)
    spool = open_spool(tmp_path)
    fill(spool, records)
    close(spool)

    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    third = sum(HEADER.size + len(p) for p in records[:2])
    data[third + HEADER.size + 40] ^= 0x01  # magic, length and seq still look right
    segment.write_bytes(bytes(data))

    spool = open_spool(tmp_path)
    stats = spool.stats()
    assert (stats.corrupt_records, stats.truncated_bytes) == (1, len(data) - third)
    assert [seq for seq, _ in spool.read(after=0)] == [1, 2]
    assert fill(spool, [b"x"]) == [3]
    close(spool)


def test_corruption_in_an_earlier_segment_drops_only_the_rest_of_it(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    records = [bytes([i]) * 300 for i in range(1, 10)]
    spool = open_spool(tmp_path, segment_bytes=1000)
    fill(spool, records)  # segments 1-3, 4-6, 7-9
    close(spool)

    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[320 + HEADER.size + 5] ^= 0xFF  # record 2
    first.write_bytes(bytes(data))

    spool = open_spool(tmp_path, segment_bytes=1000)
    stats = spool.stats()
    assert (stats.corrupt_records, stats.truncated_bytes, stats.last_seq) == (1, 640, 9)
    assert [seq for seq, _ in spool.read(after=0)] == [1, 4, 5, 6, 7, 8, 9]
    assert fill(spool, [b"x"]) == [10]
    close(spool)


def test_a_missing_directory_is_a_fresh_spool_and_a_second_opener_is_refused(
    open_spool: OpenSpool,
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path / "a" / "b")
    assert spool.read(after=0) == []
    assert spool.wait(timeout=0.01) is False
    stats = spool.stats()
    assert (stats.last_seq, stats.depth, stats.segments) == (0, 0, 0)
    with pytest.raises(SpoolLocked):
        open_spool(tmp_path / "a" / "b")
    close(spool)
    close(open_spool(tmp_path / "a" / "b"))  # released on close


def test_spool_full_writes_nothing_and_commit_frees_room(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    spool = open_spool(tmp_path, max_bytes=3 * (HEADER.size + 100))
    assert fill(spool, [b"a" * 100, b"b" * 100, b"c" * 100]) == [1, 2, 3]
    sizes = {p: p.stat().st_size for p in segment_files(tmp_path)}

    with pytest.raises(SpoolFull) as caught:
        fill(spool, [b"d"])
    assert caught.value.reason == "full"
    assert {p: p.stat().st_size for p in segment_files(tmp_path)} == sizes
    assert spool.stats().full_rejections_total == 1

    spool.commit(1)
    assert fill(spool, [b"d" * 100]) == [4]
    stats = spool.stats()
    assert (stats.depth, stats.bytes, stats.appends_total) == (3, 3 * 120, 4)
    close(spool)


@dataclass
class SmallDisk:
    """A filesystem with about 256 KiB: a real tmpfs, or the same behaviour injected
    through ``opener`` (writes fill what fits, then fail with ENOSPC)."""

    directory: Path
    opener: Opener | None
    capacity: int = 256 << 10

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def free_bytes(self) -> int:
        if self.opener is None:
            st = os.statvfs(self.directory)
            return st.f_bavail * st.f_frsize
        return self.capacity - self.used()

    def fill(self, leave: int) -> None:
        (self.directory / "filler").write_bytes(bytes(self.free_bytes() - leave))

    def free(self) -> None:
        (self.directory / "filler").unlink()


class QuotaFile(io.FileIO):
    def __init__(self, path: Path, disk: SmallDisk) -> None:
        super().__init__(path, "ab")
        self.disk = disk

    def write(self, data: Any) -> int:
        room = self.disk.free_bytes()
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(memoryview(data)[:room])


def _mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    where = tmp_path / "disk"
    where.mkdir()
    if request.param == "tmpfs" and _mount_tmpfs(where):
        try:
            yield SmallDisk(where, opener=None)
        finally:  # lazily, so a spool a failed test left open cannot keep it mounted
            subprocess.run(["umount", "--lazy", str(where)], check=True)
        return
    # Not root, or no mount allowed: the same disk, simulated through the opener hook.
    disk = SmallDisk(where, opener=None)
    disk.opener = lambda path: QuotaFile(path, disk)
    yield disk


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_a_full_disk_leaves_no_half_record_and_is_not_sticky(
    small_disk: SmallDisk, open_spool: OpenSpool, fsync: FsyncPolicy
) -> None:
    # "always" writes in the flusher's groups, the others on the caller's thread
    spool = open_spool(small_disk.directory / "spool", opener=small_disk.opener, fsync=fsync)

    async def scenario() -> list[BaseException | int]:
        assert await spool.append(b"A" * 1000) == 1
        small_disk.fill(leave=8 << 10)
        (segment,) = segment_files(small_disk.directory / "spool")
        size = segment.stat().st_size

        with pytest.raises(SpoolFull) as caught:
            await spool.append(b"B" * (40 << 10))
        assert caught.value.reason == "disk"
        assert segment.stat().st_size == size  # the partial write was cut back
        group = await asyncio.gather(
            *(spool.append(bytes([i]) * (20 << 10)) for i in range(3)), return_exceptions=True
        )
        assert segment.stat().st_size == size
        assert await spool.append(b"small") == 2  # what fits still goes in, no gap
        small_disk.free()
        assert await spool.append(b"C" * (40 << 10)) == 3
        return group

    group = asyncio.run(scenario())
    assert [type(r) for r in group] == [SpoolFull] * 3
    assert {r.reason for r in group if isinstance(r, SpoolFull)} == {"disk"}
    stats = spool.stats()
    assert (stats.disk_full_rejections_total, stats.full_rejections_total) == (4, 0)
    assert (stats.appends_total, stats.last_seq) == (3, 3)
    close(spool)

    spool = open_spool(small_disk.directory / "spool")
    assert spool.stats().corrupt_records == 0
    assert spool.read(after=0) == [(1, b"A" * 1000), (2, b"small"), (3, b"C" * (40 << 10))]
    close(spool)


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_other_write_errors_reach_the_caller_and_roll_back(
    open_spool: OpenSpool, tmp_path: Path, fsync: FsyncPolicy
) -> None:
    class FailOnce(io.FileIO):
        failures = 1

        def write(self, data: Any) -> int:
            if FailOnce.failures:
                FailOnce.failures -= 1
                super().write(memoryview(data)[:10])  # a torn write, then the error
                raise OSError(errno.EIO, "I/O error")
            return super().write(data)

    spool = open_spool(tmp_path, opener=lambda path: FailOnce(path, "ab"), fsync=fsync)
    with pytest.raises(OSError) as caught:
        fill(spool, [b"lost"])
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, SpoolFull)
    assert fill(spool, [b"kept"]) == [1]
    assert spool.stats().disk_full_rejections_total == 0
    close(spool)
    spool = open_spool(tmp_path)
    assert (spool.read(after=0), spool.stats().corrupt_records) == ([(1, b"kept")], 0)
    close(spool)


def test_appends_arriving_during_a_write_share_the_next_fsync(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    """Group commit, made deterministic: the disk holds the first write until all 200
    handlers have queued, as a slow fsync would on a busy collector."""
    release = threading.Event()
    writes: list[int] = []

    class SlowDisk(io.FileIO):
        def write(self, data: Any) -> int:
            release.wait(timeout=5)
            writes.append(len(data))
            return super().write(data)

    spool = open_spool(tmp_path, fsync="always", opener=lambda path: SlowDisk(path, "ab"))

    async def burst() -> list[int]:
        tasks = [asyncio.ensure_future(spool.append(p)) for p in payloads(200)]
        await asyncio.sleep(0)  # every handler has queued its append
        release.set()
        return list(await asyncio.gather(*tasks))

    seqs = asyncio.run(burst())
    assert sorted(seqs) == list(range(1, 201))
    stats = spool.stats()
    assert stats.appends_total == 200
    assert len(writes) <= 2  # what queued behind the held write went out as one group
    # One fsync per group, plus one for the directory entry of the new segment.
    assert stats.fsyncs_total == len(writes) + 1
    # The seq each caller got is the seq of its own payload.
    assert dict(spool.read(after=0)) == dict(zip(seqs, payloads(200), strict=True))
    close(spool)


def test_interval_and_never_acknowledge_before_syncing(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    slow = open_spool(tmp_path / "interval", fsync="interval", fsync_interval_s=30)
    never = open_spool(tmp_path / "never", fsync="never")
    for spool in (slow, never):
        fill(spool, payloads(20))
        # The directory entry of the new segment is synced under "interval" only.
        assert spool.stats().fsyncs_total == (1 if spool is slow else 0)
        close(spool)  # close syncs whatever is left
        assert spool.stats().fsyncs_total == (2 if spool is slow else 1)

    quick = open_spool(tmp_path / "quick", fsync="interval", fsync_interval_s=0.02)
    fill(quick, [b"x"])
    deadline = time.monotonic() + 5
    while quick.stats().fsyncs_total < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quick.stats().fsyncs_total == 2  # the background sync came, unprompted
    close(quick)


@pytest.mark.parametrize(
    ("fsync", "on_caller"), [("always", False), ("interval", True), ("never", True)]
)
def test_only_always_hands_appends_to_the_flusher_thread(
    open_spool: OpenSpool, tmp_path: Path, fsync: FsyncPolicy, on_caller: bool
) -> None:
    """Under "interval" and "never" an append is acknowledged once written, so the
    caller's event loop writes it: no wake-up of the flusher and back per append."""
    writers: set[str] = set()

    class Watched(io.FileIO):
        def write(self, data: Any) -> int:
            writers.add(threading.current_thread().name)
            return super().write(data)

    spool = open_spool(tmp_path, fsync=fsync, opener=lambda path: Watched(path, "ab"))
    assert fill(spool, payloads(50)) == list(range(1, 51))
    me = threading.current_thread().name
    assert writers == ({me} if on_caller else {"perfpulse-spool"})
    assert dict(spool.read(after=0)) == dict(zip(range(1, 51), payloads(50), strict=True))
    close(spool)


@pytest.mark.parametrize("fsync", ["interval", "never"])
def test_appends_made_together_on_one_loop_share_one_write(
    open_spool: OpenSpool, tmp_path: Path, fsync: FsyncPolicy
) -> None:
    writes: list[int] = []

    class Counted(io.FileIO):
        def write(self, data: Any) -> int:
            writes.append(len(data))
            return super().write(data)

    spool = open_spool(tmp_path, fsync=fsync, opener=lambda path: Counted(path, "ab"))

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(spool.append(p) for p in payloads(100))))

    seqs = asyncio.run(burst())
    assert sorted(seqs) == list(range(1, 101))
    assert len(writes) == 1  # the hundred records went out in one write()
    assert dict(spool.read(after=0)) == dict(zip(seqs, payloads(100), strict=True))
    close(spool)


def test_wait_wakes_when_another_thread_appends(open_spool: OpenSpool, tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    assert spool.read(after=0) == []
    assert spool.wait(timeout=0.02) is False

    woke: list[tuple[bool, float]] = []

    def writer() -> None:
        started = time.monotonic()
        woke.append((spool.wait(timeout=5), time.monotonic() - started))

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.05)
    fill(spool, [b"wake up"])
    thread.join()
    assert woke[0][0] is True and woke[0][1] < 2
    assert spool.read(after=0) == [(1, b"wake up")]
    assert spool.wait(timeout=0.02) is False  # nothing newer than what was read
    close(spool)
    assert spool.wait(timeout=5) is False  # closing releases a waiting writer at once
    with pytest.raises(RuntimeError):
        fill(spool, [b"too late"])


def test_a_writer_thread_stores_every_record_once_while_appends_rotate_segments(
    open_spool: OpenSpool, tmp_path: Path
) -> None:
    """The collector's real shape: handlers append on the loop while the writer thread
    reads after its checkpoint, stores, commits, and waits."""
    spool = open_spool(tmp_path, segment_bytes=4096, fsync="never")
    stored: dict[int, bytes] = {}
    done = threading.Event()

    def writer() -> None:
        checkpoint = 0
        while not (done.is_set() and checkpoint == spool.stats().last_seq):
            records = spool.read(after=checkpoint, max_records=7)
            if not records:
                spool.wait(timeout=0.05)
                continue
            assert records[0][0] == checkpoint + 1  # no gap, no repeat
            stored.update(records)
            checkpoint = records[-1][0]
            spool.commit(checkpoint)

    async def handlers() -> dict[int, bytes]:
        async def handler(h: int) -> list[tuple[int, bytes]]:
            sent = []
            for i in range(25):
                payload = f"handler {h} batch {i} ".encode() * (1 + (h + i) % 20)
                sent.append((await spool.append(payload), payload))
            return sent

        results = await asyncio.gather(*(handler(h) for h in range(40)))
        return dict(pair for sent in results for pair in sent)

    thread = threading.Thread(target=writer)
    thread.start()
    appended = asyncio.run(handlers())
    done.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert stored == appended and sorted(stored) == list(range(1, 1001))
    stats = spool.stats()
    assert (stats.depth, stats.bytes, stats.segments) == (0, 0, 1)
    assert len(segment_files(tmp_path)) == 1
