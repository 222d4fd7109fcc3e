"""The what-if's per-run rows: the records of the runs the limits decide alike, the rest
pushed down into DuckDB, with the Python counterfactual for the runs the SQL leaves to it,
in chunks.

:func:`replay_rows` is what :func:`analytics.whatif.what_if` reads: one row per run of
:data:`RUN_COLUMNS` (plus ``_truncated`` and ``_estimated``). A run whose recorded limits
and the what-if's decide alike keeps its record (:func:`decided_alike`; in SQL
:data:`analytics.whatif_sql.ALIKE_SQL`, from the ``runs`` table alone). The other runs are
computed by :data:`analytics.whatif_sql.RUN_SQL`, by chunks of runs (in DuckDB, from
:data:`STAGE_MIN_CHUNKS` chunks on, staged to Parquet files in one read of the spans,
:func:`analytics.whatif_sql.stage_chunks`); the
runs it flags (its module docstring says which) are replayed by
:func:`analytics.counterfactual.counterfactual`, the orchestrator's dispatch layer, read
:data:`PY_READ_RUNS` runs at a time (one read of the spans) and replayed
:data:`PY_CHUNK_RUNS` at a time. :func:`python_rows` replays every run in Python (the
reference the SQL is tested against). Either way memory holds a chunk's calls, never the
window's.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from polars.datatypes import DataTypeClass

from cliffwatch.analytics import chunks, whatif_sql
from cliffwatch.analytics.bulk_read import registered, release_cache
from cliffwatch.analytics.chunks import Bounds, ChunkFiles
from cliffwatch.analytics.counterfactual import Counterfactual, Outcome, counterfactual
from cliffwatch.analytics.counterfactual_result import USD_RESOLUTION
from cliffwatch.analytics.recorded import (
    Estimates,
    RecordedRun,
    read_recorded_runs,
    recorded_limits,
)
from cliffwatch.analytics.replay import LimitsOverride, limits_text
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.whatif_sql import alike_pairs, sql_run_rows, stage_chunks
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.dispatch import Limits, alike_bounds
from cliffwatch.telemetry.conventions import RunStatus

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
"""(variant, run) pairs per chunk of the pushed-down what-if's replayed runs (those no
variant decides alike): what the findings' two what-ifs were read in before their runs were
filtered (25,000 runs of two variants each), measured at 1M runs under 512 MB and,
filtered, under 256 MB (:mod:`analytics.bulk_read`)."""


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
        or abs(cf.cost_usd - run.cost_usd) > USD_RESOLUTION
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


_STATUSES = frozenset(s.value for s in RunStatus)
_NOT_COMPLETED = (RunStatus.REJECTED.value, RunStatus.CANCELLED.value)


def decided_alike(run: RecordedRun, limits: Limits) -> bool:
    """Whether ``limits`` decide ``run`` as its recorded limits did
    (:class:`orchestrator.dispatch.AlikeBounds`, from the figures the run recorded): a
    run with a planner call and a known status, its running spend never above its total
    (no call costing less than nothing). Its record then stands (:func:`record_row`);
    :data:`analytics.whatif_sql.ALIKE_SQL` is the SQL twin."""
    if not run.replayable or run.status not in _STATUSES:
        return False
    peak = (run.cost_usd if all(c.cost_usd is None or c.cost_usd >= 0 for c in run.calls)
            else None)
    return alike_bounds(run.limits, limits).admits(run.workers_proposed, run.estimate_usd, peak)


def record_row(run: RecordedRun, limits: Limits) -> dict[str, Any]:
    """The :data:`RUN_SCHEMA` row of a run ``limits`` decide alike (:func:`decided_alike`):
    the record, nothing affected; a ceiling's breach when it was rejected or cancelled (no
    cap was breached: its plans fit)."""
    ended = run.status in _NOT_COMPLETED
    return {
        "run_id": run.run_id, "task_class": run.task_class, "started_at": run.started_at,
        "limits": limits_text(limits), "status_before": run.status, "status_after": run.status,
        "breach_after": "ceiling" if ended else None, "proposed": run.workers_proposed,
        "dispatched_before": run.workers_dispatched,
        "dispatched_after": run.workers_dispatched or 0, "cost_before_usd": run.cost_usd,
        "cost_after_usd": run.cost_usd, "saving_usd": 0.0, "estimated_usd": 0.0,
        "redo_usd": 0.0, "not_completed": ended, "replayable": True, "affected": False,
        "_truncated": False, "_estimated": False,
    }


def record_rows(pairs: pl.DataFrame, lim: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """:func:`record_row`'s rows, ``columns`` of :data:`RUN_SCHEMA`, of the alike pairs of
    :data:`analytics.whatif_sql.ALIKE_SQL` (``pairs``; ``lim`` the limits table they
    matched by ``lrow``): built as columns, not per row (~940,000 at 1M runs)."""
    def by_lim(column: str) -> pl.Expr:
        return pl.col("lrow").replace_strict(lim["lrow"], lim[column]).cast(pl.Categorical())

    ended = pl.col("status").is_in(_NOT_COMPLETED)
    built = {
        "run_id": pl.col("run_id"), "task_class": by_lim("task_class"),
        "started_at": pl.col("started_at"), "limits": by_lim("limits"),
        "status_before": pl.col("status"), "status_after": pl.col("status"),
        "breach_after": pl.when(ended).then(pl.lit("ceiling")),
        "proposed": pl.col("workers_proposed"), "dispatched_before": pl.col("workers_dispatched"),
        "dispatched_after": pl.col("workers_dispatched").fill_null(0),
        "cost_before_usd": pl.col("cost_usd"), "cost_after_usd": pl.col("cost_usd"),
        "saving_usd": pl.lit(0.0), "estimated_usd": pl.lit(0.0), "redo_usd": pl.lit(0.0),
        "not_completed": ended, "replayable": pl.lit(True), "affected": pl.lit(False),
        "_truncated": pl.lit(False), "_estimated": pl.lit(False),
    }
    return pairs.select(built[c].cast(RUN_SCHEMA[c]).alias(c) for c in columns)


STAGE_MIN_CHUNKS = 5
"""The fewest chunks of replayed runs whose spans a DuckDB what-if stages
(:func:`analytics.whatif_sql.stage_chunks`); fewer are read inline, chunk by chunk. DuckDB
pushes a chunk's run keys into the scan of the spans (it reads the trace ids of every
span, the other columns of the chunk's only), so an inline chunk costs a scan of the trace
ids more than a staged one (about 0.2 s at 1M runs), while staging costs a partitioned
write and its read back whatever the chunks. At 1M runs under ``--max-workers 8`` (58,000
runs, 2 chunks) the replays took 5.0-5.3 s inline against 6.3-7.3 s staged; under
``--max-workers 2`` (40 chunks) 29 s inline against 22 s staged (issue 11)."""


def _scope(window: Window, task_class: str | None) -> tuple[list[str], dict[str, Any]]:
    conds, params = window.conditions("r.started_at")
    if task_class is not None:
        conds.append("r.task_class = $task_class")
        params["task_class"] = task_class
    return conds, params


def _python_chunks(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], overrides: Overrides,
    estimates: Estimates, alike: bool = False,
) -> Iterator[pl.DataFrame]:
    """The runs ``run_ids`` replayed by the counterfactual, in chunks; ``alike``: a run
    the limits decide as recorded keeps its record (:func:`record_row`)."""
    for begin in range(0, len(run_ids), PY_READ_RUNS):
        read = read_recorded_runs(con, run_ids=run_ids[begin : begin + PY_READ_RUNS])
        for start in range(begin, min(begin + PY_READ_RUNS, len(run_ids)), PY_CHUNK_RUNS):
            rows = []
            part = run_ids[start : min(start + PY_CHUNK_RUNS, begin + PY_READ_RUNS)]
            for run in read.records(part):
                limits = override_for(overrides, run.task_class).apply(run.limits)
                rows.append(record_row(run, limits) if alike and decided_alike(run, limits)
                            else run_row(run, counterfactual(run, limits, estimates)))
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
    *, alike: bool = True,
) -> pl.DataFrame:
    """Every run of the window (that ``keep`` keeps, when given) replayed by the Python
    counterfactual, in chunks; oldest first. The reference :func:`replay_rows` is held
    to. ``alike``: a run the limits decide as recorded keeps its record
    (:func:`decided_alike`, as :func:`replay_rows` does); False replays it too (which,
    on a record the orchestrator wrote, gives the record back: the claim the shortcut
    rests on, tests/test_whatif_alike.py)."""
    conds, params = _scope(window, task_class)
    runs = frame(con, "SELECT run_id, task_class, max_workers, ceiling_usd, policy "
                      f"FROM runs r {where(conds)} ORDER BY run_id", params)
    ids = [row[0] for row in runs.iter_rows() if keep is None or keep(*row[1:])]
    return _finish(list(_python_chunks(con, ids, overrides, estimates, alike)))


def _limit_table(
    con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any],
    variants: Sequence[Overrides], estimates: Estimates, keeps: Sequence[RunFilter | None],
) -> pl.DataFrame:
    """One row per variant and recorded (class, cap, ceiling, policy) in scope that the
    variant's filter in ``keeps`` keeps (``lrow``: its position): the limits the run is
    replayed under (the override applied by Python, so a bad one raises ReplayError as
    before), their text, the redo estimate within them and the bounds within which they
    decide a run as the recorded ones did (:func:`orchestrator.dispatch.alike_bounds`)."""
    combos = frame(con, "SELECT DISTINCT r.task_class, r.max_workers, r.ceiling_usd, r.policy "
                        f"FROM runs r {where(conds)}", params)
    rows: list[dict[str, Any]] = []
    for variant, (overrides, keep) in enumerate(zip(variants, keeps, strict=True)):
        for c in combos.iter_rows(named=True):
            if keep is not None and not keep(c["task_class"], c["max_workers"],
                                             c["ceiling_usd"], c["policy"]):
                continue
            rec = recorded_limits(c["max_workers"], c["ceiling_usd"], c["policy"])
            new = override_for(overrides, c["task_class"]).apply(rec)
            alike = alike_bounds(rec, new)
            rows.append({
                "variant": variant, "lrow": len(rows), "task_class": c["task_class"],
                "rec_cap": c["max_workers"], "rec_ceiling": c["ceiling_usd"],
                "rec_policy": c["policy"], "cap": new.max_workers, "ceiling": new.ceiling_usd,
                "policy": new.policy.value, "limits": limits_text(new),
                "rec_limits_cap": rec.max_workers,
                "redo_usd": estimates.redo(c["task_class"], new).cost_usd,
                "alike_cap": alike.max_proposed, "alike_same_ceiling": alike.same_ceiling,
                "alike_below_usd": alike.below_usd,
            })
    return pl.DataFrame(rows, schema={
        "variant": pl.Int64, "lrow": pl.Int64, "task_class": pl.String, "rec_cap": pl.Int64,
        "rec_ceiling": pl.Float64, "rec_policy": pl.String, "cap": pl.Int64,
        "ceiling": pl.Float64, "policy": pl.String, "limits": pl.String,
        "rec_limits_cap": pl.Int64, "redo_usd": pl.Float64, "alike_cap": pl.Int64,
        "alike_same_ceiling": pl.Boolean, "alike_below_usd": pl.Float64,
    })


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


def replay_rows(
    con: duckdb.DuckDBPyConnection, variants: Sequence[Overrides], window: Window,
    task_class: str | None, estimates: Estimates,
    keeps: Sequence[RunFilter | None] | None = None,
    summaries: Sequence[bool] | None = None,
) -> list[tuple[pl.DataFrame, int]]:
    """Every run of the window under each of ``variants`` (sets of overrides), in one
    pass over the calls: pushed-down SQL, Python for the rest. ``keeps``: per variant, a
    :data:`RunFilter` of the runs it replays (None, or a None entry: every run); a run no
    variant keeps is not read. ``summaries``: per variant, True when only its per-class
    figures are wanted (a report's what-if): its rows keep :data:`SUMMARY_COLUMNS` only,
    in the order read, not sorted into one frame (at 1M runs the full rows and their
    sorted copy were ~270 MB at the report's peak; issue 11).

    First every (variant, run) pair the variant's limits decide as the run's recorded
    limits did keeps its record, read from the ``runs`` table alone
    (:data:`analytics.whatif_sql.ALIKE_SQL`; :class:`orchestrator.dispatch.AlikeBounds`
    says when: the run's plans fit both caps, and the ceilings are the same or clear of
    its estimate and spend). Only the other pairs' runs are replayed: at 1M demo runs
    under ``--max-workers 8``, 6% of them (issue 11). A DuckDB store's runs to replay,
    when they make :data:`STAGE_MIN_CHUNKS` chunks or more, are staged in one read of the
    spans whatever order the store keeps them in
    (:func:`analytics.whatif_sql.stage_chunks`: the spans' attributes parsed once, each
    chunk's runs and calls written to temporary Parquet files, removed when the rows are
    read or a read fails), in chunks of :data:`CHUNK_PAIRS` (variant, run) pairs, then
    every chunk is replayed from its files (a run-id range read of the spans per chunk
    skipped the other chunks' span blocks only in a store kept in trace-id order: with
    random OTel ids, 40 chunks at 1M runs read them all, issue 11). Fewer chunks, and
    another store (ClickHouse), read the spans inline per run-id range chunk.

    Returns:
        Per variant, in order, ``(rows, python_runs)``: :data:`RUN_SCHEMA` rows oldest
        first (a summary variant's: :data:`SUMMARY_COLUMNS`, unordered) and how many runs
        the Python counterfactual replayed.

    Raises:
        ReplayError: an override gives invalid limits for some run.
    """
    keeps = list(keeps) if keeps is not None else [None] * len(variants)
    summary = list(summaries) if summaries is not None else [False] * len(variants)
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return _replay_rows(con, variants, window, task_class, estimates, None, keeps, summary)
    with tempfile.TemporaryDirectory(prefix="cliffwatch-whatif-") as tmp:
        return _replay_rows(con, variants, window, task_class, estimates, Path(tmp), keeps,
                            summary)


def _replay_rows(
    con: duckdb.DuckDBPyConnection, variants: Sequence[Overrides], window: Window,
    task_class: str | None, estimates: Estimates, staging: Path | None,
    keeps: Sequence[RunFilter | None], summary: Sequence[bool],
) -> list[tuple[pl.DataFrame, int]]:
    """The rows of :func:`replay_rows`: the (variant, run) pairs the variant's limits
    decide as recorded keep their record (:data:`analytics.whatif_sql.ALIKE_SQL`, no span
    read); the other pairs' runs are replayed. ``staging``: a directory to stage those
    runs' spans in when they make :data:`STAGE_MIN_CHUNKS` chunks or more (replayed one
    chunk at a time; fewer are read inline), or None (not DuckDB: the spans read inline,
    by run-id range chunks)."""
    conds, params = _scope(window, task_class)
    lim = _limit_table(con, conds, params, variants, estimates, keeps)
    if lim.is_empty():
        return [(_finish([]).select(SUMMARY_COLUMNS) if brief else _finish([]), 0)
                for brief in summary]
    parts: list[list[pl.DataFrame]] = [[] for _ in variants]
    columns = [list(SUMMARY_COLUMNS) if brief else list(RUN_SCHEMA) for brief in summary]
    schema = pl.Schema(RUN_SCHEMA)

    def keep(index: int, mine: pl.DataFrame) -> None:
        mine = mine.select(columns[index]).cast({c: schema[c] for c in columns[index]})
        # run_id copied: polars' strings are views into DuckDB's Arrow batch, which stays
        # whole while any column of it lives (~7-11 MB a chunk at 1M runs)
        parts[index].append(mine.with_columns(pl.col("run_id") + "")
                            if "run_id" in mine.columns else mine)

    replays = []
    variants_in = lim["variant"].unique().to_list()
    to_python: list[list[str]] = [[] for _ in variants]
    with registered(con, lim=lim, **_estimate_tables(estimates)) as names:
        for pairs in alike_pairs(con, names, conds, params):
            replays.append(pairs.filter(~pl.col("alike")).select("variant", "run_id"))
            for index in variants_in:
                # the record's rows, a batch of pairs of one variant at a time
                parts[index].append(record_rows(
                    pairs.filter(pl.col("alike") & (pl.col("variant") == index)), lim,
                    columns[index]))
        replay = pl.concat(replays) if replays else pl.DataFrame(
            schema={"variant": pl.Int64, "run_id": pl.String})
        del replays
        if replay.height:
            _replayed_rows(con, names, conds, params, len(variants_in) > 1, staging, replay,
                           keep, to_python)
    for index, overrides in enumerate(variants):
        parts[index] += (rows.select(columns[index]) for rows in _python_chunks(
            con, sorted(to_python[index]), overrides, estimates))
    # the span blocks DuckDB cached while reading, let go before the rows are gathered
    # into frames (at 1M runs ~200 MB still held after a report's three what-ifs; issue 11)
    release_cache(con)
    out = []
    for index in range(len(variants)):
        ids = to_python[index]
        if summary[index]:
            out.append((pl.concat(parts[index], rechunk=False) if parts[index]
                        else _finish([]).select(SUMMARY_COLUMNS), len(ids)))
            parts[index].clear()
        else:
            out.append((_finish(parts[index]), len(ids)))
    return out


def _replayed_rows(
    con: duckdb.DuckDBPyConnection, names: dict[str, str], conds: list[str],
    params: dict[str, Any], several: bool, staging: Path | None, replay: pl.DataFrame,
    keep: Callable[[int, pl.DataFrame], None], to_python: list[list[str]],
) -> None:
    """The pairs ``replay`` (``variant``, ``run_id``) replayed: their runs' spans staged in
    ``staging`` when they make :data:`STAGE_MIN_CHUNKS` chunks or more (else, or when
    ``staging`` is None, read inline by run-id range chunks), :data:`RUN_SQL` per
    chunk of about :data:`CHUNK_PAIRS` pairs (``names``: the limits and class estimates'
    tables registered on ``con``; ``several``: more than one variant), each variant's rows
    handed to ``keep``; the runs it leaves to Python added to ``to_python`` per
    variant."""
    # every variant adds its own rows per run it replays: chunks of about CHUNK_PAIRS
    # (variant, run) pairs keep a chunk's groups within the memory bound
    chunks_n = max(1, math.ceil(replay.height / CHUNK_PAIRS))
    with registered(con, replayed=replay.select(pl.col("run_id").unique())) as table:
        conds = [*conds, f"r.run_id IN (SELECT run_id FROM {table['replayed']})"]
        staged: list[ChunkFiles | None]
        if staging is not None and chunks_n >= STAGE_MIN_CHUNKS:
            # the files hold those runs only: no conditions left to apply
            staged = list(stage_chunks(con, conds, params, chunks_n, staging))
            conds, params = [], {}
            bounds: list[Bounds] = [(None, None)] * len(staged)
        else:
            runs = frame(con, f"SELECT count(*) AS n FROM runs r {where(conds)}",
                         params)["n"][0]
            bounds = chunks.chunk_bounds(con, f"SELECT r.run_id FROM runs r {where(conds)}",
                                         params, runs, max(1, math.ceil(runs / chunks_n)))
            staged = [None] * len(bounds)
        for chunk, source in zip(bounds, staged, strict=True):
            rows = sql_run_rows(con, names, conds, params, chunk, source)
            if several:
                # a run replayed for one variant is decided alike by another
                rows = rows.join(replay, on=["variant", "run_id"], how="semi")
            split = (rows.partition_by("variant", as_dict=True).items() if several
                     else [((int(replay["variant"][0]),), rows)])
            del rows
            for variant, mine in split:
                index = int(variant[0])
                if mine["py"].any():
                    to_python[index] += mine.filter(pl.col("py"))["run_id"].to_list()
                    mine = mine.filter(~pl.col("py"))
                keep(index, mine)
