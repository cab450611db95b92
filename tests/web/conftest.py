"""The dashboard in real headless Chromium, against a real collector filled by
the demo workload.

Package-wide: one ``perfpulse serve`` subprocess, filled with an hour of the
demo generator's requests, queries, cache calls, resources and page views (at
twelve moments over the last hour, so every chart has several points), plus
one beacon whose page URL and attribution carry markup (stored XSS); one
Chromium, and one logged-in session (``storage_state``) that each test's
fresh browser context reuses.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from tests.conftest import ORIGIN, READ_TOKEN, Server

from perfpulse.demo import Workload

CHROMIUM = "/usr/bin/chromium"
STATIC = Path(__file__).parents[2] / "src" / "perfpulse" / "web" / "static"
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "dashboard"
XSS = "<script>window.__xss=1</script><img src=x onerror=window.__xss=2>"
MOMENTS = 12


class Dashboard:
    """The collector under test: its URL, its query API and what was sent."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.now = time.time()

    @property
    def window(self) -> dict[str, str]:
        """A fixed window holding all the filled data, for pages and API alike."""
        return {"from": repr(self.now - 3600), "to": repr(self.now + 60)}

    def page_url(self, path: str, **params: str) -> str:
        """A dashboard URL over :attr:`window` (a custom range), with filters."""
        query = {"range": "custom", **self.window, **params}
        return f"{self.url}{path}?{urllib.parse.urlencode(query)}"

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.server.get(path, **params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def fill(self) -> None:
        """An hour of demo traffic, at :data:`MOMENTS` moments ending now."""
        for i in range(MOMENTS):
            at = self.now - 3300 + i * 300
            work = Workload(seed=i, clock=lambda at=at: at)
            for service in ("shop", "api"):
                r = self.server.send(work.batch(40, service=service))
                assert r.status_code == 202, r.text
            assert self.server.send(work.resources()).status_code == 202
            for _ in range(6):
                assert self.server.beacon(work.beacon(ORIGIN)).status_code == 202
        evil = Workload(seed=99, clock=lambda: self.now - 60).beacon(ORIGIN)
        evil["url"] = ORIGIN + "/search/" + urllib.parse.quote(XSS, safe="<>=/ ")
        for vital in evil["vitals"]:
            if vital.get("attribution"):
                vital["attribution"] = {k: XSS for k in vital["attribution"]}
        assert self.server.beacon(evil).status_code == 202
        self.server.wait_stored("http.server.duration", count=MOMENTS * 80)
        self.server.wait_stored("rum.lcp", count=MOMENTS * 6)


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    for bundle in ("dashboard.js", "dashboard.css"):
        assert (STATIC / bundle).is_file(), (
            f"build the dashboard first: make (or cd browser && npm run build) — {bundle} missing"
        )
    server = Server(tmp_path_factory.mktemp("dashboard") / "data").start()
    try:
        d = Dashboard(server)
        d.fill()
        yield d
    finally:
        if server.proc is not None:
            server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="package")
def session_state(browser: Browser, dashboard: Dashboard) -> dict[str, Any]:
    """Log in once through the form; later contexts start with its cookie."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(dashboard.url + "/")
        assert page.url.startswith(dashboard.url + "/login")
        page.fill("#token", READ_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(dashboard.url + "/")
        return dict(context.storage_state())
    finally:
        context.close()


@pytest.fixture
def context(browser: Browser, session_state: dict[str, Any]) -> Iterator[BrowserContext]:
    ctx = browser.new_context(storage_state=session_state, viewport={"width": 1400, "height": 1000})
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.errors = errors  # type: ignore[attr-defined]
    return p


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot in artifacts/dashboard/ (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def charts_drawn(page: Page) -> list[int]:
    """``data-drawn`` of every chart on the page, once the client has drawn them all."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].every(c => c.hasAttribute('data-drawn'))"
    )
    return [int(c.get_attribute("data-drawn") or "0") for c in page.query_selector_all(".chart")]


def shown(page: Page, selector: str) -> float:
    """The raw number behind a displayed value (its ``data-value``)."""
    value = page.get_attribute(selector, "data-value")
    assert value not in (None, ""), f"{selector} shows no value"
    return float(value)


def js(page: Page, expression: str) -> Any:
    return json.loads(page.evaluate(f"() => JSON.stringify({expression})"))


TABLE_ROWS = """[...document.querySelectorAll('{table} tbody tr')].map(tr => ({{
    data: {{...tr.dataset}},
    values: Object.fromEntries([...tr.cells].filter(td => td.dataset.value !== undefined)
        .map(td => [tr.closest('table').tHead.rows[0].cells[td.cellIndex].dataset.col
                    || td.cellIndex, td.dataset.value === '' ? null : +td.dataset.value]))}}))"""


def table_rows(page: Page, table: str) -> list[dict[str, Any]]:
    """The body rows of the data table ``table`` (a selector), in page order.

    Each row is ``{"data": its tr's data-* attributes, "values": the raw number
    of every cell with a ``data-value``}``; a value is keyed by its column
    header's ``data-col``, else by the cell's index (as a string), and is None
    when empty or not a number. Tests compare these with the query API's numbers.
    """
    return list(js(page, TABLE_ROWS.format(table=table)))


__all__ = ["XSS", "Dashboard", "charts_drawn", "httpx", "js", "shot", "shown", "table_rows"]
