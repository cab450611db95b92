"""The floors the collector is measured against: ASGI apps that only read and
discard a request body, served by uvicorn with the collector's loop and HTTP
settings (``auto``: uvloop and httptools when installed).

- ``raw``: a bare ASGI callable, the least any ASGI server stack can do;
- ``starlette``: the same endpoint as a Starlette route, the framework the
  collector is built on (used for the memory baseline and as a second floor).

Both answer ``202`` with a small JSON body, as the collector does::

    python -m uvicorn bench.floor:raw --port 8700 --no-access-log
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_BODY = b'{"accepted":0,"dropped":0}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, discard it, answer 202 (``/healthz`` answers 200)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    status = 200 if scope["path"] == "/healthz" else 202
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


async def _discard(request: Request) -> Response:
    async for _ in request.stream():
        pass
    return JSONResponse({"accepted": 0, "dropped": 0}, status_code=202)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


starlette = Starlette(
    routes=[
        Route("/healthz", _healthz),
        Route("/api/v1/events", _discard, methods=["POST"]),
        Route("/api/v1/rum", _discard, methods=["POST"]),
    ]
)
