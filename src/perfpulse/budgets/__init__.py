"""Performance budgets: a static build and live data against limits, as a CI gate
(``perfpulse budget check``) and as alert rules in the collector.

docs/budgets.md describes ``perfpulse-budgets.yaml``, the checks and the
statistics of the baseline gate.
"""

from perfpulse.budgets.baseline import check_baseline
from perfpulse.budgets.config import Budgets, parse_budgets
from perfpulse.budgets.live import HttpReader, check_live
from perfpulse.budgets.report import Result, junit_xml, markdown, text_table
from perfpulse.budgets.rules import budget_rules, live_budgets
from perfpulse.budgets.static import check_static, scan

__all__ = [
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
]
