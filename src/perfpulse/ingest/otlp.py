"""OTLP/HTTP: traces, metrics and logs from any OpenTelemetry SDK or collector.

Bodies are decoded with the ``opentelemetry-proto`` messages, as binary protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``, where trace and
span ids are hex strings). What becomes of them:

- every span is kept in ``span`` (trace id, span id, parent, name, kind, times,
  status, attributes, events), so a request reads back as a tree;
- a SERVER span with ``http.route`` (or, failing that, ``http.target`` /
  ``url.path``, templated) is also an ``http`` event: method from
  ``http.request.method`` / ``http.method``, status from
  ``http.response.status_code`` / ``http.status_code``;
- a CLIENT span with ``db.system`` (or ``db.system.name``) that ran a statement
  (``db.query.text``, ``db.statement`` or an operation name) is also a ``db``
  event, fingerprinted from ``db.query.text`` / ``db.statement`` and attributed
  to the route of its trace's server span when that arrived in the same request;
- metric points (gauge, sum, histogram, exponential histogram, summary) go to
  ``otel_metric`` with their attributes;
- log records go to ``log``, the same table the Python agent's handler fills.

``service.name``, ``deployment.environment.name`` (or ``deployment.environment``),
``service.version`` and ``host.name`` map to service, environment, release and host.
Items that fail the collector's sanity rules are rejected and reported back as
OTLP partial success (``rejected_spans`` and an ``error_message``).
"""

from __future__ import annotations

import base64
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from perfpulse.ingest.body import OtlpError
from perfpulse.ingest.normalize import (
    Normalized,
    Normalizer,
    _duration_problem,
    level_of_severity,
    new_id,
)
from perfpulse.model.fingerprint import fingerprint_sql, redact_statement

_SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")
_TEMPORALITY = ("unspecified", "delta", "cumulative")
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
#: Per signal: the request message, the response message and its rejected-count field.
MESSAGES: dict[str, tuple[type[Message], type[Message], str]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "rejected_spans",
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "rejected_data_points",
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "rejected_log_records",
    ),
}


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise OtlpError(f"{k} {v!r} is not hex") from None
            out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(x) for x in node]
    return node


def parse(body: bytes, content_type: str, message: type[Message]) -> Any:
    """Decode ``body`` as OTLP protobuf or OTLP/JSON into ``message``."""
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OtlpError(f"body is not JSON: {exc}") from None
        try:
            return json_format.ParseDict(
                _hex_ids_to_base64(data), message(), ignore_unknown_fields=True
            )
        except json_format.ParseError as exc:
            raise OtlpError(f"not an OTLP/JSON {message.__name__}: {exc}") from None
    try:
        return message.FromString(body)
    except DecodeError as exc:
        raise OtlpError(f"not an OTLP protobuf {message.__name__}: {exc}") from None


def _origin(resource_attrs: dict[str, Any]) -> tuple[str, str, str, str]:
    service = str(resource_attrs.get("service.name") or "unknown_service")
    env = resource_attrs.get("deployment.environment.name") or resource_attrs.get(
        "deployment.environment"
    )
    return (
        service[:200],
        str(env or "production")[:200],
        str(resource_attrs.get("service.version") or "")[:200],
        str(resource_attrs.get("host.name") or "")[:200],
    )


class OtlpDecoder:
    """Turns OTLP export requests into storage rows, counting what it rejects."""

    def __init__(self, normalizer: Normalizer, remember: int = 10_000) -> None:
        self.normalizer = normalizer
        self.remember = remember
        # oldest first; an OrderedDict forgets its oldest in O(1), where a dict's first
        # key after deletions at its front is found by scanning their holes
        self._recent_routes: OrderedDict[str, str] = OrderedDict()

    def decode(self, signal: str, body: bytes, content_type: str) -> Normalized:
        """The rows of one export request of ``signal`` (``traces``, ``metrics``, ``logs``)."""
        parsed = parse(body, content_type, MESSAGES[signal][0])
        decoded: Normalized = getattr(self, signal)(parsed)
        return decoded

    def answer(self, signal: str, dropped: Counter[str], content_type: str) -> tuple[bytes, str]:
        """The export response (body, media type), in the request's encoding, with
        a partial success naming what was rejected."""
        _, response_type, rejected_field = MESSAGES[signal]
        rejected, text = partial_success(dropped, signal)
        answer: Any = response_type()
        if rejected:
            setattr(answer.partial_success, rejected_field, rejected)
            answer.partial_success.error_message = text
        if content_type.split(";")[0].strip().lower() == "application/json":
            return json_format.MessageToJson(answer, indent=None).encode(), "application/json"
        return answer.SerializeToString(), "application/x-protobuf"

    def _recent_routes_for_batch(self) -> dict[str, str]:
        """Routes of server spans, by trace id: this request's, then the last ``remember``."""
        recent = self._recent_routes
        while len(recent) > self.remember:
            recent.popitem(last=False)
        return recent

    def _window(self) -> Callable[[float], str | None]:
        lo, hi = self.normalizer._window()
        return lambda ts: self.normalizer._ts_problem(ts, lo, hi)

    def traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> Normalized:
        out = Normalized()
        ts_problem = self._window()
        route_of_trace = self._recent_routes_for_batch()
        db_spans: list[tuple[tuple[str, str, str, str], Any, dict[str, Any], str]] = []
        for rs in request.resource_spans:
            origin = _origin(attributes(rs.resource.attributes))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    problem = None
                    if len(span.trace_id) != 16 or len(span.span_id) != 8:
                        problem = "bad_id"
                    ts = span.start_time_unix_nano / 1e9
                    duration = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                    problem = problem or ts_problem(ts) or _duration_problem(duration)
                    if problem:
                        out.dropped[problem] += 1
                        continue
                    attrs = attributes(span.attributes)
                    trace_id = span.trace_id.hex()
                    kind = _SPAN_KINDS[span.kind] if span.kind < len(_SPAN_KINDS) else "unspecified"
                    status = _STATUS[span.status.code] if span.status.code < 3 else "unset"
                    out.add(
                        "span",
                        (
                            ts,
                            *origin,
                            trace_id,
                            span.span_id.hex(),
                            span.parent_span_id.hex() or None,
                            span.name[:500],
                            kind,
                            duration,
                            status,
                            span.status.message[:2000] or None,
                            _dumps(attrs) if attrs else None,
                            _dumps(
                                [
                                    {
                                        "name": e.name,
                                        "ts": e.time_unix_nano / 1e9,
                                        "attributes": attributes(e.attributes),
                                    }
                                    for e in span.events
                                ]
                            )
                            if span.events
                            else None,
                        ),
                    )
                    out.accepted += 1
                    if kind == "server":
                        route = self._http(out, origin, ts, duration, attrs, trace_id, status)
                        if route is not None:
                            route_of_trace[trace_id] = route
                    elif kind == "client" and _is_statement(attrs):
                        db_spans.append((origin, span, attrs, trace_id))
        for origin, span, attrs, trace_id in db_spans:
            statement = attrs.get("db.query.text") or attrs.get("db.statement")
            route = route_of_trace.get(trace_id)
            duration = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
            out.add(
                "db",
                (
                    span.start_time_unix_nano / 1e9,
                    *origin,
                    fingerprint_sql(str(statement)) if statement else span.name[:500],
                    str(attrs.get("db.system") or attrs.get("db.system.name")),
                    duration,
                    _int(attrs.get("db.response.returned_rows")),
                    None,
                    redact_statement(str(statement)) if statement and duration >= 100 else None,
                    route,
                    (span.status.message or "error") if span.status.code == 2 else None,
                    None,
                    trace_id,
                ),
            )
        return out

    def _http(
        self,
        out: Normalized,
        origin: tuple[str, str, str, str],
        ts: float,
        duration: float,
        attrs: dict[str, Any],
        trace_id: str,
        status: str,
    ) -> str | None:
        raw = attrs.get("http.route") or attrs.get("http.target") or attrs.get("url.path")
        if not raw:
            return None
        route = self.normalizer.route(origin[0], str(raw).split("?", 1)[0])
        code = _int(attrs.get("http.response.status_code") or attrs.get("http.status_code")) or 0
        method = str(attrs.get("http.request.method") or attrs.get("http.method") or "GET")
        out.add(
            "http",
            (
                ts,
                *origin,
                route,
                method.upper()[:16],
                code,
                duration,
                _int(
                    attrs.get("http.request.body.size") or attrs.get("http.request_content_length")
                ),
                _int(
                    attrs.get("http.response.body.size")
                    or attrs.get("http.response_content_length")
                ),
                None,
                None,
                None,
                None,
                attrs.get("error.type") if status == "error" or code >= 500 else None,
                None,
                trace_id,
            ),
        )
        return route

    def metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> Normalized:
        out = Normalized()
        ts_problem = self._window()
        for rm in request.resource_metrics:
            origin = _origin(attributes(rm.resource.attributes))
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    data = getattr(metric, kind)
                    temporality = _TEMPORALITY[getattr(data, "aggregation_temporality", 0)]
                    for point in data.data_points:
                        ts = point.time_unix_nano / 1e9
                        problem = ts_problem(ts)
                        if problem:
                            out.dropped[problem] += 1
                            continue
                        row = self._point(kind, point)
                        if row is None:
                            out.dropped["non_finite"] += 1
                            continue
                        attrs = attributes(point.attributes)
                        out.add(
                            "otel_metric",
                            (
                                ts,
                                *origin,
                                metric.name[:200],
                                kind,
                                metric.unit[:32],
                                temporality,
                                point.start_time_unix_nano / 1e9 or None,
                                _dumps(dict(sorted(attrs.items()))),
                                *row,
                            ),
                        )
                        out.accepted += 1
        return out

    @staticmethod
    def _point(kind: str, p: Any) -> tuple[object, ...] | None:
        """(value, count, sum, min, max, bounds, counts, scale, zero_count, offset)."""
        if kind in ("gauge", "sum"):
            value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            if value != value or value in (float("inf"), float("-inf")):
                return None
            return (value, None, None, None, None, None, None, None, None, None)
        has_min = p.HasField("min") if kind != "summary" else False
        has_max = p.HasField("max") if kind != "summary" else False
        common = (
            None,
            int(p.count),
            float(p.sum),
            p.min if has_min else None,
            p.max if has_max else None,
        )
        if kind == "histogram":
            return (
                *common,
                _dumps(list(p.explicit_bounds)),
                _dumps(list(p.bucket_counts)),
                None,
                None,
                None,
            )
        if kind == "exponential_histogram":
            return (
                *common,
                None,
                _dumps(list(p.positive.bucket_counts)),
                int(p.scale),
                int(p.zero_count),
                int(p.positive.offset),
            )
        quantiles = [[q.quantile, q.value] for q in p.quantile_values]
        return (*common, _dumps(quantiles), None, None, None, None)

    def logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> Normalized:
        out = Normalized()
        ts_problem = self._window()
        for rl in request.resource_logs:
            origin = _origin(attributes(rl.resource.attributes))
            for sl in rl.scope_logs:
                logger = sl.scope.name
                for rec in sl.log_records:
                    ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9
                    problem = ts_problem(ts)
                    if problem:
                        out.dropped[problem] += 1
                        continue
                    attrs = attributes(rec.attributes)
                    body = _value(rec.body)
                    message = body if isinstance(body, str) else _dumps(body)
                    exception = None
                    if "exception.type" in attrs or "exception.stacktrace" in attrs:
                        exception = "\n".join(
                            str(attrs.pop(k))
                            for k in ("exception.type", "exception.message", "exception.stacktrace")
                            if k in attrs
                        )
                    severity = int(rec.severity_number)
                    level = (
                        level_of_severity(severity)
                        if severity
                        else (rec.severity_text.lower() or "info")
                    )
                    request_id = attrs.pop("request_id", None) or attrs.pop("http.request.id", None)
                    out.add(
                        "log",
                        (
                            ts,
                            *origin,
                            new_id(),
                            level[:16],
                            severity,
                            logger[:200],
                            message[:16_000],
                            exception,
                            rec.trace_id.hex() or None,
                            rec.span_id.hex() or None,
                            str(request_id) if request_id else None,
                            _dumps(attrs) if attrs else None,
                        ),
                    )
                    out.accepted += 1
        return out


def _is_statement(attrs: dict[str, Any]) -> bool:
    """A client span that ran a database statement (not a bare connect)."""
    if not (attrs.get("db.system") or attrs.get("db.system.name")):
        return False
    return any(
        k in attrs for k in ("db.query.text", "db.statement", "db.operation", "db.operation.name")
    )


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def partial_success(dropped: Counter[str], signal: str) -> tuple[int, str]:
    """OTLP partial success: the rejected count and a message naming the reasons."""
    rejected = sum(dropped.values())
    if not rejected:
        return 0, ""
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items()))
    return rejected, f"{rejected} {signal} rejected: {reasons}"
