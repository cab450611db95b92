"""The dashboard's client bundle (static/dashboard.js and dashboard.css) in real
headless Chromium, on a fixture page served from a loopback port under the
dashboard's CSP.

``client_fixture.html`` holds the markup the server renders: charts, a
sparkline, a distribution bar, a sortable table, the filter bar, a copy button
and live refresh. ``/page`` serves it without refresh, ``/live`` refreshing
every second; a request carrying ``X-Perfpulse-Partial: 1`` gets what the test
set in ``Site.reply`` (by default a fresh fragment of main's content), and the
site records every page load and partial request it served. Chromium is the
package's ``browser`` fixture (conftest.py): one sync Playwright per package,
since a second one cannot start while it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "src" / "perfpulse" / "web" / "static"
BUNDLES = ("dashboard.js", "dashboard.css")
SOURCES = [
    *(ROOT / "browser" / "src" / "dashboard").glob("*.js"),
    ROOT / "browser" / "src" / "dashboard.css",
]
FIXTURE = Path(__file__).with_name("client_fixture.html")
CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'"
PAGES = {"/page": "0", "/live": "1"}  # path → data-refresh
BY_P95 = ["/b", "/e", "/a", "/d", "/c"]  # 9, 30, 120.5, 1500, then "–" last
HOSTILE = "<img src=x onerror=alert(1)>"


def fragment(n: int) -> str:
    """Main's new content, as the server sends it for a partial request."""
    chart = {
        "title": "Refreshed",
        "unit": "ratio",
        "x": [1764000000, 1764000060],
        "series": [{"label": "errors", "values": [0.01, 0.02]}],
    }
    rows = "".join(
        f'<tr><td>{r}</td><td class="num" data-value="{v}">{v}</td></tr>'
        for r, v in [("/a", 120.5), ("/b", 9), ("/c", ""), ("/d", 1500), ("/e", 30)]
    )
    return (
        f'<p id="fresh">refresh {n}</p>'
        f'<div class="chart" id="fresh-chart" data-chart=\'{json.dumps(chart)}\'></div>'
        '<table class="data sortable" id="routes"><thead><tr><th data-sort="text">Route</th>'
        f'<th data-sort="num" class="num">p95</th></tr></thead><tbody>{rows}</tbody></table>'
    )


class Handler(BaseHTTPRequestHandler):
    server: SiteServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        url = urlsplit(self.path)
        if url.path.startswith("/static/") and url.path[8:] in BUNDLES:
            kind = "text/javascript" if url.path.endswith(".js") else "text/css"
            self.reply(200, kind, (STATIC / url.path[8:]).read_bytes())
        elif url.path in PAGES and self.headers.get("X-Perfpulse-Partial"):
            with site.lock:
                site.partials.append({k.lower(): v for k, v in self.headers.items()})
                status, body = site.reply
                body = fragment(len(site.partials)) if body is None else body
            self.reply(status, "text/html; charset=utf-8", body.encode())
        elif url.path in PAGES:
            with site.lock:
                site.pages.append(self.path)
            html = FIXTURE.read_text().replace("__REFRESH__", PAGES[url.path])
            self.reply(200, "text/html; charset=utf-8", html.encode())
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class Site:
    """The fixture page and the built bundles on a loopback port."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pages: list[str] = []  # path and query of each full page load
        self.partials: list[dict[str, str]] = []  # headers of each partial request
        self.reply: tuple[int, str | None] = (200, None)  # None: a fresh fragment
        self.httpd = SiteServer(("127.0.0.1", 0), Handler)
        self.httpd.site = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.pages.clear()
            self.partials.clear()
            self.reply = (200, None)

    def partial_count(self) -> int:
        with self.lock:
            return len(self.partials)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class Tab:
    """A fresh browser context on the site, with what the page reported."""

    def __init__(self, page: Page, site: Site) -> None:
        self.page = page
        self.site = site
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        # Chromium logs every non-2xx response as an error; the tests that ask
        # for one check the page's reaction instead.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str = "/page") -> None:
        self.page.goto(self.site.url + path)
        self.page.wait_for_selector("#lcp[data-drawn]")

    def attr(self, selector: str, name: str) -> str | None:
        return self.page.get_attribute(selector, name)

    def column(self, n: int = 1) -> list[str]:
        return self.page.eval_on_selector_all(
            "#routes tbody tr", f"rows => rows.map(r => r.cells[{n - 1}].textContent.trim())"
        )

    def legend_at(self, chart: str, fraction: float) -> str:
        """The first series' legend value with the cursor at ``fraction`` of the plot's width."""
        box = self.page.locator(f"{chart} .u-over").bounding_box()
        assert box is not None
        x = box["x"] + min(box["width"] - 1, max(1, box["width"] * fraction))
        self.page.mouse.move(x, box["y"] + box["height"] / 2)
        return (
            self.page.locator(f"{chart} .u-legend .u-series")
            .nth(1)
            .locator(".u-value")
            .inner_text()
        )

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.page.url).query, keep_blank_values=True)


def wait_until(page: Page, check: Any, timeout: float = 5.0) -> None:
    """Wait for ``check()`` while Playwright keeps serving the page's events (routes)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    for name in BUNDLES:
        bundle = STATIC / name
        if not bundle.is_file():
            pytest.fail(
                f"{bundle} is missing: build it with `make` (or `cd browser && npm run build`)"
            )
        stale = [s.name for s in SOURCES if s.stat().st_mtime > bundle.stat().st_mtime]
        if stale:
            pytest.fail(
                f"{name} is older than {stale}: rebuild it with `make` (or `cd browser && npm run build`)"
            )
    s = Site()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def tab(browser: Browser, site: Site) -> Iterator[Tab]:
    site.reset()
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    context.add_cookies([{"name": "perfpulse_session", "value": "s1", "url": site.url}])
    try:
        t = Tab(context.new_page(), site)
        yield t
        assert t.errors == []
        assert t.dialogs == []
    finally:
        context.close()


# --- charts and sparklines ---------------------------------------------------------


def count_pixels(tab: Tab, chart: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of the chart's canvas within a few levels of ``rgb`` (thresholds are drawn in their own colour)."""
    return int(
        tab.page.evaluate(
            """([sel, [r, g, b]]) => {
                const c = document.querySelector(sel + ' canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4)
                    if (d[i + 3] > 64 && Math.abs(d[i] - r) < 12 && Math.abs(d[i + 1] - g) < 12 && Math.abs(d[i + 2] - b) < 12) n++;
                return n;
            }""",
            [chart, list(rgb)],
        )
    )


GOOD, POOR = (0x00, 0x9E, 0x73), (0xD5, 0x5E, 0x00)


def test_chart_draws_its_points_formatted_by_unit(tab: Tab) -> None:
    tab.open()
    assert tab.attr("#lcp", "data-drawn") == "3"
    assert tab.page.locator("#lcp canvas").count() == 1
    assert tab.page.inner_text("#lcp .chart-title") == "LCP p75"
    assert (
        tab.page.locator("#lcp .u-legend .u-series").nth(1).locator(".u-label").inner_text()
        == "p75"
    )
    # values 2100, null, 2600, 3900 ms: seconds from 1000 ms, a gap shows as "–"
    assert tab.legend_at("#lcp", 0) == "2.1 s"
    assert tab.legend_at("#lcp", 1 / 3) == "–"
    assert tab.legend_at("#lcp", 2 / 3) == "2.6 s"
    assert tab.legend_at("#lcp", 1) == "3.9 s"
    # the same container, in bytes
    assert tab.legend_at("#hostile", 0) == "2 KB"
    assert tab.legend_at("#hostile", 1) == "3 KB"


def test_chart_draws_thresholds_as_lines(tab: Tab) -> None:
    tab.open()
    # good (2500) and poor (4000, near the 3900 maximum) are both in range
    assert count_pixels(tab, "#lcp", GOOD) > 100
    assert count_pixels(tab, "#lcp", POOR) > 100
    # a chart without thresholds has neither colour
    assert count_pixels(tab, "#hostile", GOOD) == 0
    assert count_pixels(tab, "#hostile", POOR) == 0


def test_chart_fills_its_container_and_follows_resizes(tab: Tab) -> None:
    tab.open()

    def widths() -> tuple[float, float]:
        return tuple(  # type: ignore[return-value]
            tab.page.evaluate(
                """() => {
                    const c = document.querySelector('#lcp'), s = getComputedStyle(c);
                    const inner = c.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
                    return [inner, c.querySelector('.uplot').getBoundingClientRect().width];
                }"""
            )
        )

    inner, plot = widths()
    assert plot == pytest.approx(inner, abs=1)
    assert tab.page.locator("#lcp canvas").bounding_box()["height"] == 220  # type: ignore[index]
    tab.page.set_viewport_size({"width": 480, "height": 900})
    tab.page.wait_for_function(
        "w => document.querySelector('#lcp .uplot').getBoundingClientRect().width < w - 100",
        arg=plot,
    )
    inner2, plot2 = widths()
    assert plot2 == pytest.approx(inner2, abs=1)
    assert plot2 < plot


def test_empty_chart_says_so(tab: Tab) -> None:
    tab.open()
    assert tab.attr("#empty", "data-drawn") == "0"
    assert tab.page.inner_text("#empty .no-data") == "No data in this range"
    assert tab.page.locator("#empty canvas").count() == 0


def test_sparkline_draws_runs_between_gaps(tab: Tab) -> None:
    tab.open()
    assert tab.attr("#spark", "data-drawn") == "4"
    svg = tab.page.locator("#spark svg")
    assert (svg.get_attribute("width"), svg.get_attribute("height")) == ("100", "24")
    # [3, 5, null, 4, 6]: two runs of two points
    assert tab.page.locator("#spark svg polyline").count() == 2


def test_markup_in_chart_data_stays_text(tab: Tab) -> None:
    tab.open()
    assert tab.attr("#hostile", "data-drawn") == "2"
    assert tab.page.inner_text("#hostile .chart-title") == HOSTILE
    label = tab.page.locator("#hostile .u-legend .u-series").nth(1).locator(".u-label")
    assert label.inner_text() == "<img src=y onerror=alert(2)>"
    assert tab.page.evaluate("() => document.querySelectorAll('img').length") == 0


def test_distribution_labels_hide_when_they_do_not_fit(tab: Tab) -> None:
    tab.open()
    classes = tab.page.eval_on_selector_all(".dist > *", "s => s.map(e => e.className)")
    assert classes == ["good", "ni narrow", "poor narrow"]


# --- tables ---------------------------------------------------------------------


def test_numeric_header_sorts_both_ways_with_blanks_last(tab: Tab) -> None:
    tab.open()
    p95 = "#routes th[data-sort=num]"
    tab.page.click(p95)
    assert tab.column() == BY_P95
    assert tab.attr(p95, "aria-sort") == "ascending"
    tab.page.click(p95)
    assert tab.column() == ["/d", "/a", "/e", "/b", "/c"]
    assert tab.attr(p95, "aria-sort") == "descending"


def test_headers_sort_from_the_keyboard(tab: Tab) -> None:
    tab.open()
    route, p95 = "#routes th[data-sort=text]", "#routes th[data-sort=num]"
    assert tab.attr(route, "tabindex") == tab.attr(p95, "tabindex") == "0"
    tab.page.focus(p95)
    tab.page.keyboard.press("Enter")
    assert tab.column() == BY_P95
    tab.page.focus(route)
    tab.page.keyboard.press(" ")
    assert tab.column() == ["/a", "/b", "/c", "/d", "/e"]
    assert tab.attr(route, "aria-sort") == "ascending"
    assert tab.attr(p95, "aria-sort") is None
    tab.page.keyboard.press(" ")
    assert tab.column() == ["/e", "/d", "/c", "/b", "/a"]
    assert tab.page.evaluate("() => scrollY") == 0  # Space did not scroll the page


# --- filters --------------------------------------------------------------------


def test_changing_a_select_navigates_without_empty_fields(tab: Tab) -> None:
    tab.open()
    tab.page.select_option("select[name=service]", "shop")
    tab.page.wait_for_url("**/page?*")
    assert tab.query() == {"range": ["1h"], "service": ["shop"], "by": ["route"]}
    assert tab.site.pages == ["/page", "/page?range=1h&service=shop&by=route"]


def test_custom_range_waits_for_the_submit_button(tab: Tab) -> None:
    tab.open()
    assert tab.page.is_hidden("#custom-range")
    tab.page.select_option("select[name=range]", "custom")
    assert tab.page.is_visible("input[name=from]") and tab.page.is_visible("input[name=to]")
    tab.page.wait_for_timeout(500)
    assert tab.page.url == tab.site.url + "/page"
    assert tab.site.pages == ["/page"]
    tab.page.fill("input[name=from]", "2026-11-20T08:00")
    tab.page.fill("input[name=to]", "2026-11-20T12:00")
    tab.page.click("#filters button[type=submit]")
    tab.page.wait_for_url("**/page?*")
    assert tab.query() == {
        "range": ["custom"],
        "from": ["2026-11-20T08:00"],
        "to": ["2026-11-20T12:00"],
        "by": ["route"],
    }
    # filled-in range inputs that are hidden again stay out of the URL
    tab.page.wait_for_selector("#lcp[data-drawn]")
    tab.page.select_option("select[name=range]", "custom")
    tab.page.fill("input[name=from]", "2026-11-20T08:00")
    tab.page.select_option("select[name=range]", "24h")
    tab.page.wait_for_url("**/page?range=24h*")
    assert tab.query() == {"range": ["24h"], "by": ["route"]}


# --- live refresh ---------------------------------------------------------------


def refreshed(tab: Tab) -> int:
    return int(tab.attr("#content", "data-refreshed") or "0")


def test_live_refresh_swaps_main_content(tab: Tab) -> None:
    tab.open("/live")
    tab.page.click("#routes th[data-sort=num]")
    tab.page.wait_for_function("() => +document.querySelector('#content').dataset.refreshed >= 2")
    n = refreshed(tab)
    assert tab.page.inner_text("#fresh") == f"refresh {n}"
    assert tab.page.locator("#lcp").count() == 0
    assert tab.attr("#fresh-chart", "data-drawn") == "2"
    assert tab.page.locator("#fresh-chart canvas").count() == 1
    assert tab.legend_at("#fresh-chart", 1) == "2%"  # ratio 0.02
    # the new table is sortable, and keeps the order the user chose
    assert tab.column() == BY_P95
    assert tab.attr("#routes th[data-sort=num]", "aria-sort") == "ascending"
    assert tab.attr("#routes th[data-sort=num]", "tabindex") == "0"
    tab.page.wait_for_function(
        "n => +document.querySelector('#content').dataset.refreshed > n", arg=n
    )
    with tab.site.lock:
        sent = list(tab.site.partials)
    assert len(sent) >= 3
    assert all(h["x-perfpulse-partial"] == "1" for h in sent)
    assert all(h.get("cookie") == "perfpulse_session=s1" for h in sent)
    assert tab.site.pages == ["/live"]  # the page itself was loaded once


@pytest.mark.parametrize("status", [500, 0])
def test_live_refresh_keeps_content_on_errors(tab: Tab, status: int) -> None:
    failed: list[str] = []
    if status:
        tab.site.reply = (status, "<p id=fresh>server error page</p>")
    else:  # the network fails

        def drop(route: Any) -> None:
            if route.request.headers.get("x-perfpulse-partial"):
                failed.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        tab.page.route("**/live", drop)
    tab.open("/live")
    wait_until(
        tab.page, lambda: len(failed) + tab.site.partial_count() >= 3
    )  # it retries every tick
    assert tab.page.locator("#fresh").count() == 0
    assert tab.attr("#lcp", "data-drawn") == "3"
    assert tab.attr("#content", "data-refreshed") is None
    assert tab.page.is_checked("#live")


@pytest.mark.parametrize("status", [401, 403])
def test_expired_session_stops_refreshing(tab: Tab, status: int) -> None:
    tab.site.reply = (status, "")
    tab.open("/live")
    link = tab.page.wait_for_selector("#session-expired a")
    assert link.get_attribute("href") == "/login"
    assert link.inner_text() == "Session expired — log in again"
    assert tab.page.is_checked("#live") is False
    assert tab.attr("#lcp", "data-drawn") == "3"  # the old content stays
    tab.page.wait_for_timeout(2500)
    assert tab.site.partial_count() == 1


def test_live_checkbox_is_remembered(tab: Tab) -> None:
    tab.open("/live")
    tab.page.uncheck("#live")
    before = tab.site.partial_count()
    tab.page.wait_for_timeout(2000)
    assert tab.site.partial_count() == before <= 1
    assert tab.page.evaluate("() => localStorage.getItem('perfpulse.live')") == "0"
    tab.page.reload()
    tab.page.wait_for_selector("#lcp[data-drawn]")
    assert tab.page.is_checked("#live") is False
    tab.page.wait_for_timeout(2000)
    assert tab.site.partial_count() == before
    tab.page.check("#live")
    tab.page.wait_for_function("() => +document.querySelector('#content').dataset.refreshed >= 1")
    assert tab.page.evaluate("() => localStorage.getItem('perfpulse.live')") == "1"


# --- copy buttons and the public hook ------------------------------------------------


def test_copy_button_copies_and_says_so(tab: Tab) -> None:
    tab.open()
    tab.page.click("button.copy")
    assert tab.page.evaluate("() => navigator.clipboard.readText()") == "pip install perfpulse"
    assert tab.page.inner_text("button.copy") == "Copied"
    tab.page.wait_for_function("() => document.querySelector('button.copy').textContent == 'Copy'")


def test_init_sets_up_added_content(tab: Tab) -> None:
    tab.open()
    drawn = tab.page.evaluate(
        """() => {
            const box = document.createElement('section');
            const spark = document.createElement('span');
            spark.className = 'spark';
            spark.dataset.spark = JSON.stringify([1, 2, 3]);
            const chart = document.createElement('div');
            chart.className = 'chart';
            chart.dataset.chart = JSON.stringify({title: 't', unit: '1', x: [1, 2], series: [{label: 'a', values: [5, null]}]});
            box.append(spark, chart);
            document.querySelector('main').append(box);
            window.perfpulse.init(box);
            return [spark.dataset.drawn, chart.dataset.drawn, chart.querySelectorAll('canvas').length];
        }"""
    )
    assert drawn == ["3", "1", 1]
