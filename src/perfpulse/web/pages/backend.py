"""Backend: every route of the service with its throughput, error rate, latency
percentiles and share of time spent in the database, sortable, each linking to
its detail page; charts of throughput, error rate and latency over the window.

Three rollup-backed questions whatever the number of routes: the route table
is one ``top`` over ``http.server.duration`` and one over
``http.server.db_time`` by ``route,method``, joined here; the charts are one
timeseries over all routes. (A timeseries split by route costs one sketch per
route and step — ten times the rest of the page with a few hundred routes — so
per-route charts live on the route's own page.)
"""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG
from perfpulse.web.charts import line_chart
from perfpulse.web.pages import PageContext

QS = "0.5,0.95,0.99"
MAX_ROUTES = 500


def routes(ctx: PageContext) -> list[dict[str, Any]]:
    """One row per route and method, busiest first."""
    view = ctx.view
    m, db = CATALOG["http.server.duration"], CATALOG["http.server.db_time"]
    keys = {"by": "route,method", "limit": str(MAX_ROUTES)}
    top = ctx.query.top(view.params(m, metric=m.name, q=QS, **keys))
    db_top = ctx.query.top(view.params(db, metric=db.name, q="0.5", **keys))
    db_sum = {(g["key"]["route"], g["key"]["method"]): g["sum"] for g in db_top["groups"]}
    out = []
    for g in top["groups"]:
        route, method = g["key"]["route"], g["key"]["method"]
        spent = db_sum.get((route, method))
        out.append(
            {
                "route": route,
                "method": method,
                "count": g["count"],
                "throughput": g["rate"],
                "error_ratio": g.get("error_ratio"),
                "p50": g["quantiles"]["0.5"],
                "p95": g["quantiles"]["0.95"],
                "p99": g["quantiles"]["0.99"],
                "db_share": spent / g["sum"] if spent is not None and g["sum"] else None,
                "url": view.url("/backend/route", route=route or "", method=method),
            }
        )
    return out


def charts(ctx: PageContext) -> list[dict[str, Any]]:
    view, m = ctx.view, CATALOG["http.server.duration"]
    total = ctx.query.timeseries(view.params(m, metric=m.name, q=QS, step=str(view.step)))
    return [
        line_chart("Throughput", "req/s", total, {"all routes": lambda p: p["rate"]}),
        line_chart("Error rate (5xx)", "ratio", total, {"all routes": lambda p: p["error_ratio"]}),
        line_chart(
            "Latency",
            "ms",
            total,
            {
                "p50": lambda p: p["quantiles"]["0.5"],
                "p95": lambda p: p["quantiles"]["0.95"],
                "p99": lambda p: p["quantiles"]["0.99"],
            },
        ),
    ]


def build(ctx: PageContext) -> dict[str, Any]:
    rows = routes(ctx)
    return {"routes": rows, "charts": charts(ctx), "requests": sum(r["count"] for r in rows)}
