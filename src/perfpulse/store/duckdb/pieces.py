"""Sketch pieces in numpy: merging the parts of a window into one sketch per group.

The read statements (:mod:`perfpulse.store.duckdb.sql`) return each part of a
window — whole hours, edge minutes, edge raw rows — as *pieces*: one row per
bucket count (``kind`` 0), outcome count (1) or sum (2), tagged with its time
step ``tb`` and its group ``gid``. :func:`sketch_groups` adds the counts of
equal buckets per group (one dense ``bincount`` when the bucket range is narrow,
a sort otherwise) and reads the quantiles from the cumulative counts: no
percentile is ever averaged.

The whole hours of a question without time steps are merged per series and kept
in an :class:`HourCache`, so the next question over the same hours (a dashboard
refreshing "the last 24 hours" during one hour) reads only its edges::

    cache = HourCache()
    version = cache.version
    pieces = cache.get(key) or Pieces.of(cursor.execute(...).fetchnumpy())
    cache.put(key, pieces, version)   # unless a flush wrote those hours meanwhile
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from perfpulse.sketch import ZERO_BUCKET, bucket_of, grouped_quantiles, values_of
from perfpulse.store.base import SketchGroup, SketchQuery

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
OUTCOMES = 8  # outcome codes are 0..7
DENSE_CELLS = 8_000_000  # groups x bucket range up to which quantiles use one dense array


def _ints(values: Any) -> I64:
    return np.asarray(values, dtype=np.int64)


@dataclass(slots=True)
class Pieces:
    """Sketch pieces as parallel numpy columns (see the module)."""

    kind: I64
    tb: I64
    gid: I64
    k: I64
    c: F64
    s: F64

    @classmethod
    def of(cls, result: Mapping[str, Any], gid: I64 | None = None) -> Pieces:
        """From ``fetchnumpy()`` of a pieces statement; ``gid`` replaces its group
        column (raw pieces are grouped by their values, which the caller numbers)."""
        n = len(result["kind"])
        return cls(
            kind=_ints(result["kind"]),
            tb=_ints(result["tb"]) if "tb" in result else np.zeros(n, dtype=np.int64),
            gid=_ints(result["gid"] if gid is None else gid),
            k=_ints(result["k"]),
            c=np.asarray(result["c"], dtype=np.float64),
            s=np.asarray(result["s"], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.kind)

    def regroup(self, lookup: I64) -> Pieces:
        """Pieces whose ``gid`` holds a series id, renumbered by ``lookup[series]``;
        series that map to -1 are left out."""
        gid = lookup[self.gid]
        keep = gid >= 0
        return Pieces(
            self.kind[keep], self.tb[keep], gid[keep], self.k[keep], self.c[keep], self.s[keep]
        )

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        if len(parts) == 1:
            return parts[0]
        return cls(
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("kind", "tb", "gid", "k", "c", "s")
            )
        )

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in ("kind", "tb", "gid", "k", "c", "s"))


def group_ids(columns: list[Any], groups: dict[tuple[Any, ...], int]) -> I64:
    """Group ids of rows with these group-by values (masked or object arrays),
    numbering new values as they come."""
    if not columns:
        return np.zeros(0, dtype=np.int64)
    values = [c.tolist() for c in columns]  # masked values come back as None
    setdefault = groups.setdefault
    return np.fromiter(
        (setdefault(key, len(groups)) for key in zip(*values, strict=True)),
        dtype=np.int64,
        count=len(values[0]),
    )


class HourCache:
    """Whole-hour parts merged per series, by ``(metric, from, to)``; at most
    ``max_bytes`` of them, the least recently used going first.

    :meth:`forget` drops every entry over an hour a flush wrote to; :meth:`put`
    refuses an entry computed before such a flush (``version`` read before the
    statement ran), so no stale answer is ever kept.
    """

    def __init__(self, max_bytes: int = 48 << 20) -> None:
        self.max_bytes = max_bytes
        self.version = 0
        self._entries: OrderedDict[tuple[str, float, float], Pieces] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, float, float]) -> Pieces | None:
        with self._lock:
            pieces = self._entries.get(key)
            if pieces is not None:
                self._entries.move_to_end(key)
            return pieces

    def put(self, key: tuple[str, float, float], pieces: Pieces, version: int) -> None:
        size = pieces.nbytes
        with self._lock:
            if version != self.version or size > self.max_bytes or key in self._entries:
                return
            self._entries[key] = pieces
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes

    def forget(self, hours: Iterable[int]) -> None:
        """A flush wrote to these hours (Unix seconds, hour-aligned)."""
        hours = sorted(hours)
        if not hours:
            return
        with self._lock:
            self.version += 1
            for key in [k for k in self._entries if _overlaps(k, hours)]:
                self._bytes -= self._entries.pop(key).nbytes

    def clear(self) -> None:
        with self._lock:
            self.version += 1
            self._entries.clear()
            self._bytes = 0


def _overlaps(key: tuple[str, float, float], hours: list[int]) -> bool:
    _, lo, hi = key
    return any(lo <= h < hi for h in hours)


def _dense_quantiles(
    group: I64, bucket: I64, count: F64, groups: int, qs: tuple[float, ...]
) -> tuple[I64, F64] | None:
    """Quantiles by a bincount over (group, bucket index): fast when buckets are dense."""
    neg, pos = bucket < ZERO_BUCKET, bucket > ZERO_BUCKET
    has_neg, has_pos = bool(neg.any()), bool(pos.any())
    n_lo = int(bucket[neg].min()) if has_neg else 0
    n_width = int(bucket[neg].max()) - n_lo + 1 if has_neg else 0
    p_lo = int(bucket[pos].min()) if has_pos else 0
    p_width = int(bucket[pos].max()) - p_lo + 1 if has_pos else 0
    width = n_width + 1 + p_width
    if groups * width > DENSE_CELLS:
        return None
    if has_neg:
        index = np.where(pos, n_width + 1 + (bucket - p_lo), np.where(neg, bucket - n_lo, n_width))
    else:
        index = np.where(pos, n_width + 1 + (bucket - p_lo), n_width)
    keys = np.concatenate(
        [
            np.arange(n_lo, n_lo + n_width, dtype=np.int64),
            np.array([ZERO_BUCKET], dtype=np.int64),
            np.arange(p_lo, p_lo + p_width, dtype=np.int64),
        ]
    )
    dense = np.bincount(group * width + index, weights=count, minlength=groups * width)
    cumulative = np.cumsum(dense.reshape(groups, width), axis=1)
    totals = cumulative[:, -1]
    out = np.full((groups, len(qs)), np.nan)
    present = totals > 0
    for j, q in enumerate(qs):
        rank = np.maximum(1.0, np.ceil(q * totals - 1e-9))
        first = np.minimum((cumulative < rank[:, None]).sum(axis=1), width - 1)
        out[present, j] = values_of(keys[first[present]])
    return np.rint(totals).astype(np.int64), out


def _numbered(key: I64, space: int) -> tuple[I64, I64]:
    """The distinct values of ``key`` (all in ``[0, space)``), sorted, and each
    element's index among them; a bincount instead of a sort when it can."""
    if space <= max(4 * len(key), 1 << 16):
        seen = np.bincount(key, minlength=space) > 0
        index = np.cumsum(seen) - 1
        return np.flatnonzero(seen).astype(np.int64), index[key].astype(np.int64)
    distinct, inverse = np.unique(key, return_inverse=True)
    return distinct.astype(np.int64), inverse.astype(np.int64)


def sketch_groups(pieces: Pieces, keys: list[tuple[Any, ...]], q: SketchQuery) -> list[SketchGroup]:
    """Merge pieces into one sketch per (time step, group); ``keys[gid]`` are its values."""
    if len(pieces) == 0:
        return []
    width = max(len(keys), 1)
    if q.step:
        tbs, tb_code = np.unique(pieces.tb, return_inverse=True)
        key = tb_code.astype(np.int64) * width + pieces.gid
    else:
        tbs, key = np.zeros(1, dtype=np.int64), pieces.gid
    group_keys, group = _numbered(key, len(tbs) * width)
    n = len(group_keys)
    b = pieces.kind == 0
    b_group, bucket, b_count = group[b], pieces.k[b], pieces.c[b]
    dense = _dense_quantiles(b_group, bucket, b_count, n, q.qs) if len(bucket) else None
    if dense is not None:
        totals, estimates = dense
    else:  # a very wide bucket range (or none): sort the elements instead
        order = np.lexsort((bucket, b_group))
        starts = np.searchsorted(b_group[order], np.arange(n + 1))
        totals, estimates = grouped_quantiles(
            bucket[order],
            np.rint(b_count[order]).astype(np.int64),
            starts.astype(np.int64),
            q.qs,
        )
    sums = np.bincount(group, weights=pieces.s, minlength=n)
    below = {}
    for t in q.below:  # counts up to t's bucket: within the sketch's relative error of t
        mask = bucket <= bucket_of(t)
        below[t] = np.bincount(b_group[mask], weights=b_count[mask], minlength=n)
    o = (pieces.kind == 1) & (pieces.k >= 0) & (pieces.k < OUTCOMES)
    o_cells = np.bincount(
        group[o] * OUTCOMES + pieces.k[o], weights=pieces.c[o], minlength=n * OUTCOMES
    ).reshape(n, OUTCOMES)

    out = []
    for i, group_key in enumerate(group_keys.tolist()):
        if totals[i] <= 0:
            continue
        t, gid = divmod(group_key, width)
        out.append(
            SketchGroup(
                key=keys[gid] if keys else (),
                count=int(totals[i]),
                sum=float(sums[i]),
                outcomes={o: int(c) for o, c in enumerate(np.rint(o_cells[i]).tolist()) if c},
                quantiles={
                    qv: (None if math.isnan(estimates[i, j]) else float(estimates[i, j]))
                    for j, qv in enumerate(q.qs)
                },
                time=float(tbs[t]) if q.step else None,
                below={v: int(np.rint(c[i])) for v, c in below.items()},
            )
        )
    out.sort(key=lambda g: (g.time or 0.0, -g.count))
    return out
