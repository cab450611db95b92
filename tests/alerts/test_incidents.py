"""Incidents: open or join per group, acknowledge, notes, resolve, the timeline,
and everything surviving a restart of the engine on the same SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.errors import Conflict, NotFound
from perfpulse.alerts.expr import parse
from perfpulse.alerts.notifiers import MemoryNotifier
from perfpulse.alerts.source import MemorySource
from perfpulse.alerts.store import AlertStore

T0 = 1_790_000_000.0
EXPR = 'p95(http.server.duration{service="checkout"}) by (route) > 300'
MEASURE = parse(EXPR).measure
RULES = f"""
rules:
  - name: CheckoutSlow
    expr: {EXPR}
    severity: warning
  - name: CheckoutErrors
    expr: error_ratio(http{{service="checkout"}}) by (route) > 0.05
    severity: page
receivers:
  - name: ops
    webhook_configs: [{{url: "http://127.0.0.1:9/unused"}}]
route: {{receiver: ops, group_by: [route], group_wait: 0s, group_interval: 1m}}
"""


def engine(tmp_path: Path, source: MemorySource, notifier: MemoryNotifier) -> AlertEngine:
    rules = tmp_path / "rules.yaml"
    if not rules.exists():
        rules.write_text(RULES)
    return AlertEngine(
        AlertStore(tmp_path / "alerts.sqlite"),
        source,
        rules_path=rules,
        notifiers=lambda integration: notifier,
        clock=lambda: T0,
    )


def test_alerts_of_a_group_share_an_incident_with_a_full_timeline(tmp_path: Path) -> None:
    source, notifier = MemorySource(), MemoryNotifier()
    e = engine(tmp_path, source, notifier)
    errors = parse('error_ratio(http{service="checkout"}) by (route) > 0.05').measure
    source.put(MEASURE, {"route": "/pay"}, T0, 400.0)
    e.tick(T0)
    source.put(errors, {"route": "/pay"}, T0 + 15, 0.2)
    source.put(MEASURE, {"route": "/cart"}, T0 + 15, 500.0)
    e.tick(T0 + 15)
    incidents = {i["labels"]["route"]: i for i in e.incidents.list()}
    assert set(incidents) == {"/pay", "/cart"}  # one per group (group_by: route)
    pay = e.incidents.show(incidents["/pay"]["id"])
    assert pay["severity"] == "page"  # raised by the second alert that joined
    assert sorted(a["labels"]["alertname"] for a in pay["alerts"]) == [
        "CheckoutErrors",
        "CheckoutSlow",
    ]
    e.incidents.ack(pay["id"], by="ana", now=T0 + 20)
    with pytest.raises(Conflict):
        e.incidents.ack(pay["id"], by="bo", now=T0 + 21)
    e.incidents.note(pay["id"], "rolling back 1.4.2", by="ana", now=T0 + 25)
    # the slow alert resolves; the error one keeps the incident open
    source.put(MEASURE, {"route": "/pay"}, T0 + 30, 100.0)
    source.put(errors, {"route": "/pay"}, T0 + 30, 0.2)
    e.tick(T0 + 30)
    assert e.incidents.show(pay["id"])["status"] == "acknowledged"
    source.put(errors, {"route": "/pay"}, T0 + 45, 0.0)
    e.tick(T0 + 45)
    shown = e.incidents.show(pay["id"])
    assert shown["status"] == "resolved" and shown["resolved_by"] == "perfpulse"
    kinds = [(ev["ts"] - T0, ev["kind"]) for ev in shown["timeline"]]
    assert kinds == [
        (0, "opened"),
        (0, "firing"),
        (0, "notification"),
        (15, "firing"),
        (20, "acknowledged"),
        (25, "note"),
        (30, "resolved"),
        (45, "resolved"),
        (45, "resolved"),
    ]
    assert shown["timeline"][5]["text"] == "rolling back 1.4.2"
    assert shown["timeline"][5]["data"] == {"by": "ana"}
    assert shown["timeline"][-1]["text"] == "all alerts resolved"
    with pytest.raises(NotFound):
        e.incidents.show(999)


def test_manual_resolve_and_a_new_episode_opens_a_new_incident(tmp_path: Path) -> None:
    source, notifier = MemorySource(), MemoryNotifier()
    e = engine(tmp_path, source, notifier)
    source.put(MEASURE, {"route": "/pay"}, T0, 400.0)
    e.tick(T0)
    (first,) = e.incidents.list()
    e.incidents.resolve(first["id"], by="ana", now=T0 + 5)
    with pytest.raises(Conflict):
        e.incidents.resolve(first["id"], by="ana", now=T0 + 6)
    source.put(MEASURE, {"route": "/pay"}, T0 + 15, 100.0)
    e.tick(T0 + 15)
    source.put(MEASURE, {"route": "/pay"}, T0 + 30, 400.0)
    e.tick(T0 + 30)
    second, again_first = e.incidents.list()
    assert again_first["id"] == first["id"] and again_first["resolved_by"] == "ana"
    assert second["id"] != first["id"] and second["status"] == "open"


def test_incidents_silences_deliveries_and_states_survive_a_restart(tmp_path: Path) -> None:
    source, notifier = MemorySource(), MemoryNotifier(fail=1)
    e = engine(tmp_path, source, notifier)
    source.put(MEASURE, {"route": "/pay"}, T0, 400.0)
    e.tick(T0)  # fires; the first delivery try fails
    sid = e.silences.add(['route="/cart"'], ends_at=T0 + 7200, now=T0, created_by="ana")
    e.store.close()  # the process goes away

    again = engine(tmp_path, source, notifier)
    (inc,) = again.incidents.list()
    assert inc["status"] == "open"
    assert [s["id"] for s in again.silences.list(T0)] == [sid]
    (d,) = again.store.deliveries()
    assert (d["attempts"], d["outcome"]) == (1, "pending")
    assert again.evaluator.series["CheckoutSlow"][(("route", "/pay"),)].state == "firing"
    source.put(MEASURE, {"route": "/pay"}, T0 + 15, 400.0)
    again.tick(T0 + 15)  # still firing: no new incident, no new notification; the retry goes out
    assert len(again.incidents.list()) == 1
    (d,) = again.store.deliveries()
    assert (d["attempts"], d["outcome"]) == (2, "sent")
    assert len(notifier.sent) == 1
    again.store.close()
