"""Overview in Chromium: the numbers equal the query API's, charts draw, filters
live in the URL, live refresh swaps the content."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from .conftest import Dashboard, shot, shown


def _open(page: Page, dashboard: Dashboard, **params: str) -> None:
    page.goto(dashboard.page_url("/", **params))
    page.wait_for_selector("main#content h1")


def test_vitals_cards_equal_the_vitals_api(page: Page, dashboard: Dashboard) -> None:
    _open(page, dashboard)
    api = dashboard.api("/api/v1/vitals", by="", **dashboard.window)
    metrics = api["groups"][0]["metrics"]
    for name in ("LCP", "INP", "CLS"):
        value = shown(page, f".card[data-metric={name}] .value")
        assert value == pytest.approx(metrics[name]["p75"], rel=1e-9)
        label = page.text_content(f".card[data-metric={name}] .rating")
        assert (
            label
            == {"good": "Good", "needs_improvement": "Needs improvement", "poor": "Poor"}[
                metrics[name]["rating"]
            ]
        )
    sparks = page.query_selector_all(".spark[data-drawn]")
    assert len(sparks) == 9
    assert all(int(s.get_attribute("data-drawn") or 0) >= 2 for s in sparks[:3])
    shot(page, "overview")
    assert page.errors == []  # type: ignore[attr-defined]


def test_backend_cards_equal_the_percentiles_api(page: Page, dashboard: Dashboard) -> None:
    _open(page, dashboard, service="shop")
    api = dashboard.api(
        "/api/v1/percentiles",
        metric="http.server.duration",
        service="shop",
        apdex="500",
        **dashboard.window,
    )["groups"][0]
    assert shown(page, ".card[data-metric=p95] .value") == pytest.approx(api["quantiles"]["0.95"])
    assert shown(page, ".card[data-metric=error_ratio] .value") == pytest.approx(api["error_ratio"])
    assert shown(page, ".card[data-metric=apdex] .value") == pytest.approx(api["apdex"])
    assert 0.0 < api["apdex"] <= 1.0


def test_a_filter_change_updates_the_url_and_the_numbers(page: Page, dashboard: Dashboard) -> None:
    _open(page, dashboard)
    everything = shown(page, ".card[data-metric=throughput] .value")
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "api")
    assert "service=api" in page.url and "page=" not in page.url
    only_api = shown(page, ".card[data-metric=throughput] .value")
    assert 0 < only_api < everything
    assert page.get_attribute("#filters select[name=service] option:checked", "value") == "api"


def test_live_refresh_replaces_the_content_without_reload(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/?range=1h&refresh=2")
    assert page.get_attribute("main", "data-refresh") == "2"
    page.evaluate("() => { window.__same = 1; }")
    page.wait_for_function(
        "() => Number(document.querySelector('main').dataset.refreshed || 0) >= 1", timeout=15_000
    )
    assert page.evaluate("() => window.__same") == 1  # the page was not reloaded
    assert page.query_selector(".card[data-metric=LCP] .value") is not None


def test_stored_markup_in_a_page_url_stays_text(page: Page, dashboard: Dashboard) -> None:
    _open(page, dashboard)
    options = page.eval_on_selector_all(
        "#filters select[name=page] option", "os => os.map(o => o.textContent)"
    )
    evil = [o for o in options if "<script>" in o]
    assert evil, options  # the page's path, markup included, shown as text
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector("img[src=x]") is None
    with page.expect_navigation():
        page.select_option("#filters select[name=page]", evil[0])
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector("img[src=x]") is None
    assert evil[0] in page.text_content(".window")
