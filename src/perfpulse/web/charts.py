"""Chart data for ``dashboard.js``: the ``data-chart`` / ``data-spark`` documents.

A chart is ``{"title", "unit", "x": [unix seconds], "series": [{"label",
"values"}], "thresholds"?}``; the template puts it in a ``data-chart``
attribute (``{{ chart | tojson }}``, which escapes ``<``, ``>``, ``&`` and
quotes), and the client draws it with uPlot.

Example::

    answer = query.timeseries(view.params(m, q="0.75", step=str(view.step)))
    chart = line_chart("LCP p75", "ms", answer, {"p75": lambda p: p["quantiles"]["0.75"]})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Pick = Callable[[dict[str, Any]], float | None]


def grid(start: float, end: float, step: int) -> list[float]:
    """Every step's start in the window, so gaps show as gaps."""
    first = start - start % step
    return [float(t) for t in range(int(first), int(end), step)]


def line_chart(
    title: str,
    unit: str,
    answer: Mapping[str, Any],
    picks: Mapping[str, Pick],
    *,
    thresholds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One line per pick over the first series of a timeseries answer."""
    x = grid(answer["from"], answer["to"], answer["step"])
    points = {p["ts"]: p for p in answer["series"][0]["points"]} if answer["series"] else {}
    series = [
        {"label": label, "values": [pick(points[t]) if t in points else None for t in x]}
        for label, pick in picks.items()
    ]
    return _chart(title, unit, x, series, thresholds)


def split_chart(
    title: str,
    unit: str,
    answer: Mapping[str, Any],
    pick: Pick,
    label: Callable[[dict[str, Any]], str],
    *,
    limit: int = 6,
) -> dict[str, Any]:
    """One line per series of a grouped timeseries answer (the ``limit`` busiest)."""
    x = grid(answer["from"], answer["to"], answer["step"])
    ranked = sorted(answer["series"], key=lambda s: -sum(p["count"] for p in s["points"]))
    series = []
    for s in ranked[:limit]:
        points = {p["ts"]: p for p in s["points"]}
        series.append(
            {
                "label": label(s["key"]),
                "values": [pick(points[t]) if t in points else None for t in x],
            }
        )
    return _chart(title, unit, x, series, None)


def _chart(
    title: str,
    unit: str,
    x: list[float],
    series: list[dict[str, Any]],
    thresholds: tuple[float, float] | None,
) -> dict[str, Any]:
    if not any(v is not None for s in series for v in s["values"]):
        x, series = [], [{"label": s["label"], "values": []} for s in series]
    chart: dict[str, Any] = {"title": title, "unit": unit, "x": x, "series": series}
    if thresholds is not None:
        chart["thresholds"] = {"good": thresholds[0], "poor": thresholds[1]}
    return chart


def spark(answer: Mapping[str, Any], pick: Pick) -> list[float | None]:
    """A sparkline's values: one pick per step of the first series."""
    x = grid(answer["from"], answer["to"], answer["step"])
    points = {p["ts"]: p for p in answer["series"][0]["points"]} if answer["series"] else {}
    return [pick(points[t]) if t in points else None for t in x]


__all__ = ["grid", "line_chart", "spark", "split_chart"]
