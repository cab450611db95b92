"""N+1 findings at request end, traceparent handling and route templates."""

from __future__ import annotations

import random
import re
import threading
from typing import Any

from perfpulse.agent import request as agent_request
from perfpulse.agent.config import Config
from perfpulse.agent.nplusone import n_plus_one_events
from perfpulse.agent.request import begin, error_name, finish, template
from perfpulse.agent.scope import RequestScope


def scope_with(counts: dict[str, int], ms: float = 1.0) -> RequestScope:
    rs = RequestScope(request_id="00f067aa0ba902b7")
    for fingerprint, n in counts.items():
        for _ in range(n):
            rs.add_query(fingerprint, ms)
    return rs


def test_a_fingerprint_at_the_threshold_is_a_finding_and_one_below_is_not() -> None:
    rs = scope_with({"SELECT a": 5, "SELECT b": 4, "SELECT c": 9}, ms=2.5)
    events = n_plus_one_events(rs, "/orders/{id}", threshold=5, ts=100.0)
    assert events == [
        {
            "kind": "n_plus_one",
            "ts": 100.0,
            "route": "/orders/{id}",
            "fingerprint": "SELECT c",
            "count": 9,
            "total_ms": 22.5,
            "request_id": "00f067aa0ba902b7",
        },
        {
            "kind": "n_plus_one",
            "ts": 100.0,
            "route": "/orders/{id}",
            "fingerprint": "SELECT a",
            "count": 5,
            "total_ms": 12.5,
            "request_id": "00f067aa0ba902b7",
        },
    ]
    assert n_plus_one_events(rs, "/orders/{id}", threshold=10, ts=100.0) == []


def test_threshold_from_init_applies_at_request_end(captured: list[dict[str, Any]]) -> None:
    agent_request.active = Config.resolve(
        service="shop", endpoint="http://127.0.0.1:9", n_plus_one_threshold=3, environ={}
    )
    finish(scope_with({"SELECT x": 3}), "/a", "GET", 200, 0.0, request_bytes=None, response_bytes=0)
    finish(scope_with({"SELECT x": 2}), "/b", "GET", 200, 0.0, request_bytes=None, response_bytes=0)
    found = [(e["route"], e["count"]) for e in captured if e["kind"] == "n_plus_one"]
    assert found == [("/a", 3)]
    http = [e for e in captured if e["kind"] == "http"]
    assert [(e["db_count"], e["db_time_ms"]) for e in http] == [(3, 3.0), (2, 2.0)]


def test_traceparent_is_used_only_when_valid(captured: list[dict[str, Any]]) -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    rs = begin(good)
    assert rs is not None and rs.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert begin(good.encode()).trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[union-attr]
    for bad in ["", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", good.upper()]:
        other = begin(bad)
        assert other is not None and other.trace_id is not None
        assert other.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736" and len(other.trace_id) == 32
        assert other.trace_id != "0" * 32
    ids = {begin(None).request_id for _ in range(1000)}  # type: ignore[union-attr]
    assert len(ids) == 1000


def test_request_ids_are_unique_across_threads_and_id_blocks(
    captured: list[dict[str, Any]],
) -> None:
    """Ids are made 256 to a block (see request.py): threads that cross block
    boundaries together still never share one."""
    per_thread = 5000
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(per_thread):
            rs = begin(None)
            assert rs is not None and rs.request_id is not None
            out.append(rs.request_id)

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 4 * per_thread
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_sampling_is_decided_per_request(captured: list[dict[str, Any]]) -> None:
    agent_request.active = Config.resolve(
        service="shop", endpoint="http://127.0.0.1:9", sample_rate=0.25, environ={}
    )
    random.seed(7)
    sampled = sum(begin(None) is not None for _ in range(4000))
    assert 850 < sampled < 1150
    agent_request.active = None
    assert begin(None) is None


def test_rules_of_every_framework_become_one_template_style() -> None:
    assert template("/users/<int:user_id>") == "/users/{user_id}"
    assert template("/files/<path:name>") == "/files/{name}"
    assert template("/a/<b>/<string(length=2):c>") == "/a/{b}/{c}"
    assert template("users/<int:pk>/") == "/users/{pk}/"
    assert template("/users/{id}") == "/users/{id}"
    assert template("") == "/"


def test_error_names_say_where_the_class_lives() -> None:
    class Local(Exception):
        pass

    assert error_name(ValueError()) == "ValueError"
    assert error_name(Local()).endswith("test_error_names_say_where_the_class_lives.<locals>.Local")
    assert error_name(Local()).startswith(__name__)
