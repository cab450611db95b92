"""Alerting: rules over the metric catalog, SLOs, notifications and incidents.

The collector runs an :class:`AlertEngine`; everything it reads goes through the
query layer (:class:`QuerySource`). docs/alerts.md describes the rules file,
the expression grammar, the states and the API.
"""

from perfpulse.alerts.config import AlertConfig, Rule, Slo, parse_config, parse_rule
from perfpulse.alerts.engine import AlertEngine
from perfpulse.alerts.evaluator import Evaluator, RuleCheck, Series, Transition
from perfpulse.alerts.expr import Condition, ExprError, parse, parse_selector
from perfpulse.alerts.notifiers import MemoryNotifier, Notifier
from perfpulse.alerts.share import share_below
from perfpulse.alerts.source import MemorySource, QuerySource, Source
from perfpulse.alerts.store import AlertStore
from perfpulse.alerts.yamlpos import ConfigError

__all__ = [
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
]
