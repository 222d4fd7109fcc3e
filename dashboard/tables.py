"""Every ``st.dataframe`` of the dashboard goes through :func:`show`: human column headings
from one mapping, thousands separators, money and durations formatted, missing cells
shown as :data:`cliffwatch.formatting.MISSING` (never Streamlit's literal ``None``).

Headings come from :data:`COLUMN_LABELS` (analytics' column names, one place for every
page); a column it does not name gets :func:`human_label` (``runs_rejected`` ->
``Runs rejected``). A page passes ``column_config`` only for what differs (a link column,
a width, a help text); its entries replace the defaults of those columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import streamlit as st

from cliffwatch.formatting import MISSING

COLUMN_LABELS: dict[str, str] = {
    # runs, classes, percentiles
    "run_id": "Run", "task_class": "Task class", "task_id": "Task", "runs": "Runs",
    "started_at": "Started", "ended_at": "Ended", "status": "Status", "breach": "Breach",
    "cost_usd": "Cost", "limits": "Limits", "proposed": "Proposed",
    # what-if
    "runs_affected": "Runs affected", "runs_rejected": "Rejected",
    "runs_truncated": "Truncated", "runs_cancelled": "Cancelled",
    "tasks_not_completed": "Tasks not completed", "runs_estimated": "Runs estimated",
    "runs_not_replayable": "Not replayable", "spend_before_usd": "Spend before",
    "spend_after_usd": "Spend after", "p50_before_usd": "P50 before",
    "p50_after_usd": "P50 after", "p95_before_usd": "P95 before", "p95_after_usd": "P95 after",
    "p99_before_usd": "P99 before", "p99_after_usd": "P99 after", "saving_usd": "Saving",
    "saving_pct": "Saving", "annual_saving_usd": "Saving a year",
    "estimated_usd": "Estimated", "redo_usd": "Task redone",
    "tasks_redo_unknown": "Redo unknown", "status_before": "Status before",
    "status_after": "Status after", "breach_after": "Breach after",
    "dispatched_before": "Workers before", "dispatched_after": "Workers after",
    "cost_before_usd": "Cost before", "cost_after_usd": "Cost after",
    "not_completed": "Not completed", "replayable": "Replayable", "affected": "Affected",
    # incidents and findings
    "incident_id": "Incident", "kind": "Kind", "detected_at": "Detected", "detail": "Detail",
    "note": "Note", "updated_at": "Updated", "title": "Title",
    "yearly_saving_usd": "Yearly saving", "still_present": "Still present",
    "first_seen": "First seen", "last_seen": "Last seen", "fix": "Fix", "basis": "Basis",
    "evidence": "Evidence",
    # spans, replay timeline and plan
    "span_id": "Span id", "parent_span_id": "Parent span", "name": "Name", "role": "Role",
    "depth": "Depth", "offset_ms": "Start", "duration_ms": "Duration",
    "status_code": "Status", "status_message": "Status message", "is_llm_call": "LLM call",
    "model": "Model", "provider": "Provider", "input_tokens": "Tokens in",
    "output_tokens": "Tokens out", "cost_source": "Cost source", "attributes": "Attributes",
    "figure": "Figure", "recorded": "Recorded", "counterfactual": "Counterfactual",
    "step": "Step", "subtask_index": "Sub-task", "index": "#", "difficulty": "Difficulty",
    "outcome": "Outcome", "attempts": "Attempts", "cf_outcome": "Cf outcome",
    "cf_cost_usd": "Cf cost", "cf_basis": "Cf basis",
}
"""Heading of each analytics column the pages show (units are added by :func:`show`:
``(ms)``, ``(UTC)``, ``%``)."""

MONEY_FORMAT = "$%,.4f"
"""Default format of a ``*_usd`` column: dollars, thousands separated, 4 decimals."""

_COUNT_FORMAT = "%,d"
_UNIT_SUFFIXES = {"_usd": "", "_ms": " (ms)", "_pct": " %"}
_COUNT_COLUMNS = frozenset({"input_tokens", "output_tokens", "subtask_index", "proposed",
                            "tasks_not_completed"})
"""Float columns (nullable counts) shown as whole numbers."""


def human_label(column: str) -> str:
    """The heading of ``column``: :data:`COLUMN_LABELS`, else the name in words
    (``runs_rejected`` -> ``Runs rejected``), with its unit (``duration_ms`` ->
    ``Duration (ms)``, ``started_at`` -> ``Started (UTC)``)."""
    suffix = next((s for s in _UNIT_SUFFIXES if column.endswith(s)), "")
    label = COLUMN_LABELS.get(column)
    if label is None:
        words = column.removesuffix(suffix).replace("_", " ").strip() or column
        label = words[:1].upper() + words[1:]
    return label + _UNIT_SUFFIXES.get(suffix, "")


def default_config(
    df: pl.DataFrame, *, money_format: str = MONEY_FORMAT
) -> dict[str, Any]:
    """A ``column_config`` entry for every column of ``df``: its :func:`human_label`, and
    by type: money (``*_usd``: ``money_format``), whole numbers with thousands separators
    (integers, token counts), ``%,.0f`` for ``*_ms``, ``%.1f%%`` for ``*_pct``, datetimes
    to the second in UTC, booleans as checkboxes, everything else as text."""
    config: dict[str, Any] = {}
    for column, dtype in df.schema.items():
        label = human_label(column)
        if dtype.is_temporal():
            config[column] = st.column_config.DatetimeColumn(
                f"{label} (UTC)", format="YYYY-MM-DD HH:mm:ss")
        elif dtype == pl.Boolean:
            config[column] = st.column_config.CheckboxColumn(label)
        elif dtype.is_numeric():
            if column.endswith("_usd"):
                fmt = money_format
            elif column.endswith("_pct"):
                fmt = "%.1f%%"
            elif dtype.is_integer() or column in _COUNT_COLUMNS:
                fmt = _COUNT_FORMAT
            elif column.endswith("_ms"):
                fmt = "%,.0f"
            else:
                fmt = "%,.2f"
            config[column] = st.column_config.NumberColumn(label, format=fmt)
        else:
            config[column] = st.column_config.TextColumn(label)
    return config


def show(
    df: pl.DataFrame,
    *,
    column_config: Mapping[str, Any] | None = None,
    money_format: str = MONEY_FORMAT,
    **kwargs: Any,
) -> Any:
    """``st.dataframe(df)`` with :func:`default_config` (``column_config`` entries replace
    those columns' defaults), no index, and missing cells as :data:`MISSING`.

    Args:
        df: the table as analytics returned it.
        column_config: per-column overrides (``st.column_config.*`` or a label).
        money_format: the printf format of ``*_usd`` columns (``$%,.6f`` for a call).
        **kwargs: passed to ``st.dataframe`` (``key``, ``column_order``, ``on_select``...).

    Returns:
        What ``st.dataframe`` returns (the selection when ``on_select`` is given).
    """
    config = default_config(df, money_format=money_format) | dict(column_config or {})
    kwargs.setdefault("hide_index", True)
    return st.dataframe(df, column_config=config, placeholder=MISSING, **kwargs)
