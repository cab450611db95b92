"""Reading a request body within a size limit, inflating gzip safely.

The limit applies to the body as received *and* as inflated: a declared
``Content-Length`` over the limit is refused before a byte is read, a streamed
body is cut off as soon as it passes the limit, and gzip is inflated in bounded
steps so a gzip bomb is refused after at most ``limit + 1`` bytes of output.

A pure ASGI endpoint reads with :func:`read_asgi_body` straight from ``receive``
(or, to spare a coroutine, checks the headers with :func:`body_encoding`, awaits
the first message itself and takes the body from it with :func:`first_body`);
a Starlette endpoint reads with :func:`read_body` from ``request.stream()``.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from starlette.types import Message, Receive


class BodyError(Exception):
    """A body that cannot be accepted: ``status`` and a ``reason`` for counters."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class OtlpError(ValueError):
    """A body that is not a valid OTLP message (a 400)."""


class Disconnected(Exception):
    """The client went away before its body was read: there is no one to answer."""


def body_encoding(content_length: str | None, content_encoding: str | None, limit: int) -> str:
    """The body's encoding, once its two headers pass; a declared length over the
    limit is refused before a byte is read."""
    if content_length is not None:
        try:
            size = int(content_length)
        except ValueError:
            raise BodyError(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise BodyError(413, "too_large", f"body of {size} bytes exceeds {limit} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise BodyError(415, "bad_encoding", f"unsupported Content-Encoding {encoding!r}")
    return encoding


def _too_large(limit: int) -> BodyError:
    return BodyError(413, "too_large", f"body exceeds {limit} bytes")


async def read_body(
    content_length: str | None,
    content_encoding: str | None,
    chunks: AsyncIterator[bytes],
    limit: int,
) -> bytes:
    """The body of a request with these two headers, at most ``limit`` bytes."""
    encoding = body_encoding(content_length, content_encoding, limit)
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return _decoded(parts[0] if len(parts) == 1 else b"".join(parts), encoding, limit)


async def read_asgi_body(
    content_length: str | None, content_encoding: str | None, receive: Receive, limit: int
) -> bytes:
    """:func:`read_body` of an ASGI ``http`` request, read from ``receive`` itself:
    a body that comes in one message (a beacon, the usual batch) costs one call."""
    encoding = body_encoding(content_length, content_encoding, limit)
    message = await receive()
    body = first_body(message, encoding, limit)
    if body is None:
        body = await rest_of_body(message, receive, encoding, limit)
    return body


def first_body(message: Message, encoding: str, limit: int) -> bytes | None:
    """The body, when ``message``, the request's first, holds all of it (inflated
    if ``encoding`` is gzip); None when more messages follow."""
    if message["type"] == "http.disconnect":
        raise Disconnected
    if message.get("more_body", False):
        return None
    return _decoded(message.get("body", b""), encoding, limit)


async def rest_of_body(message: Message, receive: Receive, encoding: str, limit: int) -> bytes:
    """The body of a request whose first ``message`` said more would follow."""
    body: bytes = message.get("body", b"")
    parts, received = [body], len(body)
    while True:
        if received > limit:
            raise _too_large(limit)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        received += len(chunk)
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return _decoded(b"".join(parts), encoding, limit)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """A whole body as received, checked against the limit and inflated if gzip."""
    if len(body) > limit:
        raise _too_large(limit)
    return inflate(body, limit) if encoding == "gzip" else body


def inflate(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data``, refusing output past ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, "bad_gzip", f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyError(413, "too_large", f"inflated body exceeds {limit} bytes")
    if not inflater.eof:
        raise BodyError(400, "bad_gzip", "gzip body is truncated")
    return out
