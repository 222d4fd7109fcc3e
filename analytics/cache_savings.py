"""Prompt-cache hit ratio and savings per model or per task class, in DuckDB SQL (issue 9).

Over the leaf LLM calls (``spans.is_leaf_call``: a duplicate instrumentation of a call and a
wrapper repeating its children's usage are never counted) of the runs started in a window:

- **hit ratio** = cache read tokens / input tokens, both summed over the calls that reported
  a cache split (``cache_read_tokens`` or ``cache_creation_tokens`` not null). Input tokens
  are the count normalised to the GenAI convention (``spans.input_tokens`` *includes* cache
  reads and writes; docs/sources.md#genai-input-tokens-include-cache-tokens), so the ratio
  is the share of prompt tokens served from the cache, 0..1. A call with no cache split
  says nothing about its cache: it is counted in ``calls_not_in_hit_ratio`` and left out
  of the ratio (never read as 0 hits). That is every call without a stored cache count,
  whatever its model or producer; not :mod:`analytics.audit`'s ``cache_detail_missing``
  (only the calls whose computed cost is an upper bound for want of the split), hence the
  name, the Cost truth page's heading "Not in hit ratio" in snake case (its CSV says
  what the page shows).
- **read saving** = sum of ``cache_read_tokens x (input rate - cache read rate)``: what the
  cached tokens would have cost at the input rate minus what they cost at the cache read
  rate;
- **write premium** = sum of ``cache_creation_tokens x (cache write rate - input rate)``:
  what writing the cache cost above sending those tokens as ordinary input (Anthropic
  bills a 5-minute cache write at 1.25x the input rate; OpenAI charges nothing);
- **net saving** = read saving - write premium: what caching saved against the same
  calls sent without it (negative when writes were not read back enough).

The rates are the ones stored on each call's row (``price_*_usd_per_token``: litellm's
billed rates for that call's tier, ``telemetry.pricing.price_call``); a missing cache rate
is the input rate, as litellm bills it (so no saving). Unpriced calls have no rates and add
nothing to the savings (a group with only unpriced calls has a null saving). The formula and
its sources are in docs/cost-truth.md ("Cache hit ratio and savings") and
docs/sources.md#prompt-cache-prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import duckdb
import polars as pl

from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window

SavingsBy = Literal["model", "task_class"]
SAVINGS_BYS: tuple[str, ...] = get_args(SavingsBy)
"""What :func:`cache_savings` can group by."""

SAVINGS_COLUMNS: tuple[str, ...] = (
    "calls",
    "calls_not_in_hit_ratio",
    "input_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "hit_ratio",
    "read_saving_usd",
    "write_premium_usd",
    "net_saving_usd",
)
"""Columns of :func:`cache_savings` after the group key, in order."""

_KEY_SQL = {
    "model": "coalesce(s.response_model, s.request_model, 'unknown')",
    "task_class": "scope.task_class",
}

_INPUT_RATE = "s.price_input_usd_per_token"
_DETAIL = "(s.cache_read_tokens IS NOT NULL OR s.cache_creation_tokens IS NOT NULL)"


def _sums_sql(keys: Sequence[str], scope: str, group: str) -> str:
    """The per-group sums of the leaf calls of the runs in ``scope`` (a WHERE over
    ``runs``): the ``keys`` columns (of :data:`_KEY_SQL`), then :data:`SAVINGS_COLUMNS`
    but ``hit_ratio`` and ``net_saving_usd``."""
    key = "".join(f"{_KEY_SQL[k]} AS {k}, " for k in keys)
    read = "coalesce(s.cache_read_tokens, 0)"
    write = "coalesce(s.cache_creation_tokens, 0)"
    return f"""
        WITH scope AS (SELECT run_id, task_class FROM runs {scope})
        SELECT {key}
               count(*) AS calls,
               count(*) FILTER (WHERE NOT {_DETAIL}) AS calls_not_in_hit_ratio,
               coalesce(sum(s.input_tokens) FILTER (WHERE {_DETAIL}), 0)::BIGINT
                 AS input_tokens,
               coalesce(sum({read}) FILTER (WHERE {_DETAIL}), 0)::BIGINT
                 AS cache_read_tokens,
               coalesce(sum({write}) FILTER (WHERE {_DETAIL}), 0)::BIGINT
                 AS cache_creation_tokens,
               sum({read} * ({_INPUT_RATE}
                   - coalesce(s.price_cache_read_usd_per_token, {_INPUT_RATE})))
                 AS read_saving_usd,
               sum({write} * (coalesce(s.price_cache_creation_usd_per_token,
                                       {_INPUT_RATE}) - {_INPUT_RATE}))
                 AS write_premium_usd
        FROM spans s JOIN scope ON s.trace_id = scope.run_id
        WHERE s.is_leaf_call
        {group}
    """


def _check_by(by: str | None) -> None:
    if by is not None and by not in SAVINGS_BYS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(SAVINGS_BYS)}")


def cache_savings(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    by: SavingsBy | None = "model",
    task_classes: Sequence[str] = (),
) -> pl.DataFrame:
    """Cache hit ratio and savings of the leaf LLM calls of the runs in scope (module doc).

    Args:
        con: a store connection (schema version 2: the cache columns).
        window: on the run's ``started_at`` (as the percentiles).
        by: ``"model"`` (response model, else request model), ``"task_class"``, or None
            for one row over every call.
        task_classes: only runs of these classes (each must exist); empty: every class.

    Returns:
        One row per group, sorted by it (``by`` None: one row, none when there is no
        call): the ``by`` column, then :data:`SAVINGS_COLUMNS`: ``calls`` (leaf calls),
        ``calls_not_in_hit_ratio`` (left out of the ratio), ``input_tokens`` /
        ``cache_read_tokens`` / ``cache_creation_tokens`` (sums over the calls with a
        cache split), ``hit_ratio`` (0..1; null when those calls had no input),
        ``read_saving_usd``, ``write_premium_usd``, ``net_saving_usd`` (USD; null when
        no call of the group is priced).

    Raises:
        ValueError: ``by`` is not one of :data:`SAVINGS_BYS` or None.
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    _check_by(by)
    conds, params = scope_filter(con, window, "started_at", None, task_classes=task_classes)
    group, order = ("GROUP BY 1", "ORDER BY 1") if by else ("HAVING count(*) > 0", "")
    sql = f"""
        SELECT *, CASE WHEN input_tokens > 0 THEN cache_read_tokens / input_tokens END
                    AS hit_ratio,
               read_saving_usd - write_premium_usd AS net_saving_usd
        FROM ({_sums_sql([by] if by else [], where(conds), group)})
        {order}
    """
    columns = ([by] if by else []) + list(SAVINGS_COLUMNS)
    return frame(con, sql, params).select(columns)


def cache_savings_all(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_classes: Sequence[str] = (),
) -> dict[str | None, pl.DataFrame]:
    """:func:`cache_savings` by model, by task class and overall (the Cost truth page's
    three tables) from one scan of the calls: the store sums per model and class (a few
    rows), and those sums are added up here.

    Args:
        con, window, task_classes: as :func:`cache_savings`.

    Returns:
        ``{"model": ..., "task_class": ..., None: ...}``, each as :func:`cache_savings`
        with that ``by`` returns it (the USD sums may differ from it in the last digits:
        the same terms added in another order).

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "started_at", None, task_classes=task_classes)
    sums = frame(con, _sums_sql(SAVINGS_BYS, where(conds), "GROUP BY 1, 2"), params)
    added = [
        pl.col(c).sum() if c.endswith(("calls", "calls_not_in_hit_ratio", "tokens"))
        else pl.when(pl.col(c).count() > 0).then(pl.col(c).sum())
        for c in sums.columns if c not in SAVINGS_BYS
    ]
    tables: dict[str | None, pl.DataFrame] = {
        by: sums.group_by(by).agg(added).sort(by, nulls_last=True) for by in SAVINGS_BYS
    }
    tables[None] = sums.select(added).filter(pl.col("calls") > 0)
    return {
        by: table.with_columns(
            hit_ratio=pl.when(pl.col("input_tokens") > 0).then(
                pl.col("cache_read_tokens") / pl.col("input_tokens")),
            net_saving_usd=pl.col("read_saving_usd") - pl.col("write_premium_usd"),
        ).select(([by] if by else []) + list(SAVINGS_COLUMNS))
        for by, table in tables.items()
    }
