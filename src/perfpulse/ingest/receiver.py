"""The ingest endpoints: ``POST /api/v1/events`` and ``POST /api/v1/rum``.

Each request is checked in this order, and the first failure answers:

1. the key (401 missing, 403 wrong; for beacons also the ``Origin``),
2. the body size (413, before it is buffered), its encoding (415) and gzip (400/413),
3. the wire format (400 naming the first bad field — nothing of the batch is kept),
4. a duplicate ``batch_id`` (202, stored once),
5. the spool (503 with ``Retry-After`` when it is full or the disk has no room).

Only after the batch is in the spool does the collector answer 202 with the
number of events accepted and dropped (with reasons).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from perfpulse.ingest.body import BodyError, read_body
from perfpulse.ingest.dedupe import RecentBatches
from perfpulse.ingest.normalize import Normalized, Normalizer, new_id
from perfpulse.ingest.otlp import OtlpDecoder, OtlpError, parse, partial_success
from perfpulse.keys import Keys, bearer, matches
from perfpulse.model.events import BATCH_DECODER, BEACON_DECODER
from perfpulse.model.rows import RECORD_ENCODER, SpoolRecord
from perfpulse.spool import Spool, SpoolFull
from perfpulse.telemetry import CollectorMetrics

DEFAULT_MAX_BODY = 1 << 20
_OTLP: dict[str, tuple[type[Message], type[Message], str]] = {
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
_encode = RECORD_ENCODER.encode


@dataclass(slots=True)
class _Refused(Exception):
    status: int
    reason: str
    message: str
    field: str | None = None


def _decode_error(exc: msgspec.DecodeError) -> _Refused:
    text = str(exc)
    field = None
    if " - at `" in text:
        field = text.rsplit(" - at `", 1)[1].rstrip("`")
    elif "missing required field `" in text:
        field = "$." + text.split("missing required field `", 1)[1].split("`", 1)[0]
    reason = "bad_json" if not isinstance(exc, msgspec.ValidationError) else "bad_field"
    return _Refused(400, reason, text, field)


class Receiver:
    """Holds what the ingest endpoints share; its methods are Starlette endpoints."""

    def __init__(
        self,
        *,
        keys: Keys,
        allowed_origins: frozenset[str],
        spool: Spool,
        normalizer: Normalizer,
        recent: RecentBatches,
        metrics: CollectorMetrics,
        clock: Callable[[], float],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.keys = keys
        self.allowed_origins = allowed_origins
        self.spool = spool
        self.normalizer = normalizer
        self.recent = recent
        self.metrics = metrics
        self.clock = clock
        self.max_body = max_body
        self.otlp_decoder = OtlpDecoder(normalizer)

    # --- endpoints ----------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return self._refuse("events", _Refused(401, "no_key", "missing ingest key"))
        if not matches(token, self.keys.ingest_key):
            return self._refuse("events", _Refused(403, "bad_key", "wrong ingest key"))

        async def decode(body: bytes) -> tuple[str, int, Normalized]:
            batch = BATCH_DECODER.decode(body)
            if batch.dropped:
                self.metrics.agent_dropped.inc(batch.dropped)
            return "ingest:" + batch.batch_id, len(batch.events), self.normalizer.batch(batch)

        return await self._ingest("events", request, decode)

    async def otlp(self, request: Request) -> Response:
        """``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` (OTLP/HTTP)."""
        signal = request.url.path.rsplit("/", 1)[1]
        endpoint = f"otlp_{signal}"
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return self._refuse(endpoint, _Refused(401, "no_key", "missing ingest key"))
        if not matches(token, self.keys.ingest_key):
            return self._refuse(endpoint, _Refused(403, "bad_key", "wrong ingest key"))
        message, response_type, rejected_field = _OTLP[signal]
        content_type = request.headers.get("content-type", "application/x-protobuf")
        as_json = content_type.split(";")[0].strip().lower() == "application/json"

        async def decode(body: bytes) -> tuple[str, int, Normalized]:
            parsed = parse(body, content_type, message)
            out = getattr(self.otlp_decoder, signal)(parsed)
            return "otlp:" + new_id(), out.accepted + sum(out.dropped.values()), out

        def respond(out: Normalized) -> Response:
            rejected, text = partial_success(out.dropped, signal)
            answer: Any = response_type()
            if rejected:
                setattr(answer.partial_success, rejected_field, rejected)
                answer.partial_success.error_message = text
            if as_json:
                return Response(
                    json_format.MessageToJson(answer, indent=None),
                    200,
                    media_type="application/json",
                )
            return Response(answer.SerializeToString(), 200, media_type="application/x-protobuf")

        return await self._ingest(endpoint, request, decode, respond=respond)

    async def rum(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        cors = self._cors(origin)
        key = request.query_params.get("key")
        if not key:
            return self._refuse("rum", _Refused(401, "no_key", "missing public key"), cors)
        if not matches(key, self.keys.public_key):
            return self._refuse("rum", _Refused(403, "bad_key", "wrong public key"), cors)
        if cors is None:
            return self._refuse(
                "rum", _Refused(403, "bad_origin", f"origin {origin!r} is not allowed")
            )

        async def decode(body: bytes) -> tuple[str, int, Normalized]:
            beacon = BEACON_DECODER.decode(body)
            return "public:" + beacon.id, 1 + len(beacon.vitals), self.normalizer.beacon(beacon)

        return await self._ingest("rum", request, decode, cors)

    async def rum_preflight(self, request: Request) -> Response:
        cors = self._cors(request.headers.get("origin"))
        if cors is None:
            return JSONResponse(
                {"error": "origin is not allowed"}, status_code=403, headers={"Vary": "Origin"}
            )
        return Response(
            status_code=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Content-Encoding",
                "Access-Control-Max-Age": "86400",
            },
        )

    # --- shared path --------------------------------------------------------------

    def _cors(self, origin: str | None) -> dict[str, str] | None:
        allowed = self.allowed_origins
        if "*" in allowed:
            return {"Access-Control-Allow-Origin": origin or "*", "Vary": "Origin"}
        if origin and origin.rstrip("/") in allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return None

    def _refuse(
        self, endpoint: str, refused: _Refused, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        self.metrics.requests_rejected.labels(endpoint, refused.reason).inc()
        body: dict[str, object] = {"error": refused.message}
        if refused.field:
            body["field"] = refused.field
        response = JSONResponse(body, status_code=refused.status, headers=headers)
        if refused.status == 503:
            response.headers["Retry-After"] = "1"
        return response

    async def _ingest(
        self,
        endpoint: str,
        request: Request,
        decode: Callable[[bytes], Awaitable[tuple[str, int, Normalized]]],
        headers: dict[str, str] | None = None,
        respond: Callable[[Normalized], Response] | None = None,
    ) -> Response:
        try:
            body = await read_body(request, self.max_body)
            key, total, out = await decode(body)
        except BodyError as exc:
            return self._refuse(endpoint, _Refused(exc.status, exc.reason, exc.message), headers)
        except msgspec.DecodeError as exc:
            return self._refuse(endpoint, _decode_error(exc), headers)
        except OtlpError as exc:
            return self._refuse(endpoint, _Refused(400, "bad_otlp", str(exc)), headers)
        if not self.recent.add(key):
            self.metrics.duplicate_batches.inc()
            return JSONResponse(
                {"accepted": 0, "dropped": 0, "duplicate": True}, 202, headers=headers
            )
        if out.tables:
            record = SpoolRecord(key=key, received=self.clock(), columns=out.tables)
            try:
                await self.spool.append(_encode(record))
            except SpoolFull as exc:
                self.recent.discard(key)
                reason = "spool_full" if exc.reason == "full" else "disk_full"
                return self._refuse(
                    endpoint, _Refused(503, reason, "collector is full, retry later"), headers
                )
        self.metrics.events_accepted.labels(endpoint).inc(out.accepted)
        for reason, n in out.dropped.items():
            self.metrics.events_rejected.labels(reason).inc(n)
        if respond is not None:
            return respond(out)
        dropped = sum(out.dropped.values())
        return JSONResponse(
            {
                "accepted": out.accepted,
                "dropped": dropped,
                "dropped_by_reason": dict(out.dropped),
                "events": total,
            },
            202,
            headers=headers,
        )
