"""One served request, from its start to its events: what every HTTP integration shares.

The ASGI, WSGI (Flask) and Django middlewares differ only in how they read the
request and the response; this module does the rest the same way for all three:

- :func:`begin` decides sampling and opens the request's
  :class:`~perfpulse.agent.scope.RequestScope` with its ids: the ``trace_id`` of
  a valid W3C ``traceparent`` header (else a new one) and a new 16-hex-digit
  ``request_id`` (a span id);
- :func:`finish` hands the finished request to the agent's transport (a
  ``deque`` append). The usual request, with no error and no N+1 finding, is
  queued as its ``http`` event, an :class:`HttpEvent` struct (a third of a
  dict's cost, and nothing left to do on the sender's thread but encode it).
  A request with more to report keeps its outcome in its scope and the scope
  is queued instead. It never raises (a failure, its sink's included, is
  counted as an internal failure);
- :func:`events` turns queued scopes into their ``http`` event (with the
  database and cache tallies the scope collected), an ``error`` event for an
  unhandled exception, and the ``n_plus_one`` findings. The transport calls it
  on its own thread, so a request pays for no dict, no formatting and no
  traceback; with a sink that takes only events (tests), :func:`finish` calls it.

Routes are templates in one style whatever the framework: Flask's
``/users/<int:id>`` and Django's ``users/<int:id>/`` both become
``/users/{id}`` (:func:`template`). A request no route matched is recorded as
:data:`UNMATCHED`, never under its raw path.

Example (what a middleware does)::

    rs = begin(headers.get("traceparent"))
    if rs is not None:
        token = enter_request(rs)
        started = perf_counter_ns()
        ...  # call the application
        exit_request(token)
        finish(rs, route, "GET", 200, started, request_bytes=None, response_bytes=512)
"""

from __future__ import annotations

import itertools
import re
import traceback
from functools import lru_cache
from random import getrandbits, random
from time import perf_counter_ns, time_ns
from typing import Any, TypeVar, overload

import msgspec

from perfpulse.agent import scope as _scope
from perfpulse.agent.config import Config
from perfpulse.agent.nplusone import DEFAULT_THRESHOLD, n_plus_one_events
from perfpulse.agent.scope import RequestScope

__all__ = ["UNMATCHED", "HttpEvent", "begin", "error_name", "events", "finish", "template"]

#: The route of a request that no route of the application matched (a 404).
UNMATCHED = "unmatched"

#: The running agent's settings; ``None`` until ``perfpulse.agent.init`` sets them.
active: Config | None = None

_S = TypeVar("_S", bound=RequestScope)
# Request ids: 16 hex digits, unique in the process and cheap to make. The n-th id
# is 14 digits for ``(n >> 8) XOR salt`` then 2 for ``n & 0xFF``, a bijection of
# the counter; the 14 digits are formatted once per 256 ids (``%016x`` per request
# cost 0.36 µs, this 0.1). ``itertools.count`` hands each thread its own ``n``.
_ids = itertools.count(1)
_salt = 0  # random per process, 56 bits
_block: tuple[int, str] = (-1, "")  # (n >> 8, its 14 digits): one global, read atomically
_LOW = tuple(f"{i:02x}" for i in range(256))
_trace_prefix = ""


def make_ids(n: int) -> tuple[str, str]:
    """The request id and trace id of the ``n``-th request (as :func:`begin` makes
    them without a ``traceparent``); the compiled middleware leaves them to be made
    from ``n`` when first read (see ``perfpulse.agent.asgi._LazyExchange``)."""
    request_id = f"{(n >> 8) ^ _salt:014x}{n & 0xFF:02x}"
    return request_id, _trace_prefix + request_id


def reseed() -> None:
    """New random id salts: at ``init`` and in a forked child (or it would repeat the
    parent's ids). The counter goes on: a request still being served keeps a number
    no later request gets (the compiled middleware makes its ids when read)."""
    global _salt, _block, _trace_prefix
    _salt = getrandbits(56)
    _block = (-1, "")
    _trace_prefix = f"{getrandbits(64):016x}"


reseed()

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_RULE_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


@overload
def begin(traceparent: str | bytes | None) -> RequestScope | None: ...


@overload
def begin(traceparent: str | bytes | None, scope_type: type[_S]) -> _S | None: ...


def begin(
    traceparent: str | bytes | None, scope_type: type[RequestScope] = RequestScope
) -> RequestScope | None:
    """A new request scope (of ``scope_type``, a :class:`RequestScope` or a
    subclass), or ``None`` when the agent is off or the request is not sampled."""
    global _block
    config = active
    if config is None or (config.sample_rate < 1.0 and random() >= config.sample_rate):
        return None
    n = next(_ids)  # new_request_id(), inline: every request comes here
    block = _block
    if block[0] != n >> 8:
        block = _block = (n >> 8, "%014x" % ((n >> 8) ^ _salt))
    request_id = block[1] + _LOW[n & 0xFF]
    if traceparent is not None:
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode("latin-1")
        match = _TRACEPARENT.match(traceparent.strip())
        if match is not None and match[1] != _ZERO_TRACE:
            return scope_type(None, request_id, match[1])
    return scope_type(None, request_id, _trace_prefix + request_id)


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
    started_ns: int,
    *,
    request_bytes: int | None,
    response_bytes: int | None,
) -> None:
    """End the request that started at ``started_ns`` (``time.perf_counter_ns()``)
    and record it (see the module docstring). Never raises."""
    try:
        duration_ns = perf_counter_ns() - started_ns
        sink = _scope.request_sink
        config = active
        threshold = DEFAULT_THRESHOLD if config is None else config.n_plus_one_threshold
        if sink is not None and rs.error is None and rs.db_count < threshold:
            # the usual request: its one event, a struct to append (no dict, no encoding)
            ts = (time_ns() - duration_ns) / 1e9
            sink(
                _http_event(
                    rs, route, method, status, ts, duration_ns, request_bytes, response_bytes
                )
            )
            return
        rs.route = route
        rs.method = method
        rs.status = status
        rs.started_ns = started_ns
        rs.duration_ns = duration_ns
        rs.request_bytes = request_bytes
        rs.response_bytes = response_bytes
        if sink is not None:
            sink(rs)  # an error or N+1 findings: the events are made on the sender's thread
            return
        for made in events([rs], threshold):
            _scope.record(made if type(made) is dict else msgspec.to_builtins(made))
    except Exception:
        _scope.internal_failure("request.finish")


class HttpEvent(msgspec.Struct, tag_field="kind", tag="http", omit_defaults=True, gc=False):
    """The ``http`` event of the wire format, as the transport encodes it: a struct
    costs a third of a dict to build and encodes faster; ``None`` is left out."""

    ts: float
    route: str
    method: str
    status: int
    duration_ms: float
    request_id: str | None
    trace_id: str | None
    request_bytes: int | None = None
    response_bytes: int | None = None
    db_time_ms: float | None = None
    db_count: int | None = None
    cache_hits: int | None = None
    cache_misses: int | None = None
    exception: str | None = None


def _http_event(
    rs: RequestScope,
    route: str | None,
    method: str,
    status: int,
    ts: float,
    duration_ns: int,
    request_bytes: int | None,
    response_bytes: int | None,
) -> HttpEvent:
    route = route or UNMATCHED
    event = HttpEvent(
        ts,
        route if len(route) <= 4096 else route[:4096],
        method[:16],
        status,
        duration_ns / 1e6,
        rs.request_id,
        rs.trace_id,
        request_bytes,
        response_bytes,
    )
    if rs.db_count:
        event.db_time_ms = rs.db_time_ms
        event.db_count = rs.db_count
    if rs.cache_hits or rs.cache_misses:
        event.cache_hits = rs.cache_hits
        event.cache_misses = rs.cache_misses
    return event


def events(
    finished: list[RequestScope], n_plus_one_threshold: int = DEFAULT_THRESHOLD
) -> list[HttpEvent | dict[str, Any]]:
    """The events of finished requests (their outcome set by :func:`finish`): for
    each, its ``http`` event (an :class:`HttpEvent`), then an ``error`` event (for
    an unhandled exception) and ``n_plus_one`` findings (one per fingerprint run at
    least ``n_plus_one_threshold`` times)."""
    wall_offset_ns = time_ns() - perf_counter_ns()  # read the clocks once per batch
    found: list[HttpEvent | dict[str, Any]] = []
    for rs in finished:
        ts = (rs.started_ns + wall_offset_ns) / 1e9
        event = _http_event(
            rs,
            rs.route,
            rs.method,
            rs.status,
            ts,
            rs.duration_ns,
            rs.request_bytes,
            rs.response_bytes,
        )
        found.append(event)
        error = rs.error
        if error is None and rs.db_count < n_plus_one_threshold:
            continue
        ended = ts + rs.duration_ns / 1e9
        try:
            if error is not None:
                event.exception = error_name(error)
                found.append(_error_event(error, event.route, rs, ended))
            found += n_plus_one_events(rs, event.route, n_plus_one_threshold, ended)
        except Exception:  # an exception whose str() raises, say: the http event stays
            _scope.internal_failure("request.events")
    return found


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
