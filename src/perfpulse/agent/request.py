"""One served request, from its start to its events: what every HTTP integration shares.

The ASGI, WSGI (Flask) and Django middlewares differ only in how they read the
request and the response; this module does the rest the same way for all three:

- :func:`begin` decides sampling and opens the request's
  :class:`~perfpulse.agent.scope.RequestScope` with its ids: the ``trace_id`` of
  a valid W3C ``traceparent`` header (else a new one) and a new 16-hex-digit
  ``request_id`` (a span id);
- :func:`finish` records the ``http`` event (with the database and cache tallies
  the scope collected), an ``error`` event for an unhandled exception, and the
  ``n_plus_one`` findings. It never raises.

Routes are templates in one style whatever the framework: Flask's
``/users/<int:id>`` and Django's ``users/<int:id>/`` both become
``/users/{id}`` (:func:`template`). A request no route matched is recorded as
:data:`UNMATCHED`, never under its raw path.

Example (what a middleware does)::

    rs = begin(headers.get("traceparent"))
    if rs is not None:
        token = enter_request(rs)
        started = perf_counter()
        ...  # call the application
        exit_request(token)
        finish(rs, route, "GET", 200, started, request_bytes=None, response_bytes=512)
"""

from __future__ import annotations

import itertools
import re
import time
import traceback
from functools import lru_cache
from random import getrandbits, random

from perfpulse.agent import scope as _scope
from perfpulse.agent.config import Config
from perfpulse.agent.nplusone import n_plus_one_events
from perfpulse.agent.scope import RequestScope

__all__ = ["UNMATCHED", "begin", "error_name", "finish", "template"]

#: The route of a request that no route of the application matched (a 404).
UNMATCHED = "unmatched"

#: The running agent's settings; ``None`` until ``perfpulse.agent.init`` sets them.
active: Config | None = None

_ids = itertools.count(1)
_salt = 0  # random per process: ids are a counter XOR the salt, unique and cheap
_trace_prefix = ""


def reseed() -> None:
    """New random id salts: at ``init`` and in a forked child (or it would repeat the parent's ids)."""
    global _ids, _salt, _trace_prefix
    _ids = itertools.count(1)
    _salt = getrandbits(64)
    _trace_prefix = f"{getrandbits(64):016x}"


reseed()

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_RULE_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def begin(traceparent: str | bytes | None) -> RequestScope | None:
    """A new request scope, or ``None`` when the agent is off or the request is not sampled."""
    config = active
    if config is None or (config.sample_rate < 1.0 and random() >= config.sample_rate):
        return None
    request_id = f"{next(_ids) ^ _salt:016x}"
    if traceparent is not None:
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode("latin-1")
        match = _TRACEPARENT.match(traceparent.strip())
        if match is not None and match[1] != _ZERO_TRACE:
            return RequestScope(request_id=request_id, trace_id=match[1])
    return RequestScope(request_id=request_id, trace_id=_trace_prefix + request_id)


def outgoing_traceparent(rs: RequestScope | None) -> str | None:
    """The W3C ``traceparent`` for a call made while serving ``rs``: its trace id,
    with the request's id as the parent span, so the callee joins the same trace."""
    if rs is None or not rs.trace_id or not rs.request_id:
        return None
    return f"00-{rs.trace_id}-{rs.request_id}-01"


def finish(
    rs: RequestScope,
    route: str | None,
    method: str,
    status: int,
    started: float,
    *,
    request_bytes: int | None,
    response_bytes: int | None,
) -> None:
    """Record the request's events (see the module docstring). Never raises."""
    try:
        now = time.time()
        duration_ms = (time.perf_counter() - started) * 1000.0
        route = (route or UNMATCHED)[:4096]
        event = {
            "kind": "http",
            "ts": now - duration_ms / 1000.0,
            "route": route,
            "method": method[:16],
            "status": status,
            "duration_ms": duration_ms,
            "request_id": rs.request_id,
            "trace_id": rs.trace_id,
        }
        if request_bytes is not None:
            event["request_bytes"] = request_bytes
        if response_bytes is not None:
            event["response_bytes"] = response_bytes
        if rs.db_count:
            event["db_time_ms"] = rs.db_time_ms
            event["db_count"] = rs.db_count
        if rs.cache_hits or rs.cache_misses:
            event["cache_hits"] = rs.cache_hits
            event["cache_misses"] = rs.cache_misses
        error = rs.error
        if error is not None:
            event["exception"] = error_name(error)
        record = _scope.record
        record(event)
        if error is not None:
            record(_error_event(error, route, rs, now))
        config = active
        if config is not None and rs.db_count >= config.n_plus_one_threshold:
            for finding in n_plus_one_events(rs, route, config.n_plus_one_threshold, now):
                record(finding)
    except Exception:
        _scope.internal_failure("request.finish")


def error_name(error: BaseException) -> str:
    """``ValueError`` for a builtin, ``module.Qualified`` otherwise (at most 200 characters)."""
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__[:200]
    return f"{kind.__module__}.{kind.__qualname__}"[-200:]


def _error_event(
    error: BaseException, route: str, rs: RequestScope, ts: float
) -> dict[str, object]:
    stack = "".join(traceback.format_exception(error))
    return {
        "kind": "error",
        "ts": ts,
        "type": error_name(error),
        "message": str(error)[:2000],
        "route": route,
        "stack": stack[-16_000:],
        "handled": False,
        "request_id": rs.request_id,
        "trace_id": rs.trace_id,
    }


@lru_cache(maxsize=4096)
def template(rule: str) -> str:
    """A framework's route rule in ``{name}`` style: ``users/<int:id>/`` → ``/users/{id}/``."""
    converted = _RULE_PARAM.sub(r"{\1}", rule)
    return converted if converted.startswith("/") else "/" + converted
