"""The WSGI middleware: Flask on werkzeug's server reporting to a real collector,
and a bare WSGI application with its own route function."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
from flask import Flask, Response, abort, stream_with_context

from conftest import Server
from perfpulse.agent import flush
from perfpulse.agent.request import UNMATCHED
from perfpulse.agent.scope import current_request
from perfpulse.agent.wsgi import PerfpulseWSGIMiddleware, instrument_flask

from .conftest import Start, serve_wsgi

FINGERPRINT = "SELECT * FROM lines WHERE invoice_id = ?"


class LedgerLocked(Exception):
    pass


def shop() -> Flask:
    app = Flask(__name__)
    seen_routes: list[str | None] = []
    app.config["seen_routes"] = seen_routes

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/invoices/<int:invoice_id>/lines")
    def lines(invoice_id: int) -> dict[str, int]:
        rs = current_request()
        assert rs is not None
        seen_routes.append(rs.route)
        for _ in range(5):
            rs.add_query(FINGERPRINT, 1.5)
        return {"id": invoice_id}

    @app.get("/ledger/<name>")
    def ledger(name: str) -> str:
        raise LedgerLocked(name)

    @app.get("/down")
    def down() -> str:
        abort(503)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            rs = current_request()
            assert rs is not None
            rs.add_query("SELECT 1", 4.0)  # while streaming: still this request
            yield "a" * 10
            yield "b" * 20

        return Response(stream_with_context(chunks()))

    return instrument_flask(app)


def test_flask_on_werkzeug_stores_rules_as_templates_and_errors(
    server: Server, agent: Start
) -> None:
    agent(endpoint=server.url, n_plus_one_threshold=5)
    app = shop()
    with serve_wsgi(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/users/5").status_code == 200
        assert client.get("/invoices/77/lines").status_code == 200
        assert client.get("/ledger/main").status_code == 500
        assert client.get("/down").status_code == 503
        assert client.get("/stream").text == "a" * 10 + "b" * 20
        assert client.post("/users/5", content=b"xyz").status_code == 405
        assert client.get("/nothing/12345").status_code == 404
    assert flush(timeout_s=10)
    server.wait_stored(count=7, service="shop")
    assert server.stop() == 0

    rows = server.rows(
        "SELECT route, method, status, exception, db_count, response_bytes, request_bytes"
        " FROM http ORDER BY ts"
    )
    assert [r[:4] for r in rows] == [
        ("/users/{user_id}", "GET", 200, None),
        ("/invoices/{invoice_id}/lines", "GET", 200, None),
        ("/ledger/{name}", "GET", 500, f"{__name__}.LedgerLocked"),
        ("/down", "GET", 503, None),
        ("/stream", "GET", 200, None),
        (UNMATCHED, "POST", 405, None),  # no rule for POST: Flask never matched
        (UNMATCHED, "GET", 404, None),
    ]
    assert rows[1][4] == 5
    assert rows[4][4:6] == (1, 30), "queries and bytes while streaming belong to the request"
    assert rows[5][6] == 3
    assert app.config["seen_routes"] == ["/invoices/{invoice_id}/lines"]

    assert server.rows("SELECT route, fingerprint, count, total_ms FROM n_plus_one") == [
        ("/invoices/{invoice_id}/lines", FINGERPRINT, 5, 7.5)
    ]
    assert server.rows("SELECT type, message, route FROM error") == [
        (f"{__name__}.LedgerLocked", "main", "/ledger/{name}")
    ]


StartResponse = Callable[..., Any]


def bare(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/explode":
        raise KeyError("gone")
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"made"]


def test_bare_wsgi_app_uses_its_route_function(captured: list[dict[str, Any]]) -> None:
    def route(environ: dict[str, Any]) -> str | None:
        return "/things/{id}" if environ["PATH_INFO"].startswith("/things/") else None

    app = PerfpulseWSGIMiddleware(bare, route=route)
    with serve_wsgi(app) as url:
        assert httpx.post(f"{url}/things/9", content=b"12345").status_code == 201
        assert httpx.get(f"{url}/explode").status_code == 500  # werkzeug's own error page
    http = [e for e in captured if e["kind"] == "http"]
    assert [(e["route"], e["status"], e.get("exception")) for e in http] == [
        ("/things/{id}", 201, None),
        (UNMATCHED, 500, "KeyError"),
    ]
    assert http[0]["request_bytes"] == 5 and http[0]["response_bytes"] == 4
    assert [e["type"] for e in captured if e["kind"] == "error"] == ["KeyError"]
