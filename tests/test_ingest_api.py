"""Ingest over HTTP against a real collector: auth, bad input, limits, privacy."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest

from conftest import INGEST_KEY, ORIGIN, PUBLIC_KEY, READ_TOKEN, Server, beacon, http_batch

WRONG = "definitely-not-a-key"
CREDENTIALS = {
    "none": None,
    "public": PUBLIC_KEY,
    "ingest": INGEST_KEY,
    "read": READ_TOKEN,
    "wrong": WRONG,
}


def call(server: Server, endpoint: str, cred: str | None) -> httpx.Response:
    """One request to ``endpoint`` presenting ``cred`` the way that endpoint reads keys."""
    if endpoint == "events":
        headers = {"Authorization": f"Bearer {cred}"} if cred else {}
        return httpx.post(f"{server.url}/api/v1/events", json=http_batch(1), headers=headers)
    if endpoint == "rum":
        url = f"{server.url}/api/v1/rum" + (f"?key={cred}" if cred else "")
        return httpx.post(url, content=json.dumps(beacon()), headers={"Origin": ORIGIN})
    headers = {"Authorization": f"Bearer {cred}"} if cred else {}
    path, _, by = endpoint.partition("?by=")
    params = {"metric": "http.server.duration", **({"by": by} if by else {})}
    return httpx.get(f"{server.url}{path}", params=params, headers=headers)


READ_ENDPOINTS = [
    "/api/v1/percentiles",
    "/api/v1/timeseries",
    "/api/v1/top?by=route",
    "/api/v1/vitals",
    "/api/v1/rum/views",
    "/api/v1/metrics",
]
EXPECTED = {
    # endpoint → the one credential it accepts
    "events": "ingest",
    "rum": "public",
    **dict.fromkeys(READ_ENDPOINTS, "read"),
}


def test_auth_matrix(server: Server) -> None:
    seen: dict[tuple[str, str], int] = {}
    for endpoint, accepted in EXPECTED.items():
        for name, cred in CREDENTIALS.items():
            r = call(server, endpoint, cred)
            seen[(endpoint, name)] = r.status_code
            if name == accepted:
                assert r.status_code in (200, 202), (endpoint, name, r.text)
            elif name == "none":
                assert r.status_code == 401, (endpoint, name)
                assert "error" in r.json()
            else:
                assert r.status_code == 403, (endpoint, name)
                assert "error" in r.json()
    assert len(seen) == len(EXPECTED) * len(CREDENTIALS)
    # open endpoints
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def stored_http_count(server: Server) -> int:
    r = server.get(
        "/api/v1/percentiles", metric="http.server.duration", **{"from": time.time() - 7200}
    )
    return sum(g["count"] for g in r.json()["groups"])


BAD_BATCHES: list[tuple[str, Any, str | None]] = [
    ("not json", b"{nope", None),
    ("a string not UTF-8", b'{"batch_id":"b\xff","resource":{"service":"s"},"events":[]}', None),
    (
        "events not a list",
        {"batch_id": "b", "resource": {"service": "s"}, "events": {}},
        "$.events",
    ),
    ("missing batch_id", {"resource": {"service": "s"}, "events": []}, "$.batch_id"),
    ("mistyped status", "status", "$.events[1].status"),
    ("unknown kind", "kind", "$.events[1].kind"),
    ("missing duration", "duration", "$.events[1]"),
]


@pytest.mark.parametrize(("name", "body", "field"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_malformed_batch_is_refused_whole(
    server: Server, name: str, body: Any, field: str | None
) -> None:
    if isinstance(body, str):
        batch = http_batch(3)
        if body == "status":
            batch["events"][1]["status"] = "200"
        elif body == "kind":
            batch["events"][1]["kind"] = "nope"
        else:
            del batch["events"][1]["duration_ms"]
        raw = json.dumps(batch).encode()
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = json.dumps(body).encode()
    r = httpx.post(
        f"{server.url}/api/v1/events",
        content=raw,
        headers={"Authorization": f"Bearer {INGEST_KEY}"},
    )
    assert r.status_code == 400
    answer = r.json()
    assert answer["error"]
    if field is not None:
        assert answer["field"] == field
    # nothing of it was stored: a good batch afterwards is all there is
    assert server.send(http_batch(2)).status_code == 202
    server.settle()
    assert stored_http_count(server) == 2
    assert server.metric_value("perfpulse_requests_rejected_total") == 1


def test_body_limits_and_gzip(tmp_path: Any) -> None:
    server = Server(tmp_path / "d", "--max-body", "64KiB").start()
    try:
        auth = {"Authorization": f"Bearer {INGEST_KEY}"}
        big = json.dumps(http_batch(1500)).encode()
        assert len(big) > 64 * 1024
        r = httpx.post(f"{server.url}/api/v1/events", content=big, headers=auth)
        assert r.status_code == 413
        # streamed without Content-Length: cut off once past the limit
        r = httpx.post(
            f"{server.url}/api/v1/events",
            content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
            headers=auth,
        )
        assert r.status_code == 413
        # a small gzip body that inflates past the limit: a gzip bomb
        bomb = gzip.compress(b'{"batch_id":"x","events":[' + b" " * (10 << 20) + b"]}")
        assert len(bomb) < 64 * 1024
        r = httpx.post(
            f"{server.url}/api/v1/events",
            content=bomb,
            headers={**auth, "Content-Encoding": "gzip"},
        )
        assert r.status_code == 413
        r = httpx.post(
            f"{server.url}/api/v1/events",
            content=b"not gzip",
            headers={**auth, "Content-Encoding": "gzip"},
        )
        assert r.status_code == 400
        r = httpx.post(
            f"{server.url}/api/v1/events", content=b"{}", headers={**auth, "Content-Encoding": "br"}
        )
        assert r.status_code == 415
        # a good gzip batch is accepted
        r = server.send(http_batch(4), gz=True)
        assert r.status_code == 202 and r.json()["accepted"] == 4
        server.settle()
        assert stored_http_count(server) == 4
    finally:
        server.kill()


def test_per_event_sanity_drops_and_counts(server: Server) -> None:
    now = time.time()
    batch = http_batch(2)
    bad = [
        {"duration_ms": -1.0},
        {"duration_ms": 11 * 60 * 1000.0},
        {"ts": now + 2 * 86400},
        {"ts": now - 30 * 86400},
    ]
    for change in bad:
        batch["events"].append({**batch["events"][0], **change})
    r = server.send(batch)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2
    assert body["dropped"] == 4
    assert body["dropped_by_reason"] == {
        "negative_value": 1,
        "absurd_value": 1,
        "future_timestamp": 1,
        "too_old": 1,
    }
    server.wait_stored(count=2)
    assert stored_http_count(server) == 2
    assert server.metric_value('perfpulse_events_rejected_total{reason="too_old"}') == 1


def test_retried_batch_is_stored_once(server: Server) -> None:
    batch = http_batch(5)
    first = server.send(batch)
    again = server.send(batch)
    assert first.status_code == again.status_code == 202
    assert again.json()["duplicate"] is True
    # the same batch id from the browser key is a different batch
    server.settle()
    assert stored_http_count(server) == 5
    assert server.metric_value("perfpulse_duplicate_batches_total") == 1


def test_beacon_origin_rules_and_cors(server: Server) -> None:
    r = server.beacon(beacon(), origin="https://evil.example")
    assert r.status_code == 403
    r = server.beacon(beacon(), origin=None)
    assert r.status_code == 403
    pre = httpx.options(
        f"{server.url}/api/v1/rum?key={PUBLIC_KEY}",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in pre.headers["vary"]
    bad_pre = httpx.options(f"{server.url}/api/v1/rum", headers={"Origin": "https://evil.example"})
    assert bad_pre.status_code == 403
    r = server.beacon(beacon())
    assert r.status_code == 202
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["vary"] == "Origin"
    assert r.json()["accepted"] == 4  # the page view and its three vitals


def test_beacon_is_redacted_and_templated(server: Server) -> None:
    b = beacon()
    assert server.beacon(b).status_code == 202
    deadline = time.monotonic() + 10
    views: list[dict[str, Any]] = []
    while not views and time.monotonic() < deadline:
        views = server.get("/api/v1/rum/views", **{"from": time.time() - 60}).json()["views"]
        time.sleep(0.05)
    (view,) = views
    assert view["id"] == b["id"]
    assert view["url"] == "https://shop.example/orders/12345?token="
    assert view["page"] == "/orders/{id}"
    lcp = next(v for v in view["vitals"] if v["name"] == "LCP")
    assert lcp["value"] == 2100.0
    assert lcp["rating"] == "good"
    assert lcp["attribution"] == {"element": "img.hero", "url": "https://cdn.example/a.jpg?sig="}


def _lcp_attribution(value: Any) -> dict[str, Any]:
    b = beacon()
    b["vitals"][0]["attribution"] = value
    return b


BAD_BEACONS: list[tuple[str, bytes, str | None]] = [
    ("not json", b'{"id": "x", ', None),
    (
        "missing url",
        json.dumps({k: v for k, v in beacon().items() if k != "url"}).encode(),
        "$.url",
    ),
    ("mistyped value", json.dumps(beacon(vitals=[{"name": "LCP", "value": "1"}])).encode(), None),
    ("attribution a number", json.dumps(_lcp_attribution(5)).encode(), None),
    ("attribution a string", json.dumps(_lcp_attribution("//x.example/?t=1")).encode(), None),
    ("attribution an array", json.dumps(_lcp_attribution([{"a": 1}])).encode(), None),
    ("attribution a bool", json.dumps(_lcp_attribution(True)).encode(), None),
    ("attribution truncated", json.dumps(beacon())[:-40].encode(), None),
    (
        "a string not UTF-8",
        json.dumps(beacon(browser="fire-fox")).encode().replace(b"-", b"\xff"),
        None,
    ),
]
BAD_BEACON_FIELDS = {
    "mistyped value": "$.vitals[0].value",
    "attribution a number": "$.vitals[0].attribution",
    "attribution a string": "$.vitals[0].attribution",
    "attribution an array": "$.vitals[0].attribution",
    "attribution a bool": "$.vitals[0].attribution",
}


def test_malformed_beacon_is_refused_whole(server: Server) -> None:
    """Each bad beacon gets 400 naming its first bad field (an attribution that is
    not an object or null included, which normalizing checks, not the decoder), and
    nothing of any of them is stored."""
    for name, raw, field in BAD_BEACONS:
        r = httpx.post(
            f"{server.url}/api/v1/rum?key={PUBLIC_KEY}",
            content=raw,
            headers={"Origin": ORIGIN, "Content-Type": "text/plain"},
        )
        assert r.status_code == 400, name
        answer = r.json()
        assert answer["error"], name
        want = field or BAD_BEACON_FIELDS.get(name)
        if want is not None:
            assert answer.get("field") == want, (name, answer)
        if name.startswith("attribution a "):
            assert answer["error"].startswith("Expected `object | null`, got `"), answer
    # the same attribution as an object, spaced and escaped differently, is stored
    # compact and redacted, and null or {} as none
    good = beacon()
    good["vitals"][0]["attribution"] = {
        "element": "img.hero",
        "url": "https://cdn.example/a.jpg?sig=xyz",
    }
    good["vitals"][1]["attribution"] = None
    good["vitals"][2]["attribution"] = {}
    raw = json.dumps(good, indent=2).replace('"img.hero"', '"img.h\\u0065ro"').encode()
    assert server.beacon_raw(raw).status_code == 202
    server.settle()
    views = server.get("/api/v1/rum/views", **{"from": time.time() - 60}).json()["views"]
    assert [v["id"] for v in views] == [good["id"]]  # nothing of the bad ones
    by_name = {v["name"]: v for v in views[0]["vitals"]}
    assert by_name["LCP"]["attribution"] == {
        "element": "img.hero",
        "url": "https://cdn.example/a.jpg?sig=",
    }
    assert by_name["CLS"]["attribution"] is None
    assert by_name["INP"]["attribution"] is None
    assert server.metric_value("perfpulse_requests_rejected_total") == len(BAD_BEACONS)


def test_route_cap_folds_into_other(tmp_path: Any) -> None:
    server = Server(tmp_path / "d", "--route-cap", "3").start()
    try:
        batch = http_batch(0)
        now = time.time()
        batch["events"] = [
            {
                "kind": "http",
                "ts": now,
                "route": f"/page-{name}",
                "method": "GET",
                "status": 200,
                "duration_ms": 1.0,
            }
            for name in ("a", "b", "c", "d", "e")
        ]
        assert server.send(batch).status_code == 202
        body = server.wait_stored(count=5, by="route")
        routes = {g["key"]["route"]: g["count"] for g in body["groups"]}
        assert routes == {"/page-a": 1, "/page-b": 1, "/page-c": 1, "other": 2}
        assert server.metric_value("perfpulse_routes_folded") == 2
    finally:
        server.kill()


def test_numeric_path_segments_become_templates(server: Server) -> None:
    batch = http_batch(1, route="/orders/98765/items/550e8400-e29b-41d4-a716-446655440000")
    assert server.send(batch).status_code == 202
    body = server.wait_stored(by="route")
    assert [g["key"]["route"] for g in body["groups"]] == ["/orders/{id}/items/{uuid}"]


def test_metrics_endpoint_reports_what_happened(server: Server) -> None:
    assert server.send(http_batch(3)).status_code == 202
    assert server.send(http_batch(1), key=WRONG).status_code == 403
    server.settle()
    assert server.metric_value('perfpulse_events_accepted_total{endpoint="events"}') == 3
    assert (
        server.metric_value('perfpulse_requests_rejected_total{endpoint="events",reason="bad_key"}')
        == 1
    )
    assert server.metric_value('perfpulse_table_rows{table="http"}') == 3
    assert server.metric_value("perfpulse_writer_flush_seconds_count") >= 1


def test_browser_agent_is_served_with_a_versioned_long_cached_url(server: Server) -> None:
    plain = httpx.get(f"{server.url}/rum.js")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.headers["cache-control"] == "public, max-age=3600"
    versioned = plain.headers["link"].split(">")[0].lstrip("<")
    assert versioned.startswith("/rum.") and versioned != "/rum.js"
    pinned = httpx.get(f"{server.url}{versioned}")
    assert pinned.status_code == 200 and pinned.content == plain.content
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = httpx.get(f"{server.url}/rum.000000000000.js")
    assert stale.status_code == 302 and stale.headers["location"] == versioned
