"""Live budgets as alert expressions: one logic for ``budget check`` and the collector.

Each live budget becomes a :class:`LiveBudget`: a readable name and an alert
condition in the expression language of docs/alerts.md, e.g. the timing budget
``{page: "/", LCP: 2500}`` becomes ``p75(rum.lcp{page="/"}[1h]) > 2500``.
``perfpulse budget check --url`` evaluates these conditions once through the
query API; the collector runs the same ones continuously as alert rules
(:func:`budget_rules`, named ``budget: <name>``, label ``budget``).

Measures: RUM timings at p75; API latency at the quantile named (p50/p95/p99)
and ``error_ratio`` as the 5xx share; CPU as the mean of ``process.cpu``;
memory as p99 of ``process.memory.rss`` (close to the peak); resource types as
p75 per page view of ``rum.resource.transfer`` (size) and
``rum.resource.count`` (count). ``total``, ``document`` and ``media`` budgets
are static-only (RUM keeps no per-view total).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from perfpulse.alerts.config import Rule
from perfpulse.alerts.expr import Condition, format_duration, parse
from perfpulse.budgets.config import Budgets
from perfpulse.model.catalog import CATALOG

LIVE_RESOURCE_TYPES = ("script", "stylesheet", "image", "font", "other")


@dataclass(frozen=True, slots=True)
class LiveBudget:
    name: str
    condition: Condition
    unit: str


def _selector(metric: str, filters: Mapping[str, str], window: float) -> str:
    inner = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in filters.items()
    )
    return f"{metric}{{{inner}}}[{format_duration(window)}]"


def _scope(filters: Mapping[str, str], skip: tuple[str, ...] = ("service", "environment")) -> str:
    text = " ".join(f"{k}={v}" for k, v in filters.items() if k not in skip)
    return f" {text}" if text else ""


def live_budgets(
    budgets: Budgets, extra: Mapping[str, str] | None = None, window: float | None = None
) -> list[LiveBudget]:
    """Every live budget as a condition over ``window`` (default: the file's)."""
    w = budgets.window_s if window is None else window
    out: list[LiveBudget] = []

    def add(name: str, func: str, metric: str, filters: Mapping[str, str], limit: float) -> None:
        known = CATALOG[metric].all_dims  # extra filters apply where the metric has them
        scope = {k: v for k, v in {**budgets.filters, **(extra or {})}.items() if k in known}
        cond = parse(f"{func}({_selector(metric, {**scope, **filters}, w)}) > {limit!r}")
        unit = "ratio" if func == "error_ratio" else cond.measure.selector.metric.unit
        out.append(LiveBudget(name, cond, unit))

    for t in budgets.timings:
        for vital, limit in t.limits.items():
            add(f"{vital} p75{_scope(t.filters)}", "p75", f"rum.{vital.lower()}", t.filters, limit)
    for a in budgets.api:
        for key, limit in a.limits.items():
            func = "error_ratio" if key == "error_ratio" else key
            add(f"api {key}{_scope(a.filters, ())}", func, "http.server.duration", a.filters, limit)
    for th in budgets.thresholds:
        for key, limit in th.limits.items():
            if key == "cpu":
                add(f"cpu avg{_scope(th.filters, ())}", "avg", "process.cpu", th.filters, limit)
            else:
                name = f"memory p99{_scope(th.filters, ())}"
                add(name, "p99", "process.memory.rss", th.filters, limit)
    for r in budgets.resources:
        if r.type not in LIVE_RESOURCE_TYPES:
            continue
        scope = {"type": r.type}
        if r.size is not None:
            add(f"{r.type} transfer p75", "p75", "rum.resource.transfer", scope, r.size)
        if r.count is not None:
            add(f"{r.type} count p75", "p75", "rum.resource.count", scope, r.count)
    return out


def budget_rules(budgets: Budgets) -> list[Rule]:
    """The live budgets as alert rules for the collector's evaluator."""
    return [
        Rule(
            name=f"budget: {b.name}",
            expr=str(b.condition),
            condition=b.condition,
            severity="warning",
            labels={"budget": b.name},
            annotations={
                "summary": f"budget {b.name} exceeded: {{{{ $value }}}} > {b.condition.threshold:g}"
            },
            origin="budgets",
        )
        for b in live_budgets(budgets)
    ]


__all__ = ["LiveBudget", "budget_rules", "live_budgets"]
