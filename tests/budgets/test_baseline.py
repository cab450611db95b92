"""The baseline gate's statistics on constructed samples with known answers."""

from __future__ import annotations

import math
import random

import pytest

from perfpulse.budgets.baseline import (
    Blocks,
    error_stat,
    judge,
    levels_for,
    masses,
    quantile_stat,
)
from perfpulse.budgets.config import parse_budgets

BUDGETS = parse_budgets("baseline: {tolerance: 5%, confidence: 0.95, resamples: 500}\n")


def samples(n: int, median: float, seed: int) -> Blocks:
    rng = random.Random(seed)
    blocks = Blocks()
    for _ in range(n):
        blocks.add([(rng.lognormvariate(math.log(median), 0.3), 1.0)], 1.0)
    return blocks


def verdict(base: Blocks, cur: Blocks, q: float = 0.75) -> str:
    r = judge(
        "x",
        base,
        cur,
        quantile_stat(q),
        relative=True,
        tolerance=0.05,
        unit="ms",
        budgets=BUDGETS,
        against="release=1",
    )
    return r.status


def test_quantile_stat_is_nearest_rank() -> None:
    blocks = Blocks()
    for v in (5.0, 1.0, 4.0, 2.0, 3.0):
        blocks.add([(v, 1.0)], 1.0)
    everything = list(range(5))
    assert quantile_stat(0.5)(blocks, everything) == 3.0
    assert quantile_stat(0.75)(blocks, everything) == 4.0  # rank ceil(3.75) = 4
    assert quantile_stat(0.75)(blocks, [0, 0, 0, 1]) == 5.0  # resampled with repeats


def test_noise_passes_real_regressions_fail() -> None:
    base = samples(400, 1000.0, seed=1)
    assert verdict(base, samples(400, 1000.0, seed=2)) == "pass"  # same distribution
    assert verdict(base, samples(400, 1030.0, seed=3)) == "pass"  # +3 %, inside tolerance
    assert verdict(base, samples(400, 1300.0, seed=4)) == "fail"  # +30 %
    faster = judge(
        "x",
        base,
        samples(400, 700.0, seed=5),
        quantile_stat(0.75),
        relative=True,
        tolerance=0.05,
        unit="ms",
        budgets=BUDGETS,
        against="release=1",
    )
    assert faster.status == "pass" and faster.detail.startswith("no regression beyond tolerance")


def test_a_large_but_uncertain_regression_does_not_fail() -> None:
    # +12 % on 40 samples each: beyond the 5 % tolerance, yet not significant
    r = judge(
        "x",
        samples(40, 1000.0, seed=21),
        samples(40, 1120.0, seed=121),
        quantile_stat(0.75),
        relative=True,
        tolerance=0.05,
        unit="ms",
        budgets=BUDGETS,
        against="release=1",
    )
    assert r.status == "pass"
    assert r.detail.startswith("regression beyond tolerance but not significant: ")


def test_too_little_data_is_said_not_guessed() -> None:
    r = judge(
        "x",
        samples(400, 1000.0, 1),
        samples(12, 3000.0, 2),
        quantile_stat(0.75),
        relative=True,
        tolerance=0.05,
        unit="ms",
        budgets=BUDGETS,
        against="release=1",
    )
    assert r.status == "skip" and r.detail.startswith("too little data to decide")


def test_minute_blocks_error_ratio() -> None:
    base, cur = Blocks(), Blocks()
    for _ in range(60):
        base.add([(100.0, 100.0)], 100.0, errors=1.0)  # 1 %
        cur.add([(100.0, 100.0)], 100.0, errors=5.0)  # 5 %
    assert error_stat(cur, list(range(60))) == pytest.approx(0.05)
    r = judge(
        "e",
        base,
        cur,
        error_stat,
        relative=False,
        tolerance=0.01,
        unit="ratio",
        budgets=BUDGETS,
        against="release=1",
    )
    assert r.status == "fail" and r.measured == pytest.approx(0.05)


@pytest.mark.parametrize("q", [0.5, 0.75, 0.95, 0.99])
def test_levels_are_dense_near_the_quantile_and_masses_sum_to_one(q: float) -> None:
    levels = levels_for(q)
    assert q in levels and len(levels) <= 20 and levels == sorted(levels)
    assert all(0 < x < 1 for x in levels)
    assert sum(masses(levels)) == pytest.approx(1.0)
    # the mass at or below q is q (the quantile of the sketched minute is its own q)
    below = sum(m for x, m in zip(levels, masses(levels), strict=True) if x <= q)
    assert abs(below - q) <= (1 - q) / 2 + 1e-9
