"""Every SQL statement of the DuckDB backend, built from the row layouts and the
metric catalog. Nothing else in perfpulse writes SQL.

Tables
------
- one raw table per event kind (``model.rows.LAYOUTS``), ``ts`` a UTC TIMESTAMP;
- ``rollup_1m`` / ``rollup_1h``: ``(ts, metric, service, environment, release,
  d1..d4, outcome, bucket, count, sum)``, a log-bucket sketch per key;
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
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from perfpulse.model.catalog import MAX_ROLLUP_DIMS, METRICS, Metric
from perfpulse.model.rows import LAYOUTS, FieldType
from perfpulse.sketch import LOG_GAMMA, MIN_POSITIVE, NEGATIVE_BASE, ZERO_BUCKET, grouped_quantiles
from perfpulse.store.base import Plan, SketchGroup, SketchQuery
from perfpulse.store.retention import Retention

_TYPES: dict[FieldType, str] = {
    "ts": "TIMESTAMP",
    "str": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}
_ROLLUP_COLUMNS = (
    "ts TIMESTAMP, metric VARCHAR, service VARCHAR, environment VARCHAR, release VARCHAR, "
    "d1 VARCHAR, d2 VARCHAR, d3 VARCHAR, d4 VARCHAR, outcome TINYINT, bucket INTEGER, "
    "count BIGINT, sum DOUBLE"
)
_KEY = "metric, service, environment, release, d1, d2, d3, d4, outcome, bucket"


def schema() -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f'"{name}" {_TYPES[kind]}' for name, kind in layout)
        + ")"
        for table, layout in LAYOUTS.items()
    ]
    statements += [
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


CREATE_FLUSH_ROLLUP = "CREATE TEMP TABLE _flush_rollup AS {select}"
INSERT_1M_FROM_FLUSH = (
    f"INSERT INTO rollup_1m SELECT make_timestamp(s * 1000000), {_KEY}, count, sum "
    "FROM _flush_rollup"
)
INSERT_1H_FROM_FLUSH = (
    f"INSERT INTO rollup_1h SELECT make_timestamp((s // 3600 * 3600) * 1000000) AS ts, "
    f"{_KEY}, sum(count), sum(sum) FROM _flush_rollup GROUP BY ALL"
)
FLUSH_MINUTES = "SELECT DISTINCT s FROM _flush_rollup"
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


def sketch_query(q: SketchQuery, retention: Retention) -> tuple[str, list[Any], Plan]:
    m = q.metric
    dims = (*q.by, *(name for name, _ in q.filters))
    rollup_ok = all(m.rollup_column(d) is not None for d in dims)
    step = q.step
    minutes_ok = rollup_ok and (step is None or step % 60 == 0)
    hours_ok = minutes_ok and (step is None or step % 3600 == 0)
    parts = _parts(q.start, q.end, minutes_ok, hours_ok)

    tb = f"(epoch_us(ts) // {step * 1_000_000}) * {step}" if step else "0"
    selects: list[str] = []
    params: list[Any] = []
    for source, lo, hi in parts:
        if source == "raw":
            group = [f'CAST("{d}" AS VARCHAR)' for d in q.by]
            where = [_where(m)] + [f'CAST("{d}" AS VARCHAR) = ?' for d, _ in q.filters]
            value = f'"{m.field}"'
            cols = [
                f"{tb} AS tb",
                *(f"{g} AS g{i}" for i, g in enumerate(group)),
                f"{outcome_expr(m)} AS outcome",
                f"{bucket_expr(value)} AS bucket",
                "1 AS cnt",
                f"{value} AS sm",
            ]
            table = m.kind
        else:
            group = [str(m.rollup_column(d)) for d in q.by]
            where = ["metric = ?"] + [f"{m.rollup_column(d)} = ?" for d, _ in q.filters]
            cols = [
                f"{tb} AS tb",
                *(f"{g} AS g{i}" for i, g in enumerate(group)),
                "outcome",
                "bucket",
                "count AS cnt",
                "sum AS sm",
            ]
            table = source
            params.append(m.name)
        params += [value for _, value in q.filters]
        params += [_us(lo), _us(hi)]
        selects.append(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {' AND '.join(where)} "
            "AND ts >= make_timestamp(?) AND ts < make_timestamp(?)"
        )
    keys = ", ".join(["tb", *(f"g{i}" for i in range(len(q.by)))])
    # One pass over the parts builds two kinds of rows: per bucket (for the
    # quantiles) and per outcome (for error, hit and rating shares). Groups are
    # put together and their quantiles read in numpy (sketch_groups), which is
    # far cheaper than sorting every bucket row in SQL.
    statement = (
        f"WITH src AS ({' UNION ALL '.join(selects)}) "
        f"SELECT {keys}, bucket, outcome, sum(cnt) AS c, sum(sm) AS s, "
        "GROUPING(bucket) AS per_outcome FROM src "
        f"GROUP BY GROUPING SETS (({keys}, bucket), ({keys}, outcome))"
    )
    plan = Plan(
        raw=any(p[0] == "raw" for p in parts),
        minute=any(p[0] == "rollup_1m" for p in parts),
        hour=any(p[0] == "rollup_1h" for p in parts),
    )
    return statement, params, plan


def _codes(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Integer codes of a column's values (nulls get their own code) and the values."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    values: list[Any] = encoded.dictionary.to_pylist() + [None]
    null_code = len(values) - 1
    codes = encoded.indices.fill_null(null_code).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), values


def sketch_groups(table: pa.Table, q: SketchQuery) -> list[SketchGroup]:
    """Rows per (group, bucket) and (group, outcome) merged into one sketch per group."""
    if table.num_rows == 0:
        return []
    key_names = ["tb", *(f"g{i}" for i in range(len(q.by)))]
    key = np.zeros(table.num_rows, dtype=np.int64)
    decoders = []
    for name in key_names:
        codes, values = _codes(table.column(name))
        key = key * len(values) + codes
        decoders.append(values)
    per_outcome = table.column("per_outcome").to_numpy() != 0
    counts_all = table.column("c").to_numpy(zero_copy_only=False).astype(np.int64)

    bucket_rows = ~per_outcome
    b_key = key[bucket_rows]
    b_bucket = table.column("bucket").filter(pa.array(bucket_rows)).to_numpy(zero_copy_only=False)
    b_bucket = b_bucket.astype(np.int64)
    b_count = counts_all[bucket_rows]
    b_sum = table.column("s").filter(pa.array(bucket_rows)).to_numpy(zero_copy_only=False)
    order = np.lexsort((b_bucket, b_key))
    b_key, b_bucket, b_count, b_sum = b_key[order], b_bucket[order], b_count[order], b_sum[order]
    starts = np.flatnonzero(np.r_[True, b_key[1:] != b_key[:-1]])
    offsets = np.r_[starts, len(b_key)].astype(np.int64)
    totals, estimates = grouped_quantiles(b_bucket, b_count, offsets, q.qs)
    sums = np.add.reduceat(np.nan_to_num(b_sum.astype(np.float64)), starts)

    outcomes: dict[int, dict[int, int]] = {}
    o_key = key[per_outcome]
    o_outcome = table.column("outcome").filter(pa.array(per_outcome)).to_pylist()
    for k, o, c in zip(o_key.tolist(), o_outcome, counts_all[per_outcome].tolist(), strict=True):
        if c and o is not None:
            outcomes.setdefault(k, {})[int(o)] = int(c)

    groups = []
    sizes = [len(v) for v in decoders]
    for i, group_key in enumerate(b_key[starts].tolist()):
        parts = []
        rest = group_key
        for size in reversed(sizes):
            parts.append(rest % size)
            rest //= size
        decoded = [decoders[j][code] for j, code in enumerate(reversed(parts))]
        groups.append(
            SketchGroup(
                key=tuple(decoded[1:]),
                count=int(totals[i]),
                sum=float(sums[i]),
                outcomes=outcomes.get(group_key, {}),
                quantiles={
                    qv: (None if math.isnan(estimates[i, j]) else float(estimates[i, j]))
                    for j, qv in enumerate(q.qs)
                },
                time=float(decoded[0]) if q.step else None,
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
