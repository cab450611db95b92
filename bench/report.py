"""Results, and docs/benchmarks.md rendered from them.

A benchmark returns a :class:`Report`: one :class:`Result` row per number with
its baseline measured in the same run, the ratio, the target and whether it was
met, plus free-form Markdown ``details`` (plans, profiles, raw figures)::

    Report("query", "Query", description, [Result("p50/p95/p99 by route", 31.2, "ms", ...)])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.results)


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


def markdown(reports: list[Report], machine: dict[str, str], preamble: str) -> str:
    out = [preamble.rstrip(), ""]
    out.append("## Machine and run")
    out.append("")
    out.append(table(["", ""], [[k, v] for k, v in machine.items()]))
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
        out += [
            f"Run: `python -m bench.run {rep.name}{' --quick' if rep.quick else ''}` ({mode}, {rep.seconds:.0f} s).",
            "",
        ]
        out.append(results_table(rep.results))
        for block in rep.details:
            out += ["", block.rstrip()]
    return "\n".join(out).rstrip() + "\n"
