"""Routing, grouping and delivery of notifications, the way Alertmanager does it.

Each active alert is routed (the first matching child route, or several with
``continue``) to a receiver and put in a *group*: the alerts of a route that
share the values of the route's ``group_by`` labels. A group's first
notification waits ``group_wait`` (so alerts firing together arrive together);
after that the group is looked at every ``group_interval`` and notified only if
its alerts changed (one fired, one resolved), or every ``repeat_interval`` while
it still fires. Silenced alerts are left out. Each notification becomes one
*delivery* per integration of the receiver, kept in the store and tried until it
gets through, ``retries`` more times with exponential backoff, its outcome
recorded.

Example::

    d = Dispatcher(config, store, silences)
    d.update(alert, now)          # an alert fired or resolved
    d.flush(now)                  # groups whose time has come → deliveries
    d.deliver(now)                # send what is due; returns the outcomes
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perfpulse.alerts.config import AlertConfig, Integration, Route
from perfpulse.alerts.matchers import matches_all
from perfpulse.alerts.notifiers import DeliveryError, Notifier, build_body, notifier_for
from perfpulse.alerts.silences import Silences
from perfpulse.alerts.store import AlertStore

log = logging.getLogger("perfpulse.alerts")
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass(slots=True)
class Alert:
    """An alert as notifications see it (Alertmanager's shape)."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""

    @property
    def status(self) -> str:
        return "firing" if self.ends_at is None else "resolved"

    def message(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": ZERO_TIME if self.ends_at is None else rfc3339(self.ends_at),
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


@dataclass(slots=True)
class Group:
    key: str
    receiver: str
    labels: dict[str, str]
    group_interval_s: float
    repeat_interval_s: float
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    last_sent: float | None = None
    sent_firing: list[str] = field(default_factory=list)


def _label_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def match_routes(
    route: Route, labels: Mapping[str, str], path: str = "{}"
) -> list[tuple[Route, str]]:
    """The routes an alert with ``labels`` goes to, with their Alertmanager path."""
    found: list[tuple[Route, str]] = []
    for child in route.routes:
        if not matches_all(child.matchers, labels):
            continue
        sub = path + "/" + "{" + ",".join(str(m) for m in child.matchers) + "}"
        found += match_routes(child, labels, sub)
        if not child.cont:
            break
    return found or [(route, path)]


class Dispatcher:
    """Groups alerts per route and turns groups into recorded deliveries."""

    def __init__(
        self,
        config: AlertConfig,
        store: AlertStore,
        silences: Silences,
        *,
        notifiers: Callable[[Integration], Notifier] | None = None,
        incident_for: Callable[[str], int | None] = lambda key: None,
    ) -> None:
        self.config = config
        self.store = store
        self.silences = silences
        self.notifiers = notifiers or (
            lambda i: notifier_for(i, timeout=self.config.delivery.timeout_s)
        )
        self.incident_for = incident_for
        self.groups: dict[str, Group] = {}

    def group_keys(self, labels: Mapping[str, str]) -> list[tuple[str, dict[str, str], Route]]:
        out = []
        for route, path in match_routes(self.config.route, labels):
            if route.group_by == ("...",):
                grouped = dict(labels)
            else:
                grouped = {k: labels[k] for k in route.group_by if k in labels}
            out.append((f"{path}:{_label_text(grouped)}", grouped, route))
        return out

    def update(self, alert: Alert, now: float) -> list[str]:
        """Add or update an alert (firing, or resolved with ``ends_at``)."""
        keys = []
        for key, grouped, route in self.group_keys(alert.labels):
            keys.append(key)
            if route.receiver is None:
                continue
            group = self.groups.get(key)
            if group is None:
                if alert.ends_at is not None:
                    continue  # resolved before it was ever grouped: nothing to tell
                group = Group(
                    key,
                    route.receiver,
                    grouped,
                    route.group_interval_s,
                    route.repeat_interval_s,
                    next_flush=now + route.group_wait_s,
                )
                self.groups[key] = group
            group.alerts[alert.fingerprint] = dataclasses.replace(alert)
        return keys

    def flush(self, now: float) -> list[int]:
        """Notify the groups whose time has come; returns the new delivery ids."""
        created: list[int] = []
        for key, group in list(self.groups.items()):
            if now < group.next_flush:
                continue
            group.next_flush = now + group.group_interval_s
            visible = [
                a for a in group.alerts.values() if self.silences.silenced(a.labels, now) is None
            ]
            firing = sorted(a.fingerprint for a in visible if a.status == "firing")
            resolved = [a for a in visible if a.status == "resolved"]
            told_resolved = [a for a in resolved if a.fingerprint in group.sent_firing]
            changed = firing != sorted(group.sent_firing) or bool(told_resolved)
            # a group whose only change is that its alerts got silenced says nothing
            if not firing and not told_resolved:
                changed = False
            repeat = bool(firing) and (
                group.last_sent is None or now - group.last_sent >= group.repeat_interval_s
            )
            if changed or repeat:
                alerts = [a for a in visible if a.status == "firing"] + told_resolved
                created += self._deliveries(group, alerts, now)
                group.last_sent = now
                group.sent_firing = firing
            for a in [a for a in group.alerts.values() if a.status == "resolved"]:
                del group.alerts[a.fingerprint]
            if not group.alerts:
                del self.groups[key]
        return created

    def message(self, group: Group, alerts: list[Alert]) -> dict[str, Any]:
        status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
        return {
            "version": "4",
            "groupKey": group.key,
            "truncatedAlerts": 0,
            "status": status,
            "receiver": group.receiver,
            "groupLabels": dict(group.labels),
            "commonLabels": _common([a.labels for a in alerts]),
            "commonAnnotations": _common([a.annotations for a in alerts]),
            "externalURL": self.config.external_url,
            "alerts": [a.message() for a in sorted(alerts, key=lambda a: a.fingerprint)],
        }

    def _deliveries(self, group: Group, alerts: list[Alert], now: float) -> list[int]:
        receiver = self.config.receiver(group.receiver)
        if receiver is None:
            return []
        incident = self.incident_for(group.key)
        ids = []
        for index, integration in enumerate(receiver.integrations):
            chosen = (
                alerts if integration.send_resolved else [a for a in alerts if a.ends_at is None]
            )
            if not chosen:
                continue
            msg = self.message(group, chosen)
            ids.append(
                self.store.add_delivery(
                    {
                        "group_key": group.key,
                        "receiver": receiver.name,
                        "integration": index,
                        "kind": integration.kind,
                        "status": msg["status"],
                        "body": build_body(integration, msg),
                        "alerts": len(chosen),
                        "incident_id": incident,
                        "created_at": now,
                    }
                )
            )
        return ids

    def deliver(self, now: float) -> list[dict[str, Any]]:
        """Try every due delivery once; returns them with their new outcome."""
        done = []
        d = self.config.delivery
        for row in self.store.due_deliveries(now):
            receiver = self.config.receiver(row["receiver"])
            attempts = int(row["attempts"]) + 1
            try:
                if receiver is None or row["integration"] >= len(receiver.integrations):
                    raise DeliveryError("receiver is no longer configured", retry=False)
                integration = receiver.integrations[row["integration"]]
                self.notifiers(integration).send(row["body"])
            except DeliveryError as exc:
                final = not exc.retry or attempts > d.retries
                wait = min(d.backoff_s * 2 ** (attempts - 1), d.max_backoff_s)
                fields = {
                    "attempts": attempts,
                    "outcome": "failed" if final else "pending",
                    "last_error": str(exc),
                    "next_at": now + wait,
                }
                log.warning("delivery %s to %s failed: %s", row["id"], row["receiver"], exc)
            else:
                fields = {"attempts": attempts, "outcome": "sent", "sent_at": now}
            self.store.update_delivery(row["id"], **fields)
            done.append({**row, **fields})
        return done

    # --- persistence -----------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(g) for g in self.groups.values()]

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            alerts = {fp: Alert(**a) for fp, a in row["alerts"].items()}
            self.groups[row["key"]] = Group(**{**row, "alerts": alerts})


__all__ = ["Alert", "Dispatcher", "Group", "match_routes", "rfc3339"]
