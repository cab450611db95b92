"""Real receivers for notification tests: an HTTP server on loopback that records
what webhooks POST (and can answer with errors), and an aiosmtpd SMTP server."""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import free_port, serve_app


class Receiver:
    """Records what is POSTed; answers with the queued status codes, then 200."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    async def hook(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.bodies.setdefault(request.path_params["name"], []).append(body)
        return JSONResponse({"ok": status == 200}, status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{name}", self.hook, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serve_app(r.app()) as url:
        yield r, url


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()
