"""Service level objectives: error budget and multi-window, multi-burn-rate alerts.

An SLO says that ``objective`` of its events are good over ``window`` (e.g. 99 %
of ``/pay`` requests at or under 300 ms over 30 days). The *error budget* is the
``1 - objective`` share of events allowed to be bad; *remaining* budget is
``1 - bad_share / (1 - objective)`` (negative once overspent). The *burn rate*
over a window is ``bad_share / (1 - objective)``: 1 spends exactly the budget
over the SLO window.

Alerts follow the Google SRE workbook (chapter 5, "Alerting on SLOs"): fire
when the burn rate is at least ``factor`` over a long window *and* a short one
(by default 14.4× over 1 h and 5 min — 2 % of a 30-day budget in an hour — and
6× over 6 h and 30 min — 5 % in six hours). The short window makes the alert
stop soon after the burning stops. Example::

    for check in burn_checks(slo):        # evaluator checks, one per alert
        ...
    slo_status(source, slo, now)          # {"sli": 0.9952, "error_budget_remaining": 0.52, ...}
"""

from __future__ import annotations

from typing import Any

from perfpulse.alerts.config import BurnAlert, Slo
from perfpulse.alerts.evaluator import Observation, Spec
from perfpulse.alerts.expr import format_duration
from perfpulse.alerts.source import Source


def burn_rate(source: Source, slo: Slo, start: float, end: float) -> float | None:
    """Bad share over ``[start, end)`` divided by the allowed bad share; None: no events."""
    good, total = source.good_total(slo.sli, slo.threshold, start, end)
    if total == 0:
        return None
    return ((total - good) / total) / (1.0 - slo.objective)


def _good_text(slo: Slo) -> str:
    sel = str(slo.sli).rsplit("[", 1)[0]
    return f"{sel} <= {slo.threshold:g}" if slo.threshold is not None else f"{sel} not an error"


class BurnCheck:
    """One burn-rate alert of an SLO, as an evaluator check."""

    def __init__(self, slo: Slo, alert: BurnAlert) -> None:
        self.slo, self.alert = slo, alert
        windows = f"{format_duration(alert.long_s)}/{format_duration(alert.short_s)}"
        self.spec = Spec(
            name=f"slo:{slo.name}:{format_duration(alert.long_s)}",
            expr=(
                f"burn_rate({_good_text(slo)}, objective {slo.objective:.6g}) "
                f"over {windows} >= {alert.factor:g}"
            ),
            severity=alert.severity,
            labels={"slo": slo.name, "window": windows, **slo.labels},
            annotations={
                "summary": (
                    f"SLO {slo.name} burns its error budget at {{{{ $value }}}}× "
                    f"(alert at {alert.factor:g}× over {windows})"
                ),
                **slo.annotations,
            },
            origin="slo",
        )

    def observe(self, source: Source, now: float) -> list[Observation]:
        long = burn_rate(source, self.slo, now - self.alert.long_s, now)
        if long is None:
            return []
        short = burn_rate(source, self.slo, now - self.alert.short_s, now) or 0.0
        breach = long >= self.alert.factor and short >= self.alert.factor
        return [Observation((), long, breach, not breach)]


def burn_checks(slo: Slo) -> list[BurnCheck]:
    return [BurnCheck(slo, a) for a in slo.alerts]


def slo_status(source: Source, slo: Slo, now: float) -> dict[str, Any]:
    """The SLO over its window now: SLI, error budget remaining, burn rates."""
    good, total = source.good_total(slo.sli, slo.threshold, now - slo.window_s, now)
    sli = good / total if total else None
    allowed = 1.0 - slo.objective
    remaining = None if sli is None else 1.0 - (1.0 - sli) / allowed
    burns = []
    for a in slo.alerts:
        long = burn_rate(source, slo, now - a.long_s, now)
        short = burn_rate(source, slo, now - a.short_s, now)
        burns.append(
            {
                "long": format_duration(a.long_s),
                "short": format_duration(a.short_s),
                "factor": a.factor,
                "severity": a.severity,
                "burn_rate_long": long,
                "burn_rate_short": short,
                "firing": long is not None
                and short is not None
                and long >= a.factor
                and short >= a.factor,
            }
        )
    return {
        "name": slo.name,
        "sli": str(slo.sli).rsplit("[", 1)[0],
        "threshold": slo.threshold,
        "objective": slo.objective,
        "window": format_duration(slo.window_s),
        "good": good,
        "total": total,
        "ratio": sli,
        "error_budget_remaining": remaining,
        "burn_rates": burns,
    }


__all__ = ["BurnCheck", "burn_checks", "burn_rate", "slo_status"]
