"""The budgets file, ``perfpulse-budgets.yaml``: what a build and a live site may cost.

Sections (all optional; docs/budgets.md has the full reference)::

    service: web                  # filters every live check (also environment:)
    window: 1h                    # live window, and the alert rules' window
    resources:                    # per type, like Lighthouse CI's resource-summary
      - {type: script, size: 170KiB, count: 10}
      - {type: total, size: 1MiB}
    files:                        # single files of a static build
      - {glob: "assets/app-*.js", size: 120KiB, compression: brotli}
    static: {compression: gzip, exclude: ["*.map"], types: {"*.mjs": script}}
    timings:                      # RUM at p75
      - {page: "/", LCP: 2500, INP: 200, CLS: 0.1, FCP: 1800, TTFB: 800}
    api:                          # per route
      - {service: checkout, route: /pay, p95: 300, p99: 800, error_ratio: 0.01}
    thresholds:                   # process resources
      - {service: api, cpu: 80, memory: 512MiB}
    baseline: {tolerance: 5%, confidence: 0.95, min_samples: 30}

Sizes are bytes, or a number with KB/KiB/MB/MiB (all binary: 1 KB = 1024 bytes,
as Lighthouse counts). ``Budgets.load(path)`` validates once and raises
:class:`~perfpulse.alerts.yamlpos.ConfigError` with the line and column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfpulse.alerts.expr import parse_duration
from perfpulse.alerts.yamlpos import ConfigError, YList, YMap, load

TYPES = ("script", "stylesheet", "image", "font", "document", "media", "other", "total")
COMPRESSIONS = ("raw", "gzip", "brotli")
VITALS = ("LCP", "INP", "CLS", "FCP", "TTFB")
TIMING_FILTERS = ("page", "device", "browser", "connection", "service", "environment")
API_FILTERS = ("service", "route", "method", "environment")
THRESHOLD_FILTERS = ("service", "host", "environment")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SCALE = {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3}
_SCALE["gib"] = 1024**3


@dataclass(frozen=True, slots=True)
class ResourceBudget:
    type: str
    size: float | None = None
    count: float | None = None


@dataclass(frozen=True, slots=True)
class FileBudget:
    glob: str
    size: float
    compression: str


@dataclass(frozen=True, slots=True)
class LimitSet:
    """Limits on one scope: ``filters`` (dimension → value) and ``limits`` (name → number)."""

    filters: Mapping[str, str]
    limits: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Baseline:
    tolerance: float = 0.05
    error_tolerance: float = 0.01
    confidence: float = 0.95
    min_samples: int = 30
    resamples: int = 1000
    max_samples: int = 2000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Budgets:
    resources: tuple[ResourceBudget, ...] = ()
    files: tuple[FileBudget, ...] = ()
    compression: str = "gzip"
    exclude: tuple[str, ...] = ("*.map",)
    types: Mapping[str, str] = field(default_factory=dict)
    timings: tuple[LimitSet, ...] = ()
    api: tuple[LimitSet, ...] = ()
    thresholds: tuple[LimitSet, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)
    window_s: float = 3600.0
    baseline: Baseline = Baseline()
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> Budgets:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from None
        return parse_budgets(text, path)

    @property
    def live(self) -> bool:
        return bool(self.timings or self.api or self.thresholds or self.resources)


def parse_size(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    m = _SIZE.match(str(raw))
    if not m:
        raise ValueError(f"bad size {raw!r}: use bytes or e.g. 170KiB, 1.5MB")
    return float(m.group(1)) * _SCALE[(m.group(2) or "b").lower()]


def _ratio(raw: Any) -> float:
    text = str(raw).strip()
    value = float(text.removesuffix("%"))
    return value / 100.0 if text.endswith("%") else value


def _keys(doc: YMap, allowed: tuple[str, ...], what: str) -> None:
    for key in doc:
        if key not in allowed:
            raise doc.error(key, f"{what}: unknown key {key!r}; known: {', '.join(allowed)}")


def _items(doc: YMap, key: str) -> list[tuple[YMap, YList, int]]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, YList):
        raise doc.error(key, f"{key!r} must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, YMap):
            raise value.error(i, f"{key}: each entry must be a mapping")
        out.append((item, value, i))
    return out


def _number(doc: YMap, key: str, what: str, size: bool = False) -> float:
    try:
        value = parse_size(doc[key]) if size else float(doc[key])
    except (TypeError, ValueError) as exc:
        raise doc.error(key, f"{what}: {key!r}: {exc}") from None
    if not math.isfinite(value) or value < 0:
        raise doc.error(key, f"{what}: {key!r} must be a number ≥ 0")
    return value


def _limit_sets(
    doc: YMap, key: str, filters: tuple[str, ...], limits: dict[str, bool]
) -> tuple[LimitSet, ...]:
    """Entries with filter keys (text) and limit keys (numbers; True = a size)."""
    out = []
    for item, _, _ in _items(doc, key):
        _keys(item, (*filters, *limits), key)
        found = {k: _number(item, k, key, size) for k, size in limits.items() if k in item}
        if not found:
            raise item.error(None, f"{key}: give at least one of {', '.join(limits)}")
        out.append(LimitSet({k: str(item[k]) for k in filters if k in item}, found))
    return tuple(out)


def parse_budgets(text: str, path: Path | None = None) -> Budgets:
    where = str(path) if path else ""
    doc = load(text, where)
    if doc is None:
        return Budgets(path=path)
    if not isinstance(doc, YMap):
        raise ConfigError("the budgets file must be a mapping", where, 1, 1)
    top = ("version", "service", "environment", "window", "resources", "files", "static")
    _keys(doc, (*top, "timings", "api", "thresholds", "baseline"), "budgets")
    resources = []
    for item, _, _ in _items(doc, "resources"):
        _keys(item, ("type", "size", "count"), "resources")
        rtype = str(item.get("type", ""))
        if rtype not in TYPES:
            raise item.error("type", f"resources: 'type' must be one of {', '.join(TYPES)}")
        size = _number(item, "size", "resources", True) if "size" in item else None
        count = _number(item, "count", "resources") if "count" in item else None
        if size is None and count is None:
            raise item.error(None, "resources: give 'size', 'count' or both")
        resources.append(ResourceBudget(rtype, size, count))
    static = doc.get("static") or YMap()
    if not isinstance(static, YMap):
        raise doc.error("static", "'static' must be a mapping")
    _keys(static, ("compression", "exclude", "types"), "static")
    compression = str(static.get("compression", "gzip"))
    if compression not in COMPRESSIONS:
        raise static.error("compression", f"'compression' is one of {', '.join(COMPRESSIONS)}")
    types = {str(k): str(v) for k, v in dict(static.get("types") or {}).items()}
    for glob, t in types.items():
        if t not in TYPES or t == "total":
            raise static.error("types", f"static.types: {glob!r} maps to unknown type {t!r}")
    files = []
    for item, _, _ in _items(doc, "files"):
        _keys(item, ("glob", "size", "compression"), "files")
        if "glob" not in item or "size" not in item:
            raise item.error(None, "files: each entry needs 'glob' and 'size'")
        comp = str(item.get("compression", compression))
        if comp not in COMPRESSIONS:
            raise item.error("compression", f"'compression' is one of {', '.join(COMPRESSIONS)}")
        files.append(FileBudget(str(item["glob"]), _number(item, "size", "files", True), comp))
    baseline_doc = doc.get("baseline") or YMap()
    if not isinstance(baseline_doc, YMap):
        raise doc.error("baseline", "'baseline' must be a mapping")
    _keys(
        baseline_doc,
        ("tolerance", "error_tolerance", "confidence", "min_samples", "resamples", "max_samples"),
        "baseline",
    )
    try:
        b = Baseline(
            tolerance=_ratio(baseline_doc.get("tolerance", 0.05)),
            error_tolerance=_ratio(baseline_doc.get("error_tolerance", 0.01)),
            confidence=_ratio(baseline_doc.get("confidence", 0.95)),
            min_samples=int(baseline_doc.get("min_samples", 30)),
            resamples=int(baseline_doc.get("resamples", 1000)),
            max_samples=int(baseline_doc.get("max_samples", 2000)),
        )
    except (TypeError, ValueError) as exc:
        raise baseline_doc.error(None, f"baseline: {exc}") from None
    if not 0.5 <= b.confidence < 1.0:
        raise baseline_doc.error("confidence", "baseline: 'confidence' must be in [0.5, 1)")
    try:
        window = parse_duration(str(doc.get("window", "1h")))
    except ValueError as exc:
        raise doc.error("window", str(exc)) from None
    filters = {k: str(doc[k]) for k in ("service", "environment") if k in doc}
    return Budgets(
        resources=tuple(resources),
        files=tuple(files),
        compression=compression,
        exclude=tuple(str(g) for g in static.get("exclude", ["*.map"]) or ()),
        types=types,
        timings=_limit_sets(doc, "timings", TIMING_FILTERS, dict.fromkeys(VITALS, False)),
        api=_limit_sets(
            doc,
            "api",
            API_FILTERS,
            {"p50": False, "p95": False, "p99": False, "error_ratio": False},
        ),
        thresholds=_limit_sets(
            doc, "thresholds", THRESHOLD_FILTERS, {"cpu": False, "memory": True}
        ),
        filters=filters,
        window_s=window,
        baseline=b,
        path=path,
    )


__all__ = [
    "Baseline",
    "Budgets",
    "FileBudget",
    "LimitSet",
    "ResourceBudget",
    "parse_budgets",
    "parse_size",
]
