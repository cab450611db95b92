"""Incidents: what people work on while alerts fire.

A firing alert opens an incident for its notification group (the route's
``group_by`` labels), or joins the one already open for that group. People
acknowledge it, add notes and resolve it; it also resolves by itself once every
alert in it has resolved. Each incident keeps a timeline of every state change
of its alerts, every notification (and whether it got through), and every human
action. Example::

    incidents = Incidents(store)
    iid = incidents.alert_fired(series, group_key, group_labels, now)
    incidents.ack(iid, by="ana", now=now)
    incidents.note(iid, "rolled back 1.4.2", by="ana", now=now)
    incidents.show(iid)["timeline"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perfpulse.alerts.config import SEVERITIES
from perfpulse.alerts.errors import Conflict, NotFound
from perfpulse.alerts.evaluator import Series
from perfpulse.alerts.store import AlertStore


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _describe(s: Series) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in s.labels.items() if k not in ("alertname", "severity"))
    value = "" if s.value is None else f" (value {s.value:.4g})"
    return f"{s.rule}{' {' + extra + '}' if extra else ''}{value}"


class Incidents:
    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def alert_fired(
        self, s: Series, group_key: str, group_labels: Mapping[str, str], now: float
    ) -> int:
        """Open an incident for the group, or join the open one; returns its id."""
        open_ = self.store.open_incident_for(group_key)
        severity = s.labels.get("severity", "warning")
        if open_ is None:
            title = s.annotations.get("summary") or _describe(s)
            iid = self.store.open_incident(group_key, title, severity, dict(group_labels), now)
            self.store.add_event(iid, now, "opened", f"opened by {_describe(s)}", {})
        else:
            iid = int(open_["id"])
            if _rank(severity) > _rank(open_["severity"]):
                self.store.update_incident(iid, severity=severity)
        self.store.put_incident_alert(iid, s.fingerprint, s.labels, "firing", now)
        self.store.add_event(
            iid,
            now,
            "firing",
            f"{_describe(s)} is firing",
            {"fingerprint": s.fingerprint, "labels": s.labels, "value": s.value},
        )
        return iid

    def alert_changed(self, s: Series, old: str, new: str, now: float) -> list[int]:
        """Record a state change of an alert in the open incidents that hold it;
        an incident whose alerts have all resolved resolves too."""
        touched = self.store.incidents_with_alert(s.fingerprint)
        texts = {
            "resolved": f"{_describe(s)} resolved",
            "nodata": f"{s.rule}: no data (still counted as firing)",
            "firing": f"{_describe(s)} has data again and is still firing",
        }
        for iid in touched:
            self.store.put_incident_alert(iid, s.fingerprint, s.labels, new, now)
            self.store.add_event(
                iid,
                now,
                new,
                texts.get(new, f"{s.rule}: {old} → {new}"),
                {"fingerprint": s.fingerprint, "from": old, "value": s.value},
            )
            states = [a["state"] for a in self.store.incident_alerts(iid)]
            if all(st == "resolved" for st in states):
                self.store.update_incident(
                    iid, status="resolved", resolved_at=now, resolved_by="perfpulse"
                )
                self.store.add_event(iid, now, "resolved", "all alerts resolved", {})
        return touched

    def notified(self, delivery: Mapping[str, Any], now: float) -> None:
        iid = delivery.get("incident_id")
        if iid is None:
            return
        outcome = delivery["outcome"]
        what = f"{delivery['status']} notification to {delivery['receiver']} ({delivery['kind']})"
        if outcome == "sent":
            text = f"{what} sent"
        elif outcome == "failed":
            text = f"{what} failed after {delivery['attempts']} tries: {delivery['last_error']}"
        else:
            text = (
                f"{what} failed (try {delivery['attempts']}), will retry: {delivery['last_error']}"
            )
        self.store.add_event(
            int(iid), now, "notification", text, {"delivery": delivery["id"], "outcome": outcome}
        )

    def _get(self, incident_id: int) -> dict[str, Any]:
        found = self.store.incident(incident_id)
        if found is None:
            raise NotFound(f"no incident {incident_id}")
        return found

    def ack(self, incident_id: int, by: str, now: float) -> dict[str, Any]:
        inc = self._get(incident_id)
        if inc["status"] != "open":
            raise Conflict(f"incident {incident_id} is {inc['status']}, not open")
        self.store.update_incident(incident_id, status="acknowledged", acked_at=now, acked_by=by)
        self.store.add_event(incident_id, now, "acknowledged", f"acknowledged by {by}", {"by": by})
        return self.show(incident_id)

    def resolve(self, incident_id: int, by: str, now: float) -> dict[str, Any]:
        inc = self._get(incident_id)
        if inc["status"] == "resolved":
            raise Conflict(f"incident {incident_id} is already resolved")
        self.store.update_incident(incident_id, status="resolved", resolved_at=now, resolved_by=by)
        self.store.add_event(incident_id, now, "resolved", f"resolved by {by}", {"by": by})
        return self.show(incident_id)

    def note(self, incident_id: int, text: str, by: str, now: float) -> dict[str, Any]:
        self._get(incident_id)
        if not text.strip():
            raise ValueError("a note needs text")
        self.store.add_event(incident_id, now, "note", text, {"by": by})
        return self.show(incident_id)

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.incidents(status, limit)

    def show(self, incident_id: int) -> dict[str, Any]:
        inc = self._get(incident_id)
        return {
            **inc,
            "alerts": self.store.incident_alerts(incident_id),
            "timeline": self.store.timeline(incident_id),
        }


__all__ = ["Incidents"]
