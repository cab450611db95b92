"""How beacons leave the page: once per page view, sampled once per load,
within 60 KB, and without ever throwing into the page."""

from __future__ import annotations

import json

import pytest

from .conftest import Tab

LIMIT = 60 * 1024


def test_two_hides_send_one_beacon(tab: Tab) -> None:
    tab.open("/plain.html")
    tab.hide()
    first = tab.sent(1)
    assert len(first) == 1  # sent at the first hide, by sendBeacon
    tab.hide()  # hidden again...
    tab.page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    tab.hide()  # ...visible, hidden once more...
    tab.leave()  # ...and the real unload
    assert len(tab.sent(2, timeout=1.5)) == 1
    stored = tab.collector.view(first[0]["id"], tab.started)
    assert stored["url"] == f"{tab.site.url}/plain.html"


def test_sample_rate_zero_sends_nothing(tab: Tab) -> None:
    tab.open("/plain.html?rate=0")
    tab.hide()
    tab.leave()
    assert tab.sent(1, timeout=1.5) == []


@pytest.mark.parametrize(("rand", "sent"), [(0.3, 1), (0.7, 0)])
def test_sampling_is_decided_once_per_load(tab: Tab, rand: float, sent: int) -> None:
    tab.open(f"/plain.html?rate=0.5&rand={rand}")
    tab.leave()
    beacons = tab.sent(1, timeout=1.5)
    assert len(beacons) == sent
    if sent:
        stored = tab.collector.view(beacons[0]["id"], tab.started)
        assert stored["sample_rate"] == 0.5


def test_fetch_keepalive_when_send_beacon_throws(tab: Tab) -> None:
    errors: list[str] = []
    tab.page.on("pageerror", lambda e: errors.append(str(e)))
    tab.open("/plain.html?hostile=beacon")
    tab.wait_for("__truth.entries.paint.some(e => e.name === 'first-contentful-paint')")
    truth = tab.truth()
    tab.leave()
    (beacon,) = tab.sent(1)
    stored = tab.collector.view(beacon["id"], tab.started)
    assert {v["name"] for v in stored["vitals"]} >= {"FCP", "TTFB"}
    assert truth["errors"] == [] and errors == []


@pytest.mark.parametrize("hostile", ["config", "observer"])
def test_agent_errors_never_reach_the_page(tab: Tab, hostile: str) -> None:
    errors: list[str] = []
    tab.page.on("pageerror", lambda e: errors.append(str(e)))
    tab.open(f"/plain.html?hostile={hostile}")
    tab.hide()
    beacons = tab.sent(1, timeout=1.5)
    assert tab.page.evaluate("__truth.errors") == []  # window.onerror stayed silent
    assert errors == []
    if hostile == "config":  # an unreadable config: the agent stays off
        assert beacons == []
    else:  # no PerformanceObserver at all: still one beacon for the view
        assert len(beacons) == 1
        tab.collector.view(beacons[0]["id"], tab.started)


def test_beacon_stays_under_60_kb_with_many_resources(tab: Tab) -> None:
    tab.open("/many.html?q=" + "y" * 3000)
    tab.wait_for("__truth.marks.loaded", timeout=20_000)
    tab.page.wait_for_timeout(200)
    (script,) = tab.page.evaluate("performance.getEntriesByName(location.origin + '/truth.js')")
    tab.leave()
    tab.sent(1)  # wait for it: the beacon can reach the relay after the next page has loaded
    raw = tab.beacons
    assert len(raw) == 1
    assert len(raw[0]) <= LIMIT
    beacon = json.loads(raw[0])
    assert len(beacon["url"]) <= 1000
    images = next(g for g in beacon["resources"] if g["type"] == "image")
    assert images["count"] == 300
    assert images["encoded_bytes"] == sum(200 + i for i in range(300))
    assert len(beacon["largest_resources"]) == 5
    assert all(len(r["url"]) <= 1000 for r in beacon["largest_resources"])
    stored = tab.collector.view(beacon["id"], tab.started)
    sizes = sorted([script["encodedBodySize"], *(200 + i for i in range(300))], reverse=True)
    assert [r["encoded_bytes"] for r in stored["largest_resources"]] == sizes[:5]


def test_click_then_leave_at_once_still_reports_inp(tab: Tab) -> None:
    # Browsers fire pagehide before visibilitychange→hidden on unload; the beacon
    # must wait for the latter, where web-vitals processes the pending click.
    tab.open("/vitals.html")
    tab.page.click("#buy")
    # Leave as soon as the browser has timed the click (its event entry exists):
    # before that, no agent could know of it.
    tab.wait_for("__truth.entries.event.some(e => e.target === 'buy')")
    tab.leave()
    (beacon,) = tab.sent(1)
    stored = tab.collector.view(beacon["id"], tab.started)
    inp = next(v for v in stored["vitals"] if v["name"] == "INP")
    assert inp["value"] >= 150
    assert inp["attribution"]["target"] == "#buy"
