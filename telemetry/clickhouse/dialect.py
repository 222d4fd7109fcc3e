"""cliffwatch's DuckDB SQL, run on ClickHouse: one transpiler, so there is no second copy.

The analytics write DuckDB SQL (``$name`` parameters, ``quantile_cont``, our table names).
:func:`to_clickhouse` turns one statement into ClickHouse SQL with sqlglot, reading it as
DuckDB and writing it with :class:`CliffwatchClickHouse`, sqlglot's ClickHouse dialect with
what it gets wrong for us fixed:

- ``quantile_cont(x, q)`` -> ``quantileExactInclusive(q)(x)`` and ``quantile_cont(x, [..])``
  -> ``quantilesExactInclusive(..)(x)``: exact, Hyndman & Fan type 7, the interpolation
  DuckDB's ``quantile_cont`` and numpy's ``'linear'`` use (sqlglot writes a
  ``PERCENTILE_CONT`` that ClickHouse lacks; tests/test_clickhouse_store.py checks the
  function against numpy). ``quantile_disc`` -> ``quantilesExactLow``/``quantileExactLow``
  (the lower of the two middle values, as DuckDB picks).
- ``$name`` parameters -> literals built as sqlglot expressions (strings quoted and
  escaped by sqlglot's ClickHouse generator, never by string formatting; datetimes as
  ``DateTime64(6, 'UTC')``).
- our table names (``runs``, ``spans``, ...; :data:`tables.TABLES`) -> the
  ``cliffwatch_*`` table ``FINAL`` (a ReplacingMergeTree read with its row versions
  collapsed), unless a CTE of the statement has the same name.

The statement then runs under :data:`QUERY_SETTINGS`, which give ClickHouse DuckDB's
NULL rules where they differ. Transpilations are cached by (SQL text, parameters).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp, jsonpath
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import SqlglotError
from sqlglot.generators.clickhouse import ClickHouseGenerator
from sqlglot.optimizer.annotate_types import annotate_types

from cliffwatch.telemetry.clickhouse.tables import TABLES
from cliffwatch.telemetry.store import StoreError

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
"""ClickHouse settings every transpiled statement runs with (appended as ``SETTINGS``)."""


class TranspileError(StoreError):
    """A DuckDB statement that cannot be written as ClickHouse SQL; one line."""


def _parametric(name_one: str, name_many: str) -> Callable[[ClickHouseGenerator, exp.Expr], str]:
    """Generator for DuckDB's ``quantile_*(x, q)``: a ClickHouse parametric aggregate."""

    def sql(self: ClickHouseGenerator, expression: exp.Expr) -> str:
        levels = expression.expression
        if isinstance(levels, exp.Array):
            return f"{self.func(name_many, *levels.expressions)}({self.sql(expression, 'this')})"
        return f"{self.func(name_one, levels)}({self.sql(expression, 'this')})"

    return sql


def _json_keys(path: exp.Expr) -> list[str]:
    """The keys of a JSON path (``'$."a.b"'`` parsed by sqlglot, or as a string literal)."""
    if isinstance(path, exp.Literal) and path.is_string:
        path = jsonpath.parse(path.this)
    if not isinstance(path, exp.JSONPath):
        raise TranspileError(f"unsupported JSON path {path.sql('duckdb')}")
    keys = []
    for part in path.expressions:
        if isinstance(part, exp.JSONPathRoot):
            continue
        if not isinstance(part, exp.JSONPathKey):
            raise TranspileError(f"unsupported JSON path {path.sql('duckdb')}")
        keys.append(str(part.this))
    return keys


def _json_text(self: ClickHouseGenerator, doc: str, path: exp.Expr) -> str:
    """DuckDB's ``doc->>path``: a string's value, NULL for JSON null or absent, else the
    value's JSON text (numbers, booleans, objects)."""
    keys = ", ".join(self.sql(exp.Literal.string(k)) for k in _json_keys(path))
    return (f"multiIf(JSONType({doc}, {keys}) = 'String', JSONExtractString({doc}, {keys}), "
            f"JSONType({doc}, {keys}) = 'Null', NULL, JSONExtractRaw({doc}, {keys}))")


def _json_extract_scalar(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    doc = self.sql(expression, "this")
    path = expression.expression
    if isinstance(path, exp.Array):  # json_extract_string(doc, [paths]): a list of texts
        return f"[{', '.join(_json_text(self, doc, p) for p in path.expressions)}]"
    return _json_text(self, doc, path)


def _try_cast(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """``TRY_CAST(x AS T)``: NULL where x is not a T (ClickHouse's CAST would fail)."""
    to = expression.args["to"].copy()
    type_sql = self.sql(to)
    if type_sql.startswith("Nullable("):
        type_sql = type_sql[len("Nullable("):-1]
    type_literal = self.sql(exp.Literal.string(type_sql))
    return f"accurateCastOrNull({self.sql(expression, 'this')}, {type_literal})"


def _non_null(self: ClickHouseGenerator, array: str) -> str:
    return f"arrayFilter(x -> isNotNull(x), {array})"


def _list_fold(fold: str) -> Callable[[ClickHouseGenerator, str], str]:
    """DuckDB's ``list_bool_and``/``list_bool_or``/``list_sum``: over the non-NULL
    elements, NULL when there is none."""

    def sql(self: ClickHouseGenerator, array: str) -> str:
        kept = _non_null(self, array)
        return f"if(empty({kept}), NULL, {fold.format(kept)})"

    return sql


def _extreme(fold: str) -> Callable[[ClickHouseGenerator, exp.Expr], str]:
    """DuckDB's ``greatest``/``least``: NULLs skipped, any numeric mix (an array literal
    takes the common supertype; ClickHouse's greatest refuses Int64 with Float64)."""

    def sql(self: ClickHouseGenerator, expression: exp.Expr) -> str:
        args = [expression.this, *expression.expressions]
        return _list_fold(fold)(self, f"[{', '.join(self.sql(a) for a in args)}]")

    return sql


_LIST_FUNCTIONS: dict[str, Callable[[ClickHouseGenerator, str], str]] = {
    "list_bool_and": _list_fold("arrayAll(x -> assumeNotNull(x), {})"),
    "list_bool_or": _list_fold("arrayExists(x -> assumeNotNull(x), {})"),
    "list_sum": _list_fold("arraySum({})"),
}


def _json_fields(self: ClickHouseGenerator, doc: str, shape: str) -> str:
    """DuckDB's ``json_transform(doc, '["JSON"]')`` (the array's elements as JSON text) and
    ``json_transform(doc, '[{"k": "JSON", ...}]')`` (per element, a struct of its fields'
    JSON text); JSON null and absent read as NULL."""
    import json

    parsed = json.loads(shape)
    if not (isinstance(parsed, list) and len(parsed) == 1):
        raise TranspileError(f"unsupported json_transform shape {shape}")
    items = f"arrayMap(e -> nullIf(e, 'null'), JSONExtractArrayRaw(ifNull({doc}, '')))"
    if parsed[0] == "JSON":
        return items
    if not (isinstance(parsed[0], dict) and set(parsed[0].values()) == {"JSON"}):
        raise TranspileError(f"unsupported json_transform shape {shape}")
    fields = ", ".join(
        f"nullIf(nullIf(JSONExtractRaw(e, {self.sql(exp.Literal.string(k))}), ''), 'null') "
        f"AS {_field(self, k)}"
        for k in parsed[0]
    )
    return f"arrayMap(e -> tuple({fields}), arrayMap(e -> assumeNotNull(e), {items}))"


def _anonymous(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """DuckDB functions sqlglot passes through by name, written for ClickHouse."""
    name = expression.name.lower()
    args = [self.sql(a) for a in expression.expressions]
    if name in _LIST_FUNCTIONS and len(args) == 1:
        return _LIST_FUNCTIONS[name](self, args[0])
    if name == "list_position" and len(args) == 2:
        return f"nullIf(indexOf({args[0]}, {args[1]}), 0)"
    if name == "json_valid" and len(args) == 1:
        return f"isValidJSON({args[0]})"
    if name == "json_transform" and len(args) == 2:
        shape = expression.expressions[1]
        if not (isinstance(shape, exp.Literal) and shape.is_string):
            raise TranspileError("json_transform needs a literal shape")
        return _json_fields(self, args[0], shape.this)
    return ClickHouseGenerator.anonymous_sql(self, expression)  # type: ignore[arg-type]


def _bracket(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """``l[a:b]`` (DuckDB: 1-based, both ends inclusive) -> ``arraySlice``."""
    keys = expression.expressions
    if len(keys) == 1 and isinstance(keys[0], exp.Slice):
        array = self.sql(expression, "this")
        low = keys[0].this
        high = keys[0].expression
        start = self.sql(low) if low is not None else "1"
        if high is None:
            return f"arraySlice({array}, {start})"
        return f"arraySlice({array}, {start}, greatest(({self.sql(high)}) - ({start}) + 1, 0))"
    return ClickHouseGenerator.bracket_sql(self, expression)  # type: ignore[arg-type]


def _transform(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """``list_transform(l, lambda x[, i]: ...)`` -> ``arrayMap``; the second lambda
    argument is the 1-based position (``arrayEnumerate``)."""
    array = self.sql(expression, "this")
    fn = expression.expression
    if isinstance(fn, exp.Lambda) and len(fn.expressions) == 2:
        return f"arrayMap({self.sql(fn)}, {array}, arrayEnumerate({array}))"
    return f"arrayMap({self.sql(fn)}, {array})"


def _array_agg(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """``list(x ORDER BY k)`` -> ``groupArray(x)`` sorted by ``groupArray(k)``."""
    inner = expression.this
    if isinstance(inner, exp.Order):
        keys = inner.expressions
        if len(keys) != 1 or keys[0].args.get("desc"):
            raise TranspileError("list(... ORDER BY) takes one ascending key here")
        value = self.sql(inner.this)
        key = self.sql(keys[0].this)
        return f"arraySort((v, k) -> k, groupArray({value}), groupArray({key}))"
    return f"groupArray({self.sql(inner)})"


FIELD_PREFIX = "_f_"
"""Prefix of a struct field's name in ClickHouse: a named tuple's field names are aliases
of the query scope there, so ``{'c': x} ... AS c`` would clash without it."""


def _field(self: ClickHouseGenerator, name: str) -> str:
    return self.sql(exp.to_identifier(FIELD_PREFIX + name))


def _struct(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """``{'a': x, 'b': y}`` -> a named tuple ``tuple(x AS _f_a, y AS _f_b)``."""
    parts = []
    for item in expression.expressions:
        if not isinstance(item, exp.PropertyEQ | exp.Slice):
            raise TranspileError("a struct literal needs named fields")
        name = item.this.name if isinstance(item.this, exp.Expr) else str(item.this)
        parts.append(f"{self.sql(item, 'expression')} AS {_field(self, name)}")
    return f"tuple({', '.join(parts)})"


def _series(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """DuckDB ``range(a, b)`` (``b`` excluded) -> ClickHouse ``range``."""
    if not expression.args.get("is_end_exclusive"):
        raise TranspileError("generate_series is not supported; use range")
    start = self.sql(expression, "start") or "0"
    return f"range({start}, {self.sql(expression, 'end')})"


class CliffwatchClickHouse(ClickHouse):
    """sqlglot's ClickHouse dialect with what it writes wrongly for our DuckDB SQL fixed:
    quantiles (exact, type 7), JSON scalars, ``TRY_CAST``, ``bool_or``/``bool_and``."""

    class Generator(ClickHouseGenerator):
        TRANSFORMS = {
            **ClickHouseGenerator.TRANSFORMS,
            exp.PercentileCont: _parametric("quantileExactInclusive", "quantilesExactInclusive"),
            exp.PercentileDisc: _parametric("quantileExactLow", "quantilesExactLow"),
            exp.JSONExtractScalar: _json_extract_scalar,
            exp.TryCast: _try_cast,
            exp.LogicalOr: lambda self, e: self.func("max", e.this),
            exp.LogicalAnd: lambda self, e: self.func("min", e.this),
            exp.Anonymous: _anonymous,
            exp.Bracket: _bracket,
            exp.Transform: _transform,
            exp.ArrayAgg: _array_agg,
            exp.Struct: _struct,
            exp.Greatest: _extreme("arrayMax({})"),
            exp.Least: _extreme("arrayMin({})"),
            exp.GenerateSeries: _series,
            exp.Length: lambda self, e: f"toInt64(length({self.sql(e, 'this')}))",
        }


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
    Staged, each CTE runs once, as in DuckDB. Table names hold :data:`TOKEN`, which the
    runner replaces by a unique suffix (concurrent readers never share a table).
    """

    steps: tuple[str, ...]
    query: str
    temps: tuple[str, ...]


def _stage(tree: exp.Expr) -> tuple[list[exp.Expr], list[str]]:
    """Take a long top-level WITH off ``tree``: one CREATE per CTE, references renamed."""
    ctes = list(tree.ctes) if isinstance(tree, exp.Query) else []
    if len(ctes) < MIN_CTES_TO_STAGE:
        return [], []
    names = {cte.alias_or_name: f"_cw_cte_{TOKEN}_{cte.alias_or_name}" for cte in ctes}
    tree.set("with_", None)
    bodies = [cte.this for cte in ctes]
    for node in [*bodies, tree]:
        for table in list(node.find_all(exp.Table)):
            if not table.args.get("db") and table.name in names:
                alias = table.args.get("alias") or exp.TableAlias(
                    this=exp.to_identifier(table.name))
                table.set("this", exp.to_identifier(names[table.name]))
                table.set("alias", alias)
    steps: list[exp.Expr] = [
        exp.Create(this=exp.to_table(names[cte.alias_or_name]), kind="TABLE",
                   expression=body, properties=exp.Properties(expressions=[
                       exp.TemporaryProperty(),
                       exp.EngineProperty(this=exp.var("Memory"))]))
        for cte, body in zip(ctes, bodies, strict=True)
    ]
    return steps, list(names.values())


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
