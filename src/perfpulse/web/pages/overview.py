"""Overview: the page a team leaves open. Core Web Vitals at p75 with pass/fail,
the backend's Apdex, throughput, error rate and latency, open alerts and budget
status, each with a sparkline over the window."""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG, RATINGS, VITALS
from perfpulse.web.charts import spark
from perfpulse.web.pages import PageContext

APDEX_T_MS = 500.0  # satisfied ≤ T, tolerating ≤ 4 T (a common default for web APIs)
HEADLINE = ("LCP", "INP", "CLS")


def vitals(ctx: PageContext) -> list[dict[str, Any]]:
    view, step = ctx.view, str(ctx.view.step)
    answer = ctx.query.vitals(view.params(CATALOG["rum.lcp"], by=""))
    got = answer["groups"][0]["metrics"] if answer["groups"] else {}
    out = []
    for name in HEADLINE:
        m = VITALS[name]
        series = ctx.query.timeseries(view.params(m, metric=m.name, q="0.75", step=step))
        entry = got.get(name)
        out.append(
            {
                "name": name,
                "metric": m.name,
                "unit": m.unit,
                "p75": entry["p75"] if entry else None,
                "count": entry["count"] if entry else 0,
                "rating": entry["rating"] if entry else None,
                "shares": {r: entry[r] for r in RATINGS} if entry else None,
                "thresholds": m.thresholds,
                "spark": spark(series, lambda p: p["quantiles"]["0.75"]),
            }
        )
    return out


def backend(ctx: PageContext) -> dict[str, Any]:
    view = ctx.view
    m = CATALOG["http.server.duration"]
    apdex = str(APDEX_T_MS)
    total = ctx.query.percentiles(view.params(m, metric=m.name, apdex=apdex))
    series = ctx.query.timeseries(view.params(m, metric=m.name, apdex=apdex, step=str(view.step)))
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
    vs = vitals(ctx)
    counted = [v for v in vs if v["rating"] is not None]
    passes = all(v["rating"] == "good" for v in vs) if len(counted) == len(vs) else None
    return {"vitals": vs, "passes": passes, "backend": backend(ctx), **alerting(ctx)}
