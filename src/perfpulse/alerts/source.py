"""Where the evaluator gets its numbers: a small :class:`Source` protocol.

:class:`QuerySource` answers from the collector's query layer (the one read
path); :class:`MemorySource` answers from series you construct, which is what
evaluator tests and dry runs use. Any object with a ``percentiles(params)``
method answering like ``GET /api/v1/percentiles`` (the :class:`Reader` protocol:
:class:`~perfpulse.query.service.Query` itself, or an HTTP client) can measure
an expression through :func:`measure_samples`.

Example::

    source = MemorySource()
    m = parse("p95(http.server.duration) > 300").measure
    source.put(m, {}, ts=100.0, value=320.0)
    source.measure(m, now=120.0)    # [Sample(labels=(), value=320.0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from perfpulse.alerts.expr import Measure, Selector
from perfpulse.alerts.share import share_below
from perfpulse.query.service import Query

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value: ``labels`` are the ``by`` labels, sorted by name."""

    labels: Labels
    value: float


class Reader(Protocol):
    def percentiles(self, params: Mapping[str, str]) -> dict[str, Any]: ...


class Source(Protocol):
    """The evaluator's data: a measure's current samples and good/total counts."""

    def measure(self, m: Measure, now: float) -> list[Sample]: ...

    def good_total(
        self, sel: Selector, threshold: float | None, start: float, end: float
    ) -> tuple[int, int]:
        """(good, total) over ``[start, end)``: good is at or below ``threshold``,
        or, when ``threshold`` is None, not an error (5xx, failed statement)."""
        ...


def measure_samples(reader: Reader, m: Measure, now: float) -> list[Sample]:
    """Evaluate ``m`` for the window ending ``now`` through a percentiles reader."""
    answer = reader.percentiles(m.params(now))
    out = []
    for group in answer["groups"]:
        value = m.value(group, m.selector.window)
        if value is None:
            continue
        labels = tuple(sorted((k, "" if v is None else str(v)) for k, v in group["key"].items()))
        out.append(Sample(labels, value))
    return out


class QuerySource:
    """Answers from the query layer, in the collector's own process."""

    def __init__(self, query: Query) -> None:
        self.query = query

    def measure(self, m: Measure, now: float) -> list[Sample]:
        return measure_samples(self.query, m, now)

    def good_total(
        self, sel: Selector, threshold: float | None, start: float, end: float
    ) -> tuple[int, int]:
        params = {"metric": sel.metric.name, "from": repr(start), "to": repr(end), "q": ""}
        params.update(sel.matchers)
        if threshold is not None:
            groups = share_below(self.query, params, threshold)["groups"]
            if not groups:
                return 0, 0
            return int(groups[0]["below"]), int(groups[0]["count"])
        found = self.query.percentiles(params)["groups"]
        if not found:
            return 0, 0
        n = int(found[0]["count"])
        bad = round((found[0].get("error_ratio") or 0.0) * n)
        return n - bad, n


def _key(sel: Selector) -> str:
    return str(sel).rsplit("[", 1)[0]


class MemorySource:
    """Constructed series: points per measure and label set, counts per selector.

    :meth:`measure` answers, for each label set, the latest point inside the
    measure's window; a label set with no point there is absent (no data).
    """

    def __init__(self) -> None:
        self.points: dict[str, dict[Labels, list[tuple[float, float]]]] = {}
        self.counts: dict[tuple[str, float | None], list[tuple[float, int, int]]] = {}

    def put(self, m: Measure | str, labels: Mapping[str, str], ts: float, value: float) -> None:
        key = tuple(sorted(labels.items()))
        self.points.setdefault(str(m), {}).setdefault(key, []).append((ts, value))

    def put_counts(
        self, sel: Selector, threshold: float | None, ts: float, good: int, total: int
    ) -> None:
        self.counts.setdefault((_key(sel), threshold), []).append((ts, good, total))

    def measure(self, m: Measure, now: float) -> list[Sample]:
        out = []
        for labels, points in self.points.get(str(m), {}).items():
            inside = [(ts, v) for ts, v in points if now - m.selector.window < ts <= now]
            if inside:
                out.append(Sample(labels, max(inside)[1]))
        return out

    def good_total(
        self, sel: Selector, threshold: float | None, start: float, end: float
    ) -> tuple[int, int]:
        rows = [r for r in self.counts.get((_key(sel), threshold), []) if start <= r[0] < end]
        return sum(r[1] for r in rows), sum(r[2] for r in rows)


__all__ = ["Labels", "MemorySource", "QuerySource", "Reader", "Sample", "Source", "measure_samples"]
