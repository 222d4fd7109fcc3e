"""What the Cost truth page reads from the store (the Overview's upper-bound label is read
with its figures, :func:`dashboard.queries.load_overview`).

Cached loaders in the manner of :mod:`dashboard.queries` (keyed on the store path, its
version and the filters; call them through :func:`dashboard.queries.fetch`), over
:func:`analytics.audit.audit_costs` (the logic of ``cliffwatch audit``),
:func:`analytics.cache_savings.cache_savings_all`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import streamlit as st

from cliffwatch.analytics.audit import audit_costs, verdict
from cliffwatch.analytics.cache_savings import cache_savings_all
from cliffwatch.analytics.store_access import read_store
from cliffwatch.dashboard.filters import Filters
from cliffwatch.dashboard.queries import CACHE_TTL_S

PROBLEM_ROWS_SHOWN = 1_000
"""At most this many problem rows are read for the page (the first by run and span): a
store where every call lacks cache detail has millions; ``cliffwatch audit`` lists all."""


@dataclass(frozen=True, slots=True)
class CostTruth:
    """The audit the Cost truth page shows first, for one set of filters.

    Attributes:
        summary: :attr:`analytics.audit.CostAudit.summary` (``check``, ``calls``,
            ``amount_usd``, ``share``).
        problems: :attr:`analytics.audit.CostAudit.problems`, the first
            :data:`PROBLEM_ROWS_SHOWN` rows.
        problem_rows: rows of the full problem list.
        calls: calls audited (duplicates included).
        not_recomputing: calls whose stored cost does not recompute from their row.
        verdict: the audit's one-line verdict (:func:`analytics.audit.verdict`).
    """

    summary: pl.DataFrame
    problems: pl.DataFrame
    problem_rows: int
    calls: int
    not_recomputing: int
    verdict: str

    def check(self, name: str) -> dict[str, Any]:
        """The summary row named ``name`` (``"spend computed"``, ``"duplicates dropped"``,
        ...); calls 0 and no amount when the audit had no such row."""
        rows = self.summary.filter(pl.col("check") == name).to_dicts()
        return rows[0] if rows else {"check": name, "calls": 0, "amount_usd": None,
                                     "share": None}


@dataclass(frozen=True, slots=True)
class CacheSavings:
    """The Cost truth page's prompt-cache tables, read after the audit is drawn.

    Attributes:
        by_model, by_class: :func:`analytics.cache_savings.cache_savings_all` by model and
            by task class.
        total: the same over every call: one row, empty when there is none.
    """

    by_model: pl.DataFrame
    by_class: pl.DataFrame
    total: pl.DataFrame


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_cost_truth(
    db: str, version: tuple[int, ...], filters: Filters, current_map: bool
) -> CostTruth:
    """The audit of the filters' window and classes: calls taken by their span's start (as
    ``cliffwatch audit --since``).

    Args:
        db: the store.
        version: :func:`dashboard.queries.store_version` (part of the cache key).
        filters: the sidebar's selection.
        current_map: also price every call from the current litellm price map (loads
            litellm in the dashboard's process).

    Raises:
        StoreError: the store is missing, not a store, or busy.
        AnalyticsError: a filter names an unknown class or makes an empty window.
    """
    with read_store(db) as con:
        audit = audit_costs(con, filters.window(), current_map=current_map,
                            task_classes=filters.task_classes,
                            problems_limit=PROBLEM_ROWS_SHOWN)
    return CostTruth(
        summary=audit.summary,
        problems=audit.problems,
        problem_rows=audit.problem_rows,
        calls=audit.calls,
        not_recomputing=audit.not_recomputing,
        verdict=verdict(audit.not_recomputing, audit.calls),
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_cache_savings(db: str, version: tuple[int, ...], filters: Filters) -> CacheSavings:
    """The cache savings of the calls of runs started in the filters' window (as the
    percentiles), by model, by class and overall, from one scan.

    Raises:
        StoreError, AnalyticsError: as :func:`load_cost_truth`.
    """
    with read_store(db) as con:
        savings = cache_savings_all(con, filters.window(), filters.task_classes)
    return CacheSavings(by_model=savings["model"], by_class=savings["task_class"],
                        total=savings[None])
