"""The log-bucket sketch: ordering, the 1 % guarantee, merging."""

from __future__ import annotations

import math
import random

import pytest

from perfpulse.sketch import ALPHA, Sketch, bucket_of, nearest_rank, quantiles_from_counts, value_of


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


def test_bucket_keys_sort_like_values() -> None:
    values = [-1e6, -3.5, -1e-3, 0.0, 1e-12, 1e-3, 0.5, 1.0, 2500.0, 1e9]
    keys = [bucket_of(v) for v in values]
    assert keys == sorted(keys)
    assert bucket_of(0.0) == bucket_of(1e-12)  # below MIN_POSITIVE is the zero bucket


@pytest.mark.parametrize("value", [1e-6, 0.07, 1.0, 13.3, 2500.0, 4e5, 7.7e8])
def test_every_value_reads_back_within_alpha(value: float) -> None:
    for v in (value, -value):
        assert abs(value_of(bucket_of(v)) - v) <= ALPHA * abs(v) + 1e-15


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.lognormvariate(3.0, 1.0),
        lambda r: r.gauss(20, 2) if r.random() < 0.7 else r.gauss(800, 50),
        lambda r: r.paretovariate(1.2),
    ],
    ids=["lognormal", "bimodal", "pareto"],
)
def test_quantiles_within_one_percent_of_nearest_rank(draw) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    values = [abs(draw(rng)) for _ in range(20_000)]
    s = Sketch()
    for v in values:
        s.add(v)
    for q in (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0):
        want = exact(values, q)
        got = s.quantile(q)
        assert got is not None
        assert abs(got - want) <= ALPHA * want, (q, got, want)


def test_merge_equals_sketch_of_union() -> None:
    rng = random.Random(3)
    a, b, union = Sketch(), Sketch(), Sketch()
    for i in range(5000):
        v = rng.expovariate(0.01)
        (a if i % 2 else b).add(v)
        union.add(v)
    a.merge(b)
    assert a.counts == union.counts
    assert a.quantiles([0.5, 0.99]) == union.quantiles([0.5, 0.99])


def test_zero_heavy_data_like_cls() -> None:
    values = [0.0] * 700 + [0.05] * 200 + [0.3] * 100
    s = Sketch()
    for v in values:
        s.add(v)
    assert s.quantile(0.5) == 0.0
    assert s.quantile(0.75) == pytest.approx(0.05, rel=ALPHA)
    assert s.quantile(0.95) == pytest.approx(0.3, rel=ALPHA)


def test_quantiles_from_counts_merges_repeated_buckets() -> None:
    k = bucket_of(100.0)
    got = quantiles_from_counts([(k, 2), (bucket_of(1.0), 1), (k, 1)], [0.5])
    assert math.isclose(got[0.5] or 0, 100.0, rel_tol=ALPHA)
    assert quantiles_from_counts([], [0.5]) == {0.5: None}
