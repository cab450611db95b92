"""Live budgets and the baseline gate against a real collector, with
``perfpulse budget check --url`` run as a subprocess; and the same budgets
running in the collector as alert rules."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import READ_TOKEN, Server
from perfpulse.sketch import bucket_of, value_of

BUDGETS = """
window: 1h
timings:
  - {page: "/", LCP: 2500, INP: 400}
api:
  - {service: checkout, route: /pay, p95: 300, error_ratio: 0.05}
  - {service: checkout, route: /cart, p95: 300}
thresholds:
  - {service: api, cpu: 80}
resources:
  - {type: script, size: 100KiB, count: 5}
baseline: {tolerance: 5%, confidence: 0.95, min_samples: 30, resamples: 400}
"""


def http(server: Server, release: str, route: str, start: float, median: float) -> None:
    """30 requests a minute for 55 minutes from ``start``, log-normal around ``median``."""
    rng = random.Random(f"{release}{route}")
    events = [
        {
            "kind": "http",
            "ts": start + m * 60 + rng.uniform(0, 59),
            "route": route,
            "method": "GET",
            "status": 200,
            "duration_ms": rng.lognormvariate(math.log(median), 0.3),
        }
        for m in range(55)
        for _ in range(30)
    ]
    for i in range(0, len(events), 1000):
        batch = {
            "batch_id": uuid.uuid4().hex,
            "resource": {"service": "checkout", "release": release},
            "events": events[i : i + 1000],
        }
        assert server.send(batch).status_code == 202


def views(
    server: Server, release: str, start: float, n: int, lcp: float, inp: float, span: float = 3000
) -> None:
    """``n`` page views of ``/`` with LCP and INP log-normal around the given medians."""
    rng = random.Random(release)
    script = [{"type": "script", "count": 3, "transfer_bytes": 150_000}] if span > 300 else []
    beacons = [
        {
            "id": uuid.uuid4().hex,
            "ts": start + i * (span / n),
            "url": "https://shop.example/",
            "service": "web",
            "release": release,
            "device": "desktop",
            "vitals": [
                {"name": "LCP", "value": rng.lognormvariate(math.log(lcp), 0.25)},
                {"name": "INP", "value": rng.lognormvariate(math.log(inp), 0.25)},
            ],
            "resources": script,
        }
        for i in range(n)
    ]
    with ThreadPoolExecutor(8) as pool:  # beacons are one page view per request
        assert {r.status_code for r in pool.map(server.beacon, beacons)} == {202}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("live")
    budgets = root / "perfpulse-budgets.yaml"
    budgets.write_text(BUDGETS)
    data = root / "data"
    data.mkdir()
    (data / "rules.yaml").write_text("evaluation_interval: 1s\n")
    server = Server(data, "--budgets", str(budgets), "--fsync", "never").start()
    try:
        now = time.time()
        http(server, "1.4.1", "/pay", now - 6900, 200.0)
        http(server, "1.4.2", "/pay", now - 3500, 280.0)  # 40 % slower
        http(server, "1.4.1", "/cart", now - 6900, 50.0)
        http(server, "1.4.2", "/cart", now - 3500, 50.0)  # unchanged
        views(server, "1.4.1", now - 6800, 40, lcp=1800.0, inp=150.0)
        views(server, "1.4.2", now - 3300, 40, lcp=1800.0, inp=250.0)  # INP regressed
        views(server, "1.4.3", now - 600, 5, lcp=1500.0, inp=150.0, span=300)  # a release just out
        cpu = {"kind": "resource", "ts": now - 30, "process_cpu_pct": 40.0}
        batch = {
            "batch_id": uuid.uuid4().hex,
            "resource": {"service": "api", "release": "1.4.2"},
            "events": [cpu],
        }
        assert server.send(batch).status_code == 202
        server.wait_stored(count=4 * 55 * 30, timeout=30)
        server.wait_stored(metric="rum.lcp", count=85, timeout=30)
        server.settle()  # the CPU sample too
        yield server, budgets
    finally:
        if server.proc is not None:
            server.kill()


def check(
    server: Server, budgets: Path, *args: str, token: str = READ_TOKEN
) -> tuple[subprocess.CompletedProcess[str], dict[str, ET.Element]]:
    junit = budgets.parent / f"junit-{uuid.uuid4().hex}.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "budget",
            "check",
            "--config",
            str(budgets),
            "--url",
            server.url,
            "--junit",
            str(junit),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PERFPULSE_READ_TOKEN": token},
    )
    cases = {}
    if junit.exists():
        cases = {c.attrib["name"]: c for c in ET.parse(junit).getroot().iter("testcase")}
    return done, cases


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None:
        return "fail"
    return "skip" if case.find("skipped") is not None else "pass"


def test_live_budgets_through_the_query_api(collector: tuple[Server, Path]) -> None:
    server, budgets = collector
    done, cases = check(server, budgets, "--release", "1.4.2", "--since", "1h")
    assert done.returncode == 1, done.stdout + done.stderr
    assert {name: outcome(c) for name, c in cases.items()} == {
        "LCP p75 page=/": "pass",
        "INP p75 page=/": "pass",
        "api p95 service=checkout route=/pay": "fail",
        "api error_ratio service=checkout route=/pay": "pass",
        "api p95 service=checkout route=/cart": "pass",
        "cpu avg service=api": "pass",
        "script transfer p75": "fail",
        "script count p75": "pass",
    }
    failure = cases["script transfer p75"].find("failure")
    assert failure is not None
    p75 = value_of(bucket_of(150_000)) / 1024  # the sketch's value, within 1 %
    assert failure.attrib["message"] == f"{p75:.1f} KiB against a limit of 100.0 KiB"
    assert "api p95 service=checkout route=/pay" in done.stdout


def test_no_data_skips_and_bad_token_is_a_usage_error(collector: tuple[Server, Path]) -> None:
    server, budgets = collector
    done, cases = check(server, budgets, "--release", "9.9.9")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {outcome(c) for c in cases.values()} == {"skip"}
    skipped = cases["LCP p75 page=/"].find("skipped")
    assert skipped is not None and skipped.attrib["message"] == "no data in window"
    refused, cases = check(server, budgets, "--release", "1.4.2", token="wrong")
    assert refused.returncode == 2 and "403" in refused.stderr and cases == {}


def test_baseline_fails_only_on_significant_regressions(collector: tuple[Server, Path]) -> None:
    server, budgets = collector
    done, cases = check(
        server,
        budgets,
        "--release",
        "1.4.2",
        "--baseline",
        "release=1.4.1",
        "--since",
        "1h",
        "--baseline-since",
        "3h",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    baseline = {n: outcome(c) for n, c in cases.items() if n.startswith("baseline")}
    assert baseline == {
        "baseline LCP p75 page=/": "pass",  # same distribution: noise does not fail
        "baseline INP p75 page=/": "fail",  # 150 → 250 ms
        "baseline api p95 service=checkout route=/pay": "fail",  # 40 % slower
        "baseline api error_ratio service=checkout route=/pay": "pass",
        "baseline api p95 service=checkout route=/cart": "pass",
    }
    inp = cases["baseline INP p75 page=/"].find("failure")
    assert inp is not None and inp.text is not None
    assert inp.text.startswith("significant regression beyond tolerance: ")
    assert "for release=1.4.1" in inp.text
    lcp = cases["baseline LCP p75 page=/"].find("system-out")
    assert lcp is not None and "regression" in (lcp.text or "")


def test_baseline_with_too_little_data_says_so(collector: tuple[Server, Path]) -> None:
    server, budgets = collector
    done, cases = check(
        server,
        budgets,
        "--release",
        "1.4.3",
        "--baseline",
        "release=1.4.1",
        "--baseline-since",
        "3h",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lcp = cases["baseline LCP p75 page=/"].find("skipped")
    assert lcp is not None
    assert lcp.attrib["message"].startswith(
        "too little data to decide: 40 events in 40 blocks for release=1.4.1, 5 in 5 now"
    )
    assert "too little data to decide" in done.stdout


def test_the_same_budgets_run_as_alert_rules(collector: tuple[Server, Path]) -> None:
    server, _ = collector
    rules = {r["name"]: r for r in server.get("/api/v1/alerts/rules").json()["rules"]}
    pay = rules["budget: api p95 service=checkout route=/pay"]
    assert pay["origin"] == "budgets" and pay["editable"] is False
    one = server.get("/api/v1/alerts/rules/budget: api p95 service=checkout route=/pay").json()
    assert one["name"] == pay["name"]  # names with '/' are reachable too
    assert pay["expr"] == ('p95(http.server.duration{service="checkout", route="/pay"}[1h]) > 300')
    deadline = time.monotonic() + 15
    firing: set[str] = set()
    while time.monotonic() < deadline:
        found: list[dict[str, Any]] = server.get("/api/v1/alerts", state="firing").json()["alerts"]
        firing = {a["rule"] for a in found}
        if "budget: api p95 service=checkout route=/pay" in firing:
            break
        time.sleep(0.2)
    assert "budget: api p95 service=checkout route=/pay" in firing
    assert "budget: api p95 service=checkout route=/cart" not in firing
