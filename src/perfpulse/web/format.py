"""How numbers look on the dashboard: one function per unit, shared by every page.

Registered as Jinja2 filters (``{{ value | fmt("ms") }}``); ``None`` shows as
an en dash so a missing value never reads as zero.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from perfpulse.model.catalog import RATINGS

DASH = "–"
RATING_LABELS = {"good": "Good", "needs_improvement": "Needs improvement", "poor": "Poor"}
RATING_CLASSES = {"good": "good", "needs_improvement": "ni", "poor": "poor"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value: Any, digits: int = 0) -> str:
    if _missing(value):
        return DASH
    return f"{float(value):,.{digits}f}"


def ms(value: Any) -> str:
    if _missing(value):
        return DASH
    v = float(value)
    if abs(v) >= 10_000:
        return f"{v / 1000:,.1f} s"
    if abs(v) >= 1000:
        return f"{v / 1000:,.2f} s"
    if abs(v) >= 10:
        return f"{v:,.0f} ms"
    return f"{v:,.1f} ms"


def size(value: Any) -> str:
    if _missing(value):
        return DASH
    v = float(value)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.1f} {unit}"
    return f"{v:,.0f} B"


def ratio(value: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    if _missing(value):
        return DASH
    return f"{float(value) * 100:,.{digits}f} %"


def fmt(value: Any, unit: str = "1") -> str:
    """A value in a catalog unit: ``ms``, ``bytes``, ``percent``, ``ratio``, ``1``…"""
    if unit == "ms":
        return ms(value)
    if unit == "bytes":
        return size(value)
    if unit == "ratio":
        return ratio(value)
    if unit == "percent":
        return DASH if _missing(value) else f"{float(value):,.1f} %"
    if unit == "req/s":
        return DASH if _missing(value) else f"{float(value):,.2f}/s"
    if unit == "s":
        return DASH if _missing(value) else f"{float(value):,.1f} s"
    if _missing(value):
        return DASH
    v = float(value)
    if v != 0 and abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:,.0f}" if v == int(v) else f"{v:,.2f}"


def when(ts: Any) -> str:
    """Unix seconds as a UTC time."""
    if _missing(ts):
        return DASH
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def rating_label(rating: str | None) -> str:
    return RATING_LABELS.get(rating or "", "No data")


def rating_class(rating: str | None) -> str:
    return RATING_CLASSES.get(rating or "", "none")


FILTERS = {
    "fmt": fmt,
    "ms": ms,
    "size": size,
    "ratio": ratio,
    "number": number,
    "when": when,
    "rating_label": rating_label,
    "rating_class": rating_class,
}

__all__ = ["FILTERS", "RATINGS", "fmt", "ms", "number", "ratio", "size", "when"]
