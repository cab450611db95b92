"""WSGI middleware, and :func:`instrument_flask` to put it around a Flask application.

:class:`PerfpulseWSGIMiddleware` works for any WSGI application. The request
ends when the server closes the response iterable, so time spent streaming the
body (and queries run while streaming) counts. The route comes from the
``route`` callable given (called with the WSGI environ at the end of the
request), or from what a framework hook put in the request scope; failing both
the request is recorded as ``unmatched``.

With Flask, :func:`instrument_flask` wraps ``app.wsgi_app`` and connects two of
Flask's signals: ``request_started`` (the URL rule is matched by then, so the
database instrumentation sees the route while the view runs) and
``got_request_exception`` (Flask turns an unhandled exception into a 500 before
the WSGI layer could see it; the signal tells the agent its type).

Example::

    from flask import Flask
    from perfpulse.agent.wsgi import instrument_flask

    app = Flask(__name__)
    instrument_flask(app)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from time import perf_counter_ns
from types import TracebackType
from typing import TYPE_CHECKING, Any

from perfpulse.agent import request as _request
from perfpulse.agent import scope as _scope
from perfpulse.agent.scope import RequestScope, current_request, enter_request, exit_request

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["PerfpulseWSGIMiddleware", "instrument_flask"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class PerfpulseWSGIMiddleware:
    """Records one ``http`` event per request; a pass-through while the agent is off."""

    def __init__(self, app: WSGIApp, route: Callable[[Environ], str | None] | None = None) -> None:
        self.app = app
        self.route = route

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _request.active is None:
            return self.app(environ, start_response)
        rs = _request.begin(environ.get("HTTP_TRACEPARENT"))
        if rs is None:
            return self.app(environ, start_response)
        request = _Request(self, rs, environ)

        def start_and_keep_status(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            request.status = int(status[:3]) if status[:3].isdigit() else 0
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_and_keep_status)
        except Exception as error:
            rs.error = error
            request.status = 500
            request.close()
            raise
        return _Body(body, request)


class _Request:
    """What the middleware knows of one request while its body is being sent."""

    __slots__ = ("environ", "middleware", "response_bytes", "rs", "started", "status", "token")

    def __init__(
        self, middleware: PerfpulseWSGIMiddleware, rs: RequestScope, environ: Environ
    ) -> None:
        self.middleware = middleware
        self.rs = rs
        self.environ = environ
        self.status = 0
        self.response_bytes = 0
        self.token = enter_request(rs)
        self.started = perf_counter_ns()

    def close(self) -> None:
        rs = self.rs
        with suppress(ValueError):  # closed from another context than the one that started
            exit_request(self.token)
        route = rs.route
        if route is None and self.middleware.route is not None:
            try:
                route = self.middleware.route(self.environ)
            except Exception:
                _scope.internal_failure("wsgi.route")
        _request.finish(
            rs,
            route,
            self.environ.get("REQUEST_METHOD", "GET"),
            self.status or 500,
            self.started,
            request_bytes=_int(self.environ.get("CONTENT_LENGTH")),
            response_bytes=self.response_bytes,
        )


class _Body:
    """The application's response iterable, counting bytes and ending the request on close."""

    __slots__ = ("_body", "_request")

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        try:
            for chunk in self._body:
                request.response_bytes += len(chunk)
                yield chunk
        except Exception as error:
            request.rs.error = error
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request.close()


def _int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def instrument_flask(app: Flask) -> Flask:
    """Wrap ``app.wsgi_app`` in :class:`PerfpulseWSGIMiddleware` and connect Flask's signals."""
    try:
        from flask import got_request_exception, request, request_started
    except ImportError as error:  # pragma: no cover - flask is a test dependency
        raise ImportError(
            "perfpulse.agent.wsgi.instrument_flask needs Flask: pip install flask"
        ) from error

    def on_request_started(sender: object, **extra: object) -> None:
        rs = current_request()
        rule = request.url_rule
        if rs is not None and rule is not None:
            rs.route = _request.template(rule.rule)

    def on_exception(sender: object, exception: BaseException, **extra: object) -> None:
        rs = current_request()
        if rs is not None:
            rs.error = exception

    request_started.connect(on_request_started, app, weak=False)
    got_request_exception.connect(on_exception, app, weak=False)
    app.wsgi_app = PerfpulseWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app
