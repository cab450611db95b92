"""The dashboard's pages: one module each, with ``build(ctx) -> dict``.

:data:`PAGES` lists them in navigation order. A page module reads data only
through ``ctx.query`` / ``ctx.telemetry`` (the same answers the API gives) and
returns plain values for its template; charts are built with
:mod:`perfpulse.web.charts`.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from perfpulse.keys import Keys
from perfpulse.query.service import Query
from perfpulse.query.telemetry import Telemetry
from perfpulse.web.view import View

if TYPE_CHECKING:
    from perfpulse.alerts.engine import AlertEngine


@dataclass(slots=True)
class PageContext:
    """What a page may read: the view (window and filters) and the read path."""

    view: View
    query: Query
    telemetry: Telemetry
    alerts: AlertEngine
    keys: Keys
    base_url: str
    args: dict[str, str] = field(default_factory=dict)


#: Raw-row breakdowns (hot spots, worst scripts, largest resources) scan events, so
#: they read at most this much of the end of a longer window.
RAW_SPAN_S = 86_400


def raw_start(ctx: PageContext) -> float:
    """Where raw breakdowns start: the window's start, or :data:`RAW_SPAN_S` before its end."""
    return max(ctx.view.start, ctx.view.end - RAW_SPAN_S)


def raw_params(ctx: PageContext, **more: str) -> dict[str, str]:
    """Breakdown parameters over (the end of) this window, with the page filter."""
    params = ctx.view.params(None, **more)
    params["from"] = repr(raw_start(ctx))
    if "page" in ctx.view.filters:  # every RUM table has the page column
        params["page"] = ctx.view.filters["page"]
    return params


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    title: str
    module: str
    nav: bool = True

    @property
    def template(self) -> str:
        return f"{self.module}.html"

    @property
    def build(self) -> Callable[[PageContext], dict[str, Any]]:
        mod = importlib.import_module(f"perfpulse.web.pages.{self.module}")
        fn: Callable[[PageContext], dict[str, Any]] = mod.build
        return fn


_ALL = (
    Page("/", "Overview", "overview"),
    Page("/vitals", "Web Vitals", "vitals"),
    Page("/assets", "Assets", "assets"),
    Page("/backend", "Backend", "backend"),
    Page("/backend/route", "Route", "route", nav=False),
    Page("/database", "Database", "database"),
    Page("/cache", "Cache", "cache"),
    Page("/resources", "Resources", "resources"),
    Page("/traces", "Traces", "traces"),
    Page("/traces/{trace_id}", "Trace", "trace", nav=False),
    Page("/logs", "Logs", "logs"),
    Page("/compare", "Compare", "compare"),
    Page("/setup", "Setup", "setup"),
)


def _exists(page: Page) -> bool:
    return importlib.util.find_spec(f"perfpulse.web.pages.{page.module}") is not None


PAGES: tuple[Page, ...] = tuple(p for p in _ALL if _exists(p))

_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def gather(*calls: Callable[[], Any]) -> list[Any]:
    """Run a page's independent questions side by side; answers in call order.

    The storage engine releases the GIL while it scans, so two or three
    questions at once use the machine's cores instead of waiting in line.
    """
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(4, thread_name_prefix="perfpulse-page"))
    futures = [_pool[0].submit(call) for call in calls]
    return [f.result() for f in futures]


__all__ = ["PAGES", "Page", "PageContext", "gather"]
