"""Durable alerting state in one small SQLite file (``<data dir>/alerts.sqlite``).

Incidents and their timelines, silences, notification deliveries, and the
evaluator's and dispatcher's snapshots live here, so a restart of the collector
neither forgets an incident nor sends a notification twice. It is the alerting
package's own storage — the metrics live in the storage backend, which one
process owns — and the only module of the package that writes SQL. WAL mode;
every method is one short transaction behind a lock, so the evaluator thread
and API requests can share it. ``AlertStore(None)`` keeps everything in memory.

Example::

    store = AlertStore(Path("data/alerts.sqlite"))
    iid = store.open_incident("{}:{alertname=\\"Slow\\"}", "Slow", "page", {}, now)
    store.add_event(iid, now, "note", "looking into it", {"by": "ana"})
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS incidents (
        id INTEGER PRIMARY KEY, group_key TEXT NOT NULL, title TEXT NOT NULL,
        severity TEXT NOT NULL, status TEXT NOT NULL, labels TEXT NOT NULL,
        opened_at REAL NOT NULL, acked_at REAL, acked_by TEXT,
        resolved_at REAL, resolved_by TEXT)""",
    "CREATE INDEX IF NOT EXISTS incidents_group ON incidents (group_key, status)",
    """CREATE TABLE IF NOT EXISTS incident_alerts (
        incident_id INTEGER NOT NULL, fingerprint TEXT NOT NULL, labels TEXT NOT NULL,
        state TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (incident_id, fingerprint))""",
    """CREATE TABLE IF NOT EXISTS timeline (
        id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL, ts REAL NOT NULL,
        kind TEXT NOT NULL, text TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS timeline_incident ON timeline (incident_id, id)",
    """CREATE TABLE IF NOT EXISTS silences (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL,
        ends_at REAL NOT NULL, created_by TEXT NOT NULL, comment TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY, group_key TEXT NOT NULL, receiver TEXT NOT NULL,
        integration INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        body TEXT NOT NULL, alerts INTEGER NOT NULL, incident_id INTEGER,
        created_at REAL NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL,
        outcome TEXT NOT NULL, last_error TEXT, sent_at REAL)""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (outcome, next_at)",
    "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
INCIDENT_FIELDS = (
    "status",
    "severity",
    "title",
    "acked_at",
    "acked_by",
    "resolved_at",
    "resolved_by",
)
DELIVERY_FIELDS = ("attempts", "next_at", "outcome", "last_error", "sent_at")


def _row(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    out = {d[0]: v for d, v in zip(cur.description, row, strict=True)}
    for key in ("labels", "matchers", "data", "body"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


class AlertStore:
    """Incidents, timeline, silences, deliveries and snapshots in SQLite."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._con.row_factory = _row
        if path is not None:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA:
            self._con.execute(statement)

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._con.execute(sql, params).fetchall())

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            cur = self._con.execute(sql, params)
            return int(cur.lastrowid or 0) if sql.lstrip().startswith("INSERT") else cur.rowcount

    # --- incidents -----------------------------------------------------------------

    def open_incident(
        self, group_key: str, title: str, severity: str, labels: dict[str, str], now: float
    ) -> int:
        return self._write(
            "INSERT INTO incidents (group_key, title, severity, status, labels, opened_at) "
            "VALUES (?, ?, ?, 'open', ?, ?)",
            (group_key, title, severity, json.dumps(labels), now),
        )

    def open_incident_for(self, group_key: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM incidents WHERE group_key = ? AND status != 'resolved' "
            "ORDER BY id DESC LIMIT 1",
            (group_key,),
        )

    def last_incident_for(self, group_key: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM incidents WHERE group_key = ? ORDER BY id DESC LIMIT 1", (group_key,)
        )

    def incident(self, incident_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM incidents WHERE id = ?", (incident_id,))

    def incidents(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if status == "active":
            return self._all(
                "SELECT * FROM incidents WHERE status != 'resolved' ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        if status:
            return self._all(
                "SELECT * FROM incidents WHERE status = ? ORDER BY id DESC LIMIT ?",
                (status, limit),
            )
        return self._all("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,))

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        names = [n for n in fields if n in INCIDENT_FIELDS]
        assigns = ", ".join(f"{n} = ?" for n in names)
        self._write(
            f"UPDATE incidents SET {assigns} WHERE id = ?",
            (*(fields[n] for n in names), incident_id),
        )

    def put_incident_alert(
        self, incident_id: int, fingerprint: str, labels: dict[str, str], state: str, now: float
    ) -> None:
        self._write(
            "INSERT INTO incident_alerts (incident_id, fingerprint, labels, state, since) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (incident_id, fingerprint) "
            "DO UPDATE SET state = excluded.state, since = excluded.since",
            (incident_id, fingerprint, json.dumps(labels), state, now),
        )

    def incident_alerts(self, incident_id: int) -> list[dict[str, Any]]:
        return self._all(
            "SELECT fingerprint, labels, state, since FROM incident_alerts "
            "WHERE incident_id = ? ORDER BY fingerprint",
            (incident_id,),
        )

    def incidents_with_alert(self, fingerprint: str) -> list[int]:
        rows = self._all(
            "SELECT a.incident_id AS id FROM incident_alerts a JOIN incidents i "
            "ON i.id = a.incident_id WHERE a.fingerprint = ? AND i.status != 'resolved'",
            (fingerprint,),
        )
        return [int(r["id"]) for r in rows]

    def add_event(
        self, incident_id: int, ts: float, kind: str, text: str, data: dict[str, Any]
    ) -> None:
        self._write(
            "INSERT INTO timeline (incident_id, ts, kind, text, data) VALUES (?, ?, ?, ?, ?)",
            (incident_id, ts, kind, text, json.dumps(data)),
        )

    def timeline(self, incident_id: int) -> list[dict[str, Any]]:
        return self._all(
            "SELECT ts, kind, text, data FROM timeline WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )

    # --- silences ------------------------------------------------------------------

    def add_silence(self, silence: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                silence["id"],
                json.dumps(silence["matchers"]),
                silence["starts_at"],
                silence["ends_at"],
                silence["created_by"],
                silence["comment"],
                silence["created_at"],
            ),
        )

    def silences(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM silences ORDER BY created_at DESC")

    def expire_silence(self, silence_id: str, now: float) -> bool:
        return (
            self._write(
                "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
                (now, silence_id, now),
            )
            > 0
        )

    # --- deliveries ----------------------------------------------------------------

    def add_delivery(self, d: dict[str, Any]) -> int:
        return self._write(
            "INSERT INTO deliveries (group_key, receiver, integration, kind, status, body, "
            "alerts, incident_id, created_at, attempts, next_at, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'pending')",
            (
                d["group_key"],
                d["receiver"],
                d["integration"],
                d["kind"],
                d["status"],
                json.dumps(d["body"]),
                d["alerts"],
                d.get("incident_id"),
                d["created_at"],
                d["created_at"],
            ),
        )

    def due_deliveries(self, now: float) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM deliveries WHERE outcome = 'pending' AND next_at <= ? ORDER BY id",
            (now,),
        )

    def update_delivery(self, delivery_id: int, **fields: Any) -> None:
        names = [n for n in fields if n in DELIVERY_FIELDS]
        assigns = ", ".join(f"{n} = ?" for n in names)
        self._write(
            f"UPDATE deliveries SET {assigns} WHERE id = ?",
            (*(fields[n] for n in names), delivery_id),
        )

    def deliveries(self, limit: int = 100, incident_id: int | None = None) -> list[dict[str, Any]]:
        if incident_id is not None:
            return self._all(
                "SELECT * FROM deliveries WHERE incident_id = ? ORDER BY id DESC LIMIT ?",
                (incident_id, limit),
            )
        return self._all("SELECT * FROM deliveries ORDER BY id DESC LIMIT ?", (limit,))

    # --- snapshots -----------------------------------------------------------------

    def get_state(self, name: str) -> Any:
        row = self._one("SELECT value FROM state WHERE name = ?", (name,))
        return None if row is None else json.loads(row["value"])

    def put_state(self, name: str, value: Any) -> None:
        self._write(
            "INSERT INTO state (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    def close(self) -> None:
        with self._lock:
            self._con.close()


__all__ = ["AlertStore"]
