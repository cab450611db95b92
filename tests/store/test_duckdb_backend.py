"""The DuckDB backend: rollups answer exactly what the raw rows would."""

from __future__ import annotations

import math
import random
from pathlib import Path

import duckdb
import pytest

from perfpulse.model.catalog import CATALOG
from perfpulse.model.rows import LAYOUTS, to_columns
from perfpulse.sketch import Sketch
from perfpulse.store.base import Flush, SketchQuery
from perfpulse.store.duckdb.backend import ROW_GROUP_SIZE, SMALL_FLUSH_BYTES, DuckDBBackend
from perfpulse.store.retention import Retention

HTTP = CATALOG["http.server.duration"]
NOW = 1_790_000_000.0  # a fixed clock: 2026-09-21


def http_row(
    ts: float, route: str, duration: float, status: int = 200, service: str = "api"
) -> tuple[object, ...]:
    row = dict.fromkeys(name for name, _ in LAYOUTS["http"])
    row.update(
        ts=ts,
        service=service,
        environment="production",
        release="1.0",
        host="h1",
        route=route,
        method="GET",
        status=status,
        duration_ms=duration,
    )
    return tuple(row.values())


def load(db: DuckDBBackend, rows: list[tuple[object, ...]], flushes: int = 5) -> None:
    step = math.ceil(len(rows) / flushes)
    for i in range(flushes):
        db.write(
            Flush(
                tables={"http": to_columns("http", rows[i * step : (i + 1) * step])},
                checkpoint=i + 1,
            )
        )


@pytest.fixture
def data() -> list[tuple[object, ...]]:
    rng = random.Random(5)
    routes = [f"/r{i}" for i in range(7)]
    return [
        http_row(
            NOW - rng.uniform(0, 6 * 3600),
            rng.choice(routes),
            rng.lognormvariate(3, 0.8),
            status=500 if rng.random() < 0.05 else 200,
        )
        for _ in range(6000)
    ]


def reference(
    rows: list[tuple[object, ...]], start: float, end: float, qs: tuple[float, ...]
) -> dict[str, tuple[int, dict[float, float | None]]]:
    sketches: dict[str, Sketch] = {}
    for r in rows:
        ts, route, duration = float(r[0]), str(r[5]), float(r[8])  # type: ignore[arg-type]
        if start <= ts < end:
            sketches.setdefault(route, Sketch()).add(duration)
    return {k: (s.count, s.quantiles(qs)) for k, s in sketches.items()}


def test_rollups_and_raw_parts_answer_like_the_reference(data: list[tuple[object, ...]]) -> None:
    db = DuckDBBackend(None)
    load(db, data)
    qs = (0.5, 0.9, 0.99)
    # not aligned to hours or minutes: hour, minute and raw parts all answer
    start, end = NOW - 5 * 3600 - 1234.5, NOW - 77.25
    q = SketchQuery(metric=HTTP, start=start, end=end, by=("route",), qs=qs)
    groups, plan = db.sketch(q)
    assert plan.hour and plan.minute and plan.raw
    want = reference(data, start, end, qs)
    got = {g.key[0]: (g.count, g.quantiles) for g in groups}
    assert got == want
    # and the same answer after compaction, with fewer rollup rows
    before = db.row_counts()["rollup_1m"]
    rows_of = "SELECT ts, series, buckets, counts, outcomes, outcome_counts, sum FROM rollup_1m"
    single = {
        repr(r)
        for r in db._cursor()
        .execute(f"{rows_of} QUALIFY count(*) OVER (PARTITION BY ts, series) = 1")
        .fetchall()
    }
    assert single  # the data has slots where a series has one row, and slots with several
    assert db.compact() > 0
    assert db.row_counts()["rollup_1m"] < before
    assert {g.key[0]: (g.count, g.quantiles) for g in db.sketch(q)[0]} == want
    # one row per series and slot now; the series that had one kept it as it was
    after = db._cursor().execute(rows_of).fetchall()
    assert len({(r[0], r[1]) for r in after}) == len(after)
    assert single <= {repr(r) for r in after}


def test_raw_only_dimension_reads_raw_rows(data: list[tuple[object, ...]]) -> None:
    db = DuckDBBackend(None)
    load(db, data)
    q = SketchQuery(metric=HTTP, start=NOW - 7 * 3600, end=NOW + 1, by=("status",), qs=(0.5,))
    groups, plan = db.sketch(q)
    assert plan.raw and not plan.minute and not plan.hour
    counts = {g.key[0]: g.count for g in groups}
    assert counts["500"] == sum(1 for r in data if r[7] == 500)
    assert counts["200"] + counts["500"] == len(data)


def test_error_outcomes_and_filters(data: list[tuple[object, ...]]) -> None:
    db = DuckDBBackend(None)
    load(db, data)
    q = SketchQuery(metric=HTTP, start=NOW - 7 * 3600, end=NOW + 1, filters=(("route", "/r3"),))
    (group,), _ = db.sketch(q)
    mine = [r for r in data if r[5] == "/r3"]
    assert group.count == len(mine)
    assert group.outcomes.get(5, 0) == sum(1 for r in mine if r[7] == 500)
    assert group.sum == pytest.approx(sum(float(r[8]) for r in mine))  # type: ignore[arg-type]


def test_timeseries_steps_sum_to_the_whole(data: list[tuple[object, ...]]) -> None:
    db = DuckDBBackend(None)
    load(db, data)
    end = math.floor(NOW / 3600) * 3600  # steps are aligned to multiples of the step
    start = end - 5 * 3600
    q = SketchQuery(metric=HTTP, start=start, end=end, step=3600, qs=(0.5,))
    groups, plan = db.sketch(q)
    assert plan.hour
    assert [g.time for g in groups] == [start + i * 3600 for i in range(5)]
    assert sum(g.count for g in groups) == sum(1 for r in data if start <= float(r[0]) < end)  # type: ignore[arg-type]


def test_file_survives_reopen_and_keeps_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    db = DuckDBBackend(path)
    db.write(
        Flush(
            tables={"http": to_columns("http", [http_row(NOW, "/a", 5.0)])},
            batches=[(NOW, "ingest:b1")],
            checkpoint=42,
        )
    )
    db.close()
    db = DuckDBBackend(path)
    assert db.checkpoint() == 42
    assert db.recent_batches(NOW - 1) == ["ingest:b1"]
    assert db.known_routes() == {"api": {"/a"}}
    db.close()


def test_retention_deletes_only_expired_rows() -> None:
    db = DuckDBBackend(None, retention=Retention(raw_s=3600, rollup_s=7200))
    rows = [
        http_row(NOW - 10, "/new", 1.0),
        http_row(NOW - 5000, "/old", 1.0),
        http_row(NOW - 9000, "/older", 1.0),
    ]
    db.write(Flush(tables={"http": to_columns("http", rows)}, checkpoint=1))
    deleted = db.enforce_retention(NOW)
    assert deleted["http"] == 2
    assert deleted["rollup_1m"] == 1  # only the 9000 s old minute is past 7200 s
    counts = db.row_counts()
    assert counts["http"] == 1


def test_failed_flush_stores_nothing() -> None:
    db = DuckDBBackend(None)
    good = http_row(NOW, "/a", 5.0)
    bad = (*good[:-1], 123)  # trace_id must be a string: the Arrow conversion fails
    with pytest.raises(Exception):  # noqa: B017 - any failure will do; what matters is below
        db.write(
            Flush(
                tables={"http": to_columns("http", [good]), "db": to_columns("http", [bad])},
                batches=[(NOW, "ingest:x")],
                checkpoint=9,
            )
        )
    assert db.row_counts()["http"] == 0
    assert db.checkpoint() == 0
    assert db.recent_batches(0) == []


def test_sql_bucket_matches_python_bucket() -> None:
    from perfpulse.sketch import bucket_of
    from perfpulse.store.duckdb.sql import bucket_expr

    values = [0.0, 1e-10, 3e-7, 0.1, 1.0, 1.02, 99.99, 2500.0, 123456.789, -4.2]
    con = duckdb.connect()
    got = [
        con.execute(f"SELECT {bucket_expr('v')} FROM (SELECT ?::DOUBLE AS v)", [v]).fetchone()[0]
        for v in values
    ]  # type: ignore[index]
    assert got == [bucket_of(v) for v in values]


def test_a_flush_stores_missing_values_as_null_and_every_value_exactly() -> None:
    db = DuckDBBackend(None)
    rows = [
        http_row(NOW, "/a", 5.0),
        (*http_row(NOW + 1, "/b", 7.5)[:9], 2**40, None, 1.25, None, None, 1, "E", "r", "t"),
    ]
    reads = [
        (NOW, "api", "production", "1.0", "h1", "redis", "get", hit, 0.5, 1, None, None)
        for hit in (True, None, False)
    ]
    db.write(
        Flush(
            tables={"http": to_columns("http", rows), "cache": to_columns("cache", reads)},
            checkpoint=1,
        )
    )
    assert db._cursor().execute("SELECT hit FROM cache").fetchall() == [(True,), (None,), (False,)]
    got = db._cursor().execute(
        "SELECT route, duration_ms, request_bytes, response_bytes, db_time_ms, cache_hits, "
        "cache_misses, exception, request_id, trace_id FROM http ORDER BY ts"
    )
    assert got.fetchall() == [
        ("/a", 5.0, None, None, None, None, None, None, None, None),
        ("/b", 7.5, 2**40, None, 1.25, None, 1, "E", "r", "t"),
    ]


def _limit(db: DuckDBBackend) -> str:
    row = db._cursor().execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None
    return str(row[0])


def _threads(db: DuckDBBackend) -> int:
    row = db._cursor().execute("SELECT current_setting('threads')").fetchone()
    assert row is not None
    return int(row[0])


def test_small_flushes_run_on_one_thread_and_big_ones_on_every_thread() -> None:
    db = DuckDBBackend(None, threads=2)
    seen: list[int] = []
    write = db._write

    def spied(flush: Flush) -> int:
        seen.append(_threads(db))
        return write(flush)

    db._write = spied  # type: ignore[method-assign]
    small = [http_row(NOW - i, "/small", 5.0) for i in range(100)]
    big = [http_row(NOW - i / 100, "/big", 5.0) for i in range(SMALL_FLUSH_BYTES // 64)]
    db.write(Flush(tables={"http": to_columns("http", small)}, checkpoint=1))
    db.write(Flush(tables={"http": to_columns("http", big)}, checkpoint=2))
    assert seen == [1, 2]
    assert _threads(db) == 2 and not db.memory.narrowed  # back once the flush is done
    assert db.row_counts()["http"] == len(small) + len(big)


@pytest.mark.parametrize("burst", ["512MB", None])
def test_a_read_gets_every_thread_even_while_a_small_flush_runs(burst: str | None) -> None:
    db = DuckDBBackend(None, threads=2, burst_memory_limit=burst)
    with db.memory.narrow():
        assert _threads(db) == 1
        with db.memory.room():  # a read starts: every thread again, at once
            assert _threads(db) == 2
            with db.memory.narrow():  # a write while a read runs is not narrowed
                assert _threads(db) == 2
        assert _threads(db) == 2
    assert _threads(db) == 2 and not db.memory.narrowed
    assert db.memory.raised == (burst is not None)  # one fixed limit stays as it is


def test_row_counts_that_meet_a_full_memory_limit_are_asked_again_under_the_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``/metrics`` shows: a count that finds DuckDB's steady limit taken by a
    flush does not fail the scrape (the failure is injected: a flush holding the
    limit is a race)."""
    db = DuckDBBackend(None)
    rows = [http_row(NOW - i, "/r", 5.0) for i in range(10)]
    db.write(Flush(tables={"http": to_columns("http", rows)}, checkpoint=1))
    counts = db._row_counts
    failures = iter([duckdb.OutOfMemoryException("failed to allocate data of size 4.0 KiB")])

    def full_once() -> dict[str, int]:
        for exc in failures:
            raise exc
        return counts()

    monkeypatch.setattr(db, "_row_counts", full_once)
    assert db.row_counts()["http"] == 10
    assert db.memory.raised  # asked again under the burst limit
    assert next(failures, None) is None


def test_reads_and_big_writes_get_the_burst_limit_and_ingest_the_steady_one() -> None:
    """A flush of 40,000 rows over 3,000 routes does not fit in 16 MB of DuckDB
    memory (nor does a read of them by route): with one fixed limit it fails, with
    a burst limit it is tried again under it and succeeds; once nothing needs the
    room, the limit goes back to the steady one."""
    rng = random.Random(5)
    rows = [
        http_row(NOW - rng.uniform(0, 3600), f"/r{rng.randrange(3000)}", rng.lognormvariate(3, 1))
        for _ in range(200_000)
    ]
    fixed = DuckDBBackend(None, memory_limit="16MB", burst_memory_limit=None)
    with pytest.raises(duckdb.OutOfMemoryException):
        load(fixed, rows)
    fixed.close()

    db = DuckDBBackend(None, memory_limit="16MB", burst_memory_limit="512MB")
    steady = _limit(db)
    load(db, rows)  # every flush ran out of 16 MB and was written again under the burst
    assert db.row_counts()["http"] == len(rows)
    assert db.memory.raised  # within linger_s of the last big write
    with db.memory.room():
        burst = _limit(db)
    assert burst != steady
    q = SketchQuery(metric=HTTP, start=NOW - 3 * 3600, end=NOW + 1, by=("route",), qs=(0.5,))
    groups, _ = db.sketch(q)
    assert sum(g.count for g in groups) == len(rows)
    db.memory.relax()
    assert _limit(db) == burst  # a read ended less than linger_s ago: still raised
    db.memory.linger_s = 0.0
    db.memory.relax()
    assert not db.memory.raised and _limit(db) == steady
    db.close()


def _undo_bytes(db: DuckDBBackend) -> int:
    row = db.connection().execute(
        "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'TRANSACTION'"
    )
    return int(row.fetchall()[0][0])


def test_reads_leave_no_transaction_open_that_pins_later_writes(tmp_path: Path) -> None:
    """Every read finishes its result: a read cursor that kept one half read would
    keep its transaction open, and DuckDB would hold the undo data of every later
    flush in memory until that cursor ran again."""
    db = DuckDBBackend(tmp_path / "p.duckdb")
    db.checkpoint()  # on this thread's read cursor, as the writer does at start
    db.row_counts()  # ... and as a /metrics scrape does
    rows = [http_row(NOW - i, f"/r{i % 50}", 5.0 + i % 7) for i in range(6_000)]
    load(db, rows, flushes=60)
    assert _undo_bytes(db) < 1 << 20
    assert db.checkpoint() == 60
    db.close()


def test_tables_are_stored_in_small_row_groups(tmp_path: Path) -> None:
    """A checkpoint rewrites a table's last row group whole; small ones keep its
    memory peak small."""
    db = DuckDBBackend(tmp_path / "p.duckdb")
    load(db, [http_row(NOW - i / 10, "/a", 5.0) for i in range(3 * ROW_GROUP_SIZE)], flushes=3)
    db.close()
    con = duckdb.connect(str(tmp_path / "p.duckdb"), read_only=True)
    groups = con.execute(
        "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('http')"
    ).fetchall()[0][0]
    con.close()
    assert groups == 3
