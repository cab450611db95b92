"""Assets: what the browser downloads per page view, and which files weigh most.

- per resource type, from the rollups: p75 bytes transferred and decoded per
  page view, p75 resources per view, and the page views that loaded the type;
- per resource type, from the raw resource groups: total bytes transferred,
  cache-hit ratio (cache hits / resources), render-blocking resources and the
  third-party share (third-party resources / resources), with totals as cards;
- bytes transferred per view over time, one line per type;
- from the five largest resources each view reported: the render-blocking
  ones, the largest overall, and the largest images and fonts on their own.

Raw numbers come from ``rows`` (``GET /api/v1/breakdown``) over this window,
or its last 24 hours when it is longer; the page filter applies to every one.
"""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG
from perfpulse.query.rows import rows
from perfpulse.web.charts import split_chart
from perfpulse.web.pages import PageContext, raw_params, raw_start

TRANSFER, DECODED, COUNT = (
    CATALOG["rum.resource.transfer"],
    CATALOG["rum.resource.decoded"],
    CATALOG["rum.resource.count"],
)
TOP_N = 10
GROUP_SUMS = (
    "count",
    "transfer_bytes",
    "decoded_bytes",
    "cache_hits",
    "render_blocking",
    "third_party",
)
RAW_KEYS = (*GROUP_SUMS, "cache_hit_ratio", "third_party_share")
VIEW_KEYS = ("views", "transfer", "decoded", "resources")
LARGEST_MEASURES = (
    "count",
    "max:transfer_bytes",
    "max:decoded_bytes",
    "p75:duration_ms",
    "true:cached",
    "true:render_blocking",
    "true:third_party",
)
# The tables of largest resources: (table id, title, extra filters).
LARGEST_TABLES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("render-blocking", "Render-blocking resources", {"render_blocking": "true"}),
    ("largest", "Largest resources", {}),
    ("largest-images", "Largest images", {"type": "image"}),
    ("largest-fonts", "Largest fonts", {"type": "font"}),
)


def _share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def per_view(ctx: PageContext) -> dict[str, dict[str, Any]]:
    """p75 per page view of each type's bytes and count, and the views that loaded it."""
    out: dict[str, dict[str, Any]] = {}
    for key, m in (("transfer", TRANSFER), ("decoded", DECODED), ("resources", COUNT)):
        answer = ctx.query.percentiles(ctx.view.params(m, metric=m.name, by="type", q="0.75"))
        for g in answer["groups"]:
            entry = out.setdefault(g["key"]["type"] or "", {"views": g["count"]})
            entry[key] = g["quantiles"]["0.75"]
    return out


def totals(ctx: PageContext) -> list[dict[str, Any]]:
    """Each type's raw sums over the window, with its cache-hit and third-party shares."""
    answer = rows(
        ctx.query,
        raw_params(
            ctx,
            source="rum_resource",
            by="type",
            measure=",".join(f"sum:{c}" for c in GROUP_SUMS),
            order="sum:transfer_bytes",
            limit="50",
        ),
    )
    out = []
    for r in answer["rows"]:
        sums = {c: r[f"sum_{c}"] for c in GROUP_SUMS}
        out.append(
            {
                "type": r["type"],
                **sums,
                "cache_hit_ratio": _share(sums["cache_hits"], sums["count"]),
                "third_party_share": _share(sums["third_party"], sums["count"]),
            }
        )
    return out


def overall(types: list[dict[str, Any]]) -> dict[str, Any]:
    """The cards: every type's sums added up."""
    sums = {c: sum(t[c] or 0 for t in types) for c in GROUP_SUMS}
    return {
        **sums,
        "cache_hit_ratio": _share(sums["cache_hits"], sums["count"]),
        "third_party_share": _share(sums["third_party"], sums["count"]),
    }


def largest(ctx: PageContext) -> list[dict[str, Any]]:
    """The largest-resource tables, each one breakdown of rum_largest by URL and type."""
    out = []
    for table_id, title, filters in LARGEST_TABLES:
        answer = rows(
            ctx.query,
            raw_params(
                ctx,
                source="rum_largest",
                by="url,type",
                measure=",".join(LARGEST_MEASURES),
                order="max:transfer_bytes",
                limit=str(TOP_N),
                **filters,
            ),
        )
        found = [
            {
                "url": r["url"],
                "type": r["type"],
                "views": r["count"],
                "transfer": r["max_transfer_bytes"],
                "decoded": r["max_decoded_bytes"],
                "duration": r["p75_duration_ms"],
                "cached": _share(r["true_cached"], r["count"]),
                "render_blocking": r["true_render_blocking"],
                "third_party": r["true_third_party"],
            }
            for r in answer["rows"]
        ]
        out.append({"id": table_id, "title": title, "rows": found})
    return out


def by_type(ctx: PageContext) -> list[dict[str, Any]]:
    """One row per resource type: the raw totals and the rollups' p75 per view."""
    raw = {t["type"]: t for t in totals(ctx)}
    rollup = per_view(ctx)
    names = [*raw, *sorted(k for k in rollup if k not in raw)]
    return [
        {
            **dict.fromkeys((*RAW_KEYS, *VIEW_KEYS)),
            **raw.get(k, {}),
            **rollup.get(k, {}),
            "type": k,
        }
        for k in names
    ]


def build(ctx: PageContext) -> dict[str, Any]:
    types = by_type(ctx)
    answer = ctx.query.timeseries(
        ctx.view.params(
            TRANSFER, metric=TRANSFER.name, by="type", q="0.75", step=str(ctx.view.step)
        )
    )
    return {
        "types": types,
        "overall": overall(types),
        "largest": largest(ctx),
        "raw_from": raw_start(ctx) if raw_start(ctx) > ctx.view.start else None,
        "chart": split_chart(
            "Bytes transferred per view, by type (p75)",
            TRANSFER.unit,
            answer,
            lambda p: p["quantiles"]["0.75"],
            lambda key: str(key.get("type") or "(none)"),
        ),
    }
