"""Query: p50/p95/p99 of ``http.server.duration`` by route over 24 hours of
http events (10 million across 1,000 routes; ``--quick``: 1 million).

The events go through the real storage write path — ``DuckDBBackend.write``
with flushes of 50,000 rows of the ``http`` layout, in time order as a
collector would receive them, with ``compact()`` after every fourth flush (as
the writer compacts every 30 s) and at the end — into a DuckDB file that is
cached under ``$TMPDIR/perfpulse-bench/`` by its parameters and a hash of the
storage code, so a re-run starts at once. The question is asked through
``perfpulse.query.service.Query.percentiles``, the path ``GET
/api/v1/percentiles`` takes, for a 24-hour window that ends at the last event
and is aligned to neither minutes nor hours (so whole hours, edge minutes and
edge raw rows all answer).

The baseline, in the same process on the same file and window: DuckDB's exact
``quantile_cont(duration_ms, [0.5, 0.95, 0.99]) ... GROUP BY route`` over the
raw rows. Both run warm (after warm-up runs); the result is the median of 20 runs.
"""

from __future__ import annotations

import cProfile
import hashlib
import inspect
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bench.report import Report, Result, table
from bench.workload import http_rows
from perfpulse import sketch
from perfpulse.model.catalog import CATALOG
from perfpulse.model.rows import LAYOUTS, to_columns
from perfpulse.query.service import Query
from perfpulse.store.base import Flush, SketchQuery
from perfpulse.store.duckdb import sql
from perfpulse.store.duckdb.backend import (
    DEFAULT_BURST_MEMORY_LIMIT,
    DEFAULT_MEMORY_LIMIT,
    ROW_GROUP_SIZE,
    DuckDBBackend,
)

NAME = "query"
TITLE = "Query latency"
ROUTES = 1000
HOURS = 24
CHUNK = 50_000
COMPACT_EVERY = 4  # flushes between compactions (200,000 events, about 29 minutes of data)
QS = (0.5, 0.95, 0.99)
TARGET_MS = 50.0
TARGET_RATIO = 0.15
# The collector's defaults: DuckDB's limit while it only ingests, and while reads run.
MEMORY_LIMIT = DEFAULT_MEMORY_LIMIT
BURST_MEMORY_LIMIT = DEFAULT_BURST_MEMORY_LIMIT


def _code_hash() -> str:
    """Changes when the storage code that shapes the file changes."""
    parts = [
        repr(sql.schema()),
        sql.flush_rollup(["http"]) or "",
        sql.INSERT_1M_FROM_FLUSH,
        repr(LAYOUTS["http"]),
        repr((sketch.ALPHA, sketch.ZERO_BUCKET)),
        inspect.getsource(DuckDBBackend.__init__),
        str(ROW_GROUP_SIZE),
        inspect.getsource(DuckDBBackend._write),
        inspect.getsource(DuckDBBackend._compact),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def cache_dir(n: int) -> Path:
    root = Path(
        os.environ.get("PERFPULSE_BENCH_CACHE", Path(tempfile.gettempdir()) / "perfpulse-bench")
    )
    return root / f"query-{n}-{ROUTES}r-{HOURS}h-{_code_hash()}"


def build(n: int) -> dict[str, Any]:
    """The cached DuckDB file for ``n`` events (built on first use)."""
    d = cache_dir(n)
    meta_path = d / "meta.json"
    if meta_path.exists():
        return {**json.loads(meta_path.read_text()), "cached": True}
    for stale in d.parent.glob(f"query-{n}-{ROUTES}r-{HOURS}h-*"):
        shutil.rmtree(stale, ignore_errors=True)  # built by older storage code
    d.mkdir(parents=True)
    end = time.time()
    start = end - HOURS * 3600
    backend = DuckDBBackend(
        d / "perfpulse.duckdb", memory_limit=MEMORY_LIMIT, burst_memory_limit=BURST_MEMORY_LIMIT
    )
    gen_s = write_s = compact_s = 0.0
    progress: list[tuple[int, float]] = []  # (rows written, seconds of the last 20 flushes)
    window = 0.0
    t = time.perf_counter()
    for i, rows in enumerate(http_rows(n, routes=ROUTES, start=start, end=end, chunk=CHUNK)):
        t1 = time.perf_counter()
        gen_s += t1 - t
        flush = Flush(
            tables={"http": to_columns("http", rows)},
            batches=[(end, f"bench:{i}")],
            checkpoint=i + 1,
        )
        backend.write(flush)
        t = time.perf_counter()
        write_s += t - t1
        window += t - t1
        if (i + 1) % COMPACT_EVERY == 0:  # as the writer does every 30 s: small dirty sets
            t1 = time.perf_counter()
            backend.compact()
            t = time.perf_counter()
            compact_s += t - t1
        if (i + 1) % 20 == 0:
            progress.append(((i + 1) * CHUNK, window))
            print(
                f"  query data: {(i + 1) * CHUNK:,} rows, {20 * CHUNK / window:,.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )
            window = 0.0
    t1 = time.perf_counter()
    backend.compact()
    compact_s += time.perf_counter() - t1
    backend.close()
    meta = {
        "events": n,
        "start": start,
        "end": end,
        "generate_s": gen_s,
        "write_s": write_s,
        "compact_s": compact_s,
        "bytes": (d / "perfpulse.duckdb").stat().st_size,
        "progress": progress,
    }
    meta_path.write_text(json.dumps(meta))
    return {**meta, "cached": False}


def _times(f: Any, runs: int, warmup: int, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock ms of each run; ``cpu`` gets the process CPU ms (all threads)."""
    for _ in range(warmup):
        f()
    out = []
    for _ in range(runs):
        c = time.process_time()
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e3)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1e3)
    return out


def _p95(values: list[float]) -> float:
    s = sorted(values)
    return s[max(0, -(-95 * len(s) // 100) - 1)]


def run(quick: bool = False) -> Report:
    n = 1_000_000 if quick else 10_000_000
    runs, base_runs = (10, 3) if quick else (20, 10)
    meta = build(n)
    path = cache_dir(n) / "perfpulse.duckdb"
    backend = DuckDBBackend(path, memory_limit=MEMORY_LIMIT, burst_memory_limit=BURST_MEMORY_LIMIT)
    try:
        # the limit is the database's: the exact baseline reads under the burst limit
        # that perfpulse's reads raise (the same limit, for both, all the run)
        with backend.memory.room():
            return _measure(backend, path, meta, n, runs, base_runs, quick)
    finally:
        backend.close()


def _measure(
    backend: DuckDBBackend,
    path: Path,
    meta: dict[str, Any],
    n: int,
    runs: int,
    base_runs: int,
    quick: bool,
) -> Report:
    # the backend's own database (DuckDB attaches a file once per process)
    con = backend.connection()
    to = meta["end"] - 0.25
    frm = to - HOURS * 3600
    params = {
        "metric": "http.server.duration",
        "q": ",".join(map(str, QS)),
        "from": repr(frm),
        "to": repr(to),
        "by": "route",
        "explain": "1",
    }
    query = Query(backend)
    answer = query.percentiles(params)
    window = [round(frm * 1e6), round(to * 1e6)]
    where = "duration_ms IS NOT NULL AND ts >= make_timestamp(?) AND ts < make_timestamp(?)"
    exact_sql = (
        f"SELECT route, count(*), quantile_cont(duration_ms, {list(QS)}) FROM http "
        f"WHERE {where} GROUP BY route"
    )
    sq = SketchQuery(
        metric=CATALOG["http.server.duration"], start=frm, end=to, by=("route",), qs=QS
    )

    def ask() -> None:
        query.percentiles(params)

    def exact_query() -> None:
        con.execute(exact_sql, window).fetchall()

    def storage() -> None:
        backend.sketch(sq)

    # Warm up, then interleave the three so drifting load on the machine hits each alike.
    for f in (ask, ask, ask, exact_query, storage):
        f()
    ours: list[float] = []
    ours_cpu: list[float] = []
    exact: list[float] = []
    exact_cpu: list[float] = []
    duck: list[float] = []
    for i in range(runs):
        ours += _times(ask, 1, 0, ours_cpu)
        duck += _times(storage, 1, 0)
        if i % (runs // base_runs) == 0 and len(exact) < base_runs:
            exact += _times(exact_query, 1, 0, exact_cpu)

    # Sanity: our answer against the exact nearest-rank quantiles (quantile_disc).
    disc = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            f"SELECT route, count(*), quantile_disc(duration_ms, {list(QS)}) FROM http "
            f"WHERE {where} GROUP BY route",
            window,
        ).fetchall()
    }
    worst = 0.0
    for g in answer["groups"]:
        count, values = disc[g["key"]["route"]]
        assert count == g["count"], (g["key"], count, g["count"])
        for q, v in zip(QS, values, strict=True):
            got = g["quantiles"][str(q)]
            worst = max(worst, abs(got - v) / v)

    # What the tables hold, and where one query's time goes.
    counts = {}
    for t in ("http", "rollup_1m", "rollup_1h", "series"):
        try:
            counts[t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
        except duckdb.Error:
            continue
    profile = _profile(lambda: query.percentiles(params))
    con.close()

    ours_med, exact_med = statistics.median(ours), statistics.median(exact)
    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    label = f"p50/p95/p99 by route, {n / 1e6:g}M events, {ROUTES:,} routes, 24 h"
    report.results += [
        Result(
            f"{label}: median of {runs}",
            ours_med,
            "ms",
            "exact quantile_cont",
            exact_med,
            f"≤ {TARGET_MS:g} ms",
            ours_med <= TARGET_MS,
        ),
        Result(
            f"{label}: ratio to exact",
            ours_med / exact_med,
            "×",
            target=f"≤ {TARGET_RATIO}×",
            passed=ours_med / exact_med <= TARGET_RATIO,
            ratio=ours_med / exact_med,
        ),
        Result(f"{label}: p95 of {runs}", _p95(ours), "ms", "exact quantile_cont p95", _p95(exact)),
        Result(
            f"{label}: CPU time per query, all threads (median)",
            statistics.median(ours_cpu),
            "ms",
            "exact quantile_cont",
            statistics.median(exact_cpu),
        ),
        Result(
            "largest relative error vs quantile_disc (sanity)",
            worst * 100,
            "%",
            target="≤ 1 %",
            passed=worst <= 0.01 + 1e-12,
        ),
    ]
    plan = answer["plan"]
    parts = [k for k in ("hour", "minute", "raw") if plan[k]]
    report.details.append(
        table(
            ["", ""],
            [
                ["window", f"{frm:.2f} → {to:.2f} (24 h, not minute- or hour-aligned)"],
                [
                    "plan (tables that answered)",
                    ", ".join(
                        {"hour": "rollup_1h", "minute": "rollup_1m", "raw": "http (raw)"}[p]
                        for p in parts
                    ),
                ],
                ["groups answered", f"{len(answer['groups']):,}"],
                [
                    "perfpulse (Query.percentiles): median / p95 / min",
                    f"{ours_med:.1f} / {_p95(ours):.1f} / {min(ours):.1f} ms",
                ],
                [
                    "CPU time per query (all threads, median): perfpulse / exact / ratio",
                    f"{statistics.median(ours_cpu):.1f} / {statistics.median(exact_cpu):.1f} ms / "
                    f"{statistics.median(ours_cpu) / statistics.median(exact_cpu):.2f}×",
                ],
                [
                    "of which the storage call (DuckDBBackend.sketch)",
                    f"{statistics.median(duck):.1f} ms median",
                ],
                ["exact quantile_cont: median / min", f"{exact_med:.1f} / {min(exact):.1f} ms"],
                [
                    "rows (all metrics): " + " / ".join(counts),
                    " / ".join(f"{v:,}" for v in counts.values()),
                ],
                [
                    "DuckDB file",
                    f"{meta['bytes'] / 2**20:,.0f} MiB ({'cached' if meta['cached'] else 'built this run'})",
                ],
                [
                    "load: generate / write / compact",
                    f"{meta['generate_s']:.0f} / {meta['write_s']:.0f} / {meta['compact_s']:.0f} s ({n / meta['write_s']:,.0f} rows/s through DuckDBBackend.write)",
                ],
            ],
        )
    )
    report.details.append(
        "cProfile of one `Query.percentiles` call (functions by own time; DuckDB's work "
        "shows as the connection methods that run it):\n\n" + profile
    )
    report.details.append(
        f"All runs (ms): perfpulse {', '.join(f'{x:.1f}' for x in ours)}; exact {', '.join(f'{x:.0f}' for x in exact)}."
    )
    return report


def _profile(f: Any, top: int = 10) -> str:
    """cProfile of one call: the functions with the most own time."""
    prof = cProfile.Profile()
    prof.enable()
    f()
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in entries[:top]:
        where = name if filename == "~" else f"{name} ({Path(filename).name}:{line})"
        rows.append(
            [f"`{where}`", f"{calls:,}", f"{tottime * 1e3:.1f} ms", f"{cumtime * 1e3:.1f} ms"]
        )
    return table(["function", "calls", "own time", "cumulative"], rows)
