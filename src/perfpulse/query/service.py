"""Questions → storage calls: the one read path for the API, dashboard, alerts.

Each method takes the query parameters as given (strings) and returns the JSON
document the API answers, or raises :class:`QueryError` (a 400 with its reason).

Parameters shared by every question:

- ``metric``: a name from the catalog (``docs/metrics.md``);
- ``from`` / ``to``: Unix seconds (default: the last hour), ``from < to``;
- ``q``: quantiles in [0, 1], comma-separated (default ``0.5,0.95,0.99``);
- ``by``: zero or more dimensions, comma-separated;
- any other ``dim=value``: a filter on that dimension.

Example::

    query = Query(backend)
    query.percentiles({"metric": "http.server.duration", "by": "route", "q": "0.95"})
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from perfpulse.model.catalog import (
    CATALOG,
    METRICS,
    RATINGS,
    VITALS,
    Metric,
    UnknownMetric,
    metric,
)
from perfpulse.store.base import Backend, SketchGroup, SketchQuery

RESERVED = frozenset(
    {"metric", "q", "from", "to", "by", "step", "limit", "order", "explain", "apdex"}
)
DEFAULT_QS = "0.5,0.95,0.99"
MAX_POINTS = 10_000
AUTO_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400)
ORDERS = ("count", "sum", "rate", "error_ratio")
PASSING = ("LCP", "INP", "CLS")
VIEW_FILTERS = ("service", "environment", "release", "page", "device", "browser")


class QueryError(ValueError):
    """A question that cannot be answered as asked; the message says why."""


def _float(params: Mapping[str, str], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"{name!r} must be Unix seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise QueryError(f"{name!r} must be a finite number, got {raw!r}")
    return value


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name!r} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise QueryError(f"{name!r} must be between {lo} and {hi}, got {value}")
    return value


def _list(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


class Query:
    """The read path. ``clock`` gives 'now' for default windows."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock

    # --- parameter parsing -------------------------------------------------------

    def window(self, params: Mapping[str, str]) -> tuple[float, float]:
        end = _float(params, "to", self.clock())
        start = _float(params, "from", end - 3600.0)
        if start >= end:
            raise QueryError(f"bad window: 'from' ({start:g}) must be before 'to' ({end:g})")
        if end - start > 800 * 86_400:
            raise QueryError("bad window: at most 800 days")
        return start, end

    @staticmethod
    def metric(params: Mapping[str, str]) -> Metric:
        name = params.get("metric")
        if not name:
            raise QueryError("'metric' is required (see GET /api/v1/metrics)")
        try:
            return metric(name)
        except UnknownMetric:
            raise QueryError(f"unknown metric {name!r} (see GET /api/v1/metrics)") from None

    @staticmethod
    def quantiles(params: Mapping[str, str]) -> list[tuple[str, float]]:
        out = []
        for text in _list(params.get("q", DEFAULT_QS)):
            try:
                value = float(text)
            except ValueError:
                raise QueryError(f"bad quantile {text!r}: must be a number in [0, 1]") from None
            if not 0.0 <= value <= 1.0:
                raise QueryError(f"bad quantile {text!r}: must be in [0, 1]")
            out.append((text, value))
        if len(out) > 20:
            raise QueryError("at most 20 quantiles")
        return out

    @staticmethod
    def dims(
        m: Metric, params: Mapping[str, str]
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        by = tuple(_list(params.get("by")))
        filters = tuple((k, v) for k, v in params.items() if k not in RESERVED and k != "token")
        known = m.all_dims
        for dim in (*by, *(k for k, _ in filters)):
            if dim not in known:
                raise QueryError(
                    f"unknown dimension {dim!r} for {m.name}; known: {', '.join(known)}"
                )
        if len(set(by)) != len(by):
            raise QueryError("'by' names a dimension twice")
        return by, filters

    def _question(
        self, params: Mapping[str, str], *, step: int | None = None
    ) -> tuple[SketchQuery, list[tuple[str, float]]]:
        m = self.metric(params)
        start, end = self.window(params)
        qs = self.quantiles(params)
        by, filters = self.dims(m, params)
        apdex = self.apdex_t(params)
        sq = SketchQuery(
            metric=m,
            start=start,
            end=end,
            by=by,
            filters=filters,
            qs=tuple(v for _, v in qs),
            step=step,
            below=(apdex, 4 * apdex) if apdex is not None else (),
        )
        return sq, qs

    @staticmethod
    def apdex_t(params: Mapping[str, str]) -> float | None:
        """``apdex=T``: also answer the Apdex score with satisfied ≤ T, tolerating ≤ 4T."""
        if not params.get("apdex"):
            return None
        try:
            t = float(params["apdex"])
        except ValueError:
            t = math.nan
        if not t > 0 or not math.isfinite(t):
            raise QueryError(f"'apdex' must be a positive threshold, got {params['apdex']!r}")
        return t

    # --- answers -----------------------------------------------------------------

    @staticmethod
    def _group(sq: SketchQuery, qs: list[tuple[str, float]], g: SketchGroup) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": dict(zip(sq.by, g.key, strict=True)),
            "count": g.count,
            "quantiles": {text: g.quantiles[v] for text, v in qs},
            "sum": g.sum,
            "mean": g.sum / g.count if g.count else None,
        }
        m, oc, n = sq.metric, g.outcomes, g.count
        if sq.below and n:
            t, t4 = sq.below
            out["apdex"] = (g.below[t] + (g.below[t4] - g.below[t]) / 2) / n
        if m.outcome == "status":
            out["error_ratio"] = oc.get(5, 0) / n if n else None
        elif m.outcome == "error":
            out["error_ratio"] = oc.get(1, 0) / n if n else None
        elif m.outcome == "hit":
            reads = oc.get(0, 0) + oc.get(1, 0)
            out["hit_ratio"] = oc.get(0, 0) / reads if reads else None
        elif m.outcome == "rating":
            out["ratings"] = {r: oc.get(i, 0) / n if n else None for i, r in enumerate(RATINGS)}
        return out

    def percentiles(self, params: Mapping[str, str]) -> dict[str, Any]:
        sq, qs = self._question(params)
        groups, plan = self.backend.sketch(sq)
        answer: dict[str, Any] = {
            "metric": sq.metric.name,
            "unit": sq.metric.unit,
            "from": sq.start,
            "to": sq.end,
            "groups": [self._group(sq, qs, g) for g in groups],
        }
        if params.get("explain"):
            answer["plan"] = {"raw": plan.raw, "minute": plan.minute, "hour": plan.hour}
        return answer

    def timeseries(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self.window(params)
        span = end - start
        auto = next((s for s in AUTO_STEPS if span / s <= 120), AUTO_STEPS[-1])
        step = _int(params, "step", auto, 1, 86_400 * 31)
        if span / step > MAX_POINTS:
            raise QueryError(f"step {step}s gives more than {MAX_POINTS} points")
        sq, qs = self._question(params, step=step)
        groups, _ = self.backend.sketch(sq)
        series: dict[tuple[str | None, ...], list[dict[str, Any]]] = {}
        for g in groups:
            point = self._group(sq, qs, g)
            point.pop("key")
            point["ts"] = g.time
            point["rate"] = g.count / step
            series.setdefault(g.key, []).append(point)
        return {
            "metric": sq.metric.name,
            "unit": sq.metric.unit,
            "from": start,
            "to": end,
            "step": step,
            "series": [
                {"key": dict(zip(sq.by, key, strict=True)), "points": points}
                for key, points in series.items()
            ],
        }

    def top(self, params: Mapping[str, str]) -> dict[str, Any]:
        sq, qs = self._question(params)
        if not sq.by:
            raise QueryError("'by' is required for a top-N breakdown")
        order = params.get("order", "count")
        quantile_orders = {f"p{text.removeprefix('0.').ljust(2, '0')}": text for text, _ in qs}
        if order not in ORDERS and order not in quantile_orders:
            raise QueryError(
                f"bad order {order!r}; one of {', '.join((*ORDERS, *quantile_orders))}"
            )
        limit = _int(params, "limit", 10, 1, 1000)
        groups, _ = self.backend.sketch(sq)
        rows = [self._group(sq, qs, g) for g in groups]
        span = sq.end - sq.start
        for row in rows:
            row["rate"] = row["count"] / span

        def sort_key(row: dict[str, Any]) -> float:
            if order in quantile_orders:
                value = row["quantiles"][quantile_orders[order]]
            else:
                value = row.get(order)
            return float("-inf") if value is None else float(value)

        rows.sort(key=sort_key, reverse=True)
        return {
            "metric": sq.metric.name,
            "unit": sq.metric.unit,
            "by": list(sq.by),
            "order": order,
            "from": sq.start,
            "to": sq.end,
            "groups": rows[:limit],
        }

    def vitals(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Core Web Vitals per page and device class: p75 and rating shares."""
        start, end = self.window(params)
        by = tuple(_list(params.get("by", "page,device")))
        base = dict(params)
        base.update({"by": ",".join(by), "q": "0.75", "from": str(start), "to": str(end)})
        groups: dict[tuple[str | None, ...], dict[str, Any]] = {}
        for name, m in VITALS.items():
            sq, _ = self._question({**base, "metric": m.name})
            for g in self.backend.sketch(sq)[0]:
                entry = groups.setdefault(
                    g.key, {"key": dict(zip(by, g.key, strict=True)), "metrics": {}}
                )
                p75 = g.quantiles[0.75]
                entry["metrics"][name] = {
                    "p75": p75,
                    "count": g.count,
                    **{r: g.outcomes.get(i, 0) / g.count for i, r in enumerate(RATINGS)},
                    "rating": RATINGS[m.rate(p75)] if p75 is not None else None,
                }
        for entry in groups.values():
            got = entry["metrics"]
            entry["passes"] = (
                all(got[n]["rating"] == "good" for n in PASSING)
                if all(n in got for n in PASSING)
                else None
            )
        ordered = sorted(
            groups.values(),
            key=lambda e: -max((v["count"] for v in e["metrics"].values()), default=0),
        )
        return {"from": start, "to": end, "by": list(by), "groups": ordered}

    def views(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self.window(params)
        limit = _int(params, "limit", 100, 1, 1000)
        filters = {k: v for k, v in params.items() if k in VIEW_FILTERS}
        return {"views": self.backend.views(start, end, limit, filters)}

    @staticmethod
    def catalog() -> dict[str, Any]:
        return {
            "metrics": [
                {
                    "name": m.name,
                    "unit": m.unit,
                    "description": m.description,
                    "dimensions": list(m.all_dims),
                    "rollup_dimensions": list(m.dims),
                    "outcome": m.outcome,
                    "thresholds": (
                        {"good": m.thresholds[0], "poor": m.thresholds[1]} if m.thresholds else None
                    ),
                }
                for m in METRICS
            ]
        }


__all__ = ["CATALOG", "Query", "QueryError"]
