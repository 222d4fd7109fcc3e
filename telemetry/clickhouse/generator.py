"""How sqlglot writes our DuckDB functions for ClickHouse (used by :mod:`.dialect`).

:class:`CliffwatchClickHouse` is sqlglot's ClickHouse dialect with what it writes wrongly,
or not at all, for the DuckDB SQL of analytics/ fixed:

- ``quantile_cont`` -> ``quantile(s)ExactInclusive`` (exact, Hyndman & Fan type 7 =
  numpy 'linear'; docs/sources.md#clickhouse-percentiles-and-duckdb-semantics),
  ``quantile_disc`` ->
  ``quantile(s)ExactLow``;
- ``doc->>'$."key"'`` / ``json_extract_string`` -> the string, NULL for JSON null or
  absent, else the value's JSON text (as DuckDB); ``json_transform`` to JSON text;
- ``TRY_CAST`` -> ``accurateCastOrNull``; ``bool_or``/``bool_and`` -> ``max``/``min``;
- structs -> named tuples (field names prefixed, :data:`FIELD_PREFIX`), lambdas with a
  position argument, list slices (1-based, inclusive), ``list_sum``/``list_bool_*`` over
  the non-NULL elements, ``list(x ORDER BY k)``, ``list_sort`` (ascending), ``range``,
  ``greatest``/``least`` with NULLs skipped and mixed numeric types, ``len`` as BIGINT.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlglot import exp, jsonpath
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.generators.clickhouse import ClickHouseGenerator

from cliffwatch.telemetry.store import StoreError


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


def _list_sort(self: ClickHouseGenerator, expression: exp.Expr) -> str:
    """DuckDB ``list_sort(l)`` (ascending) -> ``arraySort(l)``; tuples compare field by
    field in both (our SQL sorts lists whose first field has no NULL)."""
    asc = expression.args.get("asc")
    if isinstance(asc, exp.Boolean) and not asc.this:
        raise TranspileError("list_sort sorts ascending here")
    return f"arraySort({self.sql(expression, 'this')})"


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
            exp.ArraySort: _list_sort,
            exp.Length: lambda self, e: f"toInt64(length({self.sql(e, 'this')}))",
        }
