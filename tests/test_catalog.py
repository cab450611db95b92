"""The metric catalog: docs/metrics.md is the catalog, and ratings follow Google's thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfpulse.model.catalog import CATALOG, MAX_ROLLUP_DIMS, METRICS, VITALS, render_markdown
from perfpulse.model.rows import LAYOUTS

DOC = Path(__file__).parents[1] / "docs" / "metrics.md"


def test_docs_page_holds_the_catalog_table() -> None:
    assert render_markdown() in DOC.read_text()


def test_every_metric_reads_a_real_column() -> None:
    assert len(CATALOG) == len(METRICS)
    for m in METRICS:
        columns = {name for name, _ in LAYOUTS[m.kind]}
        assert m.field in columns, m.name
        assert set(m.dims + m.raw_dims) <= columns, m.name
        assert len(m.dims) <= MAX_ROLLUP_DIMS
        for col, _ in m.where:
            assert col in columns


@pytest.mark.parametrize(
    ("name", "value", "rating"),
    [
        ("LCP", 2500.0, 0),
        ("LCP", 2500.1, 1),
        ("LCP", 4000.0, 1),
        ("LCP", 4000.1, 2),
        ("INP", 200.0, 0),
        ("INP", 500.1, 2),
        ("CLS", 0.1, 0),
        ("CLS", 0.25, 1),
        ("CLS", 0.26, 2),
        ("FCP", 1800.0, 0),
        ("TTFB", 1800.1, 2),
        ("FID", 100.1, 1),
    ],
)
def test_ratings_follow_core_web_vitals_thresholds(name: str, value: float, rating: int) -> None:
    assert VITALS[name].rate(value) == rating
