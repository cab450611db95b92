"""The single writer: drains the spool into storage, one transaction per flush.

It is the only thread that writes to the backend. Each flush takes every record
after the stored checkpoint (up to a record and byte budget), writes their rows,
their batch ids and the new checkpoint in one transaction, and only then lets the
spool forget them — so after a crash, replay from the checkpoint stores each
acknowledged batch exactly once. Between flushes it merges rollup rows
(``compact``) and enforces retention.

A flush costs storage a fixed price (a few dozen statements) plus a little per
row, so after a flush that did not fill its budget the thread lets records
gather before the next one (:meth:`Writer.window`): long enough for about
``flush_rows`` (2,500) rows at the pace the last flush saw, but at least
``batch_window_s`` (0.25 s) and at most ``max_window_s`` (2 s). It flushes
sooner when a whole flush's budget of bytes is waiting in the spool.

- Under load nothing changes: 2,500 rows or more gather in 0.25 s from 10,000
  rows a second (the memory benchmark's 10,000 events/s, the beacon benchmark's
  single beacons), so those flushes come every 0.25 s as they did. The window
  trades CPU for memory there: a fixed one-second window raised the collector's
  peak at 10,000 events/s by about 6 MB (151 against 145 MB, three runs each).
- Under light load the fixed price used to be most of the cost: it is 100 to
  130 ms of CPU on a 2-core machine even for one beacon (its rollups alone plan
  some 20 ms), paid four times a second. 20 beacons a second (a small site) kept
  the collector at 53 % of a core; with the window stretched to 2 s they cost
  9.5 %, and 200 a second 33 % instead of 83 % (10 s each, ``--fsync
  interval``). A record then waits up to about 2 s before queries see it.

A writer that falls behind takes more at a time: after a flush that filled its
budget the next one may take twice as much, up to ``max_growth`` (4) times the
budget; a flush that took less than its grown budget but more than the given
one keeps the grown budget, and once a flush fits the given budget, that is
the budget again.
Under single beacons the budget of bytes (4 MiB, about 1,800 beacons) is what
fills, and the fixed price of a flush, paid every 1,800 beacons, kept the
writer at 2,600 to 3,100 stored beacons/s while the event loop accepted 5,400
to 7,000; with the growth it stored 4,300 to 5,400 (three 8 s runs each, 64
connections). A flush of 8,000 beacons still fits DuckDB's steady 32 MB once
the documents reach it as Arrow columns (see the backend); the collector's
peak under that load is about 210 MB against 170 MB.

The thread runs ``WRITER_NICE`` (10) steps nicer than the process (on Linux,
where a thread has its own niceness): when the machine has no CPU to spare,
answering ingest comes first and storage catches up in the gaps, with the spool
holding the difference (and ingest answering 503 once it is full). On 2 cores
under batch load the acknowledged rate rose from about 180 to 205 batches/s with
it, and single beacons by about 8 %.

A failing write is retried with backoff and counted; it never kills the thread.
After three failures in a row the writer tries the records one by one: a record
that fails on its own while others succeed is set aside in ``quarantine/`` (and
counted) so one bad record cannot stall ingest; when every record fails, the
fault is the storage's (a full disk), and the writer keeps retrying.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from perfpulse.model.rows import RECORD_DECODER, Columns, to_columns
from perfpulse.spool import Spool
from perfpulse.store.base import Backend, Flush
from perfpulse.telemetry import CollectorMetrics

log = logging.getLogger("perfpulse.writer")

#: How much nicer than the process the writer thread runs (Linux): below the event
#: loop that answers ingest.
WRITER_NICE = 10


def _join(tables: dict[str, Columns], table: str, columns: Columns) -> None:
    """Append a record's columns of ``table`` to the flush's (the first are taken as they are)."""
    mine = tables.get(table)
    if mine is None:
        tables[table] = columns
    else:
        for column, more in zip(mine, columns, strict=True):
            column.extend(more)


class Writer:
    """Runs :meth:`drain` in a background thread; :meth:`stop` drains what is left."""

    def __init__(
        self,
        spool: Spool,
        backend: Backend,
        metrics: CollectorMetrics,
        *,
        max_records: int = 2_000,
        max_bytes: int = 4 << 20,
        max_growth: int = 4,
        quarantine_dir: Path | None = None,
        compact_every_s: float = 30.0,
        retention_every_s: float = 300.0,
        batch_window_s: float = 0.25,
        max_window_s: float = 2.0,
        flush_rows: int = 2_500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.backend = backend
        self.metrics = metrics
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_growth = max_growth
        self.growth = 1  # the budget of the next flush, in times the one given
        self.compact_every_s = compact_every_s
        self.retention_every_s = retention_every_s
        self.batch_window_s = batch_window_s
        self.max_window_s = max_window_s
        self.flush_rows = flush_rows
        self.clock = clock
        self.checkpoint = backend.checkpoint()
        self.corrupt_records = 0
        self.quarantined = 0
        self.quarantine_dir = quarantine_dir
        self._failures = 0
        self._full = False  # the last flush took as many records or bytes as it may
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_compact = time.monotonic()
        self._last_retention = 0.0
        spool.commit(self.checkpoint)

    def drain(self) -> int:
        """Write everything the spool holds now; returns the rows written."""
        written = 0
        while True:
            n = self.flush_once()
            if n < 0:
                return written
            written += n

    def flush_once(self) -> int:
        """One transaction; -1 when the spool had nothing after the checkpoint."""
        most, size = self.max_records * self.growth, self.max_bytes * self.growth
        records = self.spool.read(self.checkpoint, most, size)
        if not records:
            return -1
        taken = sum(len(payload) for _, payload in records)
        self._full = len(records) >= most or taken * 2 >= size
        # behind: the next flush may take twice as much (up to max_growth times the
        # budget); still more than the budget given: as much again; caught up: back
        # to the budget
        if self._full:
            self.growth = min(self.growth * 2, self.max_growth)
        elif len(records) <= self.max_records and taken * 2 < self.max_bytes:
            self.growth = 1
        if self._failures >= 3 and len(records) > 1:
            return self._isolate(records)
        try:
            rows = self._write(records)
        except Exception:
            self._failures += 1
            raise
        self._failures = 0
        return rows

    def _write(self, records: list[tuple[int, bytes]]) -> int:
        flush = Flush(checkpoint=records[-1][0])
        tables, batches, beacons = flush.tables, flush.batches, flush.beacons
        decode = RECORD_DECODER.decode
        for _seq, payload in records:  # with the GIL held: what is empty is skipped
            try:
                record = decode(payload)
            except msgspec.DecodeError:
                self.corrupt_records += 1
                self.metrics.events_rejected.labels("corrupt_spool_record").inc()
                continue
            batches.append((record.received, record.key))
            if record.beacons:
                beacons += record.beacons
            if record.rows:
                for table, rows in record.rows.items():
                    _join(tables, table, to_columns(table, rows))
            if record.columns:
                for table, columns in record.columns.items():
                    _join(tables, table, columns)
            if record.column_documents:
                for table, document in record.column_documents.items():
                    flush.column_documents.setdefault(table, []).append(document)
        started = time.perf_counter()
        written = self.backend.write(flush)
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.flush_rows.inc(written)
        self.checkpoint = flush.checkpoint
        self.spool.commit(self.checkpoint)
        return written

    def _isolate(self, records: list[tuple[int, bytes]]) -> int:
        """Write records one by one; set aside the ones that fail alone."""
        written = 0
        failed: list[tuple[int, bytes]] = []
        for seq, payload in records:
            try:
                written += self._write([(seq, payload)])
            except Exception:
                if written == 0 and len(failed) == len(records) - 1:
                    raise  # every record failed: storage itself is failing
                failed.append((seq, payload))
                if written:  # others succeed: this one is poison
                    self._quarantine(failed)
                    failed = []
                continue
            if failed:
                self._quarantine(failed)
                failed = []
        self._failures = 0
        return written

    def _quarantine(self, records: list[tuple[int, bytes]]) -> None:
        for seq, payload in records:
            if self.quarantine_dir is not None:
                self.quarantine_dir.mkdir(parents=True, exist_ok=True)
                (self.quarantine_dir / f"{seq:020d}.msgpack").write_bytes(payload)
            log.error("spool record %d cannot be stored; set aside in quarantine", seq)
            self.quarantined += 1
            self.metrics.writer_quarantined.inc()
            # skip past it, keeping the checkpoint monotonic
            if seq > self.checkpoint:
                self.backend.write(Flush(checkpoint=seq))
                self.checkpoint = seq
                self.spool.commit(seq)

    def maintain(self, force: bool = False) -> None:
        """Compaction and retention, when they are due."""
        now = time.monotonic()
        if force or now - self._last_compact >= self.compact_every_s:
            self._last_compact = now
            self.backend.compact()
        if force or now - self._last_retention >= self.retention_every_s:
            self._last_retention = now
            self.backend.enforce_retention(self.clock())

    def _run(self) -> None:
        if sys.platform == "linux":  # elsewhere PRIO_PROCESS would take the whole process
            tid = threading.get_native_id()
            with contextlib.suppress(OSError):
                nice = os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE
                os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
        backoff = 0.05
        previous = time.monotonic()  # when the last flush started
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                flushed = self.flush_once()
                self.maintain()  # when due, also while the spool never empties
                backoff = 0.05
                if flushed < 0:
                    self.spool.wait(0.25)
                    continue
                if not self._full:  # let the next flush gather more records
                    self._gather(started + self.window(flushed, started - previous))
                previous = started
            except Exception:
                self.metrics.writer_errors.inc()
                log.exception("storage write failed; retrying in %.2fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def window(self, rows: int, interval_s: float) -> float:
        """Seconds from the start of a flush of ``rows`` rows, ``interval_s`` after the
        one before it, to the start of the next: long enough for about ``flush_rows``
        rows to gather at that pace, between ``batch_window_s`` and ``max_window_s``."""
        pace = rows / max(interval_s, self.batch_window_s)
        if pace * self.max_window_s <= self.flush_rows:
            return self.max_window_s
        return min(self.max_window_s, max(self.batch_window_s, self.flush_rows / pace))

    def _gather(self, until: float) -> None:
        """Wait until the monotonic time ``until``, or less: until the spool holds a
        whole flush's budget of bytes, or the writer stops."""
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0 or self.spool.stats().bytes >= self.max_bytes:
                return
            self._stop.wait(min(left, 0.05))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="perfpulse-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then write whatever is still in the spool."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.drain()
        self.maintain(force=True)
