"""The metric catalog: every queryable metric, its unit, source and dimensions.

One table, read by ingest (ratings), storage (rollups) and query (validation), and
rendered into ``docs/metrics.md`` (a test keeps the two equal). A metric names a
*source* — an event kind and one numeric field of it — never SQL; the storage
package maps kinds and fields to its own tables and columns.

Every metric has the common dimensions ``service``, ``environment`` and
``release``. ``dims`` are the further dimensions kept in the per-minute and
per-hour rollups (at most four); ``raw_dims`` can be filtered or grouped on too,
but only over raw rows (short windows, within raw retention).

``outcome`` says what the small integer stored beside every value means:

- ``status``: the HTTP status class (2 for 2xx … 5 for 5xx); errors are class 5.
- ``rating``: Core Web Vitals rating, 0 good, 1 needs improvement, 2 poor.
- ``hit``: 0 hit, 1 miss, 2 not a read (cache writes, evictions).
- ``error``: 0 ok, 1 failed.
- ``none``: always 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["status", "rating", "hit", "error", "none"]
COMMON_DIMS = ("service", "environment", "release")
RATINGS = ("good", "needs_improvement", "poor")  # the names of rating 0, 1 and 2
MAX_ROLLUP_DIMS = 4


@dataclass(frozen=True, slots=True)
class Metric:
    """One queryable metric."""

    name: str
    unit: str
    kind: str
    field: str
    description: str
    dims: tuple[str, ...] = ()
    raw_dims: tuple[str, ...] = ()
    outcome: Outcome = "none"
    where: tuple[tuple[str, str], ...] = ()
    thresholds: tuple[float, float] | None = None
    tags: frozenset[str] = frozenset()

    @property
    def all_dims(self) -> tuple[str, ...]:
        return COMMON_DIMS + self.dims + self.raw_dims

    def rollup_column(self, dim: str) -> str | None:
        """The rollup column holding ``dim`` (``d1``…``d4`` or a common one)."""
        if dim in COMMON_DIMS:
            return dim
        if dim in self.dims:
            return f"d{self.dims.index(dim) + 1}"
        return None

    def rate(self, value: float) -> int:
        """Rating of a value by this metric's (good, poor) thresholds: 0, 1 or 2."""
        if self.thresholds is None:
            return 0
        good, poor = self.thresholds
        if value <= good:
            return 0
        return 1 if value <= poor else 2


_HTTP_DIMS = ("route", "method")
_HTTP_RAW = ("status", "host")
_RUM_DIMS = ("page", "device", "browser", "connection")
_DB_DIMS = ("fingerprint", "route", "system")


def _vital(name: str, unit: str, good: float, poor: float, text: str) -> Metric:
    return Metric(
        name=f"rum.{name.lower()}",
        unit=unit,
        kind="rum_vital",
        field="value",
        description=text,
        dims=_RUM_DIMS,
        outcome="rating",
        where=(("name", name),),
        thresholds=(good, poor),
        tags=frozenset({"vital"}),
    )


def _resource(name: str, unit: str, fld: str, text: str) -> Metric:
    return Metric(name, unit, "resource", fld, text, dims=("host",), raw_dims=("pid",))


def _nav(phase: str, text: str) -> Metric:
    return Metric(f"rum.nav.{phase}", "ms", "rum_view", f"{phase}_ms", text, dims=_RUM_DIMS)


METRICS: tuple[Metric, ...] = (
    Metric(
        "http.server.duration",
        "ms",
        "http",
        "duration_ms",
        "Server request duration, per route template.",
        dims=_HTTP_DIMS,
        raw_dims=_HTTP_RAW,
        outcome="status",
    ),
    Metric(
        "http.server.request.size",
        "bytes",
        "http",
        "request_bytes",
        "Request body size.",
        dims=_HTTP_DIMS,
        raw_dims=_HTTP_RAW,
        outcome="status",
    ),
    Metric(
        "http.server.response.size",
        "bytes",
        "http",
        "response_bytes",
        "Response body size.",
        dims=_HTTP_DIMS,
        raw_dims=_HTTP_RAW,
        outcome="status",
    ),
    Metric(
        "http.server.db_time",
        "ms",
        "http",
        "db_time_ms",
        "Time a request spent in database calls.",
        dims=_HTTP_DIMS,
        raw_dims=_HTTP_RAW,
        outcome="status",
    ),
    Metric(
        "db.query.duration",
        "ms",
        "db",
        "duration_ms",
        "Database statement duration, per normalized fingerprint.",
        dims=_DB_DIMS,
        raw_dims=("host",),
        outcome="error",
    ),
    Metric(
        "db.query.rows",
        "1",
        "db",
        "rows",
        "Rows returned or affected by a statement.",
        dims=_DB_DIMS,
        outcome="error",
    ),
    Metric(
        "db.pool.wait",
        "ms",
        "db",
        "pool_wait_ms",
        "Time a statement waited for a pooled connection.",
        dims=_DB_DIMS,
        outcome="error",
    ),
    Metric(
        "db.pool.checked_out",
        "1",
        "pool",
        "checked_out",
        "Connections checked out of the pool (sampled).",
        dims=("pool",),
    ),
    Metric(
        "db.pool.usage",
        "percent",
        "pool",
        "usage_pct",
        "Checked-out connections as a share of pool size plus overflow in use.",
        dims=("pool",),
    ),
    Metric(
        "db.pool.sample_wait",
        "ms",
        "pool",
        "wait_ms",
        "Longest wait for a pooled connection in the sample interval.",
        dims=("pool",),
    ),
    Metric(
        "cache.duration",
        "ms",
        "cache",
        "duration_ms",
        "Cache operation latency; its outcome gives the hit ratio.",
        dims=("cache", "op"),
        outcome="hit",
    ),
    _resource("process.cpu", "percent", "process_cpu_pct", "Process CPU, percent of one core."),
    _resource("process.memory.rss", "bytes", "process_rss_bytes", "Process resident memory."),
    _resource("process.threads", "1", "process_threads", "Process threads."),
    _resource("process.fds", "1", "process_fds", "Process open file descriptors."),
    _resource("process.io.read", "bytes", "process_read_bytes", "Process bytes read (interval)."),
    _resource(
        "process.io.write", "bytes", "process_write_bytes", "Process bytes written (interval)."
    ),
    _resource("host.cpu", "percent", "host_cpu_pct", "Host CPU, percent of all cores."),
    _resource("host.memory.used", "bytes", "host_mem_used_bytes", "Host memory in use."),
    _resource(
        "host.disk.read", "bytes", "host_disk_read_bytes", "Host disk bytes read (interval)."
    ),
    _resource(
        "host.disk.write", "bytes", "host_disk_write_bytes", "Host disk bytes written (interval)."
    ),
    _resource(
        "host.net.sent", "bytes", "host_net_sent_bytes", "Host network bytes sent (interval)."
    ),
    _resource(
        "host.net.recv", "bytes", "host_net_recv_bytes", "Host network bytes received (interval)."
    ),
    _vital("LCP", "ms", 2500, 4000, "Largest Contentful Paint."),
    _vital("INP", "ms", 200, 500, "Interaction to Next Paint."),
    _vital("CLS", "1", 0.1, 0.25, "Cumulative Layout Shift (unitless)."),
    _vital("FCP", "ms", 1800, 3000, "First Contentful Paint."),
    _vital("TTFB", "ms", 800, 1800, "Time to First Byte."),
    _vital("FID", "ms", 100, 300, "First Input Delay (legacy)."),
    _nav("dns", "Navigation: DNS lookup."),
    _nav("connect", "Navigation: TCP connect."),
    _nav("tls", "Navigation: TLS handshake."),
    _nav("request", "Navigation: request sent to first byte."),
    _nav("response", "Navigation: response download."),
    _nav("dom_interactive", "Navigation: DOM interactive, from navigation start."),
    _nav("dom_complete", "Navigation: DOM complete, from navigation start."),
    _nav("load", "Navigation: load event end, from navigation start."),
    Metric(
        "rum.long_tasks.tbt",
        "ms",
        "rum_view",
        "tbt_ms",
        "Total blocking time of long tasks in a page view.",
        dims=_RUM_DIMS,
    ),
    Metric(
        "rum.long_tasks.count",
        "1",
        "rum_view",
        "lt_count",
        "Long tasks in a page view.",
        dims=_RUM_DIMS,
    ),
    Metric(
        "rum.memory.used",
        "bytes",
        "rum_view",
        "mem_used_bytes",
        "JS heap in use, where the browser exposes it.",
        dims=_RUM_DIMS,
    ),
    Metric(
        "rum.resource.transfer",
        "bytes",
        "rum_resource",
        "transfer_bytes",
        "Bytes transferred per page view, by resource type.",
        dims=("page", "type", "device"),
    ),
    Metric(
        "rum.resource.decoded",
        "bytes",
        "rum_resource",
        "decoded_bytes",
        "Decoded bytes per page view, by resource type.",
        dims=("page", "type", "device"),
    ),
    Metric(
        "rum.resource.count",
        "1",
        "rum_resource",
        "count",
        "Resources per page view, by type.",
        dims=("page", "type", "device"),
    ),
)

CATALOG: dict[str, Metric] = {m.name: m for m in METRICS}
VITALS: dict[str, Metric] = {m.where[0][1]: m for m in METRICS if "vital" in m.tags}


class UnknownMetric(KeyError):
    """A metric name that is not in the catalog."""


def metric(name: str) -> Metric:
    """The catalog entry for ``name``; raises :class:`UnknownMetric`."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownMetric(name) from None


def by_kind(kind: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.kind == kind)


def render_markdown() -> str:
    """The catalog as the Markdown table in docs/metrics.md."""
    lines = [
        "| metric | unit | source | rollup dimensions | raw-only dimensions | outcome | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        src = f"{m.kind}.{m.field}" + "".join(f" ({k}={v})" for k, v in m.where)
        lines.append(
            f"| `{m.name}` | {m.unit} | {src} | {', '.join(m.dims) or '–'} "
            f"| {', '.join(m.raw_dims) or '–'} | {m.outcome} | {m.description} |"
        )
    return "\n".join(lines) + "\n"
