"""Trace: one request's spans as a waterfall, and the log lines it wrote.

Each span is a row, depth first and in start order among siblings (the order
the trace tree keeps children in), with its bar placed on the trace's own time
axis: ``left`` is the span's start after the trace's start and ``width`` its
duration, both as a share of the trace's duration. Attributes, events and the
status message open from each row.
"""

from __future__ import annotations

from typing import Any

from perfpulse.web.pages import PageContext

LOG_LIMIT = "200"
LOG_MARGIN_S = 60.0  # log lines a little before or after the spans still belong to the trace


def _percent(value: float) -> str:
    return f"{min(100.0, max(0.0, value)):.2f}"


def flatten(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Every span of a trace tree, depth first, with its depth and bar geometry."""
    start, total_ms = answer["start"], answer["duration_ms"] or 0.0
    rows: list[dict[str, Any]] = []
    stack = [(root, 0) for root in reversed(answer["roots"])]
    while stack:
        span, depth = stack.pop()
        offset_ms = (span["ts"] - start) * 1000
        rows.append(
            {
                **{k: v for k, v in span.items() if k != "children"},
                "depth": depth,
                "offset_ms": offset_ms,
                "left": _percent(offset_ms / total_ms * 100 if total_ms else 0.0),
                "width": _percent(span["duration_ms"] / total_ms * 100 if total_ms else 100.0),
            }
        )
        stack.extend((child, depth + 1) for child in reversed(span["children"]))
    return rows


def build(ctx: PageContext) -> dict[str, Any]:
    trace_id = ctx.args.get("trace_id", "")
    answer = ctx.telemetry.trace(trace_id)
    if not answer["span_count"]:
        raise LookupError(f"No trace {trace_id} is stored (it may be older than raw retention).")
    spans = flatten(answer)
    end = answer["start"] + (answer["duration_ms"] or 0.0) / 1000
    window = {"from": repr(answer["start"] - LOG_MARGIN_S), "to": repr(end + LOG_MARGIN_S)}
    logs = ctx.telemetry.logs({**window, "trace_id": trace_id, "limit": LOG_LIMIT})["logs"]
    logs.reverse()  # oldest first, as they happened along the waterfall
    roots = answer["roots"]
    return {
        "heading": f"Trace {roots[0]['name']}" if len(roots) == 1 else f"Trace {trace_id}",
        "trace": answer,
        "spans": spans,
        "services": sorted({s["service"] for s in spans}),
        "errors": sum(1 for s in spans if s["status"] == "error"),
        "logs": logs,
        "log_limit": int(LOG_LIMIT),
        "logs_url": ctx.view.url("/logs", range="custom", trace_id=trace_id, cursor=None, **window),
    }
