"""Two time windows side by side (before / after a change): cost percentiles, cliff ratio
and spend per task class and over every class, with the change between them.

Each window's figures are :func:`analytics.percentiles.cost_percentiles` (per class) and
:func:`analytics.percentiles.overall_percentiles` (every class at once) over the runs
started in it: continuous percentiles (``quantile_cont``, numpy's default linear method;
docs/sources.md#duckdb-percentiles), so a window compares exactly as each one reads on
the Overview.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl

from cliffwatch.analytics.percentiles import cost_percentiles, overall_percentiles
from cliffwatch.analytics.window import Window

COMPARED: dict[str, str] = {
    "runs": "runs",
    "total_usd": "spend_usd",
    "p50_usd": "p50_usd",
    "p95_usd": "p95_usd",
    "p99_usd": "p99_usd",
    "cliff_ratio": "cliff_ratio",
}
""":data:`analytics.percentiles.PERCENTILE_COLUMNS` compared -> the ``measure`` name in
:func:`compare_windows` (in this order)."""

ALL_CLASSES = None
"""``task_class`` of the rows over every selected class."""


def _long(stats: pl.DataFrame, side: str) -> pl.DataFrame:
    """``stats`` (task_class + percentile columns) as rows (task_class, measure, side)."""
    picked = stats.select(
        "task_class", *(pl.col(c).cast(pl.Float64).alias(m) for c, m in COMPARED.items())
    )
    return picked.unpivot(index="task_class", variable_name="measure", value_name=side)


def _window_stats(
    con: duckdb.DuckDBPyConnection, window: Window, task_classes: Sequence[str]
) -> pl.DataFrame:
    per_class = cost_percentiles(con, window)
    if task_classes:
        per_class = per_class.filter(pl.col("task_class").is_in(list(task_classes)))
    overall = overall_percentiles(con, window, task_classes=task_classes).with_columns(
        pl.lit(ALL_CLASSES, dtype=pl.String).alias("task_class")
    )
    return pl.concat([per_class, overall.select(per_class.columns)])


def compare_windows(
    con: duckdb.DuckDBPyConnection,
    before: Window,
    after: Window,
    task_classes: Sequence[str] = (),
) -> pl.DataFrame:
    """Each class's (and the overall) cost figures in ``before`` and in ``after``.

    Args:
        con: a store connection.
        before: the first window, on the runs' ``started_at``.
        after: the second window (they may overlap; each is read on its own).
        task_classes: only these classes (each must exist in the store); empty = all.

    Returns:
        One row per (task class, measure): ``task_class`` (null for the row over every
        selected class, which comes last), ``measure`` (one of :data:`COMPARED`'s values,
        in that order: ``runs``, ``spend_usd``, ``p50_usd``, ``p95_usd``, ``p99_usd``
        in USD per run, ``cliff_ratio`` = P99 / P50), ``before`` and ``after`` (null when
        the class had no run in that window, or a ratio with P50 = 0), ``change``
        (``after - before``) and ``change_pct`` (``100 x change / before``; null when
        either side is null or ``before`` is 0). A class with runs in neither window
        has no rows.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    sides = [_long(_window_stats(con, w, task_classes), s)
             for w, s in ((before, "before"), (after, "after"))]
    joined = sides[0].join(sides[1], on=["task_class", "measure"], how="full",
                           coalesce=True, nulls_equal=True)
    order = {m: i for i, m in enumerate(COMPARED.values())}
    change = pl.col("after") - pl.col("before")
    return (
        joined.with_columns(
            change.alias("change"),
            pl.when(pl.col("before") != 0).then(100 * change / pl.col("before"))
            .alias("change_pct"),
            pl.col("measure").replace_strict(order, return_dtype=pl.Int32).alias("_order"),
            pl.col("task_class").is_null().alias("_overall"),
        )
        .sort(["_overall", "task_class", "_order"], nulls_last=True)
        .drop("_order", "_overall")
    )
