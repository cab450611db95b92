"""Budget results and the three ways they are reported: a terminal table, a
Markdown summary (for a pull request or ``$GITHUB_STEP_SUMMARY``) and JUnit XML
(which every CI system shows as test results). Example::

    results = [Result("script size (gzip)", "static", 181_000, 174_080, "bytes", "fail")]
    print(text_table(results))
    Path("budgets.xml").write_bytes(junit_xml(results))
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

STATUSES = ("pass", "fail", "skip")
_MARK = {"pass": "✅ pass", "fail": "❌ fail", "skip": "⚪ skip"}


@dataclass(frozen=True, slots=True)
class Result:
    """One budget checked: ``status`` is pass, fail or skip (no data, too little data)."""

    name: str
    kind: str
    measured: float | None
    limit: float | None
    unit: str
    status: str
    detail: str = ""


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "bytes":
        for size, suffix in ((1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    if unit == "percent":
        return f"{value:.1f} %"
    text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return f"{text} {unit}" if unit and unit != "1" else text


def summary(results: list[Result]) -> str:
    counts = {s: sum(1 for r in results if r.status == s) for s in STATUSES}
    verdict = "FAILED" if counts["fail"] else "passed"
    return (
        f"budgets {verdict}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )


def _rows(results: list[Result]) -> list[list[str]]:
    return [
        [r.name, r.kind, fmt(r.measured, r.unit), fmt(r.limit, r.unit), r.status, r.detail]
        for r in results
    ]


HEADERS = ["budget", "kind", "measured", "limit", "result", "detail"]


def text_table(results: list[Result]) -> str:
    rows = _rows(results)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n\n" + summary(results)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: list[Result]) -> str:
    lines = ["## perfpulse budgets", "", summary(results), ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    for r, row in zip(results, _rows(results), strict=True):
        row[4] = _MARK[r.status]
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def junit_xml(results: list[Result]) -> bytes:
    """JUnit XML: one testcase per budget; a breach is a failure, no data a skip."""
    fails = sum(1 for r in results if r.status == "fail")
    skips = sum(1 for r in results if r.status == "skip")
    root = ET.Element("testsuites", name="perfpulse budgets", tests=str(len(results)))
    root.set("failures", str(fails))
    suite = ET.SubElement(
        root,
        "testsuite",
        name="perfpulse budgets",
        tests=str(len(results)),
        failures=str(fails),
        errors="0",
        skipped=str(skips),
    )
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"budgets.{r.kind}", name=r.name)
        case.set("time", "0")
        message = f"{fmt(r.measured, r.unit)} against a limit of {fmt(r.limit, r.unit)}"
        if r.status == "fail":
            failure = ET.SubElement(case, "failure", message=message, type="budget")
            failure.text = r.detail or message
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.detail or "no data")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = message + (f" ({r.detail})" if r.detail else "")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


__all__ = ["Result", "fmt", "junit_xml", "markdown", "summary", "text_table"]
