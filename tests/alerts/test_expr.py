"""The expression grammar and the alerting file: what parses, and where mistakes are."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfpulse.alerts.config import AlertConfig, parse_config, parse_rule
from perfpulse.alerts.expr import ExprError, parse, parse_duration, parse_selector
from perfpulse.alerts.yamlpos import ConfigError


def test_examples_from_the_issue_parse_with_their_meaning() -> None:
    c = parse('p95(http.server.duration{service="checkout", route="/pay"}) > 300')
    assert c.measure.func == "p95" and c.measure.quantile == 0.95
    assert c.measure.selector.metric.name == "http.server.duration"
    assert c.measure.selector.matchers == (("service", "checkout"), ("route", "/pay"))
    assert c.measure.selector.window == 300.0  # the default window is 5 minutes
    assert (c.op, c.threshold) == (">", 300.0)

    lcp = parse('p75(rum.lcp{page="/"}) > 2500')
    assert lcp.measure.quantile == 0.75 and lcp.measure.selector.metric.name == "rum.lcp"

    err = parse('error_ratio(http{service="api"}) > 0.02')
    assert err.measure.selector.metric.name == "http.server.duration"  # http = the HTTP events
    assert err.measure.func == "error_ratio" and err.threshold == 0.02

    cpu = parse('avg(process.cpu{service="api"}) > 80')
    assert cpu.measure.func == "avg"
    assert cpu.measure.params(1000.0) == {
        "metric": "process.cpu",
        "from": "700.0",
        "to": "1000.0",
        "q": "",
        "service": "api",
    }


def test_grouping_window_and_quantile_spellings() -> None:
    c = parse('p999(http.server.duration{service="checkout"}[1h30m]) by (route, method) <= 12.5e1')
    assert c.measure.quantile == 0.999
    assert c.measure.by == ("route", "method")
    assert c.measure.selector.window == 5400.0
    assert (c.op, c.threshold) == ("<=", 125.0)
    assert c.breached(125.0) and not c.breached(125.1)
    params = c.measure.params(10_000.0)
    assert params["by"] == "route,method" and params["q"] == "0.999"
    assert str(c.measure) == (
        'p999(http.server.duration{service="checkout"}[1h30m]) by (route, method)'
    )
    assert parse(str(c)).measure == c.measure  # the canonical text parses back
    assert parse("p50(rum.cls) > 0.1").measure.quantile == 0.5
    assert parse('count(cache.duration{op="get"}[10m]) < 1').measure.func == "count"


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("p95(http.server.duration > 300", 1, 26, "expected ')'"),
        ("p95(http.server.durationx) > 300", 1, 5, "unknown metric 'http.server.durationx'"),
        ('p95(http.server.duration{colour="red"}) > 3', 1, 26, "unknown label 'colour'"),
        ("median(rum.lcp) > 3", 1, 1, "unknown function 'median'"),
        ("p95(rum.lcp) by (route) > 3", 1, 18, "unknown label 'route'"),
        ("p95(rum.lcp)\n  by (page)\n  >> 3", 3, 4, "expected a number"),
        ('p95(rum.lcp{page!="/"}) > 3', 1, 17, "only '=' matchers"),
        ("error_ratio(rum.lcp) > 0.1", 1, 13, "error_ratio needs a metric with errors"),
        ("p95(rum.lcp[5x]) > 3", 1, 13, "expected a window"),
        ("p95(rum.lcp) > 3 and", 1, 18, "unexpected 'and'"),
        ("p95(rum.lcp)", 1, 13, "expected a comparison"),
    ],
)
def test_mistakes_name_line_and_column(text: str, line: int, column: int, reason: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert reason in info.value.reason


def test_durations_and_selectors() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("30d") == 30 * 86400 and parse_duration("2.5") == 2.5
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("5 minutes")
    sel = parse_selector('http.server.duration{route="/pay"}[30d]')
    assert sel.window == 30 * 86400 and sel.matchers == (("route", "/pay"),)


def test_rule_error_in_the_file_names_rule_line_and_column(tmp_path: Path) -> None:
    text = (
        "rules:\n"
        "  - name: Fine\n"
        "    expr: p95(rum.lcp) > 2500\n"
        "  - name: CheckoutSlow\n"
        '    expr: p95(http.server.duration{service="checkout") > 300\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "rules.yaml")
    err = info.value
    assert "rule 'CheckoutSlow'" in str(err)
    # the '{' … ')' mistake is at the ')' — line 5, column 54 of the file
    assert (err.line, err.column) == (5, 54), str(err)
    assert str(err).startswith(f"{tmp_path / 'rules.yaml'}:5:54: ")


def test_rule_error_in_quoted_and_block_scalars() -> None:
    quoted = 'rules:\n  - name: Q\n    expr: "p95(rum.lcp) >> 3"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(quoted)
    assert (info.value.line, info.value.column) == (3, 26)  # the second '>' inside the quotes
    block = "rules:\n  - name: B\n    expr: |\n      p95(rum.lcp)\n        by (pagee) > 3\n"
    with pytest.raises(ConfigError) as info:
        parse_config(block)
    assert (info.value.line, info.value.column) == (5, 13)
    assert "rule 'B'" in str(info.value) and "unknown label 'pagee'" in str(info.value)


def test_other_file_mistakes_point_at_the_value() -> None:
    cases = [
        ("rules:\n  - name: R\n    expr: p95(rum.lcp) > 1\n    for: soon\n", (4, 10), "'for'"),
        (
            "rules:\n  - name: R\n    expr: p95(rum.lcp) > 10\n    recovery: 12\n",
            (4, 15),
            "good side",
        ),
        (
            "rules:\n  - name: R\n    expr: p95(rum.lcp) > 1\n    sevrity: page\n",
            (4, 14),
            "sevrity",
        ),
        ("route: {receiver: nobody}\n", (1, 8), "unknown receiver 'nobody'"),
        ("rules: [\n", (2, 1), "not valid YAML"),
    ]
    for text, (line, column), needle in cases:
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert (info.value.line, info.value.column) == (line, column), (text, str(info.value))
        assert needle in str(info.value)


def test_full_file_reads_into_rules_slos_receivers_and_route(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
evaluation_interval: 5s
external_url: http://perfpulse.example/
rules:
  - name: CheckoutSlow
    expr: p95(http.server.duration{service="checkout"}) by (route) > 300
    recovery: 250
    for: 2m
    keep_firing_for: 5m
    severity: page
    labels: {team: payments}
    annotations: {summary: "p95 {{ $labels.route }} = {{ $value }}"}
slos:
  - name: pay-latency
    sli: http.server.duration{service="checkout", route="/pay"}
    threshold: 300
    objective: 99%
receivers:
  - name: ops
    webhook_configs: [{url: "http://127.0.0.1:1/hook", max_alerts: 5}]
    slack_configs: [{api_url: "http://127.0.0.1:1/slack", channel: "#ops"}]
  - name: mail
    email_configs: [{to: [a@example.com], from: p@example.com, smarthost: "127.0.0.1:25"}]
route:
  receiver: ops
  group_by: [alertname, service]
  group_wait: 10s
  routes:
    - matchers: ['severity="page"']
      receiver: mail
      continue: true
delivery: {retries: 3, backoff: 2s}
"""
    )
    cfg = AlertConfig.load(path)
    assert cfg.evaluation_interval_s == 5.0 and cfg.external_url == "http://perfpulse.example"
    (rule,) = cfg.rules
    assert (rule.for_s, rule.keep_firing_for_s, rule.recovery) == (120.0, 300.0, 250.0)
    assert rule.recovered(250.0) and not rule.recovered(251.0)
    assert parse_rule(rule.to_dict()) == rule  # what the API writes back reads the same
    (slo,) = cfg.slos
    assert (slo.objective, slo.window_s, slo.threshold) == (0.99, 30 * 86400, 300.0)
    assert [(a.long_s, a.short_s, a.factor) for a in slo.alerts] == [
        (3600, 300, 14.4),
        (21600, 1800, 6.0),
    ]
    ops = cfg.receiver("ops")
    assert ops is not None
    assert [(i.kind, i.send_resolved) for i in ops.integrations] == [
        ("webhook", True),
        ("slack", False),
    ]
    assert cfg.route.routes[0].receiver == "mail" and cfg.route.routes[0].cont
    assert cfg.route.routes[0].group_wait_s == 10.0  # children inherit timings
    assert (cfg.delivery.retries, cfg.delivery.backoff_s) == (3, 2.0)
    assert AlertConfig.load(tmp_path / "missing.yaml").rules == ()
