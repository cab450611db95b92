"""Overview: the page a team leaves open. Core Web Vitals at p75 with pass/fail,
the backend's Apdex, throughput, error rate and latency, open alerts and budget
status, each with a sparkline over the window."""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG, RATINGS, VITALS
from perfpulse.web.charts import spark
from perfpulse.web.pages import PageContext, gather

APDEX_T_MS = 500.0  # satisfied ≤ T, tolerating ≤ 4 T (a common default for web APIs)
HEADLINE = ("LCP", "INP", "CLS")


def vital(ctx: PageContext, name: str) -> dict[str, Any]:
    """One vital's p75 over the window, its rating shares and its sparkline."""
    view, step = ctx.view, str(ctx.view.step)
    m = VITALS[name]
    total, series = gather(
        lambda: ctx.query.percentiles(view.params(m, metric=m.name, q="0.75")),
        lambda: ctx.query.timeseries(view.params(m, metric=m.name, q="0.75", step=step)),
    )
    g = total["groups"][0] if total["groups"] else None
    p75 = g["quantiles"]["0.75"] if g else None
    return {
        "name": name,
        "metric": m.name,
        "unit": m.unit,
        "p75": p75,
        "count": g["count"] if g else 0,
        "rating": RATINGS[m.rate(p75)] if p75 is not None else None,
        "shares": g["ratings"] if g else None,
        "thresholds": m.thresholds,
        "spark": spark(series, lambda p: p["quantiles"]["0.75"]),
    }


def backend(ctx: PageContext) -> dict[str, Any]:
    view = ctx.view
    m = CATALOG["http.server.duration"]
    apdex = str(APDEX_T_MS)
    total, series = gather(
        lambda: ctx.query.percentiles(view.params(m, metric=m.name, apdex=apdex)),
        lambda: ctx.query.timeseries(
            view.params(m, metric=m.name, apdex=apdex, step=str(view.step))
        ),
    )
    g = total["groups"][0] if total["groups"] else None
    return {
        "count": g["count"] if g else 0,
        "apdex": g["apdex"] if g else None,
        "apdex_t": APDEX_T_MS,
        "throughput": g["count"] / view.span if g else None,
        "error_ratio": g["error_ratio"] if g else None,
        "p50": g["quantiles"]["0.5"] if g else None,
        "p95": g["quantiles"]["0.95"] if g else None,
        "p99": g["quantiles"]["0.99"] if g else None,
        "sparks": {
            "apdex": spark(series, lambda p: p["apdex"]),
            "throughput": spark(series, lambda p: p["rate"]),
            "error_ratio": spark(series, lambda p: p["error_ratio"]),
            "p50": spark(series, lambda p: p["quantiles"]["0.5"]),
            "p95": spark(series, lambda p: p["quantiles"]["0.95"]),
            "p99": spark(series, lambda p: p["quantiles"]["0.99"]),
        },
    }


def alerting(ctx: PageContext) -> dict[str, Any]:
    series = ctx.alerts.alerts()
    budgets = [s for s in series if s["rule"].startswith("budget: ")]
    alerts = [s for s in series if not s["rule"].startswith("budget: ")]
    return {
        "open_alerts": [s for s in alerts if s["state"] in ("firing", "pending") or s["active"]],
        "rules": len({s["rule"] for s in alerts}),
        "budgets": [
            {
                "name": s["rule"].removeprefix("budget: "),
                "labels": s["labels"],
                "state": s["state"],
                "over": s["active"],
                "value": s["value"],
            }
            for s in budgets
        ],
    }


def build(ctx: PageContext) -> dict[str, Any]:
    # the outer calls each wait on their own inner questions: keep them in this thread
    vs = [vital(ctx, name) for name in HEADLINE]
    counted = [v for v in vs if v["rating"] is not None]
    passes = all(v["rating"] == "good" for v in vs) if len(counted) == len(vs) else None
    return {"vitals": vs, "passes": passes, "backend": backend(ctx), **alerting(ctx)}
