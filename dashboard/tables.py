"""Every ``st.dataframe`` of the dashboard goes through :func:`show`: human column headings
from one mapping, thousands separators, money and durations formatted, missing cells
shown as :data:`cliffwatch.formatting.MISSING` (never Streamlit's literal ``None``).

Headings come from :func:`human_label`: a column's name in words (``runs_affected`` ->
``Runs affected``) unless :data:`COLUMN_LABELS` (one place for every page) names it. A page
passes ``column_config`` only for what differs (a link column, a width, a help text); its
entries replace the defaults of those columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import streamlit as st

from cliffwatch.formatting import MISSING

COLUMN_LABELS: dict[str, str] = {
    "run_id": "Run", "task_id": "Task", "incident_id": "Incident",
    "parent_span_id": "Parent span", "index": "#", "subtask_index": "Sub-task",
    "runs_rejected": "Rejected", "runs_truncated": "Truncated", "runs_cancelled": "Cancelled",
    "runs_not_replayable": "Not replayable", "annual_saving_usd": "Saving a year",
    "redo_usd": "Task redone", "tasks_redo_unknown": "Redo unknown",
    "dispatched_before": "Workers before", "dispatched_after": "Workers after",
    "offset_ms": "Start", "status_code": "Status", "is_llm_call": "LLM call",
    "input_tokens": "Tokens in", "output_tokens": "Tokens out",
}
"""Headings of the analytics columns whose name in words would not read well; every other
column is headed by its name in words (:func:`human_label`: ``runs_affected`` -> ``Runs
affected``, ``spend_before_usd`` -> ``Spend before``, ``p99_after_usd`` -> ``P99 after``).
Units are added by :func:`default_config` (``(ms)``, ``(UTC)``, ``%``)."""

MAX_SHOWN_ROWS = 1_000
"""Rows a page's list of incidents sends to the browser at most (the newest first); its
CSV download holds every row. 30,000 incidents (9.9 MB of Arrow, and as many options in
the triage form) took the Incidents page to 2.8 s at 1M runs (``python -m bench --runs
1000000 dashboard_paint``)."""

MONEY_FORMAT = "$%,.4f"
"""Default format of a ``*_usd`` column: dollars, thousands separated, 4 decimals."""

_COUNT_FORMAT = "%,d"
_UNIT_SUFFIXES = {"_usd": "", "_ms": " (ms)", "_pct": " %", "_at": ""}
_COUNT_COLUMNS = frozenset({"input_tokens", "output_tokens", "subtask_index", "proposed",
                            "tasks_not_completed"})
"""Float columns (nullable counts) shown as whole numbers."""


def human_label(column: str) -> str:
    """The heading of ``column``: :data:`COLUMN_LABELS`, else the name in words
    (``runs_affected`` -> ``Runs affected``, ``started_at`` -> ``Started``), with its
    unit (``duration_ms`` -> ``Duration (ms)``, ``saving_pct`` -> ``Saving %``)."""
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
