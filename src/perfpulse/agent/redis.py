"""redis-py instrumentation: latency per command, hits and misses per key read.

Example::

    import redis
    from perfpulse.agent.redis import instrument_redis

    client = instrument_redis(redis.Redis(host="cache"), name="sessions")
    client.get("session:42")          # a cache event: op "get", hit true or false

It patches this one client object (``redis.Redis`` or ``redis.asyncio.Redis``):
its ``execute_command``, through which every command method goes, and its
``pipeline``, whose ``execute`` is timed. Each command becomes a ``cache`` event
with ``cache`` = ``name`` (default ``"redis"``), ``op`` = the command in lower
case (``get``, ``set``, ``hgetall``…) and ``duration_ms``, plus the route and
request id when it ran in a request. Commands that fail are reported too, and
the exception propagates untouched.

Reads that can miss carry ``hit``, and count in the request's
``cache_hits``/``cache_misses``:

======================  ======================================================
command                 hit when
======================  ======================================================
GET, GETEX, GETDEL      the reply is not nil
HGET                    the reply is not nil
HEXISTS                 the reply is 1
HGETALL                 the hash is not empty (a missing key reads as empty)
MGET, HMGET             one event per key (field): its value is not nil
EXISTS k1 k2 …          one event per key: as many hits as the reply counts
======================  ======================================================

A multi-key read is one event per key so the hit ratio counts keys, not
commands; each of these events gets an equal share of the command's duration.
Other commands (``SET``, ``DEL``, ``INCR``, ``LRANGE``…) are sent without
``hit``. In a pipeline each queued command is reported when ``execute``
returns, with an equal share of the round trip; commands a pipeline runs
immediately (after ``WATCH``) are not reported.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

try:
    import redis  # noqa: F401 - only to say clearly when it is missing
except ImportError as error:  # pragma: no cover - exercised only without redis-py
    raise ImportError("perfpulse.agent.redis needs redis-py: pip install redis") from error

from perfpulse.agent import scope as _scope
from perfpulse.agent.scope import RequestScope, measuring

__all__ = ["instrument_redis", "uninstrument_redis"]

C = TypeVar("C")
_PATCHED = ("execute_command", "pipeline")


def _single(args: Sequence[Any], result: Any) -> list[bool]:
    return [result is not None]


def _each(args: Sequence[Any], result: Any) -> list[bool]:
    return [item is not None for item in result]


def _exists(args: Sequence[Any], result: Any) -> list[bool]:
    keys = len(args) - 1
    found = min(int(result), keys)
    return [True] * found + [False] * (keys - found)


def _truthy(args: Sequence[Any], result: Any) -> list[bool]:
    return [bool(result)]


#: Commands whose reply tells a hit from a miss, and how (one bool per key read).
READS: dict[str, Callable[[Sequence[Any], Any], list[bool]]] = {
    "GET": _single,
    "GETEX": _single,
    "GETDEL": _single,
    "HGET": _single,
    "HEXISTS": _truthy,
    "HGETALL": _truthy,
    "MGET": _each,
    "HMGET": _each,
    "EXISTS": _exists,
}


class _Recorder:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def command(
        self,
        args: Sequence[Any],
        result: Any,
        ts: float,
        elapsed: float,
        request: RequestScope | None,
        failed: bool = False,
    ) -> None:
        """Report one command that started at ``ts`` and took ``elapsed`` seconds."""
        try:
            command = args[0] if args else "?"
            if isinstance(command, bytes):
                command = command.decode("ascii", "replace")
            command = str(command).upper()
            reads = READS.get(command)
            hits = None if reads is None or failed else reads(args, result)
            enabled = _scope.enabled()
            base: dict[str, Any] = {}
            if enabled:
                base = {"kind": "cache", "ts": ts, "cache": self.name, "op": command.lower()[:32]}
                if request is not None:
                    route = request.route_template()
                    if route is not None:
                        base["route"] = route
                    if request.request_id is not None:
                        base["request_id"] = request.request_id
            if not hits:
                if enabled:
                    _scope.record({**base, "duration_ms": elapsed * 1000})
                return
            share = elapsed * 1000 / len(hits)
            for hit in hits:
                if request is not None:
                    request.add_cache(hit)
                if enabled:
                    _scope.record({**base, "hit": hit, "duration_ms": share})
        except Exception:
            _scope.internal_failure("redis.command")

    def pipeline(
        self,
        stack: list[tuple[Sequence[Any], Any]],
        results: Any,
        ts: float,
        elapsed: float,
        request: RequestScope | None,
        failed: bool,
    ) -> None:
        """Report each command of an executed pipeline with a share of its time."""
        try:
            if not stack:
                return
            share = elapsed / len(stack)
            replies = results if isinstance(results, list) and len(results) == len(stack) else []
            for i, (args, _options) in enumerate(stack):
                reply = replies[i] if replies else None
                bad = failed or not replies or isinstance(reply, Exception)
                self.command(args, reply, ts, share, request, failed=bad)
        except Exception:
            _scope.internal_failure("redis.pipeline")


class _Call:
    """One command (or pipeline) being timed: the request it runs in, when it started."""

    __slots__ = ("recorder", "request", "start", "ts")

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.request = _scope.current_request()
        self.ts = time.time()
        self.start = time.perf_counter()

    def command(self, args: Sequence[Any], result: Any, failed: bool = False) -> None:
        elapsed = time.perf_counter() - self.start
        self.recorder.command(args, result, self.ts, elapsed, self.request, failed)

    def pipeline(self, stack: list[tuple[Sequence[Any], Any]], results: Any, failed: bool) -> None:
        elapsed = time.perf_counter() - self.start
        self.recorder.pipeline(stack, results, self.ts, elapsed, self.request, failed)


def _wrap_sync(recorder: _Recorder, execute: Callable[..., Any]) -> Callable[..., Any]:
    def execute_command(*args: Any, **options: Any) -> Any:
        if not measuring():
            return execute(*args, **options)
        call = _Call(recorder)
        try:
            result = execute(*args, **options)
        except Exception:
            call.command(args, None, failed=True)
            raise
        call.command(args, result)
        return result

    return execute_command


def _wrap_async(recorder: _Recorder, execute: Callable[..., Any]) -> Callable[..., Any]:
    async def execute_command(*args: Any, **options: Any) -> Any:
        if not measuring():
            return await execute(*args, **options)
        call = _Call(recorder)
        try:
            result = await execute(*args, **options)
        except Exception:
            call.command(args, None, failed=True)
            raise
        call.command(args, result)
        return result

    return execute_command


def _wrap_pipeline(recorder: _Recorder, make: Callable[..., Any]) -> Callable[..., Any]:
    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute
        if inspect.iscoroutinefunction(execute):

            async def execute_async(*a: Any, **kw: Any) -> Any:
                if not measuring():
                    return await execute(*a, **kw)
                stack, call = list(pipe.command_stack), _Call(recorder)
                try:
                    results = await execute(*a, **kw)
                except Exception:
                    call.pipeline(stack, None, failed=True)
                    raise
                call.pipeline(stack, results, failed=False)
                return results

            vars(pipe)["execute"] = execute_async
        else:

            def execute_sync(*a: Any, **kw: Any) -> Any:
                if not measuring():
                    return execute(*a, **kw)
                stack, call = list(pipe.command_stack), _Call(recorder)
                try:
                    results = execute(*a, **kw)
                except Exception:
                    call.pipeline(stack, None, failed=True)
                    raise
                call.pipeline(stack, results, failed=False)
                return results

            vars(pipe)["execute"] = execute_sync
        return pipe

    return pipeline


def instrument_redis(client: C, *, name: str = "redis") -> C:
    """Report every command of ``client`` as ``cache`` events named ``name``.

    ``client`` is a ``redis.Redis`` or ``redis.asyncio.Redis``; it is patched in
    place and returned. Instrumenting it again does nothing.
    """
    if not 1 <= len(name) <= 200:
        raise ValueError("name must be 1 to 200 characters")
    attrs = vars(client)
    if "execute_command" in attrs:
        return client
    recorder = _Recorder(name)
    execute: Callable[..., Any] = getattr(client, "execute_command")  # noqa: B009
    if inspect.iscoroutinefunction(execute):
        attrs["execute_command"] = _wrap_async(recorder, execute)
    else:
        attrs["execute_command"] = _wrap_sync(recorder, execute)
    attrs["pipeline"] = _wrap_pipeline(recorder, getattr(client, "pipeline"))  # noqa: B009
    return client


def uninstrument_redis(client: object) -> None:
    """Undo :func:`instrument_redis` on ``client``."""
    attrs = vars(client)
    for attr in _PATCHED:
        attrs.pop(attr, None)
