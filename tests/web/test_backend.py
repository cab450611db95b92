"""Backend and route detail pages in Chromium: the route table and the route's
numbers equal the query API's for the same window and filters, the table sorts,
links keep the route in the URL, the slowest requests link to their traces, and
a route name carrying markup stays text."""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page

from .conftest import XSS, Dashboard, charts_drawn, js, shot, shown, table_rows

EVIL_ROUTE = "/x/" + XSS
TRACED = [uuid.uuid4().hex for _ in range(3)]


@pytest.fixture(scope="module")
def extra(dashboard: Dashboard) -> Dashboard:
    """Three slow traced requests on GET /orders/{id} and one request whose route
    is markup, all for the service api, a quarter of an hour into the window."""
    at = dashboard.now - 900
    events: list[dict[str, Any]] = [
        {
            "kind": "http",
            "ts": at + i,
            "route": "/orders/{id}",
            "method": "GET",
            "status": 200,
            "duration_ms": 5000.0 + 1000 * i,
            "db_time_ms": 40.0,
            "db_count": 9,
            "request_id": f"traced-{i}",
            "trace_id": tid,
        }
        for i, tid in enumerate(TRACED)
    ]
    events.append(
        {
            "kind": "http",
            "ts": at,
            "route": EVIL_ROUTE,
            "method": "GET",
            "status": 200,
            "duration_ms": 12.0,
        }
    )
    batch = {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": "api", "environment": "production", "host": "web-1"},
        "events": events,
    }
    assert dashboard.server.send(batch).status_code == 202
    dashboard.server.wait_stored("http.server.duration", count=1, route=EVIL_ROUTE)
    return dashboard


def _groups(d: Dashboard, metric: str, **filters: str) -> dict[tuple[str, str], dict[str, Any]]:
    answer = d.api("/api/v1/percentiles", metric=metric, by="route,method", **filters, **d.window)
    return {(g["key"]["route"], g["key"]["method"]): g for g in answer["groups"]}


def _table(page: Page) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["data"]["route"], r["data"]["method"]): r["values"] for r in table_rows(page, "#routes")
    }


def _check_routes(page: Page, d: Dashboard, **filters: str) -> dict[tuple[str, str], Any]:
    table = _table(page)
    durations = _groups(d, "http.server.duration", **filters)
    db = _groups(d, "http.server.db_time", **filters)
    span = float(d.window["to"]) - float(d.window["from"])
    assert set(table) == set(durations)
    for key, g in durations.items():
        row = table[key]
        assert row["count"] == g["count"]
        assert row["throughput"] == pytest.approx(g["count"] / span, rel=1e-12)
        assert row["error_ratio"] == pytest.approx(g["error_ratio"], rel=1e-12)
        for q in ("0.5", "0.95", "0.99"):
            col = "p" + q.removeprefix("0.").ljust(2, "0")
            assert row[col] == g["quantiles"][q]
        if g["sum"] and key in db:
            assert row["db_share"] == pytest.approx(db[key]["sum"] / g["sum"], rel=1e-12)
    return durations


def test_route_table_equals_the_percentiles_api(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/backend"))
    page.wait_for_selector("#routes tbody tr")
    groups = _check_routes(page, extra)
    assert ("/orders/{id}", "GET") in groups and ("/search", "GET") in groups
    # the database share is real: /search spends most of its time in its LIKE query
    assert 0.2 < shown(page, '#routes tr[data-route="/search"] td:nth-child(9)') < 1.0
    drawn = charts_drawn(page)
    assert len(drawn) == 3 and all(n > 0 for n in drawn)
    # the route named with markup is shown as text, nothing ran
    cell = page.locator("#routes tbody tr td.path a", has_text="<script>")
    assert cell.text_content() == EVIL_ROUTE
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector("main img") is None
    shot(page, "backend")
    assert page.errors == []  # type: ignore[attr-defined]


def test_sorting_the_route_table_by_p95(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/backend"))
    header = page.locator("#routes th[data-col=p95]")
    p95s = (
        "[...document.querySelectorAll('#routes tbody tr')].map(tr => +tr.cells[6].dataset.value)"
    )
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    ascending = js(page, p95s)
    assert ascending == sorted(ascending) and len(ascending) >= 7
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    descending = js(page, p95s)
    assert descending == sorted(ascending, reverse=True)
    assert descending[0] > 10 * descending[-1]  # /health against the slow routes
    assert page.errors == []  # type: ignore[attr-defined]


def test_service_filter_changes_the_url_and_the_numbers(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/backend"))
    row = '#routes tr[data-route="/"][data-method="GET"] td:nth-child(3)'
    everything = shown(page, row)
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "api")
    assert "service=api" in page.url
    only_api = shown(page, row)
    assert 0 < only_api < everything
    _check_routes(page, extra, service="api")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_route_link_opens_its_detail(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/backend", service="shop"))
    with page.expect_navigation():
        page.click('#routes tr[data-route="/orders/{id}"][data-method="GET"] a')
    url = urllib.parse.urlparse(page.url)
    assert url.path == "/backend/route"
    query = urllib.parse.parse_qs(url.query)
    assert query["route"] == ["/orders/{id}"] and query["method"] == ["GET"]
    assert query["service"] == ["shop"]  # the view's state came along
    assert page.text_content("main h1") == "Route GET /orders/{id}"
    api = extra.api(
        "/api/v1/percentiles",
        metric="http.server.duration",
        route="/orders/{id}",
        method="GET",
        service="shop",
        **extra.window,
    )["groups"][0]
    assert shown(page, "#summary [data-metric=count] .value") == api["count"]
    assert shown(page, "#summary [data-metric=p95] .value") == api["quantiles"]["0.95"]
    assert shown(page, "#summary [data-metric=error_ratio] .value") == pytest.approx(
        api["error_ratio"]
    )
    # the filter form keeps the route when another filter changes
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "api")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert query["route"] == ["/orders/{id}"] and query["service"] == ["api"]
    assert page.errors == []  # type: ignore[attr-defined]


def test_route_detail_lists_the_slowest_requests_and_links_traces(
    page: Page, extra: Dashboard
) -> None:
    page.goto(extra.page_url("/backend/route", route="/orders/{id}", method="GET"))
    page.wait_for_selector("#slowest tbody tr")
    api = extra.api(
        "/api/v1/breakdown",
        source="http",
        route="/orders/{id}",
        method="GET",
        measure="",
        order="duration_ms",
        by="route,method,status,duration_ms,db_time_ms,db_count,request_id,trace_id",
        limit=20,
        **extra.window,
    )["rows"]
    listed = js(
        page,
        "[...document.querySelectorAll('#slowest tbody tr')].map(tr => ({"
        "request: tr.dataset.request, duration: +tr.cells[3].dataset.value,"
        "trace: tr.querySelector('a.trace')?.getAttribute('href') || null}))",
    )
    durations = [r["duration"] for r in listed]
    assert len(listed) == 20 and durations == sorted(durations, reverse=True)
    assert [(r["request"], r["duration"]) for r in listed] == [
        (a["request_id"], a["duration_ms"]) for a in api
    ]
    # the three traced requests are the slowest, each linking to its trace
    assert [r["request"] for r in listed[:3]] == ["traced-2", "traced-1", "traced-0"]
    for r, tid in zip(listed[:3], reversed(TRACED), strict=True):
        assert r["trace"].startswith(f"/traces/{tid}?")
    assert all(r["trace"] is None for r in listed[3:])
    with page.expect_navigation():
        page.click("#slowest tbody tr:first-child a.trace")
    assert urllib.parse.urlparse(page.url).path == f"/traces/{TRACED[2]}"


def test_route_detail_charts_statuses_and_statements_equal_the_api(
    page: Page, extra: Dashboard
) -> None:
    page.goto(extra.page_url("/backend/route", route="/orders/{id}", method="GET"))
    drawn = charts_drawn(page)
    assert len(drawn) == 3 and all(n > 0 for n in drawn)
    statuses = extra.api(
        "/api/v1/breakdown",
        source="http",
        by="status",
        route="/orders/{id}",
        method="GET",
        limit=100,
        **extra.window,
    )["rows"]
    ok = sum(r["count"] for r in statuses if 200 <= r["status"] < 300)
    assert shown(page, "#status-classes tr[data-class='2xx'] td:nth-child(3)") == ok
    total = sum(r["count"] for r in statuses)
    assert shown(page, "#summary [data-metric=count] .value") == total
    statements = extra.api(
        "/api/v1/breakdown",
        source="db",
        by="fingerprint",
        route="/orders/{id}",
        measure="count,sum:duration_ms,p95:duration_ms,avg:rows",
        order="sum:duration_ms",
        **extra.window,
    )["rows"]
    shown_rows = js(
        page,
        "[...document.querySelectorAll('#statements tbody tr')].map(tr => "
        "[tr.dataset.fingerprint, +tr.cells[1].dataset.value, +tr.cells[2].dataset.value])",
    )
    assert shown_rows == [[s["fingerprint"], s["count"], s["sum_duration_ms"]] for s in statements]
    assert shown_rows[0][0] == "SELECT * FROM items WHERE order_id = ?"  # the N+1
    shot(page, "route")
    assert page.errors == []  # type: ignore[attr-defined]


def test_route_detail_without_a_route_is_a_400(page: Page, extra: Dashboard) -> None:
    response = page.goto(extra.page_url("/backend/route"))
    assert response is not None and response.status == 400
    assert "'route' is required" in (page.text_content("main .error") or "")


def test_an_unknown_route_shows_no_data(page: Page, extra: Dashboard) -> None:
    response = page.goto(extra.page_url("/backend/route", route="/nowhere", method="GET"))
    assert response is not None and response.status == 200
    assert page.is_visible("#no-data")
    assert charts_drawn(page) == [0, 0, 0], page.inner_html("main")
    assert page.get_attribute("#summary [data-metric=p95] .value", "data-value") == ""
    assert page.is_visible("p#slowest")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_route_named_with_markup_stays_text(page: Page, extra: Dashboard) -> None:
    page.goto(extra.page_url("/backend/route", route=EVIL_ROUTE, method="GET"))
    assert page.text_content("main h1") == f"Route GET {EVIL_ROUTE}"
    assert shown(page, "#summary [data-metric=count] .value") == 1
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector("main script, main img") is None
    assert page.errors == []  # type: ignore[attr-defined]
