"""Traces, the trace waterfall and log search in Chromium: what they show equals
the traces and logs API for the same window and filters, links lead where they
say, and markup stored in span names, attributes and log messages stays text."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from tests.conftest import INGEST_KEY

from perfpulse.demo import Workload

from .conftest import XSS, Dashboard, js, shot, shown

SERVICE = "otel-tests"
AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
SERVER, INTERNAL, CLIENT = 2, 1, 3


class Sent:
    """What the module's fixture stored: the trace ids and the log lines."""

    def __init__(self, checkout: str, evil: str, request_id: str) -> None:
        self.checkout = checkout
        self.evil = evil
        self.request_id = request_id


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": str(v)}} for k, v in values.items()]


def _span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    kind: int,
    start: float,
    ms: float,
    *,
    error: str | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        **({"parentSpanId": parent} if parent else {}),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(round(start * 1e9)),
        "endTimeUnixNano": str(round((start + ms / 1000) * 1e9)),
        "attributes": _attrs(attrs),
        "status": {"code": 2, "message": error} if error else {"code": 1},
    }


def _otlp(path: str, body: dict[str, Any], dashboard: Dashboard) -> None:
    r = httpx.post(f"{dashboard.url}{path}", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    assert "partialSuccess" not in r.json(), r.text  # nothing rejected


def _wait(fetch: Any, ok: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not ok(value):
        assert time.monotonic() < deadline, f"not stored in {timeout}s: {value}"
        time.sleep(0.1)
        value = fetch()
    return value


@pytest.fixture(scope="module")
def sent(dashboard: Dashboard) -> Sent:
    """A checkout trace (6 spans in 3 levels, two failing), a trace whose names and
    attributes hold markup, the demo's inventory traces and their OTLP logs, and
    agent log lines (one with markup, some tied to the checkout trace)."""
    t0 = dashboard.now - 600
    checkout, evil = uuid.uuid4().hex, uuid.uuid4().hex
    ids = {name: uuid.uuid4().hex[:16] for name in ("root", "cart", "sql", "pay", "retry", "view")}
    # sent out of order: the page must order them itself
    spans = [
        _span(checkout, ids["retry"], ids["pay"], "retry charge", INTERNAL, t0 + 0.060, 40),
        _span(
            checkout,
            ids["pay"],
            ids["root"],
            "POST payments",
            CLIENT,
            t0 + 0.025,
            85,
            error="card declined",
            **{"server.address": "payments.internal"},
        ),
        _span(checkout, ids["view"], ids["root"], "render receipt", INTERNAL, t0 + 0.111, 7),
        _span(
            checkout,
            ids["root"],
            None,
            "POST /checkout",
            SERVER,
            t0,
            120,
            error="payment failed",
            **{"app.cart_items": 3},
        ),
        _span(checkout, ids["sql"], ids["cart"], "SELECT cart", CLIENT, t0 + 0.004, 11),
        _span(checkout, ids["cart"], ids["root"], "load cart", INTERNAL, t0 + 0.002, 18),
    ]
    evil_root = uuid.uuid4().hex[:16]
    spans += [
        _span(evil, evil_root, None, XSS, SERVER, t0 + 5, 30, **{"note": XSS, XSS: "key"}),
        _span(
            evil,
            uuid.uuid4().hex[:16],
            evil_root,
            "child " + XSS,
            INTERNAL,
            t0 + 5.01,
            10,
            error=XSS,
        ),
    ]
    resource = {
        "attributes": _attrs({"service.name": SERVICE, "deployment.environment.name": "test"})
    }
    _otlp(
        "/v1/traces",
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]},
        dashboard,
    )
    work = Workload(seed=41, clock=lambda: t0 + 60)
    demo = work.traces(8)
    _otlp("/v1/traces", demo, dashboard)
    _otlp("/v1/logs", work.trace_logs(demo), dashboard)
    shop_logs = work.logs(work.batch(40))
    assert dashboard.server.send(shop_logs).status_code == 202

    request_id = "req-" + uuid.uuid4().hex[:12]
    lines: list[dict[str, Any]] = [
        {
            "kind": "log",
            "ts": t0 + 0.03,
            "level": "info",
            "logger": "checkout.cart",
            "message": "cart loaded with 3 items",
            "trace_id": checkout,
            "span_id": ids["cart"],
            "request_id": request_id,
        },
        {
            "kind": "log",
            "ts": t0 + 0.1,
            "level": "error",
            "logger": "checkout.payments",
            "message": "payment gateway timeout: card declined",
            "exception": "Traceback (most recent call last):\n  ...\nPaymentError: declined",
            "trace_id": checkout,
            "span_id": ids["pay"],
            "request_id": request_id,
            "attributes": {"attempt": 2},
        },
        {
            "kind": "log",
            "ts": t0 + 5.02,
            "level": "warn",
            "logger": "checkout.search",
            "message": "query was " + XSS,
            "trace_id": evil,
            "attributes": {"raw": XSS},
        },
    ]
    for i in range(30):
        lines.append(
            {
                "kind": "log",
                "ts": t0 + 10 + i * 2,
                "level": ("debug", "info", "info", "warn")[i % 4],
                "logger": "checkout.worker",
                "message": f"job {i} finished",
            }
        )
    batch = {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": SERVICE, "environment": "test"},
        "events": lines,
    }
    assert dashboard.server.send(batch).status_code == 202
    expected_logs = len(lines) + len(shop_logs["events"])
    _wait(
        lambda: dashboard.api("/api/v1/logs", limit=1000, **dashboard.window)["logs"],
        lambda got: len(got) >= expected_logs + 8,
    )
    _wait(
        lambda: dashboard.api("/api/v1/traces", limit=1000, **dashboard.window)["traces"],
        lambda got: {checkout, evil} <= {t["trace_id"] for t in got} and len(got) >= 10,
    )
    return Sent(checkout, evil, request_id)


def _flatten(tree: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    out: list[tuple[dict[str, Any], int]] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        out.append((node, depth))
        for child in sorted(node["children"], key=lambda c: c["ts"]):
            walk(child, depth + 1)

    for root in sorted(tree["roots"], key=lambda r: r["ts"]):
        walk(root, 0)
    return out


def _bar(page: Page, span_id: str) -> tuple[float, float]:
    style = page.get_attribute(f'.span[data-span-id="{span_id}"] .bar', "style") or ""
    found = re.search(r"left:\s*([\d.]+)%;\s*width:\s*([\d.]+)%", style)
    assert found, style
    return float(found.group(1)), float(found.group(2))


def _shown_logs(page: Page) -> list[str]:
    return [str(li.get_attribute("data-id")) for li in page.query_selector_all("#logs li.log")]


def _no_injection(page: Page) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert page.query_selector_all("main script, main img") == []


# --- traces -----------------------------------------------------------------------


def test_traces_table_equals_the_traces_api(page: Page, dashboard: Dashboard, sent: Sent) -> None:
    page.goto(dashboard.page_url("/traces"))
    api = dashboard.api("/api/v1/traces", limit=100, **dashboard.window)["traces"]
    rows = page.query_selector_all("#traces tbody tr")
    assert [r.get_attribute("data-trace-id") for r in rows] == [t["trace_id"] for t in api]
    for t in api[:12]:
        row = f'#traces tr[data-trace-id="{t["trace_id"]}"]'
        assert shown(page, f"{row} td.duration") == pytest.approx(t["duration_ms"])
        assert shown(page, f"{row} td.spans") == t["spans"]
        assert page.get_attribute(f"{row} td.status", "data-value") == t["status"]
    checkout = f'#traces tr[data-trace-id="{sent.checkout}"]'
    assert shown(page, f"{checkout} td.spans") == 6
    assert page.text_content(f"{checkout} td.status") == "error"
    # the demo's OpenTelemetry service is there with its multi-level traces
    assert any(t["service"] == "inventory" and t["spans"] >= 3 for t in api)
    shot(page, "traces")
    assert page.errors == []  # type: ignore[attr-defined]


def test_trace_search_changes_the_url_and_the_rows(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url("/traces", service=SERVICE))
    page.fill("#trace-search input[name=min_duration_ms]", "100")
    with page.expect_navigation():
        page.click("#trace-search button[type=submit]")
    assert "min_duration_ms=100" in page.url and f"service={SERVICE}" in page.url
    api = dashboard.api(
        "/api/v1/traces", service=SERVICE, min_duration_ms="100", limit=100, **dashboard.window
    )["traces"]
    shown_ids = [r.get_attribute("data-trace-id") for r in page.query_selector_all("#traces tr")]
    assert shown_ids[1:] == [t["trace_id"] for t in api] == [sent.checkout]
    page.goto(dashboard.page_url("/traces", name="GET /stock/{sku}"))
    api = dashboard.api("/api/v1/traces", name="GET /stock/{sku}", limit=100, **dashboard.window)
    names = page.eval_on_selector_all("#traces tbody a.trace-link", "as => as.map(a => a.text)")
    assert len(names) == len(api["traces"]) > 0 and set(names) == {"GET /stock/{sku}"}


def test_a_trace_row_opens_its_waterfall_keeping_the_view(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url("/traces", service=SERVICE))
    with page.expect_navigation():
        page.click(f'#traces tr[data-trace-id="{sent.checkout}"] a.trace-link')
    assert page.url.split("?")[0] == f"{dashboard.url}/traces/{sent.checkout}"
    assert "range=custom" in page.url and f"service={SERVICE}" in page.url
    assert page.text_content("#trace-id") == sent.checkout
    assert page.query_selector_all("#waterfall .span")


def test_waterfall_shows_every_span_depth_first_with_bars_on_the_trace_axis(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url(f"/traces/{sent.checkout}"))
    tree = dashboard.api(f"/api/v1/traces/{sent.checkout}")
    expected = _flatten(tree)
    rows = js(
        page,
        "[...document.querySelectorAll('#waterfall .span')].map(s => "
        "[s.dataset.spanId, Number(s.dataset.depth), s.querySelector('.name').textContent,"
        " s.dataset.kind, s.dataset.status])",
    )
    assert rows == [
        [s["span_id"], depth, s["name"], s["kind"], s["status"]] for s, depth in expected
    ]
    assert [r[2] for r in rows] == [
        "POST /checkout",
        "load cart",
        "SELECT cart",
        "POST payments",
        "retry charge",
        "render receipt",
    ]
    assert [r[1] for r in rows] == [0, 1, 2, 1, 2, 1]
    start, total = tree["start"], tree["duration_ms"]
    assert total == pytest.approx(120, abs=0.01)
    for s, _ in expected:
        left, width = _bar(page, s["span_id"])
        assert left == pytest.approx((s["ts"] - start) * 1000 / total * 100, abs=0.1)
        assert width == pytest.approx(s["duration_ms"] / total * 100, abs=0.1)
        assert shown(page, f'.span[data-span-id="{s["span_id"]}"]') == pytest.approx(
            s["duration_ms"]
        )
    # the bars really sit there: the failing call starts about a fifth of the way in
    track = page.locator(".span[data-depth='1'] .track").first.bounding_box()
    pay = page.locator(".span[data-kind='client'][data-status='error'] .bar").bounding_box()
    assert track and pay
    assert (pay["x"] - track["x"]) / track["width"] == pytest.approx(25 / 120, abs=0.01)
    assert shown(page, "#trace-span-count") == tree["span_count"] == 6
    # attributes open from the row, and the trace's logs are listed below
    root = expected[0][0]["span_id"]
    page.click(f'.span[data-span-id="{root}"] details summary')
    assert "app.cart_items" in (page.text_content(f'.span[data-span-id="{root}"] details') or "")
    logs = dashboard.api(
        "/api/v1/logs", trace_id=sent.checkout, **{"from": start - 60, "to": start + 60}
    )["logs"]
    shown_logs = [r.get_attribute("data-id") for r in page.query_selector_all("#trace-logs tr")]
    assert shown_logs[1:] == [line["id"] for line in reversed(logs)] and len(logs) == 2
    assert "PaymentError" in (page.text_content("#trace-logs") or "")
    shot(page, "trace")
    assert page.errors == []  # type: ignore[attr-defined]


def test_unknown_trace_is_a_404_and_a_bad_id_a_400(page: Page, dashboard: Dashboard) -> None:
    missing = "0123456789abcdef" * 2
    response = page.goto(dashboard.page_url(f"/traces/{missing}"))
    assert response is not None and response.status == 404
    assert f"No trace {missing}" in (page.text_content("p.error") or "")
    response = page.goto(dashboard.page_url("/traces/not-a-trace"))
    assert response is not None and response.status == 400
    assert "32 lowercase hex digits" in (page.text_content("p.error") or "")


def test_markup_in_spans_and_logs_renders_as_text(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url(f"/traces/{sent.evil}"))
    assert page.text_content("h1") == f"Trace {XSS}"
    names = page.eval_on_selector_all("#waterfall .span .name", "ns => ns.map(n => n.textContent)")
    assert names == [XSS, "child " + XSS]
    for details in page.query_selector_all("#waterfall details"):
        details.evaluate("d => { d.open = true; }")
    text = page.text_content("#waterfall") or ""
    assert text.count(XSS) >= 4  # name, attribute key and value, child name, status message
    assert page.text_content("#trace-logs .message") == "query was " + XSS
    _no_injection(page)
    page.goto(dashboard.page_url("/traces"))
    assert page.text_content(f'#traces tr[data-trace-id="{sent.evil}"] a') == XSS
    _no_injection(page)
    page.goto(dashboard.page_url("/logs", q="query was"))
    assert page.text_content("#logs .message") == "query was " + XSS
    page.click("#logs details.attributes summary")
    assert XSS in (page.text_content("#logs details.attributes") or "")
    _no_injection(page)
    assert page.errors == []  # type: ignore[attr-defined]


# --- logs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"level": "error"}, {"level": "warn,error,fatal"}, {"q": "JOB 2"}, {"service": SERVICE}],
    ids=["all", "error", "warn-and-above", "text", "service"],
)
def test_log_search_equals_the_logs_api(
    page: Page, dashboard: Dashboard, sent: Sent, params: dict[str, str]
) -> None:
    page.goto(dashboard.page_url("/logs", **params))
    api = dashboard.api("/api/v1/logs", **dashboard.window, **params)
    assert _shown_logs(page) == [line["id"] for line in api["logs"]]
    assert len(api["logs"]) > 0
    first = api["logs"][0]
    line = f'#logs li[data-id="{first["id"]}"]'
    assert shown(page, line) == pytest.approx(first["ts"])
    assert page.get_attribute(line, "class") == f"log level-{first['level']}"
    assert page.text_content(f"{line} .message") == first["message"]
    assert page.text_content(f"{line} .service") == first["service"]
    if not params:
        shot(page, "logs")
    assert page.errors == []  # type: ignore[attr-defined]


def test_older_link_pages_like_the_api_cursor(page: Page, dashboard: Dashboard, sent: Sent) -> None:
    page.goto(dashboard.page_url("/logs", service=SERVICE, limit="10"))
    first = dashboard.api("/api/v1/logs", service=SERVICE, limit=10, **dashboard.window)
    assert _shown_logs(page) == [line["id"] for line in first["logs"]]
    with page.expect_navigation():
        page.click("#older")
    assert f"cursor={first['next_cursor'].replace(':', '%3A')}" in page.url
    second = dashboard.api(
        "/api/v1/logs",
        service=SERVICE,
        limit=10,
        cursor=first["next_cursor"],
        **dashboard.window,
    )
    assert _shown_logs(page) == [line["id"] for line in second["logs"]]
    assert not set(_shown_logs(page)) & {line["id"] for line in first["logs"]}
    # the end: no Older link once the API has no next cursor
    cursor = second["next_cursor"]
    while cursor:
        last = dashboard.api(
            "/api/v1/logs", service=SERVICE, limit=10, cursor=cursor, **dashboard.window
        )
        page.goto(dashboard.page_url("/logs", service=SERVICE, limit="10", cursor=cursor))
        assert _shown_logs(page) == [line["id"] for line in last["logs"]]
        cursor = last["next_cursor"]
    assert page.query_selector("#older") is None


def test_log_form_puts_its_fields_in_the_url_once(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url("/logs", service=SERVICE))
    page.select_option("#log-search select[name=level]", "warn")
    page.fill("#log-search input[name=q]", "job")
    with page.expect_navigation():
        page.click("#log-search button[type=submit]")
    query = page.url.split("?", 1)[1]
    keys = [pair.split("=")[0] for pair in query.split("&")]
    assert sorted(keys) == sorted(set(keys)), query  # each key once
    assert "level=warn" in query and "q=job" in query and f"service={SERVICE}" in query
    api = dashboard.api("/api/v1/logs", service=SERVICE, level="warn", q="job", **dashboard.window)
    assert _shown_logs(page) == [line["id"] for line in api["logs"]] and len(api["logs"]) == 7
    # the global filter bar keeps the search when the range changes
    with page.expect_navigation():
        page.select_option("#filters select[name=range]", "24h")
    assert "level=warn" in page.url and "q=job" in page.url and "range=24h" in page.url


def test_log_links_open_the_trace_and_the_request(
    page: Page, dashboard: Dashboard, sent: Sent
) -> None:
    page.goto(dashboard.page_url("/logs", level="error", service=SERVICE))
    line = page.locator(f'#logs li[data-trace-id="{sent.checkout}"]')
    assert "PaymentError: declined" in (line.locator("details.exception").text_content() or "")
    assert not line.locator("details.exception pre").is_visible()  # collapsed
    with page.expect_navigation():
        line.locator("a.request-link").click()
    assert f"request_id={sent.request_id}" in page.url and "level=" not in page.url
    api = dashboard.api("/api/v1/logs", request_id=sent.request_id, **dashboard.window)
    assert _shown_logs(page) == [x["id"] for x in api["logs"]] and len(api["logs"]) == 2
    with page.expect_navigation():
        page.locator("#logs a.trace-link").first.click()
    assert page.url.split("?")[0] == f"{dashboard.url}/traces/{sent.checkout}"
    assert "request_id" not in page.url
    assert page.text_content("#trace-id") == sent.checkout
    # and the demo's OTLP logs link to traces that exist
    page.goto(dashboard.page_url("/logs", service="inventory"))
    ids = page.eval_on_selector_all("#logs li.log", "ls => ls.map(l => l.dataset.traceId)")
    assert ids and all(ids)
    with page.expect_navigation():
        page.locator("#logs a.trace-link").first.click()
    assert page.locator("#waterfall .span").count() >= 3
    assert page.errors == []  # type: ignore[attr-defined]
