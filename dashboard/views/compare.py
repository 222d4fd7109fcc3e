"""Compare: two time windows side by side (before and after a change): runs, spend,
P50/P95/P99 cost per run and the cliff ratio (P99 / P50), per task class and over every
selected class, with the change between them.

Deep link: ``/compare?before_since=2026-11-01&before_until=2026-11-06&after_since=2026-11-06``
(``after_until`` too; an empty end is open; the forms ``--since`` takes, see
:mod:`analytics.window`) plus the sidebar's ``task_class``. The sidebar's own time window
does not apply here: each side has its own. A link that sets ``after_since`` but not
``before_until`` ends the before window where the after one starts (before and after a
change: ``/compare?before_since=30m&after_since=20m``).
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

import polars as pl
import streamlit as st

from cliffwatch.analytics.window import Window, WindowError, utc_now
from cliffwatch.dashboard import cells, downloads, filters, paint_gate, queries, tables, ui
from cliffwatch.dashboard.runs_queries import load_comparison

MEASURE_LABELS = {
    "runs": "Runs", "spend_usd": "Spend", "p50_usd": "P50 per run", "p95_usd": "P95 per run",
    "p99_usd": "P99 per run", "cliff_ratio": "P99 / P50",
}
ALL_SELECTED = "All selected classes"
# Each side's (since, until) until the user or the link sets one; the inputs' keys (each
# its query parameter) and the height their row takes.
DEFAULT_WINDOWS = (("14d", "7d"), ("7d", ""))
WINDOW_KEYS = ("before_since", "before_until", "after_since", "after_until")
INPUTS_HEIGHT_PX = 109
# Windows whose lengths differ by more than this share make raw runs and spend unlike.
LENGTH_TOLERANCE = 0.1


def _defaults() -> tuple[tuple[str, str], tuple[str, str]]:
    """Each side's (since, until) before the user sets them: :data:`DEFAULT_WINDOWS`, but
    a link's ``after_since`` without ``before_until`` is where the before window ends."""
    (before_since, before_until), after = DEFAULT_WINDOWS
    if "after_since" in st.query_params and "before_until" not in st.query_params:
        before_until = st.query_params["after_since"]
    return (before_since, before_until), after


def _days(window: Window, now: datetime) -> float | None:
    """A window's length in days (an open end is now); None when it has no start."""
    if window.since is None:
        return None
    return ((window.until or now) - window.since).total_seconds() / 86_400


def _value(measure: str, value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if measure == "runs":
        return ("+" if signed and value > 0 else "") + cells.count(value)
    if measure == "cliff_ratio":
        return f"{value:+,.2f}x" if signed else f"{value:,.1f}x"
    return ui.usd(value, signed=signed)


def _cell(column: str) -> Callable[[dict[str, Any]], str]:
    """How a (measure, value) struct of ``column`` reads; a change is signed."""
    return lambda row: _value(row["measure"], row[column], signed=column == "change")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.1f}%"


def _window_inputs(side: str, since_default: str, until_default: str) -> tuple[str, str]:
    st.markdown(f"**{side.capitalize()}**")
    row = st.columns(2)
    since = row[0].text_input("Since", value=since_default, key=f"{side}_since",
                              bind="query-params", placeholder="the beginning")
    until = row[1].text_input("Until (exclusive)", value=until_default, key=f"{side}_until",
                              bind="query-params", placeholder="now")
    return since.strip(), until.strip()


def _inputs() -> tuple[tuple[str, str], tuple[str, str]]:
    sides = st.columns(2)
    defaults = _defaults()
    with sides[0]:
        before = _window_inputs("before", *defaults[0])
    with sides[1]:
        after = _window_inputs("after", *defaults[1])
    return before, after


selected = filters.current()
st.title("Compare two windows")
st.caption(
    "Before and after a change (a cap, a model, a prompt): each side is the runs started in "
    "its window (the sidebar's time window does not apply here). Dates (2026-11-01), "
    "dates and times (2026-11-01T12:30) or durations back "
    "from now (14d, 7d). UTC. Task classes: "
    f"{ui.md_text(', '.join(selected.task_classes) or 'all')} (sidebar)."
)
# Before the page's first paint in a session, with no window in the link: the table with
# the default windows first, the inputs in their place in the next run (paint_gate.py).
before, after = paint_gate.widgets("compare", WINDOW_KEYS, INPUTS_HEIGHT_PX, _inputs,
                                   _defaults())

problems, windows = [], []
for side, (since, until) in (("Before", before), ("After", after)):
    try:
        windows.append(Window.parse(since or None, until or None))
    except WindowError as exc:
        problems.append(f"{side}: {ui.md_text(exc)}")
if problems:
    st.error("  \n".join(problems))
    ui.stop()

compared = queries.fetch(load_comparison, before, after, selected.task_classes)
if compared.is_empty():
    queries.stop_if_no_runs()
    st.info("Neither window has a run of the selected classes: move or widen the windows.")
    ui.stop()

overall = {r["measure"]: r for r in compared.filter(pl.col("task_class").is_null())
           .iter_rows(named=True)}
kpis = st.columns(len(MEASURE_LABELS))
for column, (measure, label) in zip(kpis, MEASURE_LABELS.items(), strict=True):
    row = overall[measure]
    column.metric(
        label, _value(measure, row["after"]),
        delta=None if row["change"] is None else _value(measure, row["change"], signed=True),
        delta_color="off" if measure == "runs" else "inverse",
        help=f"Before: {_value(measure, row['before'])}",
    )
st.caption("Headline: after, over every selected class; the change is after minus before "
           "(red: costs more).")
before_days, after_days = (_days(window, utc_now()) for window in windows)
if (before_days is not None and after_days is not None
        and abs(before_days - after_days) > LENGTH_TOLERANCE * max(before_days, after_days)):
    st.warning(
        f"The windows differ in length (before {before_days:,.1f} days, after "
        f"{after_days:,.1f} days): runs and spend differ by that alone. Compare the "
        "per-run figures (P50 / P95 / P99), or give both windows the same length."
    )

table = compared.select(
    pl.col("task_class").fill_null(ALL_SELECTED).map_elements(cells.text, return_dtype=pl.String)
    .alias("Task class"),
    pl.col("measure").replace_strict(MEASURE_LABELS).alias("Measure"),
    *(
        pl.struct("measure", col).map_elements(_cell(col), return_dtype=pl.String).alias(label)
        for col, label in (("before", "Before"), ("after", "After"), ("change", "Change"))
    ),
    pl.col("change_pct").map_elements(_pct, return_dtype=pl.String, skip_nulls=False)
    .alias("Change %"),
)
st.subheader("Per task class")
tables.show(table, key="comparison")
if paint_gate.painted("compare", paint_gate.DATAFRAME_SELECTOR):  # once the table is drawn
    downloads.csv_button(compared, "comparison")
st.caption("A class with no run in one window shows - there. Percentiles are continuous "
           "(linear interpolation, as numpy's default) over every run of the window.")
