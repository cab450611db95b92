"""The writer reads beacon documents into Arrow columns itself
(``perfpulse.store._columns``): what it stores must be what DuckDB's own parsing
of the documents stores, and a document it cannot take is left to DuckDB."""

from __future__ import annotations

import decimal
import itertools
import json
import math
import random
import struct
from collections.abc import Iterable
from typing import Any

import pytest
from tests.store.test_documents import EDGE, NOW, normalizer

from perfpulse.model.events import BATCH_DECODER, BEACON_DECODER
from perfpulse.model.rows import BEACON_TABLES, LAYOUTS, column_document, to_columns
from perfpulse.store import _columns
from perfpulse.store.base import Flush
from perfpulse.store.duckdb import backend, sql
from perfpulse.store.duckdb.backend import DuckDBBackend

FULL = {
    "id": "full",
    "ts": NOW - 20,
    "url": "https://shop.example/café/ü?q=1",
    "release": '2.0 "beta" \\ ☃',
    "browser": "safari",
    "connection": "wifi",
    "device": "tablet",
    "vitals": [
        {"name": "LCP", "value": 2600, "attribution": {"element": "img 😀 \u0001 \t"}},
        {"name": "FID", "value": 0},
        {"name": "CLS", "value": 1e-9},
    ],
    "nav": {
        "type": "navigate",
        "dns_ms": 1.5,
        "connect_ms": 0,
        "request_ms": 123456.789,
        "load_ms": 599999.9999999999,
        "transfer_bytes": 2**53 + 1,
    },
    "resources": [
        {
            "type": "image",
            "count": 3,
            "transfer_bytes": 9_007_199_254_740_993,
            "encoded_bytes": 0,
            "decoded_bytes": 12,
            "duration_ms": 0.1,
            "cache_hits": 1,
            "render_blocking": 0,
            "third_party": 2,
        }
    ],
    "largest_resources": [
        {"url": "https://cdn.example/é.png", "type": "image", "duration_ms": 3, "cached": True},
        {"url": "https://cdn.example/b.css", "type": "stylesheet", "render_blocking": False},
    ],
    "long_tasks": {"count": 2, "total_ms": 120, "tbt_ms": 20, "max_ms": 70, "loaf_count": 1},
    "memory": {"used_bytes": 1.5e7, "total_bytes": 2e7, "limit_bytes": 4e9, "source": "x"},
}


def documents(*beacons: dict[str, Any]) -> list[bytes]:
    norm, docs = normalizer(), []
    for i, beacon in enumerate(beacons):
        docs += norm.beacon(BEACON_DECODER.decode(json.dumps({**beacon, "id": f"v{i}"}))).beacons
    return docs


def stored(
    flush: Flush, tables: Iterable[str], monkeypatch: pytest.MonkeyPatch, *, compiled: bool
) -> Any:
    """The rows ``flush`` wrote, those of ``tables`` and the per-minute and per-hour
    sketch rows (by their series), read either way."""
    with monkeypatch.context() as m:
        if not compiled:
            m.setattr(backend, "_columnize", None)
        db = DuckDBBackend(None)
        written = db.write(flush)
    con = db.connection()
    got = {}
    for table in tables:
        names = ", ".join(f'"{name}"' for name, _ in LAYOUTS[table])
        got[table] = con.execute(f"SELECT {names} FROM {table} ORDER BY ALL").fetchall()
    series = ", ".join(f"s.{c}" for c in sql.SERIES_COLUMNS)  # their ids are arbitrary
    for table in ("rollup_1m", "rollup_1h"):
        got[table] = con.execute(
            f"SELECT r.* EXCLUDE (series), {series} FROM {table} r "
            "JOIN series s ON s.id = r.series ORDER BY ALL"
        ).fetchall()
    return written, got


def beacons(docs: list[bytes], monkeypatch: pytest.MonkeyPatch, *, compiled: bool) -> Any:
    return stored(Flush(beacons=docs, checkpoint=1), BEACON_TABLES, monkeypatch, compiled=compiled)


def same(a: Any, b: Any) -> bool:
    """Equal, a NaN (none is expected) counting as unequal."""
    return bool(a == b) and not any(isinstance(x, float) and math.isnan(x) for x in [a, b])


def test_columnized_beacons_store_what_duckdbs_parsing_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = {"ts": NOW - 5, "url": "http://x.example/", "long_tasks": {}}
    docs = documents(EDGE, FULL, bare, {**FULL, "ts": NOW - 3600}, EDGE)
    tables, leftover = _columns.columnize(docs, sql.BEACON_PLAN)
    assert leftover == []  # every one read here, none parsed by DuckDB
    assert [rows for rows, _ in tables] == [
        5,
        3 + 3 + 0 + 3 + 3,
        1 + 1 + 0 + 1 + 1,
        1 + 2 + 0 + 2 + 1,
    ]

    written, compiled = beacons(docs, monkeypatch, compiled=True)
    written_sql, parsed = beacons(docs, monkeypatch, compiled=False)
    assert written == written_sql == 5 + 12 + 4 + 6
    assert compiled == parsed
    (view,) = [r for r in compiled["rum_view"] if r[1] == "v1"]
    names = [name for name, _ in LAYOUTS["rum_view"]]
    full = dict(zip(names, view, strict=True))
    assert full["release"] == '2.0 "beta" \\ ☃'  # unescaped, UTF-8 kept
    assert full["url"] == "https://shop.example/café/ü?q="
    assert full["transfer_bytes"] == 2**53 + 1  # an integer column stays exact
    assert same(full["load_ms"], 599999.9999999999)
    names = [name for name, _ in LAYOUTS["rum_vital"]]
    vitals = [dict(zip(names, r, strict=True)) for r in compiled["rum_vital"] if r[1] == "v1"]
    (lcp,) = [v for v in vitals if v["name"] == "LCP"]
    assert json.loads(lcp["attribution"]) == {"element": "img 😀 \u0001 \t"}


def test_a_flush_mixes_columnized_documents_with_ones_left_to_duckdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = documents(EDGE, FULL, EDGE)
    # the same beacon with a key escaped: JSON alike, left to DuckDB by the columnizer
    odd = docs[1].replace(b'"page":', b'"\\u0070age":', 1)
    assert json.loads(odd) == json.loads(docs[1])
    mixed = [docs[0], odd, docs[2]]
    assert _columns.columnize(mixed, sql.BEACON_PLAN)[1] == [1]
    written, got = beacons(mixed, monkeypatch, compiled=True)
    assert (written, got) == beacons(docs, monkeypatch, compiled=False)


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (b'{"page": "/", "beacon": {"ts": 1', "not JSON: cut short"),
        (b'{"page": "/"} {}', "not one JSON value"),
        (b'[{"page": "/"}]', "not an object"),
        (b'{"page": 7, "beacon": {}}', "a number for a string column"),
        (b'{"page": "/", "beacon": {"ts": "now"}}', "a string for a float column"),
        (b'{"page": "/", "beacon": {"soft": 1}}', "a number for a boolean column"),
        (b'{"page": "/", "beacon": {"nav": {"transfer_bytes": 1.5}}}', "a fraction for an integer"),
        (b'{"page": "/", "beacon": {"nav": {"transfer_bytes": 9223372036854775808}}}', "too big"),
        (b'{"page": "/", "beacon": {"ts": 1e999}}', "beyond a double"),
        (b'{"page": "/\xff", "beacon": {}}', "not UTF-8"),
        (b'{"page": "/\\ud800", "beacon": {}}', "an unpaired surrogate"),
        (b'{"page": "/\\x", "beacon": {}}', "an unknown escape"),
        (b'{"page": "/", "vitals": {"name": "LCP"}, "beacon": {}}', "an object for a list"),
        (b'{"page": "/", "beacon": {}, "junk": "\\x"}', "a bad escape where nothing is read"),
        (b'{"page": "/", "beacon": {}, "junk": "\\udc00"}', "a lone surrogate, unread"),
        (b'{"page": "/", "beacon": {}, "\xff": 1}', "a key that is not UTF-8"),
        (b'{"page": "/", "beacon": {"\\u0074s": 1, "ts": 2}}', "an escaped key before"),
    ],
)
def test_a_document_it_cannot_take_is_left_whole(broken: bytes, why: str) -> None:
    """Left whole, whichever table its fault is found in: the rows of the documents
    around it are exactly theirs."""
    good = documents(FULL, EDGE)
    tables, leftover = _columns.columnize([good[0], broken, good[1]], sql.BEACON_PLAN)
    alone, none = _columns.columnize(good, sql.BEACON_PLAN)
    assert leftover == [1], why
    assert none == [] and tables == alone


def test_strings_are_unescaped_as_json_has_them() -> None:
    texts = ["plain", "", 'q"b\\s/', "\b\f\n\r\t\u0000\u001f", "é☃😀", "\ud7ff\ue000\U0010ffff"]
    plan = ((None, ((3, 0, (b"s",)),)),)
    docs = [json.dumps({"s": t}, ensure_ascii=ascii).encode() for t in texts for ascii in (1, 0)]
    docs.append(b'{"s": "\\/\\u00E9"}')  # an escaped slash, upper-case hex
    docs.append(b'{"s": null}')
    docs.append(b'{"other": 1}')  # missing: a null
    ((rows, [(validity, offsets, data)]),), leftover = _columns.columnize(docs, plan)
    assert leftover == [] and rows == len(docs)
    ends = [int.from_bytes(offsets[k : k + 4], "little") for k in range(0, len(offsets), 4)]
    got = [data[a:b].decode() for a, b in itertools.pairwise(ends)]
    assert got[: 2 * len(texts)] == [t for t in texts for _ in (1, 0)]
    assert got[-3:] == ["/é", "", ""]
    assert validity is not None
    valid = [bool(validity[r // 8] >> (r % 8) & 1) for r in range(rows)]
    assert valid == [True] * (rows - 2) + [False, False]


def test_numbers_read_as_duckdb_reads_them() -> None:
    plan = ((None, ((0, 0, (b"f",)), (1, 0, (b"i",)), (4, 0, (b"i",)), (2, 0, (b"b",)))),)
    values = ["0", "-0.0", "1e-320", "0.1", "1.7976931348623157e308", "123456789012345678901234"]
    docs = [f'{{"f": {v}, "i": -9223372036854775808, "b": true}}'.encode() for v in values]
    ((rows, cols),), leftover = _columns.columnize(docs, plan)
    assert leftover == [] and rows == len(values)
    floats = memoryview(cols[0][1]).cast("d").tolist()
    assert [f.hex() for f in floats] == [float(v).hex() for v in values]  # to the bit
    assert memoryview(cols[1][1]).cast("q").tolist() == [-(2**63)] * rows
    assert memoryview(cols[2][1]).cast("d").tolist() == [float(-(2**63))] * rows
    assert cols[3] == (None, bytes([0b111111]))


def _number_texts(rng: random.Random) -> list[str]:
    """Number texts of every shape the fast reading takes or leaves to strtod: the
    shortest text of random doubles (as ingest writes them), lognormal values
    written with 1 to 25 digits, random digit strings with a point and an
    exponent, and decimals on or near the halfway point between two doubles."""
    texts = ["0.0", "-0.0", "-0", "1", "9007199254740993", "18446744073709551615"]
    texts += ["0.1", "5e-324", "2.2250738585072014e-308", "4.9406564584124654e-324"]
    texts += ["9007199254740993.0", "0.30000000000000004", "1e22", "1e23", "123456789e-30"]
    for _ in range(6000):
        bits = rng.getrandbits(64)
        x = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
        if math.isfinite(x):
            texts.append(repr(x))
        y = rng.lognormvariate(rng.uniform(-12, 25), rng.uniform(0.1, 4))
        texts.append(repr(y) if rng.random() < 0.5 else f"{y:.{rng.randint(1, 25)}g}")
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 22)))
        point = rng.randint(0, len(digits))
        text = (digits[:point].lstrip("0") or "0") + (
            "." + digits[point:] if digits[point:] else ""
        )
        if rng.random() < 0.3:
            text += f"e{rng.randint(-40, 40)}"
        texts.append(("-" if rng.random() < 0.3 else "") + text)
        z = rng.uniform(1e-3, 1e15)
        mid = (decimal.Decimal(z) + decimal.Decimal(math.nextafter(z, math.inf))) / 2
        texts.append(format(mid, "f")[: rng.randint(5, 45)].rstrip(".") or "0")
    return texts


def test_numbers_read_to_the_bit_as_correctly_rounded_parsing_reads_them() -> None:
    """Most numbers are read without strtod (exactly, in integer arithmetic); every
    one must still be the double nearest its text, as DuckDB reads it."""
    decimal.getcontext().prec = 80
    texts = _number_texts(random.Random(20261128))
    plan = ((None, ((0, 0, (b"f",)),)),)
    docs = [b'{"f": ' + t.encode() + b"}" for t in texts]
    ((rows, cols),), leftover = _columns.columnize(docs, plan)
    assert leftover == [] and rows == len(texts) > 24_000
    got = memoryview(cols[0][1]).cast("d").tolist()
    wrong = [(t, g.hex()) for t, g in zip(texts, got, strict=True) if g.hex() != _want(t)]
    assert wrong == []


def _want(text: str) -> str:
    """The double DuckDB stores for ``text`` in a DOUBLE column, to the bit: an
    integer's -0 is its integer 0."""
    x = float(text)
    return (0.0 if x == 0 and text.lstrip("-").isdigit() else x).hex()


BATCH = {
    "batch_id": "b1",
    "resource": {"service": "api ☃", "environment": "prod", "release": "1.0", "host": "h"},
    "events": [
        *[
            {
                "kind": "http",
                "ts": NOW - 10 + i,
                "route": f"/orders/{i}",
                "method": "post",
                "status": 200 + i,
                "duration_ms": 10.5 * (i + 1) if i != 2 else 1e-7,
                "request_bytes": 2**62 if i == 0 else None,
                "exception": 'Boom "quoted"\n😀' if i == 1 else None,
            }
            for i in range(4)
        ],
        {"kind": "db", "ts": NOW - 3, "fingerprint": "SELECT é FROM t", "duration_ms": 3.25},
        {"kind": "db", "ts": NOW - 2, "fingerprint": "UPDATE t", "duration_ms": 0, "rows": -1},
        {"kind": "cache", "ts": NOW - 2, "cache": "c", "hit": True, "duration_ms": 0.5},
        {"kind": "cache", "ts": NOW - 2, "cache": "c", "hit": None},
        {"kind": "resource", "ts": NOW - 1, "pid": 7, "process_cpu_pct": 12.5},
        {"kind": "error", "ts": NOW - 1, "type": "ValueError", "handled": True},
        {"kind": "log", "ts": NOW - 1, "level": "info", "message": "a\tb\\c"},
    ],
}


def batch_documents() -> dict[str, bytes]:
    """The batch's http events as the receiver keeps them (a column document), and
    its other events, which it keeps as rows, made column documents too (so every
    kind of value is read both ways)."""
    out = normalizer().batch(BATCH_DECODER.decode(json.dumps(BATCH)))
    docs = {table: column_document(table, columns) for table, columns in out.columns.items()}
    for table, rows in out.rows.items():
        docs[table] = column_document(table, to_columns(table, rows))
    return docs


def batch(
    documents: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch, *, compiled: bool
) -> Any:
    flush = Flush(column_documents=documents, checkpoint=1)
    return stored(flush, list(documents), monkeypatch, compiled=compiled)


def test_column_documents_store_what_duckdbs_parsing_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = batch_documents()
    assert {"http", "db", "cache", "resource", "error", "log"} <= set(docs)
    for table, doc in docs.items():
        (read,), leftover = _columns.columnize([doc, doc], sql.columns_plan(table))
        assert leftover == [] and read[0] == 2 * len(json.loads(doc)["ts"]), table
    documents = {table: [doc, doc] for table, doc in docs.items()}
    written, compiled = batch(documents, monkeypatch, compiled=True)
    assert (written, compiled) == batch(documents, monkeypatch, compiled=False)
    assert written == 2 * len(BATCH["events"])
    http = compiled["http"]
    assert {r[6] for r in http} == {"POST"} and http[0][1] == "api ☃"
    assert next(r for r in http if r[-3] is not None)[-3] == 'Boom "quoted"\n😀'
    assert [r[9] for r in http if r[9] is not None] == [2**62, 2**62]


def test_a_column_document_with_lists_of_different_lengths_is_left_to_duckdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = json.loads(batch_documents()["http"])
    uneven = json.dumps({**doc, "route": doc["route"][:-1]}).encode()
    missing = json.dumps({k: v for k, v in doc.items() if k != "exception"}).encode()
    plan = sql.columns_plan("http")
    (read,), leftover = _columns.columnize([uneven, missing], plan)
    assert leftover == [0] and read[0] == 4  # a missing list: a column of nulls
    documents = {"http": [uneven, missing]}
    written, compiled = batch(documents, monkeypatch, compiled=True)
    assert (written, compiled) == batch(documents, monkeypatch, compiled=False)
    assert written == 4 + 4  # unnested side by side, the short list padded with a null


def test_a_key_given_twice_is_read_where_it_is_first_whatever_came_before() -> None:
    plan = ((None, ((0, 0, (b"a",)),)),)
    docs = [b'{"x": 1, "a": 5}', b'{"a": 1, "a": 2}', b'{"b": 0, "a": -0}']
    ((rows, [(validity, data)]),), leftover = _columns.columnize(docs, plan)
    assert leftover == [] and rows == 3 and validity is None
    values = memoryview(data).cast("d").tolist()
    assert values == [5.0, 1.0, 0.0]
    assert str(values[2]) == "0.0"  # an integer -0 is the integer 0, as DuckDB reads it


def test_paths_that_share_their_first_keys_read_what_each_path_alone_reads() -> None:
    """Columns side by side whose paths begin alike (``beacon.nav.*``) take up
    where the last lookup's shared keys led: each must still read what its path
    read on its own, whatever the document holds on the way."""
    paths = [(b"a", b"b", b"x"), (b"a", b"b", b"y"), (b"a", b"c"), (b"a", b"b", b"x"), (b"d",)]
    paths += [(b"a", b"bb", b"x"), (b"a", b"b", b"z", b"w")]
    docs = [
        b'{"a": {"b": {"x": 1, "y": 2, "z": {"w": 3}}, "c": 4}, "d": 5}',
        b'{"a": {"c": 4, "b": {"y": 2, "x": 1}}}',
        b'{"a": {"b": {"x": 1}, "b": {"x": 9, "y": 8}, "bb": {"x": 7}}}',  # the first b
        b'{"a": {"b": null, "c": 4}, "d": 5}',
        b'{"a": {"b": 3, "c": null}}',
        b'{"a": null}',
        b'{"a": {"b": {"z": {"w": 6}, "x": 0.5}}, "a": {"c": 1}}',  # the first a
        b'{"d": 5, "a": {"b": {"x": 1, "z": null}}}',
    ]

    def alone(doc: Any, path: tuple[bytes, ...]) -> float | None:
        for key in path:
            if not isinstance(doc, dict):
                return None
            doc = doc.get(key.decode())
        return float(doc) if isinstance(doc, int | float) else None

    def first(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # a key given twice: the first
        found: dict[str, Any] = {}
        for key, value in pairs:
            found.setdefault(key, value)
        return found

    # read by itself (a plan of one column) and side by side (all in one plan)
    shared = ((None, tuple((0, 0, p) for p in paths)),)
    ((rows, cols),), leftover = _columns.columnize(docs, shared)
    assert leftover == [] and rows == len(docs)
    for j, path in enumerate(paths):
        ((_, [(_, data)]),), _ = _columns.columnize(docs, ((None, ((0, 0, path),)),))
        validity, together = cols[j]
        want = [alone(json.loads(d, object_pairs_hook=first), path) for d in docs]
        got = [
            v if validity is None or validity[r // 8] >> (r % 8) & 1 else None
            for r, v in enumerate(memoryview(together).cast("d").tolist())
        ]
        assert got == want, path
        alone_values = memoryview(data).cast("d").tolist()
        assert [v for v, w in zip(alone_values, want, strict=True) if w is not None] == [
            w for w in want if w is not None
        ]
