"""SPA soft page views: a History API route change ends the current view (its
beacon goes out then) and starts a soft view with its own id, long tasks,
resources, INP, CLS and route-change-to-next-paint time."""

from __future__ import annotations

from typing import Any

import pytest

from . import truth as T
from .conftest import Tab


def near(x: float) -> Any:
    return pytest.approx(x, abs=1)


def test_route_change_starts_a_soft_view_with_its_own_metrics(tab: Tab) -> None:
    tab.open("/spa.html")
    tab.page.wait_for_timeout(300)
    tab.page.click("#go")
    hard_beacon = tab.sent(1)  # the hard view ends at the route change
    assert len(hard_beacon) == 1
    tab.wait_for("__truth.marks.cart && __truth.marks.shifted && __truth.marks.painted")
    tab.page.wait_for_timeout(200)
    tab.page.click("#checkout")
    tab.wait_for("__truth.entries.event.filter(e => e.name === 'click').length === 2")
    tab.page.wait_for_timeout(300)
    truth = tab.truth()
    tab.leave()
    beacons = tab.sent(2)
    assert len(beacons) == 2
    hard = tab.collector.view(beacons[0]["id"], tab.started)
    soft = tab.collector.view(beacons[1]["id"], tab.started)
    route = truth["marks"]["route"]

    # two page views, two ids; the soft one starts at the route change
    assert hard["id"] != soft["id"]
    assert (hard["soft"], soft["soft"]) == (False, True)
    assert hard["url"] == f"{tab.site.url}/spa.html"
    assert soft["url"] == f"{tab.site.url}/spa/cart"
    assert soft["page"] == "/spa/cart"
    # the soft view starts inside the pushState call (which also sends the hard
    # view's beacon, so it can take a few ms on a busy machine)
    before = (truth["timeOrigin"] + truth["marks"]["beforeRoute"]) / 1000
    after = (truth["timeOrigin"] + route) / 1000
    assert before - 0.001 <= soft["ts"] <= after + 0.001
    assert soft["release"] == "2.0.0"

    # the hard view has the load metrics, and nothing of what came after the route change
    assert {v["name"] for v in hard["vitals"]} >= {"FCP", "TTFB", "LCP"}
    assert "INP" not in {v["name"] for v in hard["vitals"]}
    assert all(g["type"] != "fetch" for g in hard["resources"])
    assert hard["nav"]["type"] == "navigate"

    # route change → next paint, measured the way the page measured it: a
    # setTimeout queued from the first requestAnimationFrame after the change.
    # The agent's callbacks were queued first, so they run first; other tasks
    # may run between the two timers, hence the few ms of slack below.
    assert soft["nav"]["type"] == "soft"
    painted = truth["marks"]["painted"]
    assert (
        painted - route - 5 <= soft["nav"]["load_ms"] <= painted - truth["marks"]["beforeRoute"] + 1
    )
    assert soft["nav"]["load_ms"] >= 80  # the route handler blocked for 80 ms

    # its own long tasks: the route handler and the checkout click
    ended_after = [
        e for e in truth["entries"]["longtask"] if e["startTime"] + e["duration"] > route
    ]
    frames = [
        f
        for f in truth["entries"]["long-animation-frame"]
        if f["startTime"] + f["duration"] > route
    ]
    want = T.long_tasks(ended_after, frames)
    assert soft["long_tasks"] == {
        k: (near(v) if isinstance(v, float) else v) for k, v in want.items()
    }
    assert soft["long_tasks"]["count"] == 2

    # its own resources: the cart, loaded during the soft view
    assert [(g["type"], g["count"], g["encoded_bytes"]) for g in soft["resources"]] == [
        ("fetch", 1, 5000)
    ]
    (cart,) = [r for r in truth["resources"] if "/asset/cart.json" in r["name"]]
    assert soft["resources"][0]["transfer_bytes"] == cart["transferSize"]

    # INP and CLS observed during the soft view only
    vitals = {v["name"]: v for v in soft["vitals"]}
    assert set(vitals) == {"INP", "CLS"}
    latency, first = T.inp(truth, after=route)
    assert vitals["INP"]["value"] == near(latency)
    assert vitals["INP"]["attribution"]["target"] == "#" + first["target"]
    assert vitals["INP"]["navigation_type"] == "soft-navigation"
    shifts = [
        e
        for e in truth["entries"]["layout-shift"]
        if e["startTime"] > route and not e["hadRecentInput"]
    ]
    assert len(shifts) == 1
    assert vitals["CLS"]["value"] == pytest.approx(shifts[0]["value"], abs=0.001)
    assert vitals["CLS"]["attribution"]["target"] == "#" + shifts[0]["sources"][0]
    assert truth["errors"] == []
