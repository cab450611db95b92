"""Every SQL statement of the DuckDB backend, built from the row layouts and the
metric catalog. Nothing else in perfpulse writes SQL.

Tables
------
- one raw table per event kind (``model.rows.LAYOUTS``), ``ts`` a UTC TIMESTAMP;
- ``series``: one row per distinct ``(metric, service, environment, release,
  d1..d4)`` — the dimensions a rollup keeps — with an integer ``id``;
- ``rollup_1m`` / ``rollup_1h``: one row per series and time slot holding its
  whole log-bucket sketch — ``buckets``/``counts`` as parallel sorted lists,
  ``outcomes``/``outcome_counts`` likewise, and the ``sum`` of the values. A
  window reads a few rows per series and merges their flattened lists in numpy;
- ``batches``: batch ids seen (exactly-once retries), ``meta``: the checkpoint.

Reading a window
----------------
A window ``[start, end)`` is cut into at most five parts: whole hours from
``rollup_1h``, whole minutes at both edges from ``rollup_1m``, and the partial
minutes at both ends from the raw table (where every value is bucketed on the
fly the same way). Group-by or filter dimensions that are not in the rollups, or a
time step that is not a whole number of minutes, send the whole window to the raw
table. All parts are merged by adding the counts of equal buckets per group, and
quantiles are read with a cumulative sum: no percentile is ever averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from perfpulse.model.catalog import MAX_ROLLUP_DIMS, METRICS, Metric
from perfpulse.model.rows import LAYOUTS, FieldType
from perfpulse.sketch import (
    LOG_GAMMA,
    MIN_POSITIVE,
    NEGATIVE_BASE,
    ZERO_BUCKET,
    grouped_quantiles,
    values_of,
)
from perfpulse.store.base import Plan, SketchGroup, SketchQuery

_TYPES: dict[FieldType, str] = {
    "ts": "TIMESTAMP",
    "str": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}
_ROLLUP_COLUMNS = (
    "ts TIMESTAMP, series INTEGER, buckets INTEGER[], counts BIGINT[], "
    "outcomes TINYINT[], outcome_counts BIGINT[], sum DOUBLE"
)
SERIES_COLUMNS = ("metric", "service", "environment", "release", "d1", "d2", "d3", "d4")


def schema() -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f'"{name}" {_TYPES[kind]}' for name, kind in layout)
        + ")"
        for table, layout in LAYOUTS.items()
    ]
    statements += [
        "CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, "
        + ", ".join(f"{c} VARCHAR" for c in SERIES_COLUMNS)
        + ")",
        f"CREATE TABLE IF NOT EXISTS rollup_1m ({_ROLLUP_COLUMNS})",
        f"CREATE TABLE IF NOT EXISTS rollup_1h ({_ROLLUP_COLUMNS})",
        "CREATE TABLE IF NOT EXISTS batches (ts TIMESTAMP, key VARCHAR)",
        "CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value BIGINT)",
    ]
    return statements


def input_name(table: str) -> str:
    """The relation a flush registers ``table``'s columns under."""
    return f"_in_{table}"


def insert_raw(table: str) -> str:
    cols = ", ".join(
        "make_timestamp(CAST(ts * 1000000 AS BIGINT))" if kind == "ts" else f'"{name}"'
        for name, kind in LAYOUTS[table]
    )
    return f"INSERT INTO {table} SELECT {cols} FROM {input_name(table)}"


def bucket_expr(value: str) -> str:
    """SQL for :func:`perfpulse.sketch.bucket_of`."""
    return (
        f"CASE WHEN {value} > {MIN_POSITIVE!r} "
        f"THEN CAST(ceil(ln({value}) / {LOG_GAMMA!r}) AS INTEGER) "
        f"WHEN {value} < -{MIN_POSITIVE!r} "
        f"THEN {NEGATIVE_BASE} - CAST(ceil(ln(-{value}) / {LOG_GAMMA!r}) AS INTEGER) "
        f"ELSE {ZERO_BUCKET} END"
    )


def outcome_expr(metric: Metric) -> str:
    return {
        "status": "CAST(status // 100 AS TINYINT)",
        "rating": "CAST(rating AS TINYINT)",
        "hit": "CAST(CASE WHEN hit THEN 0 WHEN NOT hit THEN 1 ELSE 2 END AS TINYINT)",
        "error": "CAST(CASE WHEN error IS NULL THEN 0 ELSE 1 END AS TINYINT)",
        "none": "CAST(0 AS TINYINT)",
    }[metric.outcome]


def _where(metric: Metric) -> str:
    parts = [f'"{metric.field}" IS NOT NULL']
    parts += [f"{col} = '{val}'" for col, val in metric.where]
    return " AND ".join(parts)


def _dims(metric: Metric) -> str:
    dims = [f'CAST("{d}" AS VARCHAR)' for d in metric.dims]
    dims += ["NULL"] * (MAX_ROLLUP_DIMS - len(dims))
    return ", ".join(f"{d} AS d{i + 1}" for i, d in enumerate(dims))


def _metric_values(metrics: list[Metric]) -> tuple[list[str], list[str]]:
    """Parallel (metric name, value) SQL expressions, one pair per source column:
    metrics told apart by ``where`` (the vitals, by ``name``) share their column
    and get their name from a CASE, NULL where no metric applies."""
    names: list[str] = []
    values: list[str] = []
    shared: dict[tuple[str, tuple[str, ...]], list[Metric]] = {}
    for m in metrics:
        if m.where:
            shared.setdefault((m.field, tuple(c for c, _ in m.where)), []).append(m)
        else:
            names.append(f"'{m.name}'")
            values.append(f'CAST("{m.field}" AS DOUBLE)')
    for (fld, _), group in shared.items():
        whens = " ".join(
            "WHEN " + " AND ".join(f"\"{c}\" = '{v}'" for c, v in m.where) + f" THEN '{m.name}'"
            for m in group
        )
        names.append(f"CASE {whens} END")
        values.append(f'CAST("{fld}" AS DOUBLE)')
    return names, values


def rollup_input(table: str) -> list[str]:
    """SELECTs of ``(s, service, environment, release, d1..d4, outcome, metric, v)``
    over the flush's ``table`` rows: each row is unnested into one (metric, value)
    pair per metric of the table (one SELECT per set of rollup dimensions)."""
    kinds: dict[tuple[tuple[str, ...], str], list[Metric]] = {}
    for m in METRICS:
        if m.kind == table:
            kinds.setdefault((m.dims, m.outcome), []).append(m)
    selects = []
    for group in kinds.values():
        names, values = _metric_values(group)
        selects.append(
            "SELECT CAST(floor(ts / 60) * 60 AS BIGINT) AS s, service, environment, release, "
            f"{_dims(group[0])}, {outcome_expr(group[0])} AS outcome, "
            f"unnest([{', '.join(names)}]) AS metric, unnest([{', '.join(values)}]) AS v "
            f"FROM {input_name(table)}"
        )
    return selects


def flush_rollup(tables: Iterable[str]) -> str | None:
    """CREATE ``_flush_rollup``: the per-minute sketch pieces ``(s, metric, service,
    environment, release, d1..d4, outcome, bucket, count, sum)`` of every metric
    of the flush's ``tables``, in one scan of each and one aggregation."""
    selects = [select for table in tables for select in rollup_input(table)]
    if not selects:
        return None
    return (
        "CREATE TEMP TABLE _flush_rollup AS "
        f"SELECT s, {', '.join(SERIES_COLUMNS)}, outcome, {bucket_expr('v')} AS bucket, "
        f"count(*) AS count, sum(v) AS sum FROM ({' UNION ALL '.join(selects)}) "
        "WHERE v IS NOT NULL AND metric IS NOT NULL GROUP BY ALL"
    )


_SAME_SERIES = " AND ".join(f"f.{c} IS NOT DISTINCT FROM s.{c}" for c in SERIES_COLUMNS)
# Series of the flush not yet in ``series``, numbered after the highest id.
INSERT_NEW_SERIES = (
    "INSERT INTO series SELECT (SELECT coalesce(max(id), 0) FROM series) + row_number() OVER (), * "
    f"FROM (SELECT DISTINCT {', '.join(SERIES_COLUMNS)} FROM _flush_rollup) f "
    f"WHERE NOT EXISTS (SELECT 1 FROM series s WHERE {_SAME_SERIES})"
)
_FLUSH_PIECES = (
    "SELECT f.s, s.id AS series, f.outcome, f.bucket, f.count, f.sum "
    f"FROM _flush_rollup f JOIN series s ON {_SAME_SERIES}"
)


def sketch_rows(table: str, slot: str, source: str) -> str:
    """INSERT one sketch row per (slot, series) of ``source`` rows
    ``(s, series, outcome, bucket, count, sum)``; ``slot`` maps ``s`` to the slot.
    One pass counts by bucket and by outcome (grouping sets), a second one makes
    the lists."""
    return (
        f"INSERT INTO {table} "
        "SELECT make_timestamp(slot * 1000000), series, "
        "list(bucket ORDER BY bucket) FILTER (WHERE NOT per_outcome), "
        "list(c ORDER BY bucket) FILTER (WHERE NOT per_outcome), "
        "list(outcome ORDER BY outcome) FILTER (WHERE per_outcome), "
        "list(c ORDER BY outcome) FILTER (WHERE per_outcome), "
        "sum(sm) FILTER (WHERE per_outcome) "
        f"FROM (SELECT {slot} AS slot, series, bucket, outcome, sum(count) AS c, sum(sum) AS sm, "
        f"GROUPING(bucket) = 1 AS per_outcome FROM ({source}) "
        "GROUP BY GROUPING SETS ((slot, series, bucket), (slot, series, outcome))) "
        "GROUP BY slot, series"
    )


INSERT_1M_FROM_FLUSH = sketch_rows("rollup_1m", "s", _FLUSH_PIECES)
INSERT_1H_FROM_FLUSH = sketch_rows("rollup_1h", "s // 3600 * 3600", _FLUSH_PIECES)
FLUSH_MINUTES = "SELECT DISTINCT s FROM _flush_rollup"


INSERT_BATCHES = (
    "INSERT INTO batches SELECT make_timestamp(unnest(?::BIGINT[])), unnest(?::VARCHAR[])"
)
SET_CHECKPOINT = "INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)"
GET_CHECKPOINT = "SELECT value FROM meta WHERE name = 'checkpoint'"
RECENT_BATCHES = "SELECT key FROM batches WHERE ts >= make_timestamp(?)"
KNOWN_ROUTES = (
    "SELECT DISTINCT service, route FROM http UNION SELECT DISTINCT service, page FROM rum_view"
)


def count_slots(table: str) -> str:
    return f"SELECT count(*) FROM {table} WHERE epoch(ts)::BIGINT IN (SELECT s FROM _slots)"


def compact_slots(table: str) -> list[str]:
    """Replace the rows of the slots in ``_slots`` by one merged row per series."""
    slot = "epoch(ts)::BIGINT IN (SELECT s FROM _slots)"
    # the sketch's buckets, its outcomes and its sum, each as rows again
    source = (
        "SELECT epoch(ts)::BIGINT AS s, series, NULL::TINYINT AS outcome, "
        "unnest(buckets) AS bucket, unnest(counts) AS count, 0.0 AS sum "
        f"FROM {table} WHERE {slot} "
        "UNION ALL SELECT epoch(ts)::BIGINT, series, unnest(outcomes), NULL::INTEGER, "
        f"unnest(outcome_counts), 0.0 FROM {table} WHERE {slot} "
        "UNION ALL SELECT epoch(ts)::BIGINT, series, NULL::TINYINT, NULL::INTEGER, 0, sum "
        f"FROM {table} WHERE {slot}"
    )
    merged = (
        "CREATE TEMP TABLE _merged AS "
        "WITH src AS (" + source + "), "
        "b AS (SELECT s, series, bucket, sum(count) AS c FROM src WHERE bucket IS NOT NULL GROUP BY ALL), "
        "o AS (SELECT s, series, outcome, sum(count) AS c FROM src WHERE outcome IS NOT NULL GROUP BY ALL), "
        "t AS (SELECT s, series, sum(sum) AS sm FROM src GROUP BY ALL), "
        "bl AS (SELECT s, series, list(bucket ORDER BY bucket) AS buckets, "
        "list(c ORDER BY bucket) AS counts FROM b GROUP BY ALL), "
        "ol AS (SELECT s, series, list(outcome ORDER BY outcome) AS outcomes, "
        "list(c ORDER BY outcome) AS outcome_counts FROM o GROUP BY ALL) "
        "SELECT make_timestamp(s * 1000000) AS ts, series, buckets, counts, outcomes, "
        "outcome_counts, sm AS sum FROM bl JOIN ol USING (s, series) JOIN t USING (s, series)"
    )
    return [
        merged,
        f"DELETE FROM {table} WHERE {slot}",
        f"INSERT INTO {table} SELECT * FROM _merged",
        "DROP TABLE _merged",
    ]


def delete_before(table: str) -> str:
    return f"DELETE FROM {table} WHERE ts < make_timestamp(?)"


# --- reads --------------------------------------------------------------------


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _parts(
    start: float, end: float, minutes_ok: bool, hours_ok: bool
) -> list[tuple[str, float, float]]:
    """Cut ``[start, end)`` into (source, from, to) parts, coarsest first."""
    parts: list[tuple[str, float, float]] = []
    if not minutes_ok:
        return [("raw", start, end)]
    m0, m1 = math.ceil(start / 60) * 60.0, math.floor(end / 60) * 60.0
    if m0 >= m1:
        return [("raw", start, end)]
    h0, h1 = math.ceil(m0 / 3600) * 3600.0, math.floor(m1 / 3600) * 3600.0
    if hours_ok and h0 < h1:
        parts.append(("rollup_1h", h0, h1))
        parts += [("rollup_1m", m0, h0), ("rollup_1m", h1, m1)]
    else:
        parts.append(("rollup_1m", m0, m1))
    parts += [("raw", start, m0), ("raw", m1, end)]
    return [p for p in parts if p[1] < p[2]]


@dataclass(frozen=True, slots=True)
class SketchSQL:
    """The statements that answer a SketchQuery.

    ``series`` finds the series of the metric that pass the filters, with their
    group-by values; the backend numbers the groups and registers
    ``_groups(series, gid)``; ``rollups`` then merges every rollup part by
    ``(tb, gid, bucket)`` and ``(tb, gid, outcome)`` on integers alone. ``raw``
    does the same for the raw parts, grouped by the dimension values themselves.
    """

    plan: Plan
    series: tuple[str, list[Any]] | None
    rollups: tuple[str, list[Any]] | None
    raw: tuple[str, list[Any]] | None


def _merge(selects: list[str], keys: str) -> str:
    return (
        f"WITH src AS ({' UNION ALL '.join(selects)}) "
        f"SELECT {keys}, bucket, outcome, sum(cnt) AS c, sum(sm) AS s, "
        "GROUPING(bucket) AS per_outcome FROM src "
        f"GROUP BY GROUPING SETS (({keys}, bucket), ({keys}, outcome))"
    )


def sketch_sql(q: SketchQuery) -> SketchSQL:
    m = q.metric
    dims = (*q.by, *(name for name, _ in q.filters))
    rollup_ok = all(m.rollup_column(d) is not None for d in dims)
    step = q.step
    minutes_ok = rollup_ok and (step is None or step % 60 == 0)
    hours_ok = minutes_ok and (step is None or step % 3600 == 0)
    parts = _parts(q.start, q.end, minutes_ok, hours_ok)
    tb = f"(epoch_us(ts) // {step * 1_000_000}) * {step}" if step else "0"

    rollup_selects: list[str] = []
    rollup_params: list[Any] = []
    raw_selects: list[str] = []
    raw_params: list[Any] = []
    for source, lo, hi in parts:
        if source == "raw":
            value = f'"{m.field}"'
            where = [_where(m)] + [f'CAST("{d}" AS VARCHAR) = ?' for d, _ in q.filters]
            cols = [
                f"{tb} AS tb",
                *(f'CAST("{d}" AS VARCHAR) AS g{i}' for i, d in enumerate(q.by)),
                f"{outcome_expr(m)} AS outcome",
                f"{bucket_expr(value)} AS bucket",
                "1 AS cnt",
                f"{value} AS sm",
            ]
            raw_selects.append(
                f"SELECT {', '.join(cols)} FROM {m.kind} WHERE {' AND '.join(where)} "
                "AND ts >= make_timestamp(?) AND ts < make_timestamp(?)"
            )
            raw_params += [v for _, v in q.filters] + [_us(lo), _us(hi)]
        else:
            rollup_selects.append(
                f"SELECT {tb} AS tb, g.gid, buckets, counts, outcomes, outcome_counts, sum "
                f"FROM {source} JOIN _groups g USING (series) "
                "WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?)"
            )
            rollup_params += [_us(lo), _us(hi)]
    series = None
    if rollup_selects:
        by_cols = "".join(f", {m.rollup_column(d)}" for d in q.by)
        conditions = ["metric = ?"] + [f"{m.rollup_column(d)} = ?" for d, _ in q.filters]
        series = (
            f"SELECT id{by_cols} FROM series WHERE {' AND '.join(conditions)}",
            [m.name, *(v for _, v in q.filters)],
        )
    raw_keys = ", ".join(["tb", *(f"g{i}" for i in range(len(q.by)))])
    return SketchSQL(
        plan=Plan(
            raw=bool(raw_selects),
            minute=any(p[0] == "rollup_1m" for p in parts),
            hour=any(p[0] == "rollup_1h" for p in parts),
        ),
        series=series,
        rollups=(" UNION ALL ".join(rollup_selects), rollup_params) if rollup_selects else None,
        raw=(_merge(raw_selects, raw_keys), raw_params) if raw_selects else None,
    )


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Integer codes of a column's values (nulls get their own code) and the values."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    values: list[Any] = encoded.dictionary.to_pylist() + [None]
    codes = encoded.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), values


@dataclass(slots=True)
class Merged:
    """Sketch pieces as numpy columns, ready to merge.

    Rows carry a time step ``tb``, a group id ``gid`` and a ``sum``; bucket
    elements ``(row, bucket, count)`` and outcome elements ``(row, outcome,
    count)`` point at their row. Rollup rows bring whole lists of elements, raw
    merge rows one element each.
    """

    tb: npt.NDArray[np.int64]
    gid: npt.NDArray[np.int64]
    sum: npt.NDArray[np.float64]
    b_row: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    b_count: npt.NDArray[np.float64]
    o_row: npt.NDArray[np.int64]
    outcome: npt.NDArray[np.int64]
    o_count: npt.NDArray[np.float64]

    @classmethod
    def from_lists(cls, table: pa.Table) -> Merged:
        """Rollup rows: ``tb, gid, buckets, counts, outcomes, outcome_counts, sum``."""
        rows = np.arange(table.num_rows, dtype=np.int64)

        def flat(name: str, kind: pa.DataType) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
            lists = table.column(name).combine_chunks()
            lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
            values: npt.NDArray[Any] = pc.cast(lists.flatten(), kind).to_numpy(zero_copy_only=False)
            return np.repeat(rows, lengths.astype(np.int64)), values

        b_row, bucket = flat("buckets", pa.int64())
        _, b_count = flat("counts", pa.float64())
        o_row, outcome = flat("outcomes", pa.int64())
        _, o_count = flat("outcome_counts", pa.float64())
        return cls(
            tb=_numbers(table, "tb", pa.int64(), 0),
            gid=_numbers(table, "gid", pa.int64(), 0),
            sum=_numbers(table, "sum", pa.float64(), 0.0),
            b_row=b_row,
            bucket=bucket,
            b_count=b_count,
            o_row=o_row,
            outcome=outcome,
            o_count=o_count,
        )

    @classmethod
    def from_rows(cls, table: pa.Table, gid: npt.NDArray[np.int64]) -> Merged:
        """Raw merge rows: ``tb, g…, bucket, outcome, c, s, per_outcome``."""
        per_outcome = _numbers(table, "per_outcome", pa.int64(), 0) != 0
        rows = np.arange(table.num_rows, dtype=np.int64)
        counts = _numbers(table, "c", pa.float64(), 0.0)
        sums = np.where(per_outcome, 0.0, _numbers(table, "s", pa.float64(), 0.0))
        return cls(
            tb=_numbers(table, "tb", pa.int64(), 0),
            gid=gid,
            sum=sums,
            b_row=rows[~per_outcome],
            bucket=_numbers(table, "bucket", pa.int64(), 0)[~per_outcome],
            b_count=counts[~per_outcome],
            o_row=rows[per_outcome],
            outcome=_numbers(table, "outcome", pa.int64(), -1)[per_outcome],
            o_count=counts[per_outcome],
        )

    @classmethod
    def concat(cls, parts: list[Merged]) -> Merged:
        shift = np.cumsum([0] + [len(p.tb) for p in parts[:-1]])
        return cls(
            tb=np.concatenate([p.tb for p in parts]),
            gid=np.concatenate([p.gid for p in parts]),
            sum=np.concatenate([p.sum for p in parts]),
            b_row=np.concatenate([p.b_row + k for p, k in zip(parts, shift, strict=True)]),
            bucket=np.concatenate([p.bucket for p in parts]),
            b_count=np.concatenate([p.b_count for p in parts]),
            o_row=np.concatenate([p.o_row + k for p, k in zip(parts, shift, strict=True)]),
            outcome=np.concatenate([p.outcome for p in parts]),
            o_count=np.concatenate([p.o_count for p in parts]),
        )


def _numbers(table: pa.Table, name: str, kind: pa.DataType, fill: float) -> npt.NDArray[Any]:
    # sums of integers arrive as DECIMAL/HUGEINT: cast before filling nulls
    values: npt.NDArray[Any] = pc.cast(table.column(name), kind).fill_null(fill).to_numpy()
    return values


DENSE_CELLS = 8_000_000  # groups x bucket range up to which quantiles use one dense array


def _dense_quantiles(
    group: npt.NDArray[np.int64],
    bucket: npt.NDArray[np.int64],
    count: npt.NDArray[np.float64],
    groups: int,
    qs: tuple[float, ...],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """Quantiles by a bincount over (group, bucket index): fast when buckets are dense."""
    neg, pos = bucket < ZERO_BUCKET, bucket > ZERO_BUCKET
    n_lo = int(bucket[neg].min()) if neg.any() else 0
    n_width = int(bucket[neg].max()) - n_lo + 1 if neg.any() else 0
    p_lo = int(bucket[pos].min()) if pos.any() else 0
    p_width = int(bucket[pos].max()) - p_lo + 1 if pos.any() else 0
    width = n_width + 1 + p_width
    if groups * width > DENSE_CELLS:
        return None
    index = np.where(
        pos, n_width + 1 + (bucket - p_lo), np.where(neg, bucket - n_lo, n_width)
    ).astype(np.int64)
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


def raw_group_ids(
    table: pa.Table, width: int, groups: dict[tuple[Any, ...], int]
) -> npt.NDArray[np.int64]:
    """Group ids of raw merge rows, numbering new group-by values as they come."""
    if width == 0:
        groups.setdefault((), len(groups))
        return np.full(table.num_rows, groups[()], dtype=np.int64)
    combined = np.zeros(table.num_rows, dtype=np.int64)
    decoders = []
    for i in range(width):
        codes, values = _codes(table.column(f"g{i}"))
        combined = combined * len(values) + codes
        decoders.append(values)
    unique, inverse = np.unique(combined, return_inverse=True)
    ids = np.empty(len(unique), dtype=np.int64)
    for n, code in enumerate(unique.tolist()):
        values = []
        for decoder in reversed(decoders):
            values.append(decoder[code % len(decoder)])
            code //= len(decoder)
        ids[n] = groups.setdefault(tuple(reversed(values)), len(groups))
    return ids[inverse]


def sketch_groups(merged: Merged, keys: list[tuple[Any, ...]], q: SketchQuery) -> list[SketchGroup]:
    """Merge pieces into one sketch per (time step, group); ``keys[gid]`` are its values."""
    if len(merged.tb) == 0:
        return []
    tbs, tb_code = np.unique(merged.tb, return_inverse=True)
    row_key = tb_code.astype(np.int64) * max(len(keys), 1) + merged.gid
    group_keys, row_group = np.unique(row_key, return_inverse=True)
    row_group = row_group.astype(np.int64)
    n = len(group_keys)
    b_group = row_group[merged.b_row]
    dense = _dense_quantiles(b_group, merged.bucket, merged.b_count, n, q.qs)
    if dense is not None:
        totals, estimates = dense
    else:  # a very wide bucket range: sort the elements instead
        order = np.lexsort((merged.bucket, b_group))
        starts = np.searchsorted(b_group[order], np.arange(n + 1))
        totals, estimates = grouped_quantiles(
            merged.bucket[order],
            np.rint(merged.b_count[order]).astype(np.int64),
            starts.astype(np.int64),
            q.qs,
        )
    sums = np.bincount(row_group, weights=merged.sum, minlength=n)
    valid = merged.outcome >= 0
    o_cells = np.bincount(
        row_group[merged.o_row[valid]] * 8 + merged.outcome[valid],
        weights=merged.o_count[valid],
        minlength=n * 8,
    ).reshape(n, 8)

    width = max(len(keys), 1)
    groups = []
    for i, group_key in enumerate(group_keys.tolist()):
        if totals[i] <= 0:
            continue
        t, gid = divmod(group_key, width)
        groups.append(
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
            )
        )
    groups.sort(key=lambda g: (g.time or 0.0, -g.count))
    return groups


_VIEW_FILTERS = ("service", "environment", "release", "page", "device", "browser")


def views_query(
    start: float, end: float, limit: int, filters: dict[str, str]
) -> tuple[str, list[Any]]:
    where = ["ts >= make_timestamp(?)", "ts < make_timestamp(?)"]
    params: list[Any] = [_us(start), _us(end)]
    for name, value in filters.items():
        if name in _VIEW_FILTERS:
            where.append(f'"{name}" = ?')
            params.append(value)
    params.append(limit)
    return (
        "SELECT epoch(ts) AS ts_s, * EXCLUDE (ts) FROM rum_view "
        f"WHERE {' AND '.join(where)} ORDER BY ts DESC LIMIT ?",
        params,
    )


_CHILD_COLUMNS = {
    "rum_vital": "view_id, name, value, rating, navigation_type, attribution",
    "rum_resource": (
        "view_id, type, count, transfer_bytes, encoded_bytes, decoded_bytes, duration_ms, "
        "cache_hits, render_blocking, third_party"
    ),
    "rum_largest": (
        "view_id, url, type, transfer_bytes, encoded_bytes, decoded_bytes, duration_ms, "
        "cached, render_blocking, third_party"
    ),
}


def view_children(table: str, n: int) -> str:
    marks = ", ".join("?" * n)
    return f"SELECT {_CHILD_COLUMNS[table]} FROM {table} WHERE view_id IN ({marks})"


_NAV = (
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "request_ms",
    "response_ms",
    "dom_interactive_ms",
    "dom_complete_ms",
    "load_ms",
    "transfer_bytes",
)
_LONG_TASKS = {
    "count": "lt_count",
    "total_ms": "lt_total_ms",
    "tbt_ms": "tbt_ms",
    "max_ms": "lt_max_ms",
    "loaf_count": "loaf_count",
    "loaf_total_ms": "loaf_total_ms",
    "worst_script": "worst_script",
    "worst_script_ms": "worst_script_ms",
}
_MEMORY = {
    "used_bytes": "mem_used_bytes",
    "total_bytes": "mem_total_bytes",
    "limit_bytes": "mem_limit_bytes",
    "source": "mem_source",
}


def view_shape(row: dict[str, Any]) -> dict[str, Any]:
    """A stored page view in the beacon's own shape (plus ``page``)."""
    nav = None
    if row["nav_type"] is not None or any(row[k] is not None for k in _NAV):
        nav = {"type": row["nav_type"], **{k: row[k] for k in _NAV}}
    long_tasks = None
    if row["lt_count"] is not None:
        long_tasks = {k: row[c] for k, c in _LONG_TASKS.items()}
    memory = None
    if row["mem_used_bytes"] is not None:
        memory = {k: row[c] for k, c in _MEMORY.items()}
    return {
        "id": row["view_id"],
        "ts": row["ts_s"],
        "url": row["url"],
        "page": row["page"],
        "soft": row["soft"],
        "service": row["service"],
        "environment": row["environment"],
        "release": row["release"],
        "device": row["device"],
        "browser": row["browser"],
        "connection": row["connection"],
        "sample_rate": row["sample_rate"],
        "nav": nav,
        "long_tasks": long_tasks,
        "memory": memory,
        "vitals": [],
        "resources": [],
        "largest_resources": [],
    }


# --- traces, logs, OpenTelemetry metrics ------------------------------------------

SPAN_COLUMNS = (
    "epoch(ts) AS ts, service, environment, release, host, trace_id, span_id, parent_id, "
    "name, kind, duration_ms, status, status_message, attributes, events"
)


def trace_spans() -> str:
    return f"SELECT {SPAN_COLUMNS} FROM span WHERE trace_id = ? ORDER BY ts LIMIT 10000"


def trace_roots(filters: dict[str, str], min_duration_ms: float | None) -> tuple[str, list[Any]]:
    where = ["ts >= make_timestamp(?)", "ts < make_timestamp(?)", "parent_id IS NULL"]
    params: list[Any] = []
    for name in ("service", "environment", "release", "name"):
        if name in filters:
            where.append(f"{name} = ?")
            params.append(filters[name])
    if min_duration_ms is not None:
        where.append("duration_ms >= ?")
        params.append(min_duration_ms)
    statement = (
        f"SELECT {SPAN_COLUMNS}, (SELECT count(*) FROM span s2 WHERE s2.trace_id = span.trace_id) "
        f"AS spans FROM span WHERE {' AND '.join(where)} ORDER BY ts DESC LIMIT ?"
    )
    return statement, params


LOG_COLUMNS = (
    "epoch_us(ts) AS ts_us, service, environment, release, host, id, level, severity, logger, "
    "message, exception, trace_id, span_id, request_id, attributes"
)


def log_search(
    filters: dict[str, str],
    levels: list[str] | None,
    text: str | None,
    cursor: tuple[int, str] | None,
) -> tuple[str, list[Any]]:
    where = ["ts >= make_timestamp(?)", "ts < make_timestamp(?)"]
    params: list[Any] = []
    for name in ("service", "environment", "release", "host", "trace_id", "request_id", "logger"):
        if name in filters:
            where.append(f"{name} = ?")
            params.append(filters[name])
    if levels:
        where.append(f"level IN ({', '.join('?' * len(levels))})")
        params += levels
    if text:
        where.append("contains(lower(message), lower(?))")
        params.append(text)
    if cursor is not None:
        where.append("(epoch_us(ts) < ? OR (epoch_us(ts) = ? AND id < ?))")
        params += [cursor[0], cursor[0], cursor[1]]
    statement = (
        f"SELECT {LOG_COLUMNS} FROM log WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, id DESC LIMIT ?"
    )
    return statement, params


OTEL_NAMES = (
    "SELECT name, type, unit, count(*) AS points, count(DISTINCT service) AS services "
    "FROM otel_metric WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?) "
    "GROUP BY name, type, unit ORDER BY name"
)


def otel_points(filters: dict[str, str]) -> tuple[str, list[Any]]:
    where = ["name = ?", "ts >= make_timestamp(?)", "ts < make_timestamp(?)"]
    params: list[Any] = []
    for name in ("service", "environment", "release", "host"):
        if name in filters:
            where.append(f"{name} = ?")
            params.append(filters[name])
    statement = (
        "SELECT epoch(ts) AS ts, service, type, unit, temporality, start_ts, attributes, value, "
        "count, sum, "
        'min, max, bounds, counts, scale, zero_count, "offset" '
        f"FROM otel_metric WHERE {' AND '.join(where)} ORDER BY ts LIMIT 500000"
    )
    return statement, params
