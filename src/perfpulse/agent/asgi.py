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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from time import perf_counter
from typing import Any

from starlette.routing import Mount  # a dependency of perfpulse: always installed

from perfpulse.agent import request as _request
from perfpulse.agent.scope import enter_request, exit_request

__all__ = ["PerfpulseMiddleware", "starlette_route"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT_GONE = 499  # the request ended before a response was started (nginx's code)


class PerfpulseMiddleware:
    """Records one ``http`` event per request; a pass-through while the agent is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _request.active is None:
            await self.app(scope, receive, send)
            return
        traceparent = request_bytes = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value
            elif name == b"content-length":
                request_bytes = value
        rs = _request.begin(traceparent)
        if rs is None:
            await self.app(scope, receive, send)
            return
        rs.resolve_route = partial(starlette_route, scope)
        status = 0
        response_bytes = 0

        async def send_and_count(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = enter_request(rs)
        started = perf_counter()
        try:
            await self.app(scope, receive, send_and_count)
        except Exception as error:
            rs.error = error
            if status == 0:
                status = 500
            raise
        finally:
            exit_request(token)
            _request.finish(
                rs,
                rs.route_template(),
                scope["method"],
                status or _CLIENT_GONE,
                started,
                request_bytes=int(request_bytes)
                if request_bytes and request_bytes.isdigit()
                else None,
                response_bytes=response_bytes,
            )


def starlette_route(scope: Scope) -> str | None:
    """The template of the route Starlette matched, or ``None`` before routing or on a 404."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = ""
    if "app_root_path" in scope:  # inside a Mount: its matched prefix is in root_path
        mounted = scope.get("root_path", "")[len(scope["app_root_path"]) :]
    if isinstance(route, Mount):  # the Mount itself matched: an app mounted whole (static files)
        return _request.template(mounted + "/{path}")
    return _request.template(mounted + path)
