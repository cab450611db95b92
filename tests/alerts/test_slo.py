"""SLOs: the share below a threshold read from real sketches (DuckDB in memory),
error budget remaining and the multi-window burn-rate alerts on known counts."""

from __future__ import annotations

import random

from perfpulse.alerts.config import parse_config
from perfpulse.alerts.evaluator import Evaluator
from perfpulse.alerts.expr import parse_selector
from perfpulse.alerts.share import share_below
from perfpulse.alerts.slo import burn_checks, slo_status
from perfpulse.alerts.source import MemorySource, QuerySource
from perfpulse.model.rows import LAYOUTS, to_columns
from perfpulse.query.service import Query
from perfpulse.sketch import bucket_of
from perfpulse.store.base import Flush
from perfpulse.store.duckdb.backend import DuckDBBackend

NOW = 1_790_000_000.0


def http_row(ts: float, route: str, duration: float, status: int = 200) -> tuple[object, ...]:
    row = dict.fromkeys(name for name, _ in LAYOUTS["http"])
    row.update(
        ts=ts,
        service="checkout",
        environment="production",
        release="1.0",
        host="h1",
        route=route,
        method="GET",
        status=status,
        duration_ms=duration,
    )
    return tuple(row.values())


def loaded() -> tuple[Query, dict[str, list[float]], list[tuple[object, ...]]]:
    rng = random.Random(7)
    values: dict[str, list[float]] = {"/pay": [], "/cart": []}
    rows = []
    for _ in range(8_000):
        route = rng.choice(["/pay", "/cart"])
        v = rng.lognormvariate(5.0 if route == "/pay" else 3.5, 0.7)
        ts = NOW - rng.uniform(0, 3 * 3600)  # three hours: hour and minute rollups and raw rows
        status = 503 if rng.random() < 0.01 else 200
        values[route].append(v)
        rows.append(http_row(ts, route, v, status))
    db = DuckDBBackend(None)
    for i in range(0, len(rows), 5000):
        db.write(Flush(tables={"http": to_columns("http", rows[i : i + 5000])}, checkpoint=i + 1))
    return Query(db, clock=lambda: NOW), values, rows


def test_share_below_counts_exactly_at_sketch_resolution() -> None:
    query, values, _ = loaded()
    for threshold in (50.0, 300.0, 1000.0):
        answer = share_below(
            query,
            {
                "metric": "http.server.duration",
                "by": "route",
                "from": str(NOW - 4 * 3600),
                "to": str(NOW + 1),
            },
            threshold,
        )
        got = {g["key"]["route"]: g for g in answer["groups"]}
        limit = bucket_of(threshold)
        for route, vs in values.items():
            expected = sum(1 for v in vs if bucket_of(v) <= limit)
            assert got[route]["count"] == len(vs)
            assert got[route]["below"] == expected, (route, threshold)
            # and so within 1 % of the exact share in value terms
            exact = sum(1 for v in vs if v <= threshold)
            assert abs(got[route]["below"] - exact) <= sum(
                1 for v in vs if threshold < v <= threshold * 1.0202
            )


def test_query_source_counts_good_and_errors() -> None:
    query, _, rows = loaded()
    source = QuerySource(query)
    sel = parse_selector('http.server.duration{route="/pay"}')
    good, total = source.good_total(sel, None, NOW - 4 * 3600, NOW + 1)
    pay = [r for r in rows if r[5] == "/pay"]
    assert total == len(pay)
    assert total - good == sum(1 for r in pay if r[7] == 503)


SLO_FILE = """
slos:
  - name: pay-latency
    sli: http.server.duration{service="checkout", route="/pay"}
    threshold: 300
    objective: 99%
    window: 30d
"""


def test_error_budget_remaining_and_burn_rates_on_known_counts() -> None:
    (slo,) = parse_config(SLO_FILE).slos
    source = MemorySource()
    # 30 days at 1000 requests a minute... in hourly chunks: 0.5 % bad, half the budget
    for h in range(30 * 24):
        source.put_counts(slo.sli, 300.0, NOW - 3600 * (h + 1), 59_700, 60_000)
    status = slo_status(source, slo, NOW)
    assert status["total"] == 30 * 24 * 60_000
    assert abs(status["ratio"] - 0.995) < 1e-12
    assert abs(status["error_budget_remaining"] - 0.5) < 1e-9
    assert [round(b["burn_rate_long"], 6) for b in status["burn_rates"]] == [0.5, 0.5]
    assert not any(b["firing"] for b in status["burn_rates"])


def minutes(source: MemorySource, sel: object, start: float, n: int, good: int) -> None:
    for m in range(n):
        source.put_counts(sel, 300.0, start + m * 60, good, 1000)  # type: ignore[arg-type]


def test_fast_burn_pages_and_its_short_window_resolves_it() -> None:
    (slo,) = parse_config(SLO_FILE).slos
    page, ticket = burn_checks(slo)
    assert page.spec.name == "slo:pay-latency:1h" and page.spec.severity == "page"
    assert ticket.spec.labels == {"slo": "pay-latency", "window": "6h/30m"}
    source = MemorySource()
    ev = Evaluator([page, ticket], source)
    minutes(source, slo.sli, NOW - 6 * 3600, 360, 999)  # six quiet hours: 0.1 % bad, burn 0.1
    assert ev.evaluate(NOW) == []
    minutes(source, slo.sli, NOW, 30, 800)  # 20 % bad for 30 minutes
    # 1 h: (30×0.1 % + 30×20 %)/60 → burn 10.05 < 14.4; 6 h → 1.76 < 6: nothing yet
    assert ev.evaluate(NOW + 1800) == []
    assert abs(ev.series["slo:pay-latency:1h"][()].value - 10.05) < 1e-9  # type: ignore[operator]
    minutes(source, slo.sli, NOW + 1800, 30, 800)  # another 30 minutes
    # 1 h → 20 and 5 m → 20, both ≥ 14.4: page; 6 h → 3.42 < 6: no ticket
    assert {t.series.rule: t.new for t in ev.evaluate(NOW + 3600)} == {
        "slo:pay-latency:1h": "firing"
    }
    assert abs(ev.series["slo:pay-latency:6h"][()].value - 3.4166666) < 1e-6  # type: ignore[operator]
    minutes(source, slo.sli, NOW + 3600, 10, 1000)  # fixed: ten clean minutes
    # 1 h is still 16.7 ≥ 14.4, but the 5-minute window is clean: the page resolves
    assert {t.series.rule: t.new for t in ev.evaluate(NOW + 4200)} == {
        "slo:pay-latency:1h": "resolved"
    }


def test_slow_burn_opens_a_ticket_not_a_page() -> None:
    (slo,) = parse_config(SLO_FILE).slos
    source = MemorySource()
    ev = Evaluator(burn_checks(slo), source)
    minutes(source, slo.sli, NOW - 7 * 3600, 7 * 60, 930)  # 7 % bad: burn 7 everywhere
    changes = {t.series.rule: (t.new, round(t.series.value or 0, 6)) for t in ev.evaluate(NOW)}
    assert changes == {"slo:pay-latency:6h": ("firing", 7.0)}
    assert ev.series["slo:pay-latency:1h"][()].state == "inactive"
