"""What instrumentation shares: the current request's scope and the event sink.

Every integration (HTTP middleware, database, cache) talks to the agent only
through this module:

- :func:`record` hands one wire-format event (a dict with ``kind``) to the
  agent's transport. Before ``perfpulse.agent.init`` (or with no endpoint) it is a
  no-op that costs one global lookup. It never raises.
- :data:`request_sink` takes a finished request as the transport queues it:
  its ``http`` event as a struct (:class:`perfpulse.agent.request.HttpEvent`),
  or, when more events come of it (an error, N+1 findings), its
  :class:`RequestScope`, which the transport turns into them on the sender's
  thread. Only :func:`perfpulse.agent.request.finish` uses it.
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
from typing import Any

Sink = Callable[[dict[str, Any]], None]
RequestSink = Callable[[object], None]  # an HttpEvent struct, or a RequestScope


def _noop(event: dict[str, Any]) -> None:
    return None


_sink: Sink = _noop
#: Where finished requests go (see the module docstring); ``None``: the sink takes only
#: dict events (then :func:`perfpulse.agent.request.finish` records them itself).
request_sink: RequestSink | None = None
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


def set_sink(sink: Sink | None, requests: RequestSink | None = None) -> None:
    """Install the agent's transport (``None`` turns recording off again).

    ``requests`` takes finished requests as the transport queues them
    (:data:`request_sink`); without it a finished request is turned into dict
    events and given to ``sink``.
    """
    global _sink, request_sink
    _sink = sink or _noop
    request_sink = requests if sink is not None else None


def enabled() -> bool:
    """Whether events go anywhere (the agent runs)."""
    return _sink is not _noop


def measuring() -> bool:
    """Whether instrumentation should time what it wraps: the agent runs, or a
    request is being served (its scope wants the tallies even with the agent off)."""
    return _sink is not _noop or _current.get() is not None


def record(event: dict[str, Any]) -> None:
    """Hand ``event`` to the transport; never raises into the application."""
    global sink_failures
    try:
        _sink(event)
    except Exception:  # the agent must never break the host application
        sink_failures += 1


class RequestScope:
    """One request being served: its ids, the tallies that database and cache
    instrumentation fill in and, once it ended, its outcome.

    When the request ends, :func:`perfpulse.agent.request.finish` queues its
    ``http`` event. A request with an error or N+1 findings instead gets its
    outcome written here (``method``, ``status``, ``started_ns``,
    ``duration_ns``, the byte counts; they are unset before) and the scope
    itself is queued, to be turned into events on the sender's thread.
    """

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "db_count",
        "db_time_ms",
        "duration_ns",
        "error",
        "method",
        "queries",
        "request_bytes",
        "request_id",
        "response_bytes",
        "route",
        "started_ns",
        "status",
        "trace_id",
    )

    # The outcome: set by :func:`perfpulse.agent.request.finish` when the request
    # ended (not before: a request pays for each assignment).
    method: str
    status: int
    started_ns: int  # time.perf_counter_ns() when it started
    duration_ns: int
    request_bytes: int | None
    response_bytes: int | None

    def __init__(
        self,
        route: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.route = route
        self.request_id = request_id
        self.trace_id = trace_id
        self.db_time_ms = 0.0
        self.db_count = 0
        self.cache_hits = 0
        self.cache_misses = 0
        #: fingerprint -> durations (ms) of the statements run; ``None`` until one ran.
        self.queries: dict[str, list[float]] | None = None
        #: The unhandled exception of the request, when a framework hook saw one.
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<RequestScope {self.request_id} {self.route_template()!r}>"

    def route_template(self) -> str | None:
        """The request's route template, or ``None`` before the framework routed it.

        Instrumentation that tags its events with the route should call this
        rather than read ``route``: with Starlette/FastAPI the template is only
        known once the router has matched, which the middleware cannot see (its
        subclass reads it from the ASGI scope on demand).
        """
        return self.route

    def add_query(self, fingerprint: str, duration_ms: float) -> None:
        self.db_time_ms += duration_ms
        self.db_count += 1
        queries = self.queries
        if queries is None:
            queries = self.queries = {}
        queries.setdefault(fingerprint, []).append(duration_ms)

    def add_cache(self, hit: bool) -> None:
        if hit:
            self.cache_hits += 1
        else:
            self.cache_misses += 1


_current: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "perfpulse_request", default=None
)


# The context variable's own methods, not functions around them: every request and
# every statement calls them, and a Python frame each time would cost more than they do.
#: ``current_request()``: the scope of the request being served, or ``None``.
current_request = _current.get
#: ``enter_request(scope)``: make ``scope`` current; returns the token for ``exit_request``.
enter_request = _current.set
#: ``exit_request(token)``: restore what was current before ``enter_request``.
exit_request = _current.reset
