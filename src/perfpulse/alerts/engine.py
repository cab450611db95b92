"""The alerting engine: evaluator, dispatcher, incidents and silences, wired.

The collector builds one :class:`AlertEngine` and starts it; its thread calls
:meth:`AlertEngine.tick` about once a second. A tick evaluates every rule when
the evaluation interval (15 s by default) is up, turns state changes into
incident events and notifications, flushes notification groups whose time has
come, sends due deliveries, and saves the evaluator's and dispatcher's state so
a restart carries on where it stopped. The rules file is re-read when it
changes on disk. Tests drive :meth:`tick` themselves with the clock they
choose. Example::

    engine = AlertEngine(AlertStore(None), source, rules_path=Path("rules.yaml"))
    engine.tick(now=1790000000.0)
    engine.incidents.list("active")
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from perfpulse.alerts.config import AlertConfig, Integration, Rule, parse_rule
from perfpulse.alerts.dispatcher import Alert, Dispatcher
from perfpulse.alerts.errors import Conflict, NotFound
from perfpulse.alerts.evaluator import STATES, Check, Evaluator, RuleCheck, Transition
from perfpulse.alerts.incidents import Incidents
from perfpulse.alerts.notifiers import Notifier
from perfpulse.alerts.silences import Silences
from perfpulse.alerts.slo import burn_checks, slo_status
from perfpulse.alerts.source import Source
from perfpulse.alerts.store import AlertStore
from perfpulse.alerts.yamlpos import ConfigError, dump, load

log = logging.getLogger("perfpulse.alerts")
TICK_S = 1.0


def load_budget_rules(path: Path | None) -> list[Rule]:
    """The live budgets of a budgets file, as alert rules (none if no file)."""
    if path is None or not path.exists():
        return []
    from perfpulse.budgets.config import Budgets
    from perfpulse.budgets.rules import budget_rules

    return budget_rules(Budgets.load(path))


def collector_paths(
    data_dir: Path, rules: Path | None, budgets: Path | None
) -> tuple[Path, Path | None]:
    """The rules file (``--rules``, else ``<data dir>/rules.yaml``, which the API
    creates when a rule is added) and the budgets file (``--budgets``, else
    ``<data dir>/perfpulse-budgets.yaml`` if present)."""
    default_budgets = data_dir / "perfpulse-budgets.yaml"
    return rules or data_dir / "rules.yaml", budgets or (
        default_budgets if default_budgets.exists() else None
    )


def check_files(data_dir: Path, rules: Path | None, budgets: Path | None) -> str | None:
    """What is wrong with the collector's alerting files, or None."""
    for given, flag in ((rules, "--rules"), (budgets, "--budgets")):
        if given is not None and not given.is_file():
            return f"{flag} {given}: no such file"
    rules_path, budgets_path = collector_paths(data_dir, rules, budgets)
    try:
        config = AlertConfig.load(rules_path)
        load_budget_rules(config.budgets or budgets_path)
    except ConfigError as exc:
        return str(exc)
    return None


class AlertEngine:
    """Everything alerting, behind one lock; ``tick(now)`` does the work."""

    def __init__(
        self,
        store: AlertStore,
        source: Source,
        *,
        rules_path: Path | None = None,
        budgets_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        notifiers: Callable[[Integration], Notifier] | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.rules_path = rules_path
        self.budgets_path = budgets_path
        self.lock = threading.RLock()
        self.config_error: str | None = None
        self.silences = Silences(store)
        self.incidents = Incidents(store)
        self.config, self.budget_rules = self._read()
        self._mtimes = self._stat()
        self.evaluator = Evaluator(self._checks(), source)
        self.dispatcher = Dispatcher(
            self.config,
            store,
            self.silences,
            notifiers=notifiers,
            incident_for=self._incident_for,
        )
        self.evaluator.restore(store.get_state("evaluator") or [])
        self.dispatcher.restore(store.get_state("dispatcher") or [])
        self.next_eval: float = float(store.get_state("next_eval") or 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_collector(
        cls,
        data_dir: Path,
        source: Source,
        *,
        rules: Path | None = None,
        budgets: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AlertEngine:
        """The collector's engine: state in ``<data dir>/alerts.sqlite``."""
        rules_path, budgets_path = collector_paths(data_dir, rules, budgets)
        return cls(
            AlertStore(data_dir / "alerts.sqlite"),
            source,
            rules_path=rules_path,
            budgets_path=budgets_path,
            clock=clock,
        )

    # --- configuration ---------------------------------------------------------------

    def _read(self) -> tuple[AlertConfig, list[Rule]]:
        config = AlertConfig.load(self.rules_path) if self.rules_path else AlertConfig()
        budgets = config.budgets or self.budgets_path
        return config, load_budget_rules(budgets)

    def _stat(self) -> tuple[float | None, ...]:
        paths = (self.rules_path, self.config.budgets or self.budgets_path)
        out = []
        for p in paths:
            try:
                out.append(p.stat().st_mtime if p else None)
            except OSError:
                out.append(None)
        return tuple(out)

    def _checks(self) -> list[Check]:
        checks: list[Check] = [RuleCheck(r) for r in (*self.config.rules, *self.budget_rules)]
        for slo in self.config.slos:
            checks += burn_checks(slo)
        return checks

    def reload(self) -> None:
        """Re-read the rules (and budgets) file; on a mistake keep the old rules."""
        with self.lock:
            try:
                config, budget_rules = self._read()
            except ConfigError as exc:
                self.config_error = str(exc)
                log.error("alerting file not reloaded: %s", exc)
                self._mtimes = self._stat()
                return
            self.config, self.budget_rules, self.config_error = config, budget_rules, None
            self._mtimes = self._stat()
            self.dispatcher.config = config
            self._handle(self.evaluator.set_checks(self._checks(), self.clock()))

    # --- the loop --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self.lock:
            if self._stat() != self._mtimes:
                self.reload()
            if now >= self.next_eval:
                self.next_eval = now + self.config.evaluation_interval_s
                self._handle(self.evaluator.evaluate(now))
            self.dispatcher.flush(now)
            for delivery in self.dispatcher.deliver(now):
                self.incidents.notified(delivery, now)
            self.store.put_state("evaluator", self.evaluator.snapshot())
            self.store.put_state("dispatcher", self.dispatcher.snapshot())
            self.store.put_state("next_eval", self.next_eval)

    def _alert(self, t: Transition) -> Alert:
        s = t.series
        url = self.config.external_url
        return Alert(
            fingerprint=s.fingerprint,
            labels=dict(s.labels),
            annotations=dict(s.annotations),
            starts_at=s.fired_at or t.at,
            ends_at=t.at if t.new == "resolved" else None,
            generator_url=f"{url}/api/v1/alerts/rules/{quote(s.rule, safe='')}" if url else "",
        )

    def _handle(self, transitions: list[Transition]) -> None:
        for t in transitions:
            s = t.series
            if t.new == "firing" and s.fired_at == t.at:  # a new firing episode
                self.dispatcher.update(self._alert(t), t.at)
                keys = self.dispatcher.group_keys(s.labels)
                key, grouped, _ = keys[0]
                self.incidents.alert_fired(s, key, grouped, t.at)
            elif t.new in ("resolved", "firing", "nodata"):
                if t.new != "nodata":
                    self.dispatcher.update(self._alert(t), t.at)
                self.incidents.alert_changed(s, t.old, t.new, t.at)

    def _incident_for(self, group_key: str) -> int | None:
        found = self.store.last_incident_for(group_key)
        return None if found is None else int(found["id"])

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # keep alerting alive; the log says what broke
                    log.exception("alert engine tick failed")
                self._stop.wait(min(TICK_S, self.config.evaluation_interval_s))

        self._thread = threading.Thread(target=run, name="perfpulse-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.store.close()

    # --- what the API shows and changes ------------------------------------------------

    def rules(self) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for check in self.evaluator.checks.values():
                spec = check.spec
                health = self.evaluator.health.get(spec.name)
                series = self.evaluator.series.get(spec.name, {}).values()
                out.append(
                    {
                        "name": spec.name,
                        "expr": spec.expr,
                        "origin": spec.origin,
                        "severity": spec.severity,
                        "for": spec.for_s,
                        "keep_firing_for": spec.keep_firing_for_s,
                        "labels": dict(spec.labels),
                        "annotations": dict(spec.annotations),
                        "last_eval": health.last_eval if health else None,
                        "error": health.error if health else None,
                        "states": {st: sum(1 for s in series if s.state == st) for st in STATES},
                        **self._rule_extra(spec.name),
                    }
                )
            return out

    def _rule_extra(self, name: str) -> dict[str, Any]:
        rule = next((r for r in self.config.rules if r.name == name), None)
        if rule is None:
            return {"editable": False}
        return {"editable": True, "recovery": rule.recovery}

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [s.to_dict() for s in self.evaluator.all_series()]

    def slos(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [slo_status(self.source, slo, now) for slo in self.config.slos]

    def _write_rules(self, rules: list[dict[str, Any]]) -> None:
        if self.rules_path is None:
            raise ConfigError("no rules file: start the collector with --rules or a data dir")
        doc: dict[str, Any] = {}
        if self.rules_path.exists():
            loaded = load(self.rules_path.read_text(encoding="utf-8"), str(self.rules_path))
            doc = dict(loaded or {})
        doc["rules"] = rules
        text = dump(doc)
        from perfpulse.alerts.config import parse_config

        parse_config(text, self.rules_path)  # the whole file must stay valid
        tmp = self.rules_path.with_name(self.rules_path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.rules_path)
        self.reload()

    def put_rule(self, raw: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """Add a rule (``name`` None) or replace the rule called ``name``."""
        with self.lock:
            rule = parse_rule(raw)
            current = [r.to_dict() for r in self.config.rules]
            names = [r["name"] for r in current]
            if name is None:
                if rule.name in names:
                    raise Conflict(f"rule {rule.name!r} exists; PUT it to replace it")
                current.append(rule.to_dict())
            else:
                if name not in names:
                    raise NotFound(f"no rule {name!r} in the rules file")
                if rule.name != name and rule.name in names:
                    raise Conflict(f"rule {rule.name!r} exists")
                current[names.index(name)] = rule.to_dict()
            self._write_rules(current)
            return rule.to_dict()

    def delete_rule(self, name: str) -> None:
        with self.lock:
            current = [r.to_dict() for r in self.config.rules]
            if name not in [r["name"] for r in current]:
                raise NotFound(f"no rule {name!r} in the rules file")
            self._write_rules([r for r in current if r["name"] != name])


__all__ = ["AlertEngine", "check_files", "collector_paths", "load_budget_rules"]
