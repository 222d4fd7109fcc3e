"""Small display helpers the pages share: money formatting, the percentile table, run links.

``ui.usd`` is :func:`cliffwatch.formatting.usd`, the one money format of the CLI, the
dashboard and the reports."""

from __future__ import annotations

import re
from typing import Literal, NoReturn

import polars as pl
import streamlit as st
from pandas.io.formats.style import Styler
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from cliffwatch.formatting import MISSING, usd

RUN_PAGE = "views/run.py"
"""The run page's source, relative to app.py (what ``st.switch_page`` takes)."""

RUN_URL_PATH = "run"
"""The run page's URL path under ``st.navigation`` (its file name without ``.py``)."""

RUN_LINK_PREFIX = f"{RUN_URL_PATH}?run_id="
"""A run's deep link, relative to the app's pages, is this followed by its run id."""

BadgeColour = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "grey",
                      "primary"]
"""The colours ``st.badge`` takes."""

STATUS_COLOURS: dict[str, BadgeColour] = {
    "ok": "green", "rejected": "red", "cancelled": "orange", "failed": "red",
}
"""The badge colour of each run status (the run and replay pages; gray for any other)."""


PERCENTILE_LABELS: dict[str, str] = {
    "task_class": "Task class",
    "runs": "Runs",
    "total_usd": "Spend",
    "mean_usd": "Mean",
    "p50_usd": "P50",
    "p95_usd": "P95",
    "p99_usd": "P99",
    "max_usd": "Max",
    "cliff_ratio": "P99 / P50",
    "cliff": "Cost Cliff",
    "breaches": "Breaches",
    "unpriced_calls": "Unpriced calls",
}
"""Columns of the percentile table, in order, with their headings."""

CLIFF_BADGE = ":red-badge[Cost Cliff]"
"""Markdown badge in the table's Cost Cliff column (st.table renders cell Markdown)."""

_ALERT_CSS = "background-color: #fde0e0; color: #b00020; font-weight: 700"


def percentile_table(percentiles: pl.DataFrame, cliff_ratio: float) -> Styler:
    """The per-class percentile table for ``st.table``: dollars formatted, the P99 / P50
    cell highlighted and a red badge where it exceeds ``cliff_ratio``.

    Args:
        percentiles: :func:`analytics.percentiles.cost_percentiles` by ``task_class``.
        cliff_ratio: the P99 / P50 above which a class is flagged (the Cost Cliff).

    Returns:
        A pandas Styler with the :data:`PERCENTILE_LABELS` headings.
    """
    over = pl.col("cliff_ratio") > cliff_ratio
    shown = percentiles.with_columns(
        pl.col("task_class").map_elements(md_text, return_dtype=pl.String),
        pl.when(over).then(pl.lit(CLIFF_BADGE)).otherwise(pl.lit("")).alias("cliff")
    ).select(list(PERCENTILE_LABELS)).to_pandas().rename(columns=PERCENTILE_LABELS)
    money = [PERCENTILE_LABELS[c] for c in PERCENTILE_LABELS if c.endswith("_usd")]
    ratio = PERCENTILE_LABELS["cliff_ratio"]
    counts = [PERCENTILE_LABELS[c] for c in ("runs", "breaches", "unpriced_calls")]
    return (
        shown.style.format(usd, subset=money)
        .format("{:,.0f}", subset=counts, na_rep=MISSING)
        .format("{:,.1f}x", subset=[ratio], na_rep=MISSING)
        .map(lambda r: _ALERT_CSS if r > cliff_ratio else "", subset=[ratio])
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_AUTOLINK = re.compile(r"(?i)(https?|www|ftp|mailto|xmpp)(?=\\[:.])|(?=\\?@)")
WORD_JOINER = "\u2060"
"""Invisible; put where GitHub-flavoured markdown would start a link of its own."""


def md_text(value: object) -> str:
    """``value`` as literal text inside Streamlit markdown (titles, captions, alerts):
    every ASCII punctuation mark that markdown, Streamlit directives (``:red[...]``,
    ``:material/x:``), LaTeX (``$``) or HTML (``<img>``) give a meaning is backslash-escaped
    (CommonMark: any ASCII punctuation may be), and control characters are shown as
    escapes (``\\n``), so span data or a URL parameter never becomes an image, a link or
    an element. ``None`` gives ``-``.

    Escapes alone do not stop GitHub-flavoured markdown's autolinks (Streamlit's renderer
    finds ``http://...``, ``www.`` and ``name@host`` in the text after unescaping it), so
    an invisible :data:`WORD_JOINER` is put after ``http``, ``https``, ``www``, ``ftp``,
    ``mailto`` and ``xmpp`` where ``:`` or ``.`` follows, and before every ``@``."""
    if value is None:
        return "-"
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return _AUTOLINK.sub(lambda m: (m.group(1) or "") + WORD_JOINER, escaped)


def chart_slot() -> DeltaGenerator:
    """A place on the page for a plotly chart that is drawn after the table below it:
    ``slot = ui.chart_slot()``, then the table, then ``slot.plotly_chart(...)``.

    The browser loads Streamlit's plotly.js (4.7 MB) when the first chart element
    arrives; sent before the table, its download and evaluation delay the table's own
    JavaScript, so the page's first table waited for plotly (the Run page at 1M runs).
    Sent after it, the table is drawn first; the layout is the same (the slot holds the
    chart's place above the table). Even so it came while the table's JavaScript was still
    loading: :func:`dashboard.paint_gate.chart` fills the slot in the run after the
    browser drew the table."""
    return st.empty()


class PageStopped(StopException):
    """The page ended its script early (:func:`stop`); ``app.py`` catches it and draws the
    sidebar after the page. A Streamlit ``StopException`` (not an ``Exception``), so a
    page's own ``except Exception`` never swallows it, and a page run without ``app.py``
    stops as at ``st.stop()``."""


def stop() -> NoReturn:
    """End the page here, as ``st.stop()`` does, but not the app's script run: ``app.py``
    draws the sidebar after the page's content (the browser then loads the page's element
    code before the sidebar widgets'), and ``st.stop()`` would end the run before it.

    Raises:
        PageStopped: always.
    """
    raise PageStopped


def cost_delta(saving_usd: float | None, saving_pct: float | None = None) -> str | None:
    """The ``delta`` of a cost metric (shown with ``delta_color="inverse"``) that a
    saving (USD; negative: it costs more) changes: ``-$0.12 (4.0%)`` for a saving, its
    arrow down, ``+$0.12`` for a cost, its arrow up (``saving_pct``, a percentage, in
    brackets when given); None, no delta at all, when the saving is unknown (None) or
    zero."""
    if not saving_usd:
        return None
    pct = "" if saving_pct is None else f" ({abs(saving_pct):.1f}%)"
    return f"{'-' if saving_usd > 0 else '+'}{usd(abs(saving_usd))}{pct}"


def run_link(run_id: str) -> str:
    """The deep link of a run, relative to the app's pages (``run?run_id=...``)."""
    return RUN_LINK_PREFIX + run_id


def open_run(run_id: str) -> NoReturn:
    """Switch to the run page showing ``run_id`` (its URL becomes the deep link)."""
    st.switch_page(RUN_PAGE, query_params={"run_id": run_id})
