"""cliffwatch's DuckDB SQL, run on ClickHouse: one transpiler, so there is no second copy.

The analytics write DuckDB SQL (``$name`` parameters, ``quantile_cont``, our table names).
:func:`to_clickhouse` turns one statement into ClickHouse SQL with sqlglot, reading it as
DuckDB and writing it with :class:`.generator.CliffwatchClickHouse` (sqlglot's ClickHouse
dialect with our DuckDB functions written right: exact type-7 quantiles, JSON, structs,
lists; that module says how), after rewriting the tree:

- ``$name`` parameters -> literals built as sqlglot expressions (strings quoted and
  escaped by sqlglot's ClickHouse generator, never by string formatting; datetimes as
  ``DateTime64(6, 'UTC')``).
- our table names (``runs``, ``spans``, ...; :data:`tables.TABLES`) -> the
  ``cliffwatch_*`` table ``FINAL`` (a ReplacingMergeTree read with its row versions
  collapsed), unless a CTE of the statement has the same name;
- DuckDB names and types ClickHouse gives otherwise: ``t.col`` named ``col``, predicates
  as ``Bool``, a CASE of lists empty (not NULL) where no branch matches, struct fields;
- a long ``WITH`` as a :class:`Plan` of temporary tables (one per CTE).

The statement then runs under :data:`QUERY_SETTINGS`, which give ClickHouse DuckDB's
NULL rules where they differ. Transpilations are cached by (SQL text, parameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types

from cliffwatch.telemetry.clickhouse.generator import (
    FIELD_PREFIX,
    CliffwatchClickHouse,
    TranspileError,
)
from cliffwatch.telemetry.clickhouse.tables import TABLES

QUERY_SETTINGS: dict[str, int] = {
    # sum/max/avg over no rows (or only NULLs) give NULL, as in SQL and DuckDB, not 0/nan.
    "aggregate_functions_null_for_empty": 1,
    # An unmatched LEFT JOIN column is NULL, not the type's default (0, '').
    "join_use_nulls": 1,
    # CAST(x AS T) of a Nullable x stays Nullable (DuckDB keeps NULL through a cast).
    "cast_keep_nullable": 1,
    # GROUP BY 1, 2 / ORDER BY 1 name select-list positions, as in DuckDB.
    "enable_positional_arguments": 1,
    # In `sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL)` the second
    # cost_usd is the column, as in DuckDB, not the alias (an aggregate in an aggregate).
    "prefer_column_name_to_alias": 1,
    # A missing JSON value is NULL, not '' (DuckDB's ->> and json_extract_string).
    "function_json_value_return_type_allow_nullable": 1,
    # CASE/coalesce over Float64 and integer branches is Float64 (DuckDB's DOUBLE), not a
    # Variant that sum() refuses.
    "allow_lossy_numeric_supertype": 1,
    # tuple(x AS a, y AS b) is a named tuple: DuckDB's {'a': x, 'b': y}, read as t.a.
    "enable_named_columns_in_function_tuple": 1,
}
"""ClickHouse settings every transpiled statement runs with (appended as ``SETTINGS``;
docs/sources.md#clickhouse-percentiles-and-duckdb-semantics)."""


_DATETIME64 = exp.DataType.build("DateTime64(6, 'UTC')", dialect="clickhouse")
_DATE = exp.DataType.build("Date32", dialect="clickhouse")


def literal(value: Any) -> exp.Expr:
    """A Python parameter value as a sqlglot literal expression (ClickHouse semantics).

    Supports None, bool, int, float (nan/inf as ``nan``/``inf``), str, datetime (naive =
    UTC, as the store's), date, timedelta (seconds as a float), and lists/tuples of these.

    Raises:
        TranspileError: another type.
    """
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if math.isinf(value):
            return exp.Literal.number("inf" if value > 0 else "-inf")
        return exp.Literal.number("nan" if math.isnan(value) else repr(value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), _DATETIME64.copy())
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), _DATE.copy())
    if isinstance(value, timedelta):
        return exp.Literal.number(repr(value.total_seconds()))
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[literal(v) for v in value])
    raise TranspileError(f"cannot pass a {type(value).__name__} parameter to ClickHouse")


def _bind(tree: exp.Expr, params: Mapping[str, Any] | tuple[Any, ...]) -> None:
    """Replace ``$name`` (a mapping) or ``?`` (a tuple, in order) parameters by literals."""
    holders = [node for node in tree.walk(bfs=False)
               if isinstance(node, exp.Placeholder | exp.Parameter)]
    if isinstance(params, tuple):
        if len(holders) != len(params) or any(h.name and h.name != "?" for h in holders):
            raise TranspileError(f"{len(holders)} parameters in the query, {len(params)} given")
        values = list(params)
        for holder in holders:
            holder.replace(literal(values.pop(0)))
        return
    for holder in holders:
        if holder.name not in params:
            raise TranspileError(f"no value for parameter ${holder.name}")
        holder.replace(literal(params[holder.name]))


def _rename_tables(tree: exp.Expr) -> None:
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        name = table.name
        if table.args.get("db") or name in ctes or name not in TABLES:
            continue
        if not isinstance(table.parent, exp.From | exp.Join):
            continue
        alias = table.args.get("alias")
        renamed = exp.Table(this=exp.to_identifier(TABLES[name]),
                            alias=alias.copy() if alias else exp.TableAlias(
                                this=exp.to_identifier(name)))
        table.replace(exp.Final(this=renamed))


def _alias_qualified_columns(tree: exp.Expr) -> None:
    """``SELECT t.col`` names its column ``col`` in DuckDB but ``t.col`` in ClickHouse (in a
    join): give each such column its DuckDB name as an alias."""
    for select in tree.find_all(exp.Select):
        for item in list(select.expressions):
            if isinstance(item, exp.Column) and item.table and not isinstance(item.this, exp.Star):
                item.replace(exp.alias_(item.copy(), item.name))


_BOOL = exp.DataType.build("Bool", dialect="clickhouse")


def _bool_results(tree: exp.Expr) -> None:
    """A comparison is ``BOOLEAN`` in DuckDB but ``UInt8`` in ClickHouse: cast each select
    item sqlglot types as boolean (predicates, ``coalesce(pred, false)``, ...) to ``Bool``,
    so the result reads as booleans, as from DuckDB."""
    annotate_types(tree, dialect="duckdb")
    for select in tree.find_all(exp.Select):
        for item in list(select.expressions):
            inner = item.this if isinstance(item, exp.Alias) else item
            if isinstance(inner, exp.Column | exp.Star | exp.Boolean | exp.Null):
                continue
            if inner.type is not None and inner.type.this == exp.DataType.Type.BOOLEAN:
                name = item.alias_or_name if isinstance(item, exp.Alias) else None
                cast = exp.Cast(this=inner.copy(), to=_BOOL.copy())
                inner.replace(cast) if name else item.replace(cast)


def _returns_array(node: exp.Expr) -> bool:
    if isinstance(node, exp.Array | exp.Transform):
        return True
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_transform":
        return True
    return isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.Array)


def _empty_array_else(tree: exp.Expr) -> None:
    """``CASE WHEN c THEN <list> END`` is NULL when not c in DuckDB; ClickHouse has no NULL
    array, so the list is empty there (our SQL tests such lists by a flag, not IS NULL)."""
    for case in tree.find_all(exp.Case):
        if case.args.get("default") is None and any(
            _returns_array(branch.args["true"]) for branch in case.args.get("ifs") or []
        ):
            case.set("default", exp.Array(expressions=[]))


def _lambda_params(node: exp.Expr) -> set[str]:
    names: set[str] = set()
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Lambda):
            names.update(p.name for p in parent.expressions)
        parent = parent.parent
    return names


def _struct_fields(tree: exp.Expr) -> None:
    """Point struct field reads at the prefixed field names (:data:`FIELD_PREFIX`):
    ``a.b.c`` (table a, struct column b), ``v.c`` where ``v`` is a lambda argument or
    not a table of the query (a struct column), and ``expr.c``."""
    tables = {a.name for a in tree.find_all(exp.TableAlias)}
    tables |= {t.name for t in tree.find_all(exp.Table)}

    def element(owner: exp.Expr, name: str) -> exp.Expr:
        # tupleElement, not owner.field: a materialized CTE's table has no such subcolumn
        return exp.Anonymous(this="tupleElement", expressions=[
            owner, exp.Literal.string(FIELD_PREFIX + name)])

    for column in list(tree.find_all(exp.Column)):
        parts = column.parts
        if len(parts) < 2:
            continue
        owner = parts[-2].name
        if len(parts) >= 3 or owner in _lambda_params(column) or owner not in tables:
            rest = [p.copy() for p in parts[:-1]]
            struct = exp.Column(this=rest[-1], table=rest[-2] if len(rest) > 1 else None)
            column.replace(element(struct, column.name))
    for dot in list(tree.find_all(exp.Dot)):
        if isinstance(dot.expression, exp.Identifier) and not isinstance(dot.this, exp.Column):
            dot.replace(element(dot.this.copy(), dot.expression.name))


def _settings_clause() -> str:
    return " SETTINGS " + ", ".join(f"{k} = {v}" for k, v in QUERY_SETTINGS.items())


TOKEN = "{cw_token}"
"""Stands for a per-run unique suffix in the temporary table names of a :class:`Plan`."""

MIN_CTES_TO_STAGE = 4
"""A query with at least this many CTEs runs as a :class:`Plan` of temporary tables."""


@dataclass(frozen=True)
class Plan:
    """A statement as ClickHouse runs it: ``steps`` (``CREATE TEMPORARY TABLE ... AS``, one
    per CTE of a long ``WITH``, in order), then ``query``, then ``DROP`` of ``temps``.

    ClickHouse inlines a CTE at each reference; our longer queries (the what-if's 27 CTEs,
    most read several times) would be analysed and run once per path through the chain.
    Staged, each CTE read more than once runs once, as in DuckDB. Table names hold
    :data:`TOKEN`, which the runner replaces by a unique suffix (concurrent readers never
    share a table).
    """

    steps: tuple[str, ...]
    query: str
    temps: tuple[str, ...]


def _cte_refs(node: exp.Expr, names: set[str]) -> list[str]:
    """The CTE names ``node`` reads, once per reference."""
    return [t.name for t in node.find_all(exp.Table) if not t.args.get("db") and t.name in names]


def _stage(tree: exp.Expr) -> tuple[list[exp.Expr], list[str]]:
    """Take the CTEs read more than once off a long top-level WITH: one CREATE each,
    references renamed; a CTE read once stays a CTE of the statement that reads it (a
    temporary table of it would only hold rows in memory that a pipeline streams)."""
    ctes = list(tree.ctes) if isinstance(tree, exp.Query) else []
    if len(ctes) < MIN_CTES_TO_STAGE:
        return [], []
    order = [cte.alias_or_name for cte in ctes]
    bodies = {cte.alias_or_name: cte.this for cte in ctes}
    with_ = tree.args.get("with_")
    tree.set("with_", None)
    uses: dict[str, int] = dict.fromkeys(order, 0)
    for node in [*bodies.values(), tree]:
        for name in _cte_refs(node, set(order)):
            uses[name] += 1
    staged = [name for name in order if uses[name] >= 2]
    if not staged:
        tree.set("with_", with_)
        return [], []
    temps = {name: f"_cw_cte_{TOKEN}_{name}" for name in staged}
    for node in [*bodies.values(), tree]:
        for table in list(node.find_all(exp.Table)):
            if not table.args.get("db") and table.name in temps:
                alias = table.args.get("alias") or exp.TableAlias(
                    this=exp.to_identifier(table.name))
                table.set("this", exp.to_identifier(temps[table.name]))
                table.set("alias", alias)
    inline = set(order) - set(staged)

    def needed(node: exp.Expr) -> set[str]:
        out: set[str] = set()
        for name in _cte_refs(node, inline):
            if name not in out:
                out |= needed(bodies[name]) | {name}
        return out

    def with_inline(node: exp.Expr) -> exp.Expr:
        wanted = needed(node)
        if wanted:
            node.set("with_", exp.With(expressions=[
                exp.CTE(this=bodies[name].copy(), alias=exp.TableAlias(
                    this=exp.to_identifier(name)))
                for name in order if name in wanted]))
        return node

    steps: list[exp.Expr] = [
        exp.Create(this=exp.to_table(temps[name]), kind="TABLE",
                   expression=with_inline(bodies[name].copy()),
                   properties=exp.Properties(expressions=[
                       exp.TemporaryProperty(),
                       exp.EngineProperty(this=exp.var("Memory"))]))
        for name in staged
    ]
    with_inline(tree)
    return steps, [temps[name] for name in staged]


@lru_cache(maxsize=512)
def _transpile(sql: str, frozen: tuple[Any, ...], positional: bool) -> Plan:
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except SqlglotError as exc:
        raise TranspileError(f"cannot read the query as DuckDB SQL: {_first(exc)}") from None
    if len(trees) != 1 or trees[0] is None:
        raise TranspileError("expected one SQL statement")
    tree = trees[0]
    _bind(tree, frozen if positional else dict(frozen))
    _rename_tables(tree)
    _alias_qualified_columns(tree)
    _bool_results(tree)
    _empty_array_else(tree)
    _struct_fields(tree)
    steps, temps = _stage(tree)
    try:
        step_sql = [step.sql(dialect=CliffwatchClickHouse) + _settings_clause()
                    for step in steps]
        out = tree.sql(dialect=CliffwatchClickHouse)
    except SqlglotError as exc:
        raise TranspileError(f"cannot write the query for ClickHouse: {_first(exc)}") from None
    if isinstance(tree, exp.Query):
        out += _settings_clause()
    return Plan(tuple(step_sql), out, tuple(temps))


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def to_clickhouse(
    sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
) -> Plan:
    """One DuckDB statement as ClickHouse SQL, with ``params`` inlined as literals.

    Args:
        sql: a DuckDB statement using ``$name`` (or ``?``) parameters and our table names.
        params: the parameter values by name (or in order for ``?``; see :func:`literal`
            for the types).

    Returns:
        The :class:`Plan` (each query ends with ``SETTINGS`` :data:`QUERY_SETTINGS`).

    Raises:
        TranspileError: the SQL does not parse, a parameter has no value or an unsupported
            type.
    """
    if params is not None and not isinstance(params, Mapping):
        return _transpile(sql, tuple(_hashable(v) for v in params), True)
    frozen = tuple(sorted((k, _hashable(v)) for k, v in (params or {}).items()))
    return _transpile(sql, frozen, False)
