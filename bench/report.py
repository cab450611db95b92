"""Results, and docs/benchmarks.md rendered from them.

A benchmark returns a :class:`Report`: one :class:`Result` row per number with
its baseline measured in the same run, the ratio, the target and whether it was
met, plus free-form Markdown ``details`` (plans, profiles, raw figures)::

    Report("query", "Query", description, [Result("p50/p95/p99 by route", 31.2, "ms", ...)])
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_ROLE = re.compile(r":(?:data|class|func|meth|mod|attr):`~?([^`]+)`")


def rst_to_md(text: str) -> str:
    """Docstring markup (``code``, :class:`x`) as Markdown (`code`, `x`)."""
    return _ROLE.sub(r"`\1`", text).replace("``", "`")


@dataclass(slots=True)
class Result:
    """One measured number against its baseline and target."""

    what: str
    value: float
    unit: str
    baseline_what: str = ""
    baseline: float | None = None
    target: str = ""
    passed: bool | None = None
    ratio: float | None = None  # value / baseline unless given

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "**MISS**", None: "–"}[self.passed]


@dataclass(slots=True)
class Report:
    name: str
    title: str
    description: str
    results: list[Result] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.results)


def to_json(report: Report) -> dict[str, Any]:
    return asdict(report)


def from_json(data: dict[str, Any]) -> Report:
    results = [Result(**r) for r in data.pop("results")]
    return Report(results=results, **data)


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if value == float("inf"):
        text = "∞"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:#.3g}"
    return f"{text} {unit}".strip()


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: list[Result]) -> str:
    return table(
        ["measured", "result", "baseline (same run)", "ratio", "target", "verdict"],
        [
            [
                r.what,
                number(r.value, r.unit),
                f"{r.baseline_what}: {number(r.baseline, r.unit)}" if r.baseline_what else "–",
                "–" if r.ratio is None else f"{r.ratio:.3g}×",
                r.target or "–",
                r.verdict,
            ]
            for r in results
        ],
    )


def summary(reports: list[Report]) -> str:
    lines = []
    for rep in reports:
        mode = " (quick)" if rep.quick else ""
        lines.append(f"== {rep.title}{mode}: {rep.seconds:.0f} s")
        for r in rep.results:
            ratio = "" if r.ratio is None else f"  ratio {r.ratio:.3g}x"
            base = f"  vs {r.baseline_what} {number(r.baseline, r.unit)}" if r.baseline_what else ""
            verdict = {True: "PASS", False: "MISS", None: "    "}[r.passed]
            lines.append(
                f"  [{verdict}] {r.what}: {number(r.value, r.unit)}{base}{ratio}"
                f"{'  (target ' + r.target + ')' if r.target else ''}"
            )
    return "\n".join(lines)


def markdown(reports: list[Report], preamble: str) -> str:
    """The whole page; each section says when and on what it was measured."""
    out = [preamble.rstrip(), ""]
    out.append("## Machine and runs")
    out.append("")
    keys = [
        k for k in reports[0].machine if k not in ("date", "load average at start (1 / 5 / 15 min)")
    ]
    out.append(table(["", ""], [[k, reports[0].machine.get(k, "")] for k in keys]))
    out.append("")
    out.append(
        table(
            ["benchmark", "measured", "mode", "took", "load average at start (1 / 5 / 15 min)"],
            [
                [
                    rep.title,
                    rep.machine.get("date", "?"),
                    "quick" if rep.quick else "full",
                    f"{rep.seconds:.0f} s",
                    rep.machine.get("load average at start (1 / 5 / 15 min)", "?"),
                ]
                for rep in reports
            ],
        )
    )
    out.append("")
    out.append("## Summary")
    out.append("")
    rows = []
    for rep in reports:
        for r in rep.results:
            if r.target:
                rows.append([rep.title, r.what, number(r.value, r.unit), r.target, r.verdict])
    out.append(table(["benchmark", "measured", "result", "target", "verdict"], rows))
    for rep in reports:
        out += ["", f"## {rep.title}", "", rst_to_md(rep.description.strip()), ""]
        mode = "quick mode" if rep.quick else "full mode"
        command = f"python -m bench.run {rep.name}{' --quick' if rep.quick else ''}"
        when = rep.machine.get("date", "?")
        out += [f"Run: `{command}` ({mode}, {rep.seconds:.0f} s, {when}).", ""]
        out.append(results_table(rep.results))
        for block in rep.details:
            out += ["", block.rstrip()]
    return "\n".join(out).rstrip() + "\n"
