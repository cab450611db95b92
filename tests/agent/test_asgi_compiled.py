"""The compiled ASGI middleware against its Python reference, request by request.

``PerfpulseMiddleware`` is compiled (``perfpulse.agent._speedups``) and
``PythonMiddleware`` says what it must do. Each test here runs both on the same
requests, through the transport's fast path (finished requests queued as
``HttpEvent`` structs, as the running agent does), and compares what they
recorded, or checks an edge of the awaitable protocol (cancellation, a closed
or collected request, ``throw``) on both.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from perfpulse.agent import asgi
from perfpulse.agent import request as agent_request
from perfpulse.agent import scope as agent_scope
from perfpulse.agent.config import Config
from perfpulse.agent.request import UNMATCHED
from perfpulse.agent.scope import RequestScope, current_request

from .conftest import call_asgi

IMPLEMENTATIONS = {"compiled": asgi.PerfpulseMiddleware, "python": asgi.PythonMiddleware}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_installed_package_runs_the_compiled_middleware() -> None:
    # make test installs with a C compiler present: the benchmarks and the tests
    # below would measure and compare the Python middleware twice otherwise
    assert asgi.SPEEDUPS, "perfpulse.agent._speedups was not built"
    assert asgi.PerfpulseMiddleware is not asgi.PythonMiddleware


@pytest.fixture
def recorded() -> Iterator[list[Any]]:
    """The agent on, with everything it records (structs and dicts) in one list."""
    items: list[Any] = []
    agent_request.active = Config.resolve(service="shop", endpoint="http://127.0.0.1:9", environ={})
    agent_scope.set_sink(items.append, requests=items.append)
    yield items
    agent_request.active = None
    agent_scope.set_sink(None)


def _plain(items: list[Any]) -> list[dict[str, Any]]:
    """What was recorded as wire-format dicts: finished scopes become their events."""
    made: list[Any] = []
    for item in items:
        if isinstance(item, RequestScope):
            made += agent_request.events([item])
        else:
            made.append(item)
    return [e if isinstance(e, dict) else msgspec.to_builtins(e) for e in made]


_VARYING = {"ts", "duration_ms", "request_id", "trace_id", "stack"}


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in _VARYING} for e in events]


async def receive() -> dict[str, Any]:
    """The server's ``receive`` for a request without a body."""
    return {"type": "http.request"}


async def send(message: Any) -> None:
    """The server's ``send``: the tests read what the middleware recorded, not this."""


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _queries(request: Request) -> Response:
    rs = current_request()
    assert rs is not None
    queries = int(request.path_params["order_id"])  # so many queries, a hit when even
    for _ in range(queries):
        rs.add_query("SELECT * FROM items WHERE id = ?", 1.5)
    rs.add_cache(hit=queries % 2 == 0)
    return PlainTextResponse("q" * 10)


async def _fails(request: Request) -> Response:
    raise LookupError("no such item")


class _Chunks:
    """A raw ASGI endpoint sending its body in three parts."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"ab", b"cde", b"f"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})


def _app(middleware: Any) -> Starlette:
    api = Starlette(routes=[Route("/items/{item_id:int}", _ok)])
    app = Starlette(
        routes=[
            Route("/", _ok, methods=["GET", "POST"]),
            Route("/orders/{order_id}", _queries),
            Route("/fail", _fails),
            Route("/stream", _Chunks()),
            Mount("/api", app=api),
        ]
    )
    app.add_middleware(middleware)
    return app


REQUESTS: list[tuple[str, str, tuple[tuple[bytes, bytes], ...]]] = [
    ("/", "GET", ()),
    ("/", "POST", ((b"content-length", b"321"),)),
    ("/", "GET", ((b"content-length", b"12x"),)),
    ("/orders/2", "GET", ()),  # database and cache tallies, no finding
    ("/orders/7", "GET", ()),  # an N+1 finding
    ("/fail", "GET", ()),  # an error event
    ("/stream", "GET", ()),
    ("/api/items/3", "GET", ()),
    ("/api/nothing", "GET", ()),
    ("/missing/1", "GET", ()),
    ("/", "VERY-LONG-METHOD-NAME", ()),
    ("/", "GET", ((b"traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()),)),
]


def test_both_middlewares_record_the_same_events(recorded: list[Any]) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    for name, middleware in IMPLEMENTATIONS.items():
        app = _app(middleware)
        recorded.clear()
        statuses = [call_asgi(app, path, method, headers) for path, method, headers in REQUESTS]
        assert statuses == [200, 200, 200, 200, 200, 500, 200, 200, 404, 404, 405, 200]
        seen[name] = _plain(recorded)
    compiled, python = seen["compiled"], seen["python"]
    assert _comparable(compiled) == _comparable(python)
    http = [e for e in compiled if e["kind"] == "http"]
    assert [e["route"] for e in http] == [
        "/",
        "/",
        "/",
        "/orders/{order_id}",
        "/orders/{order_id}",
        "/fail",
        "/stream",
        "/api/items/{item_id:int}",
        "/api/{path}",
        UNMATCHED,
        "/",
        "/",
    ]
    assert http[1]["request_bytes"] == 321 and "request_bytes" not in http[2]
    assert (http[3]["db_count"], http[3]["db_time_ms"], http[3]["cache_hits"]) == (2, 3.0, 1)
    assert http[3]["cache_misses"] == 0 and "db_count" not in http[0]
    assert http[5]["status"] == 500 and http[5]["exception"] == "LookupError"
    assert http[6]["response_bytes"] == 6
    assert (http[10]["method"], http[10]["status"]) == ("VERY-LONG-METHOD", 405)
    assert http[11]["trace_id"] == TRACE_ID
    assert [e["kind"] for e in compiled if e["kind"] != "http"] == ["n_plus_one", "error"]
    for event in http:
        assert re.fullmatch(r"[0-9a-f]{16}", event["request_id"])
        assert re.fullmatch(r"[0-9a-f]{32}", event["trace_id"])
    ids = [e["request_id"] for events in seen.values() for e in events if e["kind"] == "http"]
    assert len(set(ids)) == len(ids), "one id counter for both middlewares"


def test_the_request_scope_is_what_the_python_constructor_makes(recorded: list[Any]) -> None:
    seen: list[RequestScope] = []

    async def endpoint(request: Request) -> Response:
        rs = current_request()
        assert rs is not None
        seen.append(rs)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(asgi.PerfpulseMiddleware)
    call_asgi(app, "/")
    (made,) = seen
    assert type(made) is asgi._LazyExchange
    fresh = asgi._Exchange(None, made.request_id, made.trace_id)
    for name in RequestScope.__slots__:
        if hasattr(fresh, name):
            assert getattr(made, name) == getattr(fresh, name), name
        elif name not in {"method", "status", "started_ns", "duration_ns"}:
            assert not hasattr(made, name), name
    assert made.asgi_scope is None, "the ASGI scope is let go when the request ends"


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_a_cancelled_request_is_a_499_and_leaves_no_current_request(
    name: str, recorded: list[Any]
) -> None:
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    async def main() -> RequestScope | None:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        task = asyncio.create_task(IMPLEMENTATIONS[name](app)(scope, receive, send))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return current_request()

    assert asyncio.run(main()) is None
    (event,) = _plain(recorded)
    assert (event["status"], event["route"], event.get("exception")) == (499, UNMATCHED, None)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_sending_after_the_response_completed_fails_loudly(name: str, recorded: list[Any]) -> None:
    kept: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        kept.append(send)

    async def main() -> None:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await IMPLEMENTATIONS[name](app)(scope, receive, send)
        with pytest.raises(RuntimeError, match="after the response completed"):
            await kept[0]({"type": "http.response.body", "body": b"late"})

    asyncio.run(main())
    (event,) = _plain(recorded)
    assert (event["status"], event["response_bytes"]) == (204, 0)


class _Pause:
    """Suspends the request until the test resumes it (no event loop needed)."""

    def __await__(self) -> Any:
        yield "paused"


class _Awaitable:
    """An ASGI application's result that is an awaitable, not a coroutine."""

    def __init__(self, send: Any) -> None:
        self.send = send

    def __await__(self) -> Any:
        yield from self.send({"type": "http.response.start", "status": 201}).__await__()
        yield from asyncio.sleep(0).__await__()
        yield from self.send({"type": "http.response.body", "body": b"made"}).__await__()
        return None


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_an_application_returning_any_awaitable_and_other_traffic(
    name: str, recorded: list[Any]
) -> None:
    passed: list[str] = []

    def app(scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            passed.append(scope["type"])
            return asyncio.sleep(0)
        return _Awaitable(send)

    async def main() -> None:
        middleware = IMPLEMENTATIONS[name](app)
        await middleware({"type": "lifespan"}, receive, send)
        scope = {"type": "http", "method": "PUT", "path": "/", "headers": []}
        await middleware(scope, receive, send)

    asyncio.run(main())
    assert passed == ["lifespan"]
    (event,) = _plain(recorded)
    assert (event["method"], event["status"], event["response_bytes"]) == ("PUT", 201, 4)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_a_request_collected_unfinished_is_recorded_once(name: str, recorded: list[Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await _Pause()

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    call = IMPLEMENTATIONS[name](app)(scope, receive, send)
    step = call.__await__()
    assert step.send(None) == "paused"  # the response started
    del call, step
    gc.collect()
    (event,) = _plain(recorded)
    assert event["status"] == 200
    assert current_request() is None


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_an_exception_thrown_in_is_the_requests_error(name: str, recorded: list[Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _Pause()

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    step = IMPLEMENTATIONS[name](app)(scope, receive, send).__await__()
    assert step.send(None) == "paused"
    boom = TimeoutError("upstream")
    with pytest.raises(TimeoutError) as raised:
        step.throw(boom)
    assert raised.value is boom
    assert [e["kind"] for e in _plain(recorded)] == ["http", "error"]
    assert _plain(recorded)[0]["status"] == 500
    with pytest.raises(RuntimeError):  # finished: it cannot be resumed again
        step.send(None)


def test_the_python_middleware_can_be_forced() -> None:
    probe = (
        "from perfpulse.agent import asgi;"
        "print(asgi.SPEEDUPS, asgi.PerfpulseMiddleware is asgi.PythonMiddleware)"
    )
    for value, expected in (("1", "False True"), ("0", "True False")):
        env = {**os.environ, "PERFPULSE_AGENT_PURE_PYTHON": value}
        ran = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        assert ran.stdout.split() == expected.split(), value


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_scopes_and_messages_may_be_any_mapping(name: str, recorded: list[Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(MappingProxyType({"type": "http.response.start", "status": 202}))
        await send(MappingProxyType({"type": "http.response.body", "body": b"queued"}))

    async def main() -> None:
        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await IMPLEMENTATIONS[name](app)(MappingProxyType(scope), receive, send)

    asyncio.run(main())
    (event,) = _plain(recorded)
    assert (event["method"], event["status"], event["response_bytes"]) == ("POST", 202, 6)
