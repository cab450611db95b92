"""The share of values at or below a threshold, read from the log-bucket sketches.

A latency SLO ("99 % of /pay requests under 300 ms") needs the number of values
at or below a threshold, which no percentile answers directly. The backend's
``sketch()`` answers nearest-rank quantiles, and the value of rank ``r`` is at
or below the threshold exactly when ``r <= good`` (the number of such values).
So :func:`share_below` searches ``good`` with a few batched rank probes: each
``sketch()`` call asks for up to :data:`PROBES` ranks between the bounds found so
far, narrowing them ``PROBES + 1``-fold; a million values take five calls.

The comparison is at sketch resolution: a value counts as "at or below" when its
bucket is at or below the threshold's bucket, so values up to 1 % above the
threshold may count as good (docs/alerts.md). No SQL here: only
:class:`~perfpulse.store.base.SketchQuery` questions through the one read path.

Example::

    share_below(query, {"metric": "http.server.duration", "route": "/pay",
                        "from": "1790000000", "to": "1792592000"}, 300.0)
    # {"metric": ..., "threshold": 300.0, "groups": [{"key": {}, "count": 51234,
    #   "below": 50980, "share": 0.99504}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perfpulse.query.service import Query, QueryError
from perfpulse.sketch import bucket_of
from perfpulse.store.base import SketchQuery

PROBES = 19
MAX_ROUNDS = 64


def _count_good(query: Query, sq: SketchQuery, n: int, limit_bucket: int) -> tuple[int, int]:
    """(values at or below the threshold bucket, total) for a single-group question."""
    lo, hi = 0, n  # invariant: lo <= good <= hi
    for _ in range(MAX_ROUNDS):
        if lo == hi:
            break
        span = hi - lo
        ranks = sorted({lo + max(1, round(span * (i + 1) / (PROBES + 1))) for i in range(PROBES)})
        ranks = [r for r in ranks if lo < r <= hi]
        qs = tuple((r - 0.5) / n for r in ranks)
        groups, _ = query.backend.sketch(
            SketchQuery(sq.metric, sq.start, sq.end, (), sq.filters, qs)
        )
        if not groups:
            return 0, 0
        if groups[0].count != n:  # data arrived meanwhile: start over with the new total
            n = groups[0].count
            lo, hi = 0, n
            continue
        for r, q in zip(ranks, qs, strict=True):
            value = groups[0].quantiles[q]
            if value is None:
                continue
            if bucket_of(value) <= limit_bucket:
                lo = max(lo, r)
            else:
                hi = min(hi, r - 1)
    return lo, n


def share_below(query: Query, params: Mapping[str, str], threshold: float) -> dict[str, Any]:
    """Per group: how many values are at or below ``threshold``, and their share.

    ``params`` are the usual query parameters (``metric``, ``from``, ``to``, ``by``
    and filters); quantiles are ignored. Raises :class:`QueryError`.
    """
    m = query.metric(params)
    start, end = query.window(params)
    by, filters = query.dims(m, params)
    base = SketchQuery(m, start, end, by, filters, ())
    groups, _ = query.backend.sketch(base)
    limit_bucket = bucket_of(threshold)
    out = []
    for g in groups:
        key = dict(zip(by, g.key, strict=True))
        if any(v is None for v in g.key):
            raise QueryError(
                f"share_below cannot split on a missing {'/'.join(by)} value; filter instead"
            )
        one = SketchQuery(m, start, end, (), (*filters, *((k, str(v)) for k, v in key.items())))
        below, n = _count_good(query, one, g.count, limit_bucket)
        out.append({"key": key, "count": n, "below": below, "share": below / n if n else None})
    return {"metric": m.name, "threshold": threshold, "from": start, "to": end, "groups": out}


__all__ = ["share_below"]
