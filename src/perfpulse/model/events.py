"""Wire format v1: the event types agents send, as typed msgspec structs.

These structs *are* the contract documented in ``docs/wire-format.md``: decoding
a body with :data:`BATCH_DECODER` or :data:`BEACON_DECODER` validates every type
and names the first bad field (``$.events[3].status``), so a malformed batch is
refused whole before anything is stored.

The structs are declared ``gc=False``: decoded from JSON they can hold no
reference cycle, and leaving them out of the garbage collector's bookkeeping makes
decoding a 1,000-event batch about a third faster.

Range checks (a negative duration, a timestamp from next week) are not type
errors: they are applied per event by :mod:`perfpulse.ingest.sanity`, which drops
the event and counts the reason instead of refusing the batch.

Example::

    batch = BATCH_DECODER.decode(body)
    for event in batch.events:
        if isinstance(event, HttpEvent):
            ...
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Text = Annotated[str, Meta(max_length=2000)]
LongText = Annotated[str, Meta(max_length=16_000)]
Id = Annotated[str, Meta(min_length=1, max_length=128)]
Url = Annotated[str, Meta(max_length=4096)]
Count = Annotated[int, Meta(ge=0)]


class Resource(Struct, frozen=True, kw_only=True, gc=False):
    """Who sent the batch: one service, in one environment, at one release."""

    service: Name
    environment: Name = "production"
    release: Annotated[str, Meta(max_length=200)] = ""
    host: Annotated[str, Meta(max_length=200)] = ""


class HttpEvent(Struct, tag_field="kind", tag="http", kw_only=True, gc=False):
    """One server request. ``route`` is the framework's template (``/users/{id}``)."""

    ts: float
    route: Url
    method: Annotated[str, Meta(min_length=1, max_length=16)]
    status: Annotated[int, Meta(ge=0, le=999)]
    duration_ms: float
    request_bytes: Count | None = None
    response_bytes: Count | None = None
    db_time_ms: float | None = None
    db_count: Count | None = None
    cache_hits: Count | None = None
    cache_misses: Count | None = None
    exception: Text | None = None
    request_id: Id | None = None
    trace_id: Id | None = None


class DbEvent(Struct, tag_field="kind", tag="db", kw_only=True, gc=False):
    """One database statement. ``fingerprint`` has literals removed by the agent;
    the collector normalizes it again so no value is ever stored."""

    ts: float
    fingerprint: LongText
    duration_ms: float
    system: Annotated[str, Meta(max_length=64)] = ""
    rows: int | None = None
    pool_wait_ms: float | None = None
    statement: LongText | None = None
    route: Url | None = None
    error: Text | None = None
    request_id: Id | None = None
    trace_id: Id | None = None


class CacheEvent(Struct, tag_field="kind", tag="cache", kw_only=True, gc=False):
    """One cache operation: ``hit`` is true/false for reads, null for writes."""

    ts: float
    cache: Name
    op: Annotated[str, Meta(min_length=1, max_length=32)] = "get"
    hit: bool | None = None
    duration_ms: float = 0.0
    count: Annotated[int, Meta(ge=1)] = 1
    route: Url | None = None
    request_id: Id | None = None


class ResourceEvent(Struct, tag_field="kind", tag="resource", kw_only=True, gc=False):
    """A sample of process and host resources. Every field but ``ts`` is optional."""

    ts: float
    pid: int | None = None
    process_cpu_pct: float | None = None
    process_rss_bytes: float | None = None
    process_threads: float | None = None
    process_fds: float | None = None
    process_read_bytes: float | None = None
    process_write_bytes: float | None = None
    host_cpu_pct: float | None = None
    host_mem_used_bytes: float | None = None
    host_mem_total_bytes: float | None = None
    host_disk_read_bytes: float | None = None
    host_disk_write_bytes: float | None = None
    host_net_sent_bytes: float | None = None
    host_net_recv_bytes: float | None = None
    cgroup_cpu_limit: float | None = None
    cgroup_mem_limit_bytes: float | None = None


class ErrorEvent(Struct, tag_field="kind", tag="error", kw_only=True, gc=False):
    """An exception the application raised (handled or not)."""

    ts: float
    type: Name
    message: Text = ""
    route: Url | None = None
    stack: LongText | None = None
    handled: bool = False
    request_id: Id | None = None
    trace_id: Id | None = None


class PoolEvent(Struct, tag_field="kind", tag="pool", kw_only=True, gc=False):
    """A connection-pool sample; ``wait_ms`` and ``timeouts`` cover the interval."""

    ts: float
    pool: Name
    size: Count
    checked_out: Count
    overflow: int = 0
    wait_ms: float | None = None
    timeouts: Count = 0


class NPlusOneEvent(Struct, tag_field="kind", tag="n_plus_one", kw_only=True, gc=False):
    """A finding: one fingerprint executed ``count`` times in one request."""

    ts: float
    route: Url
    fingerprint: LongText
    count: Annotated[int, Meta(ge=2)]
    total_ms: float = 0.0
    request_id: Id | None = None


class LogEvent(Struct, tag_field="kind", tag="log", kw_only=True, gc=False):
    """A structured log record. ``level`` is one of trace, debug, info, warn,
    error, fatal (Python's names such as ``WARNING`` and ``CRITICAL`` are mapped)."""

    ts: float
    level: Annotated[str, Meta(min_length=1, max_length=16)]
    message: LongText
    logger: Annotated[str, Meta(max_length=200)] = ""
    exception: LongText | None = None
    request_id: Id | None = None
    trace_id: Id | None = None
    span_id: Id | None = None
    attributes: dict[str, str | int | float | bool] | None = None


Event = (
    HttpEvent
    | DbEvent
    | CacheEvent
    | ResourceEvent
    | ErrorEvent
    | PoolEvent
    | NPlusOneEvent
    | LogEvent
)


class Batch(Struct, kw_only=True, gc=False):
    """``POST /api/v1/events``: a batch from a server-side agent."""

    batch_id: Id
    resource: Resource
    events: list[Event]
    dropped: Count = 0
    sent_at: float | None = None


# --- browser beacons -------------------------------------------------------------

VitalName = Literal["LCP", "INP", "CLS", "FCP", "TTFB", "FID"]


NO_ATTRIBUTION = msgspec.Raw(b"null")
"""A vital's ``attribution`` when the beacon gave none."""


class Vital(Struct, kw_only=True, gc=False):
    """A web-vitals measurement; ``attribution`` is the library's attribution object
    (or null), kept as the JSON text it came in: normalizing reads it (see
    :func:`perfpulse.ingest.normalize.attribution_text`), and refuses anything but
    an object or null there with the decoder's own message."""

    name: VitalName
    value: float
    attribution: msgspec.Raw = NO_ATTRIBUTION
    navigation_type: Annotated[str, Meta(max_length=32)] | None = None


class Navigation(Struct, kw_only=True, gc=False):
    """Navigation timing phases of the (hard) page load, in milliseconds."""

    type: Annotated[str, Meta(max_length=32)] | None = None
    dns_ms: float | None = None
    connect_ms: float | None = None
    tls_ms: float | None = None
    request_ms: float | None = None
    response_ms: float | None = None
    dom_interactive_ms: float | None = None
    dom_complete_ms: float | None = None
    load_ms: float | None = None
    transfer_bytes: Count | None = None


ResourceType = Literal["image", "script", "stylesheet", "font", "fetch", "other"]


class ResourceGroup(Struct, kw_only=True, gc=False):
    """Resource timing summed over one type of resource."""

    type: ResourceType
    count: Count
    transfer_bytes: Count = 0
    encoded_bytes: Count = 0
    decoded_bytes: Count = 0
    duration_ms: float = 0.0
    cache_hits: Count = 0
    render_blocking: Count = 0
    third_party: Count = 0


class ResourceEntry(Struct, kw_only=True, gc=False):
    """One of the largest resources of the page view."""

    url: Url
    type: ResourceType
    transfer_bytes: Count = 0
    encoded_bytes: Count = 0
    decoded_bytes: Count = 0
    duration_ms: float = 0.0
    cached: bool = False
    render_blocking: bool = False
    third_party: bool = False


class LongTasks(Struct, kw_only=True, gc=False):
    """Long tasks and long animation frames seen during the page view."""

    count: Count = 0
    total_ms: float = 0.0
    tbt_ms: float = 0.0
    max_ms: float = 0.0
    loaf_count: Count = 0
    loaf_total_ms: float = 0.0
    worst_script: Url | None = None
    worst_script_ms: float | None = None


class Memory(Struct, kw_only=True, gc=False):
    """JS heap memory, where the browser exposes it."""

    used_bytes: Annotated[float, Meta(ge=0)]
    total_bytes: float | None = None
    limit_bytes: float | None = None
    source: Annotated[str, Meta(max_length=64)] = ""


DeviceClass = Literal["mobile", "tablet", "desktop"]


class Beacon(Struct, kw_only=True, gc=False):
    """``POST /api/v1/rum``: one page view (or SPA soft page view) from the browser.

    ``id`` identifies the page view and is its batch id: a beacon retried with the
    same id is stored once.
    """

    id: Id
    ts: float
    url: Url
    v: int = 1
    soft: bool = False
    service: Name = "web"
    environment: Name = "production"
    release: Annotated[str, Meta(max_length=200)] = ""
    device: DeviceClass = "desktop"
    browser: Annotated[str, Meta(max_length=64)] = ""
    connection: Annotated[str, Meta(max_length=32)] = ""
    sample_rate: Annotated[float, Meta(gt=0, le=1)] = 1.0
    vitals: list[Vital] = msgspec.field(default_factory=list)
    nav: Navigation | None = None
    resources: list[ResourceGroup] = msgspec.field(default_factory=list)
    largest_resources: list[ResourceEntry] = msgspec.field(default_factory=list)
    long_tasks: LongTasks | None = None
    memory: Memory | None = None


BATCH_DECODER = msgspec.json.Decoder(Batch)
BEACON_DECODER = msgspec.json.Decoder(Beacon)
