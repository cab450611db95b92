"""PerformanceCache: an in-process TTL + LRU cache that reports how well it works.

Example::

    from perfpulse.cache import PerformanceCache

    users = PerformanceCache(maxsize=10_000, ttl=60, name="users")

    @users.cached                      # or @PerformanceCache(1000, 60, name="rates")
    def load_user(user_id: int) -> User:
        return db.fetch_user(user_id)

    async def profile(user_id: int) -> Profile:   # coroutines are cached the same way
        return await users.aget_or_load(("profile", user_id), lambda: api.profile(user_id))

    users.stats().hit_ratio

Semantics:

- **TTL and size**: an entry lives ``ttl`` seconds from when it was stored; when
  ``maxsize`` entries are stored, storing another evicts the *least recently
  used* one (reads count as use), after dropping expired entries. It is built
  on :class:`cachetools.TTLCache`, behind a lock, so it is safe across threads.
- **Single flight**: :meth:`~PerformanceCache.get_or_load` (and the decorator)
  calls the loader once for a cold key however many threads ask at the same
  time; the others wait for that result (or its exception, which is not
  cached). :meth:`~PerformanceCache.aget_or_load` does the same for
  coroutines in one event loop; the load runs as its own task, so a caller
  cancelled while waiting does not cancel it for the others.
- **Decorator keys**: the function's qualified name plus its positional and
  keyword arguments, which must be hashable; ``f(1)`` and ``f(x=1)`` are two keys.

What it reports (``cache`` events, once the agent is initialized, with the
request's route and id when inside one): every read as ``op="get"`` with
``hit`` true or false; every loader call as ``op="load"`` with its
``duration_ms``; entries evicted to make room as ``op="evict"`` with their
``count`` (expired entries are counted in :meth:`~PerformanceCache.stats`, not
sent); explicit ``set`` and ``delete``. Every read also goes to the request's
:class:`~perfpulse.agent.scope.RequestScope` (``cache_hits``/``cache_misses``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from cachetools import TTLCache

from perfpulse.agent import scope as _scope

__all__ = ["CacheStats", "PerformanceCache"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_MISSING: Any = object()

if TYPE_CHECKING:
    _Base = TTLCache[Hashable, Any, float]
else:
    _Base = TTLCache


class _Store(_Base):
    """A TTLCache that counts what it drops: evicted (LRU, for room) and expired."""

    evicted = 0
    expired = 0

    def popitem(self) -> tuple[Hashable, Any]:
        item = super().popitem()
        self.evicted += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[Hashable, Any]]:
        items = super().expire(time)
        self.expired += len(items)
        return items


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made."""

    hits: int
    misses: int
    evictions: int
    expirations: int
    loads: int
    load_errors: int
    load_ms_total: float
    size: int
    maxsize: int

    @property
    def hit_ratio(self) -> float | None:
        """Hits over reads, or ``None`` before the first read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else None


class _Flight:
    """One load in progress, that other threads wait for."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class PerformanceCache:
    """A TTL + LRU cache with single-flight loading and hit/miss reporting.

    ``maxsize`` entries at most, each kept ``ttl`` seconds; ``name`` names it in
    the ``cache`` events; ``timer`` is the clock for the TTL (seconds,
    monotonic; inject a fake one in tests). See the module for the semantics.
    """

    def __init__(
        self,
        maxsize: int = 1024,
        ttl: float = 300.0,
        *,
        name: str = "default",
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize!r}")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, not {ttl!r}")
        if not 1 <= len(name) <= 200:
            raise ValueError("name must be 1 to 200 characters")
        self.name = name
        self.maxsize = maxsize
        self.ttl = ttl
        self._store = _Store(maxsize, ttl, timer)
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}
        self._hits = self._misses = self._loads = self._load_errors = 0
        self._load_ms = 0.0

    def __repr__(self) -> str:
        return f"PerformanceCache(name={self.name!r}, maxsize={self.maxsize}, ttl={self.ttl})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is stored and fresh; not a read (no stats, no LRU use)."""
        with self._lock:
            return key in self._store

    # --- reads and writes -------------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored for ``key`` (a use, for LRU), or ``default``; counted."""
        start = time.perf_counter()
        with self._lock:
            value = self._read(key)
        self._report_read(value is not _MISSING, start)
        return default if value is _MISSING else value

    def set(self, key: Hashable, value: Any) -> None:
        """Store ``value`` for ``key`` for ``ttl`` seconds (evicting the LRU entry if full)."""
        start = time.perf_counter()
        with self._lock:
            evicted = self._write(key, value)
        self._report("set", None, time.perf_counter() - start)
        self._report_evictions(evicted)

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether a fresh entry was there."""
        start = time.perf_counter()
        with self._lock:
            try:
                del self._store[key]
                found = True
            except KeyError:
                found = False
        self._report("delete", None, time.perf_counter() - start)
        return found

    def clear(self) -> None:
        """Remove every entry (not counted as evictions)."""
        with self._lock:
            evicted, expired = self._store.evicted, self._store.expired
            self._store.clear()
            self._store.evicted, self._store.expired = evicted, expired

    def stats(self) -> CacheStats:
        """Hits, misses, evictions, loads… since the cache was made."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._store.evicted,
                expirations=self._store.expired,
                loads=self._loads,
                load_errors=self._load_errors,
                load_ms_total=self._load_ms,
                size=len(self._store),
                maxsize=self.maxsize,
            )

    # --- loading ----------------------------------------------------------------------

    def get_or_load(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The value for ``key``; on a miss, ``loader()`` once for all threads asking."""
        start = time.perf_counter()
        with self._lock:
            value = self._read(key)
            flight = None
            leader = False
            if value is _MISSING:
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    leader = True
        self._report_read(value is not _MISSING, start)
        if flight is None:
            return cast(T, value)
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return cast(T, flight.value)
        try:
            loaded = self._load(key, loader)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = loaded
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
        return loaded

    async def aget_or_load(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        """:meth:`get_or_load` for coroutines: one ``await loader()`` per cold key and loop."""
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        with self._lock:
            value = self._read(key)
            task = None
            if value is _MISSING:
                task = self._tasks.get(key)
                if task is None or task.get_loop() is not loop:
                    task = loop.create_task(self._aload(key, loader))
                    task.add_done_callback(_retrieve)
                    self._tasks[key] = task
        self._report_read(value is not _MISSING, start)
        if task is None:
            return cast(T, value)
        return cast(T, await asyncio.shield(task))

    async def _aload(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            value = await loader()
        except BaseException:
            self._loaded(key, _MISSING, start, failed=True)
            raise
        self._loaded(key, value, start)
        return value

    def _load(self, key: Hashable, loader: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            value = loader()
        except BaseException:
            self._loaded(key, _MISSING, start, failed=True)
            raise
        self._loaded(key, value, start)
        return value

    def _loaded(self, key: Hashable, value: Any, start: float, *, failed: bool = False) -> None:
        elapsed = time.perf_counter() - start
        evicted = 0
        with self._lock:
            self._loads += 1
            self._load_ms += elapsed * 1000
            if failed:
                self._load_errors += 1
            else:
                evicted = self._write(key, value)
            task = self._tasks.get(key)
            if task is not None and task is _current_task():
                del self._tasks[key]
        self._report("load", None, elapsed)
        self._report_evictions(evicted)

    # --- decorator --------------------------------------------------------------------

    def cached(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function or a coroutine function) to cache its results."""
        prefix = f"{fn.__module__}.{fn.__qualname__}"

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                key = (prefix, args, frozenset(kwargs.items())) if kwargs else (prefix, args)
                return await self.aget_or_load(key, lambda: fn(*args, **kwargs))

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            key = (prefix, args, frozenset(kwargs.items())) if kwargs else (prefix, args)
            return self.get_or_load(key, lambda: fn(*args, **kwargs))

        return wrapper

    __call__ = cached

    # --- internals --------------------------------------------------------------------

    def _read(self, key: Hashable) -> Any:
        """Look ``key`` up and count the hit or miss (with the lock held)."""
        try:
            value = self._store[key]
        except KeyError:
            self._misses += 1
            return _MISSING
        self._hits += 1
        return value

    def _write(self, key: Hashable, value: Any) -> int:
        """Store; the number of entries evicted for room (with the lock held)."""
        before = self._store.evicted
        self._store[key] = value
        return self._store.evicted - before

    def _report_read(self, hit: bool, start: float) -> None:
        try:
            request = _scope.current_request()
            if request is not None:
                request.add_cache(hit)
            self._report("get", hit, time.perf_counter() - start, request)
        except Exception:
            _scope.internal_failure("cache.read")

    def _report_evictions(self, count: int) -> None:
        if count:
            self._report("evict", None, 0.0, count=count)

    def _report(
        self,
        op: str,
        hit: bool | None,
        elapsed: float,
        request: Any = _MISSING,
        count: int = 1,
    ) -> None:
        """Record one ``cache`` event for an operation that took ``elapsed`` seconds."""
        if not _scope.enabled():
            return
        try:
            if request is _MISSING:
                request = _scope.current_request()
            event: dict[str, Any] = {
                "kind": "cache",
                "ts": time.time() - elapsed,
                "cache": self.name,
                "op": op,
                "duration_ms": elapsed * 1000,
            }
            if hit is not None:
                event["hit"] = hit
            if count != 1:
                event["count"] = count
            if request is not None:
                route = request.route_template()
                if route is not None:
                    event["route"] = route
                if request.request_id is not None:
                    event["request_id"] = request.request_id
            _scope.record(event)
        except Exception:
            _scope.internal_failure("cache.report")


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a thread's load
        return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a load's exception as seen, even when every waiter was cancelled."""
    if not task.cancelled():
        task.exception()
