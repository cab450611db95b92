"""JSON documents into Arrow columns (``_columns.c``); see :mod:`perfpulse.store.duckdb.backend`."""

from collections.abc import Sequence

#: A column: (kind, from_item, path); kind 0 float64, 1 int64, 2 bool, 3 string,
#: 4 an integer as float64.
Column = tuple[int, int, tuple[bytes, ...]]
#: A table: the path of the list whose items are its rows (None: one row a document),
#: its columns, and (optional) whether each column's path leads to a list of its values.
Table = (
    tuple[tuple[bytes, ...] | None, tuple[Column, ...]]
    | tuple[tuple[bytes, ...] | None, tuple[Column, ...], bool]
)
#: A column's Arrow buffers: validity (None: no nulls), then data (strings: offsets, data).
Buffers = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, bytes]

def columnize(
    documents: Sequence[bytes], plan: tuple[Table, ...], /
) -> tuple[list[tuple[int, list[Buffers]]], list[int]]: ...
