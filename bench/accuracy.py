"""Accuracy: every quantile read from the rollups against the exact value.

Five shapes of data — lognormal latencies, a bimodal mix (cache hits and
misses), a heavy-tailed Pareto, integer milliseconds with many ties and zeros,
and CLS-like values with many exact zeros — are written through
``DuckDBBackend.write`` (flushes of 20,000 rows, in time order, over a little
more than three hours) and read back through ``Query.percentiles`` for a window
that starts and ends inside a minute, so whole hours (``rollup_1h``), edge
minutes (``rollup_1m``) and edge raw rows all answer. Each read is checked
before and after ``compact()``.

Exact, in the same run on the same DuckDB file and window: ``quantile_disc``
over the raw values — the nearest-rank definition perfpulse uses. The target:
every quantile within 1 % relative error (an exact zero must read as zero).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Report, Result, table
from bench.workload import row_maker
from perfpulse.model.catalog import VITALS
from perfpulse.model.rows import to_columns
from perfpulse.query.service import Query
from perfpulse.store.base import Flush
from perfpulse.store.duckdb.backend import DuckDBBackend

NAME = "accuracy"
TITLE = "Quantile accuracy"
QS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
BOUND = 0.01
MEMORY_LIMIT = "512MB"


def _lognormal(rng: random.Random) -> float:
    return 120.0 * math.exp(rng.gauss(0, 1.0))


def _bimodal(rng: random.Random) -> float:
    if rng.random() < 0.7:
        return 25.0 * math.exp(rng.gauss(0, 0.25))
    return 900.0 * math.exp(rng.gauss(0, 0.3))


def _pareto(rng: random.Random) -> float:
    return 5.0 * rng.paretovariate(1.16)


def _integer_ms(rng: random.Random) -> float:
    return float(round(8.0 * math.exp(rng.gauss(0, 1.2))))


def _cls(rng: random.Random) -> float:
    u = rng.random()
    if u < 0.55:
        return 0.0
    if u < 0.85:
        return 0.02 * math.exp(rng.gauss(0, 1.0))
    return 0.15 * math.exp(rng.gauss(0, 0.8))


# name -> (sampler, metric, raw table, value column, extra SQL condition)
SHAPES: dict[str, tuple[Callable[[random.Random], float], str, str, str, str]] = {
    "lognormal (median 120 ms, σ 1)": (
        _lognormal,
        "http.server.duration",
        "http",
        "duration_ms",
        "",
    ),
    "bimodal (70 % ~25 ms, 30 % ~900 ms)": (
        _bimodal,
        "http.server.duration",
        "http",
        "duration_ms",
        "",
    ),
    "Pareto (x_m 5 ms, α 1.16)": (_pareto, "http.server.duration", "http", "duration_ms", ""),
    "integer ms with ties and zeros": (
        _integer_ms,
        "http.server.duration",
        "http",
        "duration_ms",
        "",
    ),
    "CLS-like (55 % exact zeros)": (_cls, "rum.cls", "rum_vital", "value", "AND name = 'CLS'"),
}


def _rows(table_name: str, values: list[float], ts: list[float]) -> list[tuple[object, ...]]:
    if table_name == "http":
        make = row_maker(
            "http",
            "ts",
            "service",
            "environment",
            "release",
            "host",
            "route",
            "method",
            "status",
            "duration_ms",
        )
        return [
            make(t, "acc", "production", "1", "h", "/r", "GET", 200, v)
            for t, v in zip(ts, values, strict=True)
        ]
    make = row_maker(
        "rum_vital",
        "ts",
        "view_id",
        "service",
        "environment",
        "release",
        "page",
        "device",
        "browser",
        "connection",
        "name",
        "value",
        "rating",
    )
    cls = VITALS["CLS"]
    return [
        make(
            t,
            f"v{i}",
            "acc",
            "production",
            "1",
            "/",
            "desktop",
            "chrome",
            "4g",
            "CLS",
            v,
            cls.rate(v),
        )
        for i, (t, v) in enumerate(zip(ts, values, strict=True))
    ]


def _rel(got: float | None, exact: float) -> float:
    if got is None:
        return math.inf
    if exact == 0:
        return 0.0 if got == 0 else math.inf
    return abs(got - exact) / abs(exact)


def _check(name: str, n: int, seed: int, tmp: Path) -> dict[str, Any]:
    sampler, metric, table_name, column, extra = SHAPES[name]
    rng = random.Random(seed)
    hour = math.floor(time.time() / 3600) * 3600 - 5 * 3600
    lo, hi = hour - 1500.5, hour + 2 * 3600 + 1300.7  # the data
    frm, to = hour - 1400.25, hour + 2 * 3600 + 1200.6  # the window: inside minutes
    ts = sorted(rng.uniform(lo, hi) for _ in range(n))
    values = [sampler(rng) for _ in range(n)]
    path = tmp / f"acc-{seed}.duckdb"
    backend = DuckDBBackend(path, memory_limit=MEMORY_LIMIT)
    rows = _rows(table_name, values, ts)
    for i in range(0, n, 20_000):
        backend.write(
            Flush(
                tables={table_name: to_columns(table_name, rows[i : i + 20_000])},
                checkpoint=i + 1,
            )
        )
    params = {
        "metric": metric,
        "q": ",".join(map(str, QS)),
        "from": repr(frm),
        "to": repr(to),
        "explain": "1",
    }
    query = Query(backend)
    before = query.percentiles(params)
    backend.compact()
    started = time.perf_counter()
    after = query.percentiles(params)
    read_ms = (time.perf_counter() - started) * 1e3
    con = backend.connection()  # DuckDB attaches a file once per process
    started = time.perf_counter()
    count, exact = con.execute(
        f"SELECT count(*), quantile_disc({column}, {list(QS)}) FROM {table_name} "
        f"WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?) {extra}",
        [round(frm * 1e6), round(to * 1e6)],
    ).fetchone()  # type: ignore[misc]
    exact_ms = (time.perf_counter() - started) * 1e3
    con.close()
    backend.close()
    out: dict[str, Any] = {"count": count, "exact": exact, "plan": after["plan"]}
    out["read_ms"], out["exact_ms"] = read_ms, exact_ms
    for label, answer in (("before", before), ("after", after)):
        (group,) = answer["groups"]
        assert group["count"] == count, (name, label, group["count"], count)
        got = [group["quantiles"][str(q)] for q in QS]
        out[label] = got
        out[f"{label}_err"] = [_rel(g, e) for g, e in zip(got, exact, strict=True)]
    return out


def run(quick: bool = False) -> Report:
    n = 50_000 if quick else 300_000
    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    detail_rows = []
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-accuracy-") as tmp:
        for seed, name in enumerate(SHAPES, start=1):
            r = _check(name, n, seed, Path(tmp))
            worst = max(r["before_err"] + r["after_err"])
            i = max(range(len(QS)), key=lambda k: r["after_err"][k])
            exact_i, got_i = r["exact"][i], r["after"][i]
            report.results.append(
                Result(
                    f"{name}: largest relative error over {len(QS)} quantiles",
                    worst * 100,
                    "%",
                    "exact quantile_disc",
                    None,
                    f"≤ {BOUND:.0%}",
                    worst <= BOUND + 1e-12,
                    ratio=(got_i / exact_i) if exact_i else 1.0,
                )
            )
            plan = ", ".join(k for k in ("hour", "minute", "raw") if r["plan"][k])
            for q, e, g, err in zip(QS, r["exact"], r["after"], r["after_err"], strict=True):
                detail_rows.append([name, f"{q:g}", f"{e:.6g}", f"{g:.6g}", f"{err * 100:.3f} %"])
            detail_rows.append(
                [
                    name,
                    "–",
                    f"{r['count']:,} values in window",
                    f"plan: {plan}",
                    f"read {r['read_ms']:.0f} ms, exact {r['exact_ms']:.0f} ms",
                ]
            )
    report.details.append(
        "The ratio column is perfpulse / exact at the worst quantile. Every quantile, after "
        "compaction (before compaction the same values were read):\n\n"
        + table(["data", "q", "exact (quantile_disc)", "perfpulse", "relative error"], detail_rows)
    )
    return report
