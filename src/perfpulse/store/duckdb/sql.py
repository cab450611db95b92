"""Every SQL statement of the DuckDB backend, built from the row layouts and the
metric catalog. Nothing else in perfpulse writes SQL.

Tables
------
- one raw table per event kind (``model.rows.LAYOUTS``), ``ts`` a UTC TIMESTAMP;
- ``series``: one row per distinct ``(metric, service, environment, release,
  d1..d4)`` — the dimensions a rollup keeps — with an integer ``id``;
- ``rollup_1m`` / ``rollup_1h``: ``(ts, series, outcome, bucket, count, sum)``, a
  log-bucket sketch per series and time slot. Integer keys keep the rollups
  small and make merging them a grouping on integers;
- ``batches``: batch ids seen (exactly-once retries), ``meta``: the checkpoint.

Reading a window
----------------
A window ``[start, end)`` is cut into at most five parts: whole hours from
``rollup_1h``, whole minutes at both edges from ``rollup_1m``, and the partial
minutes at both ends from the raw table (where every value is bucketed on the
fly the same way). Group-by or filter dimensions that are not in the rollups, or a
time step that is not a whole number of minutes, send the whole window to the raw
table. All parts are merged with ``SUM(count) GROUP BY bucket`` and quantiles read
with a cumulative sum: no percentile is ever averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from perfpulse.model.catalog import MAX_ROLLUP_DIMS, METRICS, Metric
from perfpulse.model.rows import LAYOUTS, FieldType
from perfpulse.sketch import LOG_GAMMA, MIN_POSITIVE, NEGATIVE_BASE, ZERO_BUCKET, grouped_quantiles
from perfpulse.store.base import Plan, SketchGroup, SketchQuery

_TYPES: dict[FieldType, str] = {
    "ts": "TIMESTAMP",
    "str": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}
_ROLLUP_COLUMNS = (
    "ts TIMESTAMP, series INTEGER, outcome TINYINT, bucket INTEGER, count BIGINT, sum DOUBLE"
)
_KEY = "series, outcome, bucket"
SERIES_COLUMNS = ("metric", "service", "environment", "release", "d1", "d2", "d3", "d4")
# A series key as one string: the dimensions joined by a unit separator, NULL as NUL.
_SKEY = "concat_ws(chr(31), " + ", ".join(f"coalesce({c}, chr(0))" for c in SERIES_COLUMNS) + ")"


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


def insert_raw(table: str) -> str:
    cols = ", ".join(
        "make_timestamp(CAST(ts * 1000000 AS BIGINT))" if kind == "ts" else f'"{name}"'
        for name, kind in LAYOUTS[table]
    )
    return f"INSERT INTO {table} SELECT {cols} FROM _in"


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


def rollup_from_input(table: str) -> str | None:
    """Per-minute sketch rows of the flush in ``_in``, for every metric of ``table``."""
    parts = []
    for m in METRICS:
        if m.kind != table:
            continue
        value = f'"{m.field}"'
        parts.append(
            f"SELECT CAST(floor(ts / 60) * 60 AS BIGINT) AS s, '{m.name}' AS metric, "
            f"service, environment, release, {_dims(m)}, {outcome_expr(m)} AS outcome, "
            f"{bucket_expr(value)} AS bucket, count(*) AS count, sum({value}) AS sum "
            f"FROM _in WHERE {_where(m)} GROUP BY ALL"
        )
    return " UNION ALL ".join(parts) or None


CREATE_FLUSH_ROLLUP = (
    "CREATE TEMP TABLE _flush_rollup AS SELECT *, " + _SKEY + " AS skey FROM ({select})"
)
FLUSH_SERIES = "SELECT DISTINCT skey FROM _flush_rollup"
INSERT_SERIES = "INSERT INTO series VALUES (?, " + ", ".join("?" for _ in SERIES_COLUMNS) + ")"
ALL_SERIES = "SELECT id, " + _SKEY + " FROM series"
INSERT_1M_FROM_FLUSH = (
    "INSERT INTO rollup_1m SELECT make_timestamp(s * 1000000), m.id, outcome, bucket, "
    "count, sum FROM _flush_rollup JOIN _series_map m USING (skey)"
)
INSERT_1H_FROM_FLUSH = (
    "INSERT INTO rollup_1h SELECT make_timestamp((s // 3600 * 3600) * 1000000) AS ts, "
    "m.id, outcome, bucket, sum(count), sum(sum) "
    "FROM _flush_rollup JOIN _series_map m USING (skey) GROUP BY ALL"
)
FLUSH_MINUTES = "SELECT DISTINCT s FROM _flush_rollup"


def split_series_key(skey: str) -> tuple[str | None, ...]:
    """The dimensions of a series key (see ``_SKEY``)."""
    return tuple(None if part == "\x00" else part for part in skey.split("\x1f"))


INSERT_BATCH = "INSERT INTO batches VALUES (make_timestamp(?), ?)"
SET_CHECKPOINT = "INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)"
GET_CHECKPOINT = "SELECT value FROM meta WHERE name = 'checkpoint'"
RECENT_BATCHES = "SELECT key FROM batches WHERE ts >= make_timestamp(?)"
KNOWN_ROUTES = (
    "SELECT DISTINCT service, route FROM http UNION SELECT DISTINCT service, page FROM rum_view"
)


def count_slots(table: str) -> str:
    return f"SELECT count(*) FROM {table} WHERE epoch(ts)::BIGINT IN (SELECT s FROM _slots)"


def compact_slots(table: str) -> str:
    slot = "epoch(ts)::BIGINT IN (SELECT s FROM _slots)"
    return (
        f"CREATE TEMP TABLE _merged AS SELECT ts, {_KEY}, sum(count) AS count, sum(sum) AS sum "
        f"FROM {table} WHERE {slot} GROUP BY ALL; "
        f"DELETE FROM {table} WHERE {slot}; "
        f"INSERT INTO {table} SELECT * FROM _merged; "
        "DROP TABLE _merged"
    )


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
                f"SELECT {tb} AS tb, g.gid, outcome, bucket, count AS cnt, sum AS sm "
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
        rollups=(_merge(rollup_selects, "tb, gid"), rollup_params) if rollup_selects else None,
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
    """Merge rows as numpy columns: one row per (tb, gid, bucket) or (tb, gid, outcome)."""

    tb: npt.NDArray[np.int64]
    gid: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    outcome: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    sum: npt.NDArray[np.float64]
    per_outcome: npt.NDArray[np.bool_]

    @classmethod
    def from_arrow(cls, table: pa.Table, gid: npt.NDArray[np.int64]) -> Merged:
        def col(name: str, kind: pa.DataType, fill: float) -> npt.NDArray[Any]:
            # sums of integers arrive as DECIMAL/HUGEINT: cast before filling nulls
            column = pc.cast(table.column(name), kind).fill_null(fill)
            values: npt.NDArray[Any] = column.to_numpy()
            return values

        i64, f64 = pa.int64(), pa.float64()
        return cls(
            tb=col("tb", i64, 0),
            gid=gid,
            bucket=col("bucket", i64, 0),
            outcome=col("outcome", i64, -1),
            count=col("c", i64, 0),
            sum=col("s", f64, 0.0),
            per_outcome=col("per_outcome", i64, 0) != 0,
        )

    @classmethod
    def concat(cls, parts: list[Merged]) -> Merged:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _MERGED_FIELDS))


_MERGED_FIELDS = ("tb", "gid", "bucket", "outcome", "count", "sum", "per_outcome")


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
    """Merge rows into one sketch per (time step, group); ``keys[gid]`` are its values."""
    if len(merged.tb) == 0:
        return []
    tbs, tb_code = np.unique(merged.tb, return_inverse=True)
    key = tb_code.astype(np.int64) * max(len(keys), 1) + merged.gid
    rows = ~merged.per_outcome
    b_key, b_bucket, b_count, b_sum = (
        key[rows],
        merged.bucket[rows],
        merged.count[rows],
        merged.sum[rows],
    )
    order = np.lexsort((b_bucket, b_key))
    b_key, b_bucket, b_count, b_sum = b_key[order], b_bucket[order], b_count[order], b_sum[order]
    starts = np.flatnonzero(np.r_[True, b_key[1:] != b_key[:-1]])
    offsets = np.r_[starts, len(b_key)].astype(np.int64)
    totals, estimates = grouped_quantiles(b_bucket, b_count, offsets, q.qs)
    sums = np.add.reduceat(b_sum, starts) if len(starts) else np.zeros(0)

    outcomes: dict[int, dict[int, int]] = {}
    o = merged.per_outcome
    for k, oc, c in zip(
        key[o].tolist(), merged.outcome[o].tolist(), merged.count[o].tolist(), strict=True
    ):
        if c and oc >= 0:
            slot = outcomes.setdefault(k, {})
            slot[oc] = slot.get(oc, 0) + c

    width = max(len(keys), 1)
    groups = []
    for i, group_key in enumerate(b_key[starts].tolist()):
        t, gid = divmod(group_key, width)
        groups.append(
            SketchGroup(
                key=keys[gid] if keys else (),
                count=int(totals[i]),
                sum=float(sums[i]),
                outcomes=outcomes.get(group_key, {}),
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
