"""Log-in, log-out, CSRF and the refusal of anonymous requests, over real HTTP."""

from __future__ import annotations

import re

import httpx
from tests.conftest import READ_TOKEN

from .conftest import Dashboard


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html
    return found.group(1)


def test_anonymous_page_request_redirects_to_login_and_shows_nothing(dashboard: Dashboard) -> None:
    r = httpx.get(dashboard.url + "/?range=6h", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2F%3Frange%3D6h"
    assert "shop" not in r.text


def test_anonymous_live_refresh_gets_401(dashboard: Dashboard) -> None:
    r = httpx.get(dashboard.url + "/", headers={"X-Perfpulse-Partial": "1"})
    assert r.status_code == 401


def test_forged_session_cookie_is_refused(dashboard: Dashboard) -> None:
    r = httpx.get(dashboard.url + "/", cookies={"perfpulse_session": "abc.def.ghi"})
    assert r.status_code == 303


def test_login_sets_httponly_samesite_cookie_and_logout_needs_csrf(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url) as client:
        form = client.get("/login?next=/%3Frange%3D6h")
        assert form.status_code == 200
        r = client.post(
            "/login", data={"csrf": _csrf(form.text), "token": READ_TOKEN, "next": "/?range=6h"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/?range=6h"
        cookie = next(
            h for h in r.headers.get_list("set-cookie") if h.startswith("perfpulse_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = client.get("/?range=6h")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        # log-out without the form's token is refused, and the session stays
        assert client.post("/logout", data={"csrf": "0" * 64}).status_code == 403
        assert client.get("/").status_code == 200
        assert client.post("/logout", data={"csrf": _csrf(page.text)}).status_code == 303
        client.cookies.delete("perfpulse_session")
        assert client.get("/").status_code == 303


def test_login_with_wrong_token_or_without_csrf_is_refused(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url) as client:
        form = client.get("/login")
        wrong = client.post("/login", data={"csrf": _csrf(form.text), "token": "ppr_nope"})
        assert wrong.status_code == 403 and "Wrong read token" in wrong.text
        assert "perfpulse_session" not in wrong.headers.get("set-cookie", "")
        no_csrf = client.post("/login", data={"token": READ_TOKEN})
        assert no_csrf.status_code == 403 and "perfpulse_session" not in client.cookies


def test_login_never_redirects_off_site(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url) as client:
        form = client.get("/login")
        r = client.post(
            "/login",
            data={"csrf": _csrf(form.text), "token": READ_TOKEN, "next": "//evil.example/x"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/"
