"""Beacons, and the columns of a batch, reach storage as JSON documents that DuckDB
unnests into their rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests.store.test_writer import fill

from perfpulse.ingest.normalize import Normalizer
from perfpulse.ingest.routes import RouteFolder
from perfpulse.model.events import BATCH_DECODER, BEACON_DECODER
from perfpulse.model.rows import (
    LAYOUTS,
    RECORD_DECODER,
    RECORD_ENCODER,
    SpoolRecord,
    column_document,
)
from perfpulse.spool import MemorySpool
from perfpulse.store.base import Flush
from perfpulse.store.duckdb import sql
from perfpulse.store.duckdb.backend import DuckDBBackend
from perfpulse.store.writer import Writer
from perfpulse.telemetry import CollectorMetrics

NOW = 1_790_000_000.0

EDGE = {
    "id": "v1",
    "ts": NOW - 50,
    "url": "https://u:p@shop.example/orders/12345?token=abc#frag",
    "soft": True,
    "sample_rate": 0.5,
    "browser": "firefox",
    "connection": "4g",
    "device": "mobile",
    "vitals": [
        {"name": "LCP", "value": -1.0},
        {"name": "CLS", "value": 101.0},
        {
            "name": "CLS",
            "value": 0.25,
            "attribution": {
                "largestShiftTarget": "div",
                "sources": [{"node": "https://x.example/a?b=c", "n": 1.5}, "//cdn.example/q?x=1"],
            },
        },
        {"name": "INP", "value": 1e300},
        {
            "name": "INP",
            "value": 250,
            "navigation_type": "back-forward",
            "attribution": {"interactionTarget": 'button "quoted" \\ \n newline'},
        },
        {"name": "TTFB", "value": 800.5, "attribution": {}},
    ],
    "nav": {"type": "reload", "dns_ms": -5, "connect_ms": 700000, "tls_ms": 3, "transfer_bytes": 9},
    "resources": [
        {"type": "script", "count": 2, "duration_ms": -1},
        {"type": "font", "count": 1, "duration_ms": 5},
    ],
    "largest_resources": [
        {"url": "https://cdn.example/big.js?v=1&sig=zz", "type": "script", "duration_ms": 40},
        {"url": "https://cdn.example/bad.png", "type": "image", "duration_ms": 9e9},
    ],
    "long_tasks": {"count": 3, "total_ms": 400, "worst_script": "https://a.example/s.js?k=v"},
}


def normalizer() -> Normalizer:
    return Normalizer(folder=RouteFolder(cap=1000), raw_retention_s=14 * 86400, clock=lambda: NOW)


def rows(db: DuckDBBackend, table: str, order: str = "view_id") -> list[dict[str, Any]]:
    names = [name for name, _ in LAYOUTS[table]]
    found = db.connection().execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    return [dict(zip(names, r, strict=True)) for r in found]


def test_a_beacon_is_one_document_and_its_rows_are_what_normalizing_decided() -> None:
    out = normalizer().beacon(BEACON_DECODER.decode(json.dumps(EDGE)))
    assert len(out.beacons) == 1 and not out.rows
    assert out.accepted == 1 + 3  # the view and three vitals
    assert dict(out.dropped) == {"negative_value": 1, "absurd_value": 2}
    db = DuckDBBackend(None)
    assert db.write(Flush(beacons=out.beacons, checkpoint=1)) == 1 + 3 + 1 + 1

    (view,) = rows(db, "rum_view")
    assert view["page"] == "/orders/{id}"
    assert view["url"] == "https://shop.example/orders/12345?token="
    assert (view["soft"], view["sample_rate"], view["nav_type"]) == (True, 0.5, "reload")
    # an out-of-range phase is dropped alone; the page view stays
    assert (view["dns_ms"], view["connect_ms"], view["tls_ms"]) == (None, None, 3.0)
    assert view["transfer_bytes"] == 9
    assert view["worst_script"] == "https://a.example/s.js?k="
    assert view["mem_used_bytes"] is None and view["mem_source"] is None

    vitals = rows(db, "rum_vital", "value")
    assert [(v["name"], v["value"], v["rating"]) for v in vitals] == [
        ("CLS", 0.25, 1),
        ("INP", 250.0, 1),
        ("TTFB", 800.5, 1),
    ]
    assert json.loads(vitals[0]["attribution"]) == {
        "largestShiftTarget": "div",
        "sources": [{"node": "https://x.example/a?b=", "n": 1.5}, "//cdn.example/q?x="],
    }
    assert json.loads(vitals[1]["attribution"]) == {
        "interactionTarget": 'button "quoted" \\ \n newline'
    }
    assert vitals[1]["navigation_type"] == "back-forward"
    assert vitals[2]["attribution"] is None  # an empty attribution is none
    assert all(v["device"] == "mobile" and v["view_id"] == "v1" for v in vitals)

    assert [(r["type"], r["count"]) for r in rows(db, "rum_resource")] == [("font", 1)]
    (largest,) = rows(db, "rum_largest")
    assert largest["url"] == "https://cdn.example/big.js?v=&sig="


def test_a_bare_beacon_stores_a_view_with_nulls() -> None:
    bare = {"id": "v2", "ts": NOW - 5, "url": "http://x.example/", "long_tasks": {}}
    out = normalizer().beacon(BEACON_DECODER.decode(json.dumps(bare)))
    db = DuckDBBackend(None)
    assert db.write(Flush(beacons=out.beacons, checkpoint=1)) == 1
    (view,) = rows(db, "rum_view")
    assert view["ts"].timestamp() == pytest.approx(NOW - 5)
    assert (view["service"], view["device"], view["page"]) == ("web", "desktop", "/")
    assert view["nav_type"] is None and view["load_ms"] is None
    assert view["worst_script"] is None and view["lt_count"] == 0
    assert rows(db, "rum_vital") == []


def test_older_records_rows_and_documents_are_stored_together() -> None:
    """A spool written before documents holds beacons as rows; one flush may hold both."""
    old_vital = dict.fromkeys(name for name, _ in LAYOUTS["rum_vital"])
    old_vital.update(
        ts=NOW - 60,
        view_id="old",
        service="web",
        environment="production",
        release="",
        page="/old",
        device="desktop",
        name="LCP",
        value=1800.0,
        rating=0,
    )
    old = RECORD_ENCODER.encode(
        ["public:old", NOW, {"rum_vital": [list(old_vital.values())]}, {}]  # four fields
    )
    assert RECORD_DECODER.decode(old).beacons == []
    beacon = {"id": "new", "ts": NOW - 30, "url": "http://x.example/new"}
    beacon["vitals"] = [{"name": "LCP", "value": 3000.0}]
    out = normalizer().beacon(BEACON_DECODER.decode(json.dumps(beacon)))
    new = RECORD_ENCODER.encode(SpoolRecord("public:new", NOW, beacons=out.beacons))

    spool, db = MemorySpool(), DuckDBBackend(None)
    fill(spool, [old, new])
    writer = Writer(spool, db, CollectorMetrics())
    assert writer.drain() == 1 + 1 + 1  # the old vital; the new view and vital
    got = [(v["view_id"], v["page"], v["value"], v["rating"]) for v in rows(db, "rum_vital")]
    assert got == [("new", "/new", 3000.0, 1), ("old", "/old", 1800.0, 0)]
    # both went into the rollups: two LCP values in the per-minute sketches
    counts = db.connection().execute(
        "SELECT sum(list_sum(r.counts)) FROM rollup_1m r JOIN series s ON s.id = r.series "
        "WHERE s.metric = 'rum.lcp'"
    )
    assert counts.fetchall() == [(2,)]


def test_a_failed_flush_leaves_no_scratch_tables_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = normalizer().beacon(BEACON_DECODER.decode(json.dumps(EDGE)))
    db = DuckDBBackend(None)
    with monkeypatch.context() as m:  # fails after the documents were loaded and unnested
        m.setattr(sql, "flush_rollup", lambda tables: "SELECT no_such_column FROM series")
        with pytest.raises(duckdb.BinderException):
            db.write(Flush(beacons=out.beacons, checkpoint=1))
    assert rows(db, "rum_view") == []
    assert db.checkpoint() == 0
    assert db.write(Flush(beacons=out.beacons, checkpoint=1)) == 6  # the same names again
    assert len(rows(db, "rum_view")) == 1


def test_a_flush_of_beacons_fits_the_steady_memory_limit(tmp_path: Path) -> None:
    """Not run out of memory once and tried again under the burst limit: DuckDB's
    JSON reader (read_json) wanted 32 MB of buffers, twice the steady limit."""
    norm = normalizer()
    beacons = []
    for i in range(300):
        out = norm.beacon(BEACON_DECODER.decode(json.dumps({**EDGE, "id": f"v{i}"})))
        beacons += out.beacons
    db = DuckDBBackend(tmp_path / "perfpulse.duckdb")  # the default, steady memory limit
    assert db._write(Flush(beacons=beacons, checkpoint=1)) == 300 * 6  # no retry around it
    assert len(rows(db, "rum_view")) == 300


def test_a_batch_is_stored_from_its_column_document_and_older_columns_beside_it() -> None:
    """A batch's http columns reach the spool as one JSON document; a record of an
    older collector holds them as columns; one flush may hold both."""
    batch = {
        "batch_id": "b1",
        "resource": {"service": "api", "environment": "production", "release": "1", "host": "h"},
        "events": [
            {
                "kind": "http",
                "ts": NOW - 10 + i,
                "route": "/orders/42",
                "method": "get",
                "status": 200 + i,
                "duration_ms": 10.5 * (i + 1),
                "request_bytes": 2**62 if i == 0 else None,
                "exception": 'Boom "quoted"\n' if i == 1 else None,
            }
            for i in range(3)
        ],
    }
    out = normalizer().batch(BATCH_DECODER.decode(json.dumps(batch)))
    (table,) = out.columns
    new = RECORD_ENCODER.encode(
        SpoolRecord(
            "ingest:b1", NOW, column_documents={"http": column_document(table, out.columns[table])}
        )
    )
    older = normalizer().batch(BATCH_DECODER.decode(json.dumps({**batch, "batch_id": "b0"})))
    old = RECORD_ENCODER.encode(["ingest:b0", NOW, {}, older.columns])  # four fields
    spool, db = MemorySpool(), DuckDBBackend(None)
    fill(spool, [old, new])
    assert Writer(spool, db, CollectorMetrics()).drain() == 6
    got = [
        (r["route"], r["method"], r["status"], r["duration_ms"], r["request_bytes"], r["exception"])
        for r in rows(db, "http", "status, request_id")
    ]
    expected = [
        ("/orders/{id}", "GET", 200, 10.5, 2**62, None),
        ("/orders/{id}", "GET", 201, 21.0, None, 'Boom "quoted"\n'),
        ("/orders/{id}", "GET", 202, 31.5, None, None),
    ]
    assert got == [row for row in expected for _ in range(2)]
    counts = db.connection().execute(
        "SELECT sum(list_sum(r.counts)) FROM rollup_1m r JOIN series s ON s.id = r.series "
        "WHERE s.metric = 'http.server.duration'"
    )
    assert counts.fetchall() == [(6,)]


def test_temporary_tables_spill_beside_the_database_not_into_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (tmp_path / "data").mkdir()
    db = DuckDBBackend(tmp_path / "data" / "perfpulse.duckdb")
    out = normalizer().beacon(BEACON_DECODER.decode(json.dumps(EDGE)))
    assert db.write(Flush(beacons=out.beacons, checkpoint=1)) == 6
    setting = db.connection().execute("SELECT current_setting('temp_directory')").fetchall()
    assert setting == [(str(tmp_path / "data" / "perfpulse.duckdb.tmp"),)]
    assert list(cwd.iterdir()) == []
