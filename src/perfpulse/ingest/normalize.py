"""Turn a decoded batch or beacon into storage rows: sanity, privacy, cardinality.

Type errors were already refused by the decoder (400, nothing stored). Here each
event is checked for values no real system produces and dropped, with its reason
counted, while the rest of the batch is kept:

==================  ==========================================================
reason              when
==================  ==========================================================
non_finite          a number is NaN or infinite
negative_value      a duration, size or CLS below zero
absurd_value        a duration over 10 minutes, CLS over 100
future_timestamp    more than a day ahead of the collector's clock
too_old             older than raw retention
==================  ==========================================================

Every URL is redacted (query values, fragment and credentials removed), every
path becomes a template (``/orders/{id}``), every SQL statement is fingerprinted
again, and past the per-service cap new routes and pages fold into ``other``.

Example::

    norm = Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=14 * 86400)
    out = norm.batch(BATCH_DECODER.decode(body))
    out.columns["http"]   # columns in the layout of model.rows.LAYOUTS["http"]
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import msgspec

from perfpulse.ingest.redact import redact_url
from perfpulse.ingest.routes import OTHER, RouteFolder, template_path
from perfpulse.model.catalog import VITALS
from perfpulse.model.events import (
    BEACON_DECODER,
    NO_ATTRIBUTION,
    Batch,
    Beacon,
    CacheEvent,
    DbEvent,
    ErrorEvent,
    HttpEvent,
    LogEvent,
    Navigation,
    NPlusOneEvent,
    PoolEvent,
    ResourceEvent,
)
from perfpulse.model.fingerprint import fingerprint_sql, redact_statement
from perfpulse.model.rows import BEACON_DOCUMENT, Columns, Row, StoredBeacon, StoredVital

MAX_DURATION_MS = 600_000.0
MAX_CLS = 100.0
FUTURE_SLACK_S = 86_400.0
SENTINEL_ROUTES = frozenset({"unmatched", "other"})
DROP_REASONS = ("non_finite", "negative_value", "absurd_value", "future_timestamp", "too_old")

_isfinite = math.isfinite
_json = msgspec.json.Encoder()
_json_decode = msgspec.json.Decoder().decode
_consume: Callable[[Iterable[object]], None] = deque[object](
    maxlen=0
).extend  # runs an iterator, in C


def _new_counter() -> Counter[str]:
    """An empty Counter, made without ``Counter.__init__``'s Python-level ``update()``
    (which took a third of a beacon's ``Normalized()``)."""
    return Counter.__new__(Counter)


@dataclass(slots=True)
class Normalized:
    """What a batch becomes, per raw table: rows (tuples in layout order) of the
    events added one at a time, and columns (see :mod:`perfpulse.model.rows`) of
    those built all at once, the http events of a batch; a beacon becomes one
    document instead (:class:`~perfpulse.model.rows.StoredBeacon`, as JSON), which
    storage unnests into rows without Python touching each value. Plus how many
    events were kept and why others were dropped. Rows cost less to make and to
    encode for a few events, columns less to store for many."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    columns: dict[str, Columns] = field(default_factory=dict)
    beacons: list[bytes] = field(default_factory=list)  # StoredBeacon documents
    accepted: int = 0
    dropped: Counter[str] = field(default_factory=_new_counter)

    def add(self, table: str, row: Row) -> None:
        rows = self.rows.get(table)
        if rows is None:
            self.rows[table] = [row]
        else:
            rows.append(row)

    def extend(self, table: str, columns: Columns) -> None:
        """Append whole columns to ``table``'s."""
        mine = self.columns.get(table)
        if mine is None:
            self.columns[table] = columns
        else:
            _consume(map(list.extend, mine, columns))

    @property
    def empty(self) -> bool:
        """Nothing to store."""
        return not (self.rows or self.columns or self.beacons)


def _duration_problem(value: float | None) -> str | None:
    if value is None:
        return None
    if not _isfinite(value):
        return "non_finite"
    if value < 0:
        return "negative_value"
    if value > MAX_DURATION_MS:
        return "absurd_value"
    return None


def _number_problem(value: float | None) -> str | None:
    if value is None:
        return None
    if not _isfinite(value):
        return "non_finite"
    if value < 0:
        return "negative_value"
    return None


LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
_LEVEL_ALIASES = {
    "warning": "warn",
    "critical": "fatal",
    "exception": "error",
    "err": "error",
    "notset": "trace",
}
_SEVERITY = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def log_level(name: str) -> tuple[str, int]:
    """A level name (Python's or OpenTelemetry's) as perfpulse's level and severity."""
    key = name.strip().lower()
    key = _LEVEL_ALIASES.get(key, key)
    if key not in _SEVERITY:
        key = "info"
    return key, _SEVERITY[key]


def level_of_severity(severity: int) -> str:
    """OpenTelemetry severity numbers 1–24 in six bands of four."""
    if severity <= 0:
        return "info"
    return LEVELS[min((severity - 1) // 4, 5)]


def new_id() -> str:
    return secrets.token_hex(8)


@lru_cache(maxsize=4096)
def _page_of(url: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        return "/"
    return template_path(path or "/")


class Normalizer:
    """Applies sanity, redaction and folding rules. One instance per collector."""

    def __init__(
        self,
        *,
        folder: RouteFolder,
        raw_retention_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.raw_retention_s = raw_retention_s
        self.clock = clock

    def _window(self) -> tuple[float, float]:
        now = self.clock()
        return now - self.raw_retention_s, now + FUTURE_SLACK_S

    @staticmethod
    def _ts_problem(ts: float, lo: float, hi: float) -> str | None:
        if lo <= ts <= hi:
            return None
        if not _isfinite(ts):
            return "non_finite"
        return "too_old" if ts < lo else "future_timestamp"

    def route(self, service: str, route: str) -> str:
        """The stored route: a template, folded at the cap. The agents' sentinel
        words (``unmatched`` for a request no route matched, ``other``) stay."""
        if route in SENTINEL_ROUTES:
            return self.folder.fold(service, route)
        return self.folder.fold(service, template_path(route))

    def routes(self, service: str, raw: list[str]) -> list[str]:
        """:meth:`route` of each of ``raw``, templating each distinct route once."""
        seen: dict[str, str] = {}
        out = []
        for r in raw:
            stored = seen.get(r)
            if stored is None:
                stored = self.route(service, r)
                if stored != OTHER:  # a fold to "other" is counted per event
                    seen[r] = stored
            out.append(stored)
        return out

    def _http_columns(self, events: list[HttpEvent], origin: tuple[str, str, str, str]) -> Columns:
        """Columns of the ``http`` layout for events that passed the checks."""
        n = len(events)
        return [
            [e.ts for e in events],
            *([value] * n for value in origin),
            self.routes(origin[0], [e.route for e in events]),
            [e.method.upper() for e in events],
            [e.status for e in events],
            [e.duration_ms for e in events],
            [e.request_bytes for e in events],
            [e.response_bytes for e in events],
            [e.db_time_ms for e in events],
            [e.db_count for e in events],
            [e.cache_hits for e in events],
            [e.cache_misses for e in events],
            [e.exception for e in events],
            [e.request_id for e in events],
            [e.trace_id for e in events],
        ]

    def batch(self, batch: Batch) -> Normalized:
        out = Normalized()
        res = batch.resource
        service = res.service
        origin = (service, res.environment, res.release, res.host)
        lo, hi = self._window()
        route = self.route
        http: list[HttpEvent] = []  # kept http events: their columns are built at the end
        keep = http.append
        for e in batch.events:
            ts = e.ts
            if type(e) is HttpEvent:  # the common kind, checked inline (NaN fails every test)
                d, db = e.duration_ms, e.db_time_ms
                if (
                    lo <= ts <= hi
                    and 0.0 <= d <= MAX_DURATION_MS
                    and (db is None or 0.0 <= db <= MAX_DURATION_MS)
                ):
                    keep(e)
                else:
                    reason = (
                        self._ts_problem(ts, lo, hi)
                        or _duration_problem(d)
                        or _duration_problem(db)
                        or "non_finite"
                    )
                    out.dropped[reason] += 1
                continue
            problem = self._ts_problem(ts, lo, hi)
            if problem is None:
                if isinstance(e, DbEvent):
                    problem = _duration_problem(e.duration_ms) or _duration_problem(e.pool_wait_ms)
                    if problem is None:
                        out.add(
                            "db",
                            (
                                ts,
                                *origin,
                                fingerprint_sql(e.fingerprint),
                                e.system,
                                e.duration_ms,
                                e.rows,
                                e.pool_wait_ms,
                                None if e.statement is None else redact_statement(e.statement),
                                None if e.route is None else route(service, e.route),
                                e.error,
                                e.request_id,
                                e.trace_id,
                            ),
                        )
                elif isinstance(e, CacheEvent):
                    problem = _duration_problem(e.duration_ms)
                    if problem is None:
                        out.add(
                            "cache",
                            (
                                ts,
                                *origin,
                                e.cache,
                                e.op,
                                e.hit,
                                e.duration_ms,
                                e.count,
                                None if e.route is None else route(service, e.route),
                                e.request_id,
                            ),
                        )
                elif isinstance(e, ResourceEvent):
                    values = (
                        e.process_cpu_pct,
                        e.process_rss_bytes,
                        e.process_threads,
                        e.process_fds,
                        e.process_read_bytes,
                        e.process_write_bytes,
                        e.host_cpu_pct,
                        e.host_mem_used_bytes,
                        e.host_mem_total_bytes,
                        e.host_disk_read_bytes,
                        e.host_disk_write_bytes,
                        e.host_net_sent_bytes,
                        e.host_net_recv_bytes,
                        e.cgroup_cpu_limit,
                        e.cgroup_mem_limit_bytes,
                    )
                    for v in values:
                        problem = _number_problem(v)
                        if problem:
                            break
                    if problem is None:
                        out.add("resource", (ts, *origin, e.pid, *values))
                elif isinstance(e, ErrorEvent):
                    out.add(
                        "error",
                        (
                            ts,
                            *origin,
                            e.type,
                            e.message,
                            None if e.route is None else route(service, e.route),
                            e.stack,
                            e.handled,
                            e.request_id,
                            e.trace_id,
                        ),
                    )
                elif isinstance(e, PoolEvent):
                    problem = _duration_problem(e.wait_ms)
                    if problem is None:
                        capacity = e.size + max(e.overflow, 0)
                        usage = 100.0 * e.checked_out / capacity if capacity else None
                        out.add(
                            "pool",
                            (
                                ts,
                                *origin,
                                e.pool,
                                e.size,
                                e.checked_out,
                                e.overflow,
                                usage,
                                e.wait_ms,
                                e.timeouts,
                            ),
                        )
                elif isinstance(e, LogEvent):
                    level, severity = log_level(e.level)
                    out.add(
                        "log",
                        (
                            ts,
                            *origin,
                            new_id(),
                            level,
                            severity,
                            e.logger,
                            e.message,
                            e.exception,
                            e.trace_id,
                            e.span_id,
                            e.request_id,
                            _json.encode(e.attributes).decode() if e.attributes else None,
                        ),
                    )
                elif isinstance(e, NPlusOneEvent):
                    problem = _duration_problem(e.total_ms)
                    if problem is None:
                        out.add(
                            "n_plus_one",
                            (
                                ts,
                                *origin,
                                route(service, e.route),
                                fingerprint_sql(e.fingerprint),
                                e.count,
                                e.total_ms,
                                e.request_id,
                            ),
                        )
            if problem is None:
                out.accepted += 1
            else:
                out.dropped[problem] += 1
        if http:
            out.extend("http", self._http_columns(http, origin))
            out.accepted += len(http)
        return out

    def page(self, service: str, url: str) -> str:
        """The stored page of a view of ``url``: its path's template, folded at the cap."""
        return self.folder.fold(service, _page_of(url))

    def beacon_body(self, body: bytes) -> tuple[str, int, Normalized]:
        """A beacon as it came (``POST /api/v1/rum``'s body): its id, how many events
        it holds (the view and its vitals), and what it becomes, as
        :meth:`beacon` makes it of ``BEACON_DECODER.decode(body)``, whose errors
        it raises.

        The usual beacon takes the compiled path (:mod:`perfpulse.ingest._beacon`,
        when it was built), which makes the same document in one pass over the
        body; anything else, a bad beacon or a dropped vital among them, this
        Python path."""
        if _fast is not None:
            lo, hi = self._window()
            done = _fast(body, lo, hi, self.page)
            if done is not None:
                view_id, vitals, document = done
                return view_id, 1 + vitals, Normalized(beacons=[document], accepted=1 + vitals)
        b = BEACON_DECODER.decode(body)
        return b.id, 1 + len(b.vitals), self.beacon(b)

    def beacon_record(
        self, message: Mapping[str, Any], received: float, limit: int
    ) -> tuple[str, bytes, int] | None:
        """The usual beacon, straight from the ASGI message that holds all of it
        (at most ``limit`` bytes, not compressed): its dedupe key, the spool record
        it becomes (:class:`~perfpulse.model.rows.SpoolRecord` as MessagePack,
        received at ``received``) and how many events it holds, all as
        :meth:`beacon_body` would make them. None for anything else (a message
        that is not the whole body, a beacon :meth:`beacon_body` would refuse,
        drop from or treat otherwise than the usual one), and always when the
        compiled path was not built."""
        if _record is None:
            return None
        now = self.clock()  # the window, as _window() has it, without a call more
        return _record(
            message, now - self.raw_retention_s, now + FUTURE_SLACK_S, received, self.page, limit
        )

    def beacon(self, b: Beacon) -> Normalized:
        """A page view, as one :class:`~perfpulse.model.rows.StoredBeacon` document:
        storage unnests it into the view's row, one row per kept vital and one per
        resource group and largest resource (:data:`~perfpulse.model.rows.BEACON_TABLES`).

        The beacon is normalized in place: its URLs redacted, navigation phases out
        of range set to null (the page view stays), resources with a bad duration
        removed; vitals out of range are dropped and counted. An attribution that is
        not an object (or null) refuses the beacon with a
        :class:`msgspec.ValidationError` naming it, as the decoder would have."""
        out = Normalized()
        lo, hi = self._window()
        problem = self._ts_problem(b.ts, lo, hi)
        if problem is not None:
            out.dropped[problem] += 1 + len(b.vitals)
            return out
        page = self.page(b.service, b.url)
        b.url = redact_url(b.url)
        nav = b.nav
        if nav is not None and not _phases_in_range(nav):
            for name in _NAV_PHASES:
                v = getattr(nav, name)
                # A bad phase is dropped alone (NaN fails the test too).
                if v is not None and not 0.0 <= v <= MAX_DURATION_MS:
                    setattr(nav, name, None)
        vitals: list[StoredVital] = []
        for i, v in enumerate(b.vitals):
            value = v.value
            name = v.name
            good, poor, most = _VITAL_LIMITS[name]
            # NaN fails both tests; the reason is looked up only for a dropped vital
            if not 0.0 <= value <= most:
                out.dropped[_vital_problem(name, value)] += 1
                continue
            attribution = v.attribution
            vitals.append(
                StoredVital(
                    name,
                    value,
                    0 if value <= good else 1 if value <= poor else 2,
                    v.navigation_type,
                    None if attribution is NO_ATTRIBUTION else _attribution(attribution, i),
                )
            )
        b.vitals = []
        if b.resources:  # a group with a bad duration goes (NaN fails the test)
            b.resources = [g for g in b.resources if 0.0 <= g.duration_ms <= MAX_DURATION_MS]
        if b.largest_resources:
            largest = []
            for r in b.largest_resources:
                if 0.0 <= r.duration_ms <= MAX_DURATION_MS:
                    r.url = redact_url(r.url)
                    largest.append(r)
            b.largest_resources = largest
        lt = b.long_tasks
        if lt is not None:
            lt.worst_script = redact_url(lt.worst_script) if lt.worst_script else None
        out.beacons.append(BEACON_DOCUMENT(StoredBeacon(page, vitals, b)))
        out.accepted += 1 + len(vitals)
        return out


_NAV_PHASES = tuple(name for name in Navigation.__struct_fields__ if name.endswith("_ms"))
# (good, poor, largest accepted) per vital: its rating thresholds and its range
_VITAL_LIMITS = {
    name: (
        *(metric.thresholds or (math.inf, math.inf)),
        MAX_CLS if name == "CLS" else MAX_DURATION_MS,
    )
    for name, metric in VITALS.items()
}
_astuple = msgspec.structs.astuple
_phase_values = itemgetter(*(Navigation.__struct_fields__.index(n) for n in _NAV_PHASES))


def _phases_in_range(nav: Navigation) -> bool:
    """Whether every navigation phase given is within 0 to 10 minutes: the usual
    case, checked with three calls in C (a NaN or an infinity makes the sum fail)."""
    phases: list[float] = [v for v in _phase_values(_astuple(nav)) if v is not None]
    if not phases:
        return True
    total = sum(phases)
    return total == total and min(phases) >= 0.0 and max(phases) <= MAX_DURATION_MS


_URL_PREFIXES = ("http://", "https://", "//")


def _vital_problem(name: str, value: float) -> str:
    if name == "CLS":
        return _number_problem(value) or "absurd_value"
    return _duration_problem(value) or "absurd_value"


def _attribution(raw: msgspec.Raw, index: int) -> str | None:
    """A vital's attribution as stored (see :func:`attribution_text`); a value that
    is not an object refuses the beacon, naming the field as the decoder does."""
    try:
        return stored_attribution(bytes(raw))
    except TypeError as exc:
        raise msgspec.ValidationError(
            f"Expected `object | null`, got `{exc}` - at `$.vitals[{index}].attribution`"
        ) from None


_JSON_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "array"}


#: Attribution texts longer than this are made without the cache, which bounds the
#: cache's memory to about ``512 * 2 * 512`` bytes (typical ones are 50 to 300).
_ATTRIBUTION_CACHE_MAX_LEN = 512


def _attribution_text(raw: bytes) -> str | None:
    """An attribution object (its JSON text as received) as stored: compact JSON with
    the URLs in it redacted (a URL has a ``//``), or None for null or ``{}``. JSON
    that is not an object raises :class:`TypeError` naming its type (``int``,
    ``array``, ...)."""
    value = _json_decode(raw)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(_JSON_KINDS.get(type(value), "object"))
    if not value:
        return None
    text = _json.encode(value)
    if b"//" in text:
        text = _json.encode(_redact_attribution(value))
    return text.decode()


attribution_text = lru_cache(maxsize=512)(_attribution_text)
""":func:`_attribution_text`, cached by the received bytes: a site's attributions
repeat (the same LCP image, the same button), so most cost a beacon one lookup."""


def stored_attribution(text: bytes) -> str | None:
    """:func:`attribution_text`, past the cache for a text longer than
    :data:`_ATTRIBUTION_CACHE_MAX_LEN`."""
    if len(text) > _ATTRIBUTION_CACHE_MAX_LEN:
        return _attribution_text(text)
    return attribution_text(text)


def _redact_attribution(value: object) -> object:
    """URLs inside an attribution object lose their query values too."""
    if isinstance(value, str):
        return redact_url(value) if value.startswith(_URL_PREFIXES) else value
    if isinstance(value, dict):
        return {k: _redact_attribution(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_attribution(v) for v in value]
    return value


def _compiled() -> ModuleType | None:
    """The compiled beacon path (``_beacon.c``), set up with the Python path's
    callables and bounds; None when the extension was not built."""
    try:
        from perfpulse.ingest import _beacon
    except ImportError:  # built without a C compiler: every beacon takes the Python path
        return None
    from perfpulse.ingest import redact

    _beacon.configure(
        redact_url,
        stored_attribution,
        [_VITAL_LIMITS[name] for name in ("LCP", "INP", "CLS", "FCP", "TTFB", "FID")],
        MAX_DURATION_MS,
        redact._redact_cached,
        redact._CACHE_MAX_LEN,
        attribution_text,
        _ATTRIBUTION_CACHE_MAX_LEN,
    )
    return _beacon


_compiled_beacon = _compiled()
_fast: (
    Callable[[bytes, float, float, Callable[[str, str], str]], tuple[str, int, bytes] | None] | None
)
_fast = None if _compiled_beacon is None else _compiled_beacon.normalize
_record: Callable[..., tuple[str, bytes, int] | None] | None
_record = None if _compiled_beacon is None else _compiled_beacon.record
