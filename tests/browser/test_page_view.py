"""One real page load of the shop page, end to end: what the collector stored
equals what the page's own PerformanceObservers saw."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser

from . import truth as T
from .conftest import Collector, Tab
from .website import Site


def near(x: float) -> Any:
    return pytest.approx(x, abs=1)


TYPES = {
    "/vitals.html": "other",
    "/truth.js": "script",
    "/rum.js": "script",
    "/asset/lib.js": "script",
    "/asset/widget.js": "script",
    "/asset/busy.js": "script",
    "/app.js": "script",
    "/asset/site.css": "stylesheet",
    "/asset/brand.woff2": "font",
    "/asset/hero.png": "image",
    "/asset/data.json": "fetch",
    "/favicon.ico": "other",
}


@dataclass
class Visit:
    truth: dict[str, Any]
    beacons: list[dict[str, Any]]
    view: dict[str, Any]

    def vital(self, name: str) -> dict[str, Any]:
        found = [v for v in self.view["vitals"] if v["name"] == name]
        assert len(found) == 1, f"{name}: {self.view['vitals']}"
        return found[0]


@pytest.fixture(scope="module")
def shop(browser: Browser, site: Site, collector: Collector) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tab = Tab(context.new_page(), site, collector)
        tab.open("/vitals.html")
        tab.wait_for(
            "__truth.marks.fetched && __truth.marks.shifted"
            " && __truth.entries['layout-shift'].length && document.querySelector('img.hero').complete"
        )
        tab.page.wait_for_timeout(200)
        tab.page.click("#buy")
        tab.wait_for("__truth.entries['event'].some(e => e.name === 'click')")
        tab.page.wait_for_timeout(300)
        truth = tab.truth()
        tab.leave()  # a real unload: pagehide, then visibilitychange→hidden → sendBeacon
        beacons = tab.sent(1)
        assert len(beacons) == 1
        yield Visit(truth, beacons, collector.view(beacons[0]["id"], tab.started))
    finally:
        context.close()


def test_context_and_identity(shop: Visit, site: Site) -> None:
    v = shop.view
    assert v["url"] == f"{site.url}/vitals.html"
    assert v["page"] == "/vitals.html"
    assert v["soft"] is False
    assert (v["service"], v["environment"], v["release"]) == ("web", "staging", "1.4.2")
    assert (v["device"], v["browser"]) == ("desktop", "chrome")
    assert v["connection"] == shop.truth["connection"] == "4g"
    assert v["sample_rate"] == 1.0
    assert v["ts"] == pytest.approx(shop.truth["timeOrigin"] / 1000, abs=0.001)
    assert shop.truth["errors"] == []


def test_lcp_with_attribution(shop: Visit, site: Site) -> None:
    lcp, nav = T.lcp(shop.truth), shop.truth["navigation"]
    assert lcp["element"] == "img" and lcp["url"].startswith(f"{site.url}/asset/hero.png")
    got = shop.vital("LCP")
    assert got["value"] == near(lcp["startTime"])
    assert got["navigation_type"] == "navigate"
    a = got["attribution"]
    assert a["element"] == "html>body>main.page>img.big.hero"
    # the collector stores URLs with their query values removed
    assert a["url"] == f"{site.url}/asset/hero.png?w=&h=&bytes=&delay="
    res = next(r for r in shop.truth["resources"] if r["name"] == lcp["url"])
    ttfb = nav["responseStart"]
    load_start = max(ttfb, res["requestStart"])
    load_end = min(lcp["startTime"], max(load_start, res["responseEnd"]))
    assert a["ttfb_ms"] == near(ttfb)
    assert a["load_delay_ms"] == near(load_start - ttfb)
    assert a["load_duration_ms"] == near(load_end - load_start)
    assert a["render_delay_ms"] == near(lcp["startTime"] - load_end)
    # the image arrives after the server's 400 ms delay, and that is where the time went
    assert a["load_duration_ms"] >= 400


def test_cls_with_largest_shift(shop: Visit) -> None:
    value, window = T.cls(shop.truth)
    assert value > 0.01
    got = shop.vital("CLS")
    assert got["value"] == pytest.approx(value, abs=0.001)
    largest = max(window, key=lambda e: e["value"])
    a = got["attribution"]
    assert largest["sources"][0] == "feed"
    assert a["target"] == "#feed"
    assert a["time_ms"] == near(largest["startTime"])
    assert a["value"] == pytest.approx(largest["value"], abs=0.001)


def test_inp_with_subparts_and_script(shop: Visit, site: Site) -> None:
    latency, first = T.inp(shop.truth)
    assert latency >= 150  # the click handler busy-loops 150 ms
    got = shop.vital("INP")
    assert got["value"] == near(latency)
    a = got["attribution"]
    assert (a["target"], a["type"]) == ("#buy", "pointer")
    parts = T.inp_parts(shop.truth, first)
    assert a["input_delay_ms"] == near(parts["input_delay_ms"])
    assert a["processing_ms"] == near(parts["processing_ms"])
    assert a["presentation_delay_ms"] == near(parts["presentation_delay_ms"])
    script, overlap = T.longest_script(shop.truth, first["startTime"], parts["end"])
    assert script == f"{site.url}/app.js"
    assert a["script"] == script
    assert a["script_ms"] == near(overlap)
    assert overlap >= 150


def test_fid_from_first_input(shop: Visit) -> None:
    (first,) = shop.truth["entries"]["first-input"]
    got = shop.vital("FID")
    assert got["value"] == near(first["processingStart"] - first["startTime"])
    assert got["attribution"] == {"target": "#buy", "type": first["name"]}
    assert got["navigation_type"] == "navigate"


def test_fcp_and_ttfb_with_subparts(shop: Visit) -> None:
    nav = shop.truth["navigation"]
    (fcp,) = [e for e in shop.truth["entries"]["paint"] if e["name"] == "first-contentful-paint"]
    got = shop.vital("FCP")
    assert got["value"] == near(fcp["startTime"])
    assert got["attribution"]["ttfb_ms"] == near(nav["responseStart"])
    assert got["attribution"]["first_byte_to_fcp_ms"] == near(
        fcp["startTime"] - nav["responseStart"]
    )
    ttfb = shop.vital("TTFB")
    assert ttfb["value"] == near(nav["responseStart"])
    waiting = nav["workerStart"] or nav["fetchStart"]
    assert ttfb["attribution"] == {
        "waiting_ms": near(waiting),
        "cache_ms": near(nav["domainLookupStart"] - waiting),
        "dns_ms": near(nav["connectStart"] - nav["domainLookupStart"]),
        "connection_ms": near(nav["connectEnd"] - nav["connectStart"]),
        "request_ms": near(nav["responseStart"] - nav["connectEnd"]),
    }


def test_navigation_timing(shop: Visit) -> None:
    n = shop.truth["navigation"]
    assert shop.view["nav"] == {
        "type": "navigate",
        "dns_ms": near(n["domainLookupEnd"] - n["domainLookupStart"]),
        "connect_ms": near(n["connectEnd"] - n["connectStart"]),
        "tls_ms": 0,
        "request_ms": near(n["responseStart"] - n["requestStart"]),
        "response_ms": near(n["responseEnd"] - n["responseStart"]),
        "dom_interactive_ms": near(n["domInteractive"]),
        "dom_complete_ms": near(n["domComplete"]),
        "load_ms": near(n["loadEventEnd"]),
        "transfer_bytes": n["transferSize"],
    }
    assert n["loadEventEnd"] > 0


def test_long_tasks_and_animation_frames(shop: Visit, site: Site) -> None:
    tasks = shop.truth["entries"]["longtask"]
    frames = shop.truth["entries"]["long-animation-frame"]
    want = T.long_tasks(tasks, frames)
    got = shop.view["long_tasks"]
    assert got == {k: (near(v) if isinstance(v, float) else v) for k, v in want.items()}
    # busy.js (120 ms) and the click handler (150 ms) are the long tasks
    assert got["count"] >= 2 and got["max_ms"] >= 150
    assert got["worst_script"] == f"{site.url}/app.js"


def test_resources_by_type(shop: Visit, site: Site) -> None:
    resources = shop.truth["resources"]
    want = T.groups(resources, TYPES, site.url)
    got = {g["type"]: g for g in shop.view["resources"]}
    assert set(got) == set(want)
    for kind, g in want.items():
        assert got[kind] == {**g, "duration_ms": near(g["duration_ms"])}, kind
    # what the page was built with: sizes exact, the cached fetch, third parties, blocking
    assert got["font"]["encoded_bytes"] == 20_000
    assert got["stylesheet"] == {
        **got["stylesheet"],
        "count": 1,
        "decoded_bytes": 3000,
        "render_blocking": 1,
    }
    assert (got["fetch"]["count"], got["fetch"]["cache_hits"], got["fetch"]["decoded_bytes"]) == (
        2,
        1,
        14_000,
    )
    assert got["script"]["third_party"] == 2  # widget.js and the agent itself


def test_largest_resources(shop: Visit) -> None:
    ranked = sorted(shop.truth["resources"], key=lambda r: -r["encodedBodySize"])[:5]
    got = shop.view["largest_resources"]
    assert [r["url"].split("?")[0] for r in got] == [r["name"].split("?")[0] for r in ranked]
    for g, r in zip(got, ranked, strict=True):
        assert (g["transfer_bytes"], g["encoded_bytes"], g["decoded_bytes"]) == (
            r["transferSize"],
            r["encodedBodySize"],
            r["decodedBodySize"],
        )
        assert g["duration_ms"] == near(r["duration"])
        assert g["render_blocking"] == (r["renderBlockingStatus"] == "blocking")
    assert got[0]["type"] == "image" and got[0]["encoded_bytes"] == 30_000


def test_memory_where_exposed(shop: Visit) -> None:
    m = shop.view["memory"]
    assert m["source"] == "performance.memory"
    assert m["limit_bytes"] == shop.truth["heapLimit"]
    assert 0 < m["used_bytes"] <= m["total_bytes"] <= m["limit_bytes"]
