"""DB-API 2 instrumentation against a real SQLite database."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import perfpulse.agent
from perfpulse.agent import db
from perfpulse.agent import scope as agent_scope
from perfpulse.agent.nplusone import n_plus_one_events
from perfpulse.agent.scope import RequestScope, enter_request, exit_request
from perfpulse.cache import PerformanceCache
from perfpulse.model import fingerprint

Events = list[dict[str, Any]]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    raw = sqlite3.connect(tmp_path / "app.db")
    raw.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    raw.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"user{i}") for i in range(1, 11)])
    raw.commit()
    raw.create_function("slow", 1, _sleep_ms)  # slow(ms) sleeps, then returns ms
    proxy = db.instrument_connection(raw, system="sqlite", slow_ms=50)
    yield proxy
    raw.close()


def _sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


def db_events(events: Events) -> Events:
    return [e for e in events if e["kind"] == "db"]


def test_statement_is_recorded_with_fingerprint_rows_and_system(
    conn: Any, captured: Events
) -> None:
    rows = conn.execute(
        "SELECT name FROM users WHERE id IN (1, 2, 3) AND name <> 'mallory' ORDER BY id"
    ).fetchall()

    assert rows == [("user1",), ("user2",), ("user3",)]
    [event] = db_events(captured)
    assert (
        event["fingerprint"] == "SELECT name FROM users WHERE id IN (?) AND name <> ? ORDER BY id"
    )
    assert event["rows"] == 3
    assert event["system"] == "sqlite"
    assert 0 < event["duration_ms"] < 1000
    assert abs(event["ts"] - time.time()) < 5
    assert "statement" not in event  # fast: no text kept
    assert "error" not in event and "route" not in event


def test_writes_report_the_row_count(conn: Any, captured: Events) -> None:
    cur = conn.cursor()
    cur.execute("UPDATE users SET name = name || '!' WHERE id <= ?", (4,))
    cur.executemany("INSERT INTO users (name) VALUES (?)", [("a",), ("b",), ("c",)])
    conn.execute("DELETE FROM users WHERE id = 1")

    assert [(e["fingerprint"], e["rows"]) for e in db_events(captured)] == [
        ("UPDATE users SET name = name || ? WHERE id <= ?", 4),
        ("INSERT INTO users (name) VALUES (?)", 3),
        ("DELETE FROM users WHERE id = ?", 1),
    ]


def test_a_lazy_result_is_recorded_once_fetched_with_its_rows_and_fetch_time(
    conn: Any, captured: Events
) -> None:
    # SQLite computes rows as they are fetched: slow() runs once per row.
    cur = conn.execute("SELECT slow(20) FROM users WHERE id <= 3")
    assert db_events(captured) == []  # rowcount is -1 until the rows are read
    assert cur.fetchone() == (20,)
    assert cur.fetchmany(5) == [(20,), (20,)]  # fewer than asked: exhausted

    [event] = db_events(captured)
    assert event["rows"] == 3
    assert event["duration_ms"] >= 55  # three rows of 20 ms, fetching included


def test_iteration_close_reuse_and_drop_all_finish_a_pending_statement(
    conn: Any, captured: Events
) -> None:
    assert [row[0] for row in conn.execute("SELECT id FROM users WHERE id < 4")] == [1, 2, 3]

    cur = conn.cursor()
    cur.execute("SELECT id FROM users")
    cur.fetchone()
    cur.fetchone()
    cur.execute("SELECT id FROM users WHERE id = 7")  # reused: the first one is done
    assert cur.fetchall() == [(7,)]

    cur = conn.execute("SELECT id FROM users WHERE id > 5")
    cur.fetchone()
    cur.close()

    cur = conn.execute("SELECT id FROM users WHERE id > 8")
    del cur  # dropped half read

    assert [(e["fingerprint"], e["rows"]) for e in db_events(captured)] == [
        ("SELECT id FROM users WHERE id < ?", 3),
        ("SELECT id FROM users", 2),
        ("SELECT id FROM users WHERE id = ?", 1),
        ("SELECT id FROM users WHERE id > ?", 1),
        ("SELECT id FROM users WHERE id > ?", 0),
    ]


def test_a_slow_statement_keeps_its_text_with_values_redacted(conn: Any, captured: Events) -> None:
    conn.execute("SELECT slow(60), name FROM users\n WHERE name = 'user1' AND id IN (1, 2)")
    conn.execute("SELECT name FROM users WHERE name = 'bob'").fetchall()

    slow, fast = db_events(captured)
    assert slow["duration_ms"] >= 55
    assert slow["statement"] == "SELECT slow(?), name FROM users\n WHERE name = ? AND id IN (?, ?)"
    assert slow["fingerprint"] == "SELECT slow(?), name FROM users WHERE name = ? AND id IN (?)"
    assert "statement" not in fast


def test_the_slow_threshold_comes_from_argument_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(db.SLOW_QUERY_ENV, raising=False)
    assert db.slow_threshold() == db.DEFAULT_SLOW_MS == 100.0
    monkeypatch.setenv(db.SLOW_QUERY_ENV, "250")
    assert db.slow_threshold() == 250.0
    assert db.slow_threshold(0) == 0.0
    monkeypatch.setenv(db.SLOW_QUERY_ENV, "fast")
    with caplog.at_level(logging.WARNING, logger="perfpulse.agent"):
        assert db.slow_threshold() == 100.0
    assert "PERFPULSE_SLOW_QUERY_MS" in caplog.text
    with pytest.raises(ValueError):
        db.slow_threshold(-1)


def test_an_error_is_recorded_with_its_type_and_raised_untouched(
    conn: Any, captured: Events
) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE") as raised:
        conn.execute("INSERT INTO users (name) VALUES ('user1')")
    assert type(raised.value) is sqlite3.IntegrityError
    with pytest.raises(sqlite3.OperationalError):
        conn.cursor().execute("SELECT * FROM missing WHERE id = 5")

    first, second = db_events(captured)
    assert first["error"] == "IntegrityError"
    assert first["fingerprint"] == "INSERT INTO users (name) VALUES (?)"
    assert "rows" not in first
    assert second["error"] == "OperationalError"
    assert second["fingerprint"] == "SELECT * FROM missing WHERE id = ?"


def test_statements_in_a_request_carry_it_and_show_the_n_plus_one(
    conn: Any, captured: Events
) -> None:
    request = RequestScope(route="/orders/{id}", request_id="req-1", trace_id="a" * 32)
    token = enter_request(request)
    try:
        conn.execute("SELECT id FROM users WHERE id <= 6").fetchall()
        for user_id in range(1, 7):  # the N+1: one query per row, values inline
            conn.execute(f"SELECT name FROM users WHERE id = {user_id}").fetchone()
    finally:
        exit_request(token)

    loop = "SELECT name FROM users WHERE id = ?"
    assert {fp: len(ms) for fp, ms in request.queries.items()} == {
        "SELECT id FROM users WHERE id <= ?": 1,
        loop: 6,
    }
    assert request.db_count == 7
    assert request.db_time_ms == pytest.approx(sum(e["duration_ms"] for e in db_events(captured)))
    assert {(e["route"], e["request_id"], e["trace_id"]) for e in db_events(captured)} == {
        ("/orders/{id}", "req-1", "a" * 32)
    }
    [finding] = n_plus_one_events(request, "/orders/{id}", threshold=5, ts=time.time())
    assert (finding["fingerprint"], finding["count"]) == (loop, 6)


def test_with_the_agent_off_a_request_still_sees_its_queries(conn: Any) -> None:
    assert not agent_scope.enabled()
    request = RequestScope(route="/x")
    token = enter_request(request)
    try:
        conn.execute("SELECT 1").fetchall()
    finally:
        exit_request(token)
    assert request.queries.keys() == {"SELECT ?"}


def test_with_the_agent_off_and_no_request_nothing_is_fingerprinted(
    conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(statement: str) -> str:
        raise AssertionError("fingerprinted while off")

    monkeypatch.setattr(db, "fingerprint_sql", fail)
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)


def test_the_proxy_behaves_like_the_connection(conn: Any, captured: Events) -> None:
    conn.row_factory = sqlite3.Row  # set through to the real connection
    with conn:  # a transaction: commits on exit
        cur = conn.execute("INSERT INTO users (name) VALUES (?)", ("zoe",))
        new_id = cur.lastrowid
    row = conn.execute("SELECT id, name FROM users WHERE id = ?", (new_id,)).fetchone()
    assert (row["id"], row["name"]) == (new_id, "zoe")
    assert conn.total_changes >= 1
    assert "perfpulse" in repr(conn)
    conn.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    assert [e["fingerprint"] for e in db_events(captured)][-1] == (
        "CREATE TABLE t (x); INSERT INTO t VALUES (?)"
    )
    assert db.instrument_connection(conn) is conn  # not wrapped twice


def test_record_query_reports_a_statement_of_any_driver(
    captured: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(db.SLOW_QUERY_ENV, raising=False)
    db.record_query("select * from t where id = 5", 150.0, system="duckdb", rows=1)
    db.record_query("select 1", 2.0, error="IOException")
    slow, failed = captured
    assert slow == {
        "kind": "db",
        "ts": pytest.approx(time.time() - 0.15, abs=5),
        "fingerprint": "SELECT * FROM t WHERE id = ?",
        "duration_ms": 150.0,
        "system": "duckdb",
        "rows": 1,
        "statement": "select * from t where id = ?",
    }
    assert (failed["error"], "statement" in failed) == ("IOException", False)


def test_instrument_sqlite3_wraps_connect_until_undone(tmp_path: Path, captured: Events) -> None:
    original = sqlite3.connect
    db.instrument_sqlite3(slow_ms=0)
    db.instrument_sqlite3()  # idempotent
    try:
        with_proxy = sqlite3.connect(tmp_path / "x.db")
        with_proxy.execute("SELECT 42").fetchall()
        with_proxy.close()
    finally:
        db.uninstrument_sqlite3()
    assert sqlite3.connect is original
    [event] = db_events(captured)
    assert (event["fingerprint"], event["system"], event["statement"]) == (
        "SELECT ?",
        "sqlite",
        "SELECT ?",
    )


def test_fingerprints_of_a_repeated_statement_come_from_the_cache(
    conn: Any, captured: Events
) -> None:
    statement = "SELECT name FROM users WHERE id = ? -- perfpulse cache test"
    conn.execute(statement, (1,)).fetchall()
    before = fingerprint._fingerprint_cached.cache_info()
    for i in range(50):
        conn.execute(statement, (i,)).fetchall()
    after = fingerprint._fingerprint_cached.cache_info()
    assert after.hits - before.hits == 50
    assert after.misses == before.misses


def test_a_failure_inside_the_instrumentation_never_reaches_the_application(
    conn: Any, captured: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(statement: str) -> str:
        raise RuntimeError("bug in perfpulse")

    monkeypatch.setattr(db, "fingerprint_sql", broken)
    failures = agent_scope.internal_failures
    assert conn.execute("SELECT count(*) FROM users").fetchall() == [(10,)]
    assert agent_scope.internal_failures == failures + 1
    assert db_events(captured) == []


def test_end_to_end_the_collector_stores_the_fingerprint_and_the_hit_ratio(
    server: Any, agent: Any, tmp_path: Path
) -> None:
    agent(endpoint=server.url)
    raw = sqlite3.connect(tmp_path / "e2e.db")
    conn = db.instrument_connection(raw, system="sqlite")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"u{i}") for i in range(10)])
    users = PerformanceCache(maxsize=100, ttl=60, name="users")

    @users.cached
    def name_of(user_id: int) -> str:
        row = conn.execute(f"SELECT name FROM users WHERE id = {user_id}").fetchone()
        return str(row[0])

    names = [name_of(i) for i in (1, 2, 1, 1, 2, 3, 3, 1)]  # 3 misses, 5 hits
    raw.close()
    assert names[0] == "u1"
    assert perfpulse.agent.flush(timeout_s=10)

    body = server.wait_stored("db.query.duration", 3, by="fingerprint")
    by_fingerprint = {g["key"]["fingerprint"]: g["count"] for g in body["groups"]}
    assert by_fingerprint["SELECT name FROM users WHERE id = ?"] == 3
    server.wait_stored("cache.duration", 3 + 8, by="cache")
    answer = server.get(
        "/api/v1/percentiles", metric="cache.duration", by="cache", **{"from": time.time() - 600}
    ).json()
    [group] = [g for g in answer["groups"] if g["key"]["cache"] == "users"]
    assert group["hit_ratio"] == pytest.approx(5 / 8)
