"""The evaluator: moves every series through its states on each evaluation.

States: ``inactive`` → ``pending`` (breached, waiting out ``for``) → ``firing`` →
``resolved``; and ``nodata``, entered whenever a series has no value in its
window, so missing data never reads as recovery. A firing series that loses
its data stays *active* (``nodata`` with ``was_firing``) until data comes back
and shows it recovered.

Hysteresis: a firing series resolves only when its value is back past the
rule's *recovery* threshold and has stayed there for ``keep_firing_for``; a
value hovering at the threshold therefore fires once and stays firing.

A :class:`Check` turns the source's numbers into :class:`Observation`\\ s (one
per label set); :class:`RuleCheck` does that for a threshold rule, and
``perfpulse.alerts.slo`` for burn-rate alerts. The clock is the ``now`` each
:meth:`Evaluator.evaluate` call is given. Example::

    ev = Evaluator([RuleCheck(rule)], source)
    for t in ev.evaluate(now=1790000000.0):
        print(t.series.labels, t.old, "→", t.new)
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from perfpulse.alerts.config import Rule
from perfpulse.alerts.source import Labels, Source

log = logging.getLogger("perfpulse.alerts")
STATES = ("inactive", "pending", "firing", "resolved", "nodata")
NODATA_FORGET_S = 86_400.0


def fingerprint(labels: Mapping[str, str]) -> str:
    """A label set's identity: 64-bit FNV-1a over sorted names and values, in hex."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def render(template: str, labels: Mapping[str, str], value: float | None) -> str:
    """Fill ``{{ $value }}`` and ``{{ $labels.name }}`` in an annotation."""

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref == "$value":
            return "" if value is None else f"{value:.4g}"
        return labels.get(ref.removeprefix("$labels."), "")

    return re.sub(r"\{\{\s*(\$value|\$labels\.[A-Za-z_][A-Za-z0-9_]*)\s*\}\}", sub, template)


@dataclass(frozen=True, slots=True)
class Observation:
    """One label set's value now: breached (past the threshold) and recovered
    (back past the recovery threshold) are decided by the check."""

    labels: Labels
    value: float
    breach: bool
    recovered: bool


@dataclass(frozen=True, slots=True)
class Spec:
    """What the state machine needs to know of a rule."""

    name: str
    expr: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    grouped: bool = False
    origin: str = "rules"


class Check(Protocol):
    spec: Spec

    def observe(self, source: Source, now: float) -> list[Observation]: ...


class RuleCheck:
    """A threshold rule: ``measure op threshold``, with its recovery threshold."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.spec = Spec(
            name=rule.name,
            expr=rule.expr,
            for_s=rule.for_s,
            keep_firing_for_s=rule.keep_firing_for_s,
            severity=rule.severity,
            labels=rule.labels,
            annotations=rule.annotations,
            grouped=bool(rule.condition.measure.by),
            origin=rule.origin,
        )

    def observe(self, source: Source, now: float) -> list[Observation]:
        cond = self.rule.condition
        return [
            Observation(s.labels, s.value, cond.breached(s.value), self.rule.recovered(s.value))
            for s in source.measure(cond.measure, now)
        ]


@dataclass(slots=True)
class Series:
    """One label set of one rule and where it stands."""

    rule: str
    labels: dict[str, str]
    fingerprint: str
    state: str = "inactive"
    since: float = 0.0
    active_at: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_bad: float | None = None
    value: float | None = None
    was_firing: bool = False
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Firing, or firing when its data went missing."""
        return self.state == "firing" or (self.state == "nodata" and self.was_firing)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "active": self.active}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Series:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True, slots=True)
class Transition:
    series: Series
    old: str
    new: str
    at: float


@dataclass(slots=True)
class Health:
    last_eval: float | None = None
    error: str | None = None


class Evaluator:
    """Evaluates checks against a source; keeps every series' state."""

    def __init__(self, checks: Iterable[Check], source: Source) -> None:
        self.source = source
        self.checks: dict[str, Check] = {}
        self.series: dict[str, dict[Labels, Series]] = {}
        self.health: dict[str, Health] = {}
        self.set_checks(checks, now=None)

    def set_checks(self, checks: Iterable[Check], now: float | None) -> list[Transition]:
        """Replace the checks; series of removed rules resolve if they were active."""
        new = {c.spec.name: c for c in checks}
        out = []
        for name in list(self.series):
            if name not in new:
                for s in self.series.pop(name).values():
                    if s.active and now is not None:
                        out.append(self._move(s, "resolved", now))
                self.health.pop(name, None)
        self.checks = new
        for name in new:
            self.health.setdefault(name, Health())
        return out

    def evaluate(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        for name, check in self.checks.items():
            health = self.health.setdefault(name, Health())
            try:
                observations = check.observe(self.source, now)
            except Exception as exc:  # one broken rule must not stop the others
                health.error = f"{type(exc).__name__}: {exc}"
                log.warning("rule %s failed: %s", name, health.error)
                continue
            health.last_eval, health.error = now, None
            out += self._step(check.spec, observations, now)
        return out

    def _labels(self, spec: Spec, extra: Labels) -> dict[str, str]:
        return {"alertname": spec.name, "severity": spec.severity, **spec.labels, **dict(extra)}

    def _step(self, spec: Spec, observations: list[Observation], now: float) -> list[Transition]:
        known = self.series.setdefault(spec.name, {})
        if not spec.grouped and not known:
            labels = self._labels(spec, ())
            known[()] = Series(spec.name, labels, fingerprint(labels), since=now)
        seen = {o.labels: o for o in observations}
        for key in seen:
            if key not in known:
                labels = self._labels(spec, key)
                known[key] = Series(spec.name, labels, fingerprint(labels), since=now)
        out = []
        for key, s in list(known.items()):
            obs = seen.get(key)
            t = self._advance(spec, s, obs, now)
            if t is not None:
                out.append(t)
            if s.state == "nodata" and not s.active and now - s.since > NODATA_FORGET_S:
                del known[key]
        return out

    def _advance(
        self, spec: Spec, s: Series, obs: Observation | None, now: float
    ) -> Transition | None:
        if obs is None:
            s.value = None
            if s.state == "nodata":
                return None
            s.was_firing = s.active
            return self._move(s, "nodata", now)
        s.value = obs.value
        s.annotations = {k: render(v, s.labels, obs.value) for k, v in spec.annotations.items()}
        if s.active:
            if not obs.recovered:
                s.last_bad = now
            back = obs.recovered and now - (s.last_bad or now) >= spec.keep_firing_for_s
            if back:
                return self._move(s, "resolved", now)
            return self._move(s, "firing", now) if s.state != "firing" else None
        if not obs.breach:
            if s.state in ("pending", "nodata"):
                return self._move(s, "inactive", now)
            return None
        if s.state != "pending":
            s.active_at = now
        if now - (s.active_at or now) >= spec.for_s:
            s.fired_at = now
            s.last_bad = now
            return self._move(s, "firing", now)
        return self._move(s, "pending", now) if s.state != "pending" else None

    @staticmethod
    def _move(s: Series, new: str, now: float) -> Transition:
        old = s.state
        s.state, s.since = new, now
        if new == "resolved":
            s.resolved_at, s.was_firing = now, False
        elif new == "firing":
            s.was_firing = False
        return Transition(dataclasses.replace(s, labels=dict(s.labels)), old, new, now)

    def all_series(self) -> list[Series]:
        return [s for known in self.series.values() for s in known.values()]

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.all_series()]

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Put back series saved by :meth:`snapshot` (for rules that still exist)."""
        for row in rows:
            s = Series.from_dict(row)
            check = self.checks.get(s.rule)
            if check is None:
                continue
            extra = tuple(
                sorted(
                    (k, v)
                    for k, v in s.labels.items()
                    if k not in ("alertname", "severity") and k not in check.spec.labels
                )
            )
            self.series.setdefault(s.rule, {})[extra] = s


__all__ = [
    "STATES",
    "Check",
    "Evaluator",
    "Observation",
    "RuleCheck",
    "Series",
    "Spec",
    "Transition",
    "fingerprint",
    "render",
]
