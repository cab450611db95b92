"""Logs: search the log lines of every service, newest first, a page at a time.

The same question as ``GET /api/v1/logs``: the view's window and service /
environment / release, plus ``level`` (comma-separated), ``q`` (text the
message contains), ``trace_id``, ``request_id``, ``host``, ``logger``,
``limit`` and the ``cursor`` the previous page gave ("Older").
"""

from __future__ import annotations

from typing import Any

from perfpulse.query.telemetry import LOG_LEVELS
from perfpulse.web.pages import PageContext

OWN = ("level", "q", "trace_id", "request_id", "host", "logger", "limit", "cursor")
LEVEL_CHOICES = (
    *((level, level) for level in LOG_LEVELS),
    ("warn,error,fatal", "warn and above"),
    ("error,fatal", "error and above"),
)


def build(ctx: PageContext) -> dict[str, Any]:
    own = {k: ctx.args[k] for k in OWN if ctx.args.get(k)}
    answer = ctx.telemetry.logs(ctx.view.params(None, **own))
    return {
        "logs": answer["logs"],
        "next_cursor": answer["next_cursor"],
        "own": own,
        "level_choices": LEVEL_CHOICES,
        "form_keys": OWN,
    }
