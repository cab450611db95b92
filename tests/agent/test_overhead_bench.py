"""The agent benchmark's turn-taking measurement (bench.agent_overhead --alternate):
the two apps really take turns, and a variant's window is set against its neighbours."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bench.agent_app import Alternating
from bench.agent_overhead import alternated


class Counting:
    """An ASGI app that answers 200 and counts its requests."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _get(app: Any, path: str, query: bytes = b"") -> bytes:
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        body.extend(message.get("body", b""))

    await app({"type": "http", "path": path, "query_string": query}, receive, send)
    return bytes(body)


def test_the_bare_and_the_measured_app_take_turns() -> None:
    bare, measured = Counting(), Counting()
    app = Alternating(bare, measured)

    async def run() -> list[list[float]]:
        await _get(app, "/_alternate/start", b"window=0.02")
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.5
        while loop.time() < until:
            await _get(app, "/items/1")
            await asyncio.sleep(0)  # lets the turn pass
        windows: list[list[float]] = json.loads(await _get(app, "/_alternate/stop"))
        return windows

    windows = asyncio.run(run())
    assert len(windows) >= 6
    assert [w[0] for w in windows] == [i % 2 for i in range(len(windows))], "bare first, then turns"
    assert sum(int(w[1]) for w in windows if w[0] == 0) == bare.calls
    assert sum(int(w[1]) for w in windows if w[0] == 1) == measured.calls
    assert bare.calls > 0 and measured.calls > 0
    # the process's CPU includes the loop's (read a moment apart: within a millisecond)
    assert all(w[2] >= 0 and w[3] >= w[2] - 0.001 for w in windows)
    assert [w[4] for w in windows] == sorted(w[4] for w in windows)


def test_a_measured_window_is_set_against_the_mean_of_its_neighbours() -> None:
    # [app, requests, loop CPU s, process CPU s, end]; the first and last are left out
    windows = [
        [0, 5, 1.0, 1.0, 0.0],  # partly idle: left out
        [1, 100, 0.0110, 0.0112, 0.1],  # no bare window before it among the kept: unpaired
        [0, 100, 0.0100, 0.0100, 0.2],  # 100 µs a request
        [1, 100, 0.0112, 0.0115, 0.3],  # 112 against (100 + 104) / 2: +10
        [0, 100, 0.0104, 0.0104, 0.4],  # 104
        [1, 200, 0.0220, 0.0224, 0.5],  # 110 against (104 + 100) / 2: +8
        [0, 100, 0.0100, 0.0100, 0.6],
        [1, 1, 5.0, 5.0, 0.7],  # partly idle: left out
    ]
    result = alternated("perfpulse", windows)
    assert result.pairs == 2
    assert result.loop_added == pytest.approx([10.0, 8.0])
    assert result.requests == 400
    # the agents' threads: the process's CPU beyond the loop's, per measured request
    assert result.other_us == pytest.approx((0.0002 + 0.0003 + 0.0004) / 400 * 1e6)
    assert result.added_us == pytest.approx(9.0 + result.other_us)
    assert result.bare_loop_us == pytest.approx(100.0)
    with pytest.raises(RuntimeError, match="no complete windows"):
        alternated("perfpulse", windows[:3])
