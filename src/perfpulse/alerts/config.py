"""The alerting file (``rules.yaml``): rules, SLOs, receivers and the route.

Everything is validated once, when the file is read; a mistake raises
:class:`~perfpulse.alerts.yamlpos.ConfigError` naming the file, line and column
(and the rule, for a rule). The format is documented in docs/alerts.md; a short
example::

    evaluation_interval: 15s
    rules:
      - name: CheckoutSlow
        expr: p95(http.server.duration{service="checkout"}[5m]) by (route) > 300
        recovery: 250
        for: 2m
        severity: page
    receivers:
      - name: ops
        webhook_configs: [{url: "http://127.0.0.1:9000/hook"}]
    route: {receiver: ops, group_by: [alertname, service]}

``AlertConfig.load(path)`` reads a file; ``parse_rule(dict)`` checks one rule as
the API receives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfpulse.alerts.expr import (
    Condition,
    ExprError,
    Selector,
    format_duration,
    parse,
    parse_duration,
    parse_selector,
)
from perfpulse.alerts.matchers import Matcher
from perfpulse.alerts.yamlpos import ConfigError, YList, YMap, inner_position, load

RULE_KEYS = (
    "name",
    "expr",
    "for",
    "keep_firing_for",
    "recovery",
    "severity",
    "labels",
    "annotations",
)
SEVERITIES = ("info", "warning", "ticket", "page", "critical")
DEFAULT_BURN = (("1h", "5m", 14.4, "page"), ("6h", "30m", 6.0, "ticket"))


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. ``recovery`` is the hysteresis threshold: a firing series
    resolves only once its value is back past it (default: the threshold)."""

    name: str
    expr: str
    condition: Condition
    recovery: float | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    origin: str = "rules"

    def recovered(self, value: float) -> bool:
        """True when ``value`` is back on the good side of the recovery threshold."""
        limit = self.condition.threshold if self.recovery is None else self.recovery
        return not self.condition.breached(value, limit)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "expr": self.expr}
        if self.recovery is not None:
            out["recovery"] = self.recovery
        if self.for_s:
            out["for"] = format_duration(self.for_s)
        if self.keep_firing_for_s:
            out["keep_firing_for"] = format_duration(self.keep_firing_for_s)
        out["severity"] = self.severity
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """Fire when the error budget burns ``factor`` times too fast over both windows."""

    long_s: float
    short_s: float
    factor: float
    severity: str


@dataclass(frozen=True, slots=True)
class Slo:
    """``objective`` of the ``sli`` events are good over ``window_s``: good is at or
    below ``threshold`` (a latency SLO) or, without one, not an error."""

    name: str
    sli: Selector
    objective: float
    window_s: float
    threshold: float | None = None
    alerts: tuple[BurnAlert, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Integration:
    """One way a receiver is told: ``kind`` is webhook, slack or email."""

    kind: str
    options: Mapping[str, Any]
    send_resolved: bool = True


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    integrations: tuple[Integration, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Alertmanager's route: which receiver, how to group, how often to tell."""

    receiver: str | None = None
    group_by: tuple[str, ...] = ("alertname",)
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    matchers: tuple[Matcher, ...] = ()
    cont: bool = False
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """How notifications are retried: ``retries`` after the first try, waiting
    ``backoff_s`` and doubling up to ``max_backoff_s``."""

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules: tuple[Rule, ...] = ()
    slos: tuple[Slo, ...] = ()
    receivers: tuple[Receiver, ...] = ()
    route: Route = Route()
    delivery: Delivery = Delivery()
    evaluation_interval_s: float = 15.0
    external_url: str = ""
    budgets: Path | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> AlertConfig:
        """Read and validate a file; a missing file is an empty configuration."""
        if not path.exists():
            return cls(path=path)
        return parse_config(path.read_text(encoding="utf-8"), path)

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)


# --- field readers ----------------------------------------------------------------


def _keys(doc: YMap, allowed: tuple[str, ...], what: str) -> None:
    for key in doc:
        if key not in allowed:
            raise doc.error(key, f"{what}: unknown key {key!r}; known: {', '.join(allowed)}")


def _map(doc: Any, what: str, parent: YMap | YList | None = None, key: Any = None) -> YMap:
    if isinstance(doc, YMap):
        return doc
    if isinstance(doc, dict):  # from the API: no positions
        out = YMap()
        out.update(doc)
        return out
    msg = f"{what} must be a mapping"
    if isinstance(parent, YMap):
        raise parent.error(key, msg)
    if isinstance(parent, YList):
        raise parent.error(key, msg)
    raise ConfigError(msg)


def _list(doc: YMap, key: str, what: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(key, f"{what}: {key!r} must be a list")
    return value


def _str(doc: YMap, key: str, what: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None:
        raise doc.error(None, f"{what}: {key!r} is required")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise doc.error(key, f"{what}: {key!r} must be text")
    return str(value)


def _number(doc: YMap, key: str, what: str, default: float | None = None) -> float | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise doc.error(key, f"{what}: {key!r} must be a number")
    return float(value)


def _duration(doc: YMap, key: str, what: str, default: float) -> float:
    value = doc.get(key)
    if value is None:
        return default
    try:
        seconds = parse_duration(str(value))
    except ValueError as exc:
        raise doc.error(key, f"{what}: {key!r}: {exc}") from None
    if seconds < 0:
        raise doc.error(key, f"{what}: {key!r} must not be negative")
    return seconds


def _labels(doc: YMap, key: str, what: str) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(key, f"{what}: {key!r} must be a mapping of names to text")
    return {str(k): str(v) for k, v in value.items()}


def _objective(doc: YMap, what: str) -> float:
    raw = doc.get("objective")
    text = str(raw).strip() if raw is not None else ""
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        raise doc.error("objective", f"{what}: 'objective' must be like 99.9% or 0.999") from None
    if text.endswith("%") or value > 1:
        value /= 100.0
    if not 0.0 < value < 1.0:
        raise doc.error("objective", f"{what}: 'objective' must be between 0 and 100 %")
    return value


# --- sections ----------------------------------------------------------------------


def parse_rule(raw: Any, text: str = "", parent: YList | None = None, index: int = 0) -> Rule:
    """One rule from a YAML mapping (positions kept) or an API dict."""
    doc = _map(raw, "a rule", parent, index)
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise doc.error("name" if "name" in doc else None, "a rule needs a 'name'")
    what = f"rule {name!r}"
    _keys(doc, RULE_KEYS, what)
    expr = _str(doc, "expr", what)
    try:
        cond = parse(expr)
    except ExprError as exc:
        if doc.line:
            line, column = inner_position(text, doc.where("expr"), exc.line, exc.column)
            raise ConfigError(f"{what}: {exc.reason}", doc.path, line, column) from None
        raise ConfigError(f"{what}: expr {exc}") from None
    recovery = _number(doc, "recovery", what)
    if recovery is not None:
        wrong_side = cond.op in (">", ">=") and recovery > cond.threshold
        wrong_side |= cond.op in ("<", "<=") and recovery < cond.threshold
        if wrong_side:
            raise doc.error(
                "recovery",
                f"{what}: 'recovery' ({recovery:g}) must be on the good side of the threshold "
                f"({cond.op} {cond.threshold:g})",
            )
    severity = _str(doc, "severity", what, "warning")
    if severity not in SEVERITIES:
        raise doc.error("severity", f"{what}: 'severity' must be one of {', '.join(SEVERITIES)}")
    return Rule(
        name=name,
        expr=expr,
        condition=cond,
        recovery=recovery,
        for_s=_duration(doc, "for", what, 0.0),
        keep_firing_for_s=_duration(doc, "keep_firing_for", what, 0.0),
        severity=severity,
        labels=_labels(doc, "labels", what),
        annotations=_labels(doc, "annotations", what),
    )


def parse_slo(raw: Any, text: str, parent: YList, index: int) -> Slo:
    doc = _map(raw, "an SLO", parent, index)
    name = _str(doc, "name", "an SLO")
    what = f"SLO {name!r}"
    _keys(
        doc,
        ("name", "sli", "threshold", "objective", "window", "alerts", "labels", "annotations"),
        what,
    )
    sli_text = _str(doc, "sli", what)
    try:
        sli = parse_selector(sli_text)
    except ExprError as exc:
        line, column = inner_position(text, doc.where("sli"), exc.line, exc.column)
        raise ConfigError(f"{what}: {exc.reason}", doc.path, line, column) from None
    threshold = _number(doc, "threshold", what)
    if threshold is None and sli.metric.outcome not in ("status", "error"):
        raise doc.error(
            "sli", f"{what}: {sli.metric.name} has no errors; give a latency 'threshold'"
        )
    alerts = []
    specs = _list(doc, "alerts", what) or [
        {"long": lw, "short": sw, "burn_rate": f, "severity": sev}
        for lw, sw, f, sev in DEFAULT_BURN
    ]
    for i, spec_raw in enumerate(specs):
        spec = _map(spec_raw, f"{what}: an alert", doc.get("alerts"), i)
        _keys(spec, ("long", "short", "burn_rate", "severity"), f"{what}: alert")
        factor = _number(spec, "burn_rate", what)
        if factor is None or factor <= 0:
            raise spec.error("burn_rate", f"{what}: 'burn_rate' must be a positive number")
        alerts.append(
            BurnAlert(
                long_s=_duration(spec, "long", what, 3600.0),
                short_s=_duration(spec, "short", what, 300.0),
                factor=factor,
                severity=_str(spec, "severity", what, "page"),
            )
        )
    return Slo(
        name=name,
        sli=sli,
        objective=_objective(doc, what),
        window_s=_duration(doc, "window", what, 30 * 86_400.0),
        threshold=threshold,
        alerts=tuple(alerts),
        labels=_labels(doc, "labels", what),
        annotations=_labels(doc, "annotations", what),
    )


_INTEGRATIONS = {
    "webhook_configs": ("webhook", ("url", "headers", "max_alerts", "send_resolved"), True),
    "slack_configs": (
        "slack",
        ("api_url", "channel", "username", "title", "text", "send_resolved"),
        False,
    ),
    "email_configs": (
        "email",
        (
            "to",
            "from",
            "smarthost",
            "auth_username",
            "auth_password",
            "require_tls",
            "subject",
            "send_resolved",
        ),
        False,
    ),
}


def parse_receiver(raw: Any, parent: YList, index: int) -> Receiver:
    doc = _map(raw, "a receiver", parent, index)
    name = _str(doc, "name", "a receiver")
    what = f"receiver {name!r}"
    _keys(doc, ("name", *_INTEGRATIONS), what)
    integrations = []
    for key, (kind, allowed, resolved_default) in _INTEGRATIONS.items():
        for i, item in enumerate(_list(doc, key, what)):
            spec = _map(item, f"{what}: {key}", doc.get(key), i)
            _keys(spec, allowed, f"{what}: {kind}")
            required = {"webhook": "url", "slack": "api_url", "email": "smarthost"}[kind]
            _str(spec, required, f"{what}: {kind}")
            if kind == "email":
                to = spec.get("to")
                if not to or not isinstance(to, str | list):
                    raise spec.error("to", f"{what}: email needs 'to' (an address or a list)")
                host, _, port = str(spec["smarthost"]).rpartition(":")
                if not host or not port.isdigit():
                    raise spec.error("smarthost", f"{what}: 'smarthost' must be host:port")
            options = {k: v for k, v in spec.items() if k != "send_resolved"}
            send_resolved = spec.get("send_resolved", resolved_default)
            integrations.append(Integration(kind, options, bool(send_resolved)))
    return Receiver(name, tuple(integrations))


def parse_route(raw: Any, parent: YMap | YList, key: Any, base: Route | None) -> Route:
    doc = _map(raw, "a route", parent, key)
    keys = ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval")
    _keys(doc, (*keys, "matchers", "continue", "routes"), "route")
    b = base or Route()
    matchers = []
    for i, text in enumerate(_list(doc, "matchers", "route")):
        try:
            matchers.append(Matcher.parse(str(text)))
        except ValueError as exc:
            raise doc["matchers"].error(i, f"route: {exc}") from None
    group_by = doc.get("group_by")
    route = Route(
        receiver=_str(doc, "receiver", "route", b.receiver) if "receiver" in doc else b.receiver,
        group_by=tuple(str(g) for g in group_by) if isinstance(group_by, list) else b.group_by,
        group_wait_s=_duration(doc, "group_wait", "route", b.group_wait_s),
        group_interval_s=_duration(doc, "group_interval", "route", b.group_interval_s),
        repeat_interval_s=_duration(doc, "repeat_interval", "route", b.repeat_interval_s),
        matchers=tuple(matchers),
        cont=bool(doc.get("continue", False)),
    )
    children = tuple(
        parse_route(child, doc["routes"], i, route)
        for i, child in enumerate(_list(doc, "routes", "route"))
    )
    return Route(**{**_fields(route), "routes": children})


def _fields(route: Route) -> dict[str, Any]:
    return {name: getattr(route, name) for name in Route.__dataclass_fields__}


def parse_config(text: str, path: Path | None = None) -> AlertConfig:
    where = str(path) if path else ""
    doc = load(text, where)
    if doc is None:
        return AlertConfig(path=path)
    if not isinstance(doc, YMap):
        raise ConfigError("the alerting file must be a mapping", where, 1, 1)
    top = (
        "evaluation_interval",
        "external_url",
        "budgets",
        "rules",
        "slos",
        "receivers",
        "route",
        "delivery",
    )
    _keys(doc, top, "alerting file")
    rules: list[Rule] = []
    rule_docs = doc.get("rules")
    for i, raw in enumerate(_list(doc, "rules", "alerting file")):
        assert isinstance(rule_docs, YList)
        rule = parse_rule(raw, text, rule_docs, i)
        if any(r.name == rule.name for r in rules):
            raise _map(raw, "a rule").error("name", f"rule {rule.name!r} is defined twice")
        rules.append(rule)
    slos = tuple(
        parse_slo(raw, text, doc["slos"], i)
        for i, raw in enumerate(_list(doc, "slos", "alerting file"))
    )
    receivers = tuple(
        parse_receiver(raw, doc["receivers"], i)
        for i, raw in enumerate(_list(doc, "receivers", "alerting file"))
    )
    route = parse_route(doc["route"], doc, "route", None) if "route" in doc else Route()
    names = {r.name for r in receivers}
    _check_receivers(route, names, doc)
    delivery_doc = _map(doc.get("delivery", {}), "delivery", doc, "delivery")
    _keys(delivery_doc, ("retries", "backoff", "max_backoff", "timeout"), "delivery")
    retries = _number(delivery_doc, "retries", "delivery", 5)
    delivery = Delivery(
        retries=int(retries or 0),
        backoff_s=_duration(delivery_doc, "backoff", "delivery", 1.0),
        max_backoff_s=_duration(delivery_doc, "max_backoff", "delivery", 300.0),
        timeout_s=_duration(delivery_doc, "timeout", "delivery", 10.0),
    )
    interval = _duration(doc, "evaluation_interval", "alerting file", 15.0)
    if interval <= 0:
        raise doc.error("evaluation_interval", "'evaluation_interval' must be positive")
    budgets = doc.get("budgets")
    budgets_path = None
    if budgets is not None:
        budgets_path = Path(str(budgets))
        if path is not None and not budgets_path.is_absolute():
            budgets_path = path.parent / budgets_path
    return AlertConfig(
        rules=tuple(rules),
        slos=slos,
        receivers=receivers,
        route=route,
        delivery=delivery,
        evaluation_interval_s=interval,
        external_url=str(doc.get("external_url", "")).rstrip("/"),
        budgets=budgets_path,
        path=path,
    )


def _check_receivers(route: Route, names: set[str], doc: YMap) -> None:
    if route.receiver is not None and route.receiver not in names:
        raise doc.error("route", f"route: unknown receiver {route.receiver!r}")
    for child in route.routes:
        _check_receivers(child, names, doc)


__all__ = [
    "AlertConfig",
    "BurnAlert",
    "Delivery",
    "Integration",
    "Receiver",
    "Route",
    "Rule",
    "Slo",
    "parse_config",
    "parse_rule",
]
