"""The writer: spool → storage exactly once, and one bad record cannot stall ingest."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from perfpulse.model.rows import LAYOUTS, RECORD_ENCODER, SpoolRecord, to_columns
from perfpulse.spool import MemorySpool
from perfpulse.store.base import Flush
from perfpulse.store.duckdb.backend import DuckDBBackend
from perfpulse.store.writer import WRITER_NICE, Writer
from perfpulse.telemetry import CollectorMetrics

NOW = 1_790_000_000.0


def http_rows(key: str, n: int) -> list[tuple[object, ...]]:
    rows = []
    for i in range(n):
        row = dict.fromkeys(name for name, _ in LAYOUTS["http"])
        row.update(
            ts=NOW,
            service="s",
            environment="p",
            release="",
            host="",
            route="/r",
            method="GET",
            status=200,
            duration_ms=float(i + 1),
            request_id=f"{key}-{i}",
        )
        rows.append(tuple(row.values()))
    return rows


def record(key: str, n: int) -> bytes:
    columns = {"http": to_columns("http", http_rows(key, n))}
    return RECORD_ENCODER.encode(SpoolRecord(key=key, received=NOW, columns=columns))


def fill(spool: MemorySpool, payloads: list[bytes]) -> None:
    async def go() -> None:
        for p in payloads:
            await spool.append(p)

    asyncio.run(go())


class Flaky(DuckDBBackend):
    """A real backend that fails whenever a flush holds a poisoned key (or always)."""

    def __init__(self, poison: str | None = None, always: bool = False) -> None:
        super().__init__(None)
        self.poison, self.always, self.calls = poison, always, 0

    def write(self, flush: Flush) -> int:
        self.calls += 1
        if self.always or any(key == self.poison for _, key in flush.batches):
            raise OSError("simulated storage failure")
        return super().write(flush)


def stored(db: DuckDBBackend) -> list[str]:
    return sorted(r[0] for r in db._cursor().execute("SELECT request_id FROM http").fetchall())


def test_drain_stores_every_record_once_and_moves_the_checkpoint() -> None:
    spool, db = MemorySpool(), DuckDBBackend(None)
    fill(spool, [record("a", 2), record("b", 3)])
    writer = Writer(spool, db, CollectorMetrics())
    assert writer.drain() == 5
    assert db.checkpoint() == 2
    assert spool.stats().depth == 0
    assert writer.drain() == 0  # nothing twice
    assert stored(db) == ["a-0", "a-1", "b-0", "b-1", "b-2"]
    assert sorted(db.recent_batches(0)) == ["a", "b"]


def test_records_of_rows_columns_or_both_are_stored() -> None:
    spool, db = MemorySpool(), DuckDBBackend(None)
    rows = RECORD_ENCODER.encode(
        SpoolRecord(key="r", received=NOW, rows={"http": http_rows("r", 2)})
    )
    both = SpoolRecord(
        key="b",
        received=NOW,
        rows={"http": http_rows("b-row", 1)},
        columns={"http": to_columns("http", http_rows("b-col", 1))},
    )
    fill(spool, [rows, record("c", 1), RECORD_ENCODER.encode(both)])
    assert Writer(spool, db, CollectorMetrics()).drain() == 5
    assert stored(db) == ["b-col-0", "b-row-0", "c-0", "r-0", "r-1"]


def test_a_poison_record_is_quarantined_and_the_rest_stored(tmp_path: Path) -> None:
    spool, db = MemorySpool(), Flaky(poison="bad")
    fill(spool, [record("a", 1), record("bad", 1), record("c", 1)])
    metrics = CollectorMetrics()
    writer = Writer(spool, db, metrics, quarantine_dir=tmp_path / "q")
    for _ in range(3):
        with pytest.raises(OSError):
            writer.flush_once()
    assert stored(db) == []
    assert writer.drain() == 2
    assert stored(db) == ["a-0", "c-0"]
    assert writer.quarantined == 1
    assert [p.name for p in (tmp_path / "q").iterdir()] == [f"{2:020d}.msgpack"]
    assert db.checkpoint() == 3


def test_a_failing_storage_keeps_every_record_for_later() -> None:
    spool, db = MemorySpool(), Flaky(always=True)
    fill(spool, [record("a", 1), record("b", 1)])
    writer = Writer(spool, db, CollectorMetrics())
    for _ in range(5):
        with pytest.raises(OSError):
            writer.flush_once()
    assert writer.quarantined == 0
    assert spool.stats().depth == 2
    db.always = False
    assert writer.drain() == 2
    assert stored(db) == ["a-0", "b-0"]


def test_a_value_of_the_wrong_type_fails_its_record_alone_and_nothing_is_half_stored(
    tmp_path: Path,
) -> None:
    """The Arrow columns refuse a float in an integer column (no silent truncation):
    that record's flush rolls back whole, then it alone is set aside."""
    spool, db = MemorySpool(), DuckDBBackend(None)
    bad = http_rows("bad", 2)
    status = [name for name, _ in LAYOUTS["http"]].index("status")
    bad[1] = (*bad[1][:status], 200.5, *bad[1][status + 1 :])
    wrong = RECORD_ENCODER.encode(SpoolRecord(key="bad", received=NOW, rows={"http": bad}))
    fill(spool, [record("a", 1), wrong, record("c", 1)])
    writer = Writer(spool, db, CollectorMetrics(), quarantine_dir=tmp_path / "q")
    for _ in range(3):
        with pytest.raises(ValueError):
            writer.flush_once()
    assert stored(db) == []  # the whole flush rolled back, "bad-0" too
    assert writer.drain() == 2
    assert stored(db) == ["a-0", "c-0"]
    assert writer.quarantined == 1
    assert db.checkpoint() == 3


@pytest.mark.skipif(sys.platform != "linux", reason="threads have their own niceness on Linux")
def test_the_writer_thread_runs_nicer_than_the_event_loop(tmp_path: Path) -> None:
    """Ingest is answered first when CPU is short; storage catches up from the spool."""
    spool, db = MemorySpool(), DuckDBBackend(None)
    fill(spool, [record("a", 1)])
    writer = Writer(spool, db, CollectorMetrics())
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while db.checkpoint() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.checkpoint() == 1  # it ran and stored the record
        assert writer._thread is not None and writer._thread.native_id is not None
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        theirs = os.getpriority(os.PRIO_PROCESS, writer._thread.native_id)
        assert theirs == min(mine + WRITER_NICE, 19)
    finally:
        writer.stop()


def test_the_window_lets_about_a_flushs_worth_of_rows_gather() -> None:
    """Under light load a flush's fixed price is paid at most every max_window_s;
    under heavy load the writer flushes every batch_window_s, as before."""
    writer = Writer(MemorySpool(), DuckDBBackend(None), CollectorMetrics())
    assert (writer.batch_window_s, writer.max_window_s, writer.flush_rows) == (0.25, 2.0, 2500)
    assert writer.window(rows=12, interval_s=0.25) == 2.0  # a beacon or so a flush
    assert writer.window(rows=12, interval_s=3600.0) == 2.0  # the first after a quiet hour
    assert writer.window(rows=0, interval_s=0.25) == 2.0  # records that held no rows
    assert writer.window(rows=1250, interval_s=1.0) == pytest.approx(2.0)  # 1,250 rows/s
    assert writer.window(rows=2500, interval_s=1.0) == pytest.approx(1.0)  # 2,500 rows/s
    assert writer.window(rows=5000, interval_s=0.5) == pytest.approx(0.25)  # 10,000 rows/s
    assert writer.window(rows=50_000, interval_s=0.3) == 0.25  # beacons at full load
    # a flush that came sooner than batch_window_s after the last is read at that window
    assert writer.window(rows=2500, interval_s=0.01) == 0.25


def test_a_light_load_is_stored_in_few_flushes_and_a_surge_is_not_kept_waiting(
    tmp_path: Path,
) -> None:
    spool, db = MemorySpool(), DuckDBBackend(None)
    writer = Writer(spool, db, CollectorMetrics(), max_window_s=2.0, max_bytes=64 << 10)
    flushes: list[int] = []
    write = db.write

    def counted(flush: Flush) -> int:
        flushes.append(len(flush.batches))
        return write(flush)

    db.write = counted  # type: ignore[method-assign]
    writer.start()
    try:
        for i in range(12):  # 12 records of one row over 1.2 s: light
            fill(spool, [record(f"light{i}", 1)])
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while db.checkpoint() != 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.checkpoint() == 12
        assert len(flushes) <= 3  # the first at once, then about one a max_window_s
        light = len(flushes)
        # a surge past a flush's byte budget is written without waiting out the window
        started = time.monotonic()
        fill(spool, [record(f"surge{i}", 200) for i in range(10)])
        while db.checkpoint() != 22 and time.monotonic() < started + 5:
            time.sleep(0.01)
        assert db.checkpoint() == 22
        assert time.monotonic() - started < 1.5
        assert len(flushes) > light
        assert len(stored(db)) == 12 + 10 * 200
    finally:
        writer.stop()


def test_a_writer_behind_takes_bigger_flushes_and_comes_back_to_its_budget() -> None:
    """Each flush has a fixed price, so a writer that fills its budget takes twice
    as much the next time, up to ``max_growth`` times; while its flushes take more
    than the budget given, it keeps the grown one; once one fits the budget given,
    that is its budget again."""
    spool, db = MemorySpool(), DuckDBBackend(None)
    fill(spool, [record(f"b{i}", 2) for i in range(100)])
    writer = Writer(spool, db, CollectorMetrics(), max_records=10, max_growth=4)
    sizes = []
    while (rows := writer.flush_once()) >= 0:
        sizes.append(rows // 2)
    assert sizes == [10, 20, 40, 30]
    assert writer.growth == 4  # 30 is more than the budget given: still behind
    fill(spool, [record(f"c{i}", 2) for i in range(25)])
    assert writer.flush_once() == 2 * 25  # all of it, in one flush
    assert writer.growth == 4
    fill(spool, [record(f"d{i}", 2) for i in range(25)])
    fill(spool, [record(f"e{i}", 2) for i in range(7)])
    assert writer.flush_once() == 2 * 32
    fill(spool, [record(f"f{i}", 2) for i in range(25)])
    writer.flush_once()
    assert writer.flush_once() < 0
    fill(spool, [record(f"g{i}", 2) for i in range(7)])
    assert writer.flush_once() == 2 * 7  # caught up: back to the budget
    assert writer.growth == 1
    fill(spool, [record(f"h{i}", 2) for i in range(25)])
    assert writer.flush_once() == 2 * 10
    count = db.connection().execute("SELECT count(*) FROM http").fetchall()
    assert count == [(2 * (100 + 25 + 32 + 25 + 7 + 10),)]
