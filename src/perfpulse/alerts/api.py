"""The alerting HTTP API: rules, alert states, SLOs, silences, incidents, deliveries.

Every endpoint needs the read token (``Authorization: Bearer``), like the query
API; endpoints that change something take a JSON body. Mistakes answer
``400 {"error": ...}``, unknown things 404, conflicts 409. The collector mounts
:func:`routes`; docs/alerts.md lists the endpoints. Example::

    Route list: routes(lambda: collector().alerts, lambda: collector().keys.read_token)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.errors import Conflict, NotFound
from perfpulse.alerts.expr import parse_duration
from perfpulse.alerts.silences import SilenceError
from perfpulse.alerts.yamlpos import ConfigError
from perfpulse.keys import bearer, matches

Handler = Callable[[AlertEngine, dict[str, str], Any], tuple[int, Any]]


class BadRequest(ValueError):
    pass


def _endpoint(
    engine: Callable[[], AlertEngine], token: Callable[[], str], handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        given = bearer(request.headers.get("authorization"))
        if given is None:
            return JSONResponse({"error": "missing read token"}, status_code=401)
        if not matches(given, token()):
            return JSONResponse({"error": "wrong read token"}, status_code=403)
        params = {**request.query_params, **request.path_params}
        body: Any = None
        if request.method in ("POST", "PUT"):
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError as exc:
                return JSONResponse({"error": f"body is not JSON: {exc}"}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        try:
            status, answer = await run_in_threadpool(handler, engine(), params, body)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except Conflict as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except (BadRequest, ConfigError, SilenceError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(answer, status_code=status)

    return endpoint


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be a whole number, got {raw!r}") from None


def _who(body: dict[str, Any]) -> str:
    return str(body.get("by") or "api")


# --- handlers ------------------------------------------------------------------------


def alerts(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    found = e.alerts()
    if p.get("state"):
        found = [a for a in found if a["state"] == p["state"]]
    return 200, {"alerts": found}


def rules(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 200, {"rules": e.rules(), "config_error": e.config_error}


def rule(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    found = next((r for r in e.rules() if r["name"] == p["name"]), None)
    if found is None:
        raise NotFound(f"no rule {p['name']!r}")
    return 200, found


def add_rule(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 201, {"rule": e.put_rule(b)}


def put_rule(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 200, {"rule": e.put_rule({"name": p["name"], **b}, name=p["name"])}


def delete_rule(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    e.delete_rule(p["name"])
    return 200, {"deleted": p["name"]}


def slos(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 200, {"slos": e.slos()}


def silences(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    found = e.silences.list(e.clock())
    if p.get("state"):
        found = [s for s in found if s["state"] == p["state"]]
    return 200, {"silences": found}


def add_silence(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    now = e.clock()
    matchers = b.get("matchers")
    if not isinstance(matchers, list):
        raise BadRequest('\'matchers\' must be a list such as ["service=\\"checkout\\""]')
    try:
        if "ends_at" in b:
            ends_at = float(b["ends_at"])
        elif "duration" in b:
            ends_at = now + parse_duration(str(b["duration"]))
        else:
            raise BadRequest("give 'duration' (e.g. 2h) or 'ends_at' (Unix seconds)")
        starts_at = float(b["starts_at"]) if b.get("starts_at") is not None else None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad silence time: {exc}") from None
    sid = e.silences.add(
        matchers,
        ends_at=ends_at,
        starts_at=starts_at,
        now=now,
        created_by=str(b.get("created_by") or "api"),
        comment=str(b.get("comment") or ""),
    )
    return 201, {"id": sid, "ends_at": ends_at}


def expire_silence(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    if not e.silences.expire(p["id"], e.clock()):
        raise NotFound(f"no active silence {p['id']!r}")
    return 200, {"expired": p["id"]}


def _incident_id(p: dict[str, str]) -> int:
    try:
        return int(p["id"])
    except ValueError:
        raise BadRequest(f"incident ids are numbers, got {p['id']!r}") from None


def incidents(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    status = p.get("status") or None
    if status not in (None, "open", "acknowledged", "resolved", "active"):
        raise BadRequest("'status' is one of open, acknowledged, resolved, active")
    return 200, {"incidents": e.incidents.list(status, _int(p, "limit", 100))}


def incident(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    iid = _incident_id(p)
    shown = e.incidents.show(iid)
    shown["deliveries"] = e.store.deliveries(limit=1000, incident_id=iid)
    return 200, shown


def ack(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 200, e.incidents.ack(_incident_id(p), _who(b), e.clock())


def resolve(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 200, e.incidents.resolve(_incident_id(p), _who(b), e.clock())


def note(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    return 201, e.incidents.note(_incident_id(p), str(b.get("text") or ""), _who(b), e.clock())


def deliveries(e: AlertEngine, p: dict[str, str], b: Any) -> tuple[int, Any]:
    iid = _int(p, "incident", -1)
    return 200, {"deliveries": e.store.deliveries(_int(p, "limit", 100), None if iid < 0 else iid)}


def routes(engine: Callable[[], AlertEngine], token: Callable[[], str]) -> list[Route]:
    """The alerting endpoints, for the collector's route list."""

    def r(path: str, handler: Handler, method: str = "GET") -> Route:
        return Route(path, _endpoint(engine, token, handler), methods=[method])

    return [
        r("/api/v1/alerts", alerts),
        r("/api/v1/alerts/rules", rules),
        r("/api/v1/alerts/rules", add_rule, "POST"),
        r("/api/v1/alerts/rules/{name:path}", rule),
        r("/api/v1/alerts/rules/{name:path}", put_rule, "PUT"),
        r("/api/v1/alerts/rules/{name:path}", delete_rule, "DELETE"),
        r("/api/v1/slos", slos),
        r("/api/v1/silences", silences),
        r("/api/v1/silences", add_silence, "POST"),
        r("/api/v1/silences/{id}", expire_silence, "DELETE"),
        r("/api/v1/incidents", incidents),
        r("/api/v1/incidents/{id}", incident),
        r("/api/v1/incidents/{id}/ack", ack, "POST"),
        r("/api/v1/incidents/{id}/resolve", resolve, "POST"),
        r("/api/v1/incidents/{id}/notes", note, "POST"),
        r("/api/v1/deliveries", deliveries),
    ]


__all__ = ["routes"]
