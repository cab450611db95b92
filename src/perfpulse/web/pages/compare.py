"""Compare: release A beside release B, for the numbers a release changes.

``?a=1.4.1&b=1.4.2`` (default: the two most recent releases in version order).
Core Web Vitals at p75 with their ratings, server latency p50/p95/p99, error
rate and throughput, database statement p95, and p95 per route for the
busiest routes; each with B − A, the change in percent and whether B is better
or worse. The view's window and filters apply to both sides; ``?page=``
narrows the browser numbers to one page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from perfpulse.model.catalog import CATALOG, RATINGS, VITALS
from perfpulse.web.pages import PageContext, gather

COMPARED_VITALS = ("LCP", "INP", "CLS", "FCP", "TTFB")
TOP_ROUTES = 10
SAME_WITHIN = 0.03  # a change within 3 % of the larger value reads as "same" (noise)
HTTP = CATALOG["http.server.duration"]
DB = CATALOG["db.query.duration"]


def version_key(release: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``1.4.10`` after ``1.4.9`` (numbers compare as numbers)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[^\d.\-+_]+", release)
    )


def defaults(releases: list[str]) -> tuple[str | None, str | None]:
    """The two most recent releases (older first); one release is compared with itself."""
    ordered = sorted(releases, key=version_key)
    if not ordered:
        return None, None
    return (ordered[-2] if len(ordered) > 1 else ordered[-1]), ordered[-1]


def verdict(a: float | None, b: float | None, lower_is_better: bool | None) -> str | None:
    """``better`` / ``worse`` / ``same`` for B against A; ``higher`` / ``lower``
    when neither direction is good; ``None`` without both values."""
    if a is None or b is None:
        return None
    if abs(b - a) <= SAME_WITHIN * max(abs(a), abs(b)):
        return "same"
    if lower_is_better is None:
        return "higher" if b > a else "lower"
    return "better" if (b < a) == lower_is_better else "worse"


def row(
    key: str,
    label: str,
    unit: str,
    a: float | None,
    b: float | None,
    *,
    lower_is_better: bool | None = True,
    **more: Any,
) -> dict[str, Any]:
    diff = b - a if a is not None and b is not None else None
    pct = diff / a * 100 if diff is not None and a else None
    return {
        "key": key,
        "label": label,
        "unit": unit,
        "a": a,
        "b": b,
        "diff": diff,
        "pct": pct,
        "verdict": verdict(a, b, lower_is_better),
        **more,
    }


def _without_release(params: dict[str, str]) -> dict[str, str]:
    """Both releases come from one query grouped by release, so the view's own
    release filter (if any) must not narrow it to one."""
    params.pop("release", None)
    return params


def _group(answer: Mapping[str, Any], release: str) -> dict[str, Any] | None:
    return next((g for g in answer["groups"] if g["key"]["release"] == release), None)


def sides(ctx: PageContext, a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every number of releases ``a`` and ``b``, in eight queries grouped by release."""
    view = ctx.view
    questions = [
        _without_release(view.params(VITALS[n], metric=VITALS[n].name, by="release", q="0.75"))
        for n in COMPARED_VITALS
    ] + [
        _without_release(view.params(HTTP, metric=HTTP.name, by="release", q="0.5,0.95,0.99")),
        _without_release(view.params(DB, metric=DB.name, by="release", q="0.95")),
        _without_release(view.params(HTTP, metric=HTTP.name, by="release,route", q="0.95")),
    ]
    answers = gather(*(lambda p=p: ctx.query.percentiles(p) for p in questions))
    vitals = dict(zip(COMPARED_VITALS, answers, strict=False))
    http, db, routes = answers[-3:]

    def vital(name: str, release: str) -> dict[str, Any] | None:
        g = _group(vitals[name], release)
        if g is None:
            return None
        p75 = g["quantiles"]["0.75"]
        rating = RATINGS[VITALS[name].rate(p75)] if p75 is not None else None
        return {"p75": p75, "count": g["count"], "rating": rating}

    def side(release: str) -> dict[str, Any]:
        h, d = _group(http, release), _group(db, release)
        return {
            "vitals": {name: vital(name, release) for name in COMPARED_VITALS},
            "http": {
                "p50": h["quantiles"]["0.5"] if h else None,
                "p95": h["quantiles"]["0.95"] if h else None,
                "p99": h["quantiles"]["0.99"] if h else None,
                "error_ratio": h["error_ratio"] if h else None,
                "throughput": h["count"] / view.span if h else None,
                "count": h["count"] if h else 0,
            },
            "db_p95": d["quantiles"]["0.95"] if d else None,
            "routes": {
                g["key"]["route"]: (g["quantiles"]["0.95"], g["count"])
                for g in routes["groups"]
                if g["key"]["release"] == release
            },
        }

    return side(a), side(b)


def _vital_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in COMPARED_VITALS:
        va, vb = a.get(name), b.get(name)
        out.append(
            row(
                name.lower(),
                f"{name} p75",
                VITALS[name].unit,
                va["p75"] if va else None,
                vb["p75"] if vb else None,
                rating_a=va["rating"] if va else None,
                rating_b=vb["rating"] if vb else None,
                count_a=va["count"] if va else 0,
                count_b=vb["count"] if vb else 0,
            )
        )
    return out


def _route_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    busiest = sorted(
        set(a) | set(b), key=lambda r: (-(a.get(r, (0, 0))[1] + b.get(r, (0, 0))[1]), r)
    )
    return [
        row(
            route,
            route,
            "ms",
            a[route][0] if route in a else None,
            b[route][0] if route in b else None,
            count_a=a[route][1] if route in a else 0,
            count_b=b[route][1] if route in b else 0,
        )
        for route in busiest[:TOP_ROUTES]
    ]


def build(ctx: PageContext) -> dict[str, Any]:
    releases = ctx.query.backend.dimension_values("release", 200)
    first, last = defaults(releases)
    a = ctx.args.get("a") or first
    b = ctx.args.get("b") or last
    choices = sorted(set(releases) | {r for r in (a, b) if r}, key=version_key, reverse=True)
    if a is None or b is None:
        return {"releases": choices, "a": a, "b": b, "rows": [], "routes": []}
    sa, sb = sides(ctx, a, b)
    ha, hb = sa["http"], sb["http"]
    rows = [
        *_vital_rows(sa["vitals"], sb["vitals"]),
        *(
            row(f"http_{q}", f"Server latency {q}", "ms", ha[q], hb[q])
            for q in ("p50", "p95", "p99")
        ),
        row("error_ratio", "Error rate (5xx)", "ratio", ha["error_ratio"], hb["error_ratio"]),
        row(
            "throughput",
            "Throughput",
            "req/s",
            ha["throughput"],
            hb["throughput"],
            lower_is_better=None,
        ),
        row("db_p95", "Database statement p95", "ms", sa["db_p95"], sb["db_p95"]),
    ]
    return {
        "heading": f"Compare {a} with {b}",
        "releases": choices,
        "a": a,
        "b": b,
        "rows": rows,
        "routes": _route_rows(sa["routes"], sb["routes"]),
        "requests": (ha["count"], hb["count"]),
        "same_within": SAME_WITHIN,
    }
