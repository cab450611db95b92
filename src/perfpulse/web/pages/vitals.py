"""Web Vitals: one vital in depth, and where in the pages its problems come from.

``/vitals?metric=INP&by=device`` shows, for the chosen vital (``metric``, one of
LCP, INP, CLS, FCP, TTFB, FID; default LCP):

- all six vitals at p75 with their ratings, as cards that switch the metric;
- the chosen vital's p75 over time against its good / poor thresholds, and its
  good / needs-improvement / poor distribution as PageSpeed Insights draws it;
- a split by page, device class, browser or connection (``by``, default page)
  from the rollups: p75, rating, distribution and page views per group;
- attribution hot spots from the raw vitals (LCP elements and resource URLs,
  INP targets and scripts, CLS shift sources) with count and p75 of the value
  (raw breakdowns read at most the last 24 hours of the window);
- the main thread at runtime: total blocking time and long tasks per view, the
  scripts behind the longest animation frames, and JS heap in use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perfpulse.model.catalog import CATALOG, RATINGS, VITALS, Metric
from perfpulse.query.rows import rows
from perfpulse.query.service import QueryError
from perfpulse.web.charts import line_chart
from perfpulse.web.pages import PageContext, gather, raw_params, raw_start

SPLITS = {
    "page": "Page",
    "device": "Device class",
    "browser": "Browser",
    "connection": "Connection",
}
DEFAULT_METRIC = "LCP"
DEFAULT_SPLIT = "page"
TOP_N = 10
# The attribution tables of a vital: (table id, title, attribution key, column heading).
HOT_SPOTS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "LCP": (
        ("lcp-elements", "LCP elements", "element", "Element"),
        ("lcp-urls", "LCP resource URLs", "url", "Resource URL"),
    ),
    "INP": (
        ("inp-targets", "INP interaction targets", "target", "Target"),
        ("inp-scripts", "INP scripts (longest script of the interaction)", "script", "Script"),
    ),
    "CLS": (("cls-targets", "CLS shift sources (largest shift)", "target", "Shift source"),),
}


def chosen(ctx: PageContext) -> tuple[str, str]:
    """The vital and the split the URL asks for; :class:`QueryError` for others."""
    name = ctx.args.get("metric", DEFAULT_METRIC).upper()
    if name not in VITALS:
        raise QueryError(f"unknown vital {name!r}; one of {', '.join(VITALS)}")
    by = ctx.args.get("by", DEFAULT_SPLIT)
    if by not in SPLITS:
        raise QueryError(f"unknown split {by!r}; one of {', '.join(SPLITS)}")
    return name, by


def _rate(m: Metric, p75: float | None) -> str | None:
    return RATINGS[m.rate(p75)] if p75 is not None else None


def _quantile(q: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda p: p["quantiles"][q]


def _shares(ratings: dict[str, float | None] | None) -> dict[str, float] | None:
    if not ratings or any(ratings.get(r) is None for r in RATINGS):
        return None
    return {r: float(ratings[r] or 0.0) for r in RATINGS}


def summary(ctx: PageContext) -> list[dict[str, Any]]:
    """All six vitals at p75, with rating and distribution (one vitals answer)."""
    answer = ctx.query.vitals(ctx.view.params(VITALS[DEFAULT_METRIC], by=""))
    got = answer["groups"][0]["metrics"] if answer["groups"] else {}
    out = []
    for name, m in VITALS.items():
        entry = got.get(name)
        out.append(
            {
                "name": name,
                "unit": m.unit,
                "thresholds": m.thresholds,
                "p75": entry["p75"] if entry else None,
                "count": entry["count"] if entry else 0,
                "rating": entry["rating"] if entry else None,
                "shares": {r: entry[r] for r in RATINGS} if entry else None,
            }
        )
    return out


def split(ctx: PageContext, m: Metric, by: str) -> list[dict[str, Any]]:
    """p75, rating and distribution of one vital per group of ``by`` (from the rollups)."""
    answer = ctx.query.percentiles(ctx.view.params(m, metric=m.name, by=by, q="0.75"))
    out = []
    for g in answer["groups"]:
        p75 = g["quantiles"]["0.75"]
        out.append(
            {
                "key": g["key"][by],
                "p75": p75,
                "count": g["count"],
                "rating": _rate(m, p75),
                "shares": _shares(g.get("ratings")),
            }
        )
    return out


def hot_spots(ctx: PageContext, name: str) -> list[dict[str, Any]]:
    """Top attribution values of the chosen vital, each with count and p75 of the value."""
    m, out = VITALS[name], []
    for table_id, title, key, heading in HOT_SPOTS.get(name, ()):
        column = f"attribution.{key}"
        answer = rows(
            ctx.query,
            raw_params(
                ctx,
                source="rum_vital",
                name=name,
                by=column,
                measure="count,p75:value",
                order="count",
                limit=str(TOP_N + 1),  # one more: views without this key form a group too
            ),
        )
        found = [
            {
                "key": r[column],
                "count": r["count"],
                "p75": r["p75_value"],
                "rating": _rate(m, r["p75_value"]),
            }
            for r in answer["rows"]
            if r[column] is not None
        ]
        out.append(
            {"id": table_id, "title": title, "key": key, "heading": heading, "rows": found[:TOP_N]}
        )
    return out


def runtime(ctx: PageContext) -> dict[str, Any]:
    """Long tasks, long animation frames and JS heap over the window."""
    view, step = ctx.view, str(ctx.view.step)
    charts = []
    for name, title in (
        ("rum.long_tasks.tbt", "Total blocking time per view (p75)"),
        ("rum.long_tasks.count", "Long tasks per view (p75)"),
    ):
        m = CATALOG[name]
        answer = ctx.query.timeseries(view.params(m, metric=m.name, q="0.75", step=step))
        charts.append(line_chart(title, m.unit, answer, {"p75": _quantile("0.75")}))
    mem = CATALOG["rum.memory.used"]
    answer = ctx.query.timeseries(view.params(mem, metric=mem.name, q="0.5,0.95", step=step))
    memory = line_chart(
        "JS heap in use",
        mem.unit,
        answer,
        {"p50": _quantile("0.5"), "p95": _quantile("0.95")},
    )
    scripts = rows(
        ctx.query,
        raw_params(
            ctx,
            source="rum_view",
            by="worst_script",
            measure="count,sum:worst_script_ms,p75:worst_script_ms",
            order="sum:worst_script_ms",
            limit=str(TOP_N + 1),
        ),
    )
    worst = [
        {
            "script": r["worst_script"],
            "count": r["count"],
            "total": r["sum_worst_script_ms"],
            "p75": r["p75_worst_script_ms"],
        }
        for r in scripts["rows"]
        if r["worst_script"] is not None
    ]
    return {"charts": charts, "memory": memory, "worst_scripts": worst[:TOP_N]}


def build(ctx: PageContext) -> dict[str, Any]:
    name, by = chosen(ctx)
    m = VITALS[name]
    cards, answer, groups, spots, run = gather(
        lambda: summary(ctx),
        lambda: ctx.query.timeseries(
            ctx.view.params(m, metric=m.name, q="0.75", step=str(ctx.view.step))
        ),
        lambda: split(ctx, m, by),
        lambda: hot_spots(ctx, name),
        lambda: runtime(ctx),
    )
    return {
        "heading": f"Web Vitals · {name}",
        "metric": name,
        "unit": m.unit,
        "description": m.description.rstrip("."),
        "thresholds": m.thresholds,
        "by": by,
        "splits": SPLITS,
        "cards": cards,
        "current": next(c for c in cards if c["name"] == name),
        "chart": line_chart(
            f"{name} p75", m.unit, answer, {"p75": _quantile("0.75")}, thresholds=m.thresholds
        ),
        "groups": groups,
        "hot_spots": spots,
        "runtime": run,
        "raw_from": raw_start(ctx) if raw_start(ctx) > ctx.view.start else None,
    }
