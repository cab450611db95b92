"""The compiled beacon path (perfpulse.ingest._beacon) against the Python path.

Whatever the compiled path takes, it must turn into what the Python path makes
of it (BEACON_DECODER, then Normalizer.beacon): the same document, value for
value, and the same count of accepted events. Whatever the Python path refuses
or drops any of, the compiled path must leave to it (answer None)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import msgspec
import pytest

from perfpulse.demo import Workload
from perfpulse.ingest import _beacon, normalize  # built by make test (setup.py)
from perfpulse.ingest.normalize import Normalized, Normalizer
from perfpulse.ingest.routes import RouteFolder
from perfpulse.model import events
from perfpulse.model.events import BEACON_DECODER

RETENTION = 14 * 86400.0


def test_the_extension_is_built() -> None:
    """``make test`` builds it (setup.py): without it every beacon takes the slow path."""
    assert normalize._fast is _beacon.normalize


def _normalizers() -> tuple[Normalizer, Normalizer]:
    return (
        Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=RETENTION),
        Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=RETENTION),
    )


def _python(norm: Normalizer, body: bytes) -> Normalized | Exception:
    try:
        return norm.beacon(BEACON_DECODER.decode(body))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # both answer 400
        return exc


def _compiled(norm: Normalizer, body: bytes) -> tuple[str, int, bytes] | None:
    lo, hi = norm._window()
    return _beacon.normalize(body, lo, hi, norm.page)


def _agree(body: bytes, fast: Normalizer, slow: Normalizer) -> bool:
    """Check the two paths on ``body``; True when the compiled one took it."""
    done = _compiled(fast, body)
    want = _python(slow, body)
    if done is None:
        return False
    assert isinstance(want, Normalized), (body, want)
    assert not want.dropped, body
    view_id, vitals, document = done
    assert view_id == BEACON_DECODER.decode(body).id
    assert 1 + vitals == want.accepted
    assert json.loads(document) == json.loads(want.beacons[0]), body
    return True


def _full(ts: float) -> dict[str, Any]:
    """A beacon with every field the wire format has, URLs with secrets in them."""
    return {
        "id": "view-1",
        "ts": ts,
        "url": "https://alice:pw@shop.example/orders/12345?token=abc&x=1#frag",
        "v": 2,
        "soft": True,
        "service": "storefront",
        "environment": "staging",
        "release": "2026.11.28",
        "device": "mobile",
        "browser": "firefox",
        "connection": "4g",
        "sample_rate": 0.25,
        "vitals": [
            {
                "name": "LCP",
                "value": 2500,
                "attribution": {"url": "https://cdn.example/a.jpg?sig=1"},
            },
            {"name": "INP", "value": 200.5, "attribution": None, "navigation_type": "navigate"},
            {"name": "CLS", "value": 0.1},
            {"name": "FCP", "value": 3000.0000000000005, "attribution": {}},
            {"name": "TTFB", "value": 0, "attribution": {"a": [1, 2.5, {"b": None}], "c": True}},
            {"name": "FID", "value": 1e2},
        ],
        "nav": {
            "type": "reload",
            "dns_ms": 0,
            "connect_ms": 1.5,
            "tls_ms": None,
            "request_ms": 600000,
            "response_ms": 3.25e1,
            "dom_interactive_ms": 100,
            "dom_complete_ms": 200,
            "load_ms": 300,
            "transfer_bytes": 12345,
        },
        "resources": [
            {"type": "script", "count": 3, "duration_ms": 600000.5},  # left out
            {"type": "font", "count": 0},
            {
                "type": "image",
                "count": 2,
                "transfer_bytes": 1,
                "encoded_bytes": 2,
                "decoded_bytes": 3,
                "duration_ms": 4,
                "cache_hits": 1,
                "render_blocking": 0,
                "third_party": 1,
            },
        ],
        "largest_resources": [
            {"url": "https://u:p@cdn.example/big.js?v=1#x", "type": "script", "duration_ms": 20},
            {"url": "/rel/img.png?w=100", "type": "image", "duration_ms": -1},  # left out
            {
                "url": "data:image/png;base64,AAAA",
                "type": "other",
                "cached": True,
                "render_blocking": False,
                "third_party": True,
            },
        ],
        "long_tasks": {
            "count": 3,
            "total_ms": 250,
            "tbt_ms": 100.5,
            "max_ms": 120,
            "loaf_count": 1,
            "loaf_total_ms": 130.25,
            "worst_script": "https://cdn.example/app.js?session=s3cret",
            "worst_script_ms": 90,
        },
        "memory": {"used_bytes": 1e7, "total_bytes": 2e7, "limit_bytes": None, "source": "x"},
        "unknown_field": {"nested": [1, {"deep": "yes"}], "n": -0.5e-3},
    }


def _dumps(value: object, **kwargs: Any) -> bytes:
    return json.dumps(value, **kwargs).encode()


def test_the_demo_beacons_take_the_compiled_path_and_agree() -> None:
    fast, slow = _normalizers()
    work = Workload(seed=3)
    bodies = [_dumps(work.beacon("https://s.example")) for _ in range(300)]
    assert all(_agree(b, fast, slow) for b in bodies)
    # a browser's compact JSON comes out byte for byte as msgspec writes it
    compact = msgspec.json.encode(work.beacon("https://s.example"))
    done = _compiled(fast, compact)
    assert done is not None
    assert done[2] == _python(slow, compact).beacons[0]  # type: ignore[union-attr]


def test_every_field_whitespace_order_and_unknown_keys() -> None:
    fast, slow = _normalizers()
    beacon = _full(time.time())
    assert _agree(_dumps(beacon), fast, slow)
    assert _agree(_dumps(beacon, indent=2), fast, slow)
    assert _agree(_dumps(dict(reversed(beacon.items()))), fast, slow)
    minimal = {"id": "m", "ts": time.time(), "url": "/"}
    assert _agree(_dumps(minimal), fast, slow)
    document = json.loads(_compiled(fast, _dumps(beacon))[2])  # type: ignore[index]
    assert document["beacon"]["url"] == "https://shop.example/orders/12345?token=&x="
    assert document["page"] == "/orders/{id}"
    assert [r["type"] for r in document["beacon"]["resources"]] == ["font", "image"]
    largest = document["beacon"]["largest_resources"]
    assert [r["url"] for r in largest] == ["https://cdn.example/big.js?v=", "data:"]
    assert document["beacon"]["long_tasks"]["worst_script"] == "https://cdn.example/app.js?session="
    assert [(v["name"], v["rating"]) for v in document["vitals"]] == [
        ("LCP", 0),
        ("INP", 1),
        ("CLS", 0),
        ("FCP", 2),
        ("TTFB", 0),
        ("FID", 0),
    ]


@pytest.mark.parametrize(
    ("value", "rating"),
    [
        ("2500", 0),
        ("2500.0000000000001", 0),  # the same double as 2500
        ("2499.99999999999999", 0),  # 18 digits: read approximately, then exactly
        ("2500.0000000000005", 1),
        ("4000", 1),
        ("4000.00000000000001", 1),
        ("4000.0000000000009", 2),
        ("0.0", 0),
    ],
)
def test_ratings_at_the_thresholds_are_exact(value: str, rating: int) -> None:
    fast, slow = _normalizers()
    body = b'{"id":"r","ts":%r,"url":"/","vitals":[{"name":"LCP","value":%s}]}' % (
        time.time(),
        value.encode(),
    )
    assert _agree(body, fast, slow)
    assert json.loads(_compiled(fast, body)[2])["vitals"][0]["rating"] == rating  # type: ignore[index]


def _with(**changes: Any) -> bytes:
    beacon = _full(time.time())
    beacon.update(changes)
    return _dumps(beacon)


LEFT_TO_PYTHON = {
    "not an object": b"[1]",
    "bad json": b'{"id":"a","ts":1,',
    "trailing text": _dumps({"id": "a", "ts": time.time(), "url": "/"}) + b"x",
    "a key twice": b'{"id":"a","id":"b","ts":%r,"url":"/"}' % time.time(),
    "an escape": _with(url="/a\\u0062"),
    "an escaped key": b'{"i\\u0064":"a","ts":%r,"url":"/"}' % time.time(),
    "non-ASCII": _with(browser="fire\u00f8x"),
    "a control character": b'{"id":"a\tb","ts":%r,"url":"/"}' % time.time(),
    "id missing": b'{"ts":%r,"url":"/"}' % time.time(),
    "id empty": _with(id=""),
    "id too long": _with(id="x" * 129),
    "device not known": _with(device="watch"),
    "ts a string": _with(ts="now"),
    "ts too old": _with(ts=time.time() - RETENTION - 60),
    "ts ahead": _with(ts=time.time() + 2 * 86400),
    "a count below zero": _with(resources=[{"type": "font", "count": -1}]),
    "a count with a fraction": _with(resources=[{"type": "font", "count": 1.0}]),
    "minus zero count": _with(resources=[{"type": "font", "count": -0}]).replace(
        b'"count": 0', b'"count": -0'
    ),
    "sample rate zero": _with(sample_rate=0),
    "sample rate above one": _with(sample_rate=1.5),
    "memory below zero": _with(memory={"used_bytes": -1}),
    "a vital out of range": _with(vitals=[{"name": "LCP", "value": 600001}]),
    "CLS over 100": _with(vitals=[{"name": "CLS", "value": 100.5}]),
    "a vital below zero": _with(vitals=[{"name": "INP", "value": -3}]),
    "an attribution not an object": _with(vitals=[{"name": "LCP", "value": 1, "attribution": 5}]),
    "a nav phase out of range": _with(nav={"dns_ms": -1}),
    "20 digits": _with(vitals=[{"name": "LCP", "value": 1}]).replace(
        b'"value": 1}', b'"value": 12345678901234567890}'
    ),
    "a large exponent": _with(vitals=[{"name": "LCP", "value": 1}]).replace(
        b'"value": 1}', b'"value": 1e400}'
    ),
    "33 vitals": _with(vitals=[{"name": "FCP", "value": 1}] * 33),
    "a nested value too deep": _with(unknown_field=json.loads("[" * 40 + "]" * 40)),
    "null vitals": _with(vitals=None),
    "a bool as a number": _with(v=True),
}


@pytest.mark.parametrize("name", list(LEFT_TO_PYTHON))
def test_the_unusual_beacon_is_left_to_python(name: str) -> None:
    fast, slow = _normalizers()
    body = LEFT_TO_PYTHON[name]
    assert _compiled(fast, body) is None
    want = _python(slow, body)
    # and beacon_body gives what the Python path gives
    try:
        view_id, total, out = fast.beacon_body(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        assert type(want) is type(exc) and str(exc) == str(want)
    else:
        assert isinstance(want, Normalized)
        assert view_id == BEACON_DECODER.decode(body).id
        assert total == want.accepted + sum(want.dropped.values())
        assert (out.accepted, out.dropped) == (want.accepted, want.dropped)
        assert [json.loads(d) for d in out.beacons] == [json.loads(d) for d in want.beacons]


def test_the_page_is_folded_at_the_cap_like_the_python_path() -> None:
    fast = Normalizer(folder=RouteFolder(cap=2), raw_retention_s=RETENTION)
    slow = Normalizer(folder=RouteFolder(cap=2), raw_retention_s=RETENTION)
    pages = []
    for path in ("/a", "/b", "/c", "/a", "/d"):
        body = _dumps({"id": path, "ts": time.time(), "url": f"https://s.example{path}"})
        done, want = _compiled(fast, body), _python(slow, body)
        assert done is not None and isinstance(want, Normalized)
        assert json.loads(done[2]) == json.loads(want.beacons[0])
        pages.append(json.loads(done[2])["page"])
    assert pages == ["/a", "/b", "other", "/a", "other"]
    assert fast.folder.folded("web") == slow.folder.folded("web") == 2


def _mutations(body: bytes, rng: random.Random) -> bytes:
    """``body`` changed the way a broken or hostile client would change it."""
    text = bytearray(body)
    kind = rng.randrange(9)
    at = rng.randrange(len(text))
    if kind == 0:  # a byte changed
        text[at] = rng.choice(b'{}[]",:0123456789-+.eE \\tnufal\x00\xff')
    elif kind == 1:  # a byte removed
        del text[at]
    elif kind == 2:  # cut short
        del text[at:]
    elif kind == 3:  # a byte doubled
        text[at:at] = text[at : at + 1]
    elif kind == 4:  # a digit string made long, negative or exponential
        digits = rng.choice([b"9" * 19, b"-0", b"-5", b"1e-300", b"1E+3", b"0.000", b"00"])
        text[at:at] = digits
    elif kind == 5:  # a value replaced by another type
        for old, new in ((b"true", b"1"), (b"null", b"{}"), (b'"mobile"', b"0"), (b"[]", b"null")):
            if old in text and rng.random() < 0.5:
                text = text.replace(old, new, 1)
    elif kind == 6:  # a vital's value set near a bound
        value = rng.choice([b"-0.0", b"600000", b"600000.00000000001", b"100.00000000000001", b"0"])
        text = bytearray(body.replace(b'"value":', b'"value":' + value + b',"x":', 1))
    elif kind == 7:  # whitespace
        text[at:at] = rng.choice([b" ", b"\n", b"\r\t", b"\x0b"])
    else:  # a key renamed
        text = text.replace(
            b'"' + rng.choice([b"id", b"ts", b"url", b"type", b"count"]) + b'"', b'"k"', 1
        )
    return bytes(text)


def test_mutated_beacons_agree_or_are_left_to_python() -> None:
    fast, slow = _normalizers()
    work = Workload(seed=11)
    rng = random.Random(5)
    bases = [msgspec.json.encode(work.beacon("https://s.example")) for _ in range(20)]
    bases.append(msgspec.json.encode(_full(time.time())))
    taken = left = 0
    for i in range(4000):
        body = _mutations(bases[i % len(bases)], rng)
        if _agree(body, fast, slow):
            taken += 1
        else:
            left += 1
            want = _python(slow, body)
            # what the compiled path leaves, Python refuses, drops part of, or takes
            assert isinstance(want, (Normalized, msgspec.DecodeError, UnicodeDecodeError))
    # both kinds are exercised in earnest
    assert taken > 800 and left > 800, (taken, left)


def test_the_schema_is_the_wire_formats() -> None:
    """The compiled schema matches perfpulse.model.events: names and order,
    types, what may be null or missing, constraints and defaults."""
    mi = msgspec.inspect
    compiled = _beacon.schema()
    structs = {
        "Beacon": events.Beacon,
        "Vital": events.Vital,
        "Navigation": events.Navigation,
        "ResourceGroup": events.ResourceGroup,
        "ResourceEntry": events.ResourceEntry,
        "LongTasks": events.LongTasks,
        "Memory": events.Memory,
    }
    assert set(compiled) == set(structs)
    for name, struct in structs.items():
        info = mi.type_info(struct)
        assert isinstance(info, mi.StructType)
        fields = compiled[name]
        assert [f["name"] for f in fields] == [f.encode_name for f in info.fields], name
        for want, got in zip(info.fields, fields, strict=True):
            where = f"{name}.{want.name}"
            t = want.type
            nullable = isinstance(t, mi.UnionType)
            if nullable:
                (t,) = [u for u in t.types if not isinstance(u, mi.NoneType)]
            assert got["nullable"] is nullable, where
            assert got["required"] is want.required, where
            if not want.required:
                default = (
                    want.default if want.default is not mi.NODEFAULT else want.default_factory()
                )
                if default is events.NO_ATTRIBUTION:
                    default = None
                assert got["default"] == msgspec.json.encode(default).decode(), where
            if isinstance(t, mi.StrType):
                assert got["kind"] == "str", where
                assert (got["min_length"], got["max_length"]) == (
                    t.min_length or 0,
                    t.max_length,
                ), where
            elif isinstance(t, mi.LiteralType):
                assert got["kind"] == "literal" and set(got["literals"]) == set(t.values), where
            elif isinstance(t, mi.IntType):
                assert got["kind"] == "int", where
                assert got["constraint"] == ("ge0" if t.ge == 0 else ""), where
                assert (t.gt, t.le, t.lt) == (None, None, None), where
            elif isinstance(t, mi.FloatType):
                assert got["kind"] == "float", where
                want_constraint = {(None, 0, None, None): "ge0", (0, None, 1, None): "gt0_le1"}
                assert got["constraint"] == want_constraint.get((t.gt, t.ge, t.le, t.lt), ""), where
            elif isinstance(t, mi.BoolType):
                assert got["kind"] == "bool", where
            elif isinstance(t, mi.RawType):
                assert got["kind"] == "raw", where
            elif isinstance(t, mi.StructType):
                assert got["kind"] == "struct" and got["items"] == t.cls.__name__, where
            elif isinstance(t, mi.ListType):
                assert got["kind"] == "list" and got["items"] == t.item_type.cls.__name__, where
            else:
                raise AssertionError(f"{where}: a type the compiled path does not know: {t}")
