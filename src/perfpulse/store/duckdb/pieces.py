"""Sketch pieces in numpy: merging the parts of a window into one sketch per group.

The read statements (:mod:`perfpulse.store.duckdb.sql`) return each part of a
window — whole hours, edge minutes, edge raw rows — as *pieces*: one row per
bucket count (``kind`` 0), outcome count (1) or sum (2), tagged with a time step
``tb`` and a group ``gid`` (or, for a rollup part read per series, the series).
Counts of equal buckets are added up per group in one dense array — a row per
group, a column per bucket of a :class:`Layout` — and quantiles are read from the
cumulative counts: no percentile is ever averaged. A bucket range too wide for a
dense array is merged by sorting instead.

The rollup parts of a question without time steps are merged per series
(:class:`SeriesPart`) and kept in a :class:`~perfpulse.store.duckdb.partcache.PartCache`,
so the next question over the same hours (a dashboard refreshing "the last 24
hours") reads again only what changed::

    cache = PartCache()
    version = cache.version
    part = cache.get(key) or SeriesPart.of(cursor.execute(...).fetchnumpy())
    cache.put(key, part, version)   # unless a flush wrote those hours meanwhile
    merge = Merge(groups=len(keys), layout=part.layout)
    merge.add_part(part, lookup, sign=1)
    merge.merged().groups(keys, qs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from perfpulse.sketch import GAMMA, NEGATIVE_BASE, ZERO_BUCKET, bucket_of
from perfpulse.store.base import SketchGroup, SketchQuery

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
OUTCOMES = 8  # outcome codes are 0..7
DENSE_CELLS = 8_000_000  # groups x bucket range up to which groups merge in one dense array


def _ints(values: Any) -> I64:
    return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each bucket key goes in a dense row: the negative buckets from
    ``n_lo`` (``n_width`` of them), then the zero bucket, then the positive ones
    from ``p_lo`` (``p_width``) — the order of the values they hold."""

    n_lo: int = 0
    n_width: int = 0
    p_lo: int = 0
    p_width: int = 0

    @property
    def width(self) -> int:
        return self.n_width + 1 + self.p_width

    @classmethod
    def of(cls, keys: I64) -> Layout:
        neg, pos = keys[keys < ZERO_BUCKET], keys[keys > ZERO_BUCKET]
        n_lo = int(neg.min()) if len(neg) else 0
        p_lo = int(pos.min()) if len(pos) else 0
        return cls(
            n_lo,
            int(neg.max()) - n_lo + 1 if len(neg) else 0,
            p_lo,
            int(pos.max()) - p_lo + 1 if len(pos) else 0,
        )

    def union(self, other: Layout) -> Layout:
        def span(lo: int, w: int, lo2: int, w2: int) -> tuple[int, int]:
            if not w or not w2:
                return (lo, w) if w else (lo2, w2)
            start = min(lo, lo2)
            return start, max(lo + w, lo2 + w2) - start

        return Layout(
            *span(self.n_lo, self.n_width, other.n_lo, other.n_width),
            *span(self.p_lo, self.p_width, other.p_lo, other.p_width),
        )

    def index(self, keys: I64) -> I64:
        """The column of each key (keys must be inside the layout)."""
        pos = keys > ZERO_BUCKET
        at = np.where(pos, keys + (self.n_width + 1 - self.p_lo), self.n_width)
        if self.n_width:
            at = np.where(keys < ZERO_BUCKET, keys - self.n_lo, at)
        return at.astype(np.int64)

    def keys(self) -> I64:
        return np.concatenate(
            [
                np.arange(self.n_lo, self.n_lo + self.n_width, dtype=np.int64),
                np.array([ZERO_BUCKET], dtype=np.int64),
                np.arange(self.p_lo, self.p_lo + self.p_width, dtype=np.int64),
            ]
        )

    def moved(self, columns: I64, to: Layout) -> I64:
        """Columns of this layout as columns of ``to``, a layout that contains it."""
        shift_pos = (to.n_width - self.n_width) + (self.p_lo - to.p_lo)
        moved = np.where(columns > self.n_width, columns + shift_pos, to.n_width)
        if self.n_width:
            moved = np.where(columns < self.n_width, columns + (self.n_lo - to.n_lo), moved)
        return moved.astype(np.int64)


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

    @classmethod
    def of_rows(cls, result: Mapping[str, Any], gid: I64) -> Pieces:
        """From ``fetchnumpy()`` of raw rows ``(tb, g…, outcome, bucket, cnt, sm)``:
        a bucket piece (with the value as its sum) and an outcome piece per row."""
        n = len(gid)
        tb = _ints(result["tb"])
        outcome = np.ma.filled(np.ma.asarray(result["outcome"]), -1).astype(np.int64)
        return cls(
            kind=np.repeat(np.array([0, 1], dtype=np.int64), n),
            tb=np.concatenate([tb, tb]),
            gid=np.concatenate([gid, gid]),
            k=np.concatenate([_ints(result["bucket"]), outcome]),
            c=np.ones(2 * n),
            s=np.concatenate([np.asarray(result["sm"], dtype=np.float64), np.zeros(n)]),
        )

    def __len__(self) -> int:
        return len(self.kind)

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


def group_ids(columns: list[Any], groups: dict[tuple[Any, ...], int]) -> I64:
    """Group ids of rows with these group-by values (masked or object arrays),
    numbering new values as they come."""
    values = [_objects(c) for c in columns]
    setdefault = groups.setdefault
    return np.fromiter(
        (setdefault(key, len(groups)) for key in zip(*values, strict=True)),
        dtype=np.int64,
        count=len(values[0]) if values else 0,
    )


def _objects(column: Any) -> list[Any]:
    """A fetched column as a list, None where it was NULL (masked)."""
    if isinstance(column, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(column)
        data: list[Any] = column.data.tolist()
        if mask.any():
            for i in np.flatnonzero(mask).tolist():
                data[i] = None
        return data
    values: list[Any] = column.tolist()
    return values


def _lookup(lookup: I64, series: I64) -> I64:
    """``lookup[series]``, -1 for series past its end."""
    if len(series) and int(series.max()) >= len(lookup):
        lookup = np.concatenate(
            [lookup, np.full(int(series.max()) + 1 - len(lookup), -1, dtype=np.int64)]
        )
    return lookup[series]


@dataclass(slots=True)
class SeriesPart:
    """One rollup part of a window merged per series, for every series of a metric:
    bucket counts (with their column in ``layout``), outcome counts and sums."""

    layout: Layout
    b_series: I64
    b_column: I64
    b_count: F64
    o_series: I64
    o_outcome: I64
    o_count: F64
    s_series: I64
    s_sum: F64

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> SeriesPart:
        """From ``fetchnumpy()`` of :func:`~perfpulse.store.duckdb.sql.series_pieces`."""
        kind, series, k = _ints(result["kind"]), _ints(result["series"]), _ints(result["k"])
        c, s = np.asarray(result["c"], np.float64), np.asarray(result["s"], np.float64)
        b, o = kind == 0, (kind == 1) & (k >= 0) & (k < OUTCOMES)
        layout = Layout.of(k[b])
        return cls(layout, series[b], layout.index(k[b]), c[b], series[o], k[o], c[o], series, s)

    @property
    def nbytes(self) -> int:
        arrays = (self.b_series, self.b_column, self.b_count, self.o_series, self.o_outcome)
        return int(sum(a.nbytes for a in (*arrays, self.o_count, self.s_series, self.s_sum)))

    def pieces(self, lookup: I64, sign: int) -> Pieces:
        """As sparse pieces, grouped by ``lookup[series]`` (for the sorting merge)."""
        keys = self.layout.keys()
        parts = []
        for kind, series, k, c, s in (
            (0, self.b_series, keys[self.b_column], self.b_count, None),
            (1, self.o_series, self.o_outcome, self.o_count, None),
            (2, self.s_series, np.zeros(len(self.s_series), np.int64), None, self.s_sum),
        ):
            gid = _lookup(lookup, series)
            keep = gid >= 0
            n = int(keep.sum())
            parts.append(
                Pieces(
                    np.full(n, kind, dtype=np.int64),
                    np.zeros(n, dtype=np.int64),
                    gid[keep],
                    k[keep],
                    (c[keep] * sign) if c is not None else np.zeros(n),
                    (s[keep] * sign) if s is not None else np.zeros(n),
                )
            )
        return Pieces.concat(parts)


@dataclass(slots=True)
class Grouped:
    """Sketches merged per group: row ``i`` belongs to group ``i`` — bucket counts
    over ``layout``, outcome counts and sums."""

    layout: Layout
    counts: F64  # groups x layout.width
    outcomes: F64  # groups x OUTCOMES
    sums: F64
    keys: list[tuple[Any, ...]] = field(default_factory=list)  # each row's group-by values

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes + self.outcomes.nbytes + self.sums.nbytes)

    def pieces(self) -> Pieces:
        """As sparse pieces (for the sorting merge)."""
        group, column = np.nonzero(self.counts)
        o_group, outcome = np.nonzero(self.outcomes)
        n, m, rows = len(group), len(o_group), len(self.sums)
        return Pieces(
            kind=np.concatenate([np.zeros(n), np.ones(m), np.full(rows, 2)]).astype(np.int64),
            tb=np.zeros(n + m + rows, dtype=np.int64),
            gid=np.concatenate([group, o_group, np.arange(rows)]).astype(np.int64),
            k=np.concatenate([self.layout.keys()[column], outcome, np.zeros(rows)]).astype(
                np.int64
            ),
            c=np.concatenate(
                [self.counts[group, column], self.outcomes[o_group, outcome], np.zeros(rows)]
            ),
            s=np.concatenate([np.zeros(n + m), self.sums]),
        )

    def groups(
        self, keys: list[tuple[Any, ...]], qs: tuple[float, ...], below: tuple[float, ...] = ()
    ) -> list[SketchGroup]:
        totals, estimates = _quantiles(self.counts, self.layout.keys(), qs)
        under = _dense_below(self.counts, self.layout.keys(), below)
        return _sketch_groups(totals, estimates, self.sums, self.outcomes, keys, qs, below=under)


class Merge:
    """Sketches of ``groups`` groups being merged: bucket counts into a dense
    (groups x ``layout.width``) array, outcome counts and sums beside. Parts are
    gathered first and added up with one ``bincount`` each in :meth:`merged`."""

    def __init__(self, groups: int, layout: Layout) -> None:
        self.layout = layout
        self.n = groups
        self._base: list[Grouped] = []
        self._cells: list[tuple[I64, F64]] = []  # (group * width + column, count)
        self._outcomes: list[tuple[I64, F64]] = []  # (group * OUTCOMES + outcome, count)
        self._sums: list[tuple[I64, F64]] = []  # (group, sum)

    @staticmethod
    def fits(groups: int, layout: Layout) -> bool:
        return groups * layout.width <= DENSE_CELLS

    def add_grouped(self, grouped: Grouped) -> None:
        """Merged groups, as the first rows (its layout inside this one)."""
        self._base.append(grouped)

    def add_part(self, part: SeriesPart, lookup: I64, sign: int) -> None:
        width = self.layout.width
        for into, series, index, values in (
            (
                self._cells,
                part.b_series,
                part.layout.moved(part.b_column, self.layout),
                part.b_count,
            ),
            (self._outcomes, part.o_series, part.o_outcome, part.o_count),
            (self._sums, part.s_series, None, part.s_sum),
        ):
            gid = _lookup(lookup, series)
            if not (gid >= 0).all():
                keep = gid >= 0
                gid, values = gid[keep], values[keep]
                index = None if index is None else index[keep]
            scale = width if into is self._cells else OUTCOMES
            flat = gid if index is None else gid * scale + index
            into.append((flat, values if sign == 1 else values * sign))

    def add_pieces(self, p: Pieces) -> None:
        b = p.kind == 0
        self._cells.append((p.gid[b] * self.layout.width + self.layout.index(p.k[b]), p.c[b]))
        o = (p.kind == 1) & (p.k >= 0) & (p.k < OUTCOMES)
        self._outcomes.append((p.gid[o] * OUTCOMES + p.k[o], p.c[o]))
        self._sums.append((p.gid, p.s))

    @staticmethod
    def _add(into: F64, parts: list[tuple[I64, F64]]) -> None:
        if not parts:
            return
        index = np.concatenate([i for i, _ in parts])
        weights = np.concatenate([w for _, w in parts])
        if len(index) * 8 < len(into):  # a few: no need to count over the whole array
            np.add.at(into, index, weights)
        else:
            into += np.bincount(index, weights=weights, minlength=len(into))

    def merged(self) -> Grouped:
        n, width = self.n, self.layout.width
        counts = np.zeros((n, width))
        outcomes = np.zeros((n, OUTCOMES))
        sums = np.zeros(n)
        for base in self._base:
            rows = len(base.sums)
            if base.layout == self.layout:
                counts[:rows] += base.counts
            else:
                columns = base.layout.moved(np.arange(base.layout.width), self.layout)
                counts[:rows, columns] += base.counts
            outcomes[:rows] += base.outcomes
            sums[:rows] += base.sums
        self._add(counts.reshape(-1), self._cells)
        self._add(outcomes.reshape(-1), self._outcomes)
        self._add(sums, self._sums)
        return Grouped(self.layout, counts, outcomes, sums)


def _quantiles(dense: F64, keys: I64, qs: tuple[float, ...]) -> tuple[I64, F64]:
    """Each row's total and quantiles (nearest rank) from its dense bucket counts:
    one cumulative sum over all rows, then a binary search per row and quantile."""
    rows, width = dense.shape
    # Parts read as "hour less minutes" in two statements can leave a cell below
    # zero if a flush committed between them; the next read is exact again.
    flat = np.cumsum(np.maximum(dense.reshape(-1), 0.0))
    ends = flat[width - 1 :: width]
    before = np.concatenate([[0.0], ends[:-1]])
    totals = np.rint(ends - before)
    out = np.full((rows, len(qs)), np.nan)
    present = totals > 0
    start = np.arange(rows, dtype=np.int64) * width
    for j, q in enumerate(qs):
        rank = np.maximum(1.0, np.ceil(q * totals - 1e-9)) + before - 0.5
        first = np.minimum(np.searchsorted(flat, rank) - start, width - 1)
        out[present, j] = values_of(keys[first[present]])
    return totals.astype(np.int64), out


def _sketch_groups(
    totals: I64,
    estimates: F64,
    sums: F64,
    outcomes: F64,
    keys: list[tuple[Any, ...]],
    qs: tuple[float, ...],
    times: list[float | None] | None = None,
    gids: list[int] | None = None,
    below: dict[float, F64] | None = None,
) -> list[SketchGroup]:
    out = []
    under = {t: np.rint(c).astype(np.int64).tolist() for t, c in (below or {}).items()}
    counts = np.rint(outcomes).astype(np.int64).tolist()
    values = [[None if v != v else v for v in row] for row in estimates.tolist()]  # NaN: None
    sum_list = sums.tolist()
    for i, total in enumerate(totals.tolist()):
        if total <= 0:
            continue
        gid = i if gids is None else gids[i]
        out.append(
            SketchGroup(
                key=keys[gid] if keys else (),
                count=total,
                sum=sum_list[i],
                outcomes={o: c for o, c in enumerate(counts[i]) if c},
                quantiles=dict(zip(qs, values[i], strict=True)),
                time=None if times is None else times[i],
                below={t: c[i] for t, c in under.items()},
            )
        )
    out.sort(key=lambda g: (g.time or 0.0, -g.count))
    return out


def _dense_below(counts: F64, keys: I64, below: tuple[float, ...]) -> dict[float, F64]:
    """Per row, the count of values up to each threshold's bucket (for Apdex):
    within the sketch's relative error of the threshold."""
    return {t: counts[:, keys <= bucket_of(t)].sum(axis=1) for t in below}


def _sparse_below(
    group: I64, bucket: I64, count: F64, groups: int, below: tuple[float, ...]
) -> dict[float, F64]:
    out = {}
    for t in below:
        mask = bucket <= bucket_of(t)
        out[t] = np.bincount(group[mask], weights=count[mask], minlength=groups).astype(np.float64)
    return out


def _sparse_quantiles(
    group: I64, bucket: I64, count: F64, groups: int, qs: tuple[float, ...]
) -> tuple[I64, F64]:
    """Quantiles by sorting the elements; equal (group, bucket) elements are added
    up first, since a part read as "hour less minutes" brings negative counts."""
    order = np.lexsort((bucket, group))
    group, bucket = group[order], bucket[order]
    if len(order):
        first = np.flatnonzero(
            np.concatenate([[True], (group[1:] != group[:-1]) | (bucket[1:] != bucket[:-1])])
        )
        merged = np.rint(np.add.reduceat(count[order], first)).astype(np.int64)
        keep = merged > 0
        group, bucket, merged = group[first][keep], bucket[first][keep], merged[keep]
    else:
        merged = np.zeros(0, dtype=np.int64)
    starts = np.searchsorted(group, np.arange(groups + 1)).astype(np.int64)
    return grouped_quantiles(bucket, merged, starts, qs)


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
    group_keys, group = np.unique(key, return_inverse=True)
    group = group.astype(np.int64)
    n = len(group_keys)
    b = pieces.kind == 0
    layout = Layout.of(pieces.k[b])
    merge = Merge(n, layout) if Merge.fits(n, layout) else None
    if merge is not None:
        merge.add_pieces(Pieces(pieces.kind, pieces.tb, group, pieces.k, pieces.c, pieces.s))
        grouped = merge.merged()
        totals, estimates = _quantiles(grouped.counts, layout.keys(), q.qs)
        sums, outcomes = grouped.sums, grouped.outcomes
        under = _dense_below(grouped.counts, layout.keys(), q.below)
    else:  # a very wide bucket range: sort the elements instead
        totals, estimates = _sparse_quantiles(group[b], pieces.k[b], pieces.c[b], n, q.qs)
        under = _sparse_below(group[b], pieces.k[b], pieces.c[b], n, q.below)
        sums = np.bincount(group, weights=pieces.s, minlength=n).astype(np.float64)
        o = (pieces.kind == 1) & (pieces.k >= 0) & (pieces.k < OUTCOMES)
        outcomes = (
            np.bincount(
                group[o] * OUTCOMES + pieces.k[o], weights=pieces.c[o], minlength=n * OUTCOMES
            )
            .astype(np.float64)
            .reshape(n, OUTCOMES)
        )
    t, gid = np.divmod(group_keys, width)
    times: list[float | None] | None = [float(tbs[i]) for i in t] if q.step else None
    return _sketch_groups(
        totals, estimates, sums, outcomes, keys, q.qs, times, gid.tolist(), below=under
    )


# --- the sketch's quantiles and bucket values over arrays (perfpulse.sketch, in numpy)


def grouped_quantiles(
    buckets: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    qs: Sequence[float],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Quantiles of many merged sketches at once.

    Group ``g`` holds the buckets ``buckets[offsets[g]:offsets[g + 1]]`` in
    ascending order with their ``counts``. Returns each group's total count and a
    ``(groups, len(qs))`` array of quantile values (nearest rank, as
    :meth:`Sketch.quantiles`), computed with one cumulative sum and one binary
    search per quantile for all groups together.
    """
    groups = len(offsets) - 1
    out = np.full((groups, len(qs)), np.nan)
    if groups == 0 or len(counts) == 0:
        return np.zeros(groups, dtype=np.int64), out
    cumulative = np.cumsum(counts)
    starts, ends = offsets[:-1], offsets[1:]
    before = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0)
    totals = np.where(ends > starts, cumulative[np.maximum(ends - 1, 0)] - before, 0)
    present = totals > 0
    for j, q in enumerate(qs):
        rank = np.maximum(1, np.ceil(q * totals - 1e-9)).astype(np.int64)
        index = np.searchsorted(cumulative, before + rank, side="left")
        index = np.minimum(index, len(buckets) - 1)
        out[present, j] = values_of(buckets[index[present]])
    return totals, out


def values_of(keys: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """:func:`value_of` for an array of bucket keys."""
    k = keys.astype(np.float64)
    positive = 2.0 * np.power(GAMMA, np.where(keys > ZERO_BUCKET, k, 0.0)) / (GAMMA + 1.0)
    mirrored = NEGATIVE_BASE - k
    negative = -2.0 * np.power(GAMMA, np.where(keys < ZERO_BUCKET, mirrored, 0.0)) / (GAMMA + 1.0)
    return np.where(keys > ZERO_BUCKET, positive, np.where(keys < ZERO_BUCKET, negative, 0.0))
