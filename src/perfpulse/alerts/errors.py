"""The two refusals the alerting API turns into HTTP answers."""

from __future__ import annotations


class NotFound(LookupError):
    """No such rule, incident or silence (404)."""


class Conflict(ValueError):
    """The thing exists already, or its state does not allow the action (409)."""


__all__ = ["Conflict", "NotFound"]
