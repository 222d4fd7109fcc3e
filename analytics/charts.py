"""Plotly figures drawn from the DataFrames analytics returns (compute once, render many).

Each function takes what an analytics function returned, draws it, and returns a
``plotly.graph_objects.Figure``; none of them queries the store. The dashboard shows
them with ``st.plotly_chart``; a report writes them with ``fig.write_html``.
Points that stand for a run carry its ``run_id`` as ``customdata`` so a click can select
the run.

Data (task classes, models, span names, run ids) reaches a figure only through
:func:`chart_text`: plotly draws a subset of HTML in titles, legends, tick labels and
hover text (``<a href>``, ``<b>``, ``<span style>``, ``<br>``), so a task class named
``<a href=...>`` would otherwise become a link in every viewer's chart.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from cliffwatch.formatting import usd
from cliffwatch.telemetry.conventions import Role

PERCENTILE_STYLES: tuple[tuple[str, str, str], ...] = (
    ("p50_usd", "P50", "#2ca02c"),
    ("p95_usd", "P95", "#ff7f0e"),
    ("p99_usd", "P99", "#d62728"),
)
"""(column, label, colour) of each percentile drawn."""

BOX_COLOUR = "#4c6a8c"
BOX_FILL = "rgba(76, 106, 140, 0.18)"
"""One muted colour for every class's box and points in the cost distribution, so the
P50/P95/P99 marks (green, orange, red) stand out; plotly's default palette gave a class a
red box beside the red P99 mark."""

ROLE_COLOURS: dict[str, str] = {
    Role.RUN: "#7f7f7f",
    Role.PLAN: "#1f77b4",
    Role.WORKER: "#ff7f0e",
    Role.SYNTHESIS: "#2ca02c",
    Role.CRITIC: "#9467bd",
    Role.CALL: "#8c564b",
    Role.OTHER: "#bcbd22",
}
"""Bar colour of each ``cliff.role`` in the waterfall."""

LEGEND_ABOVE = {"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0}
"""Plotly legend settings: one row above the plot area."""

_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def chart_text(value: object) -> str:
    """``value`` as plotly label text that reads as itself: ``&``, ``<`` and ``>`` as
    the entities plotly turns back into those characters (so no tag is ever parsed from
    data) and control characters as escapes (``\\n``); None gives ``-``.

    Use it for every data string put in a trace name, a category (tick label), a
    ``ticktext``, ``text`` or ``customdata`` shown by a hovertemplate; never put data in
    the hovertemplate itself (``%{...}`` in it would be read as a field).
    """
    if value is None:
        return "-"
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))
    return html.escape(text, quote=False)


TIME_UNITS: tuple[tuple[str, float, float], ...] = (
    ("ms", 1.0, 2_000.0),
    ("s", 1_000.0, 120_000.0),
    ("min", 60_000.0, 7_200_000.0),
    ("h", 3_600_000.0, math.inf),
)
"""(unit, ms per unit, longest span in ms drawn in it) of a time axis: a run of 800,000
ms is drawn in minutes (13.3 min), one of 900 ms in ms."""

_UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "min": "minutes", "h": "hours"}


def time_unit(longest_ms: float) -> tuple[str, float]:
    """The unit a time axis reaching ``longest_ms`` (ms) reads best in, and its size in
    ms: ``time_unit(800_000) == ("min", 60_000.0)`` (see :data:`TIME_UNITS`)."""
    return next((unit, size) for unit, size, upto in TIME_UNITS if longest_ms < upto)


def require_columns(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Check that ``df`` has ``columns`` before drawing it.

    Raises:
        ValueError: one names what needs them and the missing columns.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {', '.join(missing)}")


_MAX_DECADES_WITH_2_AND_5 = 3
"""A log cost axis spanning more decades than this is labelled at powers of ten only
(1-2-5 steps over more would crowd the labels)."""


def usd_axis(costs: Iterable[float | None], title: str, *, log: bool = True) -> dict[str, Any]:
    """A cost axis labelled in dollars; on a log scale, at 1-2-5 steps over ``costs``.

    Plotly's own log axis labels the minor steps with bare digits ("2 3 4 ... 9"), which
    crowd and do not read as money; this gives ``$0.001, $0.002, $0.005, $0.01, ...``
    (labels by :func:`cliffwatch.formatting.usd`)
    (powers of ten only past :data:`_MAX_DECADES_WITH_2_AND_5` decades).

    Args:
        costs: the values drawn on the axis, USD (on a log axis, None and values <= 0,
            which it cannot draw, are ignored).
        title: the axis title.
        log: a log scale (else linear, ticks prefixed with ``$``).

    Returns:
        A plotly axis dict: ``title``, ``type``, and ``tickvals`` / ``ticktext`` (log
        with positive costs) or ``tickprefix`` (linear).
    """
    if not log:
        return {"title": title, "type": "linear", "tickprefix": "$"}
    positive = [c for c in costs if c is not None and c > 0]
    axis: dict[str, Any] = {"title": title, "type": "log"}
    if not positive:
        return axis
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    steps: tuple[float, ...] = (1, 2, 5) if high - low <= _MAX_DECADES_WITH_2_AND_5 else (1,)
    if high - low <= 1:  # within one decade: 1-2-5 could leave a single label
        steps = (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10.0**e for e in range(low, high + 1) for m in steps]
    axis["tickvals"] = ticks
    axis["ticktext"] = [usd(t) for t in ticks]
    return axis


def cost_distribution(
    runs: pl.DataFrame, percentiles: pl.DataFrame, *, log_x: bool = True
) -> go.Figure:
    """Cost per run for each task class, one horizontal box with every run as a point,
    and P50/P95/P99 marked on each class.

    Args:
        runs: from :func:`analytics.runs.list_runs` (uses ``run_id``, ``task_class``,
            ``cost_usd``).
        percentiles: from :func:`analytics.percentiles.cost_percentiles` with
            ``by="task_class"`` over the same runs (uses ``task_class``, ``p50_usd``,
            ``p95_usd``, ``p99_usd``).
        log_x: log-scale cost axis (the tail spans orders of magnitude); a run costing
            exactly $0 cannot be drawn on it and is left out of the view.

    Returns:
        The figure; each run point has ``customdata = [run_id, run_id as chart text]``.

    Raises:
        ValueError: a needed column is missing.
    """
    require_columns(runs, ("run_id", "task_class", "cost_usd"), "cost_distribution(runs)")
    require_columns(
        percentiles, ("task_class", "p50_usd", "p95_usd", "p99_usd"), "cost_distribution"
    )
    fig = go.Figure()
    classes = sorted(runs["task_class"].unique().to_list())
    for task_class in classes:
        sub = runs.filter(pl.col("task_class") == task_class)
        shown = chart_text(task_class)
        # numpy arrays, not lists: plotly validates a list element by element (0.3 s for
        # 20,000 points on every page run), an array in one step; the JSON is the same
        # apart from x, sent as a typed array.
        run_ids = sub["run_id"].to_numpy().astype(object)
        fig.add_trace(
            go.Box(
                x=sub["cost_usd"].cast(pl.Float64).to_numpy(),
                y=np.full(sub.height, shown, dtype=object),
                name=shown,
                orientation="h",
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"size": 4, "opacity": 0.5},
                line={"color": BOX_COLOUR},
                fillcolor=BOX_FILL,
                customdata=np.column_stack([run_ids, [chart_text(r) for r in run_ids]]),
                hovertemplate="run %{customdata[1]}<br>$%{x:.5f}<extra>%{y}</extra>",
                showlegend=False,
            )
        )
    marked = percentiles.filter(pl.col("task_class").is_in(classes))
    for column, label, colour in PERCENTILE_STYLES:
        fig.add_trace(
            go.Scatter(
                x=marked[column].to_list(),
                y=[chart_text(c) for c in marked["task_class"]],
                mode="markers",
                name=label,
                marker={"symbol": "line-ns-open", "size": 26, "color": colour,
                        "line": {"width": 3, "color": colour}},
                hovertemplate=f"{label} $%{{x:.5f}}<extra>%{{y}}</extra>",
            )
        )
    fig.update_layout(
        xaxis=usd_axis([*runs["cost_usd"], *marked["p99_usd"]], "cost per run (USD)",
                       log=log_x),
        yaxis={"title": "task class"},
        legend=LEGEND_ABOVE,
        margin={"t": 50},
    )
    return fig


def _percentile_traces(sub: pl.DataFrame, prefix: str, *, dash: str = "solid",
                       legend: bool = True, grouped: bool = False) -> list[go.Scatter]:
    """One line per percentile (P50/P95/P99, :data:`PERCENTILE_STYLES` colours) of one
    class's daily rows; names are ``prefix`` (span data, shown as text by
    :func:`chart_text`) + the percentile;
    ``grouped``: one legend entry per percentile toggles it in every panel."""
    traces = []
    for column, label, colour in PERCENTILE_STYLES:
        name = f"{chart_text(prefix)}{label}" if prefix else label
        traces.append(go.Scatter(
            x=sub["day"].to_list(),
            y=sub[column].to_list(),
            mode="lines+markers",
            name=name,
            legendgroup=label if grouped else None,
            showlegend=legend,
            line={"color": colour, "dash": dash},
            hovertemplate="%{fullData.name} %{x}: $%{y:.5f}<extra></extra>",
        ))
    return traces


CAP_LABEL = "max-workers cap"


def _mark_cap(fig: go.Figure, cap_date: date | None, *, grid: bool = False) -> None:
    """A dashed vertical line on ``cap_date``: labelled at the top of the plot, or in a
    grid of panels (``grid``) drawn in every panel and named in the legend (a label would
    sit on a panel's title)."""
    if cap_date is None:
        return
    where: dict[str, Any] = {"row": "all", "col": "all"} if grid else {}
    fig.add_vline(x=cap_date.isoformat(), line_dash="dash", line_color="black", **where)
    if grid:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=CAP_LABEL,
                                 line={"color": "black", "dash": "dash"}, hoverinfo="skip"))
        return
    # add_vline's own annotation cannot average dates (plotly 7.1 TypeError), so the
    # label is a separate annotation at the top of the plot area.
    fig.add_annotation(
        x=cap_date.isoformat(), y=1, yref="paper", text=CAP_LABEL,
        showarrow=False, xanchor="left", yanchor="bottom",
    )


def daily_trend(
    daily: pl.DataFrame, cap_date: date | None = None, *, log_y: bool = True
) -> go.Figure:
    """Daily P50/P95/P99 lines per task class, with a vertical marker on the cap date.

    Args:
        daily: from :func:`analytics.percentiles.daily_percentiles` (uses
            ``task_class``, ``day``, ``p50_usd``, ``p95_usd``, ``p99_usd``).
        cap_date: the day the max-workers cap came in
            (:func:`analytics.percentiles.cap_start_date`); None draws no marker.
        log_y: log-scale cost axis.

    Returns:
        The figure: colour is the percentile, line dash the task class.

    Raises:
        ValueError: a needed column is missing.
    """
    require_columns(daily, ("task_class", "day", "p50_usd", "p95_usd", "p99_usd"), "daily_trend")
    fig = go.Figure()
    classes = sorted(daily["task_class"].unique().to_list())
    for i, task_class in enumerate(classes):
        sub = daily.filter(pl.col("task_class") == task_class).sort("day")
        prefix = "" if len(classes) == 1 else f"{task_class} "
        for trace in _percentile_traces(sub, prefix, dash=_DASHES[i % len(_DASHES)]):
            fig.add_trace(trace)
    _mark_cap(fig, cap_date)
    fig.update_layout(
        xaxis={"title": "day (UTC)"},
        yaxis=usd_axis([*daily["p50_usd"], *daily["p99_usd"]], "cost per run (USD)",
                       log=log_y),
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 40},
    )
    return fig


TREND_PANEL_HEIGHT_PX = 240
"""Height of one class's panel in :func:`daily_trend_by_class`."""


def daily_trend_by_class(daily: pl.DataFrame, cap_date: date | None = None) -> go.Figure:
    """Daily P50/P95/P99 with one panel per task class (a shared day axis, each panel its
    own log cost axis), so a dozen classes stay readable: the report's daily chart.

    Args:
        daily: as :func:`daily_trend`.
        cap_date: the day the max-workers cap came in, marked in every panel; None for no
            marker.

    Returns:
        The figure: rows of panels (two columns past four classes), titled by class, the
        percentiles in their colours (one legend for all panels).

    Raises:
        ValueError: a needed column is missing.
    """
    from plotly.subplots import make_subplots  # lazy: only the report draws a grid

    require_columns(daily, ("task_class", "day", "p50_usd", "p95_usd", "p99_usd"),
                    "daily_trend_by_class")
    classes = sorted(daily["task_class"].unique().to_list()) or ["(no runs)"]
    cols = 1 if len(classes) <= 4 else 2
    rows = math.ceil(len(classes) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes=True,
                        subplot_titles=[chart_text(c) for c in classes],
                        vertical_spacing=min(0.3 / rows, 0.12), horizontal_spacing=0.1)
    for i, task_class in enumerate(classes):
        row, col = i // cols + 1, i % cols + 1
        sub = daily.filter(pl.col("task_class") == task_class).sort("day")
        for trace in _percentile_traces(sub, "", legend=i == 0, grouped=True):
            fig.add_trace(trace, row=row, col=col)
        fig.update_yaxes(row=row, col=col, **usd_axis(
            [*sub["p50_usd"], *sub["p99_usd"]], "USD per run" if col == 1 else ""))
    for col in range(1, cols + 1):
        fig.update_xaxes(title_text="day (UTC)", row=rows, col=col)
    _mark_cap(fig, cap_date, grid=True)
    fig.update_layout(height=TREND_PANEL_HEIGHT_PX * rows + 120, legend=LEGEND_ABOVE,
                      margin={"t": 80})
    return fig


def run_waterfall(spans: pl.DataFrame) -> go.Figure:
    """One run's spans as bars on a time axis from the run's start, top to bottom in
    start order, indented by depth, coloured by role; errors outlined in red.

    The axis is in the unit :func:`time_unit` picks for the run's length (ms, s, min or
    h: a 13-minute run reads "13.3 min", not "800k ms").

    Args:
        spans: from :func:`analytics.runs.run_spans` (uses ``span_id``, ``name``,
            ``role``, ``depth``, ``offset_ms``, ``duration_ms``, ``model``,
            ``input_tokens``, ``output_tokens``, ``cost_usd``, ``status_code``).

    Returns:
        The figure; ``x`` (duration) and ``base`` (start) in the axis's unit; hover
        shows model, tokens, cost and status; ``customdata[0]`` is the span id.

    Raises:
        ValueError: a needed column is missing.
    """
    need = ("span_id", "name", "role", "depth", "offset_ms", "duration_ms", "model",
            "input_tokens", "output_tokens", "cost_usd", "status_code")
    require_columns(spans, need, "run_waterfall")
    rows = spans.with_row_index("row").to_dicts()
    ends_ms = [(r["offset_ms"] or 0.0) + max(r["duration_ms"] or 0.0, 0.0) for r in rows]
    unit, unit_ms = time_unit(max(ends_ms, default=0.0))
    digits = 0 if unit == "ms" else 1
    fig = go.Figure()
    for role in dict.fromkeys(r["role"] for r in rows):
        mine = [r for r in rows if r["role"] == role]
        fig.add_trace(
            go.Bar(
                y=[r["row"] for r in mine],
                x=[max(r["duration_ms"] or 0.0, 0.0) / unit_ms for r in mine],
                base=[(r["offset_ms"] or 0.0) / unit_ms for r in mine],
                orientation="h",
                name=chart_text(role),
                marker={
                    "color": ROLE_COLOURS.get(role, "#17becf"),
                    "line": {
                        "color": ["#d62728" if r["status_code"] == "error" else "white"
                                  for r in mine],
                        "width": 2,
                    },
                },
                customdata=[
                    [r["span_id"], chart_text(r["name"]), chart_text(r["model"]),
                     "-" if r["input_tokens"] is None else f"{r['input_tokens']:,.0f}",
                     "-" if r["output_tokens"] is None else f"{r['output_tokens']:,.0f}",
                     usd(r["cost_usd"]),
                     chart_text(r["status_code"])]
                    for r in mine
                ],
                hovertemplate=(
                    "%{customdata[1]}<br>model %{customdata[2]}<br>"
                    "tokens in %{customdata[3]} / out %{customdata[4]}<br>"
                    "cost %{customdata[5]}<br>status %{customdata[6]}<br>"
                    f"start %{{base:,.{digits}f}} {unit}, %{{x:,.{digits}f}} {unit}"
                    "<extra>%{fullData.name}</extra>"
                ),
            )
        )
    fig.update_layout(
        barmode="overlay",
        xaxis={"title": f"{_UNIT_WORDS[unit]} since the run started",
               "ticksuffix": f" {unit}", "tickformat": ",~f"},
        yaxis={
            "tickvals": [r["row"] for r in rows],
            "ticktext": ["\u2003" * r["depth"] + chart_text(r["name"]) for r in rows],
            "autorange": "reversed",
            "automargin": True,  # room for the longest (indented) span name
        },
        height=max(240, 28 * len(rows) + 120),
        legend=LEGEND_ABOVE,
        margin={"t": 50},
    )
    return fig

