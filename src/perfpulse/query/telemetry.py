"""Traces, logs and OpenTelemetry metrics: the read path for what OTLP brings.

- ``trace(trace_id)``: every span of one trace as a tree (children by start time).
- ``traces``: recent root spans (the requests), newest first.
- ``logs``: search by time range, service, level, text contained in the message,
  trace id or request id; newest first, paginated with an opaque ``cursor``.
- ``otel_metrics``: the metric names seen; ``otel_series``: one metric per time
  step, grouped by attributes. Gauges give avg/min/max/last; sums give the total
  per step (cumulative sums are turned into increases, counter resets handled);
  histograms give count, sum and quantiles. Explicit-bucket quantiles are
  interpolated inside the bucket (as Prometheus' ``histogram_quantile`` does);
  exponential-histogram buckets are folded into perfpulse's log-bucket sketch at
  their geometric midpoints, so their error is the exporter's bucket width.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from perfpulse.query.service import Query, QueryError, _int, _list
from perfpulse.sketch import Sketch

LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
_TRACE_FILTERS = ("service", "environment", "release", "name")
_LOG_FILTERS = ("service", "environment", "release", "host", "trace_id", "request_id", "logger")
_OTEL_FILTERS = ("service", "environment", "release", "host")


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


class Telemetry:
    """Questions about spans, logs and OTLP metrics (same parameters as Query)."""

    def __init__(self, query: Query) -> None:
        self.query = query
        self.backend = query.backend

    # --- traces --------------------------------------------------------------------

    def trace(self, trace_id: str) -> dict[str, Any]:
        if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
            raise QueryError(f"bad trace id {trace_id!r}: 32 lowercase hex digits")
        spans = self.backend.trace(trace_id)
        nodes: dict[str, dict[str, Any]] = {}
        for s in spans:
            s["attributes"] = _json(s["attributes"])
            s["events"] = _json(s["events"])
            s["children"] = []
            nodes[s["span_id"]] = s
        roots: list[dict[str, Any]] = []
        for s in spans:
            parent = nodes.get(s["parent_id"] or "")
            (parent["children"] if parent else roots).append(s)
        start = min((s["ts"] for s in spans), default=None)
        end = max((s["ts"] + s["duration_ms"] / 1000 for s in spans), default=None)
        return {
            "trace_id": trace_id,
            "span_count": len(spans),
            "start": start,
            "duration_ms": (end - start) * 1000 if start is not None and end is not None else None,
            "roots": roots,
        }

    def traces(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self.query.window(params)
        limit = _int(params, "limit", 50, 1, 1000)
        raw = params.get("min_duration_ms")
        try:
            min_ms = float(raw) if raw else None
        except ValueError:
            raise QueryError(f"'min_duration_ms' must be a number, got {raw!r}") from None
        filters = {k: v for k, v in params.items() if k in _TRACE_FILTERS}
        rows = self.backend.traces(start, end, limit, filters, min_ms)
        for r in rows:
            r["attributes"] = _json(r["attributes"])
            r.pop("events", None)
        return {"from": start, "to": end, "traces": rows}

    # --- logs ----------------------------------------------------------------------

    def logs(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self.query.window(params)
        limit = _int(params, "limit", 100, 1, 1000)
        levels = _list(params.get("level"))
        for level in levels:
            if level not in LOG_LEVELS:
                raise QueryError(f"bad level {level!r}; one of {', '.join(LOG_LEVELS)}")
        cursor = None
        if params.get("cursor"):
            ts_text, _, last_id = params["cursor"].partition(":")
            try:
                cursor = (int(ts_text), last_id)
            except ValueError:
                raise QueryError("bad cursor: pass back the 'next_cursor' you were given") from None
        filters = {k: v for k, v in params.items() if k in _LOG_FILTERS}
        rows = self.backend.logs(start, end, limit + 1, filters, levels, params.get("q"), cursor)
        more = len(rows) > limit
        rows = rows[:limit]
        for r in rows:
            r["ts"] = r.pop("ts_us") / 1e6
            r["attributes"] = _json(r["attributes"])
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = f"{round(last['ts'] * 1e6)}:{last['id']}"
        return {"from": start, "to": end, "logs": rows, "next_cursor": next_cursor}

    # --- OpenTelemetry metrics ---------------------------------------------------------

    def otel_metrics(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self.query.window(params)
        return {"from": start, "to": end, "metrics": self.backend.otel_metric_names(start, end)}

    def otel_series(self, params: Mapping[str, str]) -> dict[str, Any]:
        name = params.get("name")
        if not name:
            raise QueryError("'name' is required (see GET /api/v1/otel/metrics)")
        start, end = self.query.window(params)
        span = end - start
        step = _int(params, "step", max(60, math.ceil(span / 120 / 60) * 60), 1, 86_400 * 31)
        qs = [v for _, v in self.query.quantiles(params)]
        by = _list(params.get("by"))
        attr_filters = {k[5:]: v for k, v in params.items() if k.startswith("attr.")}
        filters = {k: v for k, v in params.items() if k in _OTEL_FILTERS}
        points = self.backend.otel_points(name, start, end, filters)
        if not points:
            return {"name": name, "type": None, "step": step, "series": []}
        kind, unit = points[0]["type"], points[0]["unit"]
        groups: dict[tuple[Any, ...], dict[float, list[dict[str, Any]]]] = {}
        for p in _deltas(points, start):
            attrs = json.loads(p["attributes"] or "{}")
            if any(str(attrs.get(k)) != v for k, v in attr_filters.items()):
                continue
            key = tuple(attrs.get(k) for k in by)
            slot = math.floor(p["ts"] / step) * step
            groups.setdefault(key, {}).setdefault(slot, []).append(p)
        series = []
        for key, slots in groups.items():
            series.append(
                {
                    "key": dict(zip(by, key, strict=True)),
                    "points": [
                        {"ts": slot, **_aggregate(kind, slots[slot], qs)} for slot in sorted(slots)
                    ],
                }
            )
        return {"name": name, "type": kind, "unit": unit, "step": step, "series": series}


_CUMULATIVE_FIELDS = ("value", "count", "sum")


def _deltas(points: list[dict[str, Any]], window_start: float) -> list[dict[str, Any]]:
    """Cumulative sums and histograms become per-point increases (resets restart).

    The first point of a cumulative series counts from zero when the series
    started inside the window; otherwise it only sets the base."""
    out: list[dict[str, Any]] = []
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for p in points:
        if p["temporality"] != "cumulative" or p["type"] == "gauge":
            out.append(p)
            continue
        series = (p["service"], p["attributes"] or "")
        prev = last.get(series)
        last[series] = p
        if prev is None:
            if p["start_ts"] is not None and p["start_ts"] >= window_start:
                out.append(p)
            continue
        reset = (p["count"] if p["count"] is not None else p["value"] or 0) < (
            prev["count"] if prev["count"] is not None else prev["value"] or 0
        )
        d = dict(p)
        if not reset:
            for f in _CUMULATIVE_FIELDS:
                if p[f] is not None and prev[f] is not None:
                    d[f] = p[f] - prev[f]
            if p["counts"] and prev["counts"] and p["type"] == "histogram":
                now, before = json.loads(p["counts"]), json.loads(prev["counts"])
                if len(now) == len(before):
                    d["counts"] = json.dumps([a - b for a, b in zip(now, before, strict=True)])
        out.append(d)
    return out


def _aggregate(kind: str, points: list[dict[str, Any]], qs: list[float]) -> dict[str, Any]:
    if kind == "gauge":
        values = [p["value"] for p in points]
        return {
            "avg": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "last": values[-1],
            "samples": len(values),
        }
    if kind == "sum":
        return {"value": sum(p["value"] for p in points), "samples": len(points)}
    count = sum(p["count"] or 0 for p in points)
    total = sum(p["sum"] or 0.0 for p in points)
    out: dict[str, Any] = {"count": count, "sum": total, "mean": total / count if count else None}
    if kind == "histogram":
        out["quantiles"] = {str(q): _explicit_quantile(points, q) for q in qs}
    elif kind == "exponential_histogram":
        sketch = Sketch()
        for p in points:
            base = 2.0 ** (2.0 ** -(p["scale"] or 0))
            if p["zero_count"]:
                sketch.add(0.0, p["zero_count"])
            for i, c in enumerate(json.loads(p["counts"] or "[]")):
                if c:
                    index = (p["offset"] or 0) + i
                    sketch.add(base ** (index + 0.5), c)
        out["quantiles"] = {str(q): v for q, v in sketch.quantiles(qs).items()}
    return out


def _explicit_quantile(points: list[dict[str, Any]], q: float) -> float | None:
    merged: dict[tuple[float, ...], list[int]] = {}
    highest: float | None = None
    for p in points:
        bounds = tuple(json.loads(p["bounds"] or "[]"))
        counts = json.loads(p["counts"] or "[]")
        if len(counts) != len(bounds) + 1:
            continue
        acc = merged.setdefault(bounds, [0] * len(counts))
        for i, c in enumerate(counts):
            acc[i] += c
        if p["max"] is not None:
            highest = p["max"] if highest is None else max(highest, p["max"])
    if not merged:
        return None
    bounds, counts = max(merged.items(), key=lambda kv: sum(kv[1]))
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c > 0:
            lower = bounds[i - 1] if i > 0 else min(0.0, bounds[0]) if bounds else 0.0
            if i == len(bounds):  # the +Inf bucket: the largest value seen, else the last bound
                return highest if highest is not None else (bounds[-1] if bounds else None)
            upper = bounds[i]
            return lower + (upper - lower) * (rank - cumulative) / c
        cumulative += c
    return bounds[-1] if bounds else None
