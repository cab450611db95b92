"""Cache and Resources pages in Chromium: hit ratios, calls and latencies equal
the percentiles API; resource averages and latest values equal the percentiles
and timeseries APIs per service and host; every chart draws; the service filter
lives in the URL and changes the numbers."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page

from .conftest import MOMENTS, Dashboard, charts_drawn, js, shot, table_rows

RESOURCES = (
    "process.cpu",
    "process.memory.rss",
    "host.cpu",
    "host.memory.used",
    "process.io.read",
    "process.io.write",
    "host.disk.read",
    "host.disk.write",
    "host.net.recv",
    "host.net.sent",
)


def _rows(page: Page, table: str) -> list[dict[str, Any]]:
    """:func:`table_rows`, keyed by the row's data-* attributes (``key``)."""
    return [{"key": r["data"], "values": r["values"]} for r in table_rows(page, table)]


# --- cache -------------------------------------------------------------------------


def _check_caches(page: Page, d: Dashboard, **filters: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for table, by in (("#caches", "cache"), ("#cache-ops", "cache,op")):
        api = d.api(
            "/api/v1/percentiles",
            metric="cache.duration",
            by=by,
            q="0.5,0.95",
            **filters,
            **d.window,
        )["groups"]
        rows = _rows(page, table)
        assert [r["key"] for r in rows] == [g["key"] for g in api]
        for r, g in zip(rows, api, strict=True):
            assert r["values"] == {
                "hit_ratio": g["hit_ratio"],
                "count": g["count"],
                "p50": g["quantiles"]["0.5"],
                "p95": g["quantiles"]["0.95"],
            }
        checked[by] = api
    return checked


def test_cache_hit_ratio_and_latency_equal_the_percentiles_api(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(dashboard.page_url("/cache"))
    api = _check_caches(page, dashboard)
    products = api["cache"][0]
    assert products["key"] == {"cache": "products"}
    assert 0.7 < products["hit_ratio"] < 0.95  # the demo hits 82 % of the time
    drawn = charts_drawn(page)
    assert len(drawn) == 3 and all(n > 0 for n in drawn)
    shot(page, "cache")
    assert page.errors == []  # type: ignore[attr-defined]


def test_cache_service_filter_changes_the_url_and_the_numbers(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(dashboard.page_url("/cache"))
    calls = (
        "+document.querySelector('#caches tr[data-cache=products] td:nth-child(3)').dataset.value"
    )
    everything = js(page, calls)
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "shop")
    assert "service=shop" in page.url
    assert 0 < js(page, calls) < everything
    _check_caches(page, dashboard, service="shop")
    assert page.errors == []  # type: ignore[attr-defined]


# --- resources ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_host(dashboard: Dashboard) -> Dashboard:
    """Samples from a second host (service api on web-2) with every IO counter,
    at the moments the demo fill used."""
    events = [
        {
            "kind": "resource",
            "ts": dashboard.now - 3300 + i * 300,
            "pid": 7,
            "process_cpu_pct": 20.0 + i,
            "process_rss_bytes": 90e6 + 1e6 * i,
            "process_read_bytes": 4096.0 * (i + 1),
            "process_write_bytes": 8192.0 * (i + 1),
            "host_cpu_pct": 30.0 + 2 * i,
            "host_mem_used_bytes": 3e9 + 1e7 * i,
            "host_mem_total_bytes": 8e9,
            "host_disk_read_bytes": 1e6 + 1e4 * i,
            "host_disk_write_bytes": 2e6 + 1e4 * i,
            "host_net_sent_bytes": 5e5 + 1e3 * i,
            "host_net_recv_bytes": 7e5 + 1e3 * i,
        }
        for i in range(MOMENTS)
    ]
    batch = {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": "api", "environment": "production", "host": "web-2"},
        "events": events,
    }
    assert dashboard.server.send(batch).status_code == 202
    dashboard.server.wait_stored("host.net.recv", count=MOMENTS, host="web-2")
    return dashboard


def _check_resources(page: Page, d: Dashboard, **filters: str) -> set[tuple[str, str]]:
    span = float(d.window["to"]) - float(d.window["from"])
    step = max(60, math.ceil(span / 60 / 60) * 60)  # the page's step: about 60 points
    rows = {
        (r["key"]["service"], r["key"]["host"], r["key"]["metric"]): r["values"]
        for r in _rows(page, "#resources")
    }
    expected = set()
    for name in RESOURCES:
        groups = d.api(
            "/api/v1/percentiles", metric=name, by="service,host", **filters, **d.window
        )["groups"]
        series = d.api(
            "/api/v1/timeseries",
            metric=name,
            by="service,host",
            step=step,
            **filters,
            **d.window,
        )["series"]
        last = {
            (s["key"]["service"], s["key"]["host"]): max(s["points"], key=lambda p: p["ts"])
            for s in series
        }
        for g in groups:
            where = (g["key"]["service"], g["key"]["host"])
            row = rows[(*where, name)]
            assert row["samples"] == g["count"]
            assert row["avg"] == pytest.approx(g["mean"], rel=1e-9)
            assert row["latest"] == pytest.approx(last[where]["mean"], rel=1e-9)
            expected.add((*where, name))
    assert set(rows) == expected
    return {(s, h) for s, h, _ in expected}


def test_resources_equal_the_api_per_service_and_host(page: Page, second_host: Dashboard) -> None:
    page.goto(second_host.page_url("/resources"))
    where = _check_resources(page, second_host)
    assert where == {("shop", "web-1"), ("api", "web-2")}
    cpu = page.locator('#resources tr[data-host=web-2][data-metric="process.cpu"] td').nth(4)
    assert cpu.text_content() == "31.0 %"  # the last sample's 20 + 11 percent
    drawn = charts_drawn(page)
    assert len(drawn) == len(RESOURCES) and all(n > 0 for n in drawn)
    # CPU and memory are drawn for both hosts; IO only web-2 reports
    titles = js(
        page,
        "[...document.querySelectorAll('.chart')].map(c => "
        "[c.querySelector('.chart-title').textContent, JSON.parse(c.dataset.chart).series.length])",
    )
    assert dict(titles)["Process CPU"] == 2 and dict(titles)["Host network sent"] == 1
    shot(page, "resources")
    assert page.errors == []  # type: ignore[attr-defined]


def test_resources_service_filter_changes_the_url_and_the_rows(
    page: Page, second_host: Dashboard
) -> None:
    page.goto(second_host.page_url("/resources"))
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "api")
    assert "service=api" in page.url
    assert _check_resources(page, second_host, service="api") == {("api", "web-2")}
    assert page.errors == []  # type: ignore[attr-defined]
