"""Route detail: ``/backend/route?route=/users/{id}&method=GET``.

Throughput, error rate and p50/p95/p99 of one route over time, its status
classes, its slowest requests in the window (each linking to its trace when the
request carried one) and the database statements it spends its time in. The
headline and charts come from the rollups; the status classes, slowest requests
and statements from raw rows, each one grouped query with a limit.

``route`` is required (a 400 without it); ``method`` is optional (all methods
when it is missing). A route with no requests simply shows no data.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from perfpulse.model.catalog import CATALOG
from perfpulse.query.rows import rows
from perfpulse.query.service import QueryError
from perfpulse.web.charts import line_chart
from perfpulse.web.pages import PageContext

QS = "0.5,0.95,0.99"
SLOWEST = 20
STATEMENTS = 10
REQUEST_COLUMNS = "route,method,status,duration_ms,db_time_ms,db_count,request_id,trace_id"


def chosen(ctx: PageContext) -> dict[str, str]:
    """The route (and method) this page is about, as query filters."""
    route = ctx.args.get("route", "")
    if not route:
        raise QueryError("'route' is required: open a route from the Backend page.")
    method = ctx.args.get("method", "")
    return {"route": route, "method": method} if method else {"route": route}


def headline(ctx: PageContext, which: dict[str, str]) -> dict[str, Any]:
    view, m, db = ctx.view, CATALOG["http.server.duration"], CATALOG["http.server.db_time"]
    total = ctx.query.percentiles(view.params(m, metric=m.name, q=QS, **which))
    spent = ctx.query.percentiles(view.params(db, metric=db.name, q="0.5", **which))
    g = total["groups"][0] if total["groups"] else None
    d = spent["groups"][0] if spent["groups"] else None
    return {
        "count": g["count"] if g else 0,
        "throughput": g["count"] / view.span if g else None,
        "error_ratio": g["error_ratio"] if g else None,
        "p50": g["quantiles"]["0.5"] if g else None,
        "p95": g["quantiles"]["0.95"] if g else None,
        "p99": g["quantiles"]["0.99"] if g else None,
        "db_share": d["sum"] / g["sum"] if g and d and g["sum"] else None,
    }


def charts(ctx: PageContext, which: dict[str, str]) -> list[dict[str, Any]]:
    view, m = ctx.view, CATALOG["http.server.duration"]
    series = ctx.query.timeseries(view.params(m, metric=m.name, q=QS, step=str(view.step), **which))
    return [
        line_chart("Throughput", "req/s", series, {"requests": lambda p: p["rate"]}),
        line_chart("Error rate (5xx)", "ratio", series, {"5xx": lambda p: p["error_ratio"]}),
        line_chart(
            "Latency",
            "ms",
            series,
            {
                "p50": lambda p: p["quantiles"]["0.5"],
                "p95": lambda p: p["quantiles"]["0.95"],
                "p99": lambda p: p["quantiles"]["0.99"],
            },
        ),
    ]


def status_classes(ctx: PageContext, which: dict[str, str]) -> list[dict[str, Any]]:
    """Requests per status class (2xx, 3xx…), with the codes seen in each."""
    answer = rows(
        ctx.query,
        ctx.view.params(None, source="http", by="status", measure="count", limit="1000", **which),
    )
    classes: dict[str, dict[str, Any]] = {}
    for r in answer["rows"]:
        status = r["status"]
        name = f"{status // 100}xx" if isinstance(status, int) else "unknown"
        entry = classes.setdefault(name, {"name": name, "count": 0, "codes": []})
        entry["count"] += r["count"]
        entry["codes"].append(status)
    total = sum(c["count"] for c in classes.values())
    out = sorted(classes.values(), key=lambda c: c["name"])
    for c in out:
        c["share"] = c["count"] / total if total else None
        c["codes"] = sorted(str(s) for s in c["codes"] if s is not None)
    return out


def slowest(ctx: PageContext, which: dict[str, str]) -> list[dict[str, Any]]:
    answer = rows(
        ctx.query,
        ctx.view.params(
            None,
            source="http",
            by=REQUEST_COLUMNS,
            measure="",
            order="duration_ms",
            limit=str(SLOWEST),
            **which,
        ),
    )
    for r in answer["rows"]:
        tid = r.get("trace_id")
        r["trace_url"] = ctx.view.url(f"/traces/{quote(tid, safe='')}") if tid else None
    return list(answer["rows"])


def statements(ctx: PageContext, route: str) -> list[dict[str, Any]]:
    answer = rows(
        ctx.query,
        ctx.view.params(
            None,
            source="db",
            route=route,
            by="fingerprint",
            measure="count,sum:duration_ms,p95:duration_ms,avg:rows",
            order="sum:duration_ms",
            limit=str(STATEMENTS),
        ),
    )
    return list(answer["rows"])


def build(ctx: PageContext) -> dict[str, Any]:
    which = chosen(ctx)
    label = " ".join(v for v in (which.get("method"), which["route"]) if v)
    return {
        "heading": f"Route {label}",
        "route": which["route"],
        "method": which.get("method"),
        "back": ctx.view.url("/backend", route=None, method=None),
        "summary": headline(ctx, which),
        "charts": charts(ctx, which),
        "classes": status_classes(ctx, which),
        "slowest": slowest(ctx, which),
        "statements": statements(ctx, which["route"]),
    }
