"""Cache: the hit ratio of every cache over time, and per cache and operation the
hit ratio, calls and latency, all from the ``cache.duration`` rollups (whose
outcome says hit, miss or not a read).

The hit ratio counts reads only: hits / (hits + misses); writes and evictions
count as calls but not in the ratio.
"""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG
from perfpulse.web.charts import split_chart
from perfpulse.web.pages import PageContext

QS = "0.5,0.95"


def _cache(key: dict[str, Any]) -> str:
    return str(key.get("cache") or "(none)")


def _row(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "cache": g["key"].get("cache"),
        "op": g["key"].get("op"),
        "count": g["count"],
        "hit_ratio": g.get("hit_ratio"),
        "p50": g["quantiles"]["0.5"],
        "p95": g["quantiles"]["0.95"],
    }


def build(ctx: PageContext) -> dict[str, Any]:
    view, m = ctx.view, CATALOG["cache.duration"]
    per_cache = ctx.query.percentiles(view.params(m, metric=m.name, by="cache", q=QS))
    per_op = ctx.query.percentiles(view.params(m, metric=m.name, by="cache,op", q=QS))
    series = ctx.query.timeseries(
        view.params(m, metric=m.name, by="cache", q="0.95", step=str(view.step))
    )
    return {
        "caches": [_row(g) for g in per_cache["groups"]],
        "ops": [_row(g) for g in per_op["groups"]],
        "charts": [
            split_chart("Hit ratio", "ratio", series, lambda p: p["hit_ratio"], _cache),
            split_chart("Calls", "req/s", series, lambda p: p["rate"], _cache),
            split_chart("Latency p95", "ms", series, lambda p: p["quantiles"]["0.95"], _cache),
        ],
    }
