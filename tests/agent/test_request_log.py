"""The compiled request log: finished usual requests kept as C records and sent
as the JSON the Python middleware's events make.

The running agent's request sink is its transport's ``RequestLog`` (where
``perfpulse.agent._speedups`` was built): the compiled middleware appends each
usual request to it as a record, and the transport's thread takes a batch of
records as one JSON array. Everything else (errors, N+1 findings, events from
Python) goes through the log to the transport's queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from perfpulse.agent import asgi
from perfpulse.agent import request as agent_request
from perfpulse.agent import scope as agent_scope
from perfpulse.agent.config import Config
from perfpulse.agent.scope import current_request
from perfpulse.agent.transport import RequestLog, Transport

from .conftest import call_asgi
from .test_asgi_compiled import REQUESTS, _app, _comparable, _plain
from .test_transport import StandIn

pytestmark = pytest.mark.skipif(RequestLog is None, reason="needs perfpulse.agent._speedups")

ODD = '/caf\u00e9/"{word}"\\'  # a route template with non-ASCII, quotes and a backslash


def _ignore(item: Any) -> None:
    pass


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


@pytest.fixture
def agent_on() -> Iterator[None]:
    agent_request.active = Config.resolve(service="shop", endpoint="http://127.0.0.1:9", environ={})
    yield
    agent_request.active = None
    agent_scope.set_sink(None)


def _with_odd_route(middleware: Any) -> Starlette:
    app = _app(middleware)
    app.router.routes.append(Route(ODD, _ok))
    return app


ALL_REQUESTS = [
    *REQUESTS,
    ('/caf\u00e9/"x"\\', "GET", ()),
    ("/", 'G"\\\n\x01', ()),  # a method with a quote, a backslash and control characters
]


def test_records_are_the_events_the_python_middleware_makes(agent_on: None) -> None:
    python: list[Any] = []
    agent_scope.set_sink(python.append, requests=python.append)
    app = _with_odd_route(asgi.PythonMiddleware)
    for path, method, headers in ALL_REQUESTS:
        call_asgi(app, path, method, headers)

    other: list[Any] = []
    log = RequestLog(100, 100, lambda: None, other.append)
    agent_scope.set_sink(other.append, requests=log)
    app = _with_odd_route(asgi.PerfpulseMiddleware)
    before = time.time()
    for path, method, headers in ALL_REQUESTS:
        call_asgi(app, path, method, headers)
    body, count = log.take(1000, 10**6)
    assert len(log) == 0
    from_log = json.loads(body)
    assert count == len(from_log) == 12, "the usual requests are records"
    assert len(other) == 2, "the error and the N+1 finding go to the fallback"

    def key(event: dict[str, Any]) -> str:
        return json.dumps(event, sort_keys=True)

    compiled = _comparable(from_log + _plain(other))
    assert sorted(compiled, key=key) == sorted(_comparable(_plain(python)), key=key)
    routes = {e["route"] for e in from_log}
    assert ODD in routes and "/orders/{order_id}" in routes
    assert 'G"\\\n\x01' in {e["method"] for e in from_log}
    for event in from_log:
        assert list(event)[:2] == ["kind", "ts"] and event["kind"] == "http"
        assert before - 1 < event["ts"] < time.time() + 1
        assert 0 < event["duration_ms"] < 10_000
        assert len(event["request_id"]) == 16 and len(event["trace_id"]) == 32


def test_decimal_fields_are_exact_to_the_microsecond(agent_on: None) -> None:
    # ts and duration_ms come from integer nanoseconds, written as decimals
    log = RequestLog(10, 10, lambda: None, _ignore)
    agent_scope.set_sink(_ignore, requests=log)
    call_asgi(_app(asgi.PerfpulseMiddleware), "/")
    body, _ = log.take(10, 10**6)
    ts = body.split(b'"ts":')[1].split(b",")[0]
    duration = body.split(b'"duration_ms":')[1].split(b",")[0]
    whole, _, fraction = ts.partition(b".")
    assert whole.isdigit() and fraction.isdigit() and 1 <= len(fraction) <= 6
    assert fraction == b"0" or not fraction.endswith(b"0"), "trailing zeros dropped"
    whole, _, fraction = duration.partition(b".")
    assert whole.isdigit() and fraction.isdigit() and 1 <= len(fraction) <= 6


def _requests(app: Any, sizes: range) -> None:
    for size in sizes:
        assert call_asgi(app, "/", "POST", ((b"content-length", str(size).encode()),)) == 200


def test_a_crowded_log_wakes_the_sender_once_per_batch(agent_on: None) -> None:
    wakes: list[int] = []
    log = RequestLog(10, 2, lambda: wakes.append(len(log)), _ignore)
    agent_scope.set_sink(_ignore, requests=log)
    app = _app(asgi.PerfpulseMiddleware)
    _requests(app, range(1, 6))
    assert wakes == [2], "once, when the second record arrived"
    assert log.take(10, 10**6)[1] == 5
    _requests(app, range(6, 8))
    assert wakes == [2, 2]


def test_take_cuts_by_count_and_by_bytes(agent_on: None) -> None:
    log = RequestLog(10, 10, lambda: None, _ignore)
    agent_scope.set_sink(_ignore, requests=log)
    _requests(_app(asgi.PerfpulseMiddleware), range(1, 5))
    body, count = log.take(2, 10**6)
    assert count == 2 and [e["request_bytes"] for e in json.loads(body)] == [1, 2]
    one = len(body) // 2
    body, count = log.take(10, one + 2)  # room for one record, not two
    assert count == 1 and [e["request_bytes"] for e in json.loads(body)] == [3]
    assert log.take_dropped() == (0, 0)
    body, count = log.take(10, 20)  # the last record alone is too big: dropped, counted
    assert (body, count, len(log)) == (b"[]", 0, 0)
    assert log.take_dropped() == (0, 1)
    assert log.take_dropped() == (0, 0), "the counts start again"


def test_calling_the_log_hands_the_item_to_its_fallback_and_clear_empties_it(
    agent_on: None,
) -> None:
    handed: list[Any] = []
    log = RequestLog(2, 2, lambda: None, handed.append)
    log({"kind": "cache"})
    assert handed == [{"kind": "cache"}] and len(log) == 0
    agent_scope.set_sink(_ignore, requests=log)
    _requests(_app(asgi.PerfpulseMiddleware), range(1, 4))
    assert len(log) == 2 and (log.overflow, log.skipped) == (1, 0), "read, not reset"
    assert log.overflow == 1 and log.take_dropped() == (1, 0)
    assert log.overflow == 0
    _requests(_app(asgi.PerfpulseMiddleware), range(1, 2))
    log.clear()
    assert len(log) == 0 and log.take_dropped() == (0, 0)
    assert log.take(10, 10**6) == (b"[]", 0)
    with pytest.raises(ValueError, match="capacity"):
        RequestLog(0, 1, lambda: None, handed.append)


def test_a_full_log_drops_the_oldest_and_the_transport_reports_them(agent_on: None) -> None:
    stand_in = StandIn([])
    transport = Transport(stand_in.url, "k", {"service": "s"}, queue_size=3, flush_interval_s=0.02)
    try:
        assert transport.request_sink is transport._log
        agent_scope.set_sink(transport.enqueue, requests=transport.request_sink)
        _requests(_app(asgi.PerfpulseMiddleware), range(1, 6))
        stats = transport.stats()
        assert (stats.queued, stats.dropped_events) == (3, 2)
        transport.start()
        assert transport.flush(5)
        (batch,) = [r.batch for r in stand_in.got]
        assert [e["request_bytes"] for e in batch["events"]] == [3, 4, 5]
        assert batch["dropped"] == 2
        stats = transport.stats()
        assert (stats.sent_events, stats.dropped_events, stats.queued) == (3, 2, 0), (
            "the drops counted once, reported or not"
        )
    finally:
        transport.shutdown(2)
        stand_in.close()


def test_ids_are_made_when_read_or_sent_and_agree(agent_on: None) -> None:
    # the compiled middleware keeps the id counter's number; the ids are made from
    # it when the request's code reads them, or by the log when it sends the record
    seen: list[Any] = []
    ids_read: list[tuple[str | None, str | None]] = []

    async def quiet(request: Request) -> Response:
        seen.append(current_request())
        return PlainTextResponse("ok")

    async def reads(request: Request) -> Response:
        rs = current_request()
        assert rs is not None
        ids_read.append((rs.request_id, rs.trace_id))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/quiet", quiet), Route("/reads", reads)])
    app.add_middleware(asgi.PerfpulseMiddleware)
    log = RequestLog(10, 10, lambda: None, _ignore)
    agent_scope.set_sink(_ignore, requests=log)
    call_asgi(app, "/quiet")
    call_asgi(app, "/reads")
    quiet_event, reads_event = json.loads(log.take(10, 10**6)[0])
    (rs,) = seen
    assert type(rs) is asgi._LazyExchange and rs.number is not None, "ids not made yet"
    number = rs.number
    # what request.begin makes for the same number, digit for digit
    begun = f"{(number >> 8) ^ agent_request._salt:014x}" + agent_request._LOW[number & 0xFF]
    assert (quiet_event["request_id"], quiet_event["trace_id"]) == (
        begun,
        agent_request._trace_prefix + begun,
    )
    assert (rs.request_id, rs.trace_id) == (begun, agent_request._trace_prefix + begun)
    assert rs.number is None, "made once, when first read"
    assert ids_read == [(reads_event["request_id"], reads_event["trace_id"])]
    assert reads_event["trace_id"] == agent_request._trace_prefix + reads_event["request_id"]
    assert reads_event["request_id"] != begun


def test_what_json_cannot_hold_goes_the_struct_way(agent_on: None) -> None:
    # a lone surrogate cannot be UTF-8: the request becomes an HttpEvent struct, which
    # the transport's strict encoder skips and counts, instead of a record
    handed: list[Any] = []
    log = RequestLog(10, 10, lambda: None, handed.append)
    agent_scope.set_sink(_ignore, requests=log)
    assert call_asgi(_app(asgi.PerfpulseMiddleware), "/", "G\ud800T") == 405
    assert len(log) == 0
    (event,) = handed
    assert event.method == "G\ud800T" and event.status == 405


def test_setting_one_lazy_id_keeps_the_other(agent_on: None) -> None:
    seen: list[Any] = []

    async def keep(request: Request) -> Response:
        seen.append(current_request())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", keep)])
    app.add_middleware(asgi.PerfpulseMiddleware)
    agent_scope.set_sink(_ignore, requests=RequestLog(10, 10, lambda: None, _ignore))
    call_asgi(app, "/")
    (rs,) = seen
    number = rs.number
    rs.trace_id = "f" * 32
    assert rs.request_id == agent_request.make_ids(number)[0]
    assert rs.trace_id == "f" * 32 and rs.number is None


def test_records_too_big_to_send_are_counted_and_the_sender_goes_idle(agent_on: None) -> None:
    stand_in = StandIn([])
    transport = Transport(
        stand_in.url, "k", {"service": "s"}, max_body_bytes=300, flush_interval_s=0.02
    )
    try:
        agent_scope.set_sink(transport.enqueue, requests=transport.request_sink)
        _requests(_app(asgi.PerfpulseMiddleware), range(1, 4))
        transport.start()
        assert transport.flush(5), "flushed, not spinning on what cannot be sent"
        stats = transport.stats()
        assert (stats.unencodable_events, stats.queued, stats.sent_events) == (3, 0, 0)
        assert stand_in.got == []
    finally:
        transport.shutdown(2)
        stand_in.close()
