"""The embedded backend: one DuckDB file, owned by one collector process.

Writes arrive as columnar Arrow batches from the single writer thread, in one
transaction per flush together with the batch ids and the spool checkpoint, so
a crash either stores a flush whole or not at all. Each flush also appends its
per-minute and per-hour sketch rows (``rollup_1m``, ``rollup_1h``); repeated
keys from many flushes are merged later by :meth:`DuckDBBackend.compact`, and
reads ``SUM`` them anyway, so answers are exact at every moment.

Reads use a cursor per call, so queries from several threads run beside the
writer (DuckDB's MVCC shows each the last committed flush).

Example::

    db = DuckDBBackend(Path("data/perfpulse.duckdb"))
    db.write(Flush(tables={"http": columns}, batches=[(ts, "ingest:b1")], checkpoint=7))
    groups, plan = db.sketch(SketchQuery(metric=CATALOG["http.server.duration"], ...))
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from perfpulse.model.catalog import RATINGS
from perfpulse.model.rows import LAYOUTS, Columns, column_length
from perfpulse.store.base import Flush, Plan, SketchGroup, SketchQuery
from perfpulse.store.duckdb import sql
from perfpulse.store.retention import Retention

_ARROW = {
    "ts": pa.float64(),
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}


def _arrow_table(table: str, columns: Columns) -> pa.Table:
    return pa.table(
        {
            name: pa.array(col, type=_ARROW[kind])
            for (name, kind), col in zip(LAYOUTS[table], columns, strict=True)
        }
    )


class DuckDBBackend:
    """Storage in one DuckDB file (``path=None``: in memory, for tests)."""

    def __init__(
        self,
        path: Path | None,
        *,
        retention: Retention | None = None,
        memory_limit: str = "512MB",
        threads: int | None = None,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": memory_limit}
        if threads:
            config["threads"] = threads
        self._con = duckdb.connect(str(path) if path else ":memory:", config=config)
        self._con.execute("SET TimeZone = 'UTC'")
        for statement in sql.schema():
            self._con.execute(statement)
        self._dirty_minutes: set[int] = set()
        self._dirty_hours: set[int] = set()
        self._lock = threading.Lock()  # guards the writer connection
        self._local = threading.local()
        self._closed = False

    # --- writes (writer thread) -----------------------------------------------

    def write(self, flush: Flush) -> None:
        con = self._con
        tables = [t for t, columns in flush.tables.items() if column_length(columns)]
        with self._lock:
            con.execute("BEGIN")
            try:
                for table in tables:
                    con.register(sql.input_name(table), _arrow_table(table, flush.tables[table]))
                    con.execute(sql.insert_raw(table))
                rollup = sql.flush_rollup(tables)
                if rollup:
                    con.execute(rollup)
                    con.execute(sql.INSERT_NEW_SERIES)
                    con.execute(sql.INSERT_1M_FROM_FLUSH)
                    con.execute(sql.INSERT_1H_FROM_FLUSH)
                    for (minute,) in con.execute(sql.FLUSH_MINUTES).fetchall():
                        self._dirty_minutes.add(int(minute))
                        self._dirty_hours.add(int(minute) // 3600 * 3600)
                    con.execute("DROP TABLE _flush_rollup")
                if flush.batches:
                    con.execute(
                        sql.INSERT_BATCHES,
                        [
                            [int(ts * 1_000_000) for ts, _ in flush.batches],
                            [key for _, key in flush.batches],
                        ],
                    )
                con.execute(sql.SET_CHECKPOINT, [flush.checkpoint])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                for table in tables:
                    con.unregister(sql.input_name(table))

    def checkpoint(self) -> int:
        row = self._cursor().execute(sql.GET_CHECKPOINT).fetchone()
        return int(row[0]) if row else 0

    def recent_batches(self, since: float) -> list[str]:
        cur = self._cursor()
        rows = cur.execute(sql.RECENT_BATCHES, [int(since * 1_000_000)]).fetchall()
        return [r[0] for r in rows]

    def known_routes(self) -> dict[str, set[str]]:
        known: dict[str, set[str]] = {}
        for service, route in self._cursor().execute(sql.KNOWN_ROUTES).fetchall():
            known.setdefault(service, set()).add(route)
        return known

    def compact(self) -> int:
        """Merge the partial rollup rows of every time slot touched since last time."""
        with self._lock:
            minutes, hours = sorted(self._dirty_minutes), sorted(self._dirty_hours)
            self._dirty_minutes.clear()
            self._dirty_hours.clear()
            merged = 0
            con = self._con
            for table, slots in (("rollup_1m", minutes), ("rollup_1h", hours)):
                if not slots:
                    continue
                con.execute("BEGIN")
                try:
                    con.execute("CREATE TEMP TABLE _slots (s BIGINT)")
                    con.executemany("INSERT INTO _slots VALUES (?)", [(s,) for s in slots])
                    before = con.execute(sql.count_slots(table)).fetchone()
                    for statement in sql.compact_slots(table):
                        con.execute(statement)
                    after = con.execute(sql.count_slots(table)).fetchone()
                    con.execute("DROP TABLE _slots")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                merged += int(before[0] if before else 0) - int(after[0] if after else 0)
            return merged

    def enforce_retention(self, now: float) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self._lock:
            for table, keep_s in self.retention.tables():
                cutoff = int((now - keep_s) * 1_000_000)
                row = self._con.execute(sql.delete_before(table), [cutoff]).fetchone()
                deleted[table] = int(row[0]) if row else 0
        return deleted

    # --- reads (any thread) -----------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            self._local.cur = cur
        return cur

    def sketch(self, query: SketchQuery) -> tuple[list[SketchGroup], Plan]:
        plan = sql.sketch_sql(query)
        groups: dict[tuple[Any, ...], int] = {}
        parts: list[sql.Merged] = []
        cur = self._con.cursor()  # its own connection: registrations stay private
        try:
            if plan.series is not None and plan.rollups is not None:
                ids: list[int] = []
                gids: list[int] = []
                for row in cur.execute(*plan.series).fetchall():
                    ids.append(row[0])
                    gids.append(groups.setdefault(tuple(row[1:]), len(groups)))
                if ids:
                    cur.register(
                        "_groups",
                        pa.table(
                            {"series": pa.array(ids, pa.int32()), "gid": pa.array(gids, pa.int32())}
                        ),
                    )
                    table = cur.sql(plan.rollups[0], params=plan.rollups[1]).to_arrow_table()
                    parts.append(sql.Merged.from_lists(table))
            if plan.raw is not None:
                table = cur.sql(plan.raw[0], params=plan.raw[1]).to_arrow_table()
                gid = sql.raw_group_ids(table, len(query.by), groups)
                parts.append(sql.Merged.from_rows(table, gid))
        finally:
            cur.close()
        if not parts:
            return [], plan.plan
        keys = [k for k, _ in sorted(groups.items(), key=lambda kv: kv[1])]
        return sql.sketch_groups(sql.Merged.concat(parts), keys, query), plan.plan

    def views(
        self, start: float, end: float, limit: int, filters: dict[str, str]
    ) -> list[dict[str, Any]]:
        cur = self._cursor()
        statement, params = sql.views_query(start, end, limit, filters)
        result = cur.execute(statement, params)
        names = [d[0] for d in result.description]
        views = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        if not views:
            return []
        ids = [v["view_id"] for v in views]
        by_id = {v["view_id"]: sql.view_shape(v) for v in views}
        for table in ("rum_vital", "rum_resource", "rum_largest"):
            res = cur.execute(sql.view_children(table, len(ids)), ids)
            cols = [d[0] for d in res.description]
            for row in res.fetchall():
                item = dict(zip(cols, row, strict=True))
                parent = by_id[item.pop("view_id")]
                if table == "rum_vital":
                    item["rating"] = RATINGS[item["rating"]]
                    attribution = item.get("attribution")
                    item["attribution"] = json.loads(attribution) if attribution else None
                    parent["vitals"].append(item)
                elif table == "rum_resource":
                    parent["resources"].append(item)
                else:
                    parent["largest_resources"].append(item)
        return [by_id[i] for i in ids]

    def _dicts(self, statement: str, params: list[Any]) -> list[dict[str, Any]]:
        result = self._cursor().execute(statement, params)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return self._dicts(sql.trace_spans(), [trace_id])

    def traces(
        self,
        start: float,
        end: float,
        limit: int,
        filters: dict[str, str],
        min_duration_ms: float | None = None,
    ) -> list[dict[str, Any]]:
        statement, params = sql.trace_roots(filters, min_duration_ms)
        return self._dicts(statement, [sql._us(start), sql._us(end), *params, limit])

    def logs(
        self,
        start: float,
        end: float,
        limit: int,
        filters: dict[str, str],
        levels: list[str] | None = None,
        text: str | None = None,
        cursor: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        statement, params = sql.log_search(filters, levels, text, cursor)
        return self._dicts(statement, [sql._us(start), sql._us(end), *params, limit])

    def otel_metric_names(self, start: float, end: float) -> list[dict[str, Any]]:
        return self._dicts(sql.OTEL_NAMES, [sql._us(start), sql._us(end)])

    def otel_points(
        self, name: str, start: float, end: float, filters: dict[str, str]
    ) -> list[dict[str, Any]]:
        statement, params = sql.otel_points(filters)
        return self._dicts(statement, [name, sql._us(start), sql._us(end), *params])

    def row_counts(self) -> dict[str, int]:
        cur = self._cursor()
        counts: dict[str, int] = {}
        for table in (*LAYOUTS, "rollup_1m", "rollup_1h"):
            row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()  # closing the last connection checkpoints the file
