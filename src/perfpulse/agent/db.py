"""DB-API 2 instrumentation: every statement timed, fingerprinted and counted.

Wrap one connection, or a driver's ``connect`` so every new connection is
wrapped::

    import sqlite3
    from perfpulse.agent import db

    conn = db.instrument_connection(sqlite3.connect("app.db"), system="sqlite")
    conn.execute("SELECT * FROM users WHERE id = ?", (42,)).fetchall()

    db.instrument_sqlite3()   # sqlite3.connect(...) now returns wrapped connections
    db.instrument_psycopg()   # the same for psycopg.connect(...)

The wrapper is a thin proxy with the driver's own interface (everything it does
not time is passed through), so ``isinstance(conn, sqlite3.Connection)`` is
false. Each statement (``execute``, ``executemany``, ``executescript`` and the
connection shortcuts of the same names) becomes one ``db`` event:

- ``fingerprint``: :func:`~perfpulse.model.fingerprint.fingerprint_sql` of the
  statement (literals removed, ``IN`` lists collapsed); its LRU cache keeps
  repeated statements cheap;
- ``duration_ms``: the driver call, plus fetching when the driver reads rows
  lazily (see ``rows``);
- ``rows``: ``cursor.rowcount`` when the driver knows it (writes, and every
  psycopg result). When it does not (an SQLite ``SELECT``), the rows fetched are
  counted and the event is sent once the result is exhausted, the cursor is
  closed or reused, or the cursor is dropped;
- ``statement``: for slow statements only (at least ``slow_ms``, default
  :data:`DEFAULT_SLOW_MS`, or ``$PERFPULSE_SLOW_QUERY_MS``), with every literal
  replaced by ``?`` (:func:`~perfpulse.model.fingerprint.redact_statement`);
  parameters are never read;
- ``error``: the exception's type name when the driver raised; the exception
  itself propagates untouched;
- ``route``, ``request_id``, ``trace_id`` of the request it ran in, whose
  :class:`~perfpulse.agent.scope.RequestScope` also gets ``add_query`` (so the
  middleware can report N+1 patterns).

Before the agent is initialized and outside a request the proxy only passes
calls through. A failure of the instrumentation itself is counted in
:func:`perfpulse.agent.stats` (``internal_failures``) and never reaches the
application.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar, cast

from perfpulse.agent import scope as _scope
from perfpulse.agent.scope import RequestScope, measuring
from perfpulse.model.fingerprint import fingerprint_sql, redact_statement

__all__ = [
    "DEFAULT_SLOW_MS",
    "SLOW_QUERY_ENV",
    "QueryRecorder",
    "instrument_connection",
    "instrument_psycopg",
    "instrument_sqlite3",
    "record_query",
    "slow_threshold",
    "uninstrument_psycopg",
    "uninstrument_sqlite3",
]

#: Environment variable for the slow-statement threshold, in milliseconds.
SLOW_QUERY_ENV = "PERFPULSE_SLOW_QUERY_MS"
#: Statements at least this slow (ms) keep their redacted text.
DEFAULT_SLOW_MS = 100.0
#: The wire format's limit for ``fingerprint`` and ``statement``.
MAX_TEXT = 16_000

_log = logging.getLogger("perfpulse.agent")
T = TypeVar("T")


def slow_threshold(slow_ms: float | None = None) -> float:
    """The slow-statement threshold: ``slow_ms``, then ``$PERFPULSE_SLOW_QUERY_MS``, then 100.

    A bad argument raises ``ValueError``; a bad environment value is logged and
    the default used, so a typo in the environment cannot stop the application.
    """
    if slow_ms is not None:
        if not slow_ms >= 0:
            raise ValueError(f"slow_ms must be >= 0, not {slow_ms!r}")
        return float(slow_ms)
    raw = os.environ.get(SLOW_QUERY_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
        _log.warning("ignoring %s=%r: not a number >= 0", SLOW_QUERY_ENV, raw)
    return DEFAULT_SLOW_MS


class QueryRecorder:
    """Turns one finished statement into a ``db`` event and a scope entry.

    Shared by the DB-API proxy and the SQLAlchemy integration; use it (or
    :func:`record_query`) to instrument a driver of your own.
    """

    __slots__ = ("slow_ms", "system")

    def __init__(self, system: str = "", slow_ms: float | None = None) -> None:
        self.system = system
        self.slow_ms = slow_threshold(slow_ms)

    @staticmethod
    def active() -> bool:
        """Whether anything would be recorded now (agent on, or inside a request)."""
        return _scope.measuring()

    def record(
        self,
        statement: str,
        ts: float,
        duration_ms: float,
        *,
        request: RequestScope | None,
        rows: int | None = None,
        error: str | None = None,
        pool_wait_ms: float | None = None,
    ) -> None:
        """Record one statement that started at ``ts`` (Unix seconds). Never raises."""
        try:
            fingerprint = fingerprint_sql(statement)
            if request is not None:
                request.add_query(fingerprint, duration_ms)
            if not _scope.enabled():
                return
            event: dict[str, Any] = {
                "kind": "db",
                "ts": ts,
                "fingerprint": fingerprint[:MAX_TEXT],
                "duration_ms": duration_ms,
            }
            if self.system:
                event["system"] = self.system
            if rows is not None and rows >= 0:
                event["rows"] = rows
            if pool_wait_ms is not None:
                event["pool_wait_ms"] = pool_wait_ms
            if duration_ms >= self.slow_ms:
                event["statement"] = redact_statement(statement)[:MAX_TEXT]
            if error is not None:
                event["error"] = error[:2000]
            if request is not None:
                route = request.route_template()
                if route is not None:
                    event["route"] = route
                if request.request_id is not None:
                    event["request_id"] = request.request_id
                if request.trace_id is not None:
                    event["trace_id"] = request.trace_id
            _scope.record(event)
        except Exception:
            _scope.internal_failure("db.record")


def record_query(
    statement: str,
    duration_ms: float,
    *,
    system: str = "",
    rows: int | None = None,
    error: str | None = None,
    slow_ms: float | None = None,
) -> None:
    """Record a statement that just finished, in the current request (if any)."""
    request = _scope.current_request()
    ts = time.time() - duration_ms / 1000
    QueryRecorder(system, slow_ms).record(
        statement, ts, duration_ms, request=request, rows=rows, error=error
    )


def statement_text(operation: object, cursor: object = None) -> str:
    """The SQL text of what was passed to ``execute`` (str, bytes, psycopg ``sql``)."""
    if isinstance(operation, str):
        return operation
    if isinstance(operation, bytes | bytearray | memoryview):
        return bytes(operation).decode("utf-8", "replace")
    as_string = getattr(operation, "as_string", None)
    if as_string is not None:  # psycopg.sql.Composable
        try:
            return str(as_string(getattr(cursor, "connection", None)))
        except Exception:
            pass
    return str(operation)


class _Pending:
    """A statement whose rows are still being fetched."""

    __slots__ = ("elapsed", "request", "rows", "statement", "ts")

    def __init__(
        self, statement: str, ts: float, elapsed: float, request: RequestScope | None
    ) -> None:
        self.statement = statement
        self.ts = ts
        self.elapsed = elapsed  # seconds spent in the driver so far
        self.request = request
        self.rows = 0


class _Cursor:
    """A DB-API cursor that records what it executes (see the module)."""

    __slots__ = ("__weakref__", "_cursor", "_pending", "_recorder")

    def __init__(self, cursor: Any, recorder: QueryRecorder) -> None:
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_recorder", recorder)
        object.__setattr__(self, "_pending", None)

    # --- pass-through -------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)

    def __repr__(self) -> str:
        return f"<perfpulse cursor {self._cursor!r}>"

    def __enter__(self) -> _Cursor:
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> Any:
        self._finish()
        return self._cursor.__exit__(*exc_info)

    def __del__(self) -> None:
        if self._pending is not None:
            self._finish()

    def close(self) -> None:
        self._finish()
        self._cursor.close()

    # --- statements ---------------------------------------------------------------

    def execute(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        if self._pending is None and not measuring():  # the fast way through
            cursor = self._cursor
            result = (
                cursor.execute(operation, *args, **kwargs)
                if kwargs
                else cursor.execute(operation, *args)
            )
            return self if result is cursor else result
        return self._run(self._cursor.execute, operation, args, kwargs)

    def executemany(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run(self._cursor.executemany, operation, args, kwargs)

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run(self._cursor.executescript, script, args, kwargs)

    def _run(
        self,
        method: Callable[..., Any],
        operation: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        adopt: bool = False,
    ) -> Any:
        """Call ``method``; with ``adopt``, what it returns is this proxy's cursor."""
        if self._pending is not None:
            self._finish()
        recorder = self._recorder
        if not measuring():
            result = method(operation, *args, **kwargs)
            if adopt:
                object.__setattr__(self, "_cursor", result)
                return self
            return self if result is self._cursor else result
        request = _scope.current_request()
        ts = time.time()
        start = time.perf_counter()
        try:
            # (calling with an empty ``**kwargs`` costs a C method as much as the call)
            result = method(operation, *args, **kwargs) if kwargs else method(operation, *args)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            text = statement_text(operation, self._cursor)
            recorder.record(text, ts, elapsed * 1000, request=request, error=type(exc).__name__)
            raise
        elapsed = time.perf_counter() - start
        if adopt:
            object.__setattr__(self, "_cursor", result)
        self._executed(statement_text(operation, self._cursor), ts, elapsed, request)
        return self if adopt or result is self._cursor else result

    def _executed(
        self, statement: str, ts: float, elapsed: float, request: RequestScope | None
    ) -> None:
        """Record now if the row count is known, else wait for the fetches."""
        try:
            rowcount = getattr(self._cursor, "rowcount", -1)
            if not isinstance(rowcount, int):
                rowcount = -1
            if rowcount >= 0 or getattr(self._cursor, "description", None) is None:
                rows = rowcount if rowcount >= 0 else None
                self._recorder.record(statement, ts, elapsed * 1000, request=request, rows=rows)
            else:
                object.__setattr__(self, "_pending", _Pending(statement, ts, elapsed, request))
        except Exception:
            _scope.internal_failure("db.executed")

    def _finish(self, error: str | None = None) -> None:
        pending = self._pending
        if pending is None:
            return
        object.__setattr__(self, "_pending", None)
        self._recorder.record(
            pending.statement,
            pending.ts,
            pending.elapsed * 1000,
            request=pending.request,
            rows=pending.rows,
            error=error,
        )

    # --- fetching -----------------------------------------------------------------

    def _fetch(self, method: Callable[..., T], *args: Any) -> T:
        pending = self._pending
        if pending is None:
            return method(*args)
        start = time.perf_counter()
        try:
            result = method(*args)
        except Exception as exc:
            pending.elapsed += time.perf_counter() - start
            self._finish(type(exc).__name__)
            raise
        pending.elapsed += time.perf_counter() - start
        return result

    def fetchone(self) -> Any:
        row = self._fetch(self._cursor.fetchone)
        if self._pending is not None:
            if row is None:
                self._finish()
            else:
                self._pending.rows += 1
        return row

    def fetchmany(self, size: int | None = None) -> Any:
        args = () if size is None else (size,)
        rows = self._fetch(self._cursor.fetchmany, *args)
        pending = self._pending
        if pending is not None:
            pending.rows += len(rows)
            wanted = size if size is not None else getattr(self._cursor, "arraysize", 1)
            if len(rows) == 0 or len(rows) < wanted:
                self._finish()
        return rows

    def fetchall(self) -> Any:
        rows = self._fetch(self._cursor.fetchall)
        pending = self._pending
        if pending is not None:
            pending.rows += len(rows)
            self._finish()
        return rows

    def __iter__(self) -> Iterator[Any]:
        if self._pending is None:
            return iter(self._cursor)  # nothing left to count
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row


class _Connection:
    """A DB-API connection whose cursors record their statements."""

    __slots__ = ("__weakref__", "_conn", "_recorder")

    def __init__(self, conn: Any, recorder: QueryRecorder) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_recorder", recorder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def __repr__(self) -> str:
        return f"<perfpulse connection {self._conn!r}>"

    def __enter__(self) -> _Connection:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> Any:
        return self._conn.__exit__(*exc_info)

    def cursor(self, *args: Any, **kwargs: Any) -> _Cursor:
        return _Cursor(self._conn.cursor(*args, **kwargs), self._recorder)

    def execute(self, operation: Any, *args: Any, **kwargs: Any) -> _Cursor:
        if not measuring():  # the fast way through
            return _Cursor(self._conn.execute(operation, *args, **kwargs), self._recorder)
        return self._shortcut(self._conn.execute, operation, args, kwargs)

    def executemany(self, operation: Any, *args: Any, **kwargs: Any) -> _Cursor:
        return self._shortcut(self._conn.executemany, operation, args, kwargs)

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> _Cursor:
        return self._shortcut(self._conn.executescript, script, args, kwargs)

    def _shortcut(
        self,
        method: Callable[..., Any],
        operation: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Cursor:
        cursor = _Cursor(None, self._recorder)
        result: _Cursor = cursor._run(method, operation, args, kwargs, adopt=True)
        return result


def instrument_connection(conn: T, *, system: str = "", slow_ms: float | None = None) -> T:
    """Return a proxy of the DB-API connection ``conn`` that records its statements.

    ``system`` names the database in the events (``sqlite``, ``postgresql``…).
    ``slow_ms`` overrides the slow-statement threshold (see :func:`slow_threshold`).
    Wrapping an already wrapped connection returns it unchanged.
    """
    if isinstance(conn, _Connection):
        return conn
    return cast(T, _Connection(conn, QueryRecorder(system, slow_ms)))


def _wrap_connect(module_name: str, system: str, slow_ms: float | None) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"perfpulse.agent.db.instrument_{module_name}() needs {module_name}: "
            f"pip install {module_name}"
        ) from exc
    if module_name in _originals:
        return  # already instrumented
    original: Callable[..., Any] = module.connect
    recorder = QueryRecorder(system, slow_ms)

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        return _Connection(original(*args, **kwargs), recorder)

    _originals[module_name] = original
    _set(module, "connect", connect)


def _unwrap_connect(module_name: str) -> None:
    original = _originals.pop(module_name, None)
    if original is not None:
        _set(importlib.import_module(module_name), "connect", original)


def _set(module: ModuleType, name: str, value: object) -> None:
    setattr(module, name, value)


_originals: dict[str, Callable[..., Any]] = {}  # module name -> its own connect


def instrument_sqlite3(*, slow_ms: float | None = None) -> None:
    """Make ``sqlite3.connect`` return instrumented connections (``system="sqlite"``).

    Only calls through the module attribute are affected: a ``connect`` imported
    with ``from sqlite3 import connect`` before this call is the original.
    """
    _wrap_connect("sqlite3", "sqlite", slow_ms)


def uninstrument_sqlite3() -> None:
    """Undo :func:`instrument_sqlite3` (connections already made stay wrapped)."""
    _unwrap_connect("sqlite3")


def instrument_psycopg(*, slow_ms: float | None = None) -> None:
    """Make ``psycopg.connect`` return instrumented connections (``system="postgresql"``)."""
    _wrap_connect("psycopg", "postgresql", slow_ms)


def uninstrument_psycopg() -> None:
    """Undo :func:`instrument_psycopg`."""
    _unwrap_connect("psycopg")
