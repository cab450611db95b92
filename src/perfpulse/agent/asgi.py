"""Pure ASGI middleware for Starlette and FastAPI (and any ASGI application).

Pure ASGI rather than ``BaseHTTPMiddleware``, so ``contextvars`` set here (the
request scope the database and cache instrumentation fill) reach the endpoint,
and streaming responses are not buffered. Per request it records the route
template, method, status, duration, request and response bytes, the database
and cache tallies, and for an unhandled exception its type plus an ``error``
event; the exception is re-raised untouched.

The route is Starlette's: after the router matched, ``scope["route"]`` is the
matching route and its ``path`` the template (``/users/{id}``), prefixed with
the paths of the ``Mount``\\ s it sits in. An application without Starlette's
router (or a 404) is recorded as ``unmatched``. WebSocket and lifespan traffic
passes through.

Example::

    from fastapi import FastAPI
    from perfpulse.agent.asgi import PerfpulseMiddleware

    app = FastAPI()
    app.add_middleware(PerfpulseMiddleware)

``PerfpulseMiddleware`` is compiled (``perfpulse.agent._speedups``, built at
install time when a C compiler is there) and does what :class:`PythonMiddleware`
does, step for step; that is the reference, and the middleware when the
extension was not built or ``PERFPULSE_AGENT_PURE_PYTHON=1`` is set. The
compiled one adds a third of the instructions to a request (see
docs/python-agent.md, "Overhead").
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter_ns
from typing import Any, cast

from starlette.routing import Mount  # a dependency of perfpulse: always installed

from perfpulse.agent import request as _request
from perfpulse.agent import scope as _scope
from perfpulse.agent.nplusone import DEFAULT_THRESHOLD
from perfpulse.agent.request import UNMATCHED, HttpEvent, begin, finish, make_ids
from perfpulse.agent.scope import RequestScope, enter_request, exit_request, internal_failure

__all__ = ["SPEEDUPS", "PerfpulseMiddleware", "PythonMiddleware", "starlette_route"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT_GONE = 499  # the request ended before a response was started (nginx's code)


class PythonMiddleware:
    """Records one ``http`` event per request; a pass-through while the agent is off.

    The reference implementation of :data:`PerfpulseMiddleware` (see the module docstring).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _request.active is None:
            await self.app(scope, receive, send)
            return
        traceparent = length = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value
            elif name == b"content-length":
                length = value
        rs = begin(traceparent, _Exchange)
        if rs is None:
            await self.app(scope, receive, send)
            return
        rs.asgi_scope = scope
        rs.downstream = send
        rs.status = rs.sent = 0
        token = enter_request(rs)
        started = perf_counter_ns()
        try:
            await self.app(scope, receive, rs.send)
        except Exception as error:
            rs.error = error
            if rs.status == 0:
                rs.status = 500
            raise
        finally:
            exit_request(token)
            finish(
                rs,
                rs.route or starlette_route(scope),
                scope["method"],
                rs.status or _CLIENT_GONE,
                started,
                request_bytes=int(length) if length is not None and length.isdigit() else None,
                response_bytes=rs.sent,
            )
            # The record waits in the queue, not the exchange (the scope, the server's
            # per-request objects behind its ``send``).
            rs.asgi_scope, rs.downstream = None, _completed


class _Exchange(RequestScope):
    """The request scope of one ASGI exchange; its :meth:`send` counts the response."""

    __slots__ = ("asgi_scope", "downstream", "sent")

    # set by the middleware right after ``begin`` (no ``__init__`` of its own: a
    # ``super().__init__`` call costs more than the three assignments)
    asgi_scope: Scope | None
    downstream: Send  # the server's ``send``
    sent: int  # response body bytes

    def route_template(self) -> str | None:
        route = self.route
        if route is None and self.asgi_scope is not None:
            route = self.route = starlette_route(self.asgi_scope)
        return route

    def send(self, message: Message) -> Awaitable[None]:
        # not ``async``: it returns the server's awaitable as it is, so a message
        # costs no coroutine of its own
        kind = message["type"]
        if kind == "http.response.body":
            self.sent += len(message.get("body", b""))
        elif kind == "http.response.start":
            self.status = message["status"]
        return self.downstream(message)


# the slots' descriptors, which _LazyExchange's properties stand in front of
_REQUEST_ID: Any = vars(RequestScope)["request_id"]
_TRACE_ID: Any = vars(RequestScope)["trace_id"]


class _LazyExchange(_Exchange):
    """The compiled middleware's exchange, whose ids are made when first read.

    The compiled middleware does not make a request's id strings: it keeps the id
    counter's ``number`` and leaves ``request_id`` and ``trace_id`` ``None`` until
    they are first read (by database or log instrumentation, say), when
    :func:`perfpulse.agent.request.make_ids` makes both. The usual request never
    reads them: its record in the transport's log holds the number, and the ids
    are written from it on the sender's thread. (The Python middleware makes its
    ids in :func:`~perfpulse.agent.request.begin` and uses :class:`_Exchange`,
    whose ids are plain slots.)
    """

    __slots__ = ("number",)

    number: int | None  # the ids not made yet; unset when they were given

    @property
    def request_id(self) -> str | None:
        value: str | None = _REQUEST_ID.__get__(self)
        if value is None and self._make_ids():
            value = _REQUEST_ID.__get__(self)
        return value

    @request_id.setter
    def request_id(self, value: str | None) -> None:
        self._make_ids()  # the other id, from the number, before it goes
        _REQUEST_ID.__set__(self, value)

    @property
    def trace_id(self) -> str | None:
        value: str | None = _TRACE_ID.__get__(self)
        if value is None and self._make_ids():
            value = _TRACE_ID.__get__(self)
        return value

    @trace_id.setter
    def trace_id(self, value: str | None) -> None:
        self._make_ids()
        _TRACE_ID.__set__(self, value)

    def _make_ids(self) -> bool:
        number = getattr(self, "number", None)
        if number is None:
            return False
        self.number = None
        request_id, trace_id = make_ids(number)
        _REQUEST_ID.__set__(self, request_id)
        _TRACE_ID.__set__(self, trace_id)
        return True


async def _completed(message: Message) -> None:
    raise RuntimeError(f"ASGI message {message.get('type')!r} sent after the response completed")


# id(route) -> (route, template) for routes outside any Mount: the template of a
# route object never changes, and holding the route keeps its id from being reused
# (Starlette's routes define ``__eq__``, so they cannot be keys themselves).
_plain_routes: dict[int, tuple[object, str]] = {}
_PLAIN_ROUTES_MAX = 4096


def starlette_route(scope: Scope) -> str | None:
    """The template of the route Starlette matched, or ``None`` before routing or on a 404."""
    route = scope.get("route")
    nested = "app_root_path" in scope  # inside a Mount: its matched prefix is in root_path
    if not nested:
        known = _plain_routes.get(id(route))
        if known is not None and known[0] is route:
            return known[1]
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = scope.get("root_path", "")[len(scope["app_root_path"]) :] if nested else ""
    if isinstance(route, Mount):  # the Mount itself matched: an app mounted whole (static files)
        return _request.template(mounted + "/{path}")
    found = _request.template(mounted + path)
    if not nested and len(_plain_routes) < _PLAIN_ROUTES_MAX:
        _plain_routes[id(route)] = (route, found)
    return found


#: Whether :data:`PerfpulseMiddleware` is the compiled middleware.
SPEEDUPS = False
if os.environ.get("PERFPULSE_AGENT_PURE_PYTHON", "") in ("", "0"):
    try:
        from perfpulse.agent import _speedups  # type: ignore[attr-defined]
    except ImportError:  # installed without a C compiler
        pass
    else:
        _speedups.setup(
            request_ns=vars(_request),
            scope_ns=vars(_scope),
            begin=begin,
            finish=finish,
            route=starlette_route,
            failure=internal_failure,
            http_event=HttpEvent,
            exchange=_LazyExchange,
            contextvar=_scope._current,
            plain_routes=_plain_routes,
            unmatched=UNMATCHED,
            threshold=DEFAULT_THRESHOLD,
        )
        SPEEDUPS = True


PerfpulseMiddleware: type[PythonMiddleware] = PythonMiddleware
if SPEEDUPS:

    class _CompiledMiddleware(_speedups.Middleware):  # type: ignore[misc]
        """Records one ``http`` event per request; a pass-through while the agent is off.

        Compiled: :class:`PythonMiddleware` is what it does (see the module docstring).
        """

        def __init__(self, app: ASGIApp) -> None:
            super().__init__(app)
            # Servers (uvicorn, hypercorn) tell ASGI 3 from ASGI 2 by asking whether
            # ``app.__call__`` is a coroutine function, and a compiled one is not. Calls
            # go through the type's own (compiled) call; this only answers that question.
            self.__dict__["__call__"] = self._asgi3

        async def _asgi3(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self(scope, receive, send)

    _CompiledMiddleware.__name__ = _CompiledMiddleware.__qualname__ = "PerfpulseMiddleware"
    # the same constructor and call as PythonMiddleware: one public type for users' checkers
    PerfpulseMiddleware = cast("type[PythonMiddleware]", _CompiledMiddleware)
