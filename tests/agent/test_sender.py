"""The agent's HTTP/1.1 client against a raw TCP server that answers with scripted
bytes: sized, chunked and close-delimited bodies, kept-alive and closed
connections, answers it cannot read, and nothing listening."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from conftest import free_port
from perfpulse.agent.sender import Answer, HttpSender


@dataclass
class Request:
    connection: int  # which accepted connection it came on (1, 2, ...)
    head: list[bytes]
    body: bytes


@dataclass
class Scripted:
    """Answers each request with the next scripted bytes; ``None`` closes without a word.
    An answer followed by ``b"<close>"`` closes the connection after it."""

    answers: list[bytes | None]
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        connections = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            connections += 1
            threading.Thread(target=self._serve, args=(conn, connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in lines
                    if line.lower().startswith(b"content-length")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(Request(number, lines, body))
                answer = self.answers.pop(0) if self.answers else None
                if answer is None:
                    return
                closing = answer.endswith(b"<close>")
                conn.sendall(answer.removesuffix(b"<close>"))
                if closing:
                    return

    def close(self) -> None:
        self.listener.close()


OK = b'HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"accepted":1}'


@pytest.fixture
def make() -> Iterator[list[Scripted | HttpSender]]:
    """Closes the servers and senders a test made with :func:`serve`."""
    made: list[Scripted | HttpSender] = []
    yield made
    for thing in made:
        thing.close()


def serve(made: list[Scripted | HttpSender], *answers: bytes | None) -> tuple[Scripted, HttpSender]:
    server = Scripted(list(answers))
    sender = HttpSender(f"http://127.0.0.1:{server.port}/base/", "ppi_key", timeout_s=5)
    made += [server, sender]
    return server, sender


def test_the_request_and_a_kept_alive_connection(make: list[Scripted | HttpSender]) -> None:
    server, sender = serve(make, OK, OK)
    assert sender.send(b"\x1f\x8b first") == Answer(202)
    assert sender.send(b"second") == Answer(202)
    first, second = server.requests
    assert first.head[0] == b"POST /base/api/v1/events HTTP/1.1"
    assert {b"Host: 127.0.0.1:%d" % server.port, b"Authorization: Bearer ppi_key"} <= set(
        first.head
    )
    assert b"Content-Encoding: gzip" in first.head and b"Content-Length: 8" in first.head
    assert (first.body, second.body) == (b"\x1f\x8b first", b"second")
    assert (first.connection, second.connection) == (1, 1), "one connection for both"


def test_chunked_answers_and_retry_after(make: list[Scripted | HttpSender]) -> None:
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    server, sender = serve(make, chunked, OK)
    assert sender.send(b"a") == Answer(503, 7.0)
    assert sender.send(b"b") == Answer(202), "the chunked body was read to its end"
    assert [r.connection for r in server.requests] == [1, 1]


def test_closing_answers_open_a_new_connection(make: list[Scripted | HttpSender]) -> None:
    http10 = b"HTTP/1.0 200 OK\r\n\r\nthe body ends with the connection<close>"
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}<close>"
    server, sender = serve(make, http10, close, OK)
    assert [sender.send(b"x").status for _ in range(3)] == [200, 200, 202]
    assert [r.connection for r in server.requests] == [1, 2, 3]


def test_a_kept_alive_connection_the_server_dropped_is_opened_again(
    make: list[Scripted | HttpSender],
) -> None:
    server, sender = serve(make, OK, None, OK)  # the second request finds the connection closed
    assert sender.send(b"1") == Answer(202)
    assert sender.send(b"2") == Answer(202), "retried once on a new connection"
    assert [r.connection for r in server.requests] == [1, 1, 2]


def test_what_cannot_be_read_or_reached_is_status_0(make: list[Scripted | HttpSender]) -> None:
    _, sender = serve(make, b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Le<close>", OK)
    assert sender.send(b"1") == Answer(0), "not HTTP"
    assert sender.send(b"2") == Answer(0), "cut in the middle of the headers"
    assert sender.send(b"3") == Answer(202), "and the next batch goes through"
    nobody = HttpSender(f"http://127.0.0.1:{free_port()}", "k", timeout_s=2)
    assert nobody.send(b"x") == Answer(0)
