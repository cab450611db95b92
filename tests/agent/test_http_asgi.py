"""The ASGI middleware: FastAPI under uvicorn reporting to a real collector, and
Starlette routing details against an in-memory capture."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

import perfpulse.agent
from conftest import Server, serve_app
from perfpulse.agent import flush, stats
from perfpulse.agent.asgi import PerfpulseMiddleware
from perfpulse.agent.request import UNMATCHED
from perfpulse.agent.scope import current_request

from .conftest import Start, call_asgi

FINGERPRINT = "SELECT * FROM items WHERE order_id = ?"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class PaymentDeclined(Exception):
    pass


def shop() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "name": "x" * 100}

    @app.post("/orders")
    async def create(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.get("/orders/{order_id}")
    def order(order_id: int) -> dict[str, int]:  # sync: runs in a worker thread
        rs = current_request()
        assert rs is not None
        for _ in range(6):
            rs.add_query(FINGERPRINT, 2.0)
        rs.add_query("SELECT * FROM orders WHERE id = ?", 1.0)
        rs.add_cache(hit=True)
        rs.add_cache(hit=False)
        return {"id": order_id}

    @app.get("/pay/{order_id}")
    async def pay(order_id: int) -> dict[str, int]:
        raise PaymentDeclined(f"card declined for order {order_id}")

    app.add_middleware(PerfpulseMiddleware)
    return app


def test_fastapi_under_uvicorn_stores_templates_errors_and_n_plus_one(
    server: Server, agent: Start
) -> None:
    agent(endpoint=server.url)
    with serve_app(shop()) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/users/42").status_code == 200
        assert (
            client.get(
                "/users/43", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
            ).status_code
            == 200
        )
        assert client.post("/orders", content=b"a" * 321).status_code == 200
        assert client.get("/orders/7").status_code == 200
        assert client.get("/no/such/page/123").status_code == 404
        assert client.get("/pay/9").status_code == 500  # uvicorn closes the connection after it
    assert flush(timeout_s=10)
    server.wait_stored(count=6, service="shop")
    assert server.stop() == 0

    rows = server.rows(
        "SELECT route, method, status, exception, request_bytes, response_bytes, db_count,"
        " db_time_ms, cache_hits, cache_misses, trace_id, request_id, release FROM http"
        " ORDER BY ts"
    )
    by_route: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_route.setdefault(row[0], []).append(row)
    assert set(by_route) == {
        "/users/{user_id}",
        "/orders",
        "/orders/{order_id}",
        "/pay/{order_id}",
        UNMATCHED,
    }
    users = by_route["/users/{user_id}"]
    assert [(r[1], r[2], r[3]) for r in users] == [("GET", 200, None), ("GET", 200, None)]
    assert users[0][5] == len(b'{"id":42,"name":"' + b"x" * 100 + b'"}')
    assert users[1][10] == TRACE_ID, "the traceparent's trace id is kept"
    assert users[0][10] != TRACE_ID and len(users[0][10]) == 32
    assert all(len(r[11]) == 16 for r in rows), "every request gets a request id"
    assert by_route["/orders"][0][4] == 321
    (order,) = by_route["/orders/{order_id}"]
    assert order[6:10] == (7, 13.0, 1, 1)
    (pay,) = by_route["/pay/{order_id}"]
    assert pay[2:4] == (500, f"{__name__}.PaymentDeclined")
    assert by_route[UNMATCHED][0][2] == 404

    (finding,) = server.rows(
        "SELECT route, fingerprint, count, total_ms, request_id FROM n_plus_one"
    )
    assert finding[:4] == ("/orders/{order_id}", FINGERPRINT, 6, 12.0)
    assert finding[4] == order[11]

    (error,) = server.rows("SELECT type, message, route, handled, stack, trace_id FROM error")
    assert error[:4] == (
        f"{__name__}.PaymentDeclined",
        "card declined for order 9",
        "/pay/{order_id}",
        False,
    )
    assert "raise PaymentDeclined" in error[4]
    assert error[5] == pay[10]


def test_the_application_sees_its_own_exception_untouched(captured: list[dict[str, Any]]) -> None:
    boom = PaymentDeclined("no")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise boom

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            pass

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await PerfpulseMiddleware(app)(scope, receive, send)

    with pytest.raises(PaymentDeclined) as raised:
        asyncio.run(call())
    assert raised.value is boom
    assert [e["kind"] for e in captured] == ["http", "error"]
    assert captured[0]["status"] == 500 and captured[0]["route"] == UNMATCHED


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def test_starlette_mounts_give_full_templates(captured: list[dict[str, Any]]) -> None:
    api = Starlette(routes=[Route("/items/{item_id:int}", _ok)])
    app = Starlette(
        routes=[
            Route("/health", _ok),
            Mount("/api/v1", app=api),
            Mount("/static", app=PlainTextResponse("asset")),  # an app mounted whole
            Route("/only-post", _ok, methods=["POST"]),
        ]
    )
    app.add_middleware(PerfpulseMiddleware)
    for path in [
        "/health",
        "/api/v1/items/5",
        "/api/v1/nothing/here",
        "/static/app.3f9a8c1b.js",
        "/only-post",
        "/missing/77",
    ]:
        call_asgi(app, path)
    routes = [(e["route"], e["status"]) for e in captured if e["kind"] == "http"]
    assert routes == [
        ("/health", 200),
        ("/api/v1/items/{item_id:int}", 200),
        ("/api/v1/{path}", 404),  # no route of the mounted app: the mount's template
        ("/static/{path}", 200),
        ("/only-post", 405),
        (UNMATCHED, 404),
    ]


def test_route_is_known_inside_the_endpoint(captured: list[dict[str, Any]]) -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        rs = current_request()
        assert rs is not None
        seen.append(rs.route_template())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/carts/{cart_id}", endpoint)])
    app.add_middleware(PerfpulseMiddleware)
    assert call_asgi(app, "/carts/1") == 200
    assert seen == ["/carts/{cart_id}"]


def test_off_agent_and_unsampled_requests_record_nothing(captured: list[dict[str, Any]]) -> None:
    from perfpulse.agent import request as agent_request
    from perfpulse.agent.config import Config

    scopes: list[object] = []

    async def endpoint(request: Request) -> Response:
        scopes.append(current_request())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(PerfpulseMiddleware)
    active = agent_request.active
    agent_request.active = Config.resolve(
        service="shop", endpoint="http://127.0.0.1:9", sample_rate=0.0, environ={}
    )
    call_asgi(app, "/")
    agent_request.active = None
    call_asgi(app, "/")
    agent_request.active = active
    call_asgi(app, "/")
    assert scopes[:2] == [None, None]
    assert scopes[2] is not None
    assert len([e for e in captured if e["kind"] == "http"]) == 1


def test_a_collector_that_is_down_costs_the_application_nothing(agent: Start) -> None:
    failures = stats().internal_failures
    agent(endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    with serve_app(shop()) as url, httpx.Client(base_url=url, timeout=10) as client:
        started = time.perf_counter()
        statuses = [client.get(f"/users/{i}").status_code for i in range(50)]
        elapsed = time.perf_counter() - started
    assert statuses == [200] * 50
    assert elapsed < 5
    assert stats().internal_failures == failures
    assert not perfpulse.agent.shutdown(timeout_s=0.2), "nothing could be delivered"
