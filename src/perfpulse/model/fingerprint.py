"""SQL fingerprints: one statement shape, whatever values it was run with.

The Python agent and the collector both call :func:`fingerprint_sql`, so it is
the one definition of "the same query": it must be deterministic and
idempotent (``fingerprint_sql(fingerprint_sql(s)) == fingerprint_sql(s)``), and
no literal value may survive it. Rules:

- **literals become** ``?``: strings (``'O''Brien'``, ``E'a\\'b'``, ``N'x'``,
  ``X'1f'``, ``U&'x'``), dollar-quoted strings (``$$x$$``, ``$tag$x$tag$``),
  numbers (``42``, ``-1.5e3``, ``.5``, ``0x1F``; not the digits of an
  identifier such as ``t1``), ``TRUE`` and ``FALSE``. ``NULL`` stays. A sign
  directly in front of a literal, where it cannot be a subtraction, goes with
  it: ``x = -5`` gives ``x = ?``, ``a - 5`` gives ``a - ?``;
- **placeholders become** ``?``: ``%s``, ``%(name)s``, ``:name``, ``$1``,
  ``?`` (``::int`` casts are kept; ``:1`` is a colon and a number, as in the
  slice ``a[1:2]``, so it becomes ``:?``);
- **lists collapse**: after ``IN``, ``VALUES`` and ``ARRAY``, repeated
  identical items in a row become one: ``IN (1, 2, 3)`` gives ``IN (?)``,
  ``VALUES (1, 'x'), (2, 'y')`` gives ``VALUES (?, ?)``,
  ``IN ((1, 2), (3, 4))`` gives ``IN ((?, ?))``, ``ARRAY[1, 2]`` gives ``ARRAY[?]``;
- **comments are removed** (``-- ...`` and ``/* ... */``; MySQL's ``#`` comment
  is not recognized, as ``#`` is an operator in PostgreSQL);
- **whitespace** collapses to one space, none after ``(`` or before ``)``,
  ``,`` or ``;``, one after ``,``; trailing ``;`` are dropped;
- **keywords** (:data:`KEYWORDS`) are upper-cased; identifiers, quoted
  identifiers (``"User"``, ```order```) and function names are left as written.

Whether ``\\`` escapes a quote depends on the database: it does in MySQL (and
in what client-side drivers such as PyMySQL interpolate: ``'O\\'Brien'``), not in
standard SQL (``'C:\\'``). A statement with a backslash is read both ways. A
reading with a string directly followed by a word or another literal
(``'O\\'`` then ``Brien``) is impossible; if only one reading is possible, it
is used. Otherwise every character that either reading puts in a literal or a
comment is removed, a run of them becoming one ``?``: the right reading loses
nothing, the wrong one may take some SQL along (``a = 'C:\\' AND b = 1`` gives
``a = ?``). A string or quoted identifier still open at the end (a truncated
statement) runs to the end and becomes one ``?``. Double-quoted text is always
an identifier, as in standard SQL: a MySQL string in double quotes survives.

:func:`redact_statement` is the version for showing one slow statement: it
removes literals and comments the same way but keeps the statement as written
otherwise: placeholders, case, line breaks and indentation, and every item of
an ``IN`` list (a reader wants to see that the list had 500 items).

Example::

    >>> fingerprint_sql("select * from users where id in (1, 2, 3) -- api key 123")
    'SELECT * FROM users WHERE id IN (?)'
    >>> redact_statement("SELECT *\\n  FROM users\\n WHERE name = 'O''Brien'")
    'SELECT *\\n  FROM users\\n WHERE name = ?'
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise

__all__ = ["KEYWORDS", "fingerprint_sql", "redact_statement"]

#: Words :func:`fingerprint_sql` upper-cases: SQL's reserved words and the clause
#: words around them. Words often used as column names (``key``, ``name``,
#: ``type``, ``date``, ``user``) are left out, so their case is kept.
KEYWORDS = frozenset(
    """
    ADD ALL ALTER ANALYZE AND ANY ARRAY AS ASC BEGIN BETWEEN BOTH BY CASCADE CASE
    CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT DELETE DESC DISTINCT DO
    DROP DUPLICATE ELSE END ESCAPE EXCEPT EXISTS EXPLAIN FETCH FILTER FIRST FOR
    FOREIGN FROM FULL GRANT GROUP HAVING IF ILIKE IN INDEX INNER INSERT INTERSECT
    INTERVAL INTO IS ISNULL JOIN LAST LATERAL LEADING LEFT LIKE LIMIT LOCALTIME
    LOCALTIMESTAMP LOCKED NATURAL NEXT NOT NOTHING NOTNULL NOWAIT NULL NULLS OFFSET
    ON ONLY OR ORDER OUTER OVER PARTITION PRIMARY RECURSIVE REFERENCES RELEASE
    RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET SHARE SIMILAR SKIP SOME
    START TABLE THEN TO TRAILING TRANSACTION TRUNCATE UNION UNIQUE UPDATE USING
    VALUES WHEN WHERE WINDOW WITH
    """.split()  # noqa: SIM905 - a word list reads better as text
)

#: Statements longer than this are fingerprinted without the cache, which bounds
#: the cache's memory to about ``_CACHE_SIZE * 2 * _CACHE_MAX_LEN`` characters.
_CACHE_MAX_LEN = 8192
_CACHE_SIZE = 2048

_BOOLEANS = frozenset({"TRUE", "FALSE"})
# Keywords after which a sign is a subtraction, not part of a literal: ``END - 1``.
_OPERAND_KEYWORDS = frozenset(
    {"END", "NULL", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_USER"}
)
_LISTS = {"IN": ("(", ")"), "VALUES": ("(", ")"), "ARRAY": ("[", "]")}

# One token and the whitespace before it. The kinds are ordered by how often
# they come up, as the first alternative that matches wins.
_TOKENS = r"""
    (?P<space>\s*)
    (?:
      (?P<word>(?![bBeEnNxX]'|[uU]&')[^\W\d][\w$]*)
    | (?P<punct>[(),;=*]|\.(?!\d))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<string>(?:(?:[bBnNxX]|[uU]&)?{string}|[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*')(?!'))
    | (?P<param>\$[0-9]+|%\([^()\s]*\)s|%s|(?<!:):[A-Za-z_][A-Za-z0-9_]*|\?)
    | (?P<quoted>"[^"]*(?:""[^"]*)*"|`[^`]*(?:``[^`]*)*`)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<open_string>(?:[bBeEnNxX]|[uU]&)?'.*)
    | (?P<open_quoted>["`].*)
    | (?P<op>::|<=|>=|<>|!=|\|\||->>|->|\S)
    )
"""
# Two readers that differ only in how a string literal ends.
_ESCAPED = re.compile(
    _TOKENS.replace("{string}", r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"), re.VERBOSE | re.DOTALL
)
_STANDARD = re.compile(_TOKENS.replace("{string}", r"'[^']*(?:''[^']*)*'"), re.VERBOSE | re.DOTALL)
_LITERALS = frozenset({"string", "open_string", "dollar", "number", "open_quoted", "merged"})
# What cannot come right after a string literal, without whitespace between.
_NOT_AFTER_STRING = _LITERALS | {"word", "param", "quoted"}

_Token = tuple[str, str, str]  # (whitespace before, kind, text)


def fingerprint_sql(statement: str) -> str:
    """Return the fingerprint of ``statement`` (see the module for the rules)."""
    if len(statement) > _CACHE_MAX_LEN:
        return _fingerprint(statement)
    return _fingerprint_cached(statement)


def redact_statement(statement: str) -> str:
    """Return ``statement`` with literals replaced by ``?`` and comments removed.

    Unlike :func:`fingerprint_sql`, the statement keeps its case, placeholders,
    line breaks and indentation, and lists are not collapsed. A removed comment
    leaves the whitespace that followed it (or else the whitespace before it, or
    one space). Leading and trailing whitespace is stripped. Not cached: slow
    statements are rare.
    """
    out: list[str] = []
    gap = ""  # the whitespace to put before the next token
    comment = False  # whether a comment was removed since the last token
    for space, kind, text in _tokenize(statement):
        gap = (space or gap) if comment else space
        if kind == "comment":
            comment = True
            continue
        if out:
            out.append(gap or (" " if comment else ""))
        if kind in _LITERALS or (kind == "word" and text.upper() in _BOOLEANS):
            text = "?"
        out.append(text)
        comment = False
    return "".join(out)


def _tokenize(statement: str) -> list[_Token]:
    """Split ``statement`` into tokens (see the module on backslashes).

    Trailing whitespace is left out.
    """
    if "\\" not in statement:  # both readings are the same
        return [
            (m["space"], kind, m[kind])
            for m in _ESCAPED.finditer(statement)
            if (kind := m.lastgroup or "op")
        ]
    readings = [list(reader.finditer(statement)) for reader in (_ESCAPED, _STANDARD)]
    possible = [matches for matches in readings if _possible(matches)]
    if len(possible) == 1:
        return [_token(m) for m in possible[0]]
    return _union(statement, readings)


def _possible(matches: list[re.Match[str]]) -> bool:
    """Whether a reading could be right: no string is directly followed by a word
    or another literal, as ``'it\\'s'`` read the standard way (``'it\\'`` then
    ``s``). A string left open is possible: the statement may have been cut."""
    previous = ""
    for m in matches:
        kind = m.lastgroup or "op"
        if previous == "string" and not m["space"] and kind in _NOT_AFTER_STRING:
            return False
        previous = kind
    return True


def _union(statement: str, readings: list[list[re.Match[str]]]) -> list[_Token]:
    """The first reading's tokens, less what any reading puts in a literal or comment.

    A run of tokens touching a character some reading puts in a literal becomes
    one literal, and a token touching only a comment becomes a comment.
    """
    literal = bytearray(len(statement))
    comment = bytearray(len(statement))
    for matches in readings:
        for m in matches:
            kind = m.lastgroup or "op"
            marks = literal if kind in _LITERALS else comment if kind == "comment" else None
            if marks is not None:
                marks[m.start(kind) : m.end()] = b"\x01" * (m.end() - m.start(kind))
    tokens: list[_Token] = []
    for m in readings[0]:
        space, kind, text = _token(m)
        start, end = m.start(kind), m.end()
        if 1 in literal[start:end]:
            if tokens and tokens[-1][1] == "merged":
                space, _, merged = tokens.pop()
                text = merged + text
            tokens.append((space, "merged", text))
        else:
            tokens.append((space, "comment" if 1 in comment[start:end] else kind, text))
    return tokens


def _token(m: re.Match[str]) -> _Token:
    kind = m.lastgroup or "op"
    space, text = m.group("space", kind)
    return space, kind, text


def _fingerprint(statement: str) -> str:
    texts: list[str] = []
    spaced: list[bool] = []  # whether whitespace came before texts[i]
    lists: list[int] = []  # where IN, VALUES and ARRAY are in texts
    space = False
    for before, kind, text in _tokenize(statement):
        if before or kind == "comment":
            space = True
            if kind == "comment":
                continue
        literal = kind == "param" or kind in _LITERALS
        if kind == "word" and (not texts or texts[-1] != "."):  # ``t.order`` is a column
            upper = text.upper()
            if upper in KEYWORDS:
                text = upper
                if upper in _LISTS:
                    lists.append(len(texts))
            literal = upper in _BOOLEANS
        if literal:
            while texts and texts[-1] in ("-", "+") and _is_prefix_sign(texts, len(texts) - 1):
                texts.pop()
                space = spaced.pop()
            text = "?"
        texts.append(text)
        spaced.append(space)
        space = False
    while texts and texts[-1] == ";":
        texts.pop()
        spaced.pop()
    for i in reversed(lists):  # inner lists first
        brackets = _LISTS[texts[i]]
        if i + 1 < len(texts) and texts[i + 1] == brackets[0]:
            _collapse(texts, spaced, i + 1, brackets)
    return _join(texts, spaced)


_fingerprint_cached = lru_cache(maxsize=_CACHE_SIZE)(_fingerprint)


def _is_prefix_sign(texts: list[str], i: int) -> bool:
    """Whether the sign at ``texts[i]`` starts a literal rather than subtracting."""
    if i == 0:
        return True
    before = texts[i - 1]
    if before in KEYWORDS:
        return before not in _OPERAND_KEYWORDS
    if before in (")", "]", "?") or before[0] in '"`':
        return False
    return not (before[0].isalnum() or before[0] in "_$")


def _collapse(texts: list[str], spaced: list[bool], start: int, brackets: tuple[str, str]) -> None:
    """Merge repeated items of the list opening at ``texts[start]``, in place.

    For ``(``/``[`` lists (``IN``, ``ARRAY``) the items are between the brackets;
    for ``VALUES`` they are the bracketed tuples that follow, comma-separated.
    """
    opening, closing = brackets
    if texts[start - 1] == "VALUES":
        items: list[tuple[int, int]] = []
        i = start
        while i < len(texts) and texts[i] == opening:
            end = _matching(texts, i, opening, closing)
            items.append((i, end + 1))
            i = end + 2 if end + 1 < len(texts) and texts[end + 1] == "," else len(texts) + 1
        _dedupe(texts, spaced, items)
        return
    end = _matching(texts, start, opening, closing)
    items = []
    depth = 0
    first = start + 1
    for i in range(start + 1, end):
        text = texts[i]
        if text in ("(", "["):
            depth += 1
        elif text in (")", "]"):
            depth -= 1
        elif text == "," and depth == 0:
            items.append((first, i))
            first = i + 1
    items.append((first, end))
    _dedupe(texts, spaced, items)


def _matching(texts: list[str], start: int, opening: str, closing: str) -> int:
    """The index of the bracket closing the one at ``start`` (or the last token)."""
    depth = 0
    for i in range(start, len(texts)):
        if texts[i] == opening:
            depth += 1
        elif texts[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    return len(texts) - 1


def _dedupe(texts: list[str], spaced: list[bool], items: list[tuple[int, int]]) -> None:
    """Delete each item (with the comma before it) that repeats the item before it."""
    for (prev_start, prev_end), (start, end) in reversed(list(pairwise(items))):
        if texts[prev_start:prev_end] == texts[start:end]:
            del texts[prev_end:end]
            del spaced[prev_end:end]


def _join(texts: list[str], spaced: list[bool]) -> str:
    parts: list[str] = []
    previous = ""
    for text, space in zip(texts, spaced, strict=True):
        if parts and text not in (",", ")", ";") and previous != "(" and (space or previous == ","):
            parts.append(" ")
        parts.append(text)
        previous = text
    return "".join(parts)
