"""Download buttons for the tables the pages show: one call per table, CSV of every column.

The CSV holds the table as analytics returned it (full run ids, every column, ISO times),
not the page's formatting, so it can be loaded elsewhere as is; text cells that a
spreadsheet would read as a formula are neutralised (:func:`csv_safe_frame`). The CSV is
written when the button is clicked (Streamlit calls :func:`csv_button`'s callable then), not
on every page run: a What-if over a million runs would otherwise write a 150 MB CSV, and
keep it in the server's memory, each time the page is drawn.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from cliffwatch.analytics.plain import csv_safe_frame


def csv_button(df: pl.DataFrame, name: str, *, label: str | None = None) -> None:
    """A "Download CSV" button for ``df``, saved as ``<name>.csv``.

    Args:
        df: the table (nested or object columns are written as text).
        name: the file name without extension; also makes the widget key unique per page.
        label: the button's text (default ``Download <name>.csv``).
    """

    def csv_text() -> str:
        flat = df.with_columns(
            pl.col(c).cast(pl.String) for c, t in df.schema.items() if t.is_nested()
        )
        return csv_safe_frame(flat).write_csv()

    st.download_button(
        label or f"Download {name}.csv",
        data=csv_text,
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"download_{name}",
        icon=":material/download:",
        on_click="ignore",
    )
