"""Database page in Chromium: statement tables equal the top API, the slowest
executions and N+1 findings equal the breakdown API, pool saturation equals the
percentiles API and the raw pool rows, and a stored statement carrying markup
stays text."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page

from perfpulse.model.fingerprint import fingerprint_sql

from .conftest import XSS, Dashboard, charts_drawn, shot, shown, table_rows

EVIL_SQL = f'SELECT * FROM "{XSS}"'
EVIL_FP = fingerprint_sql(EVIL_SQL)


@pytest.fixture(scope="module")
def extra(dashboard: Dashboard) -> Dashboard:
    """For the service api: one very slow statement whose text is markup, and two
    samples of a second, saturated pool that timed out."""
    at = dashboard.now - 1200
    events: list[dict[str, Any]] = [
        {
            "kind": "db",
            "ts": at,
            "fingerprint": EVIL_SQL,
            "statement": EVIL_SQL,
            "system": "postgresql",
            "duration_ms": 2500.0,
            "rows": 1,
            "route": "/search",
        },
        *(
            {
                "kind": "pool",
                "ts": at + 300 * i,
                "pool": "replica",
                "size": 4,
                "checked_out": 4,
                "wait_ms": 250.0 + 50 * i,
                "timeouts": 3,
            }
            for i in range(2)
        ),
    ]
    batch = {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": "api", "environment": "production", "host": "web-1"},
        "events": events,
    }
    assert dashboard.server.send(batch).status_code == 202
    dashboard.server.wait_stored("db.query.duration", count=1, fingerprint=EVIL_FP)
    dashboard.server.wait_stored("db.pool.usage", count=2, pool="replica")
    return dashboard


def _table(page: Page, selector: str) -> list[dict[str, Any]]:
    """:func:`table_rows`, with the row's fingerprint, route and pool beside its values."""
    return [
        {
            "key": r["data"].get("fingerprint"),
            "route": r["data"].get("route"),
            "pool": r["data"].get("pool"),
            "values": r["values"],
        }
        for r in table_rows(page, selector)
    ]


def _check_statements(page: Page, d: Dashboard, **filters: str) -> None:
    mean_rows = {
        g["key"]["fingerprint"]: g["mean"]
        for g in d.api(
            "/api/v1/percentiles",
            metric="db.query.rows",
            by="fingerprint",
            q="0.5",
            **filters,
            **d.window,
        )["groups"]
    }
    for table, order in (("#statements-by-total", "sum"), ("#statements-by-p95", "p95")):
        api = d.api(
            "/api/v1/top",
            metric="db.query.duration",
            by="fingerprint",
            q="0.5,0.95",
            order=order,
            limit=15,
            **filters,
            **d.window,
        )["groups"]
        rows = _table(page, table)
        assert [r["key"] for r in rows] == [g["key"]["fingerprint"] for g in api]
        for r, g in zip(rows, api, strict=True):
            v = r["values"]
            # DuckDB sums doubles in parallel, in no fixed order: two reads of
            # the same rows may differ in the last bit.
            assert v["count"] == g["count"]
            assert v["sum"] == pytest.approx(g["sum"], rel=1e-12)
            assert (v["p50"], v["p95"]) == (g["quantiles"]["0.5"], g["quantiles"]["0.95"])
            assert v["mean_rows"] == pytest.approx(mean_rows[r["key"]], rel=1e-12)


def test_statements_equal_the_top_api(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/database"))
    _check_statements(page, extra)
    by_total = _table(page, "#statements-by-total")
    assert by_total[0]["key"] == "SELECT * FROM products WHERE name LIKE ?"  # the slow query
    assert "SELECT * FROM items WHERE order_id = ?" in [r["key"] for r in by_total[:3]]  # the N+1
    by_p95 = [r["key"] for r in _table(page, "#statements-by-p95") if r["key"] != EVIL_FP]
    assert "LIKE" in by_p95[0]  # the demo's slow query
    assert page.errors == []  # type: ignore[attr-defined]


def test_slowest_executions_equal_the_breakdown_and_markup_stays_text(
    page: Page, extra: Dashboard
) -> None:
    page.goto(extra.page_url("/database"))
    api = extra.api(
        "/api/v1/breakdown",
        source="db",
        by="fingerprint,statement,route,duration_ms,rows,error,system",
        measure="",
        order="duration_ms",
        limit=20,
        **extra.window,
    )["rows"]
    rows = _table(page, "#slow-queries")
    assert [(r["key"], r["values"]["3"]) for r in rows] == [
        (a["fingerprint"], a["duration_ms"]) for a in api
    ]
    durations = [r["values"]["3"] for r in rows]
    assert durations == sorted(durations, reverse=True)
    first = page.locator("#slow-queries tbody tr").first
    assert first.locator("td code").text_content() == EVIL_SQL
    # a slow LIKE execution shows its (redacted) statement, not a fingerprint
    like = page.locator("#slow-queries tbody tr", has_text="LIKE").first
    assert "(fingerprint)" not in (like.text_content() or "")
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector("main img, main script") is None
    assert page.errors == []  # type: ignore[attr-defined]


def test_n_plus_one_findings_equal_the_breakdown(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/database"))
    api = extra.api(
        "/api/v1/breakdown",
        source="n_plus_one",
        by="route,fingerprint",
        measure="count,max:count,sum:total_ms",
        order="count",
        limit=20,
        **extra.window,
    )["rows"]
    rows = _table(page, "#n-plus-one")
    assert [(r["route"], r["key"]) for r in rows] == [(a["route"], a["fingerprint"]) for a in api]
    for r, a in zip(rows, api, strict=True):
        assert r["values"]["count"] == a["count"]
        assert r["values"]["max_count"] == a["max_count"]
        assert r["values"]["sum_total_ms"] == a["sum_total_ms"]
    finding = rows[0]
    assert finding["route"] == "/orders/{id}" and finding["values"]["max_count"] == 8
    assert page.errors == []  # type: ignore[attr-defined]


def test_pool_saturation_equals_the_api(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/database"))
    usage = {
        g["key"]["pool"]: g
        for g in extra.api(
            "/api/v1/percentiles", metric="db.pool.usage", by="pool", q="0.95", **extra.window
        )["groups"]
    }
    wait = {
        g["key"]["pool"]: g["quantiles"]["0.95"]
        for g in extra.api(
            "/api/v1/percentiles",
            metric="db.pool.sample_wait",
            by="pool",
            q="0.95",
            **extra.window,
        )["groups"]
    }
    raw = {
        r["pool"]: r
        for r in extra.api(
            "/api/v1/breakdown",
            source="pool",
            by="pool",
            measure="sum:timeouts,max:usage_pct",
            **extra.window,
        )["rows"]
    }
    rows = {r["pool"]: r["values"] for r in _table(page, "#pools")}
    assert set(rows) == {"primary", "replica"} == set(usage)
    for pool, v in rows.items():
        assert v["samples"] == usage[pool]["count"]
        assert v["usage_p95"] == usage[pool]["quantiles"]["0.95"]
        assert v["usage_max"] == raw[pool]["max_usage_pct"]
        assert v["wait_p95"] == wait[pool]
        assert v["timeouts"] == raw[pool]["sum_timeouts"]
    assert rows["replica"]["timeouts"] == 6 and rows["primary"]["timeouts"] == 0
    assert rows["replica"]["usage_max"] == 100.0  # exact, from the raw samples
    drawn = charts_drawn(page)
    assert len(drawn) == 3 and all(n > 0 for n in drawn)
    shot(page, "database")
    assert page.errors == []  # type: ignore[attr-defined]


def test_service_filter_changes_the_url_and_the_numbers(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/database"))
    cell = "#statements-by-total tbody tr:first-child td:nth-child(2)"
    everything = shown(page, cell)
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "api")
    assert "service=api" in page.url
    assert 0 < shown(page, cell) < everything
    _check_statements(page, extra, service="api")
    assert page.errors == []  # type: ignore[attr-defined]
