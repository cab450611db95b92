"""The query API and CLI over a real collector: values, shapes, errors."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from conftest import READ_TOKEN, Server, beacon
from perfpulse.sketch import ALPHA, Sketch, nearest_rank


def send_durations(
    server: Server, service: str, route: str, values: list[float], status: int = 200
) -> None:
    now = time.time()
    events = [
        {
            "kind": "http",
            "ts": now - 1,
            "route": route,
            "method": "GET",
            "status": status,
            "duration_ms": v,
        }
        for v in values
    ]
    for i in range(0, len(events), 1000):
        batch = {
            "batch_id": uuid.uuid4().hex,
            "resource": {"service": service},
            "events": events[i : i + 1000],
        }
        assert server.send(batch).status_code == 202


@pytest.fixture
def loaded(server: Server) -> tuple[Server, dict[tuple[str, str], list[float]]]:
    rng = random.Random(42)
    data = {
        ("checkout", "/pay"): [rng.lognormvariate(5, 0.6) for _ in range(3000)],
        ("checkout", "/cart"): [rng.lognormvariate(3, 0.3) for _ in range(2000)],
        ("search", "/q"): [rng.paretovariate(1.5) * 10 for _ in range(1500)],
    }
    for (service, route), values in data.items():
        send_durations(server, service, route, values)
    send_durations(server, "checkout", "/pay", [900.0] * 30, status=503)
    data[("checkout", "/pay")] += [900.0] * 30
    server.wait_stored(count=sum(len(v) for v in data.values()))
    return server, data


def test_percentiles_by_route_with_filter(
    loaded: tuple[Server, dict[tuple[str, str], list[float]]],
) -> None:
    server, data = loaded
    r = server.get(
        "/api/v1/percentiles",
        metric="http.server.duration",
        q="0.5,0.95,0.99",
        by="route",
        service="checkout",
        **{"from": time.time() - 600, "to": time.time() + 1},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["metric"] == "http.server.duration"
    groups = {g["key"]["route"]: g for g in body["groups"]}
    assert set(groups) == {"/pay", "/cart"}  # the filter kept search out
    for route, g in groups.items():
        values = sorted(data[("checkout", route)])
        assert g["count"] == len(values)
        ref = Sketch()
        for v in values:
            ref.add(v)
        for text, q in (("0.5", 0.5), ("0.95", 0.95), ("0.99", 0.99)):
            exact = values[nearest_rank(q, len(values)) - 1]
            assert g["quantiles"][text] == pytest.approx(ref.quantile(q), rel=1e-12)
            assert abs(g["quantiles"][text] - exact) <= ALPHA * exact
    assert groups["/pay"]["error_ratio"] == pytest.approx(30 / 3030)
    assert groups["/cart"]["error_ratio"] == 0.0


def test_timeseries_and_top(loaded: tuple[Server, dict[tuple[str, str], list[float]]]) -> None:
    server, data = loaded
    now = time.time()
    r = server.get(
        "/api/v1/timeseries",
        metric="http.server.duration",
        step=60,
        q="0.5",
        **{"from": now - 600, "to": now + 60},
    )
    body = r.json()
    assert r.status_code == 200 and body["step"] == 60
    (series,) = body["series"]
    assert sum(p["count"] for p in series["points"]) == sum(len(v) for v in data.values())
    assert all(p["ts"] % 60 == 0 for p in series["points"])
    r = server.get(
        "/api/v1/top",
        metric="http.server.duration",
        by="service,route",
        order="p95",
        q="0.5,0.95",
        limit=2,
        **{"from": now - 600},
    )
    top = r.json()
    assert [g["key"] for g in top["groups"]] == [
        {"service": "checkout", "route": "/pay"},
        {"service": "search", "route": "/q"},
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metric": "nope.metric"}, "unknown metric 'nope.metric'"),
        ({}, "'metric' is required"),
        ({"metric": "http.server.duration", "from": "200", "to": "100"}, "bad window"),
        ({"metric": "http.server.duration", "from": "yesterday"}, "'from' must be Unix seconds"),
        ({"metric": "http.server.duration", "q": "1.5"}, "bad quantile '1.5'"),
        ({"metric": "http.server.duration", "q": "p99"}, "bad quantile 'p99'"),
        ({"metric": "http.server.duration", "by": "colour"}, "unknown dimension 'colour'"),
        ({"metric": "rum.lcp", "route": "/x"}, "unknown dimension 'route'"),
    ],
)
def test_bad_questions_get_400_with_the_reason(
    server: Server, params: dict[str, str], message: str
) -> None:
    r = server.get("/api/v1/percentiles", **params)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_vitals_summary_per_page_and_device(server: Server) -> None:
    lcp = {"mobile": [1000.0, 2000.0, 3000.0, 4500.0], "desktop": [800.0, 900.0, 1000.0, 1100.0]}
    for device, values in lcp.items():
        for v in values:
            b = beacon(
                device=device,
                url="https://shop.example/",
                vitals=[
                    {"name": "LCP", "value": v},
                    {"name": "INP", "value": 120.0},
                    {"name": "CLS", "value": 0.01},
                ],
            )
            assert server.beacon(b).status_code == 202
    server.wait_stored(metric="rum.lcp", count=8)
    body = server.get("/api/v1/vitals", **{"from": time.time() - 600}).json()
    groups = {g["key"]["device"]: g for g in body["groups"]}
    mobile, desktop = groups["mobile"]["metrics"]["LCP"], groups["desktop"]["metrics"]["LCP"]
    assert mobile["p75"] == pytest.approx(3000.0, rel=ALPHA)
    assert (mobile["good"], mobile["needs_improvement"], mobile["poor"]) == (0.5, 0.25, 0.25)
    assert mobile["rating"] == "needs_improvement"
    assert groups["mobile"]["passes"] is False
    assert desktop["p75"] == pytest.approx(1000.0, rel=ALPHA)
    assert groups["desktop"]["passes"] is True
    assert groups["desktop"]["key"] == {"page": "/", "device": "desktop"}


def test_cli_query_prints_a_table(loaded: tuple[Server, Any]) -> None:
    server, _ = loaded
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "query",
            "percentiles",
            "--metric",
            "http.server.duration",
            "--by",
            "route",
            "--filter",
            "service=checkout",
            "--url",
            server.url,
            "--token",
            READ_TOKEN,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["route", "count", "p0.5", "p0.95", "p0.99", "error_ratio"]
    assert lines[2].split()[:2] == ["/pay", "3030"]
    assert lines[3].split()[:2] == ["/cart", "2000"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "query",
            "percentiles",
            "--metric",
            "nope",
            "--url",
            server.url,
            "--token",
            READ_TOKEN,
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "unknown metric 'nope'" in bad.stderr


def test_apdex_counts_satisfied_and_tolerating_requests(server: Server) -> None:
    # 60 satisfied (≤ 100), 30 tolerating (≤ 400), 10 frustrated: (60 + 15) / 100
    values = [50.0] * 60 + [250.0] * 30 + [2000.0] * 10
    send_durations(server, "apdex", "/a", values)
    server.wait_stored(count=100, service="apdex")
    body = server.get(
        "/api/v1/percentiles",
        metric="http.server.duration",
        service="apdex",
        apdex="100",
        **{"from": time.time() - 600},
    ).json()
    assert body["groups"][0]["apdex"] == pytest.approx(0.75)
    steps = server.get(
        "/api/v1/timeseries",
        metric="http.server.duration",
        service="apdex",
        apdex="100",
        step="600",
        **{"from": time.time() - 600},
    ).json()
    assert sum(p["count"] * p["apdex"] for p in steps["series"][0]["points"]) == pytest.approx(75)
    bad = server.get("/api/v1/percentiles", metric="http.server.duration", apdex="-1")
    assert bad.status_code == 400 and "apdex" in bad.json()["error"]


def test_breakdown_groups_lists_and_rejects_unknown_names(server: Server) -> None:
    now = time.time()
    events = [
        {
            "kind": "db",
            "ts": now - 1,
            "fingerprint": "SELECT * FROM t WHERE id = 1",
            "duration_ms": 10.0 * (i + 1),
            "route": "/r",
        }
        for i in range(4)
    ] + [
        {
            "kind": "db",
            "ts": now - 1,
            "fingerprint": "UPDATE u SET a = 2",
            "duration_ms": 5.0,
            "route": "/r",
        }
    ]
    batch = {"batch_id": uuid.uuid4().hex, "resource": {"service": "bd"}, "events": events}
    assert server.send(batch).status_code == 202
    server.wait_stored("db.query.duration", count=5, service="bd")
    common = {"from": now - 600, "to": now + 60, "service": "bd"}
    body = server.get(
        "/api/v1/breakdown",
        source="db",
        by="fingerprint",
        measure="count,sum:duration_ms,max:duration_ms",
        order="sum:duration_ms",
        **common,
    ).json()
    top = body["rows"][0]
    assert top["fingerprint"] == "SELECT * FROM t WHERE id = ?"
    assert (top["count"], top["sum_duration_ms"], top["max_duration_ms"]) == (4, 100.0, 40.0)
    assert body["rows"][1] == {
        "fingerprint": "UPDATE u SET a = ?",
        "count": 1,
        "sum_duration_ms": 5.0,
        "max_duration_ms": 5.0,
    }
    listing = server.get(
        "/api/v1/breakdown",
        source="db",
        measure="",
        by="fingerprint,duration_ms",
        order="duration_ms",
        limit="2",
        **{"min.duration_ms": "15"},
        **common,
    ).json()["rows"]
    assert [r["duration_ms"] for r in listing] == [40.0, 30.0]
    for bad, word in (
        ({"source": "nope"}, "nope"),
        ({"source": "db", "by": "evil;drop"}, "evil;drop"),
        ({"source": "db", "measure": "sum:fingerprint"}, "numeric"),
        ({"source": "db", "measure": "exec:duration_ms"}, "exec"),
        ({"source": "db", "min.duration_ms": "x"}, "number"),
    ):
        r = server.get("/api/v1/breakdown", **bad, **common)
        assert r.status_code == 400 and word in r.json()["error"], (bad, r.text)
