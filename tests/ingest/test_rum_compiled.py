"""``POST /api/v1/rum``'s compiled path (``_beacon.head`` and ``_beacon.record``)
against the receiver's Python path.

Every request below goes through two receivers, each with its own spool on disk:
one as the collector runs it, one with the compiled path switched off. Both must
answer alike (status, headers, body) and leave the same records in their spools,
byte for byte. And the usual request must take the compiled path: the Python
path's decoder is never called for it."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from perfpulse.ingest import _beacon, receiver  # built by make test (setup.py)
from perfpulse.ingest.dedupe import RecentBatches
from perfpulse.ingest.normalize import Normalizer
from perfpulse.ingest.receiver import Receiver
from perfpulse.ingest.routes import RouteFolder
from perfpulse.keys import Keys
from perfpulse.model.events import BEACON_DECODER
from perfpulse.model.rows import RECORD_DECODER, RECORD_ENCODER, SpoolRecord
from perfpulse.spool import FileSpool
from perfpulse.telemetry import CollectorMetrics

PUBLIC = "pk-0123456789abcdef"
ORIGIN = "https://shop.example"
NOW = 1_790_000_000.25
LIMIT = 4096
RETENTION = 14 * 86400.0


def test_the_receiver_uses_the_compiled_check() -> None:
    assert receiver._usual_head is _beacon.head


def _beacon_body(view: str = "view-1", **extra: Any) -> bytes:
    beacon = {
        "id": view,
        "ts": NOW - 5,
        "url": "https://shop.example/orders/12345?token=abc",
        "device": "mobile",
        "vitals": [
            {
                "name": "LCP",
                "value": 2100.5,
                "attribution": {"url": "https://cdn.example/a.jpg?s=1"},
            },
            {"name": "CLS", "value": 0.02},
        ],
        "nav": {"type": "navigate", "dns_ms": 3, "load_ms": 900.25},
        **extra,
    }
    return json.dumps(beacon, separators=(",", ":")).encode()


class _Run:
    """A receiver with its spool, and what each request got."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30) -> None:
        self.spool = FileSpool(directory, fsync="never", max_bytes=max_bytes)
        self.metrics = CollectorMetrics()
        self.normalizer = Normalizer(
            folder=RouteFolder(cap=1000), raw_retention_s=RETENTION, clock=lambda: NOW
        )
        self.receiver = Receiver(
            keys=Keys(ingest_key="ik-1", public_key=PUBLIC, read_token="rt-1"),
            allowed_origins=frozenset({ORIGIN, "https://other.example"}),
            spool=self.spool,
            normalizer=self.normalizer,
            recent=RecentBatches(),
            metrics=self.metrics,
            clock=lambda: NOW,
            max_body=LIMIT,
        )
        self.python_decodes = 0
        decode = self.normalizer.beacon_body

        def counted(body: bytes) -> Any:
            self.python_decodes += 1
            return decode(body)

        self.normalizer.beacon_body = counted  # type: ignore[method-assign]

    def post(
        self,
        body: bytes | list[bytes] | None,
        query: bytes = b"key=" + PUBLIC.encode(),
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """One request; the answer, or None when there was none (a disconnect)."""
        if headers is None:
            length = len(body) if isinstance(body, bytes) else None
            headers = [(b"origin", ORIGIN.encode()), (b"content-type", b"text/plain")]
            if length is not None:
                headers.append((b"content-length", str(length).encode()))
        if body is None:
            messages: list[dict[str, Any]] = [{"type": "http.disconnect"}]
        elif isinstance(body, bytes):
            messages = [{"type": "http.request", "body": body, "more_body": False}]
        else:
            messages = [
                {"type": "http.request", "body": part, "more_body": i < len(body) - 1}
                for i, part in enumerate(body)
            ]
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/rum",
            "query_string": query,
            "headers": headers,
        }
        pending = iter(messages)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(pending, {"type": "http.disconnect"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.receiver.rum(scope, receive, send))
        if not sent:
            return None
        return sent[0]["status"], sent[0]["headers"], sent[1]["body"]

    def records(self) -> list[bytes]:
        return [payload for _, payload in self.spool.read(0)]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[_Run, _Run]:
    return _Run(tmp_path / "fast"), _Run(tmp_path / "slow")


def _both(
    runs: tuple[_Run, _Run], monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any
) -> Any:
    """The request through both receivers; their answers must be the same."""
    fast, slow = runs
    got = fast.post(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(receiver, "_usual_head", None)
        want = slow.post(*args, **kwargs)
    assert got == want
    assert fast.records() == slow.records()
    return got


def test_the_usual_beacon_takes_the_compiled_path_to_the_same_record(
    runs: tuple[_Run, _Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = runs
    first = _both(runs, monkeypatch, _beacon_body("view-1"))
    assert fast.python_decodes == 1  # an origin not yet answered: the Python path
    second = _both(runs, monkeypatch, _beacon_body("view-2"))
    assert fast.python_decodes == 1 and slow.python_decodes == 2
    assert first[0] == second[0] == 202
    assert json.loads(second[2]) == {
        "accepted": 3,
        "dropped": 0,
        "dropped_by_reason": {},
        "events": 3,
    }
    headers = dict(second[1])
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()
    assert headers[b"vary"] == b"Origin"
    record = RECORD_DECODER.decode(fast.records()[1])
    assert record.key == "public:view-2" and record.received == NOW
    document = json.loads(record.beacons[0])
    assert document["page"] == "/orders/{id}"
    assert document["beacon"]["url"] == "https://shop.example/orders/12345?token="
    assert fast.metrics.events_accepted.counts == {"rum": 6}
    # a retried beacon is stored once, whichever path saw it first
    again = _both(runs, monkeypatch, _beacon_body("view-2"))
    assert again[0] == 202 and json.loads(again[2])["duplicate"] is True
    assert len(fast.records()) == 2


_KEY = b"key=" + PUBLIC.encode()
_WRONG = b"key=" + PUBLIC[:-1].encode() + b"X"

# name -> (body, query, headers); None headers: the usual ones
UNUSUAL: dict[str, tuple[Any, bytes, list[tuple[bytes, bytes]] | None]] = {
    "no key": (_beacon_body(), b"", None),
    "empty key": (_beacon_body(), b"key=", None),
    "wrong key": (_beacon_body(), _WRONG, None),
    "shorter key": (_beacon_body(), _KEY[:-1], None),
    "longer key": (_beacon_body(), _KEY + b"0", None),
    "other parameter first": (_beacon_body(), b"x=1&" + _KEY, None),
    "other parameter after": (_beacon_body(), _KEY + b"&x=1", None),
    "parameter given twice": (_beacon_body(), _WRONG + b"&" + _KEY, None),
    "escaped key": (_beacon_body(), _KEY[:-1] + b"%" + (b"%02X" % _KEY[-1]), None),
    "plus in key": (_beacon_body(), _KEY + b"+", None),
    "non-ASCII key": (_beacon_body(), _KEY[:-1] + b"\xe9", None),
    "no origin": (_beacon_body(), _KEY, [(b"content-type", b"text/plain")]),
    "disallowed origin": (_beacon_body(), _KEY, [(b"origin", b"https://evil.example")]),
    "allowed origin second": (
        _beacon_body(),
        _KEY,
        [(b"origin", b"https://evil.example"), (b"origin", ORIGIN.encode())],
    ),
    "gzip": (
        gzip.compress(_beacon_body("view-gz")),
        _KEY,
        [(b"origin", ORIGIN.encode()), (b"content-encoding", b"gzip")],
    ),
    "identity": (
        _beacon_body("view-id"),
        _KEY,
        [(b"origin", ORIGIN.encode()), (b"content-encoding", b"identity")],
    ),
    "brotli": (_beacon_body(), _KEY, [(b"origin", ORIGIN.encode()), (b"content-encoding", b"br")]),
    "length over the limit": (
        _beacon_body(),
        _KEY,
        [(b"origin", ORIGIN.encode()), (b"content-length", str(LIMIT + 1).encode())],
    ),
    "length not a number": (
        _beacon_body(),
        _KEY,
        [(b"origin", ORIGIN.encode()), (b"content-length", b"12x")],
    ),
    "length with spaces": (
        _beacon_body("view-sp"),
        _KEY,
        [(b"origin", ORIGIN.encode()), (b"content-length", b" 400 ")],
    ),
    "no length, body over the limit": (
        _beacon_body(release="r" * LIMIT),
        _KEY,
        [(b"origin", ORIGIN.encode())],
    ),
    "body in two messages": (
        [_beacon_body("view-2m")[:50], _beacon_body("view-2m")[50:]],
        _KEY,
        None,
    ),
    "disconnected": (None, _KEY, None),
    "not JSON": (b"{nope", _KEY, None),
    "a field mistyped": (_beacon_body(device=7), _KEY, None),
    "a vital dropped": (
        _beacon_body("view-drop", vitals=[{"name": "CLS", "value": 1000.0}]),
        _KEY,
        None,
    ),
    "too old": (_beacon_body("view-old", ts=NOW - RETENTION - 60), _KEY, None),
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_every_other_request_is_answered_as_the_python_path_answers_it(
    runs: tuple[_Run, _Run], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fast, _ = runs
    _both(runs, monkeypatch, _beacon_body("warm-up"))  # the origin answered once
    decodes = fast.python_decodes
    body, query, headers = UNUSUAL[name]
    got = _both(runs, monkeypatch, body, query, headers)
    if name == "disconnected":
        assert got is None
    else:
        assert got is not None and got[0] in (202, 400, 401, 403, 413, 415)
    if got is not None and got[0] == 202:  # the Python path decoded it
        assert fast.python_decodes == decodes + 1


def test_a_full_spool_answers_503_and_forgets_the_beacon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = (_Run(tmp_path / "fast", max_bytes=1), _Run(tmp_path / "slow", max_bytes=1))
    for view in ("view-1", "view-2"):
        status, headers, _ = _both(full, monkeypatch, _beacon_body(view))
        assert status == 503 and (b"retry-after", b"1") in headers
    assert full[0].python_decodes == 1  # the second took the compiled path
    assert full[0].metrics.requests_rejected.labels("rum", "spool_full")._value.get() == 2


def test_head_takes_only_the_usual_request() -> None:
    origins = {ORIGIN.encode(): {"Vary": "Origin"}}
    key = PUBLIC.encode()

    def head(headers: Any, query: bytes = _KEY, limit: int = LIMIT) -> Any:
        return _beacon.head({"headers": headers, "query_string": query}, origins, key, limit)

    usual = [(b"origin", ORIGIN.encode()), (b"content-length", b"100")]
    assert head(usual) is origins[ORIGIN.encode()]
    assert head(usual[:1]) is origins[ORIGIN.encode()]  # chunked: no length
    assert head(usual, limit=99) is None
    assert head([[b"origin", ORIGIN.encode()]]) is None  # not a tuple
    assert head([(b"origin", ORIGIN)]) is None  # not bytes
    assert head((b"origin", ORIGIN.encode())) is None  # not a list of headers
    assert head([(b"ORIGIN", ORIGIN.encode())]) is None  # the receiver reads lower case
    assert head([*usual, (b"origin", b"https://evil.example")]) is origins[ORIGIN.encode()]
    with pytest.raises(TypeError):
        _beacon.head({}, origins, PUBLIC, LIMIT)


def test_record_is_the_python_paths_spool_record() -> None:
    """The record is msgspec's MessagePack of the compiled document, byte for byte;
    the document holds the Python path's values (its numbers keep the text they
    came in: ``0.020`` stays so, where msgspec would write ``0.02``)."""
    norm = Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=RETENTION, clock=lambda: NOW)
    slow = Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=RETENTION, clock=lambda: NOW)
    nav = {"type": "navigate", "dns_ms": -0, "connect_ms": 0.020, "load_ms": 2e2}
    for view in ("v", "v" * 24, "v" * 25, "v" * 128):  # the key's three MessagePack forms
        body = _beacon_body(view, release="x" * 200, nav=nav)
        message = {"type": "http.request", "body": body, "more_body": False}
        key, record, events = norm.beacon_record(message, NOW + 0.5, LIMIT)  # type: ignore[misc]
        view_id, total, out = norm.beacon_body(body)
        want = SpoolRecord("public:" + view_id, NOW + 0.5, {}, {}, out.beacons, {})
        assert (key, events) == ("public:" + view, total)
        assert record == RECORD_ENCODER.encode(want)
        stored = json.loads(RECORD_DECODER.decode(record).beacons[0])
        python = json.loads(slow.beacon(BEACON_DECODER.decode(body)).beacons[0])
        assert stored == python
        dns = stored["beacon"]["nav"]["dns_ms"]
        assert dns == 0.0 and math.copysign(1.0, dns) == 1.0  # the integer -0 is 0.0, not -0.0
    body = _beacon_body()
    for message in (
        {"type": "http.request", "body": body, "more_body": True},
        {"type": "http.disconnect"},
        {"type": "http.request", "body": bytearray(body)},
        {"type": "http.request", "body": body + b" " * LIMIT},
        {"type": "http.request"},
    ):
        assert norm.beacon_record(message, NOW, LIMIT) is None
    with pytest.raises(TypeError):
        norm.beacon_record([], NOW, LIMIT)  # type: ignore[arg-type]
    assert msgspec.msgpack.decode(record)[0] == "public:" + "v" * 128


def test_record_holds_the_body_while_it_calls_back() -> None:
    """The callables the compiled path calls (the page's, here) may drop the
    message's reference to the body: the record is still made of it. Bodies of
    the same size made right after take the memory a freed body would leave, so
    a record read from freed memory would differ."""
    norm = Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=RETENTION, clock=lambda: NOW)
    body = _beacon_body("view-held")
    want = norm.beacon_record({"type": "http.request", "body": body}, NOW, LIMIT)
    assert want is not None
    message: dict[str, Any] = {"type": "http.request", "body": bytes(bytearray(body))}
    fillers: list[bytes] = []

    def page(service: str, url: str) -> str:
        size = len(message["body"])
        message["body"] = b""
        fillers.extend(b"#" * size for _ in range(64))
        return norm.folder.fold(service, "/orders/{id}")

    norm.page = page  # type: ignore[method-assign]
    assert norm.beacon_record(message, NOW, LIMIT) == want
