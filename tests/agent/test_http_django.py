"""The Django middleware: a minimal project served by werkzeug to a real collector,
plus the async path and ``re_path`` routes through Django's own clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, re_path

from conftest import Server
from perfpulse.agent import flush
from perfpulse.agent.request import UNMATCHED
from perfpulse.agent.scope import current_request

from .conftest import Start, serve_wsgi

FINGERPRINT = "SELECT * FROM comments WHERE post_id = ?"
seen_routes: list[str | None] = []


class QuotaExceeded(Exception):
    pass


def user(request: HttpRequest, pk: int) -> HttpResponse:
    return JsonResponse({"id": pk})


def post(request: HttpRequest, slug: str) -> HttpResponse:
    rs = current_request()
    assert rs is not None
    seen_routes.append(rs.route)
    for _ in range(7):
        rs.add_query(FINGERPRINT, 1.0)
    return HttpResponse("post")


def quota(request: HttpRequest) -> HttpResponse:
    raise QuotaExceeded("over")


def archive(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(year)


async def async_user(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(str(pk))


urlpatterns = [
    path("users/<int:pk>/", user),
    path("blog/<slug:slug>/", post),
    path("quota/", quota),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", archive),
    path("async/users/<int:pk>/", async_user),
]


@pytest.fixture(scope="module")
def django_project() -> Iterator[None]:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="perfpulse-test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["perfpulse.agent.django.PerfpulseMiddleware"],
            INSTALLED_APPS=[],
            LOGGING_CONFIG=None,
        )
        django.setup()
    yield


def test_django_under_werkzeug_stores_routes_errors_and_n_plus_one(
    django_project: None, server: Server, agent: Start
) -> None:
    from django.core.wsgi import get_wsgi_application

    agent(endpoint=server.url)
    with serve_wsgi(get_wsgi_application()) as url, httpx.Client(base_url=url) as client:
        assert client.get("/users/12/").status_code == 200
        assert client.get("/blog/hello-world/").status_code == 200
        assert client.get("/quota/").status_code == 500
        assert client.get("/archive/2024/").status_code == 200
        assert client.get("/nowhere/123/").status_code == 404
    assert flush(timeout_s=10)
    server.wait_stored(count=5, service="shop")
    assert server.stop() == 0

    rows = server.rows("SELECT route, status, exception, db_count FROM http ORDER BY ts")
    assert rows == [  # the collector drops the trailing slash of the templates sent
        ("/users/{pk}", 200, None, None),
        ("/blog/{slug}", 200, None, 7),
        ("/quota", 500, f"{__name__}.QuotaExceeded", None),
        ("/archive/{year}", 200, None, None),
        (UNMATCHED, 404, None, None),
    ]
    assert seen_routes == ["/blog/{slug}/"], "the route is set before the view runs"
    assert server.rows("SELECT route, fingerprint, count FROM n_plus_one") == [
        ("/blog/{slug}", FINGERPRINT, 7)
    ]
    assert server.rows("SELECT type, message, route FROM error") == [
        (f"{__name__}.QuotaExceeded", "over", "/quota")
    ]


def test_django_async_middleware_path(django_project: None, captured: list[dict[str, Any]]) -> None:
    from django.test import AsyncClient

    async def run() -> int:
        response = await AsyncClient().get("/async/users/5/", headers={"traceparent": "bogus"})
        return int(response.status_code)

    assert asyncio.run(run()) == 200
    (event,) = [e for e in captured if e["kind"] == "http"]
    assert event["route"] == "/async/users/{pk}/"
    assert event["status"] == 200 and event["response_bytes"] == 1
    assert len(event["trace_id"]) == 32, "a malformed traceparent gets a fresh trace id"
