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

import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from perfpulse.model.catalog import MAX_ROLLUP_DIMS, METRICS, Metric
from perfpulse.model.rows import BEACON_TABLES, LAYOUTS, FieldType, StoredBeacon
from perfpulse.sketch import LOG_GAMMA, MIN_POSITIVE, NEGATIVE_BASE, ZERO_BUCKET
from perfpulse.store.base import Plan, SketchQuery

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
        # the row every flush updates (an UPDATE costs a flush half an upsert's 3 ms)
        "INSERT OR IGNORE INTO meta VALUES ('checkpoint', 0)",
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
# The flush's pieces with their series ids, joined once for both rollup tables:
# integers only, narrow (joining in each of the two inserts cost a third of a flush).
CREATE_FLUSH_IDS = (
    "CREATE TEMP TABLE _flush_ids AS SELECT f.s, s.id AS series, f.outcome, f.bucket, f.count, "
    f"f.sum FROM _flush_rollup f JOIN series s ON {_SAME_SERIES}"
)
_FLUSH_PIECES = "SELECT * FROM _flush_ids"


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


#: The relation a flush registers its batch ids ``(ts, key)`` under (unix seconds, the key).
BATCHES_INPUT = "_in_batches"
INSERT_BATCHES = (
    "INSERT INTO batches SELECT make_timestamp(CAST(ts * 1000000 AS BIGINT)), key "
    f"FROM {BATCHES_INPUT}"
)
SET_CHECKPOINT = "UPDATE meta SET value = ? WHERE name = 'checkpoint'"


def set_checkpoint(seq: int) -> str:
    """:data:`SET_CHECKPOINT` with ``seq`` written in (it may then come before
    another statement's parameters in one call)."""
    return SET_CHECKPOINT.replace("?", str(int(seq)))


def flush_outcome(selects: list[str], *, minutes: bool) -> str:
    """One row: how many rows ``selects`` give together, and (``minutes``) the
    list of the minutes ``_flush_ids`` holds, else NULL."""
    counts = " + ".join(f"(SELECT count(*) FROM ({select}))" for select in selects) or "0"
    listed = "(SELECT list(DISTINCT s) FROM _flush_ids)" if minutes else "NULL"
    return f"SELECT {counts}, {listed}"


GET_CHECKPOINT = "SELECT value FROM meta WHERE name = 'checkpoint'"
RECENT_BATCHES = "SELECT key FROM batches WHERE ts >= make_timestamp(?)"
KNOWN_ROUTES = (
    "SELECT DISTINCT service, route FROM http UNION SELECT DISTINCT service, page FROM rum_view"
)


# The rows of some time slots: ``ts`` within [lo, hi] lets DuckDB skip the row
# groups outside (zone maps); the list of slots (µs) picks the slots inside.
_IN_SLOTS = (
    "ts >= make_timestamp($lo) AND ts <= make_timestamp($hi) "
    "AND epoch_us(ts) IN (SELECT unnest($slots::BIGINT[]))"
)


def compact_slots(table: str) -> tuple[str, str, str]:
    """Statements that replace the rows of some slots by one merged row per series:
    make ``_merged``, delete the old rows, insert ``_merged``. Parameters: ``lo``,
    ``hi`` (µs, the first and the last slot) and ``slots`` (µs).

    Every row of the slots is rewritten, a series with one row too: the slots' rows
    then sit together at the end of the table, so a read of a time range scans few
    row groups. Merging only the series with several rows left the others where
    they were and made the 10M-event percentile question 25 % slower."""
    merged = (
        "CREATE TEMP TABLE _merged AS "
        f"WITH r AS MATERIALIZED (SELECT * FROM {table} WHERE {_IN_SLOTS}), "
        "b AS (SELECT ts, series, bucket, sum(c) AS c FROM "
        "(SELECT ts, series, unnest(buckets) AS bucket, unnest(counts) AS c FROM r) GROUP BY ALL), "
        "o AS (SELECT ts, series, outcome, sum(c) AS c FROM "
        "(SELECT ts, series, unnest(outcomes) AS outcome, unnest(outcome_counts) AS c FROM r) "
        "GROUP BY ALL), "
        "bl AS (SELECT ts, series, list(bucket ORDER BY bucket) AS buckets, "
        "list(c ORDER BY bucket) AS counts FROM b GROUP BY ALL), "
        "ol AS (SELECT ts, series, list(outcome ORDER BY outcome) AS outcomes, "
        "list(c ORDER BY outcome) AS outcome_counts FROM o GROUP BY ALL), "
        "t AS (SELECT ts, series, sum(sum) AS sum FROM r GROUP BY ALL) "
        "SELECT ts, series, buckets, counts, outcomes, outcome_counts, sum "
        "FROM bl JOIN ol USING (ts, series) JOIN t USING (ts, series)"
    )
    return (
        merged,
        f"DELETE FROM {table} WHERE {_IN_SLOTS}",
        f"INSERT INTO {table} SELECT * FROM _merged",
    )


def delete_before(table: str) -> str:
    return f"DELETE FROM {table} WHERE ts < make_timestamp(?)"


# --- reads --------------------------------------------------------------------


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


Part = tuple[str, float, float, int]  # (source, from, to, +1 or -1); source "hours": rollup_1h


def _edge(lo: float, hi: float, hour: float, before: bool, subtract: bool) -> list[Part]:
    """The minutes ``[lo, hi)`` inside the hour that starts at ``hour``: read as they
    are, or (``subtract``, when that reads fewer minutes) as the hour's row less its
    other minutes — exact, since counts are integers and both come from one snapshot."""
    inside = (hi - lo) / 60
    if not subtract or inside <= 30:
        return [("rollup_1m", lo, hi, 1)]
    rest = (hour, lo) if before else (hi, hour + 3600)
    return [("rollup_1h", hour, hour + 3600, 1), ("rollup_1m", *rest, -1)]


def _parts(
    start: float, end: float, minutes_ok: bool, hours_ok: bool, subtract: bool = False
) -> list[Part]:
    """Cut ``[start, end)`` into (source, from, to, sign) parts, coarsest first."""
    if not minutes_ok:
        return [("raw", start, end, 1)]
    m0, m1 = math.ceil(start / 60) * 60.0, math.floor(end / 60) * 60.0
    if m0 >= m1:
        return [("raw", start, end, 1)]
    h0, h1 = math.ceil(m0 / 3600) * 3600.0, math.floor(m1 / 3600) * 3600.0
    parts: list[Part] = []
    if hours_ok and h0 <= h1:
        if h0 < h1:
            parts.append(("hours", h0, h1, 1))  # the whole hours (rollup_1h)
        if m0 < h0:
            parts += _edge(m0, h0, h0 - 3600, before=True, subtract=subtract)
        if h1 < m1:
            parts += _edge(h1, m1, h1, before=False, subtract=subtract)
    else:
        parts.append(("rollup_1m", m0, m1, 1))
    parts += [("raw", start, m0, 1), ("raw", m1, end, 1)]
    return [p for p in parts if p[1] < p[2]]


@dataclass(frozen=True, slots=True)
class SketchSQL:
    """The statements that answer a SketchQuery.

    ``series`` finds the series of the metric that pass the filters, with their
    group-by values, which the backend numbers into groups. A question without
    time steps reads each rollup part of ``series_parts`` — (table, from, to,
    sign) — per series with :func:`series_pieces`, for every series of the metric,
    so the backend can keep the result for the next question; a question with
    steps registers ``_groups(series, gid)`` and reads all its rollup parts with
    ``rollups``, merged per ``(tb, gid)`` on integers alone. ``raw`` reads the raw
    parts, merged per the dimension values themselves — or, when they span at most
    :data:`RAW_ROWS_SPAN` seconds (the partial minutes at a window's edges), as
    the rows ``(tb, g…, outcome, bucket, cnt, sm)`` themselves, which costs less
    than merging them in SQL.
    """

    plan: Plan
    series: tuple[str, list[Any]] | None
    rollups: tuple[str, list[Any]] | None
    raw: tuple[str, list[Any]] | None
    series_parts: tuple[tuple[str, float, float, int], ...] = ()
    raw_rows: bool = False  # ``raw`` returns the rows themselves (a few seconds of them)


# A sketch as pieces, one per row: ``kind`` 0 is a bucket ``k`` with its count
# ``c``, 1 an outcome ``k`` with its count, 2 just a ``sum`` ``s``.
def _pieces(rows: str, keys: str) -> str:
    """Pieces of the sketch rows ``r`` (``rows``, with a sign ``sgn``), merged by ``keys``."""
    return (
        f"WITH r AS MATERIALIZED ({rows}) "
        f"SELECT 0::TINYINT AS kind, {keys}, k::BIGINT AS k, sum(c * sgn)::DOUBLE AS c, 0.0 AS s "
        f"FROM (SELECT {keys}, sgn, unnest(buckets) AS k, unnest(counts) AS c FROM r) "
        "GROUP BY ALL "
        f"UNION ALL SELECT 1::TINYINT, {keys}, coalesce(k, -1)::BIGINT, sum(c * sgn)::DOUBLE, 0.0 "
        f"FROM (SELECT {keys}, sgn, unnest(outcomes) AS k, unnest(outcome_counts) AS c FROM r) "
        "GROUP BY ALL "
        f"UNION ALL SELECT 2::TINYINT, {keys}, 0::BIGINT, 0.0, sum(sum * sgn)::DOUBLE FROM r "
        "GROUP BY ALL"
    )


def series_pieces(table: str) -> str:
    """Every series of a metric over ``[from, to)`` of a rollup table, merged per
    series (parameters: from and to in µs, the metric's name)."""
    return _pieces(
        f"SELECT series, buckets, counts, outcomes, outcome_counts, sum, 1 AS sgn FROM {table} "
        "WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?) "
        "AND series IN (SELECT id FROM series WHERE metric = ?)",
        "series",
    )


RAW_ROWS_SPAN = 120.0


def _raw_pieces(selects: list[str], keys: str) -> str:
    return (
        f"WITH src AS ({' UNION ALL '.join(selects)}) "
        f"SELECT GROUPING(bucket)::TINYINT AS kind, {keys}, "
        "coalesce(bucket, outcome, -1)::BIGINT AS k, sum(cnt)::DOUBLE AS c, "
        "CASE WHEN GROUPING(bucket) = 0 THEN sum(sm) ELSE 0 END::DOUBLE AS s FROM src "
        f"GROUP BY GROUPING SETS (({keys}, bucket), ({keys}, outcome))"
    )


def sketch_sql(q: SketchQuery) -> SketchSQL:
    m = q.metric
    dims = (*q.by, *(name for name, _ in q.filters))
    rollup_ok = all(m.rollup_column(d) is not None for d in dims)
    step = q.step
    minutes_ok = rollup_ok and (step is None or step % 60 == 0)
    hours_ok = minutes_ok and (step is None or step % 3600 == 0)
    parts = _parts(q.start, q.end, minutes_ok, hours_ok, subtract=step is None)
    tb = f"(epoch_us(ts) // {step * 1_000_000}) * {step}" if step else "0"

    rollup_selects: list[str] = []
    rollup_params: list[Any] = []
    raw_selects: list[str] = []
    raw_params: list[Any] = []
    series_parts: list[tuple[str, float, float, int]] = []
    for source, lo, hi, sign in parts:
        table = "rollup_1h" if source == "hours" else source
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
        elif step is None:  # read per series, so the backend can keep it
            series_parts.append((table, lo, hi, sign))
        else:
            rollup_selects.append(
                f"SELECT {tb} AS tb, g.gid, buckets, counts, outcomes, outcome_counts, sum, "
                f"{sign} AS sgn FROM {table} JOIN _groups g USING (series) "
                "WHERE ts >= make_timestamp(?) AND ts < make_timestamp(?)"
            )
            rollup_params += [_us(lo), _us(hi)]
    rollups = None
    if rollup_selects:
        rollups = (_pieces(" UNION ALL ".join(rollup_selects), "tb, gid"), rollup_params)
    series = None
    if rollups or series_parts:
        by_cols = "".join(f", {m.rollup_column(d)}" for d in q.by)
        conditions = ["metric = ?"] + [f"{m.rollup_column(d)} = ?" for d, _ in q.filters]
        series = (
            f"SELECT id{by_cols} FROM series WHERE {' AND '.join(conditions)}",
            [m.name, *(v for _, v in q.filters)],
        )
    raw_keys = ", ".join(["tb", *(f"g{i}" for i in range(len(q.by)))])
    raw_rows = sum(hi - lo for source, lo, hi, _ in parts if source == "raw") <= RAW_ROWS_SPAN
    raw = None
    if raw_selects:
        statement = " UNION ALL ".join(raw_selects) if raw_rows else None
        raw = (statement or _raw_pieces(raw_selects, raw_keys), raw_params)
    return SketchSQL(
        plan=Plan(
            raw=bool(raw_selects),
            minute=any(p[0] == "rollup_1m" for p in parts),
            hour=any(p[0] in ("hours", "rollup_1h") for p in parts),
        ),
        series=series,
        rollups=rollups,
        raw=raw,
        series_parts=tuple(series_parts),
        raw_rows=raw_rows,
    )


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


# --- beacons: JSON documents unnested into rows -----------------------------------------


def _structure(t: msgspec.inspect.Type) -> object:
    """The ``json_transform`` structure of the msgspec type ``t``: what DuckDB
    turns a value of it into (a missing key becomes NULL)."""
    mi = msgspec.inspect
    if isinstance(t, mi.UnionType):  # ``X | None``: DuckDB's values are all nullable
        (only,) = [u for u in t.types if not isinstance(u, mi.NoneType)]
        return _structure(only)
    if isinstance(t, mi.StructType):
        return {f.encode_name: _structure(f.type) for f in t.fields}
    if isinstance(t, mi.ListType):
        return [_structure(t.item_type)]
    if isinstance(t, mi.LiteralType | mi.StrType):
        return "VARCHAR"
    simple = {mi.BoolType: "BOOLEAN", mi.IntType: "BIGINT", mi.FloatType: "DOUBLE"}
    for kind, name in simple.items():
        if isinstance(t, kind):
            return name
    return "JSON"  # the wire's attribution objects (``beacon.vitals`` is empty when stored)


BEACONS = "_beacons"
_BEACON_STRUCTURE = json.dumps(_structure(msgspec.inspect.type_info(StoredBeacon)))
# The documents come as one VARCHAR[] parameter, and DuckDB's json_transform parses
# them without the GIL and without buffers of its own (its JSON reader, read_json,
# wants 32 MB of buffers, twice the steady memory limit of a collector that only
# ingests, so each flush ran out of memory once and was tried again under the burst
# limit).
LOAD_BEACONS = (
    f"CREATE TEMP TABLE {BEACONS} AS SELECT s.page AS page, s.vitals AS vitals, "
    f"s.beacon AS beacon FROM (SELECT json_transform(d, "
    f"'{_BEACON_STRUCTURE.replace(chr(39), chr(39) * 2)}') AS s "
    "FROM (SELECT unnest(?::VARCHAR[]) AS d))"
)
"""CREATE ``_beacons`` from a list of :class:`StoredBeacon` documents (as text)."""


_BEACON_HEAD = {
    "ts": "b.ts",
    "view_id": "b.id",
    "service": "b.service",
    "environment": "b.environment",
    "release": "b.release",
    "page": "page",
    "device": "b.device",
}
# Each beacon table's columns as expressions over ``b`` (the beacon), ``page``, and
# for the unnested tables ``x`` (a vital, a resource group or a largest resource).
_BEACON_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "rum_view": (
        "",
        {
            "url": "b.url",
            "nav_type": "b.nav.type",
            "lt_count": "b.long_tasks.count",
            "lt_total_ms": "b.long_tasks.total_ms",
            "tbt_ms": "b.long_tasks.tbt_ms",
            "lt_max_ms": "b.long_tasks.max_ms",
            "loaf_count": "b.long_tasks.loaf_count",
            "loaf_total_ms": "b.long_tasks.loaf_total_ms",
            "worst_script": "b.long_tasks.worst_script",
            "worst_script_ms": "b.long_tasks.worst_script_ms",
            "mem_used_bytes": "b.memory.used_bytes",
            "mem_total_bytes": "b.memory.total_bytes",
            "mem_limit_bytes": "b.memory.limit_bytes",
            "mem_source": "b.memory.source",
            **{phase: f"b.nav.{phase}" for phase in _NAV},
        },
    ),
    "rum_vital": ("vitals", {}),
    "rum_resource": ("beacon.resources", {}),
    "rum_largest": ("beacon.largest_resources", {}),
}


def _beacon_expr(table: str, name: str) -> str:
    unnest, special = _BEACON_FIELDS[table]
    if name in _BEACON_HEAD:
        return _BEACON_HEAD[name]
    if name in special:
        return special[name]
    if name in ("browser", "connection", "soft", "sample_rate"):
        return f"b.{name}"
    return f"x.{name}" if unnest else f"b.{name}"


def beacon_select(table: str) -> str:
    """The rows of ``table`` (one of ``BEACON_TABLES``) in the loaded beacon documents."""
    unnest, _ = _BEACON_FIELDS[table]
    cols = ", ".join(f'{_beacon_expr(table, name)} AS "{name}"' for name, _kind in LAYOUTS[table])
    source = (
        f"(SELECT beacon AS b, page, unnest({unnest}) AS x FROM {BEACONS})"
        if unnest
        else f"(SELECT beacon AS b, page FROM {BEACONS})"
    )
    return f"SELECT {cols} FROM {source}"


#: ``json_transform``'s type of a value and its column's kind: the kind of column
#: ``perfpulse.store._columns`` builds of it (4: an integer read into a double).
_COLUMN_KINDS: dict[tuple[str, FieldType], int] = {
    ("DOUBLE", "ts"): 0,
    ("DOUBLE", "float"): 0,
    ("BIGINT", "int"): 1,
    ("BOOLEAN", "bool"): 2,
    ("VARCHAR", "str"): 3,
    ("BIGINT", "float"): 4,
}


#: A plan of ``perfpulse.store._columns.columnize``, table by table: the path of
#: the list whose items are its rows (or None), its columns (kind, whether read
#: from the item, path), and whether each column's path leads to its list of values.
ColumnsPlan = tuple[
    tuple[tuple[bytes, ...] | None, tuple[tuple[int, int, tuple[bytes, ...]], ...], bool], ...
]


def _beacon_plan() -> ColumnsPlan:
    """What ``perfpulse.store._columns.columnize`` takes of a beacon document for
    each of ``BEACON_TABLES``: the same values :func:`beacon_select` takes, read
    as ``json_transform`` types them (:data:`_BEACON_STRUCTURE`)."""
    structure = json.loads(_BEACON_STRUCTURE)

    def at(node: Any, path: list[str]) -> Any:
        for key in path:
            node = node[key]
        return node

    plan = []
    for table in BEACON_TABLES:
        unnest, _ = _BEACON_FIELDS[table]
        lists = unnest.split(".") if unnest else []
        item = at(structure, lists)[0] if unnest else None
        columns = []
        for name, kind in LAYOUTS[table]:
            root, _, rest = _beacon_expr(table, name).partition(".")
            keys = rest.split(".") if rest else []
            if root == "x":
                path, source, from_item = keys, at(item, keys), 1
            else:
                path = ["beacon", *keys] if root == "b" else [root]
                source, from_item = at(structure, path), 0
            code = _COLUMN_KINDS[(source, kind)]  # a KeyError: a pair not provided for
            columns.append((code, from_item, tuple(k.encode() for k in path)))
        plan.append((tuple(k.encode() for k in lists) or None, tuple(columns), False))
    return tuple(plan)


BEACON_PLAN = _beacon_plan()
"""The plan of ``perfpulse.store._columns.columnize`` for beacon documents, by
``BEACON_TABLES``."""


def beacon_arrow_name(table: str) -> str:
    """The relation a flush registers the Arrow columns of ``table`` made of its
    beacon documents under, when other sources join them in :func:`input_view`."""
    return f"{input_name(table)}_beacons"


def columns_arrow_name(table: str) -> str:
    """The relation a flush registers the Arrow columns of ``table`` made of its
    column documents under, when other sources join them in :func:`input_view`."""
    return f"{input_name(table)}_columns"


def rows_name(table: str) -> str:
    """The relation a flush registers ``table``'s Python columns under when other
    sources join them in :func:`input_view`."""
    return f"{input_name(table)}_rows"


def input_view(table: str, selects: list[str]) -> str:
    """CREATE the temporary view :func:`input_name` of ``table``: its sources' rows."""
    return f"CREATE TEMP VIEW {input_name(table)} AS {' UNION ALL '.join(selects)}"


_JSON_TYPES: dict[FieldType, str] = {
    "ts": "DOUBLE",  # seconds, as in the rows (insert_raw makes the TIMESTAMP)
    "str": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}


def columns_name(table: str) -> str:
    """The temporary table a flush's column documents of ``table`` unnest into."""
    return f"_cols_{table}"


@functools.cache
def columns_plan(table: str) -> ColumnsPlan:
    """The plan of ``perfpulse.store._columns.columnize`` for the column documents
    of ``table``: the same values :func:`load_columns` takes."""
    columns = tuple(
        (_COLUMN_KINDS[(_JSON_TYPES[kind], kind)], 0, (name.encode(),))
        for name, kind in LAYOUTS[table]
    )
    return ((None, columns, True),)


def load_columns(table: str) -> str:
    """CREATE :func:`columns_name` of ``table``: the rows of its column documents
    (``{field: [values]}``, see ``model.rows.column_document``), given as one
    ``VARCHAR[]`` parameter, their lists unnested side by side."""
    structure = json.dumps({name: [_JSON_TYPES[kind]] for name, kind in LAYOUTS[table]})
    cols = ", ".join(f'unnest(s."{name}") AS "{name}"' for name, _ in LAYOUTS[table])
    return (
        f"CREATE TEMP TABLE {columns_name(table)} AS SELECT {cols} FROM "
        f"(SELECT json_transform(d, '{structure}') AS s FROM (SELECT unnest(?::VARCHAR[]) AS d))"
    )
