"""FileSpool: the durable spool, as numbered segment files in one directory.

Opening is construction: ``FileSpool(directory)`` creates the directory if needed,
takes an exclusive lock on it (:class:`SpoolLocked` if another spool holds it),
scans every segment, cuts away torn or corrupt tails, and continues the numbering
after the last valid record. Nothing runs in the background until the first append::

    spool = FileSpool(Path("data/spool"), fsync="always")
    seq = await spool.append(body)        # durable when it returns
    records = spool.read(after=0)         # [(1, body)], from the writer thread
    spool.commit(records[-1][0])          # stored downstream: whole segments go
    await spool.close()

On disk, ``00000000000000000001.seg`` holds records 1, 2, 3, ... and is named after
its first seq; a new segment starts when the current one would pass ``segment_bytes``.
Each record is framed as::

    magic b"PPS1" | payload length u32 | seq u64 | crc32(seq + payload) u32 | payload

all little-endian, so recovery can tell a whole record from a torn or damaged one.

Under the ``"always"`` policy appends are grouped: the appends an event loop
makes while it runs its ready handlers go to a flusher thread together, handed
over by a callback the loop runs right after them (one wake-up of the flusher,
not one per append); the flusher takes every append waiting since its last
write, frames them, and writes them with one ``write()`` and one ``fsync``; then
each caller's await returns its seq. While one group is being synced the next
one gathers, so a busy collector pays one fsync for many records. Under
``"interval"`` and ``"never"`` an append is done once its bytes reach the
operating system, so the caller's event loop writes them itself:
the appends made while it runs its ready handlers are written together, with one
``write()``, by a callback it runs right after them. There is no hand-off to the
flusher and back (a thread wake-up and an event loop wake-up per group, which
cost a single beacon more than its own write), and no ``write()`` per record
either (each is a moment without the GIL, in which the storage writer's thread
can take it for up to a switch interval). The flusher then only syncs: every
``fsync_interval_s`` under ``"interval"``, at ``close()`` under ``"never"``. (A
segment that fills up is still synced when the next one starts, by the
appending thread: once per ``segment_bytes``.) With either policy, a machine crash can lose acknowledged records; the writer then
holds a checkpoint beyond the spool's last record, and ``commit(checkpoint)`` at
start-up moves the numbering past it, so no seq is ever handed out twice. Call it
before ingest starts appending.

Cancelling an ``append`` does not withdraw the record: once queued it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from pathlib import Path
from typing import BinaryIO, Literal

from perfpulse.spool.base import SpoolFull, SpoolLocked, SpoolStats

FsyncPolicy = Literal["always", "interval", "never"]
Opener = Callable[[Path], BinaryIO]
"""Opens a segment for appending: an unbuffered append-mode file whose ``fileno()``
can be fsynced. Inject one to simulate a failing disk."""

MAGIC = b"PPS1"
HEADER = struct.Struct("<4sIQI")
SEQ = struct.Struct("<Q")
SUFFIX = ".seg"
GROUP_BYTES = 8 << 20
"""A group is cut at this many bytes; a longer queue is written in several groups."""
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _compiled_frame() -> Callable[[list[bytes], int], bytes] | None:
    """A group's records framed in one call (:mod:`perfpulse.spool._frame`); None
    when it was not built (no C compiler, or no zlib headers): framed one by one."""
    try:
        from perfpulse.spool._frame import frame
    except ImportError:
        return None
    return frame


_frame = _compiled_frame()


def _open_for_append(path: Path) -> BinaryIO:
    return open(path, "ab", buffering=0)


def _crc(seq: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(SEQ.pack(seq)))


@dataclass(eq=False, slots=True)
class _Segment:
    """One segment file: record i has seq ``first_seq + i`` and starts at ``offsets[i]``."""

    first_seq: int
    path: Path
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    size: int = 0

    @property
    def end_seq(self) -> int:
        """The seq the next record in this segment would get."""
        return self.first_seq + len(self.offsets)

    def first_after(self, seq: int) -> int:
        """Index of the first record with a seq greater than ``seq``."""
        return min(max(seq + 1 - self.first_seq, 0), len(self.offsets))

    def bytes_after(self, seq: int) -> int:
        i = self.first_after(seq)
        return self.size - self.offsets[i] if i < len(self.offsets) else 0


def _scan(path: Path, first_seq: int) -> tuple[_Segment, int]:
    """Index the valid records at the head of a segment file; also return how many
    bytes follow them (a torn or corrupt tail)."""
    segment = _Segment(first_seq, path)
    data = path.read_bytes()
    with memoryview(data) as view:
        off = 0
        while off + HEADER.size <= len(data):
            magic, length, seq, crc = HEADER.unpack_from(data, off)
            end = off + HEADER.size + length
            if magic != MAGIC or seq != segment.end_seq or end > len(data):
                break
            if _crc(seq, view[off + HEADER.size : end]) != crc:
                break
            segment.offsets.append(off)
            off = end
    segment.size = off
    return segment, len(data) - off


def _recover(directory: Path) -> tuple[list[_Segment], int, int]:
    """Scan all segments, cutting bad tails; return (segments, corrupt, truncated_bytes).

    A segment whose records do not continue after the previous segment's is dropped
    whole; an empty segment is kept only if it is the last (its name still says where
    numbering stands)."""
    named = sorted(
        (int(p.stem), p)
        for p in directory.glob("*" + SUFFIX)
        if len(p.stem) == 20 and p.stem.isdigit()
    )
    segments: list[_Segment] = []
    corrupt = truncated = 0
    for i, (first_seq, path) in enumerate(named):
        floor = segments[-1].end_seq if segments else 1
        if first_seq < floor:
            segment, cut = _Segment(first_seq, path), path.stat().st_size
        else:
            segment, cut = _scan(path, first_seq)
        if cut:
            corrupt += 1
            truncated += cut
        if segment.offsets or (i == len(named) - 1 and first_seq >= floor):
            if cut:
                with open(path, "r+b") as f:
                    f.truncate(segment.size)
                    os.fsync(f.fileno())
            segments.append(segment)
        else:
            path.unlink()
    return segments, corrupt, truncated


@dataclass(eq=False, slots=True)
class _Append:
    payload: bytes
    size: int
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


@dataclass(eq=False, slots=True)
class _Part:
    """The slice of a group that goes into one segment."""

    segment: _Segment
    new: bool
    start: int
    chunks: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    length: int = 0
    file: BinaryIO | None = None


_Result = tuple[asyncio.Future[int], int | BaseException]


def _settle(results: list[_Result]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class FileSpool:
    """The durable :class:`~perfpulse.spool.Spool`; see the module docstring for usage.

    ``max_bytes`` bounds the on-disk bytes of uncommitted records (plus appends still
    queued): beyond it ``append`` raises ``SpoolFull("full")`` at once. ``opener``
    replaces ``open(path, "ab", buffering=0)`` for segment writes.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: FsyncPolicy = "always",
        fsync_interval_s: float = 0.2,
        opener: Opener | None = None,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0 or fsync_interval_s <= 0:
            raise ValueError("max_bytes, segment_bytes and fsync_interval_s must be positive")
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', not {fsync!r}")
        self.directory = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._policy: FsyncPolicy = fsync
        self._interval = fsync_interval_s
        self._opener = opener or _open_for_append
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._segments, self._corrupt, self._truncated = _recover(self.directory)
        except BaseException as exc:
            os.close(self._lock_fd)
            if isinstance(exc, BlockingIOError):
                raise SpoolLocked(f"{self.directory} is in use by another spool") from exc
            raise
        # Guarded by _lock: everything below except the flusher-owned fields.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the flusher waits for appends
        self._readable = threading.Condition(self._lock)  # the writer waits for records
        self._read_lock = threading.Lock()  # read() against commit()'s deletions
        self._next_seq = self._segments[-1].end_seq if self._segments else 1
        self._committed = 0
        self._read_upto = 0
        self._live_bytes = sum(s.size for s in self._segments)
        self._pending: deque[_Append] = deque()
        self._here: dict[asyncio.AbstractEventLoop, list[_Append]] = {}  # see append
        self._pending_bytes = 0
        self._closing = False
        self._flusher: threading.Thread | None = None
        self._appends = self._fsyncs = self._full = self._disk_full = 0
        self._sync_due: float | None = None  # "interval": when unsynced bytes must sync
        # Guarded by _io (taken before _lock): the thread that writes records.
        self._io = threading.Lock()
        self._file: BinaryIO | None = None  # open handle on self._segments[-1]
        self._rotate = False  # the active segment has a tail we failed to remove
        self._shut = False  # the flusher closed the files for good

    # -- the event loop side ---------------------------------------------------------

    async def append(self, payload: bytes) -> int:
        """Queue ``payload`` for the next group; return its seq once the group is written
        (and synced, under ``"always"``). Raises :class:`SpoolFull`, or the ``OSError``
        of a failed write; either way nothing of the record stays on disk."""
        if type(payload) is not bytes:  # a bytearray or memoryview, kept as it is now
            payload = bytes(payload)
        if len(payload) > 0xFFFF_FFFF:
            raise ValueError("a spool record holds at most 4 GiB")
        size = HEADER.size + len(payload)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        item = _Append(payload, size, future, loop)
        with self._lock:
            if self._closing:
                raise RuntimeError("append on a closed spool")
            if self._live_bytes + self._pending_bytes + size > self._max_bytes:
                self._full += 1
                raise SpoolFull("full")
            self._pending_bytes += size
            # the group this loop gathers while its ready handlers run: written by the
            # loop itself once they have, or under "always" handed to the flusher
            group = self._here.get(loop)
            if group is None:
                group = self._here[loop] = []
                loop.call_soon(self._write_here, loop)
            group.append(item)
            if self._flusher is None:  # writes and syncs under "always", else only syncs
                self._flusher = threading.Thread(
                    target=self._run, name="perfpulse-spool", daemon=True
                )
                self._flusher.start()
        return await future

    def _write_here(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the group ``loop`` gathered (on that loop) and settle its futures;
        under ``"always"``, hand it to the flusher, which writes and syncs it with
        whatever else waits by then (written here once the spool is closing)."""
        with self._lock:
            group = self._here.pop(loop, [])
            if group and self._policy == "always" and not self._closing:
                if not self._pending:  # else it was woken for those already
                    self._work.notify()
                self._pending.extend(group)
                return
        if group:
            outcomes = self._write_outcomes(group)
            _settle([(item.future, out) for item, out in zip(group, outcomes, strict=True)])

    async def close(self) -> None:
        """Write what is queued, sync (under every policy), close, release the lock."""
        # What this loop gathered goes out now; a group of another loop is written
        # by the callback already scheduled there (or fails, once the files closed).
        self._write_here(asyncio.get_running_loop())
        with self._lock:
            self._closing = True
            self._work.notify()
            self._readable.notify_all()
            flusher = self._flusher
        if flusher is not None:
            await asyncio.to_thread(flusher.join)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- the writer thread side ------------------------------------------------------

    def read(
        self, after: int, max_records: int = 10_000, max_bytes: int = 16 << 20
    ) -> list[tuple[int, bytes]]:
        """Records after ``after``, read from the segment files with one ``pread`` per
        segment; safe while appends go on, since only whole written records are indexed."""
        with self._read_lock:
            with self._lock:
                plan = self._plan_read(after, max(max_records, 1), max_bytes)
            out: list[tuple[int, bytes]] = []
            for path, first_seq, offsets in plan:
                base = offsets[0]
                with open(path, "rb") as f:
                    data = os.pread(f.fileno(), offsets[-1] - base, base)
                if len(data) != offsets[-1] - base:
                    raise RuntimeError(f"{path} shrank while the spool was open")
                skip = base - HEADER.size
                out += zip(
                    range(first_seq, first_seq + len(offsets) - 1),
                    [data[a - skip : b - base] for a, b in pairwise(offsets)],
                    strict=True,
                )
            return out

    def _plan_read(
        self, after: int, max_records: int, max_bytes: int
    ) -> list[tuple[Path, int, list[int]]]:
        """Under the lock: which byte ranges hold the records to return. Each entry is
        (path, first seq, record start offsets followed by the end offset)."""
        segments = self._segments
        i = max(bisect_right(segments, after, key=lambda s: s.first_seq) - 1, 0)
        plan: list[tuple[Path, int, list[int]]] = []
        count = size = 0
        last = self._next_seq - 1
        for segment in segments[i:]:
            k = segment.first_after(after)
            bounds = [*segment.offsets[k : k + max_records - count + 1]]
            if len(bounds) <= max_records - count:
                bounds.append(segment.size)
            # the most records m whose payloads fit: m of them hold bounds[m] -
            # bounds[0] - m headers' bytes, which grows with m (at least one in all)
            first, h = bounds[0], HEADER.size
            m = bisect_right(
                range(1, len(bounds)), max_bytes - size, key=lambda m: bounds[m] - first - m * h
            )
            if count == 0 and len(bounds) > 1:
                m = max(m, 1)
            count, size, j = count + m, size + bounds[m] - first - m * h, m + 1
            if j > 1:
                plan.append((segment.path, segment.first_seq + k, bounds[:j]))
                last = segment.first_seq + k + j - 2
            if j < len(bounds) or count >= max_records:
                break
        self._read_upto = last
        return plan

    def wait(self, timeout: float) -> bool:
        with self._lock:
            self._readable.wait_for(
                lambda: self._closing or self._next_seq - 1 > self._read_upto, timeout
            )
            return self._next_seq - 1 > self._read_upto

    def commit(self, seq: int) -> None:
        """Forget records up to ``seq``: delete every segment but the active one whose
        records are all at or below it. Not persisted: the writer's checkpoint is."""
        with self._read_lock:
            with self._lock:
                if seq <= self._committed:
                    return
                self._committed = seq
                done = 0
                while done < len(self._segments) - 1 and self._segments[done].end_seq <= seq + 1:
                    done += 1
                doomed, self._segments = self._segments[:done], self._segments[done:]
                self._live_bytes = sum(s.bytes_after(seq) for s in self._segments)
            for segment in doomed:
                with contextlib.suppress(OSError):  # a leftover is rescanned, then dropped
                    segment.path.unlink()

    def stats(self) -> SpoolStats:
        with self._lock:
            committed = self._committed
            return SpoolStats(
                depth=sum(len(s.offsets) - s.first_after(committed) for s in self._segments),
                bytes=self._live_bytes,
                segments=len(self._segments),
                last_seq=max(self._next_seq - 1, committed),
                committed_seq=committed,
                corrupt_records=self._corrupt,
                truncated_bytes=self._truncated,
                appends_total=self._appends,
                fsyncs_total=self._fsyncs,
                full_rejections_total=self._full,
                disk_full_rejections_total=self._disk_full,
            )

    # -- the flusher thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    if self._sync_due is not None and self._sync_due <= time.monotonic():
                        break
                    due = self._sync_due
                    self._work.wait(None if due is None else due - time.monotonic())
                group: list[_Append] = []
                size = 0
                while self._pending and (not group or size + self._pending[0].size <= GROUP_BYTES):
                    group.append(self._pending.popleft())
                    size += group[-1].size
                stop = self._closing and not self._pending
            if group:
                self._resolve(group, self._write_outcomes(group))
            with self._lock:
                due = self._sync_due
            if due is not None and (stop or due <= time.monotonic()):
                self._sync_quietly()
            if stop:
                break
        with self._io:
            if self._file is not None:
                if self._policy == "never" or self._sync_due is not None:  # unsynced appends
                    self._sync_quietly(held=True)
                self._file.close()
                self._file = None
            self._shut = True

    def _write_outcomes(self, group: list[_Append]) -> list[int | BaseException]:
        """Write a group (from the flusher, or from the loop that gathered it) and
        return what each append gets: its seq, or the failure."""
        size = sum(item.size for item in group)
        try:
            with self._io:
                if self._shut:  # closed on another loop before this group's turn
                    raise RuntimeError("append on a closed spool")
                outcome = self._write_group(group, size)
        except Exception as exc:  # a bug must fail these appends, not hang them
            with self._lock:
                self._pending_bytes -= size
            return [exc] * len(group)
        if isinstance(outcome, OSError):  # one exception per caller, each with its own traceback
            return [self._failure(outcome) for _ in group]
        return list(range(outcome, outcome + len(group)))

    @staticmethod
    def _failure(exc: OSError) -> Exception:
        """What a caller whose record could not be written gets."""
        failure = SpoolFull("disk") if exc.errno in _DISK_FULL else OSError(exc.errno, exc.strerror)
        failure.__cause__ = exc
        return failure

    def _sync_quietly(self, held: bool = False) -> None:
        """Background sync: the records were acknowledged already, so a failure has
        no one to report to; the next sync tries again. The active file's descriptor
        is duplicated under ``_io`` and synced outside it, so appends written by
        other threads meanwhile do not wait for the disk."""
        with self._lock:
            self._sync_due = None
        if held:
            fd = os.dup(self._file.fileno()) if self._file is not None else -1
        else:
            with self._io:
                fd = os.dup(self._file.fileno()) if self._file is not None else -1
        if fd >= 0:
            try:
                with contextlib.suppress(OSError):
                    self._fsync(fd)
            finally:
                os.close(fd)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        with self._lock:
            self._fsyncs += 1

    def _plan_group(self, group: list[_Append], size: int) -> tuple[int, list[_Part]]:
        """Assign seqs and cut the group (of ``size`` bytes framed) into per-segment
        parts, rotating as needed."""
        with self._lock:
            first = seq = max(self._next_seq, self._committed + 1)
            active = self._segments[-1] if self._segments else None
        parts: list[_Part] = []
        part = None
        if active is not None and active.end_seq == seq and not self._rotate:
            part = _Part(active, new=False, start=active.size, file=self._file)
            parts.append(part)
            if _frame is not None and part.start + size <= self._segment_bytes:
                # the usual group: all of it into the active segment, framed in one call
                part.chunks.append(_frame([item.payload for item in group], seq))
                part.offsets = list(accumulate([item.size for item in group], initial=part.start))
                del part.offsets[-1]
                part.length = size
                return first, parts
        for item in group:
            used = 0 if part is None else part.start + part.length
            if part is None or (used and used + item.size > self._segment_bytes):
                path = self.directory / f"{seq:020d}{SUFFIX}"
                part = _Part(_Segment(seq, path), new=True, start=0)
                parts.append(part)
            header = HEADER.pack(MAGIC, len(item.payload), seq, _crc(seq, item.payload))
            part.offsets.append(part.start + part.length)
            part.chunks += (header, item.payload)
            part.length += item.size
            seq += 1
        return first, [p for p in parts if p.chunks]

    def _write_group(self, group: list[_Append], size: int) -> int | OSError:
        """Under ``_io``: write ``group`` and return its first seq, or undo what was
        written and return the error."""
        first, parts = self._plan_group(group, size)
        try:
            for i, part in enumerate(parts):
                if part.file is None:
                    part.file = self._opener(part.segment.path)
                data = memoryview(b"".join(part.chunks))
                while data:
                    data = data[part.file.write(data) :]
                if i < len(parts) - 1 and self._policy != "never":
                    self._fsync(part.file.fileno())  # a finished segment
            last = parts[-1].file
            assert last is not None
            if self._policy == "always":
                self._fsync(last.fileno())
            if self._policy != "never" and any(p.new for p in parts):
                self._sync_directory()
        except OSError as exc:
            self._rollback(parts)
            with self._lock:
                self._pending_bytes -= size
                if exc.errno in _DISK_FULL:
                    self._disk_full += len(group)
            return exc
        self._publish(first, parts, group, size)
        return first

    def _publish(self, seq: int, parts: list[_Part], group: list[_Append], size: int) -> None:
        for part in parts[:-1]:
            if part.file is not None:
                part.file.close()
        if self._file is not None and all(p.file is not self._file for p in parts):
            self._file.close()  # the old active segment, left for a fresh one
        self._file, self._rotate = parts[-1].file, False
        with self._lock:
            if self._policy == "interval" and self._sync_due is None:
                self._sync_due = time.monotonic() + self._interval
                self._work.notify()  # the flusher waits for it
            for part in parts:
                if part.new:
                    self._segments.append(part.segment)
                part.segment.offsets.extend(part.offsets)
                part.segment.size += part.length
            self._next_seq = seq + len(group)
            self._pending_bytes -= size
            self._live_bytes += size
            self._appends += len(group)
            self._readable.notify_all()

    def _rollback(self, parts: list[_Part]) -> None:
        """Undo a failed group: no half record stays behind, no new segment survives."""
        for part in parts:
            if part.new:
                if part.file is not None:
                    part.file.close()
                with contextlib.suppress(OSError):
                    part.segment.path.unlink()
            elif part.file is not None:
                try:
                    part.file.truncate(part.start)
                    if self._policy != "never":
                        self._fsync(part.file.fileno())
                    self._file = part.file
                except OSError:
                    part.file.close()  # the next group starts a fresh segment
                    self._file, self._rotate = None, True

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _resolve(group: list[_Append], results: list[int | BaseException]) -> None:
        """Hand each append its seq (or the failure) on its own event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for item, result in zip(group, results, strict=True):
            by_loop.setdefault(item.loop, []).append((item.future, result))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits
                loop.call_soon_threadsafe(_settle, items)
