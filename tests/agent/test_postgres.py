"""psycopg and SQLAlchemy instrumentation against a real, throwaway PostgreSQL server.

The fixture makes a cluster in a temporary directory with ``initdb`` and starts
it with ``pg_ctl`` on a free loopback port (trust authentication, no fsync). As
root it runs both as the ``postgres`` system user, since PostgreSQL refuses to
run as root. Without PostgreSQL's binaries (Debian package ``postgresql``) the
tests fail: `make test` installs it.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import free_port
from perfpulse.agent import db
from perfpulse.agent.scope import RequestScope, enter_request, exit_request
from perfpulse.agent.sqlalchemy import instrument_engine

Events = list[dict[str, Any]]


def _bin_dir() -> Path | None:
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    found = versions[-1] if versions else shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """The conninfo of a PostgreSQL server that lives as long as this module's tests."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (make system installs it)")
    user: str | None = None
    base = Path(tempfile.mkdtemp(prefix="perfpulse-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = "postgres"
        account = pwd.getpwnam(user)
        os.chown(base, account.pw_uid, account.pw_gid)
    data, port = base / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run(args, user=user, check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "--username=postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w"]
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(*pg_ctl, "-l", str(base / "log"), "-o", options, "start")
        try:
            yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        finally:
            run(*pg_ctl, "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def conn(postgres: str) -> Iterator[Any]:
    db.instrument_psycopg()
    try:
        connection = psycopg.connect(postgres, autocommit=True)
    finally:
        db.uninstrument_psycopg()
    connection.execute("DROP TABLE IF EXISTS items")
    connection.execute("CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE)")
    yield connection
    connection.close()


def db_events(events: Events) -> Events:
    return [e for e in events if e["kind"] == "db"]


def test_psycopg_connect_returns_instrumented_connections(conn: Any, captured: Events) -> None:
    assert "perfpulse" in repr(conn)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO items VALUES (%s, %s)", [(i, f"item{i}") for i in range(8)])
        cur.execute("SELECT name FROM items WHERE id IN (%s, %s, %s) ORDER BY id", (1, 2, 3))
        assert cur.fetchall() == [("item1",), ("item2",), ("item3",)]
    conn.execute("UPDATE items SET name = upper(name) WHERE id >= 5")

    insert, select, update = db_events(captured)
    assert (insert["fingerprint"], insert["rows"]) == ("INSERT INTO items VALUES (?, ?)", 8)
    assert select["fingerprint"] == "SELECT name FROM items WHERE id IN (?) ORDER BY id"
    assert select["rows"] == 3  # psycopg knows a result's size as soon as it executes
    assert (update["fingerprint"], update["rows"]) == (
        "UPDATE items SET name = upper(name) WHERE id >= ?",
        3,
    )
    assert {e["system"] for e in db_events(captured)} == {"postgresql"}


def test_an_error_is_recorded_and_raised_untouched(conn: Any, captured: Events) -> None:
    conn.execute("INSERT INTO items VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO items VALUES (%s, %s)", (1, "b"))
    event = db_events(captured)[-1]
    assert (event["fingerprint"], event["error"]) == (
        "INSERT INTO items VALUES (?, ?)",
        "UniqueViolation",
    )


def test_composed_sql_is_fingerprinted_as_sent(conn: Any, captured: Events) -> None:
    query = sql.SQL("SELECT {} FROM {} WHERE id = {}").format(
        sql.Identifier("name"), sql.Identifier("items"), sql.Literal(7)
    )
    conn.execute(query).fetchall()
    assert db_events(captured)[-1]["fingerprint"] == 'SELECT "name" FROM "items" WHERE id = ?'


def test_a_server_side_cursor_counts_the_rows_fetched(conn: Any, captured: Events) -> None:
    conn.execute("INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, 25) AS i")
    captured.clear()
    with conn.transaction(), conn.cursor(name="big") as cur:
        cur.execute("SELECT id FROM items WHERE id > %s", (5,))
        assert db_events(captured) == []
        assert len(cur.fetchmany(10)) == 10
        assert len(list(cur)) == 10
    [event] = db_events(captured)
    assert (event["fingerprint"], event["rows"]) == ("SELECT id FROM items WHERE id > ?", 20)


def test_a_slow_statement_keeps_its_text_redacted(conn: Any, captured: Events) -> None:
    conn.execute("SELECT pg_sleep(0.12), 'secret-token' AS t").fetchall()
    [event] = db_events(captured)
    assert event["duration_ms"] >= 100  # the default threshold
    assert event["statement"] == "SELECT pg_sleep(?), ? AS t"


def test_a_request_sees_the_n_plus_one(conn: Any, captured: Events) -> None:
    conn.execute("INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, 6) AS i")
    request = RequestScope(route="/items", request_id="req-5")
    token = enter_request(request)
    try:
        for item_id in range(1, 7):
            conn.execute("SELECT name FROM items WHERE id = %s", (item_id,)).fetchone()
    finally:
        exit_request(token)
    assert {fp: len(ms) for fp, ms in request.queries.items()} == {
        "SELECT name FROM items WHERE id = ?": 6
    }


def test_sqlalchemy_on_postgresql_reports_rows_and_the_pool_wait(
    postgres: str, captured: Events
) -> None:
    params = dict(part.split("=") for part in postgres.split())
    url = f"postgresql+psycopg://postgres@127.0.0.1:{params['port']}/postgres"
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=5)
    instrumentation = instrument_engine(engine, pool_interval=0)
    held = threading.Event()

    def hold() -> None:
        with engine.connect():
            held.set()
            time.sleep(0.4)

    try:
        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(5)
        with engine.connect() as c:
            rows = c.execute(text("SELECT generate_series(1, :n)"), {"n": 4}).all()
        thread.join(10)
        sample = instrumentation.report_pool()
    finally:
        instrumentation.close()
        engine.dispose()

    assert len(rows) == 4
    [event] = [e for e in db_events(captured) if e["fingerprint"] == "SELECT generate_series(?, ?)"]
    assert (event["system"], event["rows"]) == ("postgresql", 4)
    assert event["pool_wait_ms"] >= 200
    assert (sample["pool"], sample["size"], sample["wait_ms"]) == (
        "postgresql/postgres",
        1,
        event["pool_wait_ms"],
    )


def test_an_async_engine_is_instrumented_through_its_sync_engine(
    postgres: str, captured: Events
) -> None:
    params = dict(part.split("=") for part in postgres.split())
    url = f"postgresql+psycopg://postgres@127.0.0.1:{params['port']}/postgres"

    async def main() -> RequestScope:
        engine = create_async_engine(url, pool_size=1, max_overflow=0)
        instrumentation = instrument_engine(engine, pool_interval=0)
        held = asyncio.Event()

        async def hold() -> None:
            async with engine.connect():
                held.set()
                await asyncio.sleep(0.4)

        async def query() -> RequestScope:
            request = RequestScope(route="/async")
            token = enter_request(request)
            try:
                await held.wait()
                async with engine.connect() as c:
                    await c.execute(text("SELECT 1 WHERE 2 = :x"), {"x": 2})
            finally:
                exit_request(token)
            return request

        try:
            _, request = await asyncio.gather(hold(), query())
        finally:
            instrumentation.close()
            await engine.dispose()
        return request

    request = asyncio.run(main())
    [event] = [e for e in db_events(captured) if e.get("route") == "/async"]
    assert event["fingerprint"] == "SELECT ? WHERE ? = ?"
    assert event["pool_wait_ms"] >= 200
    assert request.queries.keys() == {"SELECT ? WHERE ? = ?"}
