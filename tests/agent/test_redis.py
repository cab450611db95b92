"""redis-py instrumentation against a real redis-server on a loopback port."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from conftest import free_port
from perfpulse.agent.redis import instrument_redis, uninstrument_redis
from perfpulse.agent.scope import RequestScope, enter_request, exit_request

Events = list[dict[str, Any]]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A throwaway redis-server (no persistence) for this module's tests."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make system installs it)")
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        probe.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def client(redis_port: int) -> Iterator[redis.Redis]:
    c = redis.Redis(port=redis_port)
    c.flushdb()
    instrument_redis(c, name="sessions")
    yield c
    c.close()


def ops(events: Events) -> list[tuple[str, bool | None]]:
    return [(e["op"], e.get("hit")) for e in events]


def test_each_command_is_timed_and_reads_tell_hit_from_miss(
    client: redis.Redis, captured: Events
) -> None:
    client.set("session:1", "alice")
    assert client.get("session:1") == b"alice"
    assert client.get("session:2") is None
    client.delete("session:1")

    assert ops(captured) == [("set", None), ("get", True), ("get", False), ("del", None)]
    assert all(e["cache"] == "sessions" and 0 < e["duration_ms"] < 1000 for e in captured)
    assert all(abs(e["ts"] - time.time()) < 5 for e in captured)


def test_multi_key_reads_count_each_key(client: redis.Redis, captured: Events) -> None:
    client.mset({"a": 1, "b": 2})
    captured.clear()
    assert client.mget("a", "x", "b", "y") == [b"1", None, b"2", None]
    assert client.exists("a", "b", "z") == 2

    assert ops(captured) == [
        ("mget", True),
        ("mget", False),
        ("mget", True),
        ("mget", False),
        ("exists", True),
        ("exists", True),
        ("exists", False),
    ]
    mget = [e for e in captured if e["op"] == "mget"]
    assert len({e["duration_ms"] for e in mget}) == 1  # an equal share each


def test_hash_reads(client: redis.Redis, captured: Events) -> None:
    client.hset("user:1", mapping={"name": "alice"})
    captured.clear()
    client.hget("user:1", "name")
    client.hget("user:1", "email")
    client.hgetall("user:1")
    client.hgetall("user:2")
    client.hexists("user:1", "name")
    client.hmget("user:1", ["name", "email"])
    assert ops(captured) == [
        ("hget", True),
        ("hget", False),
        ("hgetall", True),
        ("hgetall", False),
        ("hexists", True),
        ("hmget", True),
        ("hmget", False),
    ]


def test_a_request_counts_its_hits_and_misses(client: redis.Redis, captured: Events) -> None:
    client.set("k", "v")
    request = RequestScope(route="/cart", request_id="req-7")
    token = enter_request(request)
    try:
        client.get("k")
        client.get("k")
        client.get("nope")
    finally:
        exit_request(token)
    assert (request.cache_hits, request.cache_misses) == (2, 1)
    assert {(e["route"], e["request_id"]) for e in captured[1:]} == {("/cart", "req-7")}


def test_a_failing_command_is_reported_and_raises_untouched(
    client: redis.Redis, captured: Events
) -> None:
    client.set("name", "alice")
    with pytest.raises(redis.ResponseError):
        client.incr("name")
    assert ops(captured) == [("set", None), ("incrby", None)]


def test_pipelines_report_each_command(client: redis.Redis, captured: Events) -> None:
    client.set("a", 1)
    captured.clear()
    with client.pipeline() as pipe:
        pipe.get("a")
        pipe.get("b")
        pipe.incr("n")
        assert pipe.execute() == [b"1", None, 1]
    with client.pipeline(transaction=False) as pipe:
        pipe.mget("a", "b")
        pipe.execute()
    assert ops(captured) == [
        ("get", True),
        ("get", False),
        ("incrby", None),
        ("mget", True),
        ("mget", False),
    ]


def test_the_async_client_is_instrumented_the_same_way(redis_port: int, captured: Events) -> None:
    async def main() -> list[Any]:
        client = instrument_redis(redis.asyncio.Redis(port=redis_port))
        try:
            await client.set("k", "v")
            got: list[Any] = [await client.get("k"), await client.get("missing")]
            async with client.pipeline() as pipe:
                pipe.get("k")
                got.append(await pipe.execute())
            return got
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [b"v", None, [b"v"]]
    assert ops(captured) == [("set", None), ("get", True), ("get", False), ("get", True)]
    assert {e["cache"] for e in captured} == {"redis"}


def test_instrument_once_and_undo(client: redis.Redis, captured: Events) -> None:
    assert instrument_redis(client, name="other") is client  # already done: unchanged
    client.get("x")
    uninstrument_redis(client)
    client.get("x")
    assert [(e["cache"], e["op"]) for e in captured] == [("sessions", "get")]
