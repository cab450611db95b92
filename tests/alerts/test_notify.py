"""Notifications through real receivers: an HTTP server on loopback for webhooks
and Slack, an aiosmtpd SMTP server for mail. The engine is driven tick by tick
with an injected clock and constructed series."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import free_port
from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.expr import parse
from perfpulse.alerts.source import MemorySource
from perfpulse.alerts.store import AlertStore

T0 = 1_790_000_000.0
EXPR = 'p95(http.server.duration{service="checkout"}) by (route) > 300'
MEASURE = parse(EXPR).measure


def make_engine(tmp_path: Path, receivers: str, route: str, extra: str = "") -> AlertEngine:
    (tmp_path / "rules.yaml").write_text(
        f"""
evaluation_interval: 15s
external_url: http://perfpulse.test:8600
rules:
  - name: CheckoutSlow
    expr: {EXPR}
    recovery: 250
    severity: page
    labels: {{team: payments}}
    annotations: {{summary: "checkout is slow", value: "{{{{ $value }}}}"}}
receivers:
{receivers}
route: {route}
{extra}
"""
    )
    return AlertEngine(
        AlertStore(tmp_path / "alerts.sqlite"),
        MemorySource(),
        rules_path=tmp_path / "rules.yaml",
        clock=lambda: T0,
    )


def put(e: AlertEngine, route: str, ts: float, value: float) -> None:
    assert isinstance(e.source, MemorySource)
    e.source.put(MEASURE, {"route": route}, ts, value)


def test_webhook_payload_is_alertmanagers_and_groups_wait(
    tmp_path: Path, receiver: tuple[Any, str]
) -> None:
    rec, url = receiver
    e = make_engine(
        tmp_path,
        f'  - name: ops\n    webhook_configs: [{{url: "{url}/hook"}}]',
        "{receiver: ops, group_by: [alertname], group_wait: 30s, group_interval: 2m, "
        "repeat_interval: 1h}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)  # /pay fires; the group waits 30 s for company
    put(e, "/search", T0 + 15, 350.0)
    put(e, "/pay", T0 + 15, 400.0)
    e.tick(T0 + 15)  # /search fires too
    assert rec.bodies == {}
    e.tick(T0 + 29)
    assert rec.bodies == {}
    e.tick(T0 + 30)
    (first,) = rec.bodies["hook"]
    assert set(first) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert first["version"] == "4"
    assert first["groupKey"] == '{}:{alertname="CheckoutSlow"}'
    assert first["status"] == "firing" and first["receiver"] == "ops"
    assert first["groupLabels"] == {"alertname": "CheckoutSlow"}
    assert first["commonLabels"] == {
        "alertname": "CheckoutSlow",
        "severity": "page",
        "team": "payments",
    }
    assert first["commonAnnotations"] == {"summary": "checkout is slow"}  # values differ
    assert first["externalURL"] == "http://perfpulse.test:8600"
    alerts = {a["labels"]["route"]: a for a in first["alerts"]}
    assert set(alerts) == {"/pay", "/search"}
    pay = alerts["/pay"]
    assert set(pay) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert pay["status"] == "firing" and pay["endsAt"] == "0001-01-01T00:00:00Z"
    assert pay["startsAt"] == "2026-09-21T14:13:20.000Z"  # T0
    assert alerts["/search"]["startsAt"] == "2026-09-21T14:13:35.000Z"  # T0 + 15
    assert pay["annotations"] == {"summary": "checkout is slow", "value": "400"}
    assert pay["generatorURL"] == "http://perfpulse.test:8600/api/v1/alerts/rules/CheckoutSlow"
    assert re.fullmatch(r"[0-9a-f]{16}", pay["fingerprint"])

    # /search recovers: told at the next group interval (2 min after the first message)
    put(e, "/pay", T0 + 45, 400.0)
    put(e, "/search", T0 + 45, 100.0)
    e.tick(T0 + 45)
    e.tick(T0 + 149)
    assert len(rec.bodies["hook"]) == 1
    e.tick(T0 + 150)
    second = rec.bodies["hook"][1]
    states = {a["labels"]["route"]: (a["status"], a["endsAt"]) for a in second["alerts"]}
    assert states == {
        "/pay": ("firing", "0001-01-01T00:00:00Z"),
        "/search": ("resolved", "2026-09-21T14:14:05.000Z"),
    }
    assert second["status"] == "firing"  # the group still has a firing alert

    # nothing changes: silence until the repeat interval (1 h after the last message)
    for t in range(165, 3750, 300):
        put(e, "/pay", T0 + t, 400.0)
        e.tick(T0 + t)
    assert len(rec.bodies["hook"]) == 2
    put(e, "/pay", T0 + 3750, 400.0)
    e.tick(T0 + 3750)
    assert len(rec.bodies["hook"]) == 3
    assert [a["labels"]["route"] for a in rec.bodies["hook"][2]["alerts"]] == ["/pay"]


def test_failed_deliveries_retry_with_backoff_and_are_recorded(
    tmp_path: Path, receiver: tuple[Any, str]
) -> None:
    rec, url = receiver
    rec.statuses = [500, 503]
    e = make_engine(
        tmp_path,
        f'  - name: ops\n    webhook_configs: [{{url: "{url}/hook"}}]',
        "{receiver: ops, group_wait: 0s}",
        "delivery: {retries: 3, backoff: 2s}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)  # try 1: 500
    (d,) = e.store.deliveries()
    assert (d["attempts"], d["outcome"], d["next_at"]) == (1, "pending", T0 + 2)
    assert d["last_error"].startswith("HTTP 500")
    e.tick(T0 + 1.9)  # not due yet
    assert e.store.deliveries()[0]["attempts"] == 1
    e.tick(T0 + 2)  # try 2: 503, next in 4 s
    assert e.store.deliveries()[0]["next_at"] == T0 + 6
    e.tick(T0 + 6)  # try 3: 200
    (d,) = e.store.deliveries()
    assert (d["attempts"], d["outcome"], d["sent_at"]) == (3, "sent", T0 + 6)
    assert len(rec.bodies["hook"]) == 1
    timeline = [
        ev["text"] for ev in e.incidents.show(1)["timeline"] if ev["kind"] == "notification"
    ]
    assert timeline == [
        'firing notification to ops (webhook) failed (try 1), will retry: HTTP 500: {"ok":false}',
        'firing notification to ops (webhook) failed (try 2), will retry: HTTP 503: {"ok":false}',
        "firing notification to ops (webhook) sent",
    ]


def test_client_errors_fail_at_once_and_unreachable_gives_up(
    tmp_path: Path, receiver: tuple[Any, str]
) -> None:
    rec, url = receiver
    rec.statuses = [400]
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    e = make_engine(
        tmp_path,
        f'  - name: ops\n    webhook_configs: [{{url: "{url}/hook"}}, {{url: "{dead}"}}]',
        "{receiver: ops, group_wait: 0s}",
        "delivery: {retries: 1, backoff: 1s}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)
    e.tick(T0 + 1)
    by_index = {d["integration"]: d for d in e.store.deliveries()}
    assert by_index[0]["outcome"] == "failed" and by_index[0]["attempts"] == 1  # 400: no retry
    assert by_index[1]["outcome"] == "failed" and by_index[1]["attempts"] == 2  # 1 retry
    assert "ConnectError" in by_index[1]["last_error"]
    assert rec.bodies == {}


def test_slack_message(tmp_path: Path, receiver: tuple[Any, str]) -> None:
    rec, url = receiver
    e = make_engine(
        tmp_path,
        f'  - name: chat\n    slack_configs: [{{api_url: "{url}/slack", channel: "#ops", '
        "send_resolved: true}]",
        "{receiver: chat, group_wait: 0s, group_interval: 1m}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)
    put(e, "/pay", T0 + 15, 100.0)
    e.tick(T0 + 15)
    e.tick(T0 + 60)
    firing, resolved = rec.bodies["slack"]
    assert firing["channel"] == "#ops"
    assert firing["text"] == "[FIRING:1] alertname=CheckoutSlow"
    (att,) = firing["attachments"]
    assert att["color"] == "danger" and att["title"] == "CheckoutSlow"
    assert "route=/pay" in att["text"] and "checkout is slow" in att["text"]
    assert resolved["text"] == "[RESOLVED] alertname=CheckoutSlow"
    assert resolved["attachments"][0]["color"] == "good"


def test_email_over_smtp(tmp_path: Path, smtp: tuple[Any, int]) -> None:
    box, port = smtp
    e = make_engine(
        tmp_path,
        "  - name: mail\n    email_configs: [{to: [oncall@example.com], from: pp@example.com, "
        f'smarthost: "127.0.0.1:{port}", require_tls: false}}]',
        "{receiver: mail, group_wait: 0s}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)
    (d,) = e.store.deliveries()
    assert d["outcome"] == "sent", d["last_error"]
    ((to, msg),) = box.messages
    assert to == ["oncall@example.com"]
    assert msg["Subject"] == "[FIRING:1] alertname=CheckoutSlow"
    assert msg["From"] == "pp@example.com"
    text = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "[FIRING] CheckoutSlow (team=payments, route=/pay): checkout is slow" in text
    assert "started: 2026-09-21T14:13:20.000Z" in text


def test_email_requiring_tls_refuses_a_plain_server(tmp_path: Path, smtp: tuple[Any, int]) -> None:
    box, port = smtp
    e = make_engine(
        tmp_path,
        "  - name: mail\n    email_configs: [{to: oncall@example.com, "
        f'smarthost: "127.0.0.1:{port}"}}]',
        "{receiver: mail, group_wait: 0s}",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)
    (d,) = e.store.deliveries()
    assert d["outcome"] == "failed" and "STARTTLS" in d["last_error"]
    assert box.messages == []


def test_silences_keep_matching_alerts_quiet_until_they_expire(
    tmp_path: Path, receiver: tuple[Any, str]
) -> None:
    rec, url = receiver
    e = make_engine(
        tmp_path,
        f'  - name: ops\n    webhook_configs: [{{url: "{url}/hook"}}]',
        "{receiver: ops, group_by: [route], group_wait: 0s, group_interval: 1m}",
    )
    sid = e.silences.add(['route="/pay"'], ends_at=T0 + 3600, now=T0, comment="deploy")
    put(e, "/pay", T0, 400.0)
    put(e, "/search", T0, 400.0)
    e.tick(T0)
    assert [b["groupLabels"] for b in rec.bodies["hook"]] == [{"route": "/search"}]
    assert e.incidents.list()  # silenced alerts still open incidents
    assert e.silences.list(T0)[0]["state"] == "active"
    assert e.silences.expire(sid, T0 + 100)
    for t in (115, 160):
        put(e, "/pay", T0 + t, 400.0)
        put(e, "/search", T0 + t, 400.0)
        e.tick(T0 + t)
    assert [b["groupLabels"] for b in rec.bodies["hook"]] == [
        {"route": "/search"},
        {"route": "/pay"},
    ]
    assert e.silences.list(T0 + 200)[0]["state"] == "expired"


def test_child_routes_with_continue(tmp_path: Path, receiver: tuple[Any, str]) -> None:
    rec, url = receiver
    e = make_engine(
        tmp_path,
        f'  - name: ops\n    webhook_configs: [{{url: "{url}/ops"}}]\n'
        f'  - name: pager\n    webhook_configs: [{{url: "{url}/pager"}}]\n'
        f'  - name: audit\n    webhook_configs: [{{url: "{url}/audit"}}]',
        "{receiver: ops, group_wait: 0s, routes: ["
        """{matchers: ['severity="page"'], receiver: pager, continue: true}, """
        """{matchers: ['team=~"pay.*"'], receiver: audit}, """
        """{matchers: ['team="x"'], receiver: ops}]}""",
    )
    put(e, "/pay", T0, 400.0)
    e.tick(T0)
    assert set(rec.bodies) == {"pager", "audit"}
    assert rec.bodies["pager"][0]["groupKey"] == '{}/{severity="page"}:{alertname="CheckoutSlow"}'
