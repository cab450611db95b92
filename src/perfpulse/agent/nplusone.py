"""N+1 findings: one query shape executed again and again within one request.

The database instrumentation adds every statement to the request's
:class:`~perfpulse.agent.scope.RequestScope` (``scope.queries``: fingerprint →
durations). At the end of the request the HTTP middleware calls
:func:`n_plus_one_events`, which reports each fingerprint executed at least
``threshold`` times as one ``n_plus_one`` event: the classic loop that loads a
list and then one row per item.

Example::

    scope.add_query("SELECT * FROM items WHERE order_id = ?", 1.2)  # x 6
    n_plus_one_events(scope, "/orders/{id}", threshold=5, ts=time.time())
    # [{"kind": "n_plus_one", "route": "/orders/{id}", "count": 6, "total_ms": 7.2, ...}]
"""

from __future__ import annotations

from typing import Any

from perfpulse.agent.scope import RequestScope

__all__ = ["DEFAULT_THRESHOLD", "n_plus_one_events"]

#: Executions of one fingerprint in one request that make a finding.
DEFAULT_THRESHOLD = 5
_MAX_FINGERPRINT = 16_000  # the wire format's limit


def n_plus_one_events(
    scope: RequestScope, route: str, threshold: int, ts: float
) -> list[dict[str, Any]]:
    """One ``n_plus_one`` event per fingerprint run ``threshold`` times or more, most first."""
    if scope.db_count < threshold or scope.queries is None:  # cheap exit for the usual request
        return []
    found = [
        (fingerprint, durations)
        for fingerprint, durations in scope.queries.items()
        if len(durations) >= threshold
    ]
    found.sort(key=lambda item: len(item[1]), reverse=True)
    return [
        {
            "kind": "n_plus_one",
            "ts": ts,
            "route": route,
            "fingerprint": fingerprint[:_MAX_FINGERPRINT],
            "count": len(durations),
            "total_ms": sum(durations),
            "request_id": scope.request_id,
        }
        for fingerprint, durations in found
    ]
