"""Delivering one encoded batch to the collector: a small HTTP/1.1 client of its own.

The exchange is always the same: ``POST {endpoint}/api/v1/events`` with a gzipped
body and fixed headers, then a status line, a few headers and a short body back.
``http.client`` does that with a hundred Python calls and the ``email`` package's
header parser, about 0.35 ms of CPU per batch on the development machine;
writing the request with one ``sendall`` and reading the answer here takes a
third of it. What the answer may be is still all of HTTP/1.1: a body sized by
``Content-Length``, chunked, or ended by closing the connection (HTTP/1.0), and a
connection kept alive or not.

:class:`HttpSender` keeps one connection (TLS for an ``https://`` endpoint, with
the default certificate checks) and opens it again when the collector closed
it. It never raises: a connection error or an answer it cannot read is
``Answer(0)``, which the transport retries.

Example::

    sender = HttpSender("http://127.0.0.1:8600", "ppi_key")
    sender.send(gzipped_batch)        # Answer(status=202, retry_after_s=None)
    sender.close()
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

__all__ = ["Answer", "HttpSender", "Sender"]

_MAX_HEAD = 65_536  # an answer's status line and headers, at most
_MAX_BODY = 1 << 20  # what is read of an answer's body (the collector's are a few bytes)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the collector said: the status (0 for a connection error) and ``Retry-After``."""

    status: int
    retry_after_s: float | None = None


class Sender(Protocol):
    """Delivers one encoded batch. Must not raise: a failure is ``Answer(0)``."""

    def send(self, body: bytes) -> Answer: ...

    def close(self) -> None: ...


class _Unreadable(Exception):
    """The answer is not HTTP/1.x as this client reads it."""


class HttpSender:
    """``POST`` gzipped JSON over one kept-alive HTTP/1.1 connection."""

    def __init__(self, endpoint: str, key: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._timeout_s = timeout_s
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        path = parts.path.rstrip("/") + "/api/v1/events"
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            "Content-Encoding: gzip",
            "User-Agent: perfpulse-python-agent",
        ]
        if key:
            head.append(f"Authorization: Bearer {key}")
        self._head = ("\r\n".join(head) + "\r\nContent-Length: ").encode("latin-1")
        self._sock: socket.socket | None = None
        self._used = False

    def send(self, body: bytes) -> Answer:
        request = b"".join([self._head, str(len(body)).encode(), b"\r\n\r\n", body])
        for _ in range(2):  # a kept-alive connection the server closed: reconnect once
            reused = self._used and self._sock is not None
            try:
                if self._sock is None:
                    self._sock, self._used = self._connect(), False
                self._sock.sendall(request)
                answer, keep = _read_answer(self._sock)
            except (OSError, _Unreadable, ValueError):
                self.close()
                if reused:
                    continue
                return Answer(0)
            self._used = True
            if not keep:
                self.close()
            return answer
        return Answer(0)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> socket.socket:
        # getaddrinfo encodes a str host with the idna codec, whose import (with
        # stringprep and unicodedata) would add 0.3 MB to the process: give it bytes
        host: str | bytes = self._host.encode() if self._host.isascii() else self._host
        sock = socket.create_connection((host, self._port), self._timeout_s)  # type: ignore[arg-type]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._https:
            return sock
        import ssl  # only for an https endpoint

        try:
            return ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise


def _read_answer(sock: socket.socket) -> tuple[Answer, bool]:
    """Read one answer: its status, ``Retry-After``, and whether the connection stays open."""
    reader = _Reader(sock)
    while True:
        status_line = reader.line()
        version, status = _status(status_line)
        headers: dict[bytes, bytes] = {}
        while line := reader.line():
            name, colon, value = line.partition(b":")
            if not colon:
                raise _Unreadable(line[:100])
            headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break  # 1xx (100 Continue, not asked for): another status line follows
    connection = headers.get(b"connection", b"").lower()
    keep = b"close" not in connection and (version != b"HTTP/1.0" or b"keep-alive" in connection)
    if status in (204, 304):
        pass
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        received = 0
        while size := int(reader.line().split(b";", 1)[0], 16):
            received += size
            if received > _MAX_BODY:
                raise _Unreadable(b"body too long")
            reader.exactly(size + 2)  # the chunk and its CRLF
        while reader.line():  # trailers, up to the empty line
            pass
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if length > _MAX_BODY:
            raise _Unreadable(b"body too long")
        reader.exactly(length)
    else:
        reader.until_closed()  # HTTP/1.0 style: the body ends with the connection
        keep = False
    retry = headers.get(b"retry-after")
    return Answer(status, _retry_after(retry.decode("latin-1") if retry else None)), keep


def _status(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Unreadable(line[:100])
    return parts[0], int(parts[1])


class _Reader:
    """Reads lines and sized parts from a socket, keeping what it received beyond them."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        data = self.sock.recv(65_536)
        if not data:
            raise _Unreadable(b"connection closed mid-answer")
        self.buffer += data

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise _Unreadable(b"line too long")
            self._more()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def exactly(self, size: int) -> None:
        while len(self.buffer) < size:
            self._more()
        self.buffer = self.buffer[size:]

    def until_closed(self) -> None:
        received = len(self.buffer)
        while data := self.sock.recv(65_536):
            received += len(data)
            if received > _MAX_BODY:
                raise _Unreadable(b"body too long")
        self.buffer = b""


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to the backoff
    return seconds if 0 <= seconds <= 3600 else None
