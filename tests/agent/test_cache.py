"""PerformanceCache: LRU and TTL, single flight, statistics and events."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from perfpulse.agent.scope import RequestScope, enter_request, exit_request
from perfpulse.cache import PerformanceCache

Events = list[dict[str, Any]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reading_a_key_protects_it_from_eviction() -> None:
    cache = PerformanceCache(maxsize=3, ttl=60, name="lru")
    for key in "abc":
        cache.set(key, key.upper())
    assert cache.get("a") == "A"  # a is now the most recently used; b the least
    cache.set("d", "D")
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (True, False, True, True)
    cache.get("c")
    cache.set("e", "E")  # a was used before c: a goes
    assert sorted(k for k in "abcde" if k in cache) == ["c", "d", "e"]
    assert cache.stats().evictions == 2


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = PerformanceCache(maxsize=10, ttl=30, name="ttl", timer=clock)
    cache.set("k", 1)
    clock.now += 29.9
    assert cache.get("k") == 1
    clock.now += 0.2  # reading did not extend the TTL
    assert cache.get("k", "gone") == "gone"
    cache.set("other", 2)  # writing drops the expired entry
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.evictions) == (1, 1, 1, 0)
    assert len(cache) == 1


def test_expired_entries_go_before_any_live_one_is_evicted() -> None:
    clock = FakeClock()
    cache = PerformanceCache(maxsize=2, ttl=10, name="ttl", timer=clock)
    cache.set("old", 1)
    clock.now += 5
    cache.set("live", 2)
    clock.now += 6  # old expired, live has 4 s left
    cache.set("new", 3)
    assert ("live" in cache, "new" in cache) == (True, True)
    assert (cache.stats().evictions, cache.stats().expirations) == (0, 1)


def test_stats_give_the_hit_ratio() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60, name="s")
    assert cache.stats().hit_ratio is None
    cache.set("a", None)  # None is a value like any other
    for key in ("a", "a", "a", "b"):
        cache.get(key)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.maxsize) == (3, 1, 1, 10)
    assert stats.hit_ratio == 0.75
    cache.clear()
    assert (len(cache), cache.stats().evictions) == (0, 0)  # clearing is not evicting
    assert cache.delete("a") is False


def test_reads_loads_and_evictions_are_reported(captured: Events) -> None:
    cache = PerformanceCache(maxsize=1, ttl=60, name="users")

    def load_alice() -> str:
        time.sleep(0.02)
        return "alice"

    request = RequestScope(route="/users/{id}", request_id="req-3")
    token = enter_request(request)
    try:
        assert cache.get_or_load("u1", load_alice) == "alice"
        assert cache.get_or_load("u1", lambda: "not called") == "alice"
        cache.set("u2", "bob")  # evicts u1
        assert cache.delete("u2") is True
    finally:
        exit_request(token)

    assert [(e["op"], e.get("hit"), e.get("count", 1)) for e in captured] == [
        ("get", False, 1),
        ("load", None, 1),
        ("get", True, 1),
        ("set", None, 1),
        ("evict", None, 1),
        ("delete", None, 1),
    ]
    assert {(e["cache"], e["route"], e["request_id"]) for e in captured} == {
        ("users", "/users/{id}", "req-3")
    }
    load = captured[1]
    assert load["duration_ms"] >= 15
    assert (request.cache_hits, request.cache_misses) == (1, 1)
    assert cache.stats().load_ms_total == pytest.approx(load["duration_ms"])


def test_nothing_is_sent_while_the_agent_is_off() -> None:
    cache = PerformanceCache(maxsize=1, ttl=60)
    request = RequestScope(route="/")
    token = enter_request(request)
    try:
        cache.get("x")
    finally:
        exit_request(token)
    assert request.cache_misses == 1  # the request still counts


def test_a_cold_key_is_loaded_once_for_ten_threads() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60, name="flight")
    calls = 0
    start = threading.Barrier(10)

    def load() -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        return {"value": 42}

    results: list[dict[str, int]] = []

    def worker() -> None:
        start.wait()
        results.append(cache.get_or_load("key", load))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert calls == 1
    assert len(results) == 10 and all(r is results[0] for r in results)
    stats = cache.stats()
    assert (stats.loads, stats.hits + stats.misses) == (1, 10)


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60)
    calls = 0
    start = threading.Barrier(5)

    def load() -> int:
        nonlocal calls
        calls += 1
        time.sleep(0.1)
        raise LookupError("backend down")

    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            cache.get_or_load("key", load)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert calls == 1 and len(errors) == 5
    assert cache.get_or_load("key", lambda: 7) == 7  # the failure was not cached
    assert (cache.stats().loads, cache.stats().load_errors) == (2, 1)


def test_the_decorator_caches_by_arguments_per_function() -> None:
    cache = PerformanceCache(maxsize=100, ttl=60, name="fn")
    calls: list[tuple[str, int]] = []

    @cache.cached
    def square(x: int) -> int:
        calls.append(("square", x))
        return x * x

    @cache
    def double(x: int) -> int:
        calls.append(("double", x))
        return 2 * x

    assert [square(3), square(3), double(3), double(3), square(x=3)] == [9, 9, 6, 6, 9]
    assert calls == [("square", 3), ("double", 3), ("square", 3)]  # x=3 is another key
    assert square.__name__ == "square"
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 3)


def test_the_class_is_a_decorator_too() -> None:
    calls = 0

    @PerformanceCache(maxsize=10, ttl=60, name="rates")
    def rate(currency: str) -> float:
        nonlocal calls
        calls += 1
        return 1.1

    assert rate("EUR") == rate("EUR") == 1.1
    assert calls == 1


def test_coroutines_are_loaded_once_per_cold_key() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60, name="async")
    calls = 0

    @cache.cached
    async def profile(user_id: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"id": user_id}

    async def main() -> list[dict[str, int]]:
        first = await asyncio.gather(*(profile(1) for _ in range(10)))
        return [*first, await profile(1), await profile(2)]

    results = asyncio.run(main())
    assert calls == 2
    assert results[:11] == [{"id": 1}] * 11 and results[11] == {"id": 2}
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (1, 11, 2)


def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "v"

    async def main() -> tuple[str, str]:
        first = asyncio.create_task(cache.aget_or_load("k", load))
        second = asyncio.create_task(cache.aget_or_load("k", load))
        await asyncio.sleep(0.01)
        first.cancel()  # the caller that started the load goes away
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second, await cache.aget_or_load("k", load)

    assert asyncio.run(main()) == ("v", "v")
    assert calls == 1


def test_an_async_load_error_reaches_every_waiter() -> None:
    cache = PerformanceCache(maxsize=10, ttl=60)

    async def load() -> str:
        await asyncio.sleep(0.02)
        raise LookupError("down")

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(cache.aget_or_load("k", load) for _ in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    assert [type(o) for o in outcomes] == [LookupError] * 3
    assert "k" not in cache


@pytest.mark.parametrize(
    "kwargs", [{"maxsize": 0, "ttl": 1}, {"maxsize": 1, "ttl": 0}, {"maxsize": 1, "name": ""}]
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PerformanceCache(**kwargs)
