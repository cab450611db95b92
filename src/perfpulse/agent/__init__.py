"""perfpulse.agent: instrument a Python web service.

Call :func:`init` once at start-up, then add the middleware of your framework
(:mod:`perfpulse.agent.asgi` for Starlette/FastAPI, :mod:`perfpulse.agent.wsgi`
for Flask, :mod:`perfpulse.agent.django` for Django)::

    import perfpulse.agent

    perfpulse.agent.init(service="checkout", endpoint="http://perfpulse:8600", key="ppi_...")

Every option can come from a ``PERFPULSE_*`` environment variable instead
(:mod:`perfpulse.agent.config`). Without an endpoint the agent stays off: no
thread, no queue, and the middlewares pass requests straight through.

The agent is configured once: a second :func:`init` logs a warning and changes
nothing. To reconfigure, call :func:`shutdown` first. Nothing here raises into
the application once it runs: failures are counted (:func:`stats`) and logged
once.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from perfpulse.agent import request as _request
from perfpulse.agent import scope as _scope
from perfpulse.agent.config import Config
from perfpulse.agent.transport import Transport

if TYPE_CHECKING:  # imported only when resources are sampled
    from perfpulse.agent.resources import ResourceSampler

__all__ = ["AgentStats", "flush", "init", "shutdown", "stats", "traceparent"]

_log = logging.getLogger("perfpulse.agent")


@dataclass(frozen=True, slots=True)
class AgentStats:
    """How the agent is doing: counters since :func:`init` (or since a fork)."""

    running: bool
    queued: int
    sent_events: int
    sent_batches: int
    dropped_events: int
    rejected_batches: int
    retries: int
    internal_failures: int


@dataclass(slots=True)
class _Agent:
    config: Config | None
    transport: Transport | None = None
    sampler: ResourceSampler | None = None


_agent: _Agent | None = None
_lock = threading.Lock()
_fork_hook_installed = False


def init(
    service: str | None = None,
    endpoint: str | None = None,
    key: str | None = None,
    release: str | None = None,
    environment: str | None = None,
    sample_rate: float | None = None,
    *,
    n_plus_one_threshold: int | None = None,
    resource_interval_s: float | None = None,
    queue_size: int = 10_000,
    batch_size: int = 1000,
    flush_interval_s: float = 1.0,
) -> None:
    """Start the agent (see the module docstring); a bad argument raises ``ValueError``."""
    global _agent, _fork_hook_installed
    config = Config.resolve(
        service=service,
        endpoint=endpoint,
        key=key,
        release=release,
        environment=environment,
        sample_rate=sample_rate,
        n_plus_one_threshold=n_plus_one_threshold,
        resource_interval_s=resource_interval_s,
    )
    with _lock:
        if _agent is not None:
            _log.warning("perfpulse.agent.init called again: ignored (call shutdown() first)")
            return
        if config.endpoint is None:
            _agent = _Agent(config=None)
            _log.info("perfpulse agent: no endpoint (%s), not recording", "PERFPULSE_ENDPOINT")
            return
        resource = {
            "service": config.service,
            "environment": config.environment,
            "release": config.release,
            "host": socket.gethostname()[:200],
        }
        transport = Transport(
            config.endpoint,
            config.key,
            resource,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            expand=partial(_request.events, n_plus_one_threshold=config.n_plus_one_threshold),
        )
        agent = _Agent(config=config, transport=transport)
        if config.resource_interval_s > 0:
            from perfpulse.agent.resources import ResourceSampler

            sampler = agent.sampler = ResourceSampler()
            transport.every(config.resource_interval_s, lambda: _scope.record(sampler.sample()))
        _request.reseed()
        transport.start()
        _scope.set_sink(transport.enqueue, requests=transport.request_sink)
        _request.active = config
        _agent = agent
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            atexit.register(_at_exit)
            _fork_hook_installed = True


def flush(timeout_s: float = 5.0) -> bool:
    """Send everything recorded so far; ``True`` when it all left within ``timeout_s``."""
    agent = _agent
    if agent is None or agent.transport is None:
        return True
    return agent.transport.flush(timeout_s)


def shutdown(timeout_s: float = 5.0) -> bool:
    """Stop recording, flush within ``timeout_s`` and stop the threads; ``init`` may run again."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
        _request.active = None
        _scope.set_sink(None)
    if agent is None or agent.transport is None:
        return True
    return agent.transport.shutdown(timeout_s)


def stats() -> AgentStats:
    """The transport's counters and the instrumentation's internal failures."""
    agent = _agent
    failures = _scope.internal_failures + _scope.sink_failures
    if agent is None or agent.transport is None:
        return AgentStats(False, 0, 0, 0, 0, 0, 0, failures)
    t = agent.transport.stats()
    return AgentStats(
        running=True,
        queued=t.queued,
        sent_events=t.sent_events,
        sent_batches=t.sent_batches,
        dropped_events=t.dropped_events + t.unencodable_events,
        rejected_batches=t.rejected_batches,
        retries=t.retries,
        internal_failures=failures,
    )


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held while it forked
    agent = _agent
    if agent is None or agent.transport is None:
        return
    try:
        _request.reseed()
        if agent.sampler is not None:
            agent.sampler.reset()
        agent.transport.after_fork()
    except Exception:
        _scope.internal_failure("fork")


def _at_exit() -> None:
    try:
        shutdown(timeout_s=2.0)
    except Exception:
        _scope.internal_failure("atexit")


def traceparent() -> str | None:
    """The W3C ``traceparent`` header for an outgoing call made while serving a
    request, or ``None`` outside one (or when the request is not sampled)::

        headers = {}
        if (value := perfpulse.agent.traceparent()) is not None:
            headers["traceparent"] = value
        httpx.get("http://inventory/items", headers=headers)

    The callee (perfpulse-instrumented or any OpenTelemetry service) then records
    the same trace id, with this request's ``request_id`` as the parent span.
    """
    return _request.outgoing_traceparent(_scope.current_request())
