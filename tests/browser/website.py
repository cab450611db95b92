"""The test web site: deterministic pages and assets on a loopback port.

Pages live in ``pages/``; ``__COLLECTOR__``, ``__KEY__`` and ``__THIRD__`` in
them are replaced when served. Assets of a known byte size are made on the fly:

``/asset/<name>.<ext>?bytes=N&delay=MS&cache=1&ms=MS&w=W&h=H``

- ``bytes``: the exact body length (a PNG is padded with an ancillary chunk);
- ``delay``: the response waits that long before its first byte;
- ``cache=1``: ``Cache-Control: max-age=3600`` (else ``no-store``), so a
  second fetch is served from the HTTP cache;
- ``ms`` (``.js`` only): the script busy-loops that long when it runs;
- ``w``/``h`` (``.png`` only): image dimensions.

Every response carries ``Timing-Allow-Origin: *``, so a page on another port
(the "third party") sees sizes and phases too.
"""

from __future__ import annotations

import http.client
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PAGES = Path(__file__).parent / "pages"
TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript",
    "css": "text/css",
    "woff2": "font/woff2",
    "png": "image/png",
    "json": "application/json",
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, size: int = 0) -> bytes:
    """A solid-colour RGB PNG, padded to ``size`` bytes when that is larger."""
    row = b"\x00" + b"\x30\x80\xd0" * width
    head = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    body = _chunk(b"IDAT", zlib.compress(row * height, 9)) + _chunk(b"IEND", b"")
    pad = size - len(head) - len(body) - 12
    if pad >= 0:  # an ancillary, private chunk every decoder skips
        head += _chunk(b"ppAd", b"\x00" * pad)
    return head + body


def asset(ext: str, q: dict[str, str]) -> bytes:
    size = int(q.get("bytes", "0"))
    if ext == "png":
        return png(int(q.get("w", "100")), int(q.get("h", "100")), size)
    if ext == "js":
        ms = int(q.get("ms", "0"))
        code = (
            f"(function(){{var e=performance.now()+{ms};while(performance.now()<e){{}}}})();\n"
            if ms
            else ""
        )
        body = code.encode()
        return body + b"//" + b"x" * max(0, size - len(body) - 2)
    if ext == "css":
        return b"/*" + b"x" * max(0, size - 4) + b"*/"
    if ext == "json":
        return b'{"p":"' + b"x" * max(0, size - 8) + b'"}'
    return bytes(i % 251 for i in range(size))


class Site:
    """A threaded HTTP server for the pages and assets; ``url`` is its origin."""

    def __init__(self, substitutions: dict[str, str]) -> None:
        self.substitutions = substitutions
        subs = substitutions

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                path = parts.path
                ext = path.rsplit(".", 1)[-1] if "." in path else "html"
                if path.startswith("/asset/"):
                    time.sleep(int(q.get("delay", "0")) / 1000)
                    body = asset(ext, q)
                    cache = "public, max-age=3600" if q.get("cache") == "1" else "no-store"
                else:
                    file = PAGES / (path.lstrip("/").split("/")[0] or "index.html")
                    if path.startswith("/spa/"):
                        file = PAGES / "spa.html"
                    if not file.suffix:
                        file = file.with_suffix(".html")
                    if not file.is_file():
                        self.send_error(404)
                        return
                    text = file.read_text()
                    for name, value in subs.items():
                        text = text.replace(name, value)
                    body = text.encode()
                    cache = "no-store"
                self.send_response(200)
                self.send_header("Content-Type", TYPES.get(ext, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.send_header("Timing-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Site:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Relay:
    """A pass-through in front of the collector that keeps what crossed the wire.

    The browser sends to the relay; the relay forwards every request unchanged
    (method, path, body, ``Origin`` and ``Content-Type``) to the collector and
    hands back its answer. ``beacons`` holds the raw bodies of the
    ``POST /api/v1/rum`` requests, so a test can count them and measure their
    size — Chromium's DevTools protocol loses requests sent while a document
    unloads, which is exactly when beacons go out.
    """

    def __init__(self, upstream: str) -> None:
        relay = self
        self.beacons: list[bytes] = []
        self.lock = threading.Lock()
        host, port = upstream.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path.startswith("/api/v1/rum"):
                    with relay.lock:
                        relay.beacons.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARD}
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for k, v in answer.getheaders():
                        if k.lower() not in (
                            "content-length",
                            "transfer-encoding",
                            "connection",
                            "date",
                            "server",
                        ):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_OPTIONS = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_FORWARD = {"origin", "content-type", "content-encoding", "authorization", "accept"}
