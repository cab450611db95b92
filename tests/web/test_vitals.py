"""Web Vitals page in Chromium: p75s, ratings and distributions equal the query
API's, attribution tables equal the breakdown API's, the metric and split links
live in the URL, the page filter narrows, and stored markup stays text."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page
from tests.conftest import ORIGIN

from .conftest import XSS, Dashboard, charts_drawn, js, shot, shown

LABELS = {"good": "Good", "needs_improvement": "Needs improvement", "poor": "Poor"}
SCRIPTS = ("https://cdn.example/js/vendor.js", "https://shop.example/static/app.js")
BEACONS = 9
OLD_SCRIPT = "https://old.example/js/legacy.js"
DAY = 86_400


def _runtime_beacon(i: int, at: float) -> dict[str, Any]:
    """A page view with long animation frames and an INP script (the demo has neither)."""
    script = SCRIPTS[i % 2] if i < BEACONS - 1 else "https://cdn.example/" + XSS
    return {
        "id": uuid.uuid4().hex,
        "ts": at,
        "url": f"{ORIGIN}/checkout",
        "device": "desktop",
        "browser": "chrome",
        "connection": "4g",
        "vitals": [
            {"name": "LCP", "value": 1500.0 + 100 * i, "attribution": {"element": "h1.title"}},
            {
                "name": "INP",
                "value": 150.0 + 40 * i,
                "attribution": {"target": "button#pay", "type": "pointer", "script": script},
            },
        ],
        "long_tasks": {
            "count": 2,
            "total_ms": 260.0,
            "tbt_ms": 160.0,
            "max_ms": 150.0,
            "loaf_count": 3,
            "loaf_total_ms": 400.0,
            "worst_script": script,
            "worst_script_ms": 90.0 + 10 * i,
        },
    }


@pytest.fixture(scope="module")
def runtime(dashboard: Dashboard) -> Dashboard:
    window = {"from": dashboard.now - 7200}
    before = sum(
        g["count"]
        for g in dashboard.api("/api/v1/percentiles", metric="rum.lcp", **window)["groups"]
    )
    old = _runtime_beacon(0, dashboard.now - 30 * 3600)  # outside the raw day of a 2-day view
    old["long_tasks"]["worst_script"] = OLD_SCRIPT
    assert dashboard.server.beacon(old).status_code == 202
    for i in range(BEACONS):
        r = dashboard.server.beacon(_runtime_beacon(i, dashboard.now - 200 - i))
        assert r.status_code == 202, r.text
    dashboard.server.wait_stored("rum.lcp", count=before + BEACONS, timeout=30)
    return dashboard


def _open(page: Page, dashboard: Dashboard, **params: str) -> None:
    response = page.goto(dashboard.page_url("/vitals", **params))
    assert response is not None and response.status == 200
    page.wait_for_selector("main#content h1")


def _table(page: Page, selector: str) -> list[dict[str, Any]]:
    """Each body row of a table: its key text, data-key, and the data-values by cell class."""
    return list(
        js(
            page,
            f"""[...document.querySelectorAll('{selector} tbody tr')].map(tr => ({{
                text: tr.querySelector('.key').textContent.trim(),
                key: tr.dataset.key,
                count: Number(tr.querySelector('.count').dataset.value),
                p75: Number(tr.querySelector('.p75').dataset.value),
                total: tr.querySelector('.total') ? Number(tr.querySelector('.total').dataset.value) : null,
                rating: tr.querySelector('.rating') ? tr.querySelector('.rating').textContent : null,
            }}))""",
        )
    )


def _breakdown(dashboard: Dashboard, **params: str) -> list[dict[str, Any]]:
    return list(dashboard.api("/api/v1/breakdown", **dashboard.window, **params)["rows"])


def test_cards_distribution_and_split_equal_the_vitals_api(
    page: Page, dashboard: Dashboard, runtime: Dashboard
) -> None:
    _open(page, dashboard)
    whole = dashboard.api("/api/v1/vitals", by="", **dashboard.window)["groups"][0]["metrics"]
    for name in ("LCP", "INP", "CLS", "FCP", "TTFB", "FID"):
        card = f"#summary .card[data-metric={name}]"
        assert shown(page, f"{card} .value") == pytest.approx(whole[name]["p75"], rel=1e-9)
        assert shown(page, f"{card} .count") == whole[name]["count"]
        assert page.text_content(f"{card} .rating") == LABELS[whole[name]["rating"]]
    lcp = whole["LCP"]
    for share, segment in (("good", "good"), ("needs_improvement", "ni"), ("poor", "poor")):
        bar = page.get_attribute("#distribution .dist", f"data-{segment}")
        assert float(bar or "nan") == pytest.approx(lcp[share], rel=1e-9)
        width = page.get_attribute(f"#distribution .dist .{segment}", "style")
        assert width == f"width:{lcp[share] * 100:.1f}%"
    assert 0 < lcp["good"] < 1

    by_page = dashboard.api("/api/v1/vitals", by="page", **dashboard.window)["groups"]
    api = {g["key"]["page"]: g["metrics"]["LCP"] for g in by_page if "LCP" in g["metrics"]}
    table = _table(page, "#split")
    assert {r["key"] for r in table} == set(api) and len(api) >= 6
    for row in table:
        want = api[row["key"]]
        assert row["p75"] == pytest.approx(want["p75"], rel=1e-9)
        assert row["count"] == want["count"]
        assert row["rating"] == LABELS[want["rating"]]
    drawn = charts_drawn(page)
    assert len(drawn) == 4 and all(n > 0 for n in drawn), drawn
    assert page.get_attribute("#vital-chart", "data-chart") is not None
    shot(page, "vitals")
    assert page.errors == []  # type: ignore[attr-defined]


def test_metric_and_split_links_change_the_url_and_the_table(
    page: Page, dashboard: Dashboard, runtime: Dashboard
) -> None:
    _open(page, dashboard, service="web")
    lcp_rows = _table(page, "#split")
    with page.expect_navigation():
        page.click("#metric-tabs a[data-metric=INP]")
    assert "metric=INP" in page.url and "service=web" in page.url and "range=custom" in page.url
    assert page.get_attribute("#metric-tabs a[aria-current=page]", "data-metric") == "INP"
    assert page.get_attribute("#split", "data-metric") == "INP"
    inp = dashboard.api(
        "/api/v1/percentiles",
        metric="rum.inp",
        by="page",
        q="0.75",
        service="web",
        **dashboard.window,
    )["groups"]
    inp_rows = _table(page, "#split")
    assert inp_rows != lcp_rows
    assert {r["key"]: (r["p75"], r["count"]) for r in inp_rows} == {
        g["key"]["page"]: (pytest.approx(g["quantiles"]["0.75"], rel=1e-9), g["count"]) for g in inp
    }

    with page.expect_navigation():
        page.click("#split-tabs a[data-by=device]")
    assert "by=device" in page.url and "metric=INP" in page.url
    assert page.get_attribute("#split", "data-by") == "device"
    devices = dashboard.api("/api/v1/vitals", by="device", service="web", **dashboard.window)[
        "groups"
    ]
    want = {g["key"]["device"]: g["metrics"]["INP"] for g in devices if "INP" in g["metrics"]}
    got = _table(page, "#split")
    assert {r["key"] for r in got} == {"desktop", "mobile", "tablet"} == set(want)
    for row in got:
        assert row["p75"] == pytest.approx(want[row["key"]]["p75"], rel=1e-9)
        assert row["count"] == want[row["key"]]["count"]
        assert row["rating"] == LABELS[want[row["key"]]["rating"]]
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("metric", "tables"),
    [
        ("LCP", {"lcp-elements": "element", "lcp-urls": "url"}),
        ("INP", {"inp-targets": "target", "inp-scripts": "script"}),
        ("CLS", {"cls-targets": "target"}),
    ],
)
def test_attribution_hot_spots_equal_the_breakdown_api(
    page: Page, dashboard: Dashboard, runtime: Dashboard, metric: str, tables: dict[str, str]
) -> None:
    _open(page, dashboard, metric=metric)
    shown_tables = js(page, "[...document.querySelectorAll('table.hot-spots')].map(t => t.id)")
    assert shown_tables == list(tables)
    for table_id, key in tables.items():
        api = [
            r
            for r in _breakdown(
                dashboard,
                source="rum_vital",
                name=metric,
                by=f"attribution.{key}",
                measure="count,p75:value",
                limit="11",
            )
            if r[f"attribution.{key}"] is not None
        ][:10]
        assert 1 <= len(api) < 10  # all of them: rows with equal counts may come in any order
        got = _table(page, f"#{table_id}")
        assert {r["text"]: (r["count"], r["p75"]) for r in got} == {
            r[f"attribution.{key}"]: (r["count"], pytest.approx(r["p75_value"], rel=1e-9))
            for r in api
        }
        counts = [r["count"] for r in got]
        assert counts == sorted(counts, reverse=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_worst_scripts_equal_the_breakdown_api(
    page: Page, dashboard: Dashboard, runtime: Dashboard
) -> None:
    _open(page, dashboard, metric="FID")
    assert page.query_selector("table.hot-spots") is None  # FID has no hot-spot tables
    api = _breakdown(
        dashboard,
        source="rum_view",
        by="worst_script",
        measure="count,sum:worst_script_ms,p75:worst_script_ms",
        order="sum:worst_script_ms",
        limit="11",
    )
    api = [r for r in api if r["worst_script"] is not None]
    got = _table(page, "#worst-scripts")
    assert [r["text"] for r in got] == [r["worst_script"] for r in api]
    assert len(got) == 3
    for row, want in zip(got, api, strict=True):
        assert row["count"] == want["count"]
        assert row["total"] == pytest.approx(want["sum_worst_script_ms"], rel=1e-9)
        assert row["p75"] == pytest.approx(want["p75_worst_script_ms"], rel=1e-9)
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_page_filter_narrows_the_numbers(
    page: Page, dashboard: Dashboard, runtime: Dashboard
) -> None:
    _open(page, dashboard, metric="INP")
    everything = shown(page, "#summary .card[data-metric=INP] .count")
    with page.expect_navigation():
        page.select_option("#filters select[name=page]", "/checkout")
    assert "page=%2Fcheckout" in page.url and "metric=INP" in page.url
    only = dashboard.api("/api/v1/vitals", by="", page="/checkout", **dashboard.window)
    inp = only["groups"][0]["metrics"]["INP"]
    assert shown(page, "#summary .card[data-metric=INP] .count") == inp["count"] < everything
    assert shown(page, "#summary .card[data-metric=INP] .value") == pytest.approx(inp["p75"])
    assert [r["key"] for r in _table(page, "#split")] == ["/checkout"]
    api = _breakdown(
        dashboard,
        source="rum_vital",
        name="INP",
        page="/checkout",
        by="attribution.target",
        measure="count,p75:value",
        limit="11",
    )
    want = {r["attribution.target"]: r["count"] for r in api if r["attribution.target"]}
    assert {r["text"]: r["count"] for r in _table(page, "#inp-targets")} == want
    assert want["button#pay"] == BEACONS
    scripts = _table(page, "#worst-scripts")
    assert sum(r["count"] for r in scripts) == BEACONS  # only the checkout views have them
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("metric", "tables"),
    [("LCP", ("lcp-elements", "lcp-urls")), ("INP", ("inp-targets",)), ("CLS", ("cls-targets",))],
)
def test_stored_markup_renders_as_text(
    page: Page, dashboard: Dashboard, runtime: Dashboard, metric: str, tables: tuple[str, ...]
) -> None:
    _open(page, dashboard, metric=metric)
    for table_id in (*tables, "worst-scripts"):
        texts = [r["text"] for r in _table(page, f"#{table_id}")]
        assert any(XSS in t for t in texts), (table_id, texts)
    injected = js(
        page,
        "[...document.querySelectorAll('main script, main img, img[src=x]')].length",
    )
    assert injected == 0
    assert page.evaluate("() => window.__xss") is None
    assert page.errors == []  # type: ignore[attr-defined]


def test_raw_tables_read_the_last_day_of_a_longer_window(
    page: Page, dashboard: Dashboard, runtime: Dashboard
) -> None:
    start, end = dashboard.now - 2 * DAY, dashboard.now + 60
    window = {"from": repr(start), "to": repr(end)}
    _open(page, dashboard, metric="INP", **window)
    assert "last 24 hours" in (page.text_content(".raw-window") or "")
    api = dashboard.api(
        "/api/v1/breakdown",
        source="rum_view",
        by="worst_script",
        measure="count,sum:worst_script_ms,p75:worst_script_ms",
        order="sum:worst_script_ms",
        limit="11",
        **{"from": repr(end - DAY), "to": repr(end)},
    )["rows"]
    got = {r["text"]: r["count"] for r in _table(page, "#worst-scripts")}
    assert got == {r["worst_script"]: r["count"] for r in api if r["worst_script"]}
    assert OLD_SCRIPT not in got and SCRIPTS[0] in got
    # the rollups still answer for the whole window: the old view counts in the INP card
    hour = dashboard.api("/api/v1/vitals", by="", **dashboard.window)["groups"][0]["metrics"]
    days = dashboard.api("/api/v1/vitals", by="", **window)["groups"][0]["metrics"]
    assert days["INP"]["count"] == hour["INP"]["count"] + 1
    assert shown(page, "#summary .card[data-metric=INP] .count") == days["INP"]["count"]
    assert page.errors == []  # type: ignore[attr-defined]


def test_an_unknown_vital_or_split_is_refused(page: Page, dashboard: Dashboard) -> None:
    for params, message in (
        ({"metric": "XYZ"}, "unknown vital 'XYZ'"),
        ({"by": "colour"}, "unknown split 'colour'"),
    ):
        response = page.goto(dashboard.page_url("/vitals", **params))
        assert response is not None and response.status == 400
        assert message in (page.text_content("main .error") or "")
