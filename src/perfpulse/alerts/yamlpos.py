"""YAML loading that remembers where every value came from, for error messages.

:func:`load` returns plain Python values, except that mappings are :class:`YMap`
and sequences :class:`YList`, which know the 1-based line and column of each of
their values. :class:`ConfigError` carries a file, line and column, and
:meth:`YMap.error` builds one pointing at a key's value. Example::

    doc = load("rules:\\n  - name: x\\n", "rules.yaml")
    rule = doc["rules"][0]
    raise rule.error("name", "must be unique")   # rules.yaml:2:11: must be unique
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration mistake at ``path:line:column``."""

    def __init__(self, message: str, path: str = "", line: int = 0, column: int = 0) -> None:
        self.path, self.line, self.column, self.reason = path, line, column, message
        where = f"{path}:{line}:{column}: " if line else (f"{path}: " if path else "")
        super().__init__(where + message)


Pos = tuple[int, int, str | None]  # line, column (1-based), scalar style


class YMap(dict[str, Any]):
    """A mapping that knows where its keys' values are."""

    path: str = ""
    line: int = 0
    column: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.pos: dict[str, Pos] = {}

    def where(self, key: str) -> Pos:
        return self.pos.get(key, (self.line, self.column, None))

    def error(self, key: str | None, message: str) -> ConfigError:
        line, column, _ = self.where(key) if key is not None else (self.line, self.column, None)
        return ConfigError(message, self.path, line, column)


class YList(list[Any]):
    """A sequence that knows where its items are."""

    path: str = ""
    line: int = 0
    column: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.pos: list[Pos] = []

    def error(self, index: int, message: str) -> ConfigError:
        line, column, _ = self.pos[index] if index < len(self.pos) else (self.line, self.column, "")
        return ConfigError(message, self.path, line, column)


def _convert(node: yaml.Node, loader: yaml.SafeLoader, path: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.path, out.line, out.column = path, node.start_mark.line + 1, node.start_mark.column + 1
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConfigError(
                    f"keys must be text, got {key!r}",
                    path,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            if key in out:
                raise ConfigError(
                    f"duplicate key {key!r}",
                    path,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            out[key] = _convert(value_node, loader, path)
            style = value_node.style if isinstance(value_node, yaml.ScalarNode) else None
            out.pos[key] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1, style)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YList()
        seq.path, seq.line, seq.column = path, node.start_mark.line + 1, node.start_mark.column + 1
        for item in node.value:
            seq.append(_convert(item, loader, path))
            style = item.style if isinstance(item, yaml.ScalarNode) else None
            seq.pos.append((item.start_mark.line + 1, item.start_mark.column + 1, style))
        return seq
    return loader.construct_object(node, deep=True)


def load(text: str, path: str = "") -> Any:
    """Parse YAML text; mappings become :class:`YMap`, sequences :class:`YList`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(node, loader, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(f"not valid YAML: {exc.problem}", path, line, column) from None
    finally:
        loader.dispose()


def load_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from None
    return load(text, str(path))


def inner_position(text: str, pos: Pos, line: int, column: int) -> tuple[int, int]:
    """File position of ``line``/``column`` (1-based) inside a scalar found at ``pos``.

    ``text`` is the whole file. Exact for one-line plain and quoted scalars and for
    block scalars (``|``, ``>``); for folded multi-line plain scalars the line is
    the scalar's first line.
    """
    start_line, start_col, style = pos
    if style in ("|", ">"):
        lines = text.splitlines()
        first = lines[start_line] if start_line < len(lines) else ""  # the first content line
        return start_line + line, len(first) - len(first.lstrip(" ")) + column
    quote = 1 if style in ('"', "'") else 0
    if line == 1:
        return start_line, start_col + quote + column - 1
    return start_line + line - 1, column


def dump(data: Any) -> str:
    """YAML text for plain data (mappings keep their order)."""
    return yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True, width=100)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["ConfigError", "YList", "YMap", "dump", "inner_position", "load", "load_file"]
