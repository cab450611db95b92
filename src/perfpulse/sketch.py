"""The mergeable log-bucket quantile sketch (the DDSketch idea).

A positive value ``v`` goes to bucket ``ceil(log(v) / log(GAMMA))`` where
``GAMMA = (1 + ALPHA) / (1 - ALPHA)``. Every value in bucket ``i`` lies in
``(GAMMA**(i-1), GAMMA**i]``, so reading the bucket back as
``2 * GAMMA**i / (GAMMA + 1)`` is within ``ALPHA`` (1 %) of any value in it.

Zero (and anything below :data:`MIN_POSITIVE`) has its own bucket, and negative
values mirror the positive ones below it, so the integer bucket keys sort in the
same order as the values they hold. A sketch is just ``{bucket: count}``:
merging two sketches adds their counts, which is ``SUM(count) GROUP BY bucket`` in
any SQL engine. That is why per-minute rollups can be combined into any window
without ever averaging a percentile.

Quantiles use the nearest-rank definition (DuckDB's ``quantile_disc``): the
value of rank ``max(1, ceil(q * n))`` among the ``n`` sorted values.

Example::

    s = Sketch()
    for v in (12.0, 15.5, 230.0):
        s.add(v)
    s.quantile(0.5)   # ~15.5, within 1 %
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
MIN_POSITIVE = 1e-9
ZERO_BUCKET = -100_000
NEGATIVE_BASE = -200_000


def bucket_of(value: float) -> int:
    """The bucket key of ``value`` (keys sort like values)."""
    if value > MIN_POSITIVE:
        return math.ceil(math.log(value) / LOG_GAMMA)
    if value < -MIN_POSITIVE:
        return NEGATIVE_BASE - math.ceil(math.log(-value) / LOG_GAMMA)
    return ZERO_BUCKET


def value_of(bucket: int) -> float:
    """The representative value of a bucket: within ALPHA of anything in it."""
    if bucket == ZERO_BUCKET:
        return 0.0
    if bucket < ZERO_BUCKET:
        return -value_of(NEGATIVE_BASE - bucket)
    return 2.0 * GAMMA**bucket / (GAMMA + 1.0)


def nearest_rank(q: float, n: int) -> int:
    """1-based rank of quantile ``q`` among ``n`` values (``quantile_disc``)."""
    return max(1, math.ceil(q * n - 1e-9))


def quantiles_from_counts(
    counts: Iterable[tuple[int, int]], qs: Iterable[float]
) -> dict[float, float | None]:
    """Quantiles from ``(bucket, count)`` pairs (any order, repeats merged)."""
    merged: dict[int, int] = {}
    for bucket, count in counts:
        merged[bucket] = merged.get(bucket, 0) + count
    return Sketch(merged).quantiles(qs)


class Sketch:
    """A log-bucket sketch held in memory: the reference the SQL path must match."""

    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    def add(self, value: float, count: int = 1) -> None:
        key = bucket_of(value)
        self.counts[key] = self.counts.get(key, 0) + count

    def merge(self, other: Sketch) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        return self.quantiles((q,))[q]

    def quantiles(self, qs: Iterable[float]) -> dict[float, float | None]:
        wanted = sorted(set(qs))
        n = self.count
        result: dict[float, float | None] = dict.fromkeys(wanted)
        if n == 0:
            return result
        ranks = [(nearest_rank(q, n), q) for q in wanted]
        cumulative = 0
        i = 0
        for key in sorted(self.counts):
            cumulative += self.counts[key]
            while i < len(ranks) and ranks[i][0] <= cumulative:
                result[ranks[i][1]] = value_of(key)
                i += 1
            if i == len(ranks):
                break
        return result
