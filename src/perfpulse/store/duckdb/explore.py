"""SQL for raw-row breakdowns (:class:`RowQuery`) and the values a filter can take.

Every name that reaches SQL is checked against the table's layout first, so a
breakdown can only ever name real columns; values travel as parameters.

Example::

    statement, params = row_query_sql(RowQuery(table="db", start=t0, end=t1,
        by=("fingerprint",), measures=("count", "sum:duration_ms"), order="sum:duration_ms"))
"""

from __future__ import annotations

import re
from typing import Any

from perfpulse.model.catalog import METRICS
from perfpulse.model.rows import LAYOUTS, FieldType
from perfpulse.store.base import BadRowQuery, RowQuery, measure_name

FUNCTIONS = {
    "sum": "sum({})",
    "avg": "avg({})",
    "max": "max({})",
    "min": "min({})",
    "p50": "quantile_cont({}, 0.5)",
    "p75": "quantile_cont({}, 0.75)",
    "p95": "quantile_cont({}, 0.95)",
    "p99": "quantile_cont({}, 0.99)",
    "true": "count(*) FILTER (WHERE {} <> 0)",
}
NUMERIC: frozenset[FieldType] = frozenset({"int", "float", "bool"})
OPS = frozenset({"<", "<=", ">", ">=", "="})
JSON_COLUMNS = frozenset({"attribution", "attributes"})
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
COMMON = ("service", "environment", "release")


def _types(table: str) -> dict[str, FieldType]:
    if table not in LAYOUTS:
        raise BadRowQuery(f"unknown source {table!r}; one of {', '.join(LAYOUTS)}")
    return dict(LAYOUTS[table])


def _column(types: dict[str, FieldType], name: str, table: str) -> str:
    head, dot, key = name.partition(".")
    if dot and head in JSON_COLUMNS and head in types:
        if not _KEY.match(key):
            raise BadRowQuery(f"bad key {key!r} in {name!r}")
        return f"json_extract_string(\"{head}\", '$.{key}')"
    if name not in types:
        raise BadRowQuery(f"unknown column {name!r} in {table}; known: {', '.join(types)}")
    return f'epoch("{name}")' if types[name] == "ts" else f'"{name}"'


def _measure(types: dict[str, FieldType], measure: str, table: str) -> str:
    if measure == "count":
        return "count(*)"
    fn, _, col = measure.partition(":")
    if fn not in FUNCTIONS:
        raise BadRowQuery(
            f"bad measure {measure!r}; count or fn:column, fn one of {', '.join(FUNCTIONS)}"
        )
    if types.get(col) not in NUMERIC:
        raise BadRowQuery(f"measure {measure!r} needs a numeric column of {table}")
    expr = f'"{col}"' if types[col] != "bool" else f'CAST("{col}" AS INTEGER)'
    return FUNCTIONS[fn].format(expr)


def row_query_sql(q: RowQuery) -> tuple[str, list[Any]]:
    types = _types(q.table)
    where = ["ts >= make_timestamp(?)", "ts < make_timestamp(?)"]
    params: list[Any] = [int(q.start * 1e6), int(q.end * 1e6)]
    for name, value in q.filters:
        where.append(f"{_column(types, name, q.table)} = ?")
        params.append(value)
    for name, op, number in q.where:
        if op not in OPS or types.get(name) not in NUMERIC:
            raise BadRowQuery(f"bad condition {name} {op} {number}")
        where.append(f'"{name}" {op} ?')
        params.append(number)
    cond = " AND ".join(where)
    if not q.measures:  # a listing of rows
        cols = [f'{_column(types, c, q.table)} AS "{c}"' for c in q.by if c != "ts"]
        order = _column(types, q.order, q.table)
        statement = (
            f'SELECT epoch(ts) AS "ts", {", ".join(cols) or "1 AS one"} FROM {q.table} '
            f"WHERE {cond} ORDER BY {order} DESC NULLS LAST LIMIT ?"
        )
        return statement, [*params, q.limit]
    keys = [f'{_column(types, c, q.table)} AS "{c}"' for c in q.by]
    aggs = [f'{_measure(types, m, q.table)} AS "{measure_name(m)}"' for m in q.measures]
    if q.order not in q.measures:
        raise BadRowQuery(f"order {q.order!r} must be one of the measures: {', '.join(q.measures)}")
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
    statement = (
        f"SELECT {', '.join([*keys, *aggs])} FROM {q.table} WHERE {cond}{group} "
        f'ORDER BY "{measure_name(q.order)}" DESC NULLS LAST LIMIT ?'
    )
    return statement, [*params, q.limit]


def dimension_values_sql(dim: str) -> tuple[str, list[Any]]:
    """Distinct values one filter dimension has taken, from the series table."""
    if dim in COMMON:
        return (
            f"SELECT DISTINCT {dim} AS v FROM series WHERE {dim} IS NOT NULL AND {dim} <> '' ORDER BY 1 LIMIT ?",
            [],
        )
    pairs = sorted(
        {(m.name, col) for m in METRICS if (col := m.rollup_column(dim)) and col[0] == "d"}
    )
    if not pairs:
        raise BadRowQuery(f"unknown dimension {dim!r}")
    unions = " UNION ".join(f"SELECT {col} AS v FROM series WHERE metric = ?" for _, col in pairs)
    return (
        f"SELECT DISTINCT v FROM ({unions}) WHERE v IS NOT NULL AND v <> '' ORDER BY 1 LIMIT ?",
        [name for name, _ in pairs],
    )


__all__ = ["dimension_values_sql", "row_query_sql"]
