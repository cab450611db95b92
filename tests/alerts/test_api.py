"""Alerting in a real collector process: rules fire on ingested data, the webhook
receiver on loopback gets Alertmanager's payload, the API and the ``perfpulse
incidents`` commands work, and state survives a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import READ_TOKEN, Server

RULES = """
evaluation_interval: 1s
external_url: http://perfpulse.test
rules:
  - name: CheckoutSlow
    expr: p95(http.server.duration{{service="checkout"}}[10m]) by (route) > 300
    recovery: 250
    severity: page
    annotations: {{summary: "p95 of {{{{ $labels.route }}}} is {{{{ $value }}}} ms"}}
slos:
  - name: pay-latency
    sli: http.server.duration{{service="checkout", route="/pay"}}
    threshold: 300
    objective: 99%
    window: 1d
receivers:
  - name: ops
    webhook_configs: [{{url: "{url}/hook"}}]
route: {{receiver: ops, group_by: [alertname, route], group_wait: 0s, group_interval: 1m}}
"""


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not true after {timeout}s")


def send(server: Server, route: str, values: list[float]) -> None:
    events = [
        {
            "kind": "http",
            "ts": time.time() - 1,
            "route": route,
            "method": "POST",
            "status": 200,
            "duration_ms": v,
        }
        for v in values
    ]
    batch = {"batch_id": uuid.uuid4().hex, "resource": {"service": "checkout"}, "events": events}
    assert server.send(batch).status_code == 202


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perfpulse.cli", *args, "--url", server.url],
        capture_output=True,
        text=True,
        env={**os.environ, "PERFPULSE_READ_TOKEN": READ_TOKEN},
        timeout=30,
    )


@pytest.fixture
def setup(tmp_path: Path, receiver: tuple[Any, str]) -> Iterator[tuple[Server, Any, Path]]:
    rec, url = receiver
    rules = tmp_path / "alerting.yaml"
    rules.write_text(RULES.format(url=url))
    server = Server(tmp_path / "data", "--rules", str(rules)).start()
    try:
        yield server, rec, rules
    finally:
        if server.proc is not None:
            server.kill()


def test_rule_fires_notifies_and_opens_an_incident(
    setup: tuple[Server, Any, Path],
) -> None:
    server, rec, _ = setup
    send(server, "/pay", [500.0] * 40 + [100.0] * 60)  # p95 500 ms; 60 % under 300 ms
    send(server, "/cart", [50.0] * 100)

    def bodies(alertname: str) -> list[dict[str, Any]]:
        hook = rec.bodies.get("hook", [])
        return [b for b in hook if b["groupLabels"]["alertname"] == alertname]

    body = wait_for(lambda: bodies("CheckoutSlow"))[0]
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": "CheckoutSlow", "route": "/pay"}
    (alert,) = body["alerts"]
    summary = alert["annotations"]["summary"]
    assert summary.startswith("p95 of /pay is ") and summary.endswith(" ms")
    assert abs(float(summary.split()[-2]) - 500.0) <= 5.0  # the sketch's 1 %
    assert alert["generatorURL"] == "http://perfpulse.test/api/v1/alerts/rules/CheckoutSlow"

    def states() -> dict[str, str]:
        found = server.get("/api/v1/alerts").json()["alerts"]
        return {a["labels"]["route"]: a["state"] for a in found if "route" in a["labels"]}

    wait_for(lambda: states() == {"/pay": "firing", "/cart": "inactive"})
    # 40 % of /pay is slow against a 1 % budget: burn rate 40 pages (≥ 14.4) and tickets (≥ 6)
    wait_for(lambda: bodies("slo:pay-latency:1h") and bodies("slo:pay-latency:6h"))
    burn = {a["rule"]: a for a in server.get("/api/v1/alerts", state="firing").json()["alerts"]}
    assert abs(burn["slo:pay-latency:1h"]["value"] - 40.0) < 1e-9
    assert server.get("/api/v1/alerts", token=None).status_code == 401
    assert server.get("/api/v1/incidents", token="wrong").status_code == 403

    (slo,) = server.get("/api/v1/slos").json()["slos"]
    assert (slo["good"], slo["total"]) == (60, 100)
    assert abs(slo["error_budget_remaining"] - (1 - 0.4 / 0.01)) < 1e-9

    def slow_incidents() -> list[dict[str, Any]]:
        found = server.get("/api/v1/incidents", status="open").json()["incidents"]
        return [i for i in found if i["labels"]["alertname"] == "CheckoutSlow"]

    (inc,) = wait_for(slow_incidents)
    assert inc["severity"] == "page" and inc["title"].startswith("p95 of /pay")

    listed = cli(server, "incidents", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{inc['id']}" in listed.stdout and "open" in listed.stdout
    acked = cli(server, "incidents", "ack", str(inc["id"]), "--by", "ana")
    assert acked.returncode == 0 and "acknowledged by ana" in acked.stdout
    noted = cli(server, "incidents", "note", str(inc["id"]), "rolled back", "--by", "ana")
    assert noted.returncode == 0 and "rolled back" in noted.stdout
    again = cli(server, "incidents", "ack", str(inc["id"]))
    assert again.returncode == 2 and "409" in again.stderr
    missing = cli(server, "incidents", "show", "999")
    assert missing.returncode == 2 and "404" in missing.stderr
    done = cli(server, "incidents", "resolve", str(inc["id"]), "--by", "ana", "--json")
    assert done.returncode == 0
    shown = cli(server, "incidents", "show", str(inc["id"]))
    assert "resolved by ana" in shown.stdout
    for kind in ("opened", "firing", "notification", "acknowledged", "note", "resolved"):
        assert f" {kind} " in shown.stdout, shown.stdout
    deliveries = server.get("/api/v1/deliveries", incident=inc["id"]).json()["deliveries"]
    assert [(d["outcome"], d["attempts"]) for d in deliveries] == [("sent", 1)]

    # silences through the CLI, then everything survives a restart
    added = cli(server, "silences", "add", 'route="/cart"', "--duration", "1h")
    assert added.returncode == 0
    sid = added.stdout.strip()
    assert server.stop() == 0
    server.start()
    everything = server.get("/api/v1/incidents").json()["incidents"]
    (after,) = [i for i in everything if i["id"] == inc["id"]]
    assert len(everything) == 3  # the two SLO alerts have theirs
    assert after["status"] == "resolved" and after["acked_by"] == "ana"
    assert [s["id"] for s in server.get("/api/v1/silences").json()["silences"]] == [sid]
    assert len(server.get("/api/v1/deliveries").json()["deliveries"]) == 3
    expired = cli(server, "silences", "expire", sid)
    assert expired.returncode == 0
    assert server.get("/api/v1/silences", state="active").json()["silences"] == []
    time.sleep(1.5)  # a few evaluations after the restart: no second notification
    assert len(rec.bodies["hook"]) == 3


def test_rules_api_edits_the_file(setup: tuple[Server, Any, Path]) -> None:
    server, _, rules = setup
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    url = f"{server.url}/api/v1/alerts/rules"
    new = {"name": "CartErrors", "expr": 'error_ratio(http{route="/cart"}) > 0.05', "for": "1m"}
    r = httpx.post(url, json=new, headers=headers)
    assert r.status_code == 201, r.text
    assert "CartErrors" in rules.read_text()
    assert "CheckoutSlow" in rules.read_text() and "receivers" in rules.read_text()
    assert httpx.post(url, json=new, headers=headers).status_code == 409
    bad = httpx.post(
        url,
        json={"name": "Bad", "expr": "p95(http.server.duration{route=/cart}) > 1"},
        headers=headers,
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == ("rule 'Bad': expr line 1, column 32: unexpected character '/'")
    r = httpx.put(
        f"{url}/CartErrors", json={"expr": "p99(http.server.duration) > 900"}, headers=headers
    )
    assert r.status_code == 200, r.text
    got = httpx.get(f"{url}/CartErrors", headers=headers).json()
    assert got["expr"] == "p99(http.server.duration) > 900" and got["origin"] == "rules"
    assert {r["name"] for r in httpx.get(url, headers=headers).json()["rules"]} == {
        "CheckoutSlow",
        "CartErrors",
        "slo:pay-latency:1h",
        "slo:pay-latency:6h",
    }
    assert httpx.delete(f"{url}/CartErrors", headers=headers).status_code == 200
    assert httpx.delete(f"{url}/CartErrors", headers=headers).status_code == 404
    assert "CartErrors" not in rules.read_text()
    checked = subprocess.run(
        [sys.executable, "-m", "perfpulse.cli", "rules", "check", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0 and "1 rules, 1 SLOs" in checked.stdout


def test_serve_refuses_a_broken_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: X\n    expr: p95(rum.lcp) >\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--rules",
            str(rules),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"{rules}:3:25: rule 'X': expected a number, found the end" in done.stderr
