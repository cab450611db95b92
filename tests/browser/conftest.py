"""Real headless Chromium, a real collector and a deterministic test site.

Session-wide: one ``perfpulse serve`` subprocess (free port, temporary data
dir, the three keys in its environment, the test site as its one allowed
origin), the test site and a "third-party" site on two more loopback ports, and
Debian's Chromium driven by Playwright. Per test: a fresh browser context, whose
beacon requests are recorded as the network saw them (``Tab.beacons``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .website import Relay, Site

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PUBLIC_KEY = "ppp_browser_public_key_0123456789"
INGEST_KEY = "ppi_browser_ingest_key_0123456789"
READ_TOKEN = "ppr_browser_read_token_0123456789"
RUM_JS = Path(__file__).parents[2] / "src" / "perfpulse" / "web" / "static" / "rum.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """``perfpulse serve`` as a subprocess, and its read API."""

    def __init__(self, data_dir: Path, allowed_origin: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "collector.log"
        env = {
            **os.environ,
            "PERFPULSE_PUBLIC_KEY": PUBLIC_KEY,
            "PERFPULSE_INGEST_KEY": INGEST_KEY,
            "PERFPULSE_READ_TOKEN": READ_TOKEN,
            "PERFPULSE_ALLOWED_ORIGINS": allowed_origin,
        }
        cmd = [
            sys.executable,
            "-m",
            "perfpulse.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        # What the pages send to: the collector, through a wire recorder.
        self.relay = Relay(self.url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"collector not ready: {self.log.read_text()}")

    def views(self, since: float) -> list[dict[str, Any]]:
        r = httpx.get(
            f"{self.url}/api/v1/rum/views",
            params={"from": since, "to": time.time() + 60, "limit": 100},
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return list(r.json()["views"])

    def view(self, view_id: str, since: float, timeout: float = 10.0) -> dict[str, Any]:
        """The stored page view ``view_id``, once the writer has stored it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [v for v in self.views(since) if v["id"] == view_id]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"view {view_id} was not stored; log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.relay.stop()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Tab:
    """One page in a fresh browser context, with its beacons as sent on the wire."""

    def __init__(self, page: Page, site: Site, collector: Collector) -> None:
        self.page = page
        self.site = site
        self.collector = collector
        self.started = time.time() - 1
        self.relay = collector.relay
        with self.relay.lock:
            self.relay.beacons.clear()

    @property
    def beacons(self) -> list[bytes]:
        with self.relay.lock:
            return list(self.relay.beacons)

    def open(self, path: str) -> None:
        """Load ``path``; the load event also waits for the async agent to run."""
        self.page.goto(self.site.url + path, wait_until="load")

    def truth(self) -> dict[str, Any]:
        return dict(self.page.evaluate("() => ({...__truth, ...__truth.now()})"))

    def wait_for(self, js: str, timeout: float = 10_000) -> None:
        self.page.wait_for_function(js, timeout=timeout)

    def hide(self) -> None:
        """Make the page hidden the way a tab switch does, without unloading it."""
        self.page.evaluate(
            """() => {
                Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )

    def leave(self) -> None:
        """Navigate away: the real unload path (visibilitychange, pagehide)."""
        self.page.goto(self.site.url + "/blank.html", wait_until="load")

    def sent(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` beacons went out (then a little longer, so a
        duplicate would show); return all of them as JSON."""
        deadline = time.monotonic() + timeout
        while len(self.beacons) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return [json.loads(b) for b in self.beacons]


@pytest.fixture(scope="package")
def site() -> Iterator[Site]:
    third = Site({}).start()
    main = Site({"__THIRD__": third.url, "__KEY__": PUBLIC_KEY}).start()
    try:
        yield main
    finally:
        main.stop()
        third.stop()


@pytest.fixture(scope="package")
def collector(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    assert RUM_JS.is_file(), "build the agent first: cd browser && npm ci && npm run build"
    c = Collector(tmp_path_factory.mktemp("collector") / "data", site.url)
    site.substitutions["__COLLECTOR__"] = c.relay.url
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def tab(browser: Browser, site: Site, collector: Collector) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield Tab(context.new_page(), site, collector)
    finally:
        context.close()
