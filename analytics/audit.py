"""Cost audit: does every stored call's cost recompute from its own row? (issue 9)

:func:`audit_costs` reads the ``spans`` table read-only and, for every stored leaf LLM
call (``is_llm_call`` and ``is_leaf_call``; a store that predates ``is_leaf_call`` counts
every LLM call) and every duplicate dropped (``duplicate_of`` set: checked, counted, never
in the spend), rebuilds its cost in DuckDB SQL from its stored tokens and stored rates by
the same lines as :func:`cliffwatch.telemetry.pricing.recompute_cost_usd` (uncached input,
cache reads, cache writes, text output, reasoning, each at the stored rate; a missing cache
or reasoning rate is the input or output rate). A call *recomputes* when, to
:data:`RELATIVE_TOLERANCE`:

- ``computed``: ``cost_usd`` equals the recomputed figure;
- ``provider``: ``cost_usd`` equals ``reported_cost_usd`` and ``computed_cost_usd`` (when
  stored) equals the recomputed figure;
- ``unpriced``: ``cost_usd`` is NULL (never $0).

Optionally each call is priced again from the *current* price map with
:func:`cliffwatch.telemetry.pricing.price_call` (litellm's cost logic; litellm is loaded
only then), once per distinct model and token breakdown, to show calls whose price changed
since they were stored. The rules the costs follow are in docs/cost-truth.md.

The checks are counted and summed in the store's SQL: what comes back is the summary's
figures and the calls with a problem (at most ``problems_limit`` of them when given), never
every call, so an audit of a million runs (6.6M calls) holds a few rows, not the calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics.runs import require_task_class
from cliffwatch.analytics.store_access import frame, limit_clause, where
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.usage_bounds import USAGE_REJECTED_REASON

RELATIVE_TOLERANCE = 1e-9
"""Two costs agree when ``|a - b| <= 1e-9 * max(|a|, |b|)`` (both $0 agree)."""

PROBLEM_COLUMNS = (
    "run_id", "span_id", "model", "cost_source", "problem", "stored_usd",
    "recomputed_usd", "reported_usd", "computed_usd", "current_usd",
)
"""Columns of :attr:`CostAudit.problems`."""

_PROBLEM_SCHEMA = {c: pl.Float64 if c.endswith("_usd") else pl.String for c in PROBLEM_COLUMNS}


def _differ(a: str, b: str) -> str:
    """SQL: ``a`` and ``b`` (DOUBLE expressions) disagree beyond the tolerance; NULL-safe."""
    return (
        f"((({a}) IS NULL) <> (({b}) IS NULL) OR COALESCE(ABS(({a}) - ({b})) > "
        f"{RELATIVE_TOLERANCE} * GREATEST(ABS({a}), ABS({b})), false))"
    )


_RECOMPUTED = """
    CASE WHEN price_input_usd_per_token IS NULL OR price_output_usd_per_token IS NULL
         THEN NULL ELSE
      GREATEST(COALESCE(input_tokens, 0) - COALESCE(cache_read_tokens, 0)
               - COALESCE(cache_creation_tokens, 0), 0) * price_input_usd_per_token
      + COALESCE(cache_read_tokens, 0)
        * COALESCE(price_cache_read_usd_per_token, price_input_usd_per_token)
      + COALESCE(cache_creation_tokens, 0)
        * COALESCE(price_cache_creation_usd_per_token, price_input_usd_per_token)
      + GREATEST(COALESCE(output_tokens, 0) - COALESCE(reasoning_tokens, 0), 0)
        * price_output_usd_per_token
      + COALESCE(reasoning_tokens, 0)
        * COALESCE(price_reasoning_usd_per_token, price_output_usd_per_token)
    END"""

_CALLS_SQL = f"""
    SELECT trace_id AS run_id, span_id, started_at,
           COALESCE(price_model_key, response_model, request_model) AS model,
           request_model, response_model, price_model_key,
           input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
           reasoning_tokens, cost_source, cost_usd AS stored_usd,
           {_RECOMPUTED} AS recomputed_usd,
           reported_cost_usd AS reported_usd, computed_cost_usd AS computed_usd,
           COALESCE(cache_detail_missing, false) AS cache_detail_missing,
           duplicate_of IS NOT NULL AS duplicate
    FROM spans
"""

_REJECTED_SQL = f"""
    SELECT trace_id, span_id,
           json_extract_string(attributes, '$."{USAGE_REJECTED_REASON}"') AS usage_rejected
    FROM spans
"""
"""The ``usage_rejected`` reason of calls (add the WHERE). A call whose usage was rejected
is always ``unpriced`` (:func:`cliffwatch.telemetry.usage_bounds.bound_usage` nulls its
tokens and cost, and drops a producer's own value of the attribute), so only unpriced calls
are looked at: the attributes JSON of the others is never read."""

_MAYBE_REJECTED = "COALESCE(cost_source, 'unpriced') = 'unpriced'"


def _flags_sql(calls: str) -> str:
    not_recomputing = f"""CASE cost_source
        WHEN 'computed' THEN stored_usd IS NULL OR recomputed_usd IS NULL
                             OR {_differ('stored_usd', 'recomputed_usd')}
        WHEN 'provider' THEN stored_usd IS NULL OR {_differ('stored_usd', 'reported_usd')}
                             OR (computed_usd IS NOT NULL
                                 AND {_differ('computed_usd', 'recomputed_usd')})
        WHEN 'unpriced' THEN stored_usd IS NOT NULL
        ELSE true END"""
    drift = (f"cost_source = 'provider' AND reported_usd IS NOT NULL "
             f"AND computed_usd IS NOT NULL AND {_differ('reported_usd', 'computed_usd')}")
    return f"""
        SELECT *, COALESCE({not_recomputing}, true) AS not_recomputing,
               COALESCE({drift}, false) AS drift,
               CASE WHEN COALESCE({drift}, false) THEN reported_usd - computed_usd END
                 AS drift_usd
        FROM ({calls})
    """


_PROBLEM_CHECKS: tuple[tuple[str, str], ...] = (
    ("not_recomputing", "not_recomputing"),
    ("drift", "drift"),
    ("unpriced", "cost_source = 'unpriced'"),
    ("cache_detail_missing", "cache_detail_missing"),
    ("duplicate", "duplicate"),
    ("price_changed", "price_changed"),
)
"""Each problem of :attr:`CostAudit.problems` (but ``usage_rejected:<reason>``) and its
SQL condition over the flagged calls."""

_ANY_PROBLEM = " OR ".join(f"({cond})" for _, cond in _PROBLEM_CHECKS)
"""A call with a problem (a rejected usage is an unpriced call, so it is one)."""

_SOURCES = ("provider", "computed", "unpriced")

_COUNTS_SQL = ", ".join(
    [
        "count(*) AS calls",
        "sum(stored_usd) FILTER (WHERE NOT duplicate) AS spend_usd",
        *(f"count(*) FILTER (WHERE NOT duplicate AND cost_source = '{s}') AS {s}_calls, "
          f"sum(stored_usd) FILTER (WHERE NOT duplicate AND cost_source = '{s}') "
          f"AS {s}_usd" for s in _SOURCES),
        *(f"count(*) FILTER (WHERE {cond}) AS problem_{name}_calls"
          for name, cond in _PROBLEM_CHECKS),
        "sum(drift_usd) FILTER (WHERE drift) AS drift_usd",
    ]
)
"""Everything :func:`_summary` shows but the usage rejections, aggregated in SQL."""


@dataclass(frozen=True, slots=True)
class CostAudit:
    """What :func:`audit_costs` found.

    Attributes:
        summary: one row per check, columns ``check`` (str), ``calls`` (int), ``usd``
            (float or null: the spend or drift the check is about) and ``share`` (float
            0..1 of the audited spend, or null).
        problems: one row per problem call and problem (a call can appear under several),
            columns :data:`PROBLEM_COLUMNS`; ``problem`` is one of ``not_recomputing``,
            ``drift``, ``unpriced``, ``cache_detail_missing``, ``duplicate``,
            ``usage_rejected:<reason>``, ``price_changed``. Sorted by run, span and
            problem; only the first ``problems_limit`` rows when the audit was given one.
        calls: audited calls (duplicates included).
        not_recomputing: calls whose stored cost does not recompute from their row.
        problem_rows: rows the full problem list has (``problems.height`` unless it was
            cut at ``problems_limit``).
    """

    summary: pl.DataFrame
    problems: pl.DataFrame
    calls: int
    not_recomputing: int
    problem_rows: int = 0


_PRICE_KEYS = ("price_model_key", "response_model", "request_model", "input_tokens",
               "output_tokens", "cache_read_tokens", "cache_creation_tokens",
               "reasoning_tokens")
_CURRENT_TABLE = "cliffwatch_audit_current_prices"


def _current_prices(con: duckdb.DuckDBPyConnection, calls_sql: str,
                    params: dict[str, Any]) -> pl.DataFrame:
    """``computed_usd`` in the current price map (:func:`cliffwatch.telemetry.pricing.
    price_call`; loads litellm) of every distinct model and token breakdown of the calls:
    one row each, :data:`_PRICE_KEYS` and ``current_usd``."""
    from cliffwatch.telemetry.pricing import TokenUsage, price_call  # lazy: litellm

    keys = ", ".join(_PRICE_KEYS)
    distinct = frame(con, f"SELECT DISTINCT {keys} FROM ({calls_sql})", params)
    current: list[float | None] = []
    for row in distinct.iter_rows(named=True):
        usage = TokenUsage(row["input_tokens"], row["output_tokens"], row["cache_read_tokens"],
                           row["cache_creation_tokens"], row["reasoning_tokens"])
        models = [row["price_model_key"], row["response_model"], row["request_model"]]
        current.append(price_call(models, usage).computed_usd)
    return distinct.with_columns(pl.Series("current_usd", current, dtype=pl.Float64))


def _with_current(calls_sql: str) -> str:
    """The calls joined to :data:`_CURRENT_TABLE` (null-safe, on :data:`_PRICE_KEYS`), with
    ``current_usd`` and ``price_changed``."""
    on = " AND ".join(f"c.{k} IS NOT DISTINCT FROM p.{k}" for k in _PRICE_KEYS)
    changed = _differ("p.current_usd", "c.computed_usd")
    return (f"SELECT c.*, p.current_usd, {changed} AS price_changed "
            f"FROM ({calls_sql}) c LEFT JOIN {_CURRENT_TABLE} p ON {on}")


def _row(check: str, calls: int, usd: float | None = None,
         share: float | None = None) -> dict[str, Any]:
    return {"check": check, "calls": calls, "amount_usd": usd, "share": share}


def _summary(totals: dict[str, Any], rejected: pl.DataFrame,
             current_map: bool) -> tuple[pl.DataFrame, dict[str, int]]:
    """The summary frame from the aggregates of :data:`_COUNTS_SQL` and the calls per usage
    rejection reason (``usage_rejected``, ``calls``), and every count column as an int
    (``calls``, ``problem_<problem>_calls``, ...)."""
    counts = {c: int(v or 0) for c, v in totals.items() if c.endswith("calls")}
    spend = float(totals["spend_usd"] or 0.0)
    rows: list[dict[str, Any]] = [_row("calls audited", counts["calls"], spend)]
    for source in _SOURCES:
        usd = float(totals[f"{source}_usd"] or 0.0)
        priced = source != "unpriced"
        rows.append(_row(f"spend {source}", counts[f"{source}_calls"],
                         usd if priced else None, usd / spend if spend and priced else None))
    rows += [
        _row("not recomputing", counts["problem_not_recomputing_calls"]),
        _row("reported vs computed drift", counts["problem_drift_calls"],
             float(totals["drift_usd"] or 0.0)),
        _row("cache detail missing", counts["problem_cache_detail_missing_calls"]),
        _row("duplicates dropped", counts["problem_duplicate_calls"]),
    ]
    for reason, n in sorted(rejected.iter_rows()):
        rows.append(_row(f"usage rejected: {reason}", n))
    counts["problem_usage_rejected_calls"] = int(rejected["calls"].sum())
    if current_map:
        rows.append(_row("price changed in current map", counts["problem_price_changed_calls"]))
    summary = pl.DataFrame(rows, schema={"check": pl.String, "calls": pl.Int64,
                                         "amount_usd": pl.Float64, "share": pl.Float64})
    return summary, counts


def _problems(flagged: pl.DataFrame) -> pl.DataFrame:
    """One row per problem of each call of ``flagged`` (the calls with a problem)."""
    parts = [flagged.filter(pl.sql_expr(cond)).with_columns(problem=pl.lit(name))
             for name, cond in _PROBLEM_CHECKS]
    parts.append(
        flagged.filter(pl.col("usage_rejected").is_not_null())
        .with_columns(problem=pl.lit("usage_rejected:") + pl.col("usage_rejected"))
    )
    return pl.concat([p.select(PROBLEM_COLUMNS) for p in parts]).sort(
        ["run_id", "span_id", "problem"])


def verdict(not_recomputing: int, calls: int) -> str:
    """The one-line verdict of an audit of ``calls`` calls (the CLI's last line and the
    dashboard's Cost truth page)."""
    if not_recomputing:
        return f"{not_recomputing} of {calls} calls do not recompute from their stored row"
    return f"every stored cost recomputes from its row ({calls} calls)"


def audit_costs(
    con: duckdb.DuckDBPyConnection,
    window: Window | None = None,
    *,
    current_map: bool = True,
    task_classes: Sequence[str] = (),
    problems_limit: int | None = None,
) -> CostAudit:
    """Audit every stored leaf LLM call started in ``window`` (see the module docstring).

    The checks are aggregated in the store's SQL (one scan of the window's calls for the
    summary, one for the calls with a problem): what comes back is one row per
    ``usage_rejected`` reason and the problem calls, never every call, so memory does not
    grow with the number of calls audited.

    Args:
        con: a connection to the store (read-only is enough; nothing is written but a
            registered temporary frame of current prices when ``current_map``).
        window: only calls whose span started in it (None: every call).
        current_map: also price each call from the current price map (loads litellm;
            once per distinct model and token breakdown); when False ``current_usd`` is
            null and ``price_changed`` false.
        task_classes: only calls of runs of these classes (empty: every call, those of
            traces that are not runs too).
        problems_limit: at most this many problem rows (the first by run, span and
            problem; :attr:`CostAudit.problem_rows` counts them all); None: every one.

    Returns:
        A :class:`CostAudit`.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
        ValueError: ``problems_limit`` is negative.
        duckdb.Error: the store lacks the schema version 2 span columns (an older store
            gains them on its next write).
    """
    conds, params = (window or Window()).conditions("started_at")
    if task_classes:
        require_task_class(con, *task_classes)
        conds.append("trace_id IN (SELECT run_id FROM runs "
                     "WHERE list_contains($task_classes, task_class))")
        params["task_classes"] = list(task_classes)
    leaf = ("is_llm_call AND (COALESCE(is_leaf_call, true) OR duplicate_of IS NOT NULL)",
            *conds)
    calls = _CALLS_SQL + where(list(leaf))
    rejected_sql = (f"SELECT * FROM ({_REJECTED_SQL} {where([*leaf, _MAYBE_REJECTED])}) "
                    "WHERE usage_rejected IS NOT NULL")
    if current_map:
        con.register(_CURRENT_TABLE, _current_prices(con, calls, params).to_arrow())
        flagged_sql = _flags_sql(_with_current(calls))
    else:
        flagged_sql = (f"SELECT *, CAST(NULL AS DOUBLE) AS current_usd, "
                       f"false AS price_changed FROM ({_flags_sql(calls)})")
    try:
        totals = frame(con, f"SELECT {_COUNTS_SQL} FROM ({flagged_sql})", params).row(
            0, named=True)
        rejected = frame(con, f"SELECT usage_rejected, count(*) AS calls FROM ({rejected_sql}) "
                              "GROUP BY usage_rejected", params)
        summary, counts = _summary(totals, rejected, current_map)
        problem_rows = sum(v for c, v in counts.items() if c.startswith("problem_"))
        flagged = frame(
            con, f"SELECT f.*, r.usage_rejected FROM (SELECT * FROM ({flagged_sql}) "
                 f"WHERE {_ANY_PROBLEM}) f LEFT JOIN ({rejected_sql}) r "
                 "ON f.run_id = r.trace_id AND f.span_id = r.span_id "
                 f"ORDER BY f.run_id, f.span_id {limit_clause(problems_limit)}", params,
        ) if problem_rows else None
    finally:
        if current_map:
            con.unregister(_CURRENT_TABLE)
    problems = (_problems(flagged) if flagged is not None
                else pl.DataFrame(schema=_PROBLEM_SCHEMA))
    if problems_limit is not None:
        problems = problems.head(problems_limit)
    return CostAudit(
        summary=summary,
        problems=problems,
        calls=counts["calls"],
        not_recomputing=counts["problem_not_recomputing_calls"],
        problem_rows=problem_rows,
    )
