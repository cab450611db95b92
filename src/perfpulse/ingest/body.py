"""Reading a request body within a size limit, inflating gzip safely.

The limit applies to the body as received *and* as inflated: a declared
``Content-Length`` over the limit is refused before a byte is read, a streamed
body is cut off as soon as it passes the limit, and gzip is inflated in bounded
steps so a gzip bomb is refused after at most ``limit + 1`` bytes of output.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request


class BodyError(Exception):
    """A body that cannot be accepted: ``status`` and a ``reason`` for counters."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BodyError(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise BodyError(413, "too_large", f"body of {size} bytes exceeds {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise BodyError(415, "bad_encoding", f"unsupported Content-Encoding {encoding!r}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyError(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        return inflate(body, limit)
    return body


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
