"""The baseline gate: fail only on a regression that is both real and too large.

``budget check --baseline release=1.4.1 --release 1.4.2`` compares, for every
timing and API budget, the current release's statistic (p75 of a vital, the
route's p95/p99, its error ratio) with the baseline release's, and fails only
when a bootstrap confidence bound says the regression exceeds the allowed
tolerance. So noise does not fail builds, and too little data says so instead
of guessing.

Statistics (docs/budgets.md explains the choices):

- The data are *blocks*, the independent units the bootstrap resamples. For Web
  Vitals each stored page view is a block of one value (``GET /api/v1/rum/views``),
  so this is the ordinary bootstrap. For HTTP there are no raw values through
  the API, so each block is one time step (one minute, or longer to keep at most
  :data:`MAX_BLOCKS`) from ``GET /api/v1/timeseries``: its request count, its
  errors, and its distribution approximated by up to 20 quantiles (dense around
  the quantile being judged), each weighted by the share of requests it stands
  for. Resampling whole minutes keeps the within-minute correlation (a slow
  minute stays slow): a block bootstrap.
- Each of ``resamples`` rounds draws both releases' blocks with replacement and
  computes the statistic of each; the differences (current − baseline) form the
  bootstrap distribution. Its ``1 − confidence`` quantile is the one-sided lower
  confidence bound of the regression.
- The regression is significant when that lower bound exceeds the allowance:
  ``tolerance × baseline`` for quantiles (5 % by default), ``error_tolerance``
  (absolute, 1 point by default) for error ratios.
- Fewer than ``min_samples`` events, or fewer than :data:`MIN_BLOCKS` blocks, on
  either side: "too little data to decide" (skipped, never failed).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perfpulse.budgets.config import Budgets
from perfpulse.budgets.live import HttpReader
from perfpulse.budgets.report import Result

MAX_BLOCKS = 240
MIN_BLOCKS = 5
VIEW_FILTERS = ("service", "environment", "release", "page", "device", "browser")


@dataclass(slots=True)
class Blocks:
    """Resampling units: per block, (value, weight) pairs, an event count, errors."""

    pairs: list[list[tuple[float, float]]] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    def add(self, pairs: list[tuple[float, float]], count: float, errors: float = 0.0) -> None:
        self.pairs.append(pairs)
        self.counts.append(count)
        self.errors.append(errors)

    @property
    def events(self) -> float:
        return sum(self.counts)

    def __len__(self) -> int:
        return len(self.counts)


Stat = Callable[[Blocks, list[int]], float]


def quantile_stat(q: float) -> Stat:
    """The weighted nearest-rank ``q`` quantile of the chosen blocks' values."""

    def stat(blocks: Blocks, chosen: list[int]) -> float:
        pairs = sorted(itertools.chain.from_iterable(blocks.pairs[i] for i in chosen))
        if not pairs:
            return math.nan
        cumulative = list(itertools.accumulate(w for _, w in pairs))
        target = q * cumulative[-1] - 1e-9
        return pairs[min(bisect.bisect_left(cumulative, target), len(pairs) - 1)][0]

    return stat


def error_stat(blocks: Blocks, chosen: list[int]) -> float:
    total = sum(blocks.counts[i] for i in chosen)
    return sum(blocks.errors[i] for i in chosen) / total if total else 0.0


def levels_for(q: float) -> list[float]:
    """Up to 20 quantile levels to sketch a minute's distribution, dense near ``q``."""
    near = [q - (1 - q) * k for k in (4, 3, 2, 1)] + [q]
    near += [q + (1 - q) * f for f in (0.25, 0.5, 0.75, 0.9)]
    body = [0.05 + 0.1 * i for i in range(10) if 0.05 + 0.1 * i < q - 4 * (1 - q) - 0.02]
    levels = sorted({round(x, 6) for x in (*body, *near) if 0.0 < x < 1.0})
    return levels[:20]


def masses(levels: list[float]) -> list[float]:
    """The share of values each level stands for (midpoint boundaries)."""
    bounds = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(levels)] + [1.0]
    return [b - a for a, b in itertools.pairwise(bounds)]


def bootstrap(
    base: Blocks, cur: Blocks, stat: Stat, resamples: int, rng: random.Random
) -> list[float]:
    """Sorted bootstrap differences stat(current) − stat(baseline)."""
    nb, nc = range(len(base)), range(len(cur))
    diffs = []
    for _ in range(resamples):
        b = rng.choices(nb, k=len(base))
        c = rng.choices(nc, k=len(cur))
        diffs.append(stat(cur, c) - stat(base, b))
    diffs.sort()
    return diffs


def judge(
    name: str,
    base: Blocks,
    cur: Blocks,
    stat: Stat,
    *,
    relative: bool,
    tolerance: float,
    unit: str,
    budgets: Budgets,
    against: str,
) -> Result:
    cfg = budgets.baseline
    full_b, full_c = list(range(len(base))), list(range(len(cur)))
    small = min(base.events, cur.events) < cfg.min_samples or min(len(base), len(cur)) < MIN_BLOCKS
    if small:
        detail = (
            f"too little data to decide: {base.events:.0f} events in {len(base)} blocks "
            f"for {against}, {cur.events:.0f} in {len(cur)} now; need {cfg.min_samples} "
            f"events and {MIN_BLOCKS} blocks on each side"
        )
        return Result(name, "baseline", None, None, unit, "skip", detail)
    b_value, c_value = stat(base, full_b), stat(cur, full_c)
    allowed = tolerance * b_value if relative else tolerance
    diffs = bootstrap(base, cur, stat, cfg.resamples, random.Random(cfg.seed))
    k = len(diffs) - 1
    lower = diffs[max(0, math.floor((1 - cfg.confidence) * k))]
    upper = diffs[min(k, math.ceil(cfg.confidence * k))]
    delta = c_value - b_value
    interval = (
        f"{cfg.confidence:.0%} lower bound {lower:+.4g}, interval [{lower:+.4g}, {upper:+.4g}]"
    )
    stated = f"{c_value:.4g} vs {b_value:.4g} for {against} ({delta:+.4g}; {interval}; allowed +{allowed:.4g})"
    if lower > allowed:
        status, verdict = "fail", "significant regression beyond tolerance"
    elif delta > allowed:
        status, verdict = "pass", "regression beyond tolerance but not significant"
    else:
        status, verdict = "pass", "no regression beyond tolerance"
    return Result(
        name, "baseline", c_value, b_value + allowed, unit, status, f"{verdict}: {stated}"
    )


# --- data ----------------------------------------------------------------------------


def view_blocks(
    reader: HttpReader,
    filters: Mapping[str, str],
    start: float,
    end: float,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` page views, newest first, matching ``filters``."""
    server = {k: v for k, v in filters.items() if k in VIEW_FILTERS}
    local = {k: v for k, v in filters.items() if k not in VIEW_FILTERS}
    views: list[dict[str, Any]] = []
    to = end
    while len(views) < limit:
        page = reader.views({**server, "from": repr(start), "to": repr(to), "limit": "1000"})
        got = page["views"]
        views += [v for v in got if all(str(v.get(k)) == val for k, val in local.items())]
        if len(got) < 1000:
            break
        to = min(float(v["ts"]) for v in got)
    return views[:limit]


def vital_blocks(views: list[dict[str, Any]], vital: str) -> Blocks:
    blocks = Blocks()
    for view in views:
        for v in view.get("vitals", []):
            if v.get("name") == vital and isinstance(v.get("value"), int | float):
                blocks.add([(float(v["value"]), 1.0)], 1.0)
    return blocks


def minute_blocks(
    reader: HttpReader, filters: Mapping[str, str], start: float, end: float, q: float | None
) -> Blocks:
    """Per time step: request count, errors and a quantile sketch of its durations."""
    step = max(60, math.ceil((end - start) / MAX_BLOCKS / 60) * 60)
    levels = levels_for(q) if q is not None else [0.5]
    weights = masses(levels)
    params = {
        **filters,
        "metric": "http.server.duration",
        "from": repr(start),
        "to": repr(end),
        "step": str(step),
        "q": ",".join(repr(x) for x in levels),
    }
    blocks = Blocks()
    for series in reader.timeseries(params)["series"]:
        for p in series["points"]:
            n = float(p["count"])
            values = [p["quantiles"][repr(x)] for x in levels]
            pairs = [
                (float(v), w * n) for v, w in zip(values, weights, strict=True) if v is not None
            ]
            blocks.add(pairs, n, float(p.get("error_ratio") or 0.0) * n)
    return blocks


def check_baseline(
    reader: HttpReader,
    budgets: Budgets,
    *,
    baseline: Mapping[str, str],
    current: Mapping[str, str],
    now: float,
    window: float,
    baseline_window: float,
) -> list[Result]:
    """Compare the current release with the baseline for each timing and API budget."""
    cfg = budgets.baseline
    against = " ".join(f"{k}={v}" for k, v in baseline.items())
    out: list[Result] = []
    b_span, c_span = (now - baseline_window, now), (now - window, now)
    for t in budgets.timings:
        scope = {**budgets.filters, **t.filters}
        b_views = view_blocks(reader, {**scope, **baseline}, *b_span, cfg.max_samples)
        c_views = view_blocks(reader, {**scope, **current}, *c_span, cfg.max_samples)
        where = " ".join(f"{k}={v}" for k, v in t.filters.items())
        for vital in t.limits:
            out.append(
                judge(
                    f"baseline {vital} p75{' ' + where if where else ''}",
                    vital_blocks(b_views, vital),
                    vital_blocks(c_views, vital),
                    quantile_stat(0.75),
                    relative=True,
                    tolerance=cfg.tolerance,
                    unit="1" if vital == "CLS" else "ms",
                    budgets=budgets,
                    against=against,
                )
            )
    for a in budgets.api:
        scope = {**budgets.filters, **a.filters}
        where = " ".join(f"{k}={v}" for k, v in a.filters.items())
        for key in a.limits:
            q = None if key == "error_ratio" else float("0." + key[1:])
            b = minute_blocks(reader, {**scope, **baseline}, *b_span, q)
            c = minute_blocks(reader, {**scope, **current}, *c_span, q)
            out.append(
                judge(
                    f"baseline api {key} {where}".rstrip(),
                    b,
                    c,
                    error_stat if q is None else quantile_stat(q),
                    relative=q is not None,
                    tolerance=cfg.tolerance if q is not None else cfg.error_tolerance,
                    unit="ratio" if q is None else "ms",
                    budgets=budgets,
                    against=against,
                )
            )
    return out


__all__ = [
    "Blocks",
    "bootstrap",
    "check_baseline",
    "error_stat",
    "judge",
    "levels_for",
    "masses",
    "quantile_stat",
]
