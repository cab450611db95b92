"""The dashboard's routes: log-in, pages, partial refreshes and static files.

Every page is server-rendered from a Jinja2 template (autoescaped: a stored
``<script>`` renders as text) with data read through the query layer only.
A page is a module in :mod:`perfpulse.web.pages` with one function,
``build(ctx) -> dict``, whose answer becomes the template's context.

Requests carrying ``X-Perfpulse-Partial: 1`` (the live refresh in
``dashboard.js``) get only the inner HTML of ``<main>``; when the session has
expired they get 401 instead of a redirect, so the page can say so.

Every response carries a strict Content-Security-Policy (scripts from this
origin only, no inline scripts), ``nosniff``, ``DENY`` framing and
``Server-Timing: render;dur=…`` with the server time spent on the page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from perfpulse.keys import matches
from perfpulse.query.service import QueryError
from perfpulse.web import format as fmt
from perfpulse.web.pages import PAGES, Page, PageContext
from perfpulse.web.session import COOKIE, PRE_COOKIE, Sessions, new_anchor
from perfpulse.web.view import FILTERS as FILTER_DIMS
from perfpulse.web.view import RANGE_LABELS, View

if TYPE_CHECKING:
    from jinja2 import Environment

    from perfpulse.server import Collector

HERE = Path(__file__).parent
PARTIAL = "x-perfpulse-partial"
REFRESH_S = 30
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt.FILTERS)
    env.globals.update(nav=[p for p in PAGES if p.nav], range_labels=RANGE_LABELS)
    return env


def _safe_next(target: str | None) -> str:
    """Only a local path may follow a log-in (no ``//host`` or ``https://…``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _refresh(ctx: PageContext) -> int:
    """Live refresh period: ``?refresh=N`` seconds (2 to 3600), else 30."""
    try:
        return min(3600, max(2, int(ctx.args.get("refresh", REFRESH_S))))
    except ValueError:
        return REFRESH_S


@dataclass(slots=True)
class Dashboard:
    collector: Callable[[], Collector]
    _env: Environment | None = None  # made on the first page: jinja2 loads with it
    # the filter bar's choices change slowly: read them at most every 30 s
    _choices: TTLCache[str, list[str]] = field(default_factory=lambda: TTLCache(16, 30.0))
    _choices_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def env(self) -> Environment:
        if self._env is None:
            self._env = environment()
        return self._env

    def choices(self, ctx: PageContext) -> dict[str, list[str]]:
        out = {}
        for dim in FILTER_DIMS:
            with self._choices_lock:
                values = self._choices.get(dim)
            if values is None:
                values = ctx.query.backend.dimension_values(dim, 200)
                with self._choices_lock:
                    self._choices[dim] = values
            out[dim] = values
        return out

    def sessions(self) -> Sessions:
        c = self.collector()
        cached: Sessions | None = getattr(c, "_sessions", None)
        if cached is None:
            cached = Sessions(c.keys.read_token)
            c._sessions = cached  # type: ignore[attr-defined]
        return cached

    def _html(self, body: str, status: int = 200, started: float | None = None) -> HTMLResponse:
        headers = dict(SECURITY_HEADERS)
        if started is not None:
            headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
        return HTMLResponse(body, status_code=status, headers=headers)

    # --- log-in ------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self._login(request, None, 200)

    def _login(self, request: Request, error: str | None, status: int) -> Response:
        anchor = request.cookies.get(PRE_COOKIE) or new_anchor()
        body = self.env.get_template("login.html").render(
            csrf=self.sessions().csrf(anchor),
            next=_safe_next(request.query_params.get("next")),
            error=error,
        )
        response = self._html(body, status)
        response.set_cookie(
            PRE_COOKIE,
            anchor,
            max_age=3600,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        sessions = self.sessions()
        csrf = form.get("csrf")
        if not sessions.csrf_ok(
            request.cookies.get(PRE_COOKIE), csrf if isinstance(csrf, str) else None
        ):
            return self._login(request, "The form expired; please log in again.", 403)
        token = form.get("token")
        if not isinstance(token, str) or not matches(
            token.strip(), self.collector().keys.read_token
        ):
            return self._login(request, "Wrong read token.", 403)
        target = form.get("next")
        response = RedirectResponse(_safe_next(target if isinstance(target, str) else None), 303)
        response.set_cookie(
            COOKIE,
            sessions.issue(),
            max_age=sessions.max_age_s,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(PRE_COOKIE)
        return response

    async def logout(self, request: Request) -> Response:
        sessions = self.sessions()
        sid = sessions.verify(request.cookies.get(COOKIE))
        form = await request.form()
        csrf = form.get("csrf")
        if sid is None or not sessions.csrf_ok(sid, csrf if isinstance(csrf, str) else None):
            return self._html("<p>Refused: missing or wrong CSRF token.</p>", 403)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # --- pages -------------------------------------------------------------------

    def page(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            partial = request.headers.get(PARTIAL) == "1"
            sid = self.sessions().verify(request.cookies.get(COOKIE))
            if sid is None:
                if partial:
                    return self._html("session expired", 401)
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?{urlencode({'next': here})}", 303)
            c = self.collector()
            # path parameters (``/traces/{trace_id}``) reach the page in ``args`` but
            # are not view state: links to other pages must not carry them along
            view = View.parse(request.url.path, dict(request.query_params), c.settings.clock())
            args = {**request.query_params, **request.path_params}
            ctx = PageContext(
                view=view,
                query=c.query,
                telemetry=c.telemetry,
                alerts=c.alerts,
                keys=c.keys,
                base_url=str(request.base_url).rstrip("/"),
                args=args,
            )
            try:
                data = await run_in_threadpool(page.build, ctx)
                status = 200
            except QueryError as exc:
                data, status = {"page_error": str(exc)}, 400
            except LookupError as exc:
                data, status = {"page_error": str(exc)}, 404
            body = await run_in_threadpool(self._render, page, ctx, data, sid, partial)
            return self._html(body, status, started)

        return endpoint

    def _render(
        self, page: Page, ctx: PageContext, data: dict[str, Any], sid: str, partial: bool
    ) -> str:
        options = self.choices(ctx)
        return self.env.get_template(page.template).render(
            page=page,
            view=ctx.view,
            options=options,
            csrf=self.sessions().csrf(sid),
            partial=partial,
            refresh=_refresh(ctx) if ctx.view.live else 0,
            **data,
        )

    def routes(self) -> list[BaseRoute]:
        out: list[BaseRoute] = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount(
                "/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static"
            ),
        ]
        out += [Route(p.path, self.page(p), methods=["GET"]) for p in PAGES]
        return out


def routes(collector: Callable[[], Collector]) -> list[BaseRoute]:
    """The dashboard's routes, for the collector's route list."""
    return Dashboard(collector).routes()


__all__ = ["routes"]
