"""Breakdowns of raw rows: ``GET /api/v1/breakdown``.

Where percentiles come from the mergeable rollups, some questions are about the
raw events themselves: which statements took the most total time, which LCP
elements are the slowest, the slowest requests of one route. Those read raw rows
(so only within raw retention, 14 days by default), grouped and aggregated
exactly by the storage backend.

Parameters:

- ``source``: a raw table (``http``, ``db``, ``cache``, ``n_plus_one``,
  ``pool``, ``error``, ``rum_view``, ``rum_vital``, ``rum_resource``,
  ``rum_largest``, ``span``, ``log``, …);
- ``by``: columns to group by, comma-separated; ``attribution.<key>`` reads a
  key of a vital's attribution;
- ``measure``: comma-separated ``count`` or ``fn:column`` (``sum``, ``avg``,
  ``max``, ``min``, ``p50``, ``p75``, ``p95``, ``p99``, ``true``); none
  (``measure=``) lists rows instead, ordered by ``order``;
- ``order``: a measure (or, for a listing, a column), descending;
- ``min.<column>=N``: only rows with that column ≥ N;
- ``from`` / ``to`` / ``limit`` (1–1000, default 10); any other ``column=value``
  is an equality filter.

Example::

    rows(query, {"source": "db", "by": "fingerprint",
                 "measure": "count,sum:duration_ms", "order": "sum:duration_ms"})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from perfpulse.query.service import Query, QueryError, _int, _list
from perfpulse.store.base import BadRowQuery, RowQuery, measure_name

_OWN = frozenset({"source", "by", "measure", "order", "from", "to", "limit", "token"})


def rows(query: Query, params: Mapping[str, str]) -> dict[str, Any]:
    source = params.get("source")
    if not source:
        raise QueryError("'source' is required (a raw table such as http, db, rum_vital)")
    start, end = query.window(params)
    measures = tuple(_list(params.get("measure", "count")))
    by = tuple(_list(params.get("by")))
    order = params.get("order") or (measures[0] if measures else "ts")
    where: list[tuple[str, str, float]] = []
    filters: list[tuple[str, str]] = []
    for key, value in params.items():
        if key in _OWN:
            continue
        if key.startswith("min."):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise QueryError(f"{key!r} must be a number, got {value!r}")
            where.append((key[4:], ">=", number))
        else:
            filters.append((key, value))
    rq = RowQuery(
        table=source,
        start=start,
        end=end,
        filters=tuple(filters),
        by=by,
        measures=measures,
        where=tuple(where),
        order=order,
        limit=_int(params, "limit", 10, 1, 1000),
    )
    try:
        found = query.backend.rows(rq)
    except BadRowQuery as exc:
        raise QueryError(str(exc)) from None
    return {
        "source": source,
        "from": start,
        "to": end,
        "by": list(by),
        "measures": [measure_name(m) for m in measures],
        "order": measure_name(order) if measures else order,
        "rows": found,
    }


__all__ = ["rows"]
