"""Traces: the recent requests seen over OTLP, one root span each, newest first.

Filters: the view's service / environment / release, plus ``name`` (the root
span's exact name, e.g. ``GET /stock/{sku}``) and ``min_duration_ms`` from the
page's own form. Each row links to its waterfall at ``/traces/{trace_id}``.
"""

from __future__ import annotations

from typing import Any

from perfpulse.web.pages import PageContext

LIMIT = "100"
OWN = ("name", "min_duration_ms")


def build(ctx: PageContext) -> dict[str, Any]:
    own = {k: ctx.args[k] for k in OWN if ctx.args.get(k)}
    answer = ctx.telemetry.traces(ctx.view.params(None, limit=LIMIT, **own))
    return {"traces": answer["traces"], "own": own, "limit": int(LIMIT)}
