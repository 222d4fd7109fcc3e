"""Plotly figures of the cost truth: spend by cost source (:mod:`analytics.audit`) and cache
savings per model or class (:mod:`analytics.cache_savings`). Like :mod:`analytics.charts`,
they draw what analytics returned and never query the store."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from cliffwatch.analytics.charts import LEGEND_ABOVE, require_columns
from cliffwatch.formatting import usd

SOURCE_COLOURS: dict[str, str] = {
    "provider": "#1f77b4",
    "computed": "#2ca02c",
    "unpriced": "#7f7f7f",
}
"""Bar colour of each ``cost_source``."""

SAVING_COLOUR = "#2ca02c"
PREMIUM_COLOUR = "#d62728"


def spend_by_source(summary: pl.DataFrame) -> go.Figure:
    """Spend per cost source with its share of the audited spend, one bar each.

    Args:
        summary: :attr:`analytics.audit.CostAudit.summary` (rows ``spend provider``,
            ``spend computed``, ``spend unpriced``; columns ``check``, ``calls``,
            ``amount_usd``, ``share``).

    Returns:
        Horizontal bars (USD); an unpriced bar is labelled with its call count, since
        unpriced calls have no cost (never $0).

    Raises:
        ValueError: a needed column is missing.
    """
    require_columns(summary, ("check", "calls", "amount_usd", "share"), "spend_by_source")
    rows = {r["check"]: r for r in summary.iter_rows(named=True)}
    sources = [s for s in SOURCE_COLOURS if f"spend {s}" in rows]
    spend, labels = [], []
    for source in sources:
        row = rows[f"spend {source}"]
        spend.append(row["amount_usd"] or 0.0)
        if row["amount_usd"] is None:
            labels.append(f"{row['calls']:,} calls, no price")
        else:
            share = f" ({row['share']:.1%})" if row["share"] is not None else ""
            labels.append(f"{usd(row['amount_usd'])}{share}, {row['calls']:,} calls")
    fig = go.Figure(
        go.Bar(
            y=sources,
            x=spend,
            orientation="h",
            text=labels,
            textposition="auto",
            marker={"color": [SOURCE_COLOURS[s] for s in sources]},
            hovertemplate="%{y}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis={"title": "spend (USD)", "tickprefix": "$", "rangemode": "tozero"},
        yaxis={"title": "cost source", "autorange": "reversed"},
        height=260,
        margin={"t": 30},
    )
    return fig


def cache_savings_bars(savings: pl.DataFrame, key: str) -> go.Figure:
    """Read saving and write premium per group, with the net saving and hit ratio on hover.

    Args:
        savings: :func:`analytics.cache_savings.cache_savings` by ``key``.
        key: its group column, ``model`` or ``task_class``.

    Returns:
        Grouped horizontal bars (USD), one pair per group with a priced saving.

    Raises:
        ValueError: a needed column is missing.
    """
    need = (key, "read_saving_usd", "write_premium_usd", "net_saving_usd", "hit_ratio")
    require_columns(savings, need, "cache_savings_bars")
    rows = savings.filter(pl.col("net_saving_usd").is_not_null()).sort(key).to_dicts()
    groups = [r[key] for r in rows]
    custom = [[usd(r["net_saving_usd"], signed=True),
               "-" if r["hit_ratio"] is None else f"{r['hit_ratio']:.1%}"] for r in rows]
    fig = go.Figure()
    for column, label, colour in (
        ("read_saving_usd", "cache reads saved", SAVING_COLOUR),
        ("write_premium_usd", "cache write premium", PREMIUM_COLOUR),
    ):
        fig.add_trace(
            go.Bar(
                y=groups,
                x=[r[column] for r in rows],
                name=label,
                orientation="h",
                marker={"color": colour},
                customdata=custom,
                hovertemplate=(f"{label}: $%{{x:.6f}}<br>net saving %{{customdata[0]}}"
                               "<br>hit ratio %{customdata[1]}<extra>%{y}</extra>"),
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis={"title": "USD", "tickprefix": "$", "rangemode": "tozero"},
        yaxis={"title": key.replace("_", " "), "autorange": "reversed"},
        height=max(260, 60 * len(groups) + 120),
        legend=LEGEND_ABOVE,
        margin={"t": 50},
    )
    return fig
