"""The ingest endpoints: ``POST /api/v1/events`` and ``POST /api/v1/rum``.

Each request is checked in this order, and the first failure answers:

1. the key (401 missing, 403 wrong; for beacons also the ``Origin``),
2. the body size (413, before it is buffered), its encoding (415) and gzip (400/413),
3. the wire format (400 naming the first bad field — nothing of the batch is kept),
4. a duplicate ``batch_id`` (202, stored once),
5. the spool (503 with ``Retry-After`` when it is full or the disk has no room).

Only after the batch is in the spool does the collector answer 202 with the
number of events accepted and dropped (with reasons).

``POST /api/v1/events`` and ``POST /api/v1/rum`` are pure ASGI endpoints, so the
busiest paths run without a framework in between; OTLP and the CORS preflight
are Starlette endpoints. All of them share :meth:`Receiver._keep` (decode, spool,
count), which answers with an :class:`Answer`; ``POST /api/v1/rum`` reads its
body itself, the others through :meth:`Receiver._ingest`. The usual beacon
request skips the Python steps up to the spool: compiled code checks its head
and makes its spool record (see :meth:`Receiver.rum`), then it shares
:meth:`Receiver._seen` (dedupe) and :meth:`Receiver._append` with the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from perfpulse.ingest.body import (
    BodyError,
    Disconnected,
    OtlpError,
    body_encoding,
    first_body,
    read_asgi_body,
    read_body,
    rest_of_body,
)
from perfpulse.ingest.dedupe import RecentBatches
from perfpulse.ingest.normalize import Normalized, Normalizer, new_id
from perfpulse.keys import Keys, bearer, matches
from perfpulse.model.events import BATCH_DECODER
from perfpulse.model.rows import RECORD_ENCODER, SpoolRecord, column_document
from perfpulse.spool import Spool, SpoolFull
from perfpulse.telemetry import CollectorMetrics

if TYPE_CHECKING:
    from perfpulse.ingest.otlp import OtlpDecoder


def _compiled_head() -> (
    Callable[[Scope, dict[bytes, dict[str, str]], bytes, int], dict[str, str] | None] | None
):
    """The usual beacon request's check (:func:`perfpulse.ingest._beacon.head`);
    None when the extension was not built, and every request takes the Python path."""
    try:
        from perfpulse.ingest._beacon import head
    except ImportError:
        return None
    return head


_usual_head = _compiled_head()

DEFAULT_MAX_BODY = 1 << 20
_encode = RECORD_ENCODER.encode
_json = msgspec.json.Encoder().encode  # compact, UTF-8: the bytes Starlette's JSONResponse writes
_WANTED = frozenset(
    {b"authorization", b"origin", b"content-length", b"content-encoding", b"content-type"}
)


@dataclass(slots=True)
class _Refused(Exception):
    status: int
    reason: str
    message: str
    field: str | None = None


@dataclass(slots=True)
class Answer:
    """An HTTP answer: sent as it is by the ASGI endpoints, or as a Starlette Response."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None
    media_type: str = "application/json"

    @classmethod
    def json(cls, content: object, status: int, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, _json(content), headers)

    async def send(self, send: Send) -> None:
        headers = self.headers
        if headers is None or type(headers) is _Encoded:  # the usual answers: made once
            made = _PLAIN if headers is None else headers.answers
            raw = made.get((len(self.body), self.media_type))
            if raw is None:
                raw = self._raw()
                if len(made) < 64:
                    made[len(self.body), self.media_type] = raw
        else:
            raw = self._raw()
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})

    def _raw(self) -> list[tuple[bytes, bytes]]:
        """The answer's headers as ASGI takes them."""
        raw = [
            (b"content-type", self.media_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
        ]
        if self.headers:
            raw += _raw_headers(self.headers)
        return raw

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """``headers`` as ASGI takes them (made once for :class:`_Encoded` headers)."""
    if type(headers) is _Encoded:
        return headers.raw
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _Encoded(dict[str, str]):
    """Headers sent again and again (the CORS headers of an origin), with their
    ASGI form made once, and the whole header list of each kind of answer that
    carries them (by body length and media type). Not to be changed once made."""

    __slots__ = ("answers", "raw")

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(headers)
        self.raw = _raw_headers(headers)
        self.answers: dict[tuple[int, str], list[tuple[bytes, bytes]]] = {}


# (body length, media type) -> the header list of an answer without headers of its own
_PLAIN: dict[tuple[int, str], list[tuple[bytes, bytes]]] = {}


# (accepted, events) -> the body of a 202 that dropped nothing, for small batches
_ACCEPTED: dict[tuple[int, int], bytes] = {}


@dataclass(slots=True)
class _Head:
    """The request headers ingest reads (the first of each), and the query string."""

    headers: dict[str, str]
    query: str = ""

    @classmethod
    def of_scope(cls, scope: Scope) -> _Head:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        return cls(headers, scope["query_string"].decode("latin-1"))

    @classmethod
    def of_request(cls, request: Request) -> _Head:
        headers = request.headers
        return cls({k: v for k in map(bytes.decode, _WANTED) if (v := headers.get(k)) is not None})

    def get(self, name: str) -> str | None:
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        """A query parameter (the last one given, as Starlette reads it)."""
        query = self.query
        if "&" not in query and ";" not in query and "%" not in query and "+" not in query:
            key, eq, value = query.partition("=")  # the usual ``?key=...``: nothing to unquote
            return value if key == name and eq else None
        return dict(parse_qsl(query, keep_blank_values=True)).get(name)


def _decode_error(exc: msgspec.DecodeError) -> _Refused:
    text = str(exc)
    field = None
    if " - at `" in text:
        field = text.rsplit(" - at `", 1)[1].rstrip("`")
    elif "missing required field `" in text:
        field = "$." + text.split("missing required field `", 1)[1].split("`", 1)[0]
    reason = "bad_json" if not isinstance(exc, msgspec.ValidationError) else "bad_field"
    return _Refused(400, reason, text, field)


def _accepted_body(accepted: int, dropped: dict[str, int], total: int) -> bytes:
    return _json(
        {
            "accepted": accepted,
            "dropped": sum(dropped.values()),
            "dropped_by_reason": dropped,
            "events": total,
        }
    )


def _accepted(accepted: int, total: int, headers: dict[str, str] | None) -> Answer:
    """The 202 of a request that dropped nothing (its body made once, for small ones)."""
    if total >= 64:
        return Answer(202, _accepted_body(accepted, {}, total), headers)
    usual = _ACCEPTED.get((accepted, total))
    if usual is None:
        usual = _ACCEPTED[accepted, total] = _accepted_body(accepted, {}, total)
    return Answer(202, usual, headers)


class Receiver:
    """Holds what the ingest endpoints share: ``events`` and ``rum`` are ASGI apps,
    ``otlp`` and ``rum_preflight`` Starlette endpoints."""

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
        self._otlp_decoder: OtlpDecoder | None = None  # made (and protobuf imported) on first use
        self._cors_cache: dict[str | None, dict[str, str]] = {}
        # the cached CORS headers by Origin header as sent, for the compiled check
        self._origins: dict[bytes, dict[str, str]] = {}
        self._public_key = keys.public_key.encode()

    @property
    def otlp_decoder(self) -> OtlpDecoder:
        """The OTLP decoder; protobuf and the OTLP messages load with it, so a
        collector that never receives OTLP does not hold them in memory."""
        if self._otlp_decoder is None:
            from perfpulse.ingest.otlp import OtlpDecoder

            self._otlp_decoder = OtlpDecoder(self.normalizer)
        return self._otlp_decoder

    # --- endpoints ----------------------------------------------------------------

    async def events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/v1/events`` (ASGI)."""
        head = _Head.of_scope(scope)
        token = bearer(head.get("authorization"))
        if token is None:
            answer = self._refuse("events", _Refused(401, "no_key", "missing ingest key"))
        elif not matches(token, self.keys.ingest_key):
            answer = self._refuse("events", _Refused(403, "bad_key", "wrong ingest key"))
        else:

            def decode(body: bytes) -> tuple[str, int, Normalized]:
                batch = BATCH_DECODER.decode(body)
                if batch.dropped:
                    self.metrics.agent_dropped.inc(batch.dropped)
                return "ingest:" + batch.batch_id, len(batch.events), self.normalizer.batch(batch)

            try:
                answer = await self._ingest("events", self._asgi_body(head, receive), decode)
            except Disconnected:
                return
        await answer.send(send)

    async def otlp(self, request: Request) -> Response:
        """``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` (OTLP/HTTP)."""
        signal = request.url.path.rsplit("/", 1)[1]
        endpoint = f"otlp_{signal}"
        head = _Head.of_request(request)
        token = bearer(head.get("authorization"))
        if token is None:
            return self._refuse(endpoint, _Refused(401, "no_key", "missing ingest key")).response()
        if not matches(token, self.keys.ingest_key):
            return self._refuse(endpoint, _Refused(403, "bad_key", "wrong ingest key")).response()
        decoder = self.otlp_decoder
        content_type = head.get("content-type") or "application/x-protobuf"

        def decode(body: bytes) -> tuple[str, int, Normalized]:
            out = decoder.decode(signal, body, content_type)
            return "otlp:" + new_id(), out.accepted + sum(out.dropped.values()), out

        def respond(out: Normalized) -> Answer:
            body, media_type = decoder.answer(signal, out.dropped, content_type)
            return Answer(200, body, media_type=media_type)

        body = read_body(
            head.get("content-length"),
            head.get("content-encoding"),
            request.stream(),
            self.max_body,
        )
        answer = await self._ingest(endpoint, body, decode, respond=respond)
        return answer.response()

    async def rum(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/v1/rum`` (ASGI): one beacon, keyed by the public key.

        The usual request (the right key as the only query parameter, an origin
        already answered, a plain body in one message, the usual beacon) is
        checked, decoded and made a spool record by compiled code
        (:func:`perfpulse.ingest._beacon.head` and
        :meth:`~perfpulse.ingest.normalize.Normalizer.beacon_record`); whatever
        they do not take, they leave to the Python path, which answers it."""
        message = None
        if _usual_head is not None:
            cors = _usual_head(scope, self._origins, self._public_key, self.max_body)
            if cors is not None:
                message = await receive()
                done = self.normalizer.beacon_record(message, self.clock(), self.max_body)
                if done is not None:
                    key, record, events = done
                    answer = self._seen(key, cors) or await self._append("rum", key, record, cors)
                    if answer is None:  # in the spool
                        self.metrics.events_accepted.inc("rum", events)
                        answer = _accepted(events, events, cors)
                    await answer.send(send)
                    return
        await self._rum(scope, receive, send, message)

    async def _rum(
        self, scope: Scope, receive: Receive, send: Send, message: Message | None
    ) -> None:
        """``POST /api/v1/rum`` the Python way; ``message`` is the request's first,
        when it was read already."""
        head = _Head.of_scope(scope)
        origin = head.get("origin")
        cors = self._cors(origin)
        key = head.param("key")
        if not key:
            answer = self._refuse("rum", _Refused(401, "no_key", "missing public key"), cors)
        elif not matches(key, self.keys.public_key):
            answer = self._refuse("rum", _Refused(403, "bad_key", "wrong public key"), cors)
        elif cors is None:
            answer = self._refuse(
                "rum", _Refused(403, "bad_origin", f"origin {origin!r} is not allowed")
            )
        else:
            # the body read here rather than by read_asgi_body: a coroutine less
            limit = self.max_body
            try:
                encoding = body_encoding(
                    head.get("content-length"), head.get("content-encoding"), limit
                )
                if message is None:
                    message = await receive()
                body = first_body(message, encoding, limit)
                if body is None:
                    body = await rest_of_body(message, receive, encoding, limit)
            except BodyError as exc:
                answer = self._refuse("rum", _Refused(exc.status, exc.reason, exc.message), cors)
            except Disconnected:
                return
            else:
                answer = await self._keep("rum", body, self._decode_beacon, cors)
        await answer.send(send)

    def _decode_beacon(self, body: bytes) -> tuple[str, int, Normalized]:
        view_id, total, out = self.normalizer.beacon_body(body)
        return "public:" + view_id, total, out

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
        """The CORS headers of an answer to ``origin``, or None if it is not allowed.
        Those of the first 256 origins seen are made and encoded once, and shared
        (callers copy before adding to them)."""
        cached = self._cors_cache.get(origin)
        if cached is not None:
            return cached
        allowed = self.allowed_origins
        if "*" in allowed:
            headers = {"Access-Control-Allow-Origin": origin or "*", "Vary": "Origin"}
        elif origin and origin.rstrip("/") in allowed:
            headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        else:
            return None
        if len(self._cors_cache) < 256:
            headers = self._cors_cache[origin] = _Encoded(headers)
            if origin is not None:
                self._origins[origin.encode("latin-1")] = headers
        return headers

    def _refuse(
        self, endpoint: str, refused: _Refused, headers: dict[str, str] | None = None
    ) -> Answer:
        self.metrics.requests_rejected.labels(endpoint, refused.reason).inc()
        body: dict[str, object] = {"error": refused.message}
        if refused.field:
            body["field"] = refused.field
        if refused.status == 503:
            headers = {**(headers or {}), "Retry-After": "1"}
        return Answer.json(body, refused.status, headers)

    def _asgi_body(self, head: _Head, receive: Receive) -> Coroutine[Any, Any, bytes]:
        return read_asgi_body(
            head.get("content-length"), head.get("content-encoding"), receive, self.max_body
        )

    async def _ingest(
        self,
        endpoint: str,
        body: Coroutine[Any, Any, bytes],
        decode: Callable[[bytes], tuple[str, int, Normalized]],
        headers: dict[str, str] | None = None,
        respond: Callable[[Normalized], Answer] | None = None,
    ) -> Answer:
        """Read ``body`` (a coroutine of :mod:`perfpulse.ingest.body`), then :meth:`_keep` it."""
        try:
            data = await body
        except BodyError as exc:
            return self._refuse(endpoint, _Refused(exc.status, exc.reason, exc.message), headers)
        return await self._keep(endpoint, data, decode, headers, respond)

    async def _keep(
        self,
        endpoint: str,
        body: bytes,
        decode: Callable[[bytes], tuple[str, int, Normalized]],
        headers: dict[str, str] | None = None,
        respond: Callable[[Normalized], Answer] | None = None,
    ) -> Answer:
        """Decode ``body``, spool what it holds, and answer."""
        try:
            key, total, out = decode(body)
        except BodyError as exc:
            return self._refuse(endpoint, _Refused(exc.status, exc.reason, exc.message), headers)
        except msgspec.DecodeError as exc:
            return self._refuse(endpoint, _decode_error(exc), headers)
        except UnicodeDecodeError:  # msgspec's error for bytes in a string that are not UTF-8
            message = "JSON is malformed: a string is not valid UTF-8"
            return self._refuse(endpoint, _Refused(400, "bad_json", message), headers)
        except OtlpError as exc:
            return self._refuse(endpoint, _Refused(400, "bad_otlp", str(exc)), headers)
        seen = self._seen(key, headers)
        if seen is not None:
            return seen  # a retry: nothing of it encoded
        if not out.empty:
            columns = (
                {t: column_document(t, c) for t, c in out.columns.items()} if out.columns else {}
            )
            record = _encode(SpoolRecord(key, self.clock(), out.rows, {}, out.beacons, columns))
            refused = await self._append(endpoint, key, record, headers)
            if refused is not None:
                return refused
        self.metrics.events_accepted.inc(endpoint, out.accepted)
        for reason, n in out.dropped.items():
            self.metrics.events_rejected.labels(reason).inc(n)
        if respond is not None:
            return respond(out)
        if not out.dropped:
            return _accepted(out.accepted, total, headers)
        return Answer(202, _accepted_body(out.accepted, dict(out.dropped), total), headers)

    def _seen(self, key: str, headers: dict[str, str] | None) -> Answer | None:
        """A duplicate's 202 when ``key`` was seen; else None, and ``key`` is
        remembered (until :meth:`_append` fails to keep its record)."""
        if self.recent.add(key):
            return None
        self.metrics.duplicate_batches.inc()
        return Answer.json({"accepted": 0, "dropped": 0, "duplicate": True}, 202, headers)

    async def _append(
        self, endpoint: str, key: str, record: bytes, headers: dict[str, str] | None
    ) -> Answer | None:
        """Append ``record``, keyed ``key``: None once it is in the spool, else the 503
        (and ``key`` forgotten, so that the retry is taken)."""
        try:
            await self.spool.append(record)
        except SpoolFull as exc:
            self.recent.discard(key)
            reason = "spool_full" if exc.reason == "full" else "disk_full"
            return self._refuse(
                endpoint, _Refused(503, reason, "collector is full, retry later"), headers
            )
        return None
