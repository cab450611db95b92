"""The spool contract, its errors and statistics, and an in-memory implementation.

The spool is the durable queue between ingest and storage. HTTP handlers append a
validated batch and answer 202 only once :meth:`Spool.append` has returned; a single
writer thread reads records after its checkpoint, stores them together with the new
checkpoint in one transaction, then calls :meth:`Spool.commit`. Exactly-once storage
rests on two promises every implementation keeps:

* sequence numbers are 1, 2, 3, ... in append order and are never handed out twice,
  not even across restarts;
* ``read(after=n)`` returns precisely the stored records whose seq is greater than n.

The writer loop looks like this::

    checkpoint = store.checkpoint()
    spool.commit(checkpoint)          # before ingest starts appending
    while running:
        records = spool.read(after=checkpoint)
        if not records:
            spool.wait(timeout=1.0)
            continue
        checkpoint = store.insert(records)   # same transaction as the checkpoint
        spool.commit(checkpoint)

:class:`MemorySpool` keeps records in a list; use it to test code that needs a spool.
:class:`perfpulse.spool.FileSpool` is the durable one.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, Protocol

FullReason = Literal["full", "disk"]


class SpoolFull(Exception):
    """The record was not stored: ``reason`` is ``"full"`` when the spool already
    holds ``max_bytes`` of uncommitted records, ``"disk"`` when the filesystem ran
    out of space or quota. Nothing of the record is left behind, and nothing is
    sticky: a later append succeeds as soon as there is room again."""

    def __init__(self, reason: FullReason) -> None:
        super().__init__(
            "spool is full: uncommitted records reached max_bytes"
            if reason == "full"
            else "spool is full: no space left on the device"
        )
        self.reason: FullReason = reason


class SpoolLocked(Exception):
    """Another process (or another open spool object) already owns the directory."""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool's gauges and counters.

    ``depth`` and ``bytes`` cover records appended but not yet committed;
    ``corrupt_records`` and ``truncated_bytes`` describe what recovery cut away
    when the spool was opened; the ``*_total`` fields count since opening.
    """

    depth: int
    bytes: int
    segments: int
    last_seq: int
    committed_seq: int
    corrupt_records: int
    truncated_bytes: int
    appends_total: int
    fsyncs_total: int
    full_rejections_total: int
    disk_full_rejections_total: int


class Spool(Protocol):
    """An append-only queue of opaque byte records, numbered by sequence."""

    async def append(self, payload: bytes) -> int:
        """Store ``payload`` and return its seq once it is durable (per the
        implementation's policy). Raises :class:`SpoolFull`."""
        ...

    def read(
        self, after: int, max_records: int = 10_000, max_bytes: int = 16 << 20
    ) -> list[tuple[int, bytes]]:
        """Records with seq > ``after``, in order: at most ``max_records`` of them and
        ``max_bytes`` of payload, except that the first is returned however large."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until a record newer than the last read may exist (True) or until
        ``timeout`` seconds pass or the spool closes (False)."""
        ...

    def commit(self, seq: int) -> None:
        """Everything up to ``seq`` is stored downstream: its room may be reused.
        A seq beyond the last one appended moves the numbering past it, so a
        checkpoint that survived the loss of unsynced records is never reused."""
        ...

    def stats(self) -> SpoolStats:
        """A consistent snapshot of gauges and counters; callable from any thread."""
        ...

    async def close(self) -> None:
        """Finish pending appends, make everything durable, release the files."""
        ...


class MemorySpool:
    """A :class:`Spool` held in a list: fast, thread-safe, and gone at exit.

    ``max_bytes`` bounds the payload bytes not yet committed. Set ``disk_full`` to
    make appends fail as a full disk would::

        spool = MemorySpool(max_bytes=1 << 20)
        seq = await spool.append(b"batch")        # 1
        spool.read(after=0)                       # [(1, b"batch")]
        spool.disk_full = True                    # next append: SpoolFull("disk")
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.disk_full = False
        self._records: list[tuple[int, bytes]] = []
        self._bytes = 0
        self._last_seq = 0
        self._committed = 0
        self._read_upto = 0
        self._closed = False
        self._appends = self._full = self._disk_full = 0
        self._cond = threading.Condition()

    async def append(self, payload: bytes) -> int:
        with self._cond:
            if self._closed:
                raise RuntimeError("append on a closed spool")
            if self.disk_full:
                self._disk_full += 1
                raise SpoolFull("disk")
            if self._bytes + len(payload) > self.max_bytes:
                self._full += 1
                raise SpoolFull("full")
            self._last_seq += 1
            self._records.append((self._last_seq, payload))
            self._bytes += len(payload)
            self._appends += 1
            self._cond.notify_all()
            return self._last_seq

    def read(
        self, after: int, max_records: int = 10_000, max_bytes: int = 16 << 20
    ) -> list[tuple[int, bytes]]:
        with self._cond:
            out: list[tuple[int, bytes]] = []
            size = 0
            start = bisect_right(self._records, after, key=lambda record: record[0])
            for seq, payload in self._records[start : start + max_records]:
                if out and size + len(payload) > max_bytes:
                    break
                out.append((seq, payload))
                size += len(payload)
            self._read_upto = out[-1][0] if out else self._last_seq
            return out

    def wait(self, timeout: float) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._last_seq > self._read_upto, timeout)
            return self._last_seq > self._read_upto

    def commit(self, seq: int) -> None:
        with self._cond:
            if seq <= self._committed:
                return
            self._committed = seq
            self._last_seq = max(self._last_seq, seq)
            cut = bisect_right(self._records, seq, key=lambda record: record[0])
            self._bytes -= sum(len(payload) for _, payload in self._records[:cut])
            del self._records[:cut]

    def stats(self) -> SpoolStats:
        with self._cond:
            return SpoolStats(
                depth=len(self._records),
                bytes=self._bytes,
                segments=0,
                last_seq=self._last_seq,
                committed_seq=self._committed,
                corrupt_records=0,
                truncated_bytes=0,
                appends_total=self._appends,
                fsyncs_total=0,
                full_rejections_total=self._full,
                disk_full_rejections_total=self._disk_full,
            )

    async def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
