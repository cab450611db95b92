"""Database: where statement time goes, the slowest executions, N+1 patterns and
connection-pool saturation.

- statements by total time and by p95, from the ``db.query.duration`` rollups
  by fingerprint, with the mean rows from ``db.query.rows``;
- the slowest statements of the window (raw ``db`` rows), showing the redacted
  statement when the agent stored one, else the fingerprint;
- N+1 findings (raw ``n_plus_one`` rows by route and fingerprint);
- pool usage and wait over time and at p95 per pool (rollups), with the exact
  peak usage and the timeouts per pool (raw ``pool`` rows).
"""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG
from perfpulse.query.rows import rows
from perfpulse.web.charts import split_chart
from perfpulse.web.pages import PageContext, gather

TOP = 15
SLOW = 20
FINDINGS = 20
POOLS = 100


def _statement_row(g: dict[str, Any], mean_rows: dict[str | None, float | None]) -> dict[str, Any]:
    fp = g["key"]["fingerprint"]
    return {
        "fingerprint": fp,
        "count": g["count"],
        "sum": g["sum"],
        "p50": g["quantiles"]["0.5"],
        "p95": g["quantiles"]["0.95"],
        "error_ratio": g.get("error_ratio"),
        "mean_rows": mean_rows.get(fp),
    }


def statements(ctx: PageContext) -> dict[str, list[dict[str, Any]]]:
    """The top statements by total time and by p95."""
    view, m, rm = ctx.view, CATALOG["db.query.duration"], CATALOG["db.query.rows"]
    base = {"metric": m.name, "by": "fingerprint", "q": "0.5,0.95", "limit": str(TOP)}
    by_sum = ctx.query.top(view.params(m, order="sum", **base))
    by_p95 = ctx.query.top(view.params(m, order="p95", **base))
    counted = ctx.query.percentiles(view.params(rm, metric=rm.name, by="fingerprint", q="0.5"))
    mean_rows = {g["key"]["fingerprint"]: g["mean"] for g in counted["groups"]}
    return {
        "by_sum": [_statement_row(g, mean_rows) for g in by_sum["groups"]],
        "by_p95": [_statement_row(g, mean_rows) for g in by_p95["groups"]],
    }


def slow_queries(ctx: PageContext) -> list[dict[str, Any]]:
    answer = rows(
        ctx.query,
        ctx.view.params(
            None,
            source="db",
            by="fingerprint,statement,route,duration_ms,rows,error,system",
            measure="",
            order="duration_ms",
            limit=str(SLOW),
        ),
    )
    return list(answer["rows"])


def n_plus_one(ctx: PageContext) -> list[dict[str, Any]]:
    answer = rows(
        ctx.query,
        ctx.view.params(
            None,
            source="n_plus_one",
            by="route,fingerprint",
            measure="count,max:count,sum:total_ms",
            order="count",
            limit=str(FINDINGS),
        ),
    )
    return list(answer["rows"])


def _pool(key: dict[str, Any]) -> str:
    return str(key.get("pool") or "(none)")


def pools(ctx: PageContext) -> dict[str, Any]:
    """Usage and wait per pool over time and in total (rollups), with the exact
    peak usage and the timeouts from the raw samples."""
    view, step = ctx.view, str(ctx.view.step)
    usage, wait = CATALOG["db.pool.usage"], CATALOG["db.pool.sample_wait"]
    usage_ts = ctx.query.timeseries(
        view.params(usage, metric=usage.name, by="pool", q="0.95,1", step=step)
    )
    wait_ts = ctx.query.timeseries(
        view.params(wait, metric=wait.name, by="pool", q="0.95", step=step)
    )
    usage_all = ctx.query.percentiles(view.params(usage, metric=usage.name, by="pool", q="0.95"))
    wait_all = ctx.query.percentiles(view.params(wait, metric=wait.name, by="pool", q="0.95"))
    raw = rows(
        ctx.query,
        view.params(
            None,
            source="pool",
            by="pool",
            measure="sum:timeouts,max:usage_pct",
            limit=str(POOLS),
        ),
    )
    waits = {g["key"]["pool"]: g["quantiles"]["0.95"] for g in wait_all["groups"]}
    samples = {r["pool"]: r for r in raw["rows"]}
    table = []
    for g in usage_all["groups"]:
        pool = g["key"]["pool"]
        exact = samples.get(pool, {})
        table.append(
            {
                "pool": pool,
                "samples": g["count"],
                "usage_p95": g["quantiles"]["0.95"],
                "usage_max": exact.get("max_usage_pct"),
                "wait_p95": waits.get(pool),
                "timeouts": exact.get("sum_timeouts"),
            }
        )
    return {
        "table": table,
        "charts": [
            split_chart(
                "Pool usage p95", "percent", usage_ts, lambda p: p["quantiles"]["0.95"], _pool
            ),
            split_chart(
                "Pool usage max", "percent", usage_ts, lambda p: p["quantiles"]["1"], _pool
            ),
            split_chart("Pool wait p95", "ms", wait_ts, lambda p: p["quantiles"]["0.95"], _pool),
        ],
    }


def build(ctx: PageContext) -> dict[str, Any]:
    top, slow, findings, pool = gather(
        lambda: statements(ctx),
        lambda: slow_queries(ctx),
        lambda: n_plus_one(ctx),
        lambda: pools(ctx),
    )
    return {**top, "slow": slow, "findings": findings, "pools": pool}
