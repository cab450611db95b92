"""W3C trace context: read from incoming requests, written for outgoing calls."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import perfpulse.agent
from conftest import serve_app
from perfpulse.agent.asgi import PerfpulseMiddleware

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def app() -> Any:
    async def call_out(request: Request) -> PlainTextResponse:
        return PlainTextResponse(perfpulse.agent.traceparent() or "none")

    return PerfpulseMiddleware(Starlette(routes=[Route("/orders/{id}", call_out)]))


def test_outgoing_calls_carry_the_incoming_trace_with_this_request_as_parent(
    captured: list[dict[str, Any]],
) -> None:
    with serve_app(app()) as url:
        incoming = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        written = httpx.get(f"{url}/orders/7", headers={"traceparent": incoming}).text
        fresh = httpx.get(f"{url}/orders/8").text
    (first, second) = [e for e in captured if e["kind"] == "http"]
    assert written == f"00-{TRACE_ID}-{first['request_id']}-01"
    assert first["trace_id"] == TRACE_ID
    # without an incoming header the request starts a trace of its own
    assert fresh == f"00-{second['trace_id']}-{second['request_id']}-01"
    assert second["trace_id"] != TRACE_ID and len(second["trace_id"]) == 32


def test_outside_a_request_there_is_nothing_to_propagate() -> None:
    assert perfpulse.agent.traceparent() is None
