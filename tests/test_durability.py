"""Durability against a real process: SIGKILL, torn spool tails, SIGTERM, full spool."""

from __future__ import annotations

import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from conftest import INGEST_KEY, Server, http_batch
from perfpulse.spool.file import MAGIC


def numbered_batch(first: int, n: int) -> dict[str, Any]:
    now = time.time()
    return {
        "batch_id": uuid.uuid4().hex,
        "resource": {"service": "numbers"},
        "events": [
            {
                "kind": "http",
                "ts": now,
                "route": "/n",
                "method": "GET",
                "status": 200,
                "duration_ms": 1.0,
                "request_id": f"n{first + i}",
            }
            for i in range(n)
        ],
    }


def stored_ids(server: Server) -> list[str]:
    return [r[0] for r in server.rows("SELECT request_id FROM http WHERE service = 'numbers'")]


def test_sigkill_loses_no_acknowledged_event_and_stores_each_once(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    acked: list[int] = []
    sent = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal sent
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                batch = numbered_batch(sent, 50)
                sent += 50
                try:
                    r = c.post(
                        f"{server.url}/api/v1/events",
                        json=batch,
                        headers={"Authorization": f"Bearer {INGEST_KEY}"},
                    )
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 202:
                    acked.extend(range(sent - 50, sent))

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(1.5)
    server.kill()  # SIGKILL while the client is sending
    stop.set()
    thread.join()
    assert len(acked) >= 500, "the client should have been acknowledged many batches"

    server.start()  # replays the spool
    server.stop()
    ids = stored_ids(server)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = {f"n{i}" for i in acked} - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_torn_spool_tail_is_dropped_and_counted(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    assert server.send(numbered_batch(0, 10)).status_code == 202
    server.kill()
    segments = sorted((tmp_path / "data" / "spool").glob("*.seg"))
    assert segments
    with segments[-1].open("ab") as f:
        f.write(MAGIC + struct.pack("<I", 4096) + b"cut off")  # a record torn mid-header
    server.start()
    assert server.metric_value("perfpulse_spool_corrupt_records") == 1
    assert server.send(numbered_batch(10, 5)).status_code == 202
    server.stop()
    assert sorted(stored_ids(server), key=lambda s: int(s[1:])) == [f"n{i}" for i in range(15)]


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    for i in range(20):
        assert server.send(numbered_batch(i * 100, 100)).status_code == 202
    assert server.stop() == 0
    assert len(stored_ids(server)) == 2000
    # and it starts again on the same files
    server.start()
    server.stop()


def test_full_spool_answers_503_and_recovers(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--spool-max", "16KiB").start()
    try:
        big = numbered_batch(0, 400)  # larger than the whole spool
        r = server.send(big)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert (
            server.metric_value(
                'perfpulse_requests_rejected_total{endpoint="events",reason="spool_full"}'
            )
            == 1
        )
        # a refused batch may be retried with the same id: it was not remembered
        small = numbered_batch(1000, 3)
        assert server.send(small).status_code == 202
        assert server.send(http_batch(2)).status_code == 202
    finally:
        server.stop()
    assert sorted(stored_ids(server)) == ["n1000", "n1001", "n1002"]
