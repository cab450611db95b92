"""What a dashboard URL asks for: a time range and filters, kept in the query string.

``?range=24h&service=shop&release=1.4.0`` always reproduces the same view; a
custom range is ``?range=custom&from=2026-11-20T08:00&to=2026-11-20T12:00``
(UTC, as the ``datetime-local`` inputs send it) or Unix seconds. Any other
parameter a page understands (``route``, ``by``, ``a``/``b`` for Compare…) is
kept as it is, so links that change one thing keep the rest.

Example::

    view = View.parse("/backend", {"range": "6h", "service": "shop"}, now=time.time())
    query.percentiles(view.params(metric("http.server.duration"), q="0.95"))
    view.url(range="24h")     # '/backend?range=24h&service=shop'
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from perfpulse.model.catalog import COMMON_DIMS, Metric

RANGES: dict[str, int] = {
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86_400,
    "7d": 7 * 86_400,
    "30d": 30 * 86_400,
}
RANGE_LABELS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "6h": "Last 6 hours",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "custom": "Custom…",
}
DEFAULT_RANGE = "1h"
FILTERS = (*COMMON_DIMS, "page")
CHART_POINTS = 60


def _instant(text: str) -> float | None:
    """Unix seconds, or a ``datetime-local`` / ISO 8601 time (UTC unless it says)."""
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def local_input(ts: float) -> str:
    """A time as a ``datetime-local`` input value, in UTC."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True, slots=True)
class View:
    path: str
    range: str
    start: float
    end: float
    filters: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def parse(cls, path: str, args: Mapping[str, str], now: float) -> View:
        wanted = args.get("range") or DEFAULT_RANGE
        filters = {k: args[k] for k in FILTERS if args.get(k)}
        extra = {
            k: v for k, v in args.items() if k not in (*FILTERS, "range", "from", "to") and v != ""
        }
        if wanted == "custom":
            start = _instant(args.get("from", ""))
            end = _instant(args.get("to", "")) if args.get("to") else now
            if start is None or end is None:
                error = "Custom range: give a start and an end (UTC)."
            elif start >= end:
                error = "Custom range: the start must be before the end."
            elif end - start > 400 * 86_400:
                error = "Custom range: at most 400 days."
            else:
                return cls(path, "custom", start, end, filters, extra)
            return cls(path, DEFAULT_RANGE, now - RANGES[DEFAULT_RANGE], now, filters, extra, error)
        if wanted not in RANGES:
            error = f"Unknown range {wanted!r}; showing the last hour."
            return cls(path, DEFAULT_RANGE, now - RANGES[DEFAULT_RANGE], now, filters, extra, error)
        return cls(path, wanted, now - RANGES[wanted], now, filters, extra)

    @property
    def span(self) -> float:
        return self.end - self.start

    @property
    def step(self) -> int:
        """A time step giving about :data:`CHART_POINTS` points, on a whole minute;
        from a 12-hour span up, on a whole hour, so that the hourly rollups answer
        (a 24-hour chart then reads 24 rows per series instead of 1,440)."""
        step = max(60, math.ceil(self.span / CHART_POINTS / 60.0) * 60)
        return step if self.span < 12 * 3600 else math.ceil(step / 3600) * 3600

    @property
    def live(self) -> bool:
        """Relative ranges move with time, so they refresh; a custom one does not."""
        return self.range != "custom"

    def params(self, m: Metric | None = None, **more: str) -> dict[str, str]:
        """Query parameters for this window and the filters ``m`` knows."""
        known = m.all_dims if m is not None else COMMON_DIMS
        out = {"from": repr(self.start), "to": repr(self.end)}
        out.update({k: v for k, v in self.filters.items() if k in known})
        out.update(more)
        return out

    def state(self) -> dict[str, str]:
        """The query string that reproduces this view."""
        out: dict[str, str] = {"range": self.range}
        if self.range == "custom":
            out["from"] = local_input(self.start)
            out["to"] = local_input(self.end)
        out.update(self.filters)
        out.update(self.extra)
        return out

    def nav_url(self, path: str) -> str:
        """Another page over the same window and filters, without this page's own
        parameters (``route``, ``metric``…), except the refresh period."""
        state = {k: v for k, v in self.state().items() if k not in self.extra or k == "refresh"}
        return f"{path}?{urlencode(state)}"

    def url(self, path: str | None = None, **changes: str | None) -> str:
        """This view's URL with some parameters changed (``None`` removes one)."""
        state = self.state()
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        return f"{path or self.path}?{urlencode(state)}"


__all__ = ["FILTERS", "RANGES", "RANGE_LABELS", "View", "local_input"]
