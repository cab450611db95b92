"""The evaluator on constructed series with known answers: the clock and the data
source are injected (a MemorySource), so every state change is at a known time."""

from __future__ import annotations

from pathlib import Path

from perfpulse.alerts.config import parse_config, parse_rule
from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.evaluator import Evaluator, RuleCheck, fingerprint, render
from perfpulse.alerts.notifiers import MemoryNotifier
from perfpulse.alerts.source import MemorySource
from perfpulse.alerts.store import AlertStore

T0 = 1_790_000_000.0
STEP = 15.0
EXPR = 'p95(http.server.duration{service="checkout"}) by (route) > 300'


def rule(**extra: object) -> RuleCheck:
    return RuleCheck(parse_rule({"name": "Slow", "expr": EXPR, **extra}))


def run(ev: Evaluator, source: MemorySource, values: list[float | None]) -> list[str]:
    """Feed one value per step for route /pay (None: a gap) and record the state."""
    m = ev.checks["Slow"].rule.condition.measure  # type: ignore[attr-defined]
    states = []
    for i, v in enumerate(values):
        now = T0 + i * STEP
        if v is not None:
            source.put(m, {"route": "/pay"}, now, v)
        ev.evaluate(now)
        states.append(ev.series["Slow"][(("route", "/pay"),)].state)
    return states


def test_for_holds_pending_then_fires_and_resolves() -> None:
    source = MemorySource()
    ev = Evaluator([rule(**{"for": "30s"})], source)
    states = run(ev, source, [100, 310, 320, 330, 280, 100])
    assert states == ["inactive", "pending", "pending", "firing", "resolved", "resolved"]
    s = ev.series["Slow"][(("route", "/pay"),)]
    assert s.fired_at == T0 + 3 * STEP and s.resolved_at == T0 + 4 * STEP
    assert s.labels == {"alertname": "Slow", "severity": "warning", "route": "/pay"}
    assert s.fingerprint == fingerprint(s.labels)


def test_pending_that_recovers_never_fires() -> None:
    source = MemorySource()
    ev = Evaluator([rule(**{"for": "1m"})], source)
    assert run(ev, source, [310, 310, 290, 310]) == ["pending", "pending", "inactive", "pending"]


def test_oscillating_value_fires_once_with_hysteresis() -> None:
    source = MemorySource()
    ev = Evaluator([rule(recovery=250)], source)
    wave = [310.0, 290.0] * 10  # hovers around the 300 threshold
    states = run(ev, source, [*wave, 240.0])
    assert states[:-1] == ["firing"] * 20  # never resolves while above the recovery line
    assert states[-1] == "resolved"


def test_oscillating_value_without_hysteresis_flaps() -> None:
    """The counter-example: without a recovery threshold the same wave flaps."""
    source = MemorySource()
    ev = Evaluator([rule()], source)
    states = run(ev, source, [310.0, 290.0] * 3)
    assert states == ["firing", "resolved"] * 3


def test_keep_firing_for_waits_before_resolving() -> None:
    source = MemorySource()
    ev = Evaluator([rule(keep_firing_for="40s")], source)
    states = run(ev, source, [310, 200, 200, 200])
    assert states == ["firing", "firing", "firing", "resolved"]


def test_gap_is_nodata_not_resolved_and_firing_stays_active() -> None:
    source = MemorySource()
    ev = Evaluator([rule(recovery=250)], source)
    # the 5-minute window holds a point for 20 steps; leave 25 steps without data
    states = run(ev, source, [320.0] + [None] * 25 + [330.0, 240.0])
    assert states[:20] == ["firing"] * 20  # the last point is still inside the window
    assert states[20:26] == ["nodata"] * 6
    s = ev.series["Slow"][(("route", "/pay"),)]
    assert "resolved" not in states[:27]
    assert states[26] == "firing" and states[27] == "resolved"
    assert s.fired_at == T0  # one firing episode, never restarted


def test_rule_without_by_is_nodata_from_the_start() -> None:
    source = MemorySource()
    check = RuleCheck(parse_rule({"name": "Cpu", "expr": 'avg(process.cpu{service="api"}) > 80'}))
    ev = Evaluator([check], source)
    transitions = ev.evaluate(T0)
    assert [(t.old, t.new) for t in transitions] == [("inactive", "nodata")]
    source.put(check.rule.condition.measure, {}, T0 + 10, 50.0)
    assert [(t.old, t.new) for t in ev.evaluate(T0 + 15)] == [("nodata", "inactive")]


def test_by_makes_one_series_per_label_set() -> None:
    source = MemorySource()
    check = rule()
    ev = Evaluator([check], source)
    m = check.rule.condition.measure
    for route, value in (("/pay", 350.0), ("/cart", 120.0), ("/search", 301.0)):
        source.put(m, {"route": route}, T0, value)
    fired = {t.series.labels["route"]: t.new for t in ev.evaluate(T0)}
    assert fired == {"/pay": "firing", "/search": "firing"}
    states = {k[0][1]: s.state for k, s in ev.series["Slow"].items()}
    assert states == {"/pay": "firing", "/cart": "inactive", "/search": "firing"}


def test_a_failing_source_marks_the_rule_not_the_series() -> None:
    class Broken(MemorySource):
        def measure(self, m, now):  # type: ignore[no-untyped-def]
            raise RuntimeError("database is gone")

    ev = Evaluator([rule()], Broken())
    assert ev.evaluate(T0) == []
    assert ev.health["Slow"].error == "RuntimeError: database is gone"


def test_annotations_are_rendered() -> None:
    text = render("p95 of {{ $labels.route }} is {{$value}} ms", {"route": "/pay"}, 312.345)
    assert text == "p95 of /pay is 312.3 ms"


def engine(tmp_path: Path, source: MemorySource, notifier: MemoryNotifier) -> AlertEngine:
    (tmp_path / "rules.yaml").write_text(
        f"""
evaluation_interval: 15s
rules:
  - name: Slow
    expr: {EXPR}
    recovery: 250
receivers:
  - name: ops
    webhook_configs: [{{url: "http://127.0.0.1:9/unused"}}]
route: {{receiver: ops, group_by: [alertname], group_wait: 0s, group_interval: 1m,
         repeat_interval: 24h}}
"""
    )
    return AlertEngine(
        AlertStore(tmp_path / "alerts.sqlite"),
        source,
        rules_path=tmp_path / "rules.yaml",
        notifiers=lambda integration: notifier,
        clock=lambda: T0,
    )


def test_oscillation_yields_one_notification_end_to_end(tmp_path: Path) -> None:
    source, notifier = MemorySource(), MemoryNotifier()
    e = engine(tmp_path, source, notifier)
    m = parse_config((tmp_path / "rules.yaml").read_text()).rules[0].condition.measure
    for i in range(40):  # ten minutes hovering around the threshold, ticked every 5 s
        now = T0 + i * 5
        if i % 3 == 0:
            source.put(m, {"route": "/pay"}, now, 310.0 if i % 2 == 0 else 290.0)
        e.tick(now)
    assert len(notifier.sent) == 1
    assert notifier.sent[0]["status"] == "firing"
    incidents = e.incidents.list()
    assert len(incidents) == 1 and incidents[0]["status"] == "open"
