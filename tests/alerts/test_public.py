"""The public surface of the alerting and budgets packages is what their
``__init__`` names, and every name there resolves."""

from __future__ import annotations

import perfpulse.alerts
import perfpulse.budgets


def test_alerts_and_budgets_export_exactly_these_names() -> None:
    assert set(perfpulse.alerts.__all__) == {
        "AlertConfig",
        "AlertEngine",
        "AlertStore",
        "Condition",
        "ConfigError",
        "Evaluator",
        "ExprError",
        "MemoryNotifier",
        "MemorySource",
        "Notifier",
        "QuerySource",
        "Rule",
        "RuleCheck",
        "Series",
        "Slo",
        "Source",
        "Transition",
        "parse",
        "parse_config",
        "parse_rule",
        "parse_selector",
        "share_below",
    }
    assert set(perfpulse.budgets.__all__) == {
        "Budgets",
        "HttpReader",
        "Result",
        "budget_rules",
        "check_baseline",
        "check_live",
        "check_static",
        "junit_xml",
        "live_budgets",
        "markdown",
        "parse_budgets",
        "scan",
        "text_table",
    }
    for module in (perfpulse.alerts, perfpulse.budgets):
        for name in module.__all__:
            assert getattr(module, name) is not None
