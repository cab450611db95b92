"""Django middleware: one ``http`` event per request, sync or async.

Put it first in ``MIDDLEWARE`` so it times everything below it::

    MIDDLEWARE = [
        "perfpulse.agent.django.PerfpulseMiddleware",
        "django.middleware.security.SecurityMiddleware",
        ...
    ]

and call ``perfpulse.agent.init(...)`` once, e.g. in ``wsgi.py``/``asgi.py`` or
an ``AppConfig.ready``. The route is Django's ``request.resolver_match.route``
(``users/<int:pk>/`` is recorded as ``/users/{pk}/``; a ``re_path`` regex has its
named groups turned into ``{name}`` too); it is set when the view is about to run
(``process_view``), so database instrumentation sees it. Django turns a view's
exception into a 500 response before a middleware's ``__call__`` could see it;
``process_exception`` tells the agent its type and lets Django go on as usual.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.http import HttpRequest, HttpResponseBase
except ImportError as error:  # pragma: no cover - django is a test dependency
    raise ImportError("perfpulse.agent.django needs Django: pip install django") from error

from perfpulse.agent import request as _request
from perfpulse.agent.scope import (
    RequestScope,
    current_request,
    enter_request,
    exit_request,
    internal_failure,
)

__all__ = ["PerfpulseMiddleware", "django_route"]

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^()]*(?:\([^()]*\)[^()]*)*\)")
_ANCHORS = re.compile(r"\^|\$|\\Z|\\A")


class PerfpulseMiddleware:
    """New-style Django middleware; a pass-through while the agent is off."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        rs = _request.begin(request.META.get("HTTP_TRACEPARENT"))
        if rs is None:
            return self.get_response(request)
        token = enter_request(rs)
        started = perf_counter_ns()
        response: HttpResponseBase | None = None
        try:
            response = self.get_response(request)
        except Exception as error:
            rs.error = error
            raise
        finally:
            exit_request(token)
            _finish(rs, request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        rs = _request.begin(request.META.get("HTTP_TRACEPARENT"))
        if rs is None:
            return await get_response(request)
        token = enter_request(rs)
        started = perf_counter_ns()
        response: HttpResponseBase | None = None
        try:
            response = await get_response(request)
        except Exception as error:
            rs.error = error
            raise
        finally:
            exit_request(token)
            _finish(rs, request, response, started)
        return response

    def process_view(
        self, request: HttpRequest, view: object, args: object, kwargs: object
    ) -> None:
        rs = current_request()
        if rs is not None:
            rs.route = django_route(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        rs = current_request()
        if rs is not None:
            rs.error = exception


def django_route(request: HttpRequest) -> str | None:
    """The matched route as a ``{name}`` template, or ``None`` when no URL pattern matched."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    return _template(route)


def _template(route: str) -> str:
    if "(?P<" in route or "^" in route:
        route = _ANCHORS.sub("", _NAMED_GROUP.sub(lambda m: "{" + m[1] + "}", route))
    return _request.template(route)


def _finish(
    rs: RequestScope, request: HttpRequest, response: HttpResponseBase | None, started: int
) -> None:
    try:
        route = rs.route or django_route(request)
        status = 500 if response is None else response.status_code
        size = None
        if response is not None and not getattr(response, "streaming", False):
            size = len(getattr(response, "content", b""))
        length = request.META.get("CONTENT_LENGTH")
    except Exception:
        internal_failure("django.finish")
        return
    _request.finish(
        rs,
        route,
        request.method or "GET",
        status,
        started,
        request_bytes=int(length) if length and length.isdigit() else None,
        response_bytes=size,
    )
