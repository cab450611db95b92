"""SQLAlchemy instrumentation: statements through engine events, and the pool.

Example::

    from sqlalchemy import create_engine
    from perfpulse.agent.sqlalchemy import instrument_engine

    engine = create_engine("postgresql+psycopg://app@db/shop", pool_size=10)
    instrumentation = instrument_engine(engine, pool_interval=10.0)

**Statements** (``before_cursor_execute``, ``after_cursor_execute`` and
``handle_error``) become ``db`` events with the same fields as the DB-API
proxy (:mod:`perfpulse.agent.db`): fingerprint, duration, ``rows`` (the
cursor's ``rowcount`` when the driver knows it: every PostgreSQL statement,
SQLite writes), the redacted ``statement`` when slow, ``error`` (the DB-API
exception's type name), the request's route and ids, and ``scope.add_query``
for N+1 detection. Instrument the engine *or* the DB-API connections beneath
it, not both, or each statement is counted twice.

**The pool** is sampled every ``pool_interval`` seconds (and whenever
:meth:`EngineInstrumentation.report_pool` is called) into a ``pool`` event:
``size`` (``pool_size``), ``checked_out``, ``overflow`` (connections open beyond
``pool_size``), ``wait_ms`` (the longest wait for a connection in the interval)
and ``timeouts`` (checkouts that gave up with ``sqlalchemy.exc.TimeoutError``
in the interval). The sampler is a daemon thread started by the first checkout,
so an engine that is never used costs nothing; it restarts after ``fork``.

How the wait is measured: a ``QueuePool`` blocks only when it is exhausted (no
idle connection and no overflow left); it then waits in ``get`` on its internal
queue. That ``get`` is timed when it blocks on an empty queue, so the wait is
exactly the time spent blocked, and never includes connecting; a checkout that
found an idle connection or opened a new one waited 0 and reports nothing. The
timing is nested in the pool's ``_do_get`` (which counts the timeouts), and the
wait is attached to the connection that was handed out, so the first statement
run on it carries ``pool_wait_ms``. Pools without such a queue (``NullPool``,
``StaticPool``, ``SingletonThreadPool``) never wait; only their counts are
reported.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    from sqlalchemy import event, exc
    from sqlalchemy.engine import Connection, Engine, ExceptionContext, ExecutionContext
    from sqlalchemy.pool import ConnectionPoolEntry, Pool
except ImportError as error:  # pragma: no cover - exercised only without SQLAlchemy
    raise ImportError(
        "perfpulse.agent.sqlalchemy needs SQLAlchemy 2: pip install 'sqlalchemy>=2'"
    ) from error

from perfpulse.agent import scope as _scope
from perfpulse.agent.db import QueryRecorder

__all__ = [
    "DEFAULT_POOL_INTERVAL",
    "POOL_INTERVAL_ENV",
    "EngineInstrumentation",
    "PoolStats",
    "instrument_engine",
]

#: Environment variable for the pool sampling interval, in seconds (0 turns it off).
POOL_INTERVAL_ENV = "PERFPULSE_POOL_INTERVAL"
#: Seconds between two ``pool`` events of one engine.
DEFAULT_POOL_INTERVAL = 10.0

_START = "perfpulse.start"  # conn.info: (ts, perf_counter, request) of the statement running
_WAIT = "perfpulse.pool_wait_ms"  # entry.info: the wait of the checkout that got it

_log = logging.getLogger("perfpulse.agent")
# The blocked time of the checkout in progress (None outside ``_do_get``).
_waited: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "perfpulse_pool_waited", default=None
)
_instrumented: weakref.WeakKeyDictionary[Engine, EngineInstrumentation] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Pool counters since :func:`instrument_engine` (not reset by sampling)."""

    checkouts: int
    connects: int
    waits: int
    wait_ms_total: float
    wait_ms_max: float
    timeouts: int


def _pool_interval(value: float | None) -> float:
    if value is not None:
        if not value >= 0:
            raise ValueError(f"pool_interval must be >= 0, not {value!r}")
        return float(value)
    raw = os.environ.get(POOL_INTERVAL_ENV, "").strip()
    if raw:
        try:
            parsed = float(raw)
        except ValueError:
            parsed = -1.0
        if parsed >= 0:
            return parsed
        _log.warning("ignoring %s=%r: not a number >= 0", POOL_INTERVAL_ENV, raw)
    return DEFAULT_POOL_INTERVAL


def _default_pool_name(engine: Engine) -> str:
    url = engine.url
    database = (url.database or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = url.get_backend_name() + (f"/{database}" if database else "")
    return name[:200]


class EngineInstrumentation:
    """The instrumentation of one engine: see :func:`instrument_engine`."""

    def __init__(
        self,
        engine: Engine,
        *,
        slow_ms: float | None,
        pool_name: str | None,
        pool_interval: float | None,
    ) -> None:
        self.engine = engine
        self.recorder = QueryRecorder(engine.dialect.name, slow_ms)
        self.pool_name = pool_name or _default_pool_name(engine)
        self.pool_interval = _pool_interval(pool_interval)
        self._lock = threading.Lock()
        # cumulative
        self._checkouts = self._connects = self._waits = self._timeouts = 0
        self._wait_total = self._wait_max = 0.0
        self._checked_out = 0  # for pools that do not count themselves
        # since the last sample
        self._interval_wait: float | None = None
        self._interval_timeouts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_cursor_execute", self._before),
            ("after_cursor_execute", self._after),
            ("handle_error", self._error),
            ("checkout", self._checkout),
            ("checkin", self._checkin),
            ("connect", self._connect),
            ("engine_disposed", self._disposed),
        ]
        for name, fn in self._listeners:
            event.listen(engine, name, fn)
        self._patch(engine.pool)

    # --- statements -----------------------------------------------------------------

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        try:
            if self.recorder.active():
                conn.info[_START] = (time.time(), time.perf_counter(), _scope.current_request())
        except Exception:
            _scope.internal_failure("sqlalchemy.before")

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        end = time.perf_counter()
        try:
            info = conn.info
            if _START not in info:
                return  # not timed: the agent is off and no request is served
            rowcount = getattr(cursor, "rowcount", -1)
            rows = rowcount if isinstance(rowcount, int) and rowcount >= 0 else None
            self._finished(info, statement, end, rows=rows)
        except Exception:
            _scope.internal_failure("sqlalchemy.after")

    def _error(self, context: ExceptionContext) -> None:
        end = time.perf_counter()
        conn = context.connection
        if conn is None or context.statement is None:
            return
        try:
            info = conn.info
        except exc.SQLAlchemyError:  # the connection was invalidated or closed
            return
        try:
            error = type(context.original_exception).__name__
            self._finished(info, context.statement, end, error=error)
        except Exception:
            _scope.internal_failure("sqlalchemy.error")

    def _finished(
        self,
        info: dict[Any, Any],
        statement: str,
        end: float,
        *,
        rows: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record the statement that ``_before`` started timing on this connection."""
        started = info.pop(_START, None)
        if started is None:
            return
        ts, start, request = started
        self.recorder.record(
            statement,
            ts,
            (end - start) * 1000,
            request=request,
            rows=rows,
            error=error,
            pool_wait_ms=info.pop(_WAIT, None),
        )

    # --- the pool -------------------------------------------------------------------

    def _patch(self, pool: Pool) -> None:
        """Time blocking waits of ``pool`` (see the module); once per pool object."""
        if "_do_get" in vars(pool):
            return
        original_do_get = pool._do_get
        queue = getattr(pool, "_pool", None)
        original_get = getattr(queue, "get", None)
        empty = getattr(queue, "empty", None)
        if original_get is None or empty is None:
            return  # this kind of pool never waits

        def get(block: bool = True, timeout: float | None = None) -> Any:
            if not block or not empty():
                return original_get(block, timeout)
            start = time.perf_counter()
            try:
                return original_get(block, timeout)
            finally:
                so_far = _waited.get()
                if so_far is not None:
                    _waited.set(so_far + (time.perf_counter() - start) * 1000)

        def do_get() -> ConnectionPoolEntry:
            if _waited.get() is not None:  # QueuePool retrying itself
                return original_do_get()
            token = _waited.set(0.0)
            try:
                try:
                    entry = original_do_get()
                except exc.TimeoutError:
                    self._waited(_waited.get() or 0.0, timed_out=True)
                    raise
                waited = _waited.get() or 0.0
            finally:
                _waited.reset(token)
            if waited > 0:
                try:
                    self._waited(waited)
                    entry.info[_WAIT] = waited
                except Exception:
                    _scope.internal_failure("sqlalchemy.pool")
            return entry

        vars(queue)["get"] = get
        vars(pool)["_do_get"] = do_get

    def _unpatch(self, pool: Pool) -> None:
        vars(pool).pop("_do_get", None)
        queue = getattr(pool, "_pool", None)
        if queue is not None and hasattr(queue, "__dict__"):
            vars(queue).pop("get", None)

    def _waited(self, ms: float, *, timed_out: bool = False) -> None:
        with self._lock:
            self._waits += 1
            self._wait_total += ms
            self._wait_max = max(self._wait_max, ms)
            self._interval_wait = max(self._interval_wait or 0.0, ms)
            if timed_out:
                self._timeouts += 1
                self._interval_timeouts += 1

    def _checkout(self, dbapi_conn: Any, entry: ConnectionPoolEntry, proxy: Any) -> None:
        with self._lock:
            self._checkouts += 1
            self._checked_out += 1
        if self.pool_interval > 0:
            try:
                self._ensure_sampler()
            except Exception:
                _scope.internal_failure("sqlalchemy.sampler")

    def _checkin(self, dbapi_conn: Any, entry: ConnectionPoolEntry) -> None:
        entry.info.pop(_WAIT, None)  # a wait no statement used is not the next one's
        with self._lock:
            self._checked_out = max(self._checked_out - 1, 0)

    def _connect(self, dbapi_conn: Any, entry: ConnectionPoolEntry) -> None:
        with self._lock:
            self._connects += 1

    def _disposed(self, engine: Engine) -> None:
        self._patch(engine.pool)  # ``dispose`` made a new pool

    def stats(self) -> PoolStats:
        """The cumulative pool counters."""
        with self._lock:
            return PoolStats(
                checkouts=self._checkouts,
                connects=self._connects,
                waits=self._waits,
                wait_ms_total=self._wait_total,
                wait_ms_max=self._wait_max,
                timeouts=self._timeouts,
            )

    def report_pool(self) -> dict[str, Any]:
        """Sample the pool now: record a ``pool`` event, return it, start a new interval."""
        pool = self.engine.pool
        size = getattr(pool, "size", 0)
        if callable(size):
            size = size()
        counted = getattr(pool, "checkedout", None)
        overflow = getattr(pool, "overflow", None)
        with self._lock:
            checked_out = counted() if callable(counted) else self._checked_out
            wait, self._interval_wait = self._interval_wait, None
            timeouts, self._interval_timeouts = self._interval_timeouts, 0
        sample: dict[str, Any] = {
            "kind": "pool",
            "ts": time.time(),
            "pool": self.pool_name,
            "size": max(int(size), 0),
            "checked_out": max(int(checked_out), 0),
            "overflow": max(int(overflow()), 0) if callable(overflow) else 0,
            "timeouts": timeouts,
        }
        if wait is not None:
            sample["wait_ms"] = wait
        _scope.record(sample)
        return sample

    def _ensure_sampler(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
            return
        with self._lock:
            if self._stop.is_set():
                return
            thread = self._thread
            if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(
                target=self._sample, name=f"perfpulse-pool-{self.pool_name}", daemon=True
            )
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.pool_interval):
            try:
                self.report_pool()
            except Exception:  # never let the sampler die on a pool it cannot read
                _log.debug("pool sample failed", exc_info=True)

    def close(self) -> None:
        """Stop sampling and remove every listener and patch (mainly for tests)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        for name, fn in self._listeners:
            if event.contains(self.engine, name, fn):
                event.remove(self.engine, name, fn)
        self._unpatch(self.engine.pool)
        _instrumented.pop(self.engine, None)


def instrument_engine(
    engine: Engine | Any,
    *,
    slow_ms: float | None = None,
    pool_name: str | None = None,
    pool_interval: float | None = None,
) -> EngineInstrumentation:
    """Record every statement of ``engine`` and sample its connection pool.

    ``engine`` is an ``Engine`` or an ``AsyncEngine`` (its ``sync_engine`` is
    used). ``slow_ms`` is the slow-statement threshold (default 100, or
    ``$PERFPULSE_SLOW_QUERY_MS``); ``pool_name`` names the pool in ``pool``
    events (default: backend and database file name, ``postgresql/shop``);
    ``pool_interval`` is the seconds between samples (default 10, or
    ``$PERFPULSE_POOL_INTERVAL``; 0 samples only on
    :meth:`~EngineInstrumentation.report_pool`). Instrumenting an engine twice
    returns the first instrumentation.
    """
    engine = getattr(engine, "sync_engine", engine)
    if not isinstance(engine, Engine):
        raise TypeError(f"expected a SQLAlchemy Engine, not {type(engine).__name__}")
    existing = _instrumented.get(engine)
    if existing is not None:
        return existing
    instrumentation = EngineInstrumentation(
        engine, slow_ms=slow_ms, pool_name=pool_name, pool_interval=pool_interval
    )
    _instrumented[engine] = instrumentation
    return instrumentation
