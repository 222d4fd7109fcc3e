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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics.runs import require_task_class
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.usage_bounds import USAGE_REJECTED_REASON

RELATIVE_TOLERANCE = 1e-9
"""Two costs agree when ``|a - b| <= 1e-9 * max(|a|, |b|)`` (both $0 agree)."""

PROBLEM_COLUMNS = (
    "run_id", "span_id", "model", "cost_source", "problem", "stored_usd",
    "recomputed_usd", "reported_usd", "computed_usd", "current_usd",
)
"""Columns of :attr:`CostAudit.problems`."""


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
           duplicate_of IS NOT NULL AS duplicate,
           json_extract_string(attributes, '$."{USAGE_REJECTED_REASON}"') AS usage_rejected
    FROM spans
"""


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
            ``usage_rejected:<reason>``, ``price_changed``.
        calls: audited calls (duplicates included).
        not_recomputing: calls whose stored cost does not recompute from their row.
    """

    summary: pl.DataFrame
    problems: pl.DataFrame
    calls: int
    not_recomputing: int


def _current_costs(calls: pl.DataFrame) -> pl.DataFrame:
    """``computed_usd`` of every distinct model and token breakdown of ``calls`` in the
    current price map (:func:`cliffwatch.telemetry.pricing.price_call`; loads litellm)."""
    from cliffwatch.telemetry.pricing import TokenUsage, price_call  # lazy: litellm

    keys = ["price_model_key", "response_model", "request_model", "input_tokens",
            "output_tokens", "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens"]
    distinct = calls.select(keys).unique()
    current: list[float | None] = []
    for row in distinct.iter_rows(named=True):
        usage = TokenUsage(row["input_tokens"], row["output_tokens"], row["cache_read_tokens"],
                           row["cache_creation_tokens"], row["reasoning_tokens"])
        models = [row["price_model_key"], row["response_model"], row["request_model"]]
        current.append(price_call(models, usage).computed_usd)
    priced = distinct.with_columns(pl.Series("current_usd", current, dtype=pl.Float64))
    return calls.join(priced, on=keys, how="left", nulls_equal=True)


def _row(check: str, calls: int, usd: float | None = None,
         share: float | None = None) -> dict[str, Any]:
    return {"check": check, "calls": calls, "amount_usd": usd, "share": share}


def _summary(flagged: pl.DataFrame, current_map: bool) -> pl.DataFrame:
    counted = flagged.filter(~pl.col("duplicate"))
    spend = float(counted["stored_usd"].fill_null(0.0).sum())
    rows: list[dict[str, Any]] = [_row("calls audited", flagged.height, spend)]
    for source in ("provider", "computed", "unpriced"):
        part = counted.filter(pl.col("cost_source") == source)
        usd = float(part["stored_usd"].fill_null(0.0).sum())
        priced = source != "unpriced"
        rows.append(_row(f"spend {source}", part.height, usd if priced else None,
                         usd / spend if spend and priced else None))
    drift = flagged.filter(pl.col("drift"))
    rows += [
        _row("not recomputing", int(flagged["not_recomputing"].sum())),
        _row("reported vs computed drift", drift.height, float(drift["drift_usd"].sum())),
        _row("cache detail missing", int(flagged["cache_detail_missing"].sum())),
        _row("duplicates dropped", int(flagged["duplicate"].sum())),
    ]
    rejected = flagged.filter(pl.col("usage_rejected").is_not_null())
    for reason, n in sorted(rejected.group_by("usage_rejected").len().iter_rows()):
        rows.append(_row(f"usage rejected: {reason}", n))
    if current_map:
        rows.append(_row("price changed in current map", int(flagged["price_changed"].sum())))
    return pl.DataFrame(rows, schema={"check": pl.String, "calls": pl.Int64,
                                      "amount_usd": pl.Float64, "share": pl.Float64})


def _problems(flagged: pl.DataFrame) -> pl.DataFrame:
    checks = [
        ("not_recomputing", pl.col("not_recomputing")),
        ("drift", pl.col("drift")),
        ("unpriced", pl.col("cost_source") == "unpriced"),
        ("cache_detail_missing", pl.col("cache_detail_missing")),
        ("duplicate", pl.col("duplicate")),
        ("price_changed", pl.col("price_changed")),
    ]
    parts = [flagged.filter(cond).with_columns(problem=pl.lit(name)) for name, cond in checks]
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
) -> CostAudit:
    """Audit every stored leaf LLM call started in ``window`` (see the module docstring).

    Args:
        con: a connection to the store (read-only is enough; nothing is written).
        window: only calls whose span started in it (None: every call).
        current_map: also price each call from the current price map (loads litellm);
            when False ``current_usd`` is null and ``price_changed`` false.
        task_classes: only calls of runs of these classes (empty: every call, those of
            traces that are not runs too).

    Returns:
        A :class:`CostAudit`.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
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
    sql = _flags_sql(_CALLS_SQL + where(list(leaf))) + " ORDER BY run_id, span_id"
    flagged = frame(con, sql, params)
    if current_map and flagged.height:
        flagged = _current_costs(flagged).with_columns(
            price_changed=(
                pl.col("current_usd").is_null() != pl.col("computed_usd").is_null()
            ) | ((pl.col("current_usd") - pl.col("computed_usd")).abs() > RELATIVE_TOLERANCE
                 * pl.max_horizontal(pl.col("current_usd").abs(),
                                     pl.col("computed_usd").abs())).fill_null(False)
        )
    else:
        flagged = flagged.with_columns(current_usd=pl.lit(None, pl.Float64),
                                       price_changed=pl.lit(False))
    return CostAudit(
        summary=_summary(flagged, current_map),
        problems=_problems(flagged),
        calls=flagged.height,
        not_recomputing=int(flagged["not_recomputing"].sum()),
    )
