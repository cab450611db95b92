"""Assets page in Chromium: bytes per type equal the rollup and breakdown APIs,
the largest-resource tables equal the breakdown API, the chart draws, the page
filter narrows, and a stored resource URL holding markup stays text."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page
from tests.conftest import ORIGIN

from .conftest import XSS, Dashboard, charts_drawn, js, shot, shown

PAGE = "/products/{id}"
EVIL_IMAGE = "https://cdn.example/img/" + XSS
BEACONS = 5
SUMS = ("count", "transfer_bytes", "decoded_bytes", "cache_hits", "render_blocking", "third_party")
LARGEST = (
    "count",
    "max:transfer_bytes",
    "max:decoded_bytes",
    "p75:duration_ms",
    "true:cached",
    "true:render_blocking",
    "true:third_party",
)


def _resource(url: str, type_: str, size: int, ms: float, **flags: bool) -> dict[str, Any]:
    return {
        "url": url,
        "type": type_,
        "transfer_bytes": 0 if flags.get("cached") else size + 300,
        "encoded_bytes": size,
        "decoded_bytes": size * 3 if type_ == "script" else size,
        "duration_ms": ms,
        **flags,
    }


def _assets_beacon(i: int, at: float) -> dict[str, Any]:
    """A product page view with its five largest resources (the demo sends none)."""
    largest = [
        _resource(f"{ORIGIN}/static/app.js", "script", 178_000, 300 + i, render_blocking=True),
        _resource("https://cdn.example/img/hero.avif", "image", 420_000 + 1000 * i, 900.0),
        _resource("https://fonts.example/inter.woff2", "font", 52_000, 150.0, third_party=True),
        _resource(
            f"{ORIGIN}/static/site.css",
            "stylesheet",
            30_000,
            80.0,
            render_blocking=True,
            cached=i % 2 == 0,
        ),
        _resource(EVIL_IMAGE, "image", 250_000, 700.0, third_party=True)
        if i == 0
        else _resource("https://cdn.example/img/thumb.webp", "image", 90_000, 200.0),
    ]
    return {
        "id": uuid.uuid4().hex,
        "ts": at,
        "url": f"{ORIGIN}/products/{700 + i}",
        "device": "mobile",
        "browser": "safari",
        "connection": "4g",
        "resources": [
            {
                "type": "script",
                "count": 3,
                "transfer_bytes": 190_000,
                "decoded_bytes": 600_000,
                "duration_ms": 500.0,
                "render_blocking": 1,
                "cache_hits": 1,
            },
            {
                "type": "image",
                "count": 8,
                "transfer_bytes": 800_000 + 1000 * i,
                "decoded_bytes": 800_000,
                "duration_ms": 2000.0,
                "third_party": 4,
            },
            {
                "type": "font",
                "count": 1,
                "transfer_bytes": 52_000,
                "decoded_bytes": 52_000,
                "duration_ms": 150.0,
                "third_party": 1,
            },
            {
                "type": "stylesheet",
                "count": 2,
                "transfer_bytes": 30_000 * (i % 2),
                "decoded_bytes": 60_000,
                "duration_ms": 80.0,
                "render_blocking": 2,
                "cache_hits": 1 - i % 2,
            },
        ],
        "largest_resources": largest,
    }


@pytest.fixture(scope="module")
def largest(dashboard: Dashboard) -> Dashboard:
    window = {"from": dashboard.now - 7200}
    before = sum(
        g["count"]
        for g in dashboard.api("/api/v1/percentiles", metric="rum.resource.count", **window)[
            "groups"
        ]
    )
    for i in range(BEACONS):
        r = dashboard.server.beacon(_assets_beacon(i, dashboard.now - 300 - i))
        assert r.status_code == 202, r.text
    dashboard.server.wait_stored("rum.resource.count", count=before + 4 * BEACONS, timeout=30)
    return dashboard


def _open(page: Page, dashboard: Dashboard, **params: str) -> None:
    response = page.goto(dashboard.page_url("/assets", **params))
    assert response is not None and response.status == 200
    page.wait_for_selector("main#content h1")


def _rows(page: Page, table: str) -> list[dict[str, Any]]:
    """Each body row: its data-type, URL text and every numeric cell's data-value by class."""
    return list(
        js(
            page,
            f"""[...document.querySelectorAll('#{table} tbody tr')].map(tr => {{
                const row = {{type: tr.dataset.type, url: tr.querySelector('.url')?.textContent}};
                for (const td of tr.querySelectorAll('td[data-value]')) {{
                    row[td.classList[td.classList.length - 1]] =
                        td.dataset.value === '' ? null : Number(td.dataset.value);
                }}
                return row;
            }})""",
        )
    )


def _api(dashboard: Dashboard, path: str, **params: str) -> dict[str, Any]:
    return dashboard.api(path, **dashboard.window, **params)


def _share(part: float, whole: float) -> Any:
    return pytest.approx(part / whole, rel=1e-9)


def test_bytes_by_type_equal_the_rollup_and_breakdown_apis(
    page: Page, dashboard: Dashboard, largest: Dashboard
) -> None:
    _open(page, dashboard)
    got = {r["type"]: r for r in _rows(page, "types")}
    assert {"script", "image", "font", "stylesheet"} <= set(got)
    for metric, cell in (
        ("rum.resource.transfer", "transfer-p75"),
        ("rum.resource.decoded", "decoded-p75"),
        ("rum.resource.count", "resources-p75"),
    ):
        groups = _api(dashboard, "/api/v1/percentiles", metric=metric, by="type", q="0.75")
        assert len(groups["groups"]) == len(got)
        for g in groups["groups"]:
            row = got[g["key"]["type"]]
            assert row[cell] == pytest.approx(g["quantiles"]["0.75"], rel=1e-9), (metric, row)
            assert row["views"] == g["count"]
    raw = _api(
        dashboard,
        "/api/v1/breakdown",
        source="rum_resource",
        by="type",
        measure=",".join(f"sum:{c}" for c in SUMS),
        order="sum:transfer_bytes",
        limit="50",
    )["rows"]
    assert [r["type"] for r in _rows(page, "types")] == [r["type"] for r in raw]
    for r in raw:
        row = got[r["type"]]
        assert row["transfer-total"] == r["sum_transfer_bytes"]
        assert row["count"] == r["sum_count"]
        assert row["render-blocking"] == r["sum_render_blocking"]
        assert row["cache-hit-ratio"] == _share(r["sum_cache_hits"], r["sum_count"])
        assert row["third-party-share"] == _share(r["sum_third_party"], r["sum_count"])
    total = {c: sum(r[f"sum_{c}"] for r in raw) for c in SUMS}
    assert shown(page, "#overall [data-metric=transfer_bytes] .value") == total["transfer_bytes"]
    assert shown(page, "#overall [data-metric=third_party_share] .value") == _share(
        total["third_party"], total["count"]
    )
    assert shown(page, "#overall [data-metric=cache_hit_ratio] .value") == _share(
        total["cache_hits"], total["count"]
    )
    assert 0 < total["third_party"] < total["count"]
    drawn = charts_drawn(page)
    assert len(drawn) == 1 and drawn[0] > 0
    series = js(page, "JSON.parse(document.querySelector('#bytes-chart').dataset.chart).series")
    assert {s["label"] for s in series} >= {"script", "image", "font"}
    shot(page, "assets")
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "filters"),
    [
        ("largest", {}),
        ("render-blocking", {"render_blocking": "true"}),
        ("largest-images", {"type": "image"}),
        ("largest-fonts", {"type": "font"}),
    ],
)
def test_largest_resources_equal_the_breakdown_api(
    page: Page, dashboard: Dashboard, largest: Dashboard, table: str, filters: dict[str, str]
) -> None:
    _open(page, dashboard)
    api = _api(
        dashboard,
        "/api/v1/breakdown",
        source="rum_largest",
        by="url,type",
        measure=",".join(LARGEST),
        order="max:transfer_bytes",
        limit="10",
        **filters,
    )["rows"]
    assert 1 <= len(api) < 10
    got = _rows(page, table)
    assert [r["url"] for r in got] == [r["url"] for r in api]
    for row, want in zip(got, api, strict=True):
        assert row["type"] == want["type"]
        assert row["views"] == want["count"]
        assert row["transfer"] == want["max_transfer_bytes"]
        assert row["decoded"] == want["max_decoded_bytes"]
        assert row["duration"] == pytest.approx(want["p75_duration_ms"], rel=1e-9)
        assert row["cached"] == _share(want["true_cached"], want["count"])
        assert row["render-blocking"] == want["true_render_blocking"]
        assert row["third-party"] == want["true_third_party"]
    if "type" in filters:
        assert {r["type"] for r in got} == {filters["type"]}
    if filters.get("render_blocking"):
        assert {r["url"] for r in got} == {f"{ORIGIN}/static/app.js", f"{ORIGIN}/static/site.css"}
        texts = js(
            page,
            "[...document.querySelectorAll('#render-blocking td.render-blocking')].map(t => t.textContent)",
        )
        assert set(texts) == {"Yes"}
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_page_filter_narrows_the_numbers(
    page: Page, dashboard: Dashboard, largest: Dashboard
) -> None:
    _open(page, dashboard)
    everything = {r["type"]: r for r in _rows(page, "types")}
    options = js(
        page,
        "[...document.querySelectorAll('#filters select[name=page] option')].map(o => o.value)",
    )
    assert PAGE in options
    with page.expect_navigation():
        page.select_option("#filters select[name=page]", PAGE)
    assert "page=%2Fproducts%2F%7Bid%7D" in page.url
    only = {r["type"]: r for r in _rows(page, "types")}
    per_type = _api(
        dashboard,
        "/api/v1/percentiles",
        metric="rum.resource.transfer",
        by="type",
        q="0.75",
        page=PAGE,
    )["groups"]
    assert {t: only[t]["views"] for t in only} == {g["key"]["type"]: g["count"] for g in per_type}
    assert 0 < only["image"]["views"] < everything["image"]["views"]
    assert 0 < only["image"]["transfer-total"] < everything["image"]["transfer-total"]
    api = _api(
        dashboard,
        "/api/v1/breakdown",
        source="rum_largest",
        by="url,type",
        measure=",".join(LARGEST),
        order="max:transfer_bytes",
        page=PAGE,
    )["rows"]
    assert [(r["url"], r["views"]) for r in _rows(page, "largest")] == [
        (r["url"], r["count"]) for r in api
    ]
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_stored_resource_url_with_markup_stays_text(
    page: Page, dashboard: Dashboard, largest: Dashboard
) -> None:
    _open(page, dashboard)
    urls = [r["url"] for r in _rows(page, "largest-images")]
    assert EVIL_IMAGE in urls
    assert js(page, "document.querySelectorAll('main script, main img, img[src=x]').length") == 0
    assert page.evaluate("() => window.__xss") is None
    assert page.errors == []  # type: ignore[attr-defined]
