"""The alert expression language: a parser from text to a :class:`Condition`.

Grammar (whitespace and newlines between tokens are free)::

    condition = measure op number
    measure   = func "(" selector ")" [ "by" "(" label { "," label } ")" ]
    func      = "p" digits | "avg" | "sum" | "count" | "rate" | "error_ratio" | "hit_ratio"
    selector  = metric [ "{" [ label "=" string { "," label "=" string } ] "}" ] [ "[" duration "]" ]
    op        = ">" | ">=" | "<" | "<="
    duration  = digits unit { digits unit }        unit: s m h d w

``p95`` is the 0.95 quantile, ``p999`` the 0.999 one. ``metric`` is a name from
the catalog; ``http`` is short for ``http.server.duration`` (the HTTP events, so
``error_ratio(http{service="api"})`` is their 5xx share). The window defaults to
:data:`DEFAULT_WINDOW` (5 minutes). Example::

    cond = parse('p95(http.server.duration{service="checkout"}[10m]) by (route) > 300')
    cond.measure.by        # ('route',)
    cond.breached(310.0)   # True

A mistake raises :class:`ExprError` with the 1-based line and column in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from perfpulse.model.catalog import CATALOG, Metric

DEFAULT_WINDOW = 300.0
ALIASES = {"http": "http.server.duration"}
FUNCS = ("avg", "sum", "count", "rate", "error_ratio", "hit_ratio")
OPS = (">=", "<=", ">", "<")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<duration>(?:\d+[smhdw])+(?![A-Za-z0-9_.]))
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.]))
      | (?P<bad>\d[A-Za-z0-9_.]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>>=|<=|!=|=~|!~|[><=(){}\[\],])""",
    re.VERBOSE,
)


class ExprError(ValueError):
    """A parse or validation error at ``line``/``column`` (1-based) of the text."""

    def __init__(self, message: str, text: str, offset: int) -> None:
        before = text[:offset]
        self.line = before.count("\n") + 1
        self.column = offset - (before.rfind("\n") + 1) + 1
        self.reason = message
        super().__init__(f"line {self.line}, column {self.column}: {message}")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    offset: int


def parse_duration(text: str) -> float:
    """``90s``, ``5m``, ``1h30m``, ``30d`` → seconds; a bare number is seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdw])+", text)
    if not parts:
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 5m, 1h30m, 7d")
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 300 → ``5m``, 5400 → ``1h30m``."""
    if seconds <= 0 or seconds != int(seconds):
        return f"{seconds:g}s"
    out, rest = "", int(seconds)
    for unit, size in sorted(UNITS.items(), key=lambda kv: -kv[1]):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric, equality matchers on its dimensions and a look-back window."""

    metric: Metric
    matchers: tuple[tuple[str, str], ...] = ()
    window: float = DEFAULT_WINDOW

    def __str__(self) -> str:
        inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in self.matchers)
        return f"{self.metric.name}{{{inner}}}[{format_duration(self.window)}]"


@dataclass(frozen=True, slots=True)
class Measure:
    """What a rule measures: a function of a selector, optionally per group."""

    func: str
    selector: Selector
    by: tuple[str, ...] = ()
    quantile: float | None = None

    def __str__(self) -> str:
        by = f" by ({', '.join(self.by)})" if self.by else ""
        return f"{self.func}({self.selector}){by}"

    def params(self, now: float) -> dict[str, str]:
        """The query parameters (as the HTTP API takes them) for the window ending ``now``."""
        params = {
            "metric": self.selector.metric.name,
            "from": repr(now - self.selector.window),
            "to": repr(now),
            "q": repr(self.quantile) if self.quantile is not None else "",
        }
        if self.by:
            params["by"] = ",".join(self.by)
        params.update(self.selector.matchers)
        return params

    def value(self, group: dict[str, object], window: float) -> float | None:
        """This measure's value from one group of a percentiles answer."""
        count = group.get("count")
        if not isinstance(count, int) or count <= 0:
            return None
        raw: object
        if self.quantile is not None:
            quantiles = group.get("quantiles")
            raw = next(iter(quantiles.values()), None) if isinstance(quantiles, dict) else None
        elif self.func == "avg":
            raw = group.get("mean")
        elif self.func == "rate":
            raw = count / window
        else:
            raw = group.get(self.func)
        return float(raw) if isinstance(raw, int | float) else None


@dataclass(frozen=True, slots=True)
class Condition:
    """``measure op threshold``: the breach test of a rule."""

    measure: Measure
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.measure} {self.op} {self.threshold:g}"

    def breached(self, value: float, threshold: float | None = None) -> bool:
        limit = self.threshold if threshold is None else threshold
        if self.op == ">":
            return value > limit
        if self.op == ">=":
            return value >= limit
        if self.op == "<":
            return value < limit
        return value <= limit


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(token: Token) -> str:
    body = token.text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, message: str, token: Token | None = None) -> ExprError:
        t = token or self.tok
        return ExprError(message, self.text, t.offset)

    def expect(self, text: str) -> Token:
        t = self.tok
        if t.text != text or t.kind not in ("op", "name"):
            found = repr(t.text) if t.kind != "end" else "the end"
            raise self.fail(f"expected {text!r}, found {found}")
        self.i += 1
        return t

    def take(self, kind: str, what: str) -> Token:
        t = self.tok
        if t.kind != kind:
            found = repr(t.text) if t.kind != "end" else "the end"
            raise self.fail(f"expected {what}, found {found}")
        self.i += 1
        return t

    def func(self) -> tuple[str, float | None]:
        t = self.take("name", "a function such as p95, avg or error_ratio")
        m = re.fullmatch(r"p(\d+)", t.text)
        if m:
            digits = m.group(1)
            q = 1.0 if digits == "100" else float(f"0.{digits}")
            if q <= 0.0:
                raise self.fail(f"bad quantile function {t.text!r}", t)
            return t.text, q
        if t.text not in FUNCS:
            raise self.fail(
                f"unknown function {t.text!r}; use pNN (p50, p95, p999…) or {', '.join(FUNCS)}",
                t,
            )
        return t.text, None

    def selector(self, func: str) -> Selector:
        t = self.take("name", "a metric name")
        name = ALIASES.get(t.text, t.text)
        m = CATALOG.get(name)
        if m is None:
            raise self.fail(f"unknown metric {t.text!r} (see docs/metrics.md)", t)
        if func == "error_ratio" and m.outcome not in ("status", "error"):
            raise self.fail(f"error_ratio needs a metric with errors; {name} has none", t)
        if func == "hit_ratio" and m.outcome != "hit":
            raise self.fail(f"hit_ratio needs a cache metric; {name} is not one", t)
        matchers: list[tuple[str, str]] = []
        if self.tok.text == "{":
            self.i += 1
            while self.tok.text != "}":
                label = self.take("name", "a label name")
                if label.text not in m.all_dims:
                    raise self.fail(
                        f"unknown label {label.text!r} for {name}; known: {', '.join(m.all_dims)}",
                        label,
                    )
                if self.tok.text in ("!=", "=~", "!~"):
                    raise self.fail(f"only '=' matchers are supported, not {self.tok.text!r}")
                self.expect("=")
                value = self.take("string", "a quoted value")
                if any(k == label.text for k, _ in matchers):
                    raise self.fail(f"label {label.text!r} matched twice", label)
                matchers.append((label.text, _unquote(value)))
                if self.tok.text == ",":
                    self.i += 1
                elif self.tok.text != "}":
                    raise self.fail("expected ',' or '}'")
            self.i += 1
        window = DEFAULT_WINDOW
        if self.tok.text == "[":
            self.i += 1
            t = self.tok
            if t.kind not in ("duration", "number"):
                raise self.fail("expected a window such as 5m")
            window = parse_duration(t.text)
            if window <= 0:
                raise self.fail("the window must be longer than zero", t)
            self.i += 1
            self.expect("]")
        return Selector(m, tuple(matchers), window)

    def measure(self) -> Measure:
        func, q = self.func()
        self.expect("(")
        sel = self.selector(func)
        self.expect(")")
        by: list[str] = []
        if self.tok.kind == "name" and self.tok.text == "by":
            self.i += 1
            self.expect("(")
            while True:
                label = self.take("name", "a label name")
                if label.text not in sel.metric.all_dims:
                    raise self.fail(
                        f"unknown label {label.text!r} for {sel.metric.name}; "
                        f"known: {', '.join(sel.metric.all_dims)}",
                        label,
                    )
                if label.text in by:
                    raise self.fail(f"label {label.text!r} named twice", label)
                by.append(label.text)
                if self.tok.text == ",":
                    self.i += 1
                    continue
                self.expect(")")
                break
        return Measure(func, sel, tuple(by), q)

    def condition(self) -> Condition:
        measure = self.measure()
        t = self.tok
        if t.text not in OPS:
            found = repr(t.text) if t.kind != "end" else "the end"
            raise self.fail(f"expected a comparison (>, >=, <, <=), found {found}")
        self.i += 1
        number = self.take("number", "a number")
        self.end()
        return Condition(measure, t.text, float(number.text))

    def end(self) -> None:
        if self.tok.kind != "end":
            raise self.fail(f"unexpected {self.tok.text!r} after the expression")


def parse(text: str) -> Condition:
    """Parse a rule expression such as ``p95(http.server.duration{route="/pay"}) > 300``."""
    return _Parser(text).condition()


def parse_selector(text: str) -> Selector:
    """Parse a bare selector such as ``http.server.duration{service="api"}[30d]``."""
    p = _Parser(text)
    sel = p.selector("")
    p.end()
    return sel


__all__ = [
    "DEFAULT_WINDOW",
    "Condition",
    "ExprError",
    "Measure",
    "Selector",
    "format_duration",
    "parse",
    "parse_duration",
    "parse_selector",
]
