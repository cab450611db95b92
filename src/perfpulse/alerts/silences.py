"""Silences: label matchers and a time span during which matching alerts send
no notification (they still fire, open incidents and show in the API).

Example::

    silences = Silences(store)
    sid = silences.add(['service="checkout"'], ends_at=now + 3600, created_by="ana",
                       comment="deploy", now=now)
    silences.silenced({"alertname": "Slow", "service": "checkout"}, now)   # sid
    silences.expire(sid, now)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from perfpulse.alerts.matchers import Matcher, matches_all
from perfpulse.alerts.store import AlertStore


class SilenceError(ValueError):
    """A silence that cannot be created as asked."""


class Silences:
    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def add(
        self,
        matchers: Sequence[str | Mapping[str, Any]],
        *,
        ends_at: float,
        now: float,
        starts_at: float | None = None,
        created_by: str = "",
        comment: str = "",
    ) -> str:
        parsed = []
        for m in matchers:
            try:
                parsed.append(Matcher.parse(m) if isinstance(m, str) else Matcher.from_dict(m))
            except (ValueError, KeyError) as exc:
                raise SilenceError(str(exc)) from None
        if not parsed:
            raise SilenceError("a silence needs at least one matcher")
        if all(m.matches({}) for m in parsed):
            raise SilenceError("these matchers would silence every alert")
        start = now if starts_at is None else starts_at
        if ends_at <= max(start, now):
            raise SilenceError("a silence must end in the future, after it starts")
        sid = uuid.uuid4().hex
        self.store.add_silence(
            {
                "id": sid,
                "matchers": [m.to_dict() for m in parsed],
                "starts_at": start,
                "ends_at": ends_at,
                "created_by": created_by,
                "comment": comment,
                "created_at": now,
            }
        )
        return sid

    def expire(self, silence_id: str, now: float) -> bool:
        return self.store.expire_silence(silence_id, now)

    def list(self, now: float) -> list[dict[str, Any]]:
        out = []
        for s in self.store.silences():
            state = (
                "pending" if s["starts_at"] > now else "active" if s["ends_at"] > now else "expired"
            )
            matchers = [Matcher.from_dict(m) for m in s["matchers"]]
            out.append({**s, "state": state, "matchers_text": [str(m) for m in matchers]})
        return out

    def silenced(self, labels: Mapping[str, str], now: float) -> str | None:
        """The id of an active silence that matches ``labels``, if any."""
        for s in self.store.silences():
            if s["starts_at"] <= now < s["ends_at"]:
                matchers = tuple(Matcher.from_dict(m) for m in s["matchers"])
                if matches_all(matchers, labels):
                    return str(s["id"])
        return None


__all__ = ["SilenceError", "Silences"]
