"""Notifiers: how a notification leaves the collector.

A :class:`Notifier` has one method, ``send(body)``, which delivers a body built by
:func:`build_body` or raises :class:`DeliveryError` (``retry`` says whether trying
again may help). Three kinds ship, plus an in-memory one:

- ``webhook``: POSTs Alertmanager's webhook JSON (``version: "4"``), so receivers
  written for Alertmanager work unchanged;
- ``slack``: POSTs a Slack incoming-webhook message (``text`` plus one
  attachment per alert; Mattermost and Rocket.Chat accept it too);
- ``email``: sends a plain-text mail over SMTP (STARTTLS when ``require_tls``);
- :class:`MemoryNotifier` keeps what it was given (tests, dry runs).

Example::

    body = build_body(integration, message)     # message: Alertmanager's payload
    notifier_for(integration, timeout=10).send(body)
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Protocol

from perfpulse.alerts.config import Integration

if TYPE_CHECKING:
    import httpx


class DeliveryError(Exception):
    """A notification that did not get through; ``retry`` if another try may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Notifier(Protocol):
    def send(self, body: Mapping[str, Any]) -> None: ...


def _check(response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    retry = response.status_code >= 500 or response.status_code in (408, 429)
    raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}", retry=retry)


class WebhookNotifier:
    """POST the body as JSON to ``url`` (with optional extra headers)."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0):
        self.url, self.headers, self.timeout = url, dict(headers or {}), timeout

    def send(self, body: Mapping[str, Any]) -> None:
        import httpx  # on the first delivery: most collectors never send a webhook

        try:
            r = httpx.post(self.url, json=dict(body), headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        _check(r)


class EmailNotifier:
    """Send ``{"subject", "text", "to", "from"}`` through an SMTP server."""

    def __init__(
        self,
        smarthost: str,
        *,
        username: str | None = None,
        password: str | None = None,
        require_tls: bool = True,
        timeout: float = 10.0,
    ) -> None:
        host, _, port = smarthost.rpartition(":")
        self.host, self.port = host, int(port)
        self.username, self.password = username, password
        self.require_tls, self.timeout = require_tls, timeout

    def send(self, body: Mapping[str, Any]) -> None:
        msg = EmailMessage()
        msg["Subject"] = str(body["subject"])
        msg["From"] = str(body["from"])
        msg["To"] = ", ".join(body["to"])
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="perfpulse")
        msg.set_content(str(body["text"]))
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.require_tls:
                    if not smtp.has_extn("starttls"):
                        raise DeliveryError("server does not offer STARTTLS", retry=False)
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            transient = exc.smtp_code < 500  # 4xx: try again later; 5xx: refused for good
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", transient) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


class MemoryNotifier:
    """Keeps every body; fails the first ``fail`` sends (to exercise retries)."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def send(self, body: Mapping[str, Any]) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise DeliveryError("refused by MemoryNotifier")
        self.sent.append(dict(body))


def notifier_for(integration: Integration, timeout: float = 10.0) -> Notifier:
    o = integration.options
    if integration.kind == "webhook":
        headers = {str(k): str(v) for k, v in dict(o.get("headers") or {}).items()}
        return WebhookNotifier(str(o["url"]), headers, timeout)
    if integration.kind == "slack":
        return WebhookNotifier(str(o["api_url"]), None, timeout)
    if integration.kind == "email":
        return EmailNotifier(
            str(o["smarthost"]),
            username=o.get("auth_username"),
            password=o.get("auth_password"),
            require_tls=bool(o.get("require_tls", True)),
            timeout=timeout,
        )
    raise ValueError(f"unknown integration {integration.kind!r}")


# --- bodies ------------------------------------------------------------------------


def _alert_line(alert: Mapping[str, Any]) -> str:
    labels = alert["labels"]
    summary = alert["annotations"].get("summary") or alert["annotations"].get("description", "")
    extra = ", ".join(f"{k}={v}" for k, v in labels.items() if k not in ("alertname", "severity"))
    head = f"[{alert['status'].upper()}] {labels.get('alertname', '')}"
    return f"{head} ({extra})" + (f": {summary}" if summary else "")


def title(message: Mapping[str, Any]) -> str:
    firing = sum(1 for a in message["alerts"] if a["status"] == "firing")
    group = ", ".join(f"{k}={v}" for k, v in message["groupLabels"].items())
    status = message["status"].upper() + (f":{firing}" if firing else "")
    return f"[{status}] {group}"


def slack_body(integration: Integration, message: Mapping[str, Any]) -> dict[str, Any]:
    o = integration.options
    body: dict[str, Any] = {
        "text": str(o.get("title") or title(message)),
        "attachments": [
            {
                "color": "danger" if a["status"] == "firing" else "good",
                "title": a["labels"].get("alertname", ""),
                "title_link": a["generatorURL"],
                "text": _alert_line(a),
                "fallback": _alert_line(a),
            }
            for a in message["alerts"]
        ],
    }
    if o.get("text"):
        body["text"] += "\n" + str(o["text"])
    if o.get("channel"):
        body["channel"] = str(o["channel"])
    if o.get("username"):
        body["username"] = str(o["username"])
    return body


def email_body(integration: Integration, message: Mapping[str, Any]) -> dict[str, Any]:
    o = integration.options
    to = o["to"]
    recipients = [str(t) for t in to] if isinstance(to, list) else [str(to)]
    lines = [title(message), ""]
    for a in message["alerts"]:
        lines.append(_alert_line(a))
        lines.append(f"  started: {a['startsAt']}")
        if a["status"] == "resolved":
            lines.append(f"  ended:   {a['endsAt']}")
        lines.append(f"  source:  {a['generatorURL']}")
        lines.append("")
    if message.get("externalURL"):
        lines.append(f"perfpulse: {message['externalURL']}")
    return {
        "subject": str(o.get("subject") or title(message)),
        "from": str(o.get("from") or "perfpulse@localhost"),
        "to": recipients,
        "text": "\n".join(lines),
    }


def webhook_body(integration: Integration, message: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(message)
    body["alerts"] = list(message["alerts"])
    limit = int(integration.options.get("max_alerts") or 0)
    body["truncatedAlerts"] = 0
    if limit and len(body["alerts"]) > limit:
        body["truncatedAlerts"] = len(body["alerts"]) - limit
        body["alerts"] = body["alerts"][:limit]
    return body


def build_body(integration: Integration, message: Mapping[str, Any]) -> dict[str, Any]:
    """What ``integration`` sends for an Alertmanager-shaped ``message``."""
    if integration.kind == "slack":
        return slack_body(integration, message)
    if integration.kind == "email":
        return email_body(integration, message)
    return webhook_body(integration, message)


__all__ = [
    "DeliveryError",
    "EmailNotifier",
    "MemoryNotifier",
    "Notifier",
    "WebhookNotifier",
    "build_body",
    "notifier_for",
]
