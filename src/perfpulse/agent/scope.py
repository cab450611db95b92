"""What instrumentation shares: the current request's scope and the event sink.

Every integration (HTTP middleware, database, cache) talks to the agent only
through this module:

- :func:`record` hands one wire-format event (a dict with ``kind``) to the
  agent's transport. Before ``perfpulse.agent.init`` (or with no endpoint) it is a
  no-op that costs one global lookup. It never raises.
- :func:`current_request` is the :class:`RequestScope` of the request being
  served (a ``contextvars`` variable, so it follows asyncio tasks and threads
  started with ``contextvars.copy_context``), or ``None`` outside a request.
  Database and cache instrumentation add their time and counts to it; the HTTP
  middleware reads them into the ``http`` event and reports N+1 findings.

Example::

    scope = current_request()
    if scope is not None:
        scope.add_query(fingerprint, duration_ms)
    record({"kind": "db", "ts": time.time(), "fingerprint": fingerprint, "duration_ms": duration_ms})
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Sink = Callable[[dict[str, Any]], None]


def _noop(event: dict[str, Any]) -> None:
    return None


_sink: Sink = _noop
sink_failures = 0  # events the sink raised on (counted, never propagated)


_log = logging.getLogger("perfpulse.agent")
internal_failures = 0  # failures inside instrumentation (counted, logged once per place)
_logged_failures: set[str] = set()


def internal_failure(where: str) -> None:
    """Count a failure inside the agent and log it (with its traceback) once per ``where``.

    Call it from an ``except Exception`` block in instrumentation code instead of
    letting the exception reach the application::

        try:
            ...
        except Exception:
            internal_failure("asgi.finish")
    """
    global internal_failures
    internal_failures += 1
    if where not in _logged_failures:
        _logged_failures.add(where)
        _log.warning("perfpulse agent: internal failure in %s (logged once)", where, exc_info=True)


def set_sink(sink: Sink | None) -> None:
    """Install the agent's transport (``None`` turns recording off again)."""
    global _sink
    _sink = sink or _noop


def enabled() -> bool:
    return _sink is not _noop


def record(event: dict[str, Any]) -> None:
    """Hand ``event`` to the transport; never raises into the application."""
    global sink_failures
    try:
        _sink(event)
    except Exception:  # the agent must never break the host application
        sink_failures += 1


@dataclass(slots=True)
class RequestScope:
    """Per-request tallies that database and cache instrumentation fill in."""

    route: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    db_time_ms: float = 0.0
    db_count: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    queries: dict[str, list[float]] = field(default_factory=dict)
    #: The unhandled exception of the request, when a framework hook saw one.
    error: BaseException | None = None
    #: How to read the route from the framework when ``route`` is not set yet
    #: (ASGI: Starlette routes inside the application, after the middleware ran).
    resolve_route: Callable[[], str | None] | None = None

    def route_template(self) -> str | None:
        """The request's route template, or ``None`` before the framework routed it.

        Instrumentation that tags its events with the route should call this
        rather than read ``route``: with Starlette/FastAPI the template is only
        known once the router has matched, which the middleware cannot see.
        """
        if self.route is None and self.resolve_route is not None:
            self.route = self.resolve_route()
        return self.route

    def add_query(self, fingerprint: str, duration_ms: float) -> None:
        self.db_time_ms += duration_ms
        self.db_count += 1
        self.queries.setdefault(fingerprint, []).append(duration_ms)

    def add_cache(self, hit: bool) -> None:
        if hit:
            self.cache_hits += 1
        else:
            self.cache_misses += 1


_current: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "perfpulse_request", default=None
)


def current_request() -> RequestScope | None:
    return _current.get()


def enter_request(scope: RequestScope) -> contextvars.Token[RequestScope | None]:
    return _current.set(scope)


def exit_request(token: contextvars.Token[RequestScope | None]) -> None:
    _current.reset(token)
