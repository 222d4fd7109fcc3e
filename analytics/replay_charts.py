"""Plotly figures of replays and what-ifs, drawn from the DataFrames they return.

Like :mod:`analytics.charts`, these functions only draw: they take what
:mod:`analytics.replay` / :mod:`analytics.whatif` computed and return a
``plotly.graph_objects.Figure``. The dashboard shows them; HTML reports embed them.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from cliffwatch.analytics.charts import LEGEND_ABOVE, chart_text, require_columns, usd_axis

BEFORE_COLOUR = "#7f7f7f"
AFTER_COLOUR = "#1f77b4"
ESTIMATED_COLOUR = "#aec7e8"



def whatif_spend(by_class: pl.DataFrame) -> go.Figure:
    """Spend per task class before and after a what-if, with P99 per run on hover.

    Args:
        by_class: :attr:`analytics.whatif.WhatIf.by_class` (uses ``task_class``,
            ``spend_before_usd``, ``spend_after_usd``, ``saving_pct``,
            ``p99_before_usd``, ``p99_after_usd``).

    Returns:
        Grouped horizontal bars, one pair per class.

    Raises:
        ValueError: a needed column is missing.
    """
    need = ("task_class", "spend_before_usd", "spend_after_usd", "saving_pct",
            "p99_before_usd", "p99_after_usd")
    require_columns(by_class, need, "whatif_spend")
    rows = by_class.sort("task_class").to_dicts()
    classes = [chart_text(r["task_class"]) for r in rows]
    fig = go.Figure()
    for column, p99, label, colour in (
        ("spend_before_usd", "p99_before_usd", "as recorded", BEFORE_COLOUR),
        ("spend_after_usd", "p99_after_usd", "what-if", AFTER_COLOUR),
    ):
        fig.add_trace(
            go.Bar(
                y=classes,
                x=[r[column] for r in rows],
                name=label,
                orientation="h",
                marker={"color": colour},
                customdata=[[r[p99], r["saving_pct"]] for r in rows],
                hovertemplate=(
                    f"{label}: $%{{x:.4f}}<br>P99 per run $%{{customdata[0]:.5f}}"
                    "<br>saving %{customdata[1]:.1f}%<extra>%{y}</extra>"
                ),
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis={"title": "spend in the window (USD)", "tickprefix": "$"},
        yaxis={"title": "task class", "autorange": "reversed"},
        height=max(260, 70 * len(classes) + 120),
        legend=LEGEND_ABOVE,
        margin={"t": 50},
    )
    return fig


def whatif_distribution(runs: pl.DataFrame) -> go.Figure:
    """Cost per run before and after a what-if, one pair of boxes per task class.

    Args:
        runs: :attr:`analytics.whatif.WhatIf.runs` (uses ``run_id``, ``task_class``,
            ``cost_before_usd``, ``cost_after_usd``).

    Returns:
        Horizontal box plots on a log cost axis, every run a point (``customdata[0]`` its
        run id, ``customdata[1]`` the same as chart text).

    Raises:
        ValueError: a needed column is missing.
    """
    require_columns(runs, ("run_id", "task_class", "cost_before_usd", "cost_after_usd"),
             "whatif_distribution")
    fig = go.Figure()
    for column, label, colour in (("cost_before_usd", "as recorded", BEFORE_COLOUR),
                                  ("cost_after_usd", "what-if", AFTER_COLOUR)):
        shown = runs.filter(pl.col(column) > 0)  # a log axis cannot draw $0
        # numpy arrays, as charts.cost_distribution: plotly validates a list element by
        # element and sends x as a typed array; the figure's JSON is otherwise the same
        run_ids = shown["run_id"].to_numpy().astype(object)
        fig.add_trace(
            go.Box(
                x=shown[column].cast(pl.Float64).to_numpy(),
                y=np.array([chart_text(c) for c in shown["task_class"]], dtype=object),
                name=label,
                orientation="h",
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"size": 3, "opacity": 0.5, "color": colour},
                customdata=np.column_stack([run_ids, [chart_text(r) for r in run_ids]]),
                hovertemplate="run %{customdata[1]}<br>$%{x:.5f}<extra>" + label + "</extra>",
            )
        )
    fig.update_layout(
        boxmode="group",
        xaxis=usd_axis([*runs["cost_before_usd"], *runs["cost_after_usd"]],
                           "cost per run (USD)"),
        yaxis={"title": "task class"},
        legend=LEGEND_ABOVE,
        margin={"t": 50},
    )
    return fig


def counterfactual_stages(comparison_items: pl.DataFrame, recorded: pl.DataFrame) -> go.Figure:
    """One run's cost by stage as recorded and under the counterfactual.

    Args:
        comparison_items: :meth:`analytics.replay.Replay.counterfactual_items` (uses
            ``stage``, ``cost_usd``, ``basis``).
        recorded: :attr:`analytics.replay.Replay.timeline` (uses ``kind``, ``cost_usd``).

    Returns:
        Stacked horizontal bars (plan, worker, synthesis, critic, and redo: a task the
        limits leave undone, redone within them): "as recorded" and "counterfactual", the
        estimated part of each counterfactual stage paler.

    Raises:
        ValueError: a needed column is missing.
    """
    require_columns(comparison_items, ("stage", "cost_usd", "basis"), "counterfactual_stages")
    require_columns(recorded, ("kind", "cost_usd"), "counterfactual_stages")
    stages = ("plan", "worker", "synthesis", "critic", "redo")
    colours = {"plan": "#1f77b4", "worker": "#ff7f0e", "synthesis": "#2ca02c",
               "critic": "#9467bd", "redo": "#8c564b"}
    fig = go.Figure()
    for stage in stages:
        rec = recorded.filter(pl.col("kind") == stage)["cost_usd"].fill_null(0).sum()
        items = comparison_items.filter(pl.col("stage") == stage)
        known = items.filter(pl.col("basis") == "recorded")["cost_usd"].fill_null(0).sum()
        guess = items.filter(pl.col("basis") == "estimated")["cost_usd"].fill_null(0).sum()
        fig.add_trace(go.Bar(
            y=["as recorded", "counterfactual"], x=[rec, known], name=stage,
            orientation="h", marker={"color": colours[stage]}, legendgroup=stage,
            hovertemplate=f"{stage}: $%{{x:.6f}}<extra>%{{y}}</extra>",
        ))
        if guess:
            fig.add_trace(go.Bar(
                y=["counterfactual"], x=[guess], name=f"{stage} (estimated)",
                orientation="h", legendgroup=stage,
                marker={"color": colours[stage], "opacity": 0.4,
                        "pattern": {"shape": "/"}},
                hovertemplate=f"{stage}, estimated: $%{{x:.6f}}<extra>%{{y}}</extra>",
            ))
    fig.update_layout(
        barmode="stack",
        xaxis={"title": "cost (USD)", "tickprefix": "$"},
        yaxis={"autorange": "reversed"},
        height=240,
        legend=LEGEND_ABOVE,
        margin={"t": 50, "b": 40},
    )
    return fig
