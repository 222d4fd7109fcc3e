"""Runs whose recorded limits and a what-if's limits decide alike keep their record.

orchestrator/dispatch.py ``alike_bounds`` says when two sets of limits meet a run with the
same verdicts (its plans fit both caps; the ceilings equal, or clear of its estimate and
spend); analytics/whatif_rows.py ``decided_alike`` applies it to a record and
analytics/whatif_sql.py ``ALIKE_SQL`` is its SQL twin. The what-if then keeps the record
instead of replaying it. Held here: the bounds themselves; the twins agree run by run;
and the claim the shortcut rests on: on records the orchestrator wrote (every branch of
the runner, and a demo), the full replay of every run decided alike gives the record
back, so keeping the record changes no figure.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from replay_store import build_orchestrated_store
from test_whatif_sql import OVERRIDES, _differences, _random_run

from cliffwatch.analytics.bulk_read import registered
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import read_recorded_runs
from cliffwatch.analytics.whatif import what_ifs
from cliffwatch.analytics.whatif_rows import (
    _limit_table,
    _scope,
    decided_alike,
    python_rows,
    record_row,
    record_rows,
)
from cliffwatch.analytics.whatif_sql import alike_pairs
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.orchestrator.dispatch import ALIKE_MARGIN, AlikeBounds, Limits, alike_bounds
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans


def test_the_bounds_of_two_limits() -> None:
    capped = Limits(max_workers=6, ceiling_usd=0.05, policy=CapPolicy.REPLAN)
    # both caps bound the plan; the policy is never read when no cap is breached
    assert alike_bounds(capped, Limits(8, 0.05, CapPolicy.TRUNCATE)) == AlikeBounds(6, True, None)
    assert alike_bounds(Limits(None, None), Limits(None, None)) == AlikeBounds(None, True, None)
    # a ceiling only one side has: the estimate and spend must stay clear of it
    bounds = alike_bounds(Limits(8, None), Limits(None, 0.1))
    assert bounds.max_proposed == 8 and not bounds.same_ceiling
    assert bounds.below_usd == pytest.approx(0.1 * (1 - ALIKE_MARGIN))
    # two different ceilings: the lower one
    assert alike_bounds(Limits(8, 0.2), Limits(8, 0.1)).below_usd == \
        pytest.approx(0.1 * (1 - ALIKE_MARGIN))


@pytest.mark.parametrize(("proposed", "estimate", "peak", "alike"), [
    (6, None, None, True),  # within both caps, same ceiling: nothing else read
    (7, 0.0, 0.0, False),  # over the lower cap
    (None, 0.0, 0.0, False),  # no usable plan: nothing to compare
    (0, None, None, True),
])
def test_a_run_within_both_caps_under_the_same_ceiling(
    proposed: int | None, estimate: float | None, peak: float | None, alike: bool
) -> None:
    bounds = alike_bounds(Limits(6, 0.05), Limits(8, 0.05))
    assert bounds.admits(proposed, estimate, peak) is alike


@pytest.mark.parametrize(("estimate", "peak", "alike"), [
    (0.05, 0.05, True),
    (0.1 * (1 - ALIKE_MARGIN), 0.05, False),  # the estimate within the margin
    (0.05, 0.1 * (1 - ALIKE_MARGIN), False),  # so is the spend
    (0.2, 0.05, False),  # the estimate over the new ceiling: rejected there
    (0.05, 0.2, False),  # the spend over it: cancelled there
    (None, 0.05, False),  # no estimate recorded
    (0.05, None, False),  # the spend's peak unknown (a call cost less than nothing)
])
def test_a_new_ceiling_must_be_clear_of_the_estimate_and_the_spend(
    estimate: float | None, peak: float | None, alike: bool
) -> None:
    assert alike_bounds(Limits(8, None), Limits(8, 0.1)).admits(4, estimate, peak) is alike


def _random_store(path: Path, seed: int) -> Path:
    rng = random.Random(seed)
    write_spans(path, [r for n in range(150) for r in _random_run(rng, n)])
    return path


def _sql_alike(path: Path) -> dict[tuple[int, str], bool]:
    with open_store(path, read_only=True) as con:
        conds, params = _scope(Window(), None)
        lim = _limit_table(con, conds, params, OVERRIDES, load_estimates(con),
                              [None] * len(OVERRIDES))
        with registered(con, lim=lim) as names:
            pairs = pl.concat(alike_pairs(con, names, conds, params))
    return {(v, r): a for v, r, a in pairs.select("variant", "run_id", "alike").iter_rows()}


@pytest.mark.parametrize("seed", [1, 2])
def test_the_sql_and_python_twins_decide_every_pair_alike(tmp_path: Path, seed: int) -> None:
    path = _random_store(tmp_path / "random.duckdb", seed)
    sql = _sql_alike(path)
    with open_store(path, read_only=True) as con:
        runs = read_recorded_runs(con).records()
    py = {(v, run.run_id): decided_alike(run, o.apply(run.limits))
          for v, o in enumerate(OVERRIDES) for run in runs}
    assert sql == py
    assert 0 < sum(py.values()) < len(py)  # both kinds of pair are there


def test_the_records_rows_built_as_columns_are_record_row(tmp_path: Path) -> None:
    path = _random_store(tmp_path / "random.duckdb", 3)
    with open_store(path, read_only=True) as con:
        conds, params = _scope(Window(), None)
        lim = _limit_table(con, conds, params, OVERRIDES[:1], load_estimates(con), [None])
        with registered(con, lim=lim) as names:
            pairs = pl.concat(alike_pairs(con, names, conds, params)).filter(pl.col("alike"))
        runs = {run.run_id: run for run in read_recorded_runs(con).records()}
    built = record_rows(pairs, lim, list(record_row(next(iter(runs.values())), Limits())))
    assert built.height > 10
    for row in built.iter_rows(named=True):
        run = runs[row["run_id"]]
        want = record_row(run, OVERRIDES[0].apply(run.limits))
        assert row == want


def _full_replay_keeps_the_record(path: Path) -> None:
    with open_store(path, read_only=True) as con:
        estimates = load_estimates(con)
        for override in OVERRIDES:
            kept = python_rows(con, override, Window(), None, estimates)
            replayed = python_rows(con, override, Window(), None, estimates, alike=False)
            assert _differences(kept, replayed) == [], override.describe()


def test_the_full_replay_of_an_orchestrated_run_decided_alike_is_its_record(
    tmp_path: Path,
) -> None:
    store = build_orchestrated_store(tmp_path / "orch.duckdb")
    _full_replay_keeps_the_record(store.path)


def test_the_full_replay_of_a_demo_run_decided_alike_is_its_record(tmp_path: Path) -> None:
    path = tmp_path / "demo.duckdb"
    run_demo(path, runs=120, days=10, seed=11)
    _full_replay_keeps_the_record(path)


def test_the_pairs_read_in_small_batches_give_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _random_store(tmp_path / "random.duckdb", 4)
    with open_store(path, read_only=True) as con:
        whole = what_ifs(con, OVERRIDES[:3])
        monkeypatch.setattr("cliffwatch.analytics.whatif_sql.ALIKE_BATCH_ROWS", 7)
        batched = what_ifs(con, OVERRIDES[:3])
    for one, other in zip(whole, batched, strict=True):
        assert one.runs.height == 150
        assert _differences(one.runs, other.runs) == []
