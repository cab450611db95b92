"""Budgets against live data, read through the collector's HTTP query API.

:class:`HttpReader` is a small client of the read-token API (it answers like
:class:`~perfpulse.query.service.Query`); :func:`check_live` evaluates each live
budget's condition (``perfpulse.budgets.rules``) over the window ending now.
A budget whose window has no data is skipped, not passed. Example::

    reader = HttpReader("http://127.0.0.1:8600", token)
    results = check_live(reader, budgets, now=time.time(), window=3600, extra={"release": "1.4.2"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from perfpulse.alerts.source import measure_samples
from perfpulse.budgets.config import Budgets
from perfpulse.budgets.report import Result
from perfpulse.budgets.rules import live_budgets

if TYPE_CHECKING:
    import httpx


class ApiError(Exception):
    """The collector refused (``status`` 4xx/5xx) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpReader:
    """The collector's query API over HTTP (httpx loads with the first reader:
    the collector imports this package but reads its own store directly)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client: httpx.Client = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        import httpx

        try:
            r = self.client.get(f"{self.url}{path}", params=dict(params))
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
        try:
            body: dict[str, Any] = r.json()
        except ValueError:
            body = {"error": r.text[:200]}
        if r.status_code != 200:
            raise ApiError(r.status_code, f"{r.status_code} from {path}: {body.get('error')}")
        return body

    def percentiles(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self.get("/api/v1/percentiles", params)

    def timeseries(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self.get("/api/v1/timeseries", params)

    def views(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self.get("/api/v1/rum/views", params)

    def close(self) -> None:
        self.client.close()


def check_live(
    reader: HttpReader,
    budgets: Budgets,
    *,
    now: float,
    window: float,
    extra: Mapping[str, str] | None = None,
) -> list[Result]:
    out = []
    for lb in live_budgets(budgets, extra, window):
        cond = lb.condition
        samples = measure_samples(reader, cond.measure, now)
        if not samples:
            out.append(
                Result(lb.name, "live", None, cond.threshold, lb.unit, "skip", "no data in window")
            )
            continue
        value = samples[0].value
        status = "fail" if cond.breached(value) else "pass"
        out.append(Result(lb.name, "live", value, cond.threshold, lb.unit, status, ""))
    return out


__all__ = ["ApiError", "HttpReader", "check_live"]
