"""Label matchers, as Alertmanager writes them: ``name="value"``, ``!=``, ``=~``, ``!~``.

Used by routes (which alerts go to which receiver) and silences (which alerts are
kept quiet). Regular expressions are anchored, as in Alertmanager. Example::

    m = Matcher.parse('severity=~"page|critical"')
    m.matches({"severity": "page"})   # True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_MATCHER = re.compile(
    r"""\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,]*)\s*$""",
    re.VERBOSE,
)
OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"bad matcher operator {self.op!r}; one of {', '.join(OPS)}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.value!r}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if m is None:
            raise ValueError(f'bad matcher {text!r}: write name="value" (or !=, =~, !~)')
        value = m.group("value")
        if value[:1] in ('"', "'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        return cls(m.group("name"), m.group("op"), value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def to_dict(self) -> dict[str, object]:
        """Alertmanager's API shape."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Matcher:
        regex, equal = bool(d.get("isRegex", False)), bool(d.get("isEqual", True))
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        return cls(str(d["name"]), op[(regex, equal)], str(d.get("value", "")))


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


__all__ = ["Matcher", "matches_all"]
