"""Compare and Setup in Chromium: release A beside release B with the numbers of
the percentiles API, and the snippets that point agents at this collector."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from tests.conftest import INGEST_KEY, PUBLIC_KEY

from perfpulse.web.pages.compare import SAME_WITHIN, version_key

from .conftest import Dashboard, shot, shown

VITALS = {
    "lcp": "rum.lcp",
    "inp": "rum.inp",
    "cls": "rum.cls",
    "fcp": "rum.fcp",
    "ttfb": "rum.ttfb",
}
RATING_LABELS = {"good": "Good", "needs_improvement": "Needs improvement", "poor": "Poor"}


def _group(dashboard: Dashboard, metric: str, release: str, **params: str) -> dict[str, Any]:
    answer = dashboard.api(
        "/api/v1/percentiles", metric=metric, release=release, **dashboard.window, **params
    )
    (group,) = answer["groups"]
    return dict(group)


def _expected(dashboard: Dashboard, release: str, **params: str) -> dict[str, float]:
    """Every compared number of one release, from the percentiles API."""
    out = {
        key: _group(dashboard, metric, release, q="0.75", **params)["quantiles"]["0.75"]
        for key, metric in VITALS.items()
    }
    http = _group(dashboard, "http.server.duration", release, q="0.5,0.95,0.99")
    out.update(
        http_p50=http["quantiles"]["0.5"],
        http_p95=http["quantiles"]["0.95"],
        http_p99=http["quantiles"]["0.99"],
        error_ratio=http["error_ratio"],
        throughput=http["count"]
        / (float(dashboard.window["to"]) - float(dashboard.window["from"])),
        db_p95=_group(dashboard, "db.query.duration", release, q="0.95")["quantiles"]["0.95"],
    )
    return out


def _row(page: Page, key: str) -> tuple[float, float]:
    return shown(page, f'#compare tr[data-key="{key}"] td.a'), shown(
        page, f'#compare tr[data-key="{key}"] td.b'
    )


def _releases(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#compare-form select[name=a] option", "os => os.map(o => o.value)"
    )


def test_compare_defaults_to_the_two_latest_releases_and_equals_the_api(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(dashboard.page_url("/compare"))
    releases = _releases(page)
    assert {"1.4.1", "1.4.2"} <= set(releases)
    newest = sorted(releases, key=version_key)[-2:]
    a = page.eval_on_selector("#compare-form select[name=a]", "s => s.value")
    b = page.eval_on_selector("#compare-form select[name=b]", "s => s.value")
    assert [a, b] == newest
    want_a, want_b = _expected(dashboard, a), _expected(dashboard, b)
    for key in want_a:
        got_a, got_b = _row(page, key)
        assert got_a == pytest.approx(want_a[key], rel=1e-9), key
        assert got_b == pytest.approx(want_b[key], rel=1e-9), key
        row = f'#compare tr[data-key="{key}"]'
        assert shown(page, f"{row} td.diff") == pytest.approx(want_b[key] - want_a[key])
        if want_a[key]:
            assert shown(page, f"{row} td.pct") == pytest.approx(
                (want_b[key] - want_a[key]) / want_a[key] * 100
            )
        else:  # no percentage of nothing
            assert page.get_attribute(f"{row} td.pct", "data-value") == ""
        verdict = page.get_attribute(f"{row} .verdict", "data-verdict")
        label = page.text_content(f"{row} .verdict")
        if abs(want_b[key] - want_a[key]) <= SAME_WITHIN * max(abs(want_a[key]), abs(want_b[key])):
            assert (verdict, label) == ("same", "Same")
        elif key == "throughput":
            assert verdict == ("higher" if want_b[key] > want_a[key] else "lower")
        else:
            better = want_b[key] < want_a[key]
            assert (verdict, label) == (("better", "Better") if better else ("worse", "Worse"))
            colour = page.get_attribute(f"{row} .verdict", "class") or ""
            assert ("good" if better else "poor") in colour.split()
    # vitals carry their rating as text and colour on both sides
    lcp = _group(dashboard, "rum.lcp", a, q="0.75")
    m = dashboard.api("/api/v1/vitals", by="", release=a, **dashboard.window)["groups"][0]
    assert (
        page.text_content('#compare tr[data-key="lcp"] td.a .rating')
        == (RATING_LABELS[m["metrics"]["LCP"]["rating"]])
    )
    assert m["metrics"]["LCP"]["p75"] == pytest.approx(lcp["quantiles"]["0.75"])
    shot(page, "compare")
    assert page.errors == []  # type: ignore[attr-defined]


def test_route_p95_per_release_equals_the_api(page: Page, dashboard: Dashboard) -> None:
    page.goto(dashboard.page_url("/compare", a="1.4.1", b="1.4.2"))
    by_route = {
        release: {
            g["key"]["route"]: g
            for g in dashboard.api(
                "/api/v1/percentiles",
                metric="http.server.duration",
                by="route",
                q="0.95",
                release=release,
                **dashboard.window,
            )["groups"]
        }
        for release in ("1.4.1", "1.4.2")
    }
    rows = page.query_selector_all("#compare-routes tbody tr")
    assert 0 < len(rows) <= 10
    shown_routes = [r.get_attribute("data-route") for r in rows]
    busiest = sorted(
        set(by_route["1.4.1"]) | set(by_route["1.4.2"]),
        key=lambda r: -sum(by_route[x].get(r, {"count": 0})["count"] for x in by_route),
    )
    assert set(shown_routes) == set(busiest[: len(rows)])
    for route in shown_routes:
        assert route is not None
        row = f'#compare-routes tr[data-route="{route}"]'
        for side, release in (("a", "1.4.1"), ("b", "1.4.2")):
            group = by_route[release].get(route)
            if group is None:
                assert page.get_attribute(f"{row} td.{side}", "data-value") == ""
            else:
                assert shown(page, f"{row} td.{side}") == pytest.approx(
                    group["quantiles"]["0.95"], rel=1e-9
                )


def test_changing_a_and_b_changes_the_url_and_the_numbers(page: Page, dashboard: Dashboard) -> None:
    page.goto(dashboard.page_url("/compare", a="1.4.1", b="1.4.2"))
    before = _row(page, "http_p95")
    page.select_option("#compare-form select[name=a]", "1.4.2")
    page.select_option("#compare-form select[name=b]", "1.4.1")
    with page.expect_navigation():
        page.click("#compare-form button[type=submit]")
    assert "a=1.4.2" in page.url and "b=1.4.1" in page.url and "range=custom" in page.url
    query = page.url.split("?", 1)[1]
    keys = [pair.split("=")[0] for pair in query.split("&")]
    assert sorted(keys) == sorted(set(keys)), query
    after = _row(page, "http_p95")
    assert after == (before[1], before[0]) and before[0] != before[1]
    assert after[0] == pytest.approx(
        _group(dashboard, "http.server.duration", "1.4.2", q="0.95")["quantiles"]["0.95"]
    )
    with page.expect_navigation():
        page.click("#swap")
    assert _row(page, "http_p95") == before
    # the global filter bar keeps A and B
    with page.expect_navigation():
        page.select_option("#filters select[name=service]", "shop")
    assert "a=1.4.1" in page.url and "b=1.4.2" in page.url and "service=shop" in page.url
    assert _row(page, "http_p95")[1] == pytest.approx(
        _group(dashboard, "http.server.duration", "1.4.2", q="0.95", service="shop")["quantiles"][
            "0.95"
        ]
    )


def test_the_page_filter_narrows_the_browser_numbers(page: Page, dashboard: Dashboard) -> None:
    page.goto(dashboard.page_url("/compare", a="1.4.1", b="1.4.2", page="/checkout"))
    for key, metric in VITALS.items():
        a, b = _row(page, key)
        assert a == pytest.approx(
            _group(dashboard, metric, "1.4.1", q="0.75", page="/checkout")["quantiles"]["0.75"]
        )
        assert b == pytest.approx(
            _group(dashboard, metric, "1.4.2", q="0.75", page="/checkout")["quantiles"]["0.75"]
        )
    # server numbers have no page: they stay those of the whole release
    assert _row(page, "http_p50")[0] == pytest.approx(
        _group(dashboard, "http.server.duration", "1.4.1", q="0.5")["quantiles"]["0.5"]
    )
    everything = _expected(dashboard, "1.4.1")
    assert _row(page, "lcp")[0] != pytest.approx(everything["lcp"])


# --- setup ----------------------------------------------------------------------------


def test_setup_shows_this_collector_and_the_public_key_never_the_ingest_key(
    page: Page, dashboard: Dashboard
) -> None:
    response = page.goto(dashboard.page_url("/setup"))
    assert response is not None and response.status == 200
    assert INGEST_KEY not in response.text()
    rum = page.text_content("pre#snippet-rum")
    assert rum == (
        f'<script>window.perfpulse={{endpoint:"{dashboard.url}",key:"{PUBLIC_KEY}",'
        'release:"",environment:"production",sampleRate:1};</script>\n'
        f'<script async src="{dashboard.url}/rum.js"></script>'
    )
    python = page.text_content("pre#snippet-python") or ""
    assert f'endpoint="{dashboard.url}",' in python
    assert 'key=os.environ["PERFPULSE_INGEST_KEY"],' in python
    assert "perfpulse.agent.init(" in python
    otlp = (page.text_content("pre#snippet-otlp") or "").splitlines()
    assert f"export OTEL_EXPORTER_OTLP_ENDPOINT={dashboard.url}" in otlp
    assert (
        'export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer ${PERFPULSE_INGEST_KEY}"' in otlp
    )
    assert page.query_selector_all("main script") == []  # the snippet is text
    # every snippet has its copy button
    for pre in page.query_selector_all("pre.snippet"):
        target = f"#{pre.get_attribute('id')}"
        assert page.query_selector(f'button.copy[data-copy-target="{target}"]') is not None
    shot(page, "setup")
    assert page.errors == []  # type: ignore[attr-defined]


def test_copy_button_puts_the_snippet_on_the_clipboard(
    context: BrowserContext, page: Page, dashboard: Dashboard
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.url)
    page.goto(dashboard.page_url("/setup"))
    button = 'button.copy[data-copy-target="#snippet-rum"]'
    assert page.text_content(button) == "Copy"
    page.click(button)
    page.wait_for_function(
        f"() => document.querySelector('{button}').textContent == 'Copied'", timeout=10_000
    )
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == page.text_content("pre#snippet-rum")
    assert PUBLIC_KEY in copied
    page.click('button.copy[data-copy-target="#snippet-otlp"]')
    page.wait_for_function(
        "() => document.querySelector('button.copy[data-copy-target=\"#snippet-otlp\"]')"
        ".textContent == 'Copied'",
        timeout=10_000,
    )
    assert page.evaluate("() => navigator.clipboard.readText()").startswith(
        f"export OTEL_EXPORTER_OTLP_ENDPOINT={dashboard.url}\n"
    )
    assert page.errors == []  # type: ignore[attr-defined]
