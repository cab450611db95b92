"""The storage backend interface: what ingest, the writer and query may ask of it.

All SQL lives behind this Protocol (``store/duckdb`` today, ClickHouse later), so
nothing outside the storage package knows a table name or a dialect. The
embedded backend with ``path=None`` keeps everything in memory, which is what
unit tests of other parts use.

Reads are phrased as a :class:`SketchQuery`: a metric, a window, group-by
dimensions, filters and quantiles, optionally cut into time steps. The backend
answers with merged sketches per group (:class:`SketchGroup`); quantiles are
nearest-rank values read from the merged log-bucket counts
(:mod:`perfpulse.sketch`), so any window merges exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from perfpulse.model.catalog import Metric
from perfpulse.model.rows import Columns


@dataclass(slots=True)
class Flush:
    """One writer transaction: columns per raw table (:data:`~perfpulse.model.rows.Columns`),
    the batch ids they came from, and the spool sequence number they cover (the
    new checkpoint)."""

    tables: dict[str, Columns] = field(default_factory=dict)
    batches: list[tuple[float, str]] = field(default_factory=list)
    checkpoint: int = 0
    beacons: list[bytes] = field(default_factory=list)
    """Beacons as :class:`~perfpulse.model.rows.StoredBeacon` JSON documents: the
    backend unnests each into its rows of :data:`~perfpulse.model.rows.BEACON_TABLES`."""
    column_documents: dict[str, list[bytes]] = field(default_factory=dict)
    """Per raw table, columns as JSON documents (:func:`~perfpulse.model.rows.column_document`),
    besides ``tables``: the backend unnests them without Python."""


@dataclass(frozen=True, slots=True)
class SketchQuery:
    """A percentile question. ``step`` (seconds) asks for one group per time step."""

    metric: Metric
    start: float
    end: float
    by: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()
    qs: tuple[float, ...] = (0.5, 0.95, 0.99)
    step: int | None = None
    below: tuple[float, ...] = ()  # also count the values ≤ each of these (e.g. Apdex)


@dataclass(slots=True)
class SketchGroup:
    """One group's merged sketch: ``key`` holds the ``by`` values in order."""

    key: tuple[str | None, ...]
    count: int
    sum: float
    outcomes: dict[int, int]
    quantiles: dict[float, float | None]
    time: float | None = None
    below: dict[float, int] = field(default_factory=dict)  # values ≤ t, to bucket precision


@dataclass(frozen=True, slots=True)
class RowQuery:
    """A breakdown of raw rows: filter, group, aggregate, order, cut.

    ``table`` is a raw table (:data:`perfpulse.model.rows.LAYOUTS`). ``by`` names
    columns, or ``attribution.<key>`` / ``attributes.<key>`` for a key inside a
    JSON column. ``measures`` are ``count`` or ``fn:column`` with ``fn`` one of
    ``sum``, ``avg``, ``max``, ``min``, ``p50``, ``p75``, ``p95``, ``p99``
    (exact, over the raw rows), or ``true:column`` (rows where a boolean or
    integer column is non-zero). ``where`` holds numeric conditions
    ``(column, op, value)``. With no ``measures`` the answer lists rows (the
    ``by`` columns plus ``ts``) ordered by ``order`` descending.
    """

    table: str
    start: float
    end: float
    filters: tuple[tuple[str, str], ...] = ()
    by: tuple[str, ...] = ()
    measures: tuple[str, ...] = ("count",)
    where: tuple[tuple[str, str, float], ...] = ()
    order: str = "count"
    limit: int = 10


class BadRowQuery(ValueError):
    """A breakdown naming a table, column or function that does not exist."""


def measure_name(measure: str) -> str:
    """The answer's key for a measure: ``sum:duration_ms`` → ``sum_duration_ms``."""
    return measure.replace(":", "_")


@dataclass(frozen=True, slots=True)
class Plan:
    """Which tables answered a query (for tests and the ``explain`` flag)."""

    raw: bool
    minute: bool
    hour: bool


class Backend(Protocol):
    """Storage. Writes come from one writer thread; reads from any thread."""

    def write(self, flush: Flush) -> int:
        """Store ``flush`` in one transaction; returns the raw rows written."""
        ...

    def checkpoint(self) -> int: ...

    def recent_batches(self, since: float) -> list[str]: ...

    def known_routes(self) -> dict[str, set[str]]: ...

    def compact(self) -> int: ...

    def enforce_retention(self, now: float) -> dict[str, int]: ...

    def sketch(self, query: SketchQuery) -> tuple[list[SketchGroup], Plan]: ...

    def views(
        self, start: float, end: float, limit: int, filters: dict[str, str]
    ) -> list[dict[str, Any]]: ...

    def trace(self, trace_id: str) -> list[dict[str, Any]]: ...

    def traces(
        self,
        start: float,
        end: float,
        limit: int,
        filters: dict[str, str],
        min_duration_ms: float | None = None,
    ) -> list[dict[str, Any]]: ...

    def logs(
        self,
        start: float,
        end: float,
        limit: int,
        filters: dict[str, str],
        levels: list[str] | None = None,
        text: str | None = None,
        cursor: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]: ...

    def otel_metric_names(self, start: float, end: float) -> list[dict[str, Any]]: ...

    def otel_points(
        self, name: str, start: float, end: float, filters: dict[str, str]
    ) -> list[dict[str, Any]]: ...

    def row_counts(self) -> dict[str, int]: ...

    def rows(self, query: RowQuery) -> list[dict[str, Any]]: ...

    def dimension_values(self, dim: str, limit: int) -> list[str]: ...

    def close(self) -> None: ...
