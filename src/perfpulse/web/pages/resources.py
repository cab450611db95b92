"""Resources: CPU, memory and IO of every service's processes and their hosts,
as charts over time (one line per host and service) and a table of each
metric's average over the window and its latest value per service and host.

One rollup-backed timeseries per metric, grouped by ``service,host``; the
table's average is the window's sum over its count (the same mean the
percentiles API answers) and "latest" the mean of the last step with samples.
"""

from __future__ import annotations

from typing import Any

from perfpulse.model.catalog import CATALOG
from perfpulse.web.charts import split_chart
from perfpulse.web.pages import PageContext, gather

SHOWN = (
    ("process.cpu", "Process CPU"),
    ("process.memory.rss", "Process memory (RSS)"),
    ("host.cpu", "Host CPU"),
    ("host.memory.used", "Host memory used"),
    ("process.io.read", "Process IO read"),
    ("process.io.write", "Process IO written"),
    ("host.disk.read", "Host disk read"),
    ("host.disk.write", "Host disk written"),
    ("host.net.recv", "Host network received"),
    ("host.net.sent", "Host network sent"),
)
LINES = 8


def _where(key: dict[str, Any]) -> str:
    return f"{key.get('host') or '(no host)'} · {key.get('service') or '(no service)'}"


def _summary(name: str, title: str, unit: str, series: dict[str, Any]) -> dict[str, Any]:
    points = series["points"]
    count = sum(p["count"] for p in points)
    last = max(points, key=lambda p: p["ts"]) if points else None
    return {
        "service": series["key"].get("service"),
        "host": series["key"].get("host"),
        "metric": name,
        "title": title,
        "unit": unit,
        "samples": count,
        "avg": sum(p["sum"] for p in points) / count if count else None,
        "latest": last["mean"] if last else None,
        "latest_ts": last["ts"] if last else None,
    }


def build(ctx: PageContext) -> dict[str, Any]:
    view, step = ctx.view, str(ctx.view.step)
    charts, table = [], []
    answers = gather(
        *(
            lambda name=name: ctx.query.timeseries(
                view.params(CATALOG[name], metric=name, by="service,host", q="0.5", step=step)
            )
            for name, _ in SHOWN
        )
    )
    for (name, title), answer in zip(SHOWN, answers, strict=True):
        m = CATALOG[name]
        charts.append(split_chart(title, m.unit, answer, lambda p: p["mean"], _where, limit=LINES))
        table += [_summary(name, title, m.unit, s) for s in answer["series"]]
    table.sort(key=lambda r: (r["service"] or "", r["host"] or ""))
    return {"charts": charts, "table": table}
