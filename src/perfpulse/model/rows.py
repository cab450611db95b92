"""Row layouts of the raw event tables, shared by ingest (which builds the
data) and storage (which creates the tables and inserts the data as columns).

Storage takes *columns*: per table, one list per field of its layout, in layout
order and of equal length (:data:`Columns`), or the same as a JSON document
(:func:`column_document`, how ingest spools a batch's columns; a beacon is a
document of its own, :class:`StoredBeacon`). Ingest builds the columns of a big
batch directly; a few events arrive as rows (tuples in layout order) and become
columns in the writer (:func:`to_columns`), which joins the columns of many spool
records with ``list.extend``. Types are logical: each storage backend maps them
to its own column types.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from perfpulse.model.events import Beacon

FieldType = Literal["ts", "str", "int", "float", "bool"]
Layout = tuple[tuple[str, FieldType], ...]

_ORIGIN: Layout = (
    ("ts", "ts"),
    ("service", "str"),
    ("environment", "str"),
    ("release", "str"),
    ("host", "str"),
)
_RUM_ORIGIN: Layout = (
    ("ts", "ts"),
    ("view_id", "str"),
    ("service", "str"),
    ("environment", "str"),
    ("release", "str"),
    ("page", "str"),
    ("device", "str"),
)

LAYOUTS: dict[str, Layout] = {
    "http": _ORIGIN
    + (
        ("route", "str"),
        ("method", "str"),
        ("status", "int"),
        ("duration_ms", "float"),
        ("request_bytes", "int"),
        ("response_bytes", "int"),
        ("db_time_ms", "float"),
        ("db_count", "int"),
        ("cache_hits", "int"),
        ("cache_misses", "int"),
        ("exception", "str"),
        ("request_id", "str"),
        ("trace_id", "str"),
    ),
    "db": _ORIGIN
    + (
        ("fingerprint", "str"),
        ("system", "str"),
        ("duration_ms", "float"),
        ("rows", "int"),
        ("pool_wait_ms", "float"),
        ("statement", "str"),
        ("route", "str"),
        ("error", "str"),
        ("request_id", "str"),
        ("trace_id", "str"),
    ),
    "cache": _ORIGIN
    + (
        ("cache", "str"),
        ("op", "str"),
        ("hit", "bool"),
        ("duration_ms", "float"),
        ("count", "int"),
        ("route", "str"),
        ("request_id", "str"),
    ),
    "resource": _ORIGIN
    + (
        ("pid", "int"),
        ("process_cpu_pct", "float"),
        ("process_rss_bytes", "float"),
        ("process_threads", "float"),
        ("process_fds", "float"),
        ("process_read_bytes", "float"),
        ("process_write_bytes", "float"),
        ("host_cpu_pct", "float"),
        ("host_mem_used_bytes", "float"),
        ("host_mem_total_bytes", "float"),
        ("host_disk_read_bytes", "float"),
        ("host_disk_write_bytes", "float"),
        ("host_net_sent_bytes", "float"),
        ("host_net_recv_bytes", "float"),
        ("cgroup_cpu_limit", "float"),
        ("cgroup_mem_limit_bytes", "float"),
    ),
    "error": _ORIGIN
    + (
        ("type", "str"),
        ("message", "str"),
        ("route", "str"),
        ("stack", "str"),
        ("handled", "bool"),
        ("request_id", "str"),
        ("trace_id", "str"),
    ),
    "pool": _ORIGIN
    + (
        ("pool", "str"),
        ("size", "int"),
        ("checked_out", "int"),
        ("overflow", "int"),
        ("usage_pct", "float"),
        ("wait_ms", "float"),
        ("timeouts", "int"),
    ),
    "n_plus_one": _ORIGIN
    + (
        ("route", "str"),
        ("fingerprint", "str"),
        ("count", "int"),
        ("total_ms", "float"),
        ("request_id", "str"),
    ),
    "rum_view": _RUM_ORIGIN
    + (
        ("browser", "str"),
        ("connection", "str"),
        ("url", "str"),
        ("soft", "bool"),
        ("sample_rate", "float"),
        ("nav_type", "str"),
        ("dns_ms", "float"),
        ("connect_ms", "float"),
        ("tls_ms", "float"),
        ("request_ms", "float"),
        ("response_ms", "float"),
        ("dom_interactive_ms", "float"),
        ("dom_complete_ms", "float"),
        ("load_ms", "float"),
        ("transfer_bytes", "int"),
        ("lt_count", "int"),
        ("lt_total_ms", "float"),
        ("tbt_ms", "float"),
        ("lt_max_ms", "float"),
        ("loaf_count", "int"),
        ("loaf_total_ms", "float"),
        ("worst_script", "str"),
        ("worst_script_ms", "float"),
        ("mem_used_bytes", "float"),
        ("mem_total_bytes", "float"),
        ("mem_limit_bytes", "float"),
        ("mem_source", "str"),
    ),
    "rum_vital": _RUM_ORIGIN
    + (
        ("browser", "str"),
        ("connection", "str"),
        ("name", "str"),
        ("value", "float"),
        ("rating", "int"),
        ("navigation_type", "str"),
        ("attribution", "str"),
    ),
    "rum_resource": _RUM_ORIGIN
    + (
        ("type", "str"),
        ("count", "int"),
        ("transfer_bytes", "int"),
        ("encoded_bytes", "int"),
        ("decoded_bytes", "int"),
        ("duration_ms", "float"),
        ("cache_hits", "int"),
        ("render_blocking", "int"),
        ("third_party", "int"),
    ),
    "rum_largest": _RUM_ORIGIN
    + (
        ("url", "str"),
        ("type", "str"),
        ("transfer_bytes", "int"),
        ("encoded_bytes", "int"),
        ("decoded_bytes", "int"),
        ("duration_ms", "float"),
        ("cached", "bool"),
        ("render_blocking", "bool"),
        ("third_party", "bool"),
    ),
    "log": _ORIGIN
    + (
        ("id", "str"),
        ("level", "str"),
        ("severity", "int"),
        ("logger", "str"),
        ("message", "str"),
        ("exception", "str"),
        ("trace_id", "str"),
        ("span_id", "str"),
        ("request_id", "str"),
        ("attributes", "str"),
    ),
    "span": _ORIGIN
    + (
        ("trace_id", "str"),
        ("span_id", "str"),
        ("parent_id", "str"),
        ("name", "str"),
        ("kind", "str"),
        ("duration_ms", "float"),
        ("status", "str"),
        ("status_message", "str"),
        ("attributes", "str"),
        ("events", "str"),
    ),
    "otel_metric": _ORIGIN
    + (
        ("name", "str"),
        ("type", "str"),
        ("unit", "str"),
        ("temporality", "str"),
        ("start_ts", "float"),
        ("attributes", "str"),
        ("value", "float"),
        ("count", "int"),
        ("sum", "float"),
        ("min", "float"),
        ("max", "float"),
        ("bounds", "str"),
        ("counts", "str"),
        ("scale", "int"),
        ("zero_count", "int"),
        ("offset", "int"),
    ),
}

Row = tuple[object, ...]
Columns = list[list[Any]]  # one list per field of a layout, all of one length


def field_names(table: str) -> tuple[str, ...]:
    return tuple(name for name, _ in LAYOUTS[table])


def to_columns(table: str, rows: Iterable[Row]) -> Columns:
    """Rows of ``table`` (tuples in layout order) as columns."""
    columns: Columns = [list(c) for c in zip(*rows, strict=True)]
    return columns or [[] for _ in LAYOUTS[table]]


def column_length(columns: Columns) -> int:
    return len(columns[0]) if columns else 0


# --- beacons, stored as documents ----------------------------------------------------

BEACON_TABLES = ("rum_view", "rum_vital", "rum_resource", "rum_largest")
"""The raw tables a beacon fills."""


class StoredVital(msgspec.Struct, gc=False):
    """A vital as stored: rated, its attribution redacted and kept as JSON text."""

    name: str
    value: float
    rating: int
    navigation_type: str | None
    attribution: str | None


class StoredBeacon(msgspec.Struct, gc=False):
    """A normalized beacon as the spool and storage take it: one JSON document
    (:data:`BEACON_DOCUMENT`) instead of its ten or so rows, which storage unnests
    itself (the rows of :data:`BEACON_TABLES`).

    ``beacon`` is the decoded beacon with its URLs redacted, its out-of-range
    navigation phases set to null and its out-of-range resources removed; its
    ``vitals`` are empty, the kept ones being ``vitals`` here. ``page`` is the
    page template (folded at the cap)."""

    page: str
    vitals: list[StoredVital]
    beacon: Beacon


BEACON_DOCUMENT = msgspec.json.Encoder().encode
"""A :class:`StoredBeacon` as one line of JSON (JSON text holds no raw newline)."""


def column_document(table: str, columns: Columns) -> bytes:
    """``table``'s columns as one JSON object, ``{field: [values]}``: what the spool
    keeps of a batch's many events, and storage unnests without making a Python
    object of each value. Values must be JSON's: finite floats (sanity has dropped
    the others; msgspec would write NaN as null)."""
    return BEACON_DOCUMENT(dict(zip(field_names(table), columns, strict=True)))


class SpoolRecord(msgspec.Struct, array_like=True, gc=False):
    """What ingest appends to the spool for one accepted batch (MessagePack): the
    batch's dedupe key, when it arrived, and its data per raw table, as rows
    (tuples in layout order: a few events) or as columns (many events: the http
    events of a batch), or both; a beacon comes as a :class:`StoredBeacon`
    document in ``beacons``, and a batch's columns as one :func:`column_document`
    per table in ``column_documents``. Records of older collectors hold rows and
    ``columns`` only, and read the same."""

    key: str
    received: float
    rows: dict[str, list[Row]] = {}
    columns: dict[str, Columns] = {}
    beacons: list[bytes] = []
    column_documents: dict[str, bytes] = {}


RECORD_ENCODER = msgspec.msgpack.Encoder()
RECORD_DECODER = msgspec.msgpack.Decoder(SpoolRecord)
