"""SQLAlchemy instrumentation against a real SQLite file: statements and the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, exc, text
from sqlalchemy.pool import QueuePool

from perfpulse.agent.scope import RequestScope, enter_request, exit_request
from perfpulse.agent.sqlalchemy import EngineInstrumentation, instrument_engine

Events = list[dict[str, Any]]
MakeEngine = Callable[..., tuple[Engine, EngineInstrumentation]]


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[MakeEngine]:
    """``make_engine(**create_engine_options)``: an instrumented engine on a new SQLite file."""
    made: list[tuple[Engine, EngineInstrumentation]] = []

    def make(**options: Any) -> tuple[Engine, EngineInstrumentation]:
        instrument = {k: options.pop(k) for k in ("slow_ms", "pool_interval") if k in options}
        instrument.setdefault("pool_interval", 0)
        engine = create_engine(f"sqlite:///{tmp_path}/app{len(made)}.db", **options)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
            conn.exec_driver_sql(
                "INSERT INTO users VALUES " + ", ".join(f"({i}, 'user{i}')" for i in range(1, 11))
            )
        instrumentation = instrument_engine(engine, **instrument)
        made.append((engine, instrumentation))
        return engine, instrumentation

    yield make
    for engine, instrumentation in made:
        instrumentation.close()
        engine.dispose()


def db_events(events: Events) -> Events:
    return [e for e in events if e["kind"] == "db"]


@contextmanager
def holding(engine: Engine, seconds: float) -> Iterator[threading.Thread]:
    """Hold one pooled connection in another thread for ``seconds`` from when this
    enters, or until it exits if that comes first."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect():
            held.set()
            release.wait(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)
    try:
        yield thread
    finally:
        release.set()
        thread.join(10)


def test_statements_are_recorded_with_fingerprint_rows_and_system(
    make_engine: MakeEngine, captured: Events
) -> None:
    engine, _ = make_engine()
    with engine.begin() as conn:
        names = conn.execute(
            text("SELECT name FROM users WHERE id IN (1, 2, 3) AND name <> :n ORDER BY id"),
            {"n": "x"},
        ).all()
        updated = conn.execute(text("UPDATE users SET name = name || '!' WHERE id > 7"))

    assert [n for (n,) in names] == ["user1", "user2", "user3"]
    assert updated.rowcount == 3
    select, update = db_events(captured)
    assert (
        select["fingerprint"] == "SELECT name FROM users WHERE id IN (?) AND name <> ? ORDER BY id"
    )
    assert select["system"] == "sqlite"
    assert "rows" not in select  # SQLite does not count a SELECT's rows up front
    assert update["fingerprint"] == "UPDATE users SET name = name || ? WHERE id > ?"
    assert update["rows"] == 3
    assert all(0 < e["duration_ms"] < 1000 for e in (select, update))
    assert "pool_wait_ms" not in select  # the pool had an idle connection


def test_a_slow_statement_keeps_its_text_redacted(
    make_engine: MakeEngine, captured: Events
) -> None:
    engine, _ = make_engine(slow_ms=0)
    with engine.connect() as conn:
        conn.execute(text("SELECT id FROM users WHERE name = 'user3'")).all()
    [event] = db_events(captured)
    assert event["statement"] == "SELECT id FROM users WHERE name = ?"


def test_an_error_is_recorded_and_sqlalchemy_raises_as_usual(
    make_engine: MakeEngine, captured: Events
) -> None:
    engine, _ = make_engine()
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('user1')"))
    [event] = db_events(captured)
    assert event["error"] == "IntegrityError"  # the DB-API exception's type
    assert event["fingerprint"] == "INSERT INTO users (name) VALUES (?)"


def test_the_request_sees_the_n_plus_one(make_engine: MakeEngine, captured: Events) -> None:
    engine, _ = make_engine()
    request = RequestScope(route="/users", request_id="req-9")
    token = enter_request(request)
    try:
        with engine.connect() as conn:
            for user_id in range(1, 7):
                conn.execute(text(f"SELECT name FROM users WHERE id = {user_id}")).one()
    finally:
        exit_request(token)

    assert {fp: len(ms) for fp, ms in request.queries.items()} == {
        "SELECT name FROM users WHERE id = ?": 6
    }
    assert {(e["route"], e["request_id"]) for e in db_events(captured)} == {("/users", "req-9")}


def test_a_wait_for_a_pooled_connection_is_measured_and_put_on_the_statement(
    make_engine: MakeEngine, captured: Events
) -> None:
    engine, instrumentation = make_engine(poolclass=QueuePool, pool_size=1, max_overflow=0)
    with holding(engine, 0.4):
        sample = instrumentation.report_pool()
        started = time.perf_counter()
        with engine.connect() as conn:  # waits for the held connection
            waited_ms = (time.perf_counter() - started) * 1000
            conn.execute(text("SELECT 1")).all()
            conn.execute(text("SELECT 2")).all()
    after = instrumentation.report_pool()

    assert (sample["size"], sample["checked_out"], sample["overflow"]) == (1, 1, 0)
    first, second = db_events(captured)
    assert 200 <= first["pool_wait_ms"] <= waited_ms
    assert "pool_wait_ms" not in second  # the wait belongs to the first statement only
    assert after["wait_ms"] == first["pool_wait_ms"]
    assert (after["checked_out"], after["timeouts"]) == (0, 0)
    stats = instrumentation.stats()
    assert (stats.checkouts, stats.waits, stats.timeouts) == (2, 1, 0)
    assert stats.wait_ms_max == stats.wait_ms_total == first["pool_wait_ms"]
    assert instrumentation.report_pool().get("wait_ms") is None  # a new interval


def test_a_checkout_that_times_out_is_counted(make_engine: MakeEngine, captured: Events) -> None:
    engine, instrumentation = make_engine(
        poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    with holding(engine, 10), pytest.raises(exc.TimeoutError):
        engine.connect()
    sample = instrumentation.report_pool()
    assert sample["timeouts"] == 1
    assert sample["wait_ms"] >= 90
    assert [e["kind"] for e in captured] == ["pool"]  # report_pool records it too
    assert instrumentation.report_pool()["timeouts"] == 0
    assert instrumentation.stats().timeouts == 1


def test_overflow_connections_are_reported(make_engine: MakeEngine, captured: Events) -> None:
    engine, instrumentation = make_engine(poolclass=QueuePool, pool_size=1, max_overflow=2)
    with holding(engine, 10), holding(engine, 10):
        sample = instrumentation.report_pool()
    assert (sample["size"], sample["checked_out"], sample["overflow"]) == (1, 2, 1)
    assert "wait_ms" not in sample  # opening an overflow connection is not waiting
    stats = instrumentation.stats()
    assert (stats.waits, stats.connects) == (0, 1)  # one connection opened for the overflow


def test_the_pool_is_sampled_periodically_once_used(
    make_engine: MakeEngine, captured: Events
) -> None:
    engine, instrumentation = make_engine(pool_interval=0.05, pool_size=2)
    time.sleep(0.2)
    assert [e for e in captured if e["kind"] == "pool"] == []  # not used yet: no thread
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    deadline = time.monotonic() + 5
    while len([e for e in captured if e["kind"] == "pool"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    samples = [e for e in captured if e["kind"] == "pool"]
    assert len(samples) >= 2
    assert {(s["pool"], s["size"]) for s in samples} == {(instrumentation.pool_name, 2)}
    assert instrumentation.pool_name == "sqlite/app0.db"


def test_waits_are_still_measured_after_dispose(make_engine: MakeEngine, captured: Events) -> None:
    engine, instrumentation = make_engine(poolclass=QueuePool, pool_size=1, max_overflow=0)
    engine.dispose()  # a new pool object
    with holding(engine, 0.3), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert db_events(captured)[-1]["pool_wait_ms"] >= 100
    assert instrumentation.stats().waits == 1


def test_instrument_once_and_close(make_engine: MakeEngine, captured: Events) -> None:
    engine, instrumentation = make_engine()
    assert instrument_engine(engine) is instrumentation
    instrumentation.close()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert captured == []
    assert "_do_get" not in vars(engine.pool)
    again = instrument_engine(engine, pool_name="main", pool_interval=0)
    try:
        assert again is not instrumentation and again.pool_name == "main"
    finally:
        again.close()


def test_bad_arguments_are_refused(make_engine: MakeEngine) -> None:
    engine, _ = make_engine()
    with pytest.raises(TypeError):
        instrument_engine(object())
    with pytest.raises(ValueError):
        EngineInstrumentation(engine, slow_ms=None, pool_name=None, pool_interval=-1)
