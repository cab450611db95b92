"""The embedded backend: one DuckDB file, owned by one collector process.

Writes come from the single writer thread. Browser beacons and the columns of
agent batches arrive as JSON documents, and none of their values becomes a
Python object in the writer, which would hold the GIL the event loop answering
ingest needs. Beacon documents are read into Arrow columns by the compiled
:mod:`perfpulse.store._columns` (without the GIL); column documents, and any
beacon document that reader leaves (or all of them, built without it), are
parsed by DuckDB (``json_transform``) and unnested into rows by SQL. The few
events that arrive as rows reach DuckDB as one Arrow record batch per table
(built by nanoarrow).

Reading beacons into Arrow columns keeps a flush within the steady memory
limit: parsed by DuckDB, the documents of 2,000 beacons made a temporary table
that did not fit in 32 MB (so the flush ran out of memory, was undone and ran
again under the burst limit); and the collector under single beacons peaked at
190 to 210 MB instead of 265 to 355 MB (8 to 10 s runs, 64 connections).

A flush is few calls into DuckDB, each of several statements (:meth:`_write`):
DuckDB's client takes the GIL back between one statement and the next and
between the tasks of each, and while the event loop is busy answering ingest
the writer waits for it every time (up to the 5 ms switch interval). In a test
that kept the GIL busy, a flush of 1,900 beacons took 740 to 770 ms as some
thirty calls and 385 to 640 ms as five. All of it goes in one transaction per flush together with
the batch ids and the spool checkpoint, so a crash either stores a flush whole
or not at all. Each flush also appends its per-minute and per-hour
sketch rows (``rollup_1m``, ``rollup_1h``); repeated keys from many flushes are
merged later by :meth:`DuckDBBackend.compact`, and reads ``SUM`` them anyway, so
answers are exact at every moment.

Reads use a cursor per call, so queries from several threads run beside the
writer (DuckDB's MVCC shows each the last committed flush).

Example::

    db = DuckDBBackend(Path("data/perfpulse.duckdb"))
    db.write(Flush(tables={"http": columns}, batches=[(ts, "ingest:b1")], checkpoint=7))
    groups, plan = db.sketch(SketchQuery(metric=CATALOG["http.server.duration"], ...))
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import duckdb
import nanoarrow as na

from perfpulse.model.catalog import RATINGS
from perfpulse.model.rows import BEACON_TABLES, LAYOUTS, Columns, FieldType, column_length
from perfpulse.store.base import Flush, Plan, RowQuery, SketchGroup, SketchQuery
from perfpulse.store.duckdb import explore, sql
from perfpulse.store.duckdb.partcache import PartCache
from perfpulse.store.retention import Retention

_columnize: Callable[..., tuple[list[tuple[int, list[Any]]], list[int]]] | None
try:  # optional, as the other extensions: without it DuckDB parses every document
    from perfpulse.store._columns import columnize as _columnize
except ImportError:  # pragma: no cover - a build without a C compiler
    _columnize = None

if TYPE_CHECKING:  # reads load numpy (and the pieces) with their first question
    from perfpulse.store.duckdb.pieces import Grouped, Pieces, SeriesPart

_ARROW: dict[FieldType, Any] = {
    "ts": na.float64(),
    "int": na.int64(),
    "float": na.float64(),
    "bool": na.bool_(),
    "str": na.string(),
}
_SCHEMAS = {
    table: na.struct({name: _ARROW[kind] for name, kind in layout})
    for table, layout in LAYOUTS.items()
}


def _relation(table: str, columns: Columns) -> Any:
    """A flush's columns of ``table`` as one Arrow record batch for DuckDB to scan.

    nanoarrow copies each list into an Arrow buffer (``None`` is null) faster than
    numpy made arrays of them, and its import is a third of numpy's memory; DuckDB
    then reads plain buffers, strings included, without Python objects. A value of
    the wrong type (a float in an ``int`` column) raises ``ValueError``."""
    children = [
        na.c_array(column, _ARROW[kind])
        for (_, kind), column in zip(LAYOUTS[table], columns, strict=True)
    ]
    return na.c_array_from_buffers(
        _SCHEMAS[table], column_length(columns), [None], children=children
    )


_BATCHES_SCHEMA = na.struct({"ts": na.float64(), "key": na.string()})


def _batches(batches: list[tuple[float, str]]) -> Any:
    """A flush's batch ids, ``(received, key)``, as one Arrow record batch: bound as
    two list parameters instead, DuckDB made a value of each with the GIL held, at
    about 3 µs a beacon against 1 µs."""
    received, keys = zip(*batches, strict=True)
    children = [na.c_array(received, na.float64()), na.c_array(keys, na.string())]
    return na.c_array_from_buffers(_BATCHES_SCHEMA, len(batches), [None], children=children)


def _read(
    documents: list[bytes], plan: tuple[Any, ...], tables: tuple[str, ...]
) -> tuple[dict[str, Any], int, list[bytes]]:
    """``documents`` as one Arrow record batch for each of ``tables`` (in the
    order of ``plan``) that has rows, read by :mod:`perfpulse.store._columns`
    (without the GIL); their rows in all; and the documents it left for DuckDB to
    parse (all of them without the extension)."""
    if _columnize is None or not documents:
        return {}, 0, documents
    try:
        read, leftover = _columnize(documents, plan)
    except MemoryError:  # or past 2 GiB of a column's strings: DuckDB parses them all
        return {}, 0, documents
    relations, total = {}, 0
    for table, (rows, buffers) in zip(tables, read, strict=True):
        total += rows
        if rows:
            children = [
                na.c_array_from_buffers(_ARROW[kind], rows, column)
                for (_, kind), column in zip(LAYOUTS[table], buffers, strict=True)
            ]
            relations[table] = na.c_array_from_buffers(
                _SCHEMAS[table], rows, [None], children=children
            )
    return relations, total, [documents[i] for i in leftover]


#: A flush with less than this to parse and insert runs on one DuckDB thread.
SMALL_FLUSH_BYTES = 1 << 20


def _small(flush: Flush) -> bool:
    """Whether ``flush`` is small: under :data:`SMALL_FLUSH_BYTES` of documents (plus
    64 bytes a row of Arrow columns), what the writer gathers when it has time to
    spare (a small site's 2 s window, 200 beacons/s, 10,000 events/s in batches).

    Such a flush costs 11 to 20 % less CPU on one thread than on two (2 cores: 99
    against 122 ms for 40 beacons, 207 against 238 ms for 1,000, 58 against 72 ms
    for 20 batches of 100 events): a second thread only adds the cost of sharing
    small statements out. A big flush means the writer has to keep up, and keeps
    every thread: on one thread DuckDB takes the GIL back between its tasks, and
    under single-beacon load (the event loop holding the GIL) the writer then
    stored 1,400 to 1,900 beacons/s against 2,800 to 3,500."""
    size = sum(map(len, flush.beacons))
    size += sum(len(d) for docs in flush.column_documents.values() for d in docs)
    size += 64 * sum(column_length(columns) for columns in flush.tables.values())
    return size < SMALL_FLUSH_BYTES


_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Rows per row group in the database file (DuckDB's default is 122,880). A
#: checkpoint rewrites the whole last row group of every table that grew, and
#: its memory peak follows that size: at the default it filled DuckDB's whole
#: memory limit for about a second; at 16,384 rows it takes about 25 MB.
ROW_GROUP_SIZE = 16_384

#: DuckDB's memory limit while the collector only ingests (``--memory-limit``).
DEFAULT_MEMORY_LIMIT = "32MB"
#: ... while reads run, and for a write that did not fit (``--burst-memory-limit``).
DEFAULT_BURST_MEMORY_LIMIT = "512MB"


class MemoryBudget:
    """DuckDB's ``memory_limit``, by what the collector is doing.

    Ingest alone needs little: the limit is ``steady`` then. Reads (a dashboard
    page asks several questions at once over millions of rows) need far more, and
    the aggregates that build sketch lists cannot spill to disk, so DuckDB fails
    rather than wait. While any read runs, and for ``linger_s`` after the last
    one ended, the limit is ``burst``; a write that did not fit in ``steady`` is
    tried again under ``burst`` too. :meth:`relax` sets ``steady`` back once
    nothing needs more, which makes DuckDB evict down to it.

    ``burst=None``: one fixed limit, ``steady``.

    It also sets DuckDB's ``threads``: :meth:`narrow` runs a write on one thread
    when no read is running, and a read that starts meanwhile (:meth:`room`) gets
    every thread back at once.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        steady: str,
        burst: str | None,
        *,
        linger_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._con = con  # a connection of its own, used under the lock
        self.steady = steady
        self.burst = burst
        self.linger_s = linger_s
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.raised = False
        self.narrowed = False
        row = con.execute("SELECT current_setting('threads')").fetchone()
        self.threads = int(row[0]) if row else 1  # DuckDB's own choice: the cores
        if burst is not None:  # a bad value fails here, at start, not at the first read
            self._set(burst)
            self._set(steady)

    def _set(self, limit: str) -> None:
        self._con.execute(f"SET memory_limit = '{limit}'")

    @contextlib.contextmanager
    def room(self) -> Iterator[None]:
        """``burst`` while the block runs (and ``linger_s`` after), and every thread."""
        with self._lock:
            self._active += 1
            self._widen()
            if self.burst is not None and not self.raised:
                self._set(self.burst)
                self.raised = True
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._since = self._clock()

    def fitted(self, work: Callable[[], _R]) -> _R:
        """``work()``; if it ran out of the ``steady`` limit (DuckDB undid it), again
        under ``burst``."""
        try:
            return work()
        except duckdb.OutOfMemoryException:
            with self.room():
                return work()

    @contextlib.contextmanager
    def narrow(self) -> Iterator[None]:
        """One DuckDB thread while the block runs, unless a read is running (or
        starts: it widens again)."""
        with self._lock:
            if not self._active and not self.narrowed:
                self._con.execute("SET threads = 1")
                self.narrowed = True
        try:
            yield
        finally:
            with self._lock:
                self._widen()

    def _widen(self) -> None:
        """Every thread again (under the lock)."""
        if self.narrowed:
            self._con.execute(f"SET threads = {self.threads}")
            self.narrowed = False

    def relax(self) -> None:
        """Back to ``steady`` when nothing has needed more for ``linger_s``."""
        if not self.raised or self._active:
            return
        with self._lock:
            if self.raised and not self._active and self._clock() - self._since >= self.linger_s:
                try:
                    self._set(self.steady)
                except duckdb.Error:  # too much still in use to evict: next time
                    return
                self.raised = False


def _first(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row of ``result``, read to its end.

    A result left half read (``fetchone``) keeps its transaction open until the
    cursor runs something else, and while it is open DuckDB keeps the undo data
    of every later commit in memory: a thread-local read cursor that last
    answered ``fetchone`` held tens of MB while ingest ran."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _reads(
    method: Callable[Concatenate[DuckDBBackend, _P], _R],
) -> Callable[Concatenate[DuckDBBackend, _P], _R]:
    """A read method, run with the memory budget's ``burst`` limit."""

    def read(self: DuckDBBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.memory.room():
            return method(self, *args, **kwargs)

    read.__name__, read.__qualname__, read.__doc__ = (
        method.__name__,
        method.__qualname__,
        method.__doc__,
    )
    return read


class DuckDBBackend:
    """Storage in one DuckDB file (``path=None``: in memory, for tests)."""

    def __init__(
        self,
        path: Path | None,
        *,
        retention: Retention | None = None,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        burst_memory_limit: str | None = DEFAULT_BURST_MEMORY_LIMIT,
        threads: int | None = None,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": memory_limit}
        if threads:
            config["threads"] = threads
        # The connection's own database is in memory (the file is attached), so
        # DuckDB would spill its temporary tables (a flush's documents) to ``.tmp``
        # in whatever directory the collector was started from.
        config["temp_directory"] = str(
            path.with_name(path.name + ".tmp")
            if path
            else Path(tempfile.gettempdir()) / f"perfpulse-duckdb-{os.getpid()}"
        )
        self._con = duckdb.connect(config=config)
        location = str(path).replace("'", "''") if path else ":memory:"
        self._con.execute(f"ATTACH '{location}' AS store (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        self._con.execute("USE store")
        self._con.execute("SET TimeZone = 'UTC'")
        self.memory = MemoryBudget(self._con.cursor(), memory_limit, burst_memory_limit)
        for statement in sql.schema():
            self._con.execute(statement)
        self._dirty_minutes: set[int] = set()
        self._dirty_hours: set[int] = set()
        self._cache = PartCache()
        self._lock = threading.Lock()  # guards the writer connection
        self._local = threading.local()
        self._closed = False

    # --- writes (writer thread) -----------------------------------------------

    def write(self, flush: Flush) -> int:
        """Store ``flush`` in one transaction; a small one on one DuckDB thread
        (:func:`_small`), when no read is running."""
        with self.memory.narrow() if _small(flush) else contextlib.nullcontext():
            written = self.memory.fitted(lambda: self._write(flush))
        self.memory.relax()
        return written

    def _write(self, flush: Flush) -> int:
        con = self._con
        # per table, its Arrow relations by the name each is registered under, and the
        # SELECTs of its other sources; a view joins them, a relation alone needs none
        relations: dict[str, dict[str, Any]] = {}
        for table, columns in flush.tables.items():
            if column_length(columns):
                relations[table] = {sql.rows_name(table): _relation(table, columns)}
        beacons, read_rows, parse = _read(flush.beacons, sql.BEACON_PLAN, BEACON_TABLES)
        for table, relation in beacons.items():
            relations.setdefault(table, {})[sql.beacon_arrow_name(table)] = relation
        documents: dict[str, list[bytes]] = {}  # the column documents left to DuckDB
        for table, docs in flush.column_documents.items():
            read, rows, left = _read(docs, sql.columns_plan(table), (table,))
            if read:
                relations.setdefault(table, {})[sql.columns_arrow_name(table)] = read[table]
            read_rows += rows
            if left:
                documents[table] = left
        joined: dict[str, list[str]] = {}
        if parse:
            joined = {t: [sql.beacon_select(t)] for t in BEACON_TABLES}
        for table in documents:
            joined.setdefault(table, []).append(f"SELECT * FROM {sql.columns_name(table)}")
        for table, named in relations.items():
            if len(named) == 1 and table not in joined:  # alone: the input itself
                relations[table] = {sql.input_name(table): next(iter(named.values()))}
            else:
                joined.setdefault(table, []).extend(f"SELECT * FROM {name}" for name in named)
        tables = list(dict.fromkeys([*relations, *joined]))
        # the rows each table gets: counted here for Arrow relations, by DuckDB for the rest
        counted = read_rows + sum(map(column_length, flush.tables.values()))
        to_count = [sql.beacon_select(t) for t in BEACON_TABLES] if parse else []
        to_count += [f"SELECT * FROM {sql.columns_name(table)}" for table in documents]
        registered: list[str] = []
        hours: set[int] = set()
        # few calls, each of several statements (see the module's docstring)
        with self._lock:
            try:
                for named in relations.values():
                    for name, relation in named.items():
                        con.register(name, relation)
                        registered.append(name)
                # the documents as text, parsed by DuckDB: no value of theirs becomes a
                # Python object here, with the GIL held
                if parse:
                    con.execute(f"BEGIN; {sql.LOAD_BEACONS}", [[d.decode() for d in parse]])
                else:
                    con.execute("BEGIN")
                for table, docs in documents.items():
                    con.execute(sql.load_columns(table), [[d.decode() for d in docs]])
                script = [sql.input_view(table, selects) for table, selects in joined.items()]
                script += [sql.insert_raw(table) for table in tables]
                rollup = sql.flush_rollup(tables)
                if rollup:
                    script += [
                        rollup,
                        sql.INSERT_NEW_SERIES,
                        sql.CREATE_FLUSH_IDS,
                        sql.INSERT_1M_FROM_FLUSH,
                        sql.INSERT_1H_FROM_FLUSH,
                    ]
                script.append(sql.flush_outcome(to_count, minutes=bool(rollup)))
                row = _first(con.execute("; ".join(script)))
                written = counted + (int(row[0]) if row else 0)
                minutes = {int(m) for m in (row[1] or [])} if row else set()
                self._dirty_minutes |= minutes
                hours = {m // 3600 * 3600 for m in minutes}
                self._dirty_hours |= hours
                # the scratch tables and views go, then the batch ids and the checkpoint
                tail = [f"DROP VIEW {sql.input_name(table)}" for table in joined]
                if rollup:
                    tail += ["DROP TABLE _flush_ids", "DROP TABLE _flush_rollup"]
                if parse:
                    tail.append(f"DROP TABLE {sql.BEACONS}")
                tail += [f"DROP TABLE {sql.columns_name(table)}" for table in documents]
                tail.append(sql.set_checkpoint(flush.checkpoint))
                if flush.batches:
                    con.register(sql.BATCHES_INPUT, _batches(flush.batches))
                    registered.append(sql.BATCHES_INPUT)
                    tail.append(sql.INSERT_BATCHES)
                con.execute("; ".join([*tail, "COMMIT"]))
                self._cache.forget(hours)  # after the commit: see PartCache.put
            except BaseException:
                with contextlib.suppress(duckdb.TransactionException):  # none was begun
                    con.execute("ROLLBACK")  # the temporary tables and views go with it
                raise
            finally:
                for name in registered:
                    with contextlib.suppress(duckdb.Error):  # the others still go
                        con.unregister(name)
        return written

    def checkpoint(self) -> int:
        row = _first(self._cursor().execute(sql.GET_CHECKPOINT))
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
        """Merge the partial rollup rows of every time slot touched since last time
        (under the ``burst`` memory limit when ``steady`` is too small for them)."""
        merged = self.memory.fitted(self._compact)
        self.memory.relax()
        return merged

    def _compact(self) -> int:
        """Merge the partial rollup rows of every time slot touched since last time."""
        with self._lock:
            # cleared once every slot merged: after a failure, the next call merges them
            minutes, hours = sorted(self._dirty_minutes), sorted(self._dirty_hours)
            merged = 0
            con = self._con
            for table, slots in (("rollup_1m", minutes), ("rollup_1h", hours)):
                if not slots:
                    continue
                us = [slot * 1_000_000 for slot in slots]
                params = {"lo": us[0], "hi": us[-1], "slots": us}
                make, delete, insert = sql.compact_slots(table)
                con.execute("BEGIN")
                try:
                    con.execute(make, params)
                    before = _first(con.execute(delete, params))
                    after = _first(con.execute(insert))
                    con.execute("DROP TABLE _merged")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                merged += int(before[0] if before else 0) - int(after[0] if after else 0)
            self._dirty_minutes.difference_update(minutes)
            self._dirty_hours.difference_update(hours)
            return merged

    def enforce_retention(self, now: float) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self._lock:
            for table, keep_s in self.retention.tables():
                cutoff = int((now - keep_s) * 1_000_000)
                row = _first(self._con.execute(sql.delete_before(table), [cutoff]))
                deleted[table] = int(row[0]) if row else 0
        if deleted.get("rollup_1h"):
            self._cache.clear()
        return deleted

    # --- reads (any thread) -----------------------------------------------------

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the store, set up as the writer's is (also for tools
        that run their own SQL: DuckDB attaches a file once per process)."""
        cur = self._con.cursor()
        cur.execute("USE store")
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self.connection()
            self._local.cur = cur
        return cur

    @_reads
    def sketch(self, query: SketchQuery) -> tuple[list[SketchGroup], Plan]:
        import numpy as np

        from perfpulse.store.duckdb.pieces import Layout, Merge, Pieces, group_ids, sketch_groups

        plan = sql.sketch_sql(query)
        groups: dict[tuple[Any, ...], int] = {}
        base: Grouped | None = None
        pieces: list[Pieces] = []
        cur = self.connection()  # its own: registrations stay private
        try:
            if plan.series_parts:
                found = self._grouped(cur, query, plan, groups)
                if isinstance(found, Pieces):
                    pieces.append(found)
                else:
                    base = found
            elif plan.series is not None and plan.rollups is not None:
                ids, gids = self._series(cur, plan, groups)
                if ids:
                    cur.register(
                        "_groups",
                        {"series": np.array(ids, dtype=np.int32), "gid": np.array(gids)},
                    )
                    pieces.append(Pieces.of(cur.execute(*plan.rollups).fetchnumpy()))
            if plan.raw is not None:
                result = cur.execute(*plan.raw).fetchnumpy()
                by = [result[f"g{i}"] for i in range(len(query.by))]
                if by:
                    gid = group_ids(by, groups)
                else:
                    groups.setdefault((), len(groups))
                    gid = np.full(len(result["tb"]), groups[()], dtype=np.int64)
                raw = Pieces.of_rows if plan.raw_rows else Pieces.of
                pieces.append(raw(result, gid))
        finally:
            cur.close()
        keys = [k for k, _ in sorted(groups.items(), key=lambda kv: kv[1])]
        if base is not None:
            layout = base.layout
            for p in pieces:
                layout = layout.union(Layout.of(p.k[p.kind == 0]))
            if Merge.fits(len(keys), layout):
                merge = Merge(len(keys), layout)
                merge.add_grouped(base)
                for p in pieces:
                    merge.add_pieces(p)
                return merge.merged().groups(keys, query.qs, query.below), plan.plan
            pieces.append(base.pieces())
        if not pieces:
            return [], plan.plan
        return sketch_groups(Pieces.concat(pieces), keys, query), plan.plan

    def _series(
        self,
        cur: duckdb.DuckDBPyConnection,
        plan: sql.SketchSQL,
        groups: dict[tuple[Any, ...], int],
    ) -> tuple[list[int], list[int]]:
        """The series that answer, and their group ids (numbering new groups)."""
        ids: list[int] = []
        gids: list[int] = []
        if plan.series is not None:
            for row in cur.execute(*plan.series).fetchall():
                ids.append(row[0])
                gids.append(groups.setdefault(tuple(row[1:]), len(groups)))
        return ids, gids

    def _grouped(
        self,
        cur: duckdb.DuckDBPyConnection,
        query: SketchQuery,
        plan: sql.SketchSQL,
        groups: dict[tuple[Any, ...], int],
    ) -> Grouped | Pieces | None:
        """The rollup parts of a question without steps, merged per group, cached:
        the next question with the same parts and grouping reads none of them.
        Pieces instead when the bucket range is too wide to merge densely."""
        import numpy as np

        from perfpulse.store.duckdb.pieces import Layout, Merge, Pieces

        key = ("grouped", query.metric.name, query.by, query.filters, plan.series_parts)
        cached: Grouped | None = self._cache.get(key)
        if cached is not None:
            for group in cached.keys:
                groups.setdefault(group, len(groups))
            return cached
        version = self._cache.version
        ids, gids = self._series(cur, plan, groups)
        if not ids:
            return None
        lookup = np.full(max(ids) + 1, -1, dtype=np.int64)
        lookup[ids] = gids
        parts = [
            (self._series_part(cur, query.metric.name, table, lo, hi), sign)
            for table, lo, hi, sign in plan.series_parts
        ]
        layout = Layout()
        for part, _ in parts:
            layout = layout.union(part.layout)
        if not Merge.fits(len(groups), layout):
            return Pieces.concat([part.pieces(lookup, sign) for part, sign in parts])
        merge = Merge(len(groups), layout)
        for part, sign in parts:
            merge.add_part(part, lookup, sign)
        grouped = merge.merged()
        grouped.keys = [k for k, _ in sorted(groups.items(), key=lambda kv: kv[1])]
        spans = tuple((lo, hi) for _, lo, hi, _ in plan.series_parts)
        self._cache.put(key, grouped, spans, version)
        return grouped

    def _series_part(
        self, cur: duckdb.DuckDBPyConnection, metric: str, table: str, lo: float, hi: float
    ) -> SeriesPart:
        """Every series of ``metric`` merged over ``[lo, hi)`` of a rollup table, cached."""
        from perfpulse.store.duckdb.pieces import SeriesPart

        key = ("part", metric, table, lo, hi)
        cached: SeriesPart | None = self._cache.get(key)
        if cached is not None:
            return cached
        version = self._cache.version
        params = [sql._us(lo), sql._us(hi), metric]
        part = SeriesPart.of(cur.execute(sql.series_pieces(table), params).fetchnumpy())
        self._cache.put(key, part, ((lo, hi),), version)
        return part

    @_reads
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

    @_reads
    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return self._dicts(sql.trace_spans(), [trace_id])

    @_reads
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

    @_reads
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

    @_reads
    def otel_metric_names(self, start: float, end: float) -> list[dict[str, Any]]:
        return self._dicts(sql.OTEL_NAMES, [sql._us(start), sql._us(end)])

    @_reads
    def otel_points(
        self, name: str, start: float, end: float, filters: dict[str, str]
    ) -> list[dict[str, Any]]:
        statement, params = sql.otel_points(filters)
        return self._dicts(statement, [name, sql._us(start), sql._us(end), *params])

    def row_counts(self) -> dict[str, int]:
        """Rows per table (for ``/metrics``). Even ``count(*)`` asks DuckDB for a
        little memory, and under load a flush can hold all of the steady limit:
        the scrape then failed with a 500 (once in 20 s of scrapes every 10 ms
        under batch load, and once in a benchmark run). Such a count is asked again
        under the burst limit, as a write that did not fit is."""
        return self.memory.fitted(self._row_counts)

    def _row_counts(self) -> dict[str, int]:
        cur = self._cursor()
        counts: dict[str, int] = {}
        for table in (*LAYOUTS, "rollup_1m", "rollup_1h"):
            row = _first(cur.execute(f"SELECT count(*) FROM {table}"))
            counts[table] = int(row[0]) if row else 0
        return counts

    @_reads
    def rows(self, query: RowQuery) -> list[dict[str, Any]]:
        return self._dicts(*explore.row_query_sql(query))

    @_reads
    def dimension_values(self, dim: str, limit: int) -> list[str]:
        statement, params = explore.dimension_values_sql(dim)
        return [r[0] for r in self._cursor().execute(statement, [*params, limit]).fetchall()]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()  # closing the last connection checkpoints the file
