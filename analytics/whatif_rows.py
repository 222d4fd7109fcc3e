"""The what-if's per-run rows: pushed down into DuckDB, with the Python counterfactual
for the runs the SQL leaves to it, in chunks.

:func:`replay_rows` is what :func:`analytics.whatif.what_if` reads: one row per run of
:data:`RUN_COLUMNS` (plus ``_truncated`` and ``_estimated``). Most runs are computed by
:data:`analytics.whatif_sql.RUN_SQL`, by chunks of runs (in DuckDB staged to Parquet files
in one read of the spans, :func:`analytics.whatif_sql.stage_chunks`); the runs it flags (its module
docstring says which) are replayed by :func:`analytics.counterfactual.counterfactual`, the
orchestrator's dispatch layer, read :data:`PY_READ_RUNS` runs at a time (one read of the
spans) and replayed :data:`PY_CHUNK_RUNS` at a time. :func:`python_rows`
replays every run in Python (the reference the SQL is tested against). Either way memory
holds a chunk's calls (two chunks side by side when staged, :mod:`analytics.chunk_pool`),
never the window's.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from polars.datatypes import DataTypeClass

from cliffwatch.analytics import chunks, whatif_sql
from cliffwatch.analytics.chunk_pool import Worker, chunk_cursors, in_order, one_worker
from cliffwatch.analytics.chunks import Bounds, ChunkFiles
from cliffwatch.analytics.counterfactual import Counterfactual, Outcome, counterfactual
from cliffwatch.analytics.estimates import estimate_scope, fold_estimates, staged_estimate_sums
from cliffwatch.analytics.recorded import (
    Estimates,
    RecordedRun,
    read_recorded_runs,
    recorded_limits,
)
from cliffwatch.analytics.redo import load_completed_runs
from cliffwatch.analytics.replay import LimitsOverride, limits_text
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.whatif_sql import sql_run_rows, stage_chunks
from cliffwatch.analytics.window import Window

PY_CHUNK_RUNS = 1_000
"""Runs the Python counterfactual makes into records (with their calls) and replays at a
time, in run-id order, out of a read of :data:`PY_READ_RUNS`: the records of a part are
what Python holds (~9 KB a run)."""

PY_READ_RUNS = 20_000
"""Runs whose calls the Python counterfactual reads from the store at a time
(:func:`analytics.recorded.read_recorded_runs`, one read of the spans: the calls and
root spans as frames, ~2 KB a run). At 1M runs a report leaves ~6,000 runs spread over
the store to Python: read in six run-id range batches of 1,000, every batch scanned the
whole store (random trace ids), ~7.6 s; in one read ~1 s (issue 11)."""

CHUNK_PAIRS = 2 * whatif_sql.CHUNK_RUNS
"""(variant, run) pairs per chunk of the pushed-down what-if when its caller brings the
class estimates (the findings, the report: under their bounds, :mod:`analytics.bulk_read`):
what the findings' two what-ifs were read in before their runs were filtered (25,000 runs
of two variants each; the run-id ranges were cut on ``runs x variants`` but only the first
half of those cuts exist), measured at 1M runs under 512 MB and, filtered, under 256 MB."""


RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "task_class", "started_at", "limits", "status_before", "status_after",
    "breach_after", "proposed", "dispatched_before", "dispatched_after", "cost_before_usd",
    "cost_after_usd", "saving_usd", "estimated_usd", "redo_usd", "not_completed",
    "replayable", "affected",
)
"""Columns of :attr:`analytics.whatif.WhatIf.runs`, in order."""

Overrides = LimitsOverride | Mapping[str, LimitsOverride]
"""One override for every class, or one per class (a class not in the mapping keeps its
recorded limits)."""

RunFilter = Callable[[str, Any, Any, Any], bool]
"""Which runs a variant replays, by what each recorded: ``keep(task_class, max_workers,
ceiling_usd, policy)`` (the ``runs`` table's values as stored, None where not recorded)
is True for the runs to replay. A caller that sums only some runs (the findings: runs
without a tighter recorded cap or ceiling) replays only those; the rows, and every figure
of the variant, are then over those runs."""

RUN_SCHEMA: dict[str, pl.DataType | DataTypeClass] = {
    "run_id": pl.String, "task_class": pl.Categorical(), "started_at": pl.Datetime("us"),
    "limits": pl.Categorical(), "status_before": pl.Categorical(),
    "status_after": pl.Categorical(), "breach_after": pl.Categorical(),
    "proposed": pl.Int64, "dispatched_before": pl.Int64,
    "dispatched_after": pl.Int64, "cost_before_usd": pl.Float64, "cost_after_usd": pl.Float64,
    "saving_usd": pl.Float64, "estimated_usd": pl.Float64, "redo_usd": pl.Float64,
    "not_completed": pl.Boolean, "replayable": pl.Boolean,
    "affected": pl.Boolean, "_truncated": pl.Boolean, "_estimated": pl.Boolean,
}
"""The per-run frame's columns and types (:data:`RUN_COLUMNS` and two private flags). The
class, the limits' text, the statuses and the breach are categorical (a handful of values
repeated per run: 4 bytes a row each instead of a string view and its text; at 1M runs the
report holds three such frames, issue 11); they read, compare and filter as strings."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "task_class", "started_at", "status_after", "affected", "_truncated", "not_completed",
    "_estimated", "replayable", "cost_before_usd", "cost_after_usd", "estimated_usd",
    "redo_usd",
)
"""The columns a variant replayed for its per-class figures only keeps per run (see
:func:`replay_rows`' ``summaries``): what :func:`analytics.whatif.what_ifs` sums per
class and the window's length reads; no run id (the widest column), no sort."""


def override_for(overrides: Overrides, task_class: str) -> LimitsOverride:
    """The override of ``task_class`` (keep everything when a mapping does not name it)."""
    if isinstance(overrides, LimitsOverride):
        return overrides
    return overrides.get(task_class, LimitsOverride())


def run_row(run: RecordedRun, cf: Counterfactual) -> dict[str, Any]:
    """One :data:`RUN_SCHEMA` row of ``run`` replayed as ``cf``."""
    affected = (
        cf.status != run.status
        or cf.dispatched != (run.workers_dispatched or 0)
        or abs(cf.cost_usd - run.cost_usd) > 1e-12
    )
    return {
        "run_id": run.run_id,
        "task_class": run.task_class,
        "started_at": run.started_at,
        "limits": limits_text(cf.limits),
        "status_before": run.status,
        "status_after": cf.status.value,
        "breach_after": cf.breach.value if cf.breach else None,
        "proposed": cf.proposed,
        "dispatched_before": run.workers_dispatched,
        "dispatched_after": cf.dispatched,
        "cost_before_usd": run.cost_usd,
        # An unchanged run costs exactly what it did (the same calls summed in another
        # order can differ in the last bit).
        "cost_after_usd": cf.task_cost_usd if affected else run.cost_usd,
        "saving_usd": cf.saving_usd if affected else 0.0,
        "estimated_usd": cf.estimated_usd,
        "redo_usd": cf.redo_usd,
        "not_completed": cf.not_completed,
        "replayable": cf.replayable,
        "affected": affected,
        "_truncated": any(s.outcome is Outcome.NOT_DISPATCHED for s in cf.subtasks),
        "_estimated": cf.has_estimates,
    }


def _scope(window: Window, task_class: str | None) -> tuple[list[str], dict[str, Any]]:
    conds, params = window.conditions("r.started_at")
    if task_class is not None:
        conds.append("r.task_class = $task_class")
        params["task_class"] = task_class
    return conds, params


def _python_chunks(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], overrides: Overrides,
    estimates: Estimates,
) -> Iterator[pl.DataFrame]:
    for begin in range(0, len(run_ids), PY_READ_RUNS):
        read = read_recorded_runs(con, run_ids=run_ids[begin : begin + PY_READ_RUNS])
        for start in range(begin, min(begin + PY_READ_RUNS, len(run_ids)), PY_CHUNK_RUNS):
            rows = []
            part = run_ids[start : min(start + PY_CHUNK_RUNS, begin + PY_READ_RUNS)]
            for run in read.records(part):
                limits = override_for(overrides, run.task_class).apply(run.limits)
                rows.append(run_row(run, counterfactual(run, limits, estimates)))
            yield pl.DataFrame(rows, schema=RUN_SCHEMA)


def _finish(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The chunks' rows as one frame, oldest first (``started_at``, then ``run_id``).

    Takes ``parts`` over (the list is emptied) and reorders one column at a time, each
    chunk column freed as its sorted copy is made: the peak is the rows plus one column,
    not twice the rows as a frame-wide sort (+330 MB at 1M runs, issue 11)."""
    if not parts:
        return pl.DataFrame(schema=RUN_SCHEMA)
    whole = pl.concat(parts, rechunk=False)
    parts.clear()
    order = whole.select(pl.arg_sort_by("started_at", "run_id")).to_series()
    columns = whole.get_columns()
    del whole
    for i, column in enumerate(columns):
        columns[i] = column.gather(order)
        del column
    return pl.DataFrame(columns)


def python_rows(
    con: duckdb.DuckDBPyConnection, overrides: Overrides, window: Window,
    task_class: str | None, estimates: Estimates, keep: RunFilter | None = None,
) -> pl.DataFrame:
    """Every run of the window (that ``keep`` keeps, when given) replayed by the Python
    counterfactual, in chunks; oldest first. The reference :func:`replay_rows` is held
    to."""
    conds, params = _scope(window, task_class)
    runs = frame(con, "SELECT run_id, task_class, max_workers, ceiling_usd, policy "
                      f"FROM runs r {where(conds)} ORDER BY run_id", params)
    ids = [row[0] for row in runs.iter_rows() if keep is None or keep(*row[1:])]
    return _finish(list(_python_chunks(con, ids, overrides, estimates)))


def _limit_table(
    con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any],
    variants: Sequence[Overrides], estimates: Estimates, keeps: Sequence[RunFilter | None],
) -> tuple[pl.DataFrame, int]:
    """One row per variant and recorded (class, cap, ceiling, policy) in scope that the
    variant's filter in ``keeps`` keeps: the limits the run is replayed under (the
    override applied by Python, so a bad one raises ReplayError as before), their text
    and the redo estimate within them; and how many (variant, run) pairs those rows
    cover."""
    combos = frame(con, "SELECT r.task_class, r.max_workers, r.ceiling_usd, r.policy, "
                        f"count(*) AS n FROM runs r {where(conds)} GROUP BY ALL", params)
    rows = []
    pairs = 0
    for variant, (overrides, keep) in enumerate(zip(variants, keeps, strict=True)):
        for c in combos.iter_rows(named=True):
            if keep is not None and not keep(c["task_class"], c["max_workers"],
                                             c["ceiling_usd"], c["policy"]):
                continue
            pairs += c["n"]
            rec = recorded_limits(c["max_workers"], c["ceiling_usd"], c["policy"])
            new = override_for(overrides, c["task_class"]).apply(rec)
            rows.append({
                "variant": variant, "task_class": c["task_class"],
                "rec_cap": c["max_workers"], "rec_ceiling": c["ceiling_usd"],
                "rec_policy": c["policy"], "cap": new.max_workers, "ceiling": new.ceiling_usd,
                "policy": new.policy.value, "limits": limits_text(new),
                "rec_limits_cap": rec.max_workers,
                "redo_usd": estimates.redo(c["task_class"], new).cost_usd,
            })
    return pl.DataFrame(rows, schema={
        "variant": pl.Int64, "task_class": pl.String, "rec_cap": pl.Int64,
        "rec_ceiling": pl.Float64, "rec_policy": pl.String, "cap": pl.Int64,
        "ceiling": pl.Float64, "policy": pl.String, "limits": pl.String,
        "rec_limits_cap": pl.Int64, "redo_usd": pl.Float64,
    }), pairs


def _estimate_tables(estimates: Estimates) -> dict[str, pl.DataFrame]:
    workers = pl.DataFrame(
        [{"task_class": c, "model": m, "cost_usd": w.cost_usd,
          "output_tokens": w.output_tokens} for (c, m), w in estimates.workers.items()],
        schema={"task_class": pl.String, "model": pl.String, "cost_usd": pl.Float64,
                "output_tokens": pl.Float64},
    )
    classes = sorted(set(estimates.synthesis_usd) | set(estimates.synthesis_price_input))
    synth = pl.DataFrame(
        [{"task_class": c, "synthesis_usd": estimates.synthesis_usd.get(c),
          "price_input": estimates.synthesis_price_input.get(c)} for c in classes],
        schema={"task_class": pl.String, "synthesis_usd": pl.Float64,
                "price_input": pl.Float64},
    )
    return {"workers": workers, "synth": synth}


def _estimate_sums(read: ChunkFiles, worker: Worker) -> pl.DataFrame:
    return staged_estimate_sums(worker[0], read.rows, read.keys)


def _staged_pass(
    con: duckdb.DuckDBPyConnection, task_class: str | None, per_chunk_runs: int, tmp: Path,
    routed: bool,
) -> tuple[list[ChunkFiles], Estimates]:
    """Stage the class estimates' runs in chunks of about ``per_chunk_runs`` runs, in one
    read of the spans (:func:`analytics.whatif_sql.stage_chunks`: the spans' attributes
    parsed once, each chunk's rows written to Parquet files in ``tmp``), and add up the
    estimates from the staged calls, :data:`analytics.chunk_pool.WORKERS` chunks at once:
    ``(per chunk the SQL reading its staged files, the class estimates)``; ``routed``: as
    :func:`analytics.chunks.partition_by_chunk`'s."""
    est_conds, est_params = estimate_scope(task_class)
    stage_conds = [f"r.{c}" for c in est_conds]
    runs = frame(con, f"SELECT count(*) AS n FROM runs {where(est_conds)}", est_params)["n"][0]
    staged = stage_chunks(con, stage_conds, est_params, -(-runs // per_chunk_runs), tmp,
                          routed=routed)
    with chunk_cursors(con) as workers:
        sums = list(in_order(workers, [partial(_estimate_sums, read) for read in staged]))
    return staged, fold_estimates(sums, load_completed_runs(con, task_class))


def replay_rows(
    con: duckdb.DuckDBPyConnection, variants: Sequence[Overrides], window: Window,
    task_class: str | None, estimates: Estimates | None,
    keeps: Sequence[RunFilter | None] | None = None,
    summaries: Sequence[bool] | None = None,
    *,
    routed: bool = False,
) -> tuple[list[tuple[pl.DataFrame, int]], Estimates, float]:
    """Every run of the window under each of ``variants`` (sets of overrides), in one
    pass over the calls: pushed-down SQL, Python for the rest. ``keeps``: per variant, a
    :data:`RunFilter` of the runs it replays (None, or a None entry: every run); a run no
    variant keeps is not read. ``summaries``: per variant, True when only its per-class
    figures are wanted (a report's what-if): its rows keep :data:`SUMMARY_COLUMNS` only,
    in the order read, not sorted into one frame (at 1M runs the full rows and their
    sorted copy were ~270 MB at the report's peak; issue 11).

    A DuckDB store's runs are staged first, in one read of the spans whatever order the
    store keeps them in (:func:`analytics.whatif_sql.stage_chunks`: the spans' attributes
    parsed once, each chunk's runs and calls written to temporary Parquet files, ~250 MB
    at 1M runs, all removed when the rows are read or a read fails), then every chunk is
    replayed from its files. A run-id range read of the spans per chunk skipped the other
    chunks' span blocks only in a store kept in trace-id order: with random OTel ids each
    of the 40 chunks at 1M runs read them all (the what-if 64 s against 33 s, issue 11).
    ``estimates`` None: the staged runs are the class estimates' (every run of the
    class), the estimates added up from the staged calls, two chunks at a time, and the
    chunks replayed two at a time, each on a cursor of its own (:mod:`analytics.
    chunk_pool`; at 1M runs the estimates' own read of the spans was a fifth of the
    what-if's time in a profile, issue 11). ``estimates`` given: the staged runs are the
    window's, in chunks of :data:`CHUNK_PAIRS` (variant, run) pairs, replayed one at a
    time (the findings' bound). Another store (ClickHouse) reads the spans inline per
    run-id range chunk. ``routed``: the class estimates' runs staged by
    :func:`analytics.chunks.partition_by_chunk`'s routed writer, for a caller with ~200 MB
    to spare beyond DuckDB's bound (the whatif command, the What-if page: at 1M runs, side
    by side, load ~5, the whatif command took 81 s and 74 s of CPU against 120 s and 92 s,
    its peak RSS 784 MB against 737 MB); the findings and the report keep DuckDB's COPY
    (routed, the report peaked at 1.00 GB against 0.94 GB; issue 11).

    Returns:
        ``(per variant, in order, (rows, python_runs), the class estimates, staged_s)``:
        :data:`RUN_SCHEMA` rows oldest first (a summary variant's: :data:`SUMMARY_COLUMNS`,
        unordered), how many runs the Python counterfactual
        replayed, and the seconds staging the chunks and adding up the estimates took (0
        when ``estimates`` were given).

    Raises:
        ReplayError: an override gives invalid limits for some run.
        TypeError: ``estimates`` None on a store that is not DuckDB's.
    """
    keeps = list(keeps) if keeps is not None else [None] * len(variants)
    summary = list(summaries) if summaries is not None else [False] * len(variants)
    if not isinstance(con, duckdb.DuckDBPyConnection):
        if estimates is None:
            raise TypeError("staged what-if rows need a DuckDB store: pass the estimates")
        return (_replay_rows(con, variants, window, task_class, estimates, None, keeps,
                             summary), estimates, 0.0)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cliffwatch-whatif-") as tmp:
        if estimates is not None:
            return (_replay_rows(con, variants, window, task_class, estimates, Path(tmp),
                                 keeps, summary), estimates, 0.0)
        staged, estimates = _staged_pass(
            con, task_class, max(1, whatif_sql.CHUNK_RUNS // len(variants)), Path(tmp), routed)
        staged_s = time.perf_counter() - began
        rows = _replay_rows(con, variants, window, task_class, estimates, staged, keeps,
                            summary)
    return rows, estimates, staged_s


def _chunk_rows(
    conds: list[str], params: dict[str, Any], chunk: Bounds, source: ChunkFiles | None,
    worker: Worker,
) -> pl.DataFrame:
    return sql_run_rows(worker[0], worker[1], conds, params, chunk, source)


def _replay_rows(
    con: duckdb.DuckDBPyConnection, variants: Sequence[Overrides], window: Window,
    task_class: str | None, estimates: Estimates, staging: list[ChunkFiles] | Path | None,
    keeps: Sequence[RunFilter | None], summary: Sequence[bool],
) -> list[tuple[pl.DataFrame, int]]:
    """The rows of :func:`replay_rows`; ``staging``: the chunks staged for the class
    estimates (replayed two at a time), a directory to stage the window's runs in
    (replayed one chunk at a time), or None (not DuckDB: the spans read inline, by run-id
    range chunks)."""
    conds, params = _scope(window, task_class)
    lim, pairs = _limit_table(con, conds, params, variants, estimates, keeps)
    if lim.is_empty():
        return [(_finish([]).select(SUMMARY_COLUMNS) if brief else _finish([]), 0)
                for brief in summary]
    # every variant adds its own rows per run it keeps: chunks of about CHUNK_PAIRS
    # (variant, run) pairs keep a chunk's groups within the memory bound (the chunks
    # split the runs in scope evenly; the kept runs are spread over them)
    chunks_n = max(1, math.ceil(pairs / CHUNK_PAIRS))
    staged: list[ChunkFiles | None]
    if isinstance(staging, Path):
        # the files hold the window's runs only: no conditions left to apply
        staged = list(stage_chunks(con, conds, params, chunks_n, staging))
        conds, params = [], {}
        bounds: list[Bounds] = [(None, None)] * len(staged)
    elif staging is None:
        runs = frame(con, f"SELECT count(*) AS n FROM runs r {where(conds)}", params)["n"][0]
        bounds = chunks.chunk_bounds(con, f"SELECT r.run_id FROM runs r {where(conds)}",
                                     params, runs, max(1, math.ceil(runs / chunks_n)))
        staged = [None] * len(bounds)
    else:
        staged = list(staging)
        bounds = [(None, None)] * len(staged)
    parts: list[list[pl.DataFrame]] = [[] for _ in variants]
    to_python: list[list[str]] = [[] for _ in variants]
    columns = [list(SUMMARY_COLUMNS) if brief else list(RUN_SCHEMA) for brief in summary]
    schema = pl.Schema(RUN_SCHEMA)
    # the staged chunks (a DuckDB store) read side by side, each on a cursor of its own
    workers = chunk_cursors if isinstance(staging, list) else one_worker
    with workers(con, lim=lim, **_estimate_tables(estimates)) as pool:
        for rows in in_order(pool, [partial(_chunk_rows, conds, params, chunk, source)
                                    for chunk, source in zip(bounds, staged, strict=True)]):
            split = (rows.partition_by("variant", as_dict=True).items() if len(variants) > 1
                     else [((0,), rows)])
            del rows
            for variant, mine in split:
                index = int(variant[0])
                if mine["py"].any():
                    to_python[index] += mine.filter(pl.col("py"))["run_id"].to_list()
                    mine = mine.filter(~pl.col("py"))
                # run_id copied: polars' strings are views into DuckDB's Arrow batch, which
                # stays whole while any column of it lives (~7-11 MB a chunk at 1M runs)
                mine = mine.select(columns[index]).cast({c: schema[c] for c in columns[index]})
                parts[index].append(mine.with_columns(pl.col("run_id") + "")
                                    if "run_id" in mine.columns else mine)
    out = []
    for index, overrides in enumerate(variants):
        ids = sorted(to_python[index])
        parts[index] += (rows.select(columns[index])
                         for rows in _python_chunks(con, ids, overrides, estimates))
        if summary[index]:
            out.append((pl.concat(parts[index], rechunk=False) if parts[index]
                        else _finish([]).select(SUMMARY_COLUMNS), len(ids)))
            parts[index].clear()
        else:
            out.append((_finish(parts[index]), len(ids)))
    return out
