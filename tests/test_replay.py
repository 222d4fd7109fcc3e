"""Replay: a run rebuilt from its spans, and its counterfactual through the orchestrator's own
dispatch layer, checked against hand-built traces with known figures and against real
orchestrator runs; the live re-run through the orchestrator.

Why one file: the tests share two module-scoped stores (hand-built traces with known
figures from ``tests/replay_store.py``, and real orchestrator runs), built once; split, each
part would build them again, and replay and its counterfactual are checked end to end.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from replay_store import (
    MINI,
    SONNET,
    SYNTH_PRICE_IN,
    Call,
    OrchestratedStore,
    Sub,
    build_orchestrated_store,
    hand_run,
)

from cliffwatch.analytics import recorded
from cliffwatch.analytics.counterfactual import Basis, Outcome, counterfactual
from cliffwatch.analytics.errors import RunNotFoundError
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import (
    RecordedCall,
    load_recorded_run,
    load_recorded_runs,
    read_recorded_runs,
)
from cliffwatch.analytics.replay import KEEP, LimitsOverride, ReplayError, compare_runs, replay
from cliffwatch.analytics.runs import get_run, run_spans
from cliffwatch.analytics.store_access import read_store
from cliffwatch.formatting import usd
from cliffwatch.orchestrator.dispatch import Action, DispatchGuard, Limits, PlanVerdict
from cliffwatch.telemetry.conventions import Breach, CapPolicy, RunStatus
from cliffwatch.telemetry.testing import llm_call_record, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

RUNAWAY = "a" * 32
BREACH = "b" * 32
CANCELLED = "c" * 32
NOPLAN = "d" * 32
NORMAL = [f"{i:x}" * 32 for i in (1, 2, 3, 4)]
PLAN_USD = 0.01
SYNTH_USD = 0.004

# Four ordinary runs: three sub-tasks (mini, sonnet, mini) each.
NORMAL_COSTS = [(0.001, 0.010, 0.002), (0.0015, 0.012, 0.001), (0.002, 0.008, 0.003),
                (0.001, 0.011, 0.0025)]
NORMAL_PLAN = [Sub("collect", MINI), Sub("weigh", SONNET, difficulty="hard"),
               Sub("summarise", MINI)]
# The runaway: 12 sub-tasks, mini on even indices, sonnet on odd, ending out of order.
RUNAWAY_PLAN = [Sub(f"part {i}", MINI if i % 2 == 0 else SONNET) for i in range(12)]
RUNAWAY_COSTS = [0.0005 * (i + 1) if i % 2 == 0 else 0.005 + 0.0001 * i for i in range(12)]
RUNAWAY_OUT = [100 + 10 * i for i in range(12)]
RUNAWAY_END_MS = [2000 + ((i * 7) % 12) * 100 for i in range(12)]
RUNAWAY_CALLS = [Call(i, RUNAWAY_COSTS[i], RUNAWAY_OUT[i], 1000, RUNAWAY_END_MS[i])
                 for i in range(12)]
# Recorded under a 0.05 ceiling: worker 1 crosses it, worker 2 is cancelled in flight
# (billed its prompt), worker 3 never starts.
CANCELLED_PLAN = [Sub(f"step {i}", MINI) for i in range(4)]
CANCELLED_CALLS = [Call(0, 0.02, 100, 1000, 2000), Call(1, 0.025, 100, 1000, 2500),
                   Call(2, 0.001, 0, 1000, 2600, error_type="cancelled")]


def _normal_totals() -> list[float]:
    """What each ordinary run cost: the research runs that completed within a cap of 8."""
    return [PLAN_USD + sum(costs) + 0.003 + 0.001 * n for n, costs in enumerate(NORMAL_COSTS)]


def _mean_by_model() -> dict[str, float]:
    """Per model, the mean cost of every completed research sub-task in the hand store."""
    costs: dict[str, list[float]] = {MINI: [], SONNET: []}
    for run in NORMAL_COSTS:
        for sub, cost in zip(NORMAL_PLAN, run, strict=True):
            costs[sub.model].append(cost)
    for sub, cost in zip(RUNAWAY_PLAN, RUNAWAY_COSTS, strict=True):
        costs[sub.model].append(cost)
    costs[MINI] += [0.02, 0.025]  # the cancelled run's completed workers
    return {model: float(np.mean(values)) for model, values in costs.items()}


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "hand.duckdb"
    records = []
    for n, (run_id, costs) in enumerate(zip(NORMAL, NORMAL_COSTS, strict=True)):
        records += hand_run(run_id, plan=NORMAL_PLAN, max_workers=8,
                            calls=[Call(i, c) for i, c in enumerate(costs)],
                            synthesis=[(0.003 + 0.001 * n, 900)],
                            started_ns=ns_at(f"2026-11-0{n + 1}T08:00:00"))
    records += hand_run(RUNAWAY, plan=RUNAWAY_PLAN, calls=RUNAWAY_CALLS,
                        synthesis=[(SYNTH_USD, 3000)], started_ns=ns_at("2026-11-06T08:00:00"))
    records += hand_run(BREACH, plan=[Sub(f"p{i}", MINI if i % 2 else SONNET)
                                      for i in range(47)],
                        synthesis=(), status="rejected", breach="cap", max_workers=8,
                        dispatched=0, started_ns=ns_at("2026-11-07T08:00:00"))
    records += hand_run(CANCELLED, plan=CANCELLED_PLAN, calls=CANCELLED_CALLS, synthesis=(),
                        status="cancelled", breach="ceiling", ceiling_usd=0.05, dispatched=4,
                        started_ns=ns_at("2026-11-08T08:00:00"))
    start = ns_at("2026-11-09T08:00:00")
    noplan = hand_run(NOPLAN, plan=[], synthesis=(), dispatched=0, started_ns=start)[:1]
    noplan += [llm_call_record(run_id=NOPLAN, span_id=f"{'d' * 12}{n:04x}",
                               parent_span_id=noplan[0].span_id, role="call", name="chat",
                               model=MINI, cost_usd=0.003, start_ns=start + n * 10**9,
                               duration_ms=500, task_class="research") for n in (1, 2)]
    records += noplan
    write_spans(path, records)
    return path


@pytest.fixture(scope="module")
def orchestrated(tmp_path_factory: pytest.TempPathFactory) -> OrchestratedStore:
    return build_orchestrated_store(tmp_path_factory.mktemp("orch") / "orch.duckdb")


AS_RECORDED = LimitsOverride()


def _replay(path: Path, run_id: str, override: LimitsOverride = AS_RECORDED):  # noqa: ANN202
    with read_store(path) as con:
        return replay(con, run_id, override)


# --- reconstruction ----------------------------------------------------------------------------


def test_timeline_is_the_runs_spans_in_order_with_the_total(hand: Path) -> None:
    rp = _replay(hand, RUNAWAY)
    calls = rp.timeline.filter(~pl.col("kind").is_in(["dispatch", "total"]))
    expected = sorted(
        (r for r in hand_run(RUNAWAY, plan=RUNAWAY_PLAN, calls=RUNAWAY_CALLS,
                             synthesis=[(SYNTH_USD, 3000)],
                             started_ns=ns_at("2026-11-06T08:00:00")) if r.is_llm_call),
        key=lambda r: (r.start_time_unix_nano, r.span_id),
    )
    assert calls.select("kind", "name", "model", "cost_usd", "input_tokens",
                        "output_tokens").rows() == [
        (r.role, r.name, r.request_model, r.cost_usd, r.input_tokens, r.output_tokens)
        for r in expected
    ]
    assert rp.timeline["kind"].to_list()[:3] == ["plan", "dispatch", "worker"]
    assert rp.timeline.row(1, named=True)["detail"] == "dispatch 12 of 12"
    total = rp.timeline.row(-1, named=True)
    recorded_total = PLAN_USD + sum(RUNAWAY_COSTS) + SYNTH_USD
    with read_store(hand) as con:
        assert get_run(con, RUNAWAY)["cost_usd"] == pytest.approx(recorded_total, abs=1e-12)
    assert total["kind"] == "total" and total["status"] == "ok"
    assert total["cost_usd"] == pytest.approx(recorded_total, abs=1e-12)


def test_subtasks_come_from_the_plan_span_with_their_workers(hand: Path) -> None:
    subtasks = _replay(hand, RUNAWAY).subtasks
    assert subtasks["title"].to_list() == [s.title for s in RUNAWAY_PLAN]
    assert subtasks["model"].to_list() == [s.model for s in RUNAWAY_PLAN]
    assert set(subtasks["outcome"]) == {"dispatched"}
    assert subtasks["cost_usd"].to_list() == pytest.approx(RUNAWAY_COSTS)
    assert subtasks["output_tokens"].to_list() == RUNAWAY_OUT

    rejected = _replay(hand, BREACH)
    assert rejected.subtasks.height == 47 and set(rejected.subtasks["outcome"]) == {"rejected"}
    assert rejected.subtasks["model"].to_list()[:2] == [SONNET, MINI]
    assert rejected.timeline["kind"].to_list() == ["plan", "dispatch", "total"]
    assert rejected.timeline.row(1, named=True)["detail"] == (
        "plan proposed 47 sub-tasks, cap 8: rejected at dispatch"
    )


def test_a_cancelled_run_shows_what_was_cancelled(hand: Path) -> None:
    rp = _replay(hand, CANCELLED)
    assert rp.subtasks["outcome"].to_list() == ["dispatched", "dispatched", "cancelled",
                                                "cancelled"]
    assert rp.subtasks["attempts"].to_list() == [1, 1, 1, 0]
    assert rp.timeline.filter(pl.col("name") == "worker 2")["status"].to_list() == ["cancelled"]


def test_timeline_lists_workers_started_together_as_the_waterfall_does(hand: Path) -> None:
    """Twelve workers started at the same instant: sub-task order in the timeline table and
    in the run's waterfall (worker 10 after worker 9); the total row has no step."""
    timeline = _replay(hand, RUNAWAY).timeline
    workers = timeline.filter(pl.col("kind") == "worker")["name"].to_list()
    assert workers == [f"worker {i}" for i in range(12)]
    with read_store(hand) as con:
        spans = run_spans(con, RUNAWAY)
    assert spans.filter(pl.col("role") == "worker")["name"].to_list() == workers
    steps = timeline["step"].to_list()
    assert timeline["kind"].to_list()[-1] == "total" and steps[-1] is None
    assert steps[:-1] == list(range(1, timeline.height))


# --- the counterfactual under the recorded limits reproduces the record ------------------------


def test_recorded_limits_reproduce_the_hand_built_runs(hand: Path) -> None:
    for run_id in (RUNAWAY, BREACH, CANCELLED, *NORMAL):
        rp = _replay(hand, run_id)
        assert rp.reproduces_record, run_id
        assert rp.counterfactual == rp.as_recorded  # no override: the same replay
        assert rp.counterfactual.saving_usd == 0.0  # exactly: no rounding noise


def test_a_saving_within_the_usd_resolution_is_zero(hand: Path) -> None:
    """The same calls summed in another order differ in the last bits: no saving, not
    -8.67e-19 USD; a real difference, however small, stays."""
    cf = _replay(hand, NORMAL[0]).counterfactual
    noise = dataclasses.replace(cf, recorded_cost_usd=0.1 + 0.2, cost_usd=0.3)
    assert noise.recorded_cost_usd - noise.cost_usd != 0.0  # 5.55e-17
    assert noise.saving_usd == 0.0 and noise.saving_pct == 0.0
    assert usd(noise.saving_usd) == "$0.00"
    real = dataclasses.replace(cf, recorded_cost_usd=0.3 + 1e-9, cost_usd=0.3)
    assert real.saving_usd == pytest.approx(1e-9, rel=1e-6)


def test_recorded_limits_reproduce_every_orchestrated_run(orchestrated: OrchestratedStore) -> None:
    with read_store(orchestrated.path) as con:
        runs = load_recorded_runs(con)
        estimates = load_estimates(con)
    assert len(runs) == len(orchestrated.results)
    seen = set()
    for run in runs:
        cf = counterfactual(run, run.limits, estimates)
        assert (cf.status, cf.breach, cf.dispatched) == (
            run.status, run.breach, run.workers_dispatched), run.run_id
        assert cf.cost_usd == pytest.approx(run.cost_usd, abs=1e-12), run.run_id
        assert cf.saving_usd == 0.0 and cf.saving_pct in (0.0, None), run.run_id
        assert not cf.has_estimates, run.run_id
        seen.add((run.status, run.breach, run.limits.policy.value, run.plan_attempts))
    statuses = {(s, b) for s, b, _, _ in seen}
    # every branch of the runner is in the store: reject, ceiling at the estimate,
    # ceiling crossed while running, failures, truncate and replan surviving a breach
    assert {("ok", None), ("rejected", "cap"), ("rejected", "ceiling"),
            ("cancelled", "ceiling"), ("failed", None), ("ok", "cap")} <= statuses
    assert ("ok", "cap", "truncate", 1) in seen and ("ok", "cap", "replan", 2) in seen


def test_runs_read_by_id_are_the_runs_read_by_window(orchestrated: OrchestratedStore) -> None:
    # the calls and root spans come from one read of the spans, the ids a registered table
    with read_store(orchestrated.path) as con:
        every = {run.run_id: run for run in load_recorded_runs(con)}
        some = sorted(every)[::3]
        read = read_recorded_runs(con, run_ids=some)
        none = load_recorded_runs(con, run_ids=[])
    assert len(some) > 3 and none == []
    assert read.records() == sorted((every[i] for i in some),
                                    key=lambda r: (r.started_at, r.run_id))
    part = some[1::2]
    assert [r.run_id for r in read.records(part)] == [
        r.run_id for r in read.records() if r.run_id in part]
    assert any(c.plan for r in read.records() for c in r.calls)  # plans parsed
    assert any(r.task_id for r in read.records())  # root span attributes joined


def test_a_calls_columns_are_its_record_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(RecordedCall)]
    assert names[-1] == "plan" and list(recorded._CALL_COLUMNS[1:-1]) == names[:-1]


# --- counterfactuals under other limits --------------------------------------------------------


def test_a_cap_of_8_rejects_the_runaway_and_counts_its_task_redone(hand: Path) -> None:
    rp = _replay(hand, RUNAWAY, LimitsOverride.parse(8))
    cf = rp.counterfactual
    assert (cf.status, cf.breach, cf.dispatched, cf.proposed) == (
        RunStatus.REJECTED, Breach.CAP, 0, 12)
    # the task is not done: it is redone within the cap, at the mean cost of the class's
    # runs that completed within it (the four ordinary runs; not the runaway, the
    # rejected or the cancelled run, nor the run without a plan that dispatched nothing)
    redo = float(np.mean(_normal_totals()))
    recorded = PLAN_USD + sum(RUNAWAY_COSTS) + SYNTH_USD
    assert cf.not_completed and cf.redo_usd == pytest.approx(redo, abs=1e-12)
    assert cf.stage_usd("plan") == pytest.approx(PLAN_USD, abs=1e-12)
    assert cf.cost_usd == cf.task_cost_usd == pytest.approx(PLAN_USD + redo, abs=1e-12)
    assert cf.saving_usd == pytest.approx(recorded - PLAN_USD - redo, abs=1e-12)
    assert cf.saving_usd < recorded - PLAN_USD  # never everything but the planner call
    assert cf.saving_pct == pytest.approx(100 * (recorded - PLAN_USD - redo) / recorded)
    assert cf.has_estimates and cf.estimated_usd == pytest.approx(redo, abs=1e-12)
    assert cf.redo is not None and cf.redo.basis is Basis.ESTIMATED
    assert cf.redo.note == ("the task redone within 8 workers: mean cost of the 4 recorded "
                            "research runs that completed within them")
    assert {s.outcome for s in cf.subtasks} == {Outcome.REJECTED}
    assert "12" in cf.reason and "cap 8" in cf.reason
    figures = {f: (c, b) for f, _, c, b in rp.comparison().rows()}
    assert figures["task completed"] == ("no (rejected)", "dispatch layer")
    assert figures["task redone $"] == (usd(cf.redo_usd), "estimated")  # redo checked above
    assert figures["total $"][0] == usd(cf.task_cost_usd)


def test_a_task_left_undone_with_nothing_to_redo_it_from_has_an_unknown_saving(
    hand: Path,
) -> None:
    # no research run completed within a cap of 2 (the ordinary runs dispatched 3)
    rp = _replay(hand, NORMAL[0], LimitsOverride.parse(2))
    cf = rp.counterfactual
    assert cf.status is RunStatus.REJECTED and cf.not_completed
    assert cf.redo_usd is None and cf.task_cost_usd is None
    assert cf.saving_usd is None and cf.saving_pct is None
    assert cf.redo is not None and "is unknown" in cf.redo.note
    figures = {f: (c, b) for f, _, c, b in rp.comparison().rows()}
    assert figures["task redone $"][0] == figures["total $"][0] == "unknown"
    assert figures["saving"] == ("unknown", cf.redo.note)
    assert rp.to_dict()["counterfactual"]["saving_usd"] is None


def test_truncate_keeps_the_first_sub_tasks_and_adjusts_synthesis(hand: Path) -> None:
    override = LimitsOverride.parse(4, policy="truncate")
    rp = _replay(hand, RUNAWAY, override)
    cf = rp.counterfactual
    assert (cf.status, cf.breach, cf.dispatched) == (RunStatus.OK, Breach.CAP, 4)
    assert [s.outcome for s in cf.subtasks] == [Outcome.DISPATCHED] * 4 + [
        Outcome.NOT_DISPATCHED] * 8
    synthesis = SYNTH_USD + (sum(RUNAWAY_OUT[:4]) - sum(RUNAWAY_OUT)) * SYNTH_PRICE_IN
    assert cf.stage_usd("worker") == pytest.approx(sum(RUNAWAY_COSTS[:4]), abs=1e-12)
    assert cf.stage_usd("synthesis") == pytest.approx(synthesis, abs=1e-12)
    assert cf.cost_usd == pytest.approx(PLAN_USD + sum(RUNAWAY_COSTS[:4]) + synthesis,
                                        abs=1e-12)
    assert cf.estimated_usd == pytest.approx(synthesis, abs=1e-12)
    items = rp.counterfactual_items()
    assert items.filter(pl.col("stage") == "worker")["basis"].unique().to_list() == ["recorded"]
    assert items.filter(pl.col("stage") == "synthesis")["basis"].to_list() == ["estimated"]
    figures = dict(rp.comparison().select("figure", "basis").rows())
    assert figures["workers $"] == "recorded" and figures["synthesis $"] == "estimated"


def test_a_ceiling_cancels_what_has_not_finished_in_the_order_calls_ended(hand: Path) -> None:
    ceiling = 0.03  # the estimate (plan + 12 x $0.001) passes; spend crosses it
    cf = _replay(hand, RUNAWAY, LimitsOverride(ceiling_usd=ceiling)).counterfactual
    spent, ran = PLAN_USD, []
    for index in sorted(range(12), key=lambda i: RUNAWAY_END_MS[i]):
        spent += RUNAWAY_COSTS[index]
        ran.append(index)
        if spent > ceiling:
            break
    assert (cf.status, cf.breach) == (RunStatus.CANCELLED, Breach.CEILING)
    # the work left undone is redone within the ceiling: the mean of the ordinary runs
    # that cost no more than it
    redo = float(np.mean([c for c in _normal_totals() if c <= ceiling]))
    assert cf.not_completed and cf.redo_usd == pytest.approx(redo, abs=1e-12)
    assert cf.cost_usd - redo == pytest.approx(spent, abs=1e-12)
    outcomes = {s.index: s.outcome for s in cf.subtasks}
    assert sorted(i for i, o in outcomes.items() if o is Outcome.DISPATCHED) == sorted(ran)
    assert all(o is Outcome.CANCELLED for i, o in outcomes.items() if i not in ran)


def test_sub_tasks_never_run_are_estimated_from_the_class_on_the_same_model(hand: Path) -> None:
    rp = _replay(hand, BREACH, LimitsOverride.parse(0))  # no cap: all 47 would run
    cf = rp.counterfactual
    means = _mean_by_model()
    synth_mean = float(np.mean([0.003, 0.004, 0.005, 0.006, SYNTH_USD]))
    workers = [means[SONNET if i % 2 == 0 else MINI] for i in range(47)]
    assert (cf.status, cf.breach, cf.dispatched) == (RunStatus.OK, None, 47)
    assert [s.cost_usd for s in cf.subtasks] == pytest.approx(workers)
    assert {s.basis for s in cf.subtasks} == {Basis.ESTIMATED}
    assert cf.stage_usd("synthesis") == pytest.approx(synth_mean)
    assert cf.cost_usd == pytest.approx(PLAN_USD + sum(workers) + synth_mean)
    assert cf.estimated_usd == pytest.approx(sum(workers) + synth_mean)
    note = next(i.note for i in cf.items if i.subtask_index == 1)
    # mini sub-tasks: 2 per ordinary run, 6 of the runaway, 2 finished in the cancelled run
    assert note == f"mean of 16 recorded research sub-tasks on {MINI}"
    assert rp.comparison().filter(pl.col("figure") == "total $")["basis"].item() == (
        "partly estimated")


@pytest.mark.parametrize("override", [AS_RECORDED, LimitsOverride.parse(0),
                                      LimitsOverride.parse(2), LimitsOverride.parse(8),
                                      LimitsOverride.parse(ceiling_usd=0.01)])
def test_estimates_read_on_demand_give_the_figures_read_up_front(
    orchestrated: OrchestratedStore, override: LimitsOverride
) -> None:
    # The replay reads its class's estimates only when a figure needs one; every replay
    # equals the one given them up front (the same figures: two reads of the means may
    # differ in the last bits, DuckDB adding floats in another order), and the read
    # happens once at most.
    reads: list[str] = []
    read_ones = {}
    with read_store(orchestrated.path) as con:
        def read(task_class: str):  # noqa: ANN202
            reads.append(task_class)
            read_ones[task_class] = load_estimates(con, task_class)
            return read_ones[task_class]

        for run in load_recorded_runs(con):
            before = len(reads)
            lazy = replay(con, run.run_id, override, estimates=read)
            given = read_ones.pop(run.task_class, None) or load_estimates(con, run.task_class)
            eager = replay(con, run.run_id, override, estimates=given)
            assert lazy.to_dict() == eager.to_dict(), run.run_id
            assert len(reads) - before <= 1
            assert reads[before:] in ([], [run.task_class])


def test_a_replay_reads_the_estimates_only_when_it_needs_one(hand: Path) -> None:
    calls: list[str] = []
    with read_store(hand) as con:
        # one read of the class's means, given to both replays (two reads may differ in
        # the last bits: DuckDB adds the floats in another order)
        means = load_estimates(con, "research")

        def read(task_class: str):  # noqa: ANN202
            calls.append(task_class)
            return means

        as_recorded = replay(con, NORMAL[0], estimates=read)
        assert calls == []  # its own record holds every figure
        assert as_recorded.reproduces_record
        unknown = replay(con, BREACH, LimitsOverride.parse(0), estimates=read)
        assert calls == ["research"]  # 47 sub-tasks it never ran: estimated
        eager = replay(con, BREACH, LimitsOverride.parse(0), estimates=means)
    assert unknown.counterfactual.estimated_usd > 0
    assert unknown.to_dict() == eager.to_dict()


def test_a_recorded_cancellation_is_lifted_with_the_ceiling(hand: Path) -> None:
    same = _replay(hand, CANCELLED).counterfactual
    assert same.cost_usd == pytest.approx(PLAN_USD + 0.02 + 0.025 + 0.001, abs=1e-12)
    assert [s.outcome for s in same.subtasks] == [
        Outcome.DISPATCHED, Outcome.DISPATCHED, Outcome.CANCELLED, Outcome.CANCELLED]
    lifted = _replay(hand, CANCELLED, LimitsOverride.parse(ceiling_usd=0)).counterfactual
    means = _mean_by_model()
    synth_mean = float(np.mean([0.003, 0.004, 0.005, 0.006, SYNTH_USD]))
    assert (lifted.status, lifted.breach, lifted.dispatched) == (RunStatus.OK, None, 4)
    assert [s.basis for s in lifted.subtasks] == [Basis.RECORDED, Basis.RECORDED,
                                                  Basis.ESTIMATED, Basis.ESTIMATED]
    assert lifted.cost_usd == pytest.approx(
        PLAN_USD + 0.02 + 0.025 + 2 * means[MINI] + synth_mean)


def test_the_counterfactual_runs_the_orchestrators_dispatch_code(
    hand: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, float]] = []
    real = DispatchGuard.check_plan

    def spy(self: DispatchGuard, plan, **kwargs):  # noqa: ANN001, ANN202
        seen.append((len(plan), kwargs["spent_usd"]))
        return real(self, plan, **kwargs)

    monkeypatch.setattr(DispatchGuard, "check_plan", spy)
    assert _replay(hand, RUNAWAY, LimitsOverride.parse(8)).counterfactual.status == "rejected"
    assert (12, pytest.approx(PLAN_USD)) in seen

    def reject_everything(self: DispatchGuard, plan, **kwargs):  # noqa: ANN001, ANN202
        return PlanVerdict(Action.REJECT, (), (Breach.CEILING,), len(plan), 9.0, "patched")

    monkeypatch.setattr(DispatchGuard, "check_plan", reject_everything)
    cf = _replay(hand, NORMAL[0]).counterfactual
    assert (cf.status, cf.breach, cf.reason) == (RunStatus.REJECTED, Breach.CEILING, "patched")
    assert cf.stage_usd("plan", "worker", "synthesis") == pytest.approx(PLAN_USD)


def test_a_run_the_ceiling_cancels_is_counted_undone_and_redone_within_it(
    orchestrated: OrchestratedStore,
) -> None:
    # Each "tight" run made without a ceiling was made again (same seed) under a ceiling
    # just above its own estimate, and cancelled there: replaying the first under that
    # ceiling cancels it, and its task is priced redone within the ceiling.
    with read_store(orchestrated.path) as con:
        runs = {r.run_id: r for r in load_recorded_runs(con)}
        estimates = load_estimates(con)
        completed = con.sql("""
            SELECT task_class, workers_dispatched, cost_usd FROM runs WHERE status = 'ok'
            AND unpriced_calls = 0 AND workers_dispatched >= 1""").pl()
    by_seed: dict[int, list] = {}
    for run in runs.values():
        if run.seed is not None:
            by_seed.setdefault(run.seed, []).append(run)
    pairs = [(free, twin) for same in by_seed.values() for free in same for twin in same
             if free.status == "ok" and free.limits.ceiling_usd is None
             and twin.status == "cancelled" and twin.limits.ceiling_usd is not None]
    assert pairs
    for free, twin in pairs:
        cf = counterfactual(free, Limits(free.limits.max_workers, twin.limits.ceiling_usd,
                                         free.limits.policy), estimates)
        assert (cf.status, cf.breach) == (RunStatus.CANCELLED, Breach.CEILING), free.run_id
        within = completed.filter((pl.col("task_class") == free.task_class)
                                  & (pl.col("cost_usd") <= twin.limits.ceiling_usd))
        assert cf.not_completed and cf.redo is not None
        spent = sum(i.cost_usd or 0.0 for i in cf.items if i.stage != "redo")
        if within.is_empty():  # no run of the class completed under so low a ceiling
            assert cf.redo_usd is None and cf.saving_usd is None and "unknown" in cf.redo.note
            continue
        redo = float(np.mean(within["cost_usd"].to_numpy()))
        assert cf.redo_usd == pytest.approx(redo, rel=1e-12)
        assert f"mean cost of the {within.height} recorded" in cf.redo.note
        assert cf.saving_usd == pytest.approx(free.cost_usd - spent - redo, abs=1e-12)


def test_a_replan_under_another_cap_estimates_the_second_plan(
    orchestrated: OrchestratedStore,
) -> None:
    with read_store(orchestrated.path) as con:
        runs = [r for r in load_recorded_runs(con)
                if r.limits.policy is CapPolicy.REPLAN and len(r.usable_plans) == 2]
        assert runs
        run = runs[0]
        first = run.usable_plans[0]
        cap = run.limits.max_workers + 1
        assert len(first.plan) > cap
        rp = replay(con, run.run_id, LimitsOverride(max_workers=cap))
    cf = rp.counterfactual
    replans = [i for i in cf.items if i.label == "plan (replan)"]
    assert cf.plan_estimated and len(replans) == 1 and replans[0].basis is Basis.ESTIMATED
    own_replan = [c for c in run.plan_calls if c.start_ns > first.start_ns]
    assert replans[0].cost_usd == pytest.approx(sum(c.cost_usd for c in own_replan))
    assert cf.proposed == cap and cf.dispatched == cap
    assert [s.title for s in cf.subtasks] == [s.title for s in first.plan[:cap]]


def test_other_limits_check_plans_with_the_reserve_the_run_recorded(tmp_path: Path) -> None:
    from cliffwatch.orchestrator.routing import post_worker_reserve
    from cliffwatch.orchestrator.runner import orchestrate
    from cliffwatch.orchestrator.sim_provider import register_sim_provider
    from cliffwatch.orchestrator.workload import load_workload
    from cliffwatch.telemetry.tracing import configure_tracing

    workload = load_workload()
    register_sim_provider(0, 1e-4, models=sorted(workload.models()))
    research = workload["research"]
    quiet = {**research.config.provider_params, "failure_rate": 0.0, "runaway_rate": 0.0,
             "malformed_plan_rate": 0.0}
    config = research.config.replace(max_workers=None, ceiling_usd=None, provider_params=quiet)
    task = research.tasks[0]
    path = tmp_path / "reserve.duckdb"
    tracing = configure_tracing(path, batch=False)
    try:
        result = orchestrate(task, config, tracing=tracing, seed=3, time_scale=1e-4)
    finally:
        tracing.shutdown()
    reserve = post_worker_reserve(config, task.input_text)  # what the runner held back
    with read_store(path) as con:
        run = load_recorded_run(con, result.run_id)
    assert run.reserve_usd == pytest.approx(reserve.fixed_usd, rel=1e-12)
    assert run.reserve_usd_per_subtask == pytest.approx(reserve.per_subtask_usd, rel=1e-12)
    assert reserve.fixed_usd > 0 and reserve.per_subtask_usd > 0
    (plan_call,) = run.plan_calls
    plan = plan_call.plan
    assert run.workers_dispatched == len(plan) >= 3
    # other limits: truncated to fewer sub-tasks than the run dispatched
    cap = len(plan) - 2
    limits = Limits(cap, None, CapPolicy.TRUNCATE)
    expected = (plan_call.cost_usd + sum(s.estimated_cost_usd for s in plan[:cap])
                + reserve.fixed_usd + reserve.per_subtask_usd * cap)
    cf = counterfactual(run, limits)
    assert cf.verdicts[-1].estimate_usd == pytest.approx(expected, rel=1e-12)
    # a run that did not record its reserve gets it recovered from its estimate, which
    # leaves out the runner's framing tokens per sub-task: off under these limits
    older = dataclasses.replace(run, reserve_usd=None, reserve_usd_per_subtask=None)
    recovered = counterfactual(older, limits).verdicts[-1].estimate_usd
    assert recovered != pytest.approx(expected, rel=1e-9)
    # under the run's own limits both reproduce the recorded estimate
    for record in (run, older):
        own = counterfactual(record, run.limits).verdicts[-1].estimate_usd
        assert own == pytest.approx(run.estimate_usd, rel=1e-12)


def test_a_run_without_a_plan_is_left_as_recorded(hand: Path) -> None:
    rp = _replay(hand, NOPLAN, LimitsOverride.parse(1))
    assert not rp.counterfactual.replayable
    assert rp.counterfactual.cost_usd == pytest.approx(0.006)
    assert "not replayable" in rp.counterfactual.reason
    assert rp.timeline["kind"].to_list() == ["call", "call", "total"]


def test_run_ids_resolve_by_prefix_and_unknown_ones_say_so(hand: Path) -> None:
    assert _replay(hand, RUNAWAY[:8]).run.run_id == RUNAWAY
    with pytest.raises(RunNotFoundError):
        _replay(hand, "f00" * 4)


def test_replay_as_json_holds_every_part(hand: Path) -> None:
    data = _replay(hand, RUNAWAY, LimitsOverride.parse(8)).to_dict()
    assert data["run"]["run_id"] == RUNAWAY and data["reproduces_record"] is True
    assert data["counterfactual"]["status"] == "rejected"
    # plan, dispatch, 12 workers, synthesis, total
    assert len(data["timeline"]) == 16 and len(data["subtasks"]) == 12
    assert data["override"] == "cap 8, ceiling as recorded, policy as recorded"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((8, None, None), LimitsOverride(8, KEEP, KEEP)),
        (("0", "0", "truncate"), LimitsOverride(None, None, CapPolicy.TRUNCATE)),
        (("none", 0.05, None), LimitsOverride(None, 0.05, KEEP)),
        ((None, None, "REPLAN"), LimitsOverride(KEEP, KEEP, CapPolicy.REPLAN)),
    ],
)
def test_limits_override_reads_command_line_values(args: tuple, expected: LimitsOverride) -> None:
    assert LimitsOverride.parse(*args) == expected


@pytest.mark.parametrize(
    "args", [("-1", None, None), ("2.5", None, None), ("x", None, None), (None, "-3", None),
             (None, "nan", None), (None, None, "drop")],
)
def test_limits_override_refuses_bad_values(args: tuple) -> None:
    with pytest.raises(ReplayError):
        LimitsOverride.parse(*args)


# --- live re-run ---------------------------------------------------------------------------------


def test_a_live_rerun_with_the_recorded_limits_repeats_the_run(
    orchestrated: OrchestratedStore,
) -> None:
    from cliffwatch.orchestrator.rerun import rerun_live

    original = orchestrated.as_configured[0]
    with read_store(orchestrated.path) as con:
        run = load_recorded_run(con, original.run_id)
    live = rerun_live(orchestrated.path, run, run.limits, time_scale=1e-4)
    assert live.task_source == f"workload task {original.task_id}" and live.flushed
    assert live.result.run_id != original.run_id and live.seed == run.seed
    with read_store(orchestrated.path) as con:
        again = get_run(con, live.result.run_id)
        side = dict((f, (a, b)) for f, a, b in compare_runs(con, original.run_id,
                                                              live.result.run_id).rows())
    assert again["replay_of"] == original.run_id
    assert again["cost_usd"] == pytest.approx(original.cost_usd, abs=1e-12)
    assert (again["input_tokens"], again["output_tokens"], again["status"]) == (
        run.calls and sum(c.input_tokens or 0 for c in run.calls),
        sum(c.output_tokens or 0 for c in run.calls), run.status)
    assert side["cost $"][0] == side["cost $"][1]
    assert side["run id"] == (original.run_id, live.result.run_id)


def test_a_live_rerun_under_a_cap_of_one_dispatches_at_most_one(
    orchestrated: OrchestratedStore,
) -> None:
    from cliffwatch.orchestrator.rerun import rerun_live

    with read_store(orchestrated.path) as con:
        run = max((load_recorded_run(con, r.run_id) for r in orchestrated.as_configured),
                  key=lambda r: r.workers_dispatched or 0)
    assert (run.workers_dispatched or 0) > 1
    override = LimitsOverride.parse(1)
    live = rerun_live(orchestrated.path, run, override.apply(run.limits), time_scale=1e-4)
    assert live.config.max_workers == 1
    assert live.result.workers_dispatched <= 1
    assert live.result.cost_usd < run.cost_usd


def test_a_run_whose_task_cannot_be_recovered_is_refused_in_one_line(hand: Path) -> None:
    from cliffwatch.orchestrator.rerun import RerunError, recover_task
    from cliffwatch.orchestrator.workload import load_workload

    workload = load_workload()
    with read_store(hand) as con:
        run = load_recorded_run(con, RUNAWAY)
    with pytest.raises(RerunError, match=r"cannot be re-run live: .* no cliff\.task\.id"):
        recover_task(run, workload)
    gone = type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "task_id": "zz-999"})
    with pytest.raises(RerunError, match="no longer in the workload"):
        recover_task(gone, workload)
    other = type(run)(**{**{f: getattr(run, f) for f in run.__slots__},
                         "task_id": "x-1", "task_class": "nosuch"})
    with pytest.raises(RerunError, match="not in the workload"):
        recover_task(other, workload)
    captured = type(run)(**{**{f: getattr(run, f) for f in run.__slots__},
                            "task_input": "Summarise <b>this</b>"})
    task, source = recover_task(captured, None)
    assert (task.input_text, source) == ("Summarise <b>this</b>", "captured input")


# --- the command line ----------------------------------------------------------------------------


def test_cli_replay_prints_the_timeline_and_the_counterfactual(hand: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, ["replay", BREACH[:10], "--max-workers", "0",
                                      "--db", str(hand)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in ("Timeline as recorded", "Plan: as recorded, and counterfactual",
                     "plan proposed 47 sub-tasks, cap 8: rejected at dispatch",
                     "dispatch 47 of 47", "partly estimated",
                     f"estimated (worker): mean of 16 recorded research sub-tasks on {MINI}",
                     "reproduces the record exactly"):
        assert expected in out, expected


def test_cli_replay_json_is_one_object(hand: Path) -> None:
    import json

    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, ["replay", RUNAWAY, "--max-workers", "4", "--policy",
                                      "truncate", "--format", "json", "--db", str(hand)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["counterfactual"]["dispatched"] == 4
    assert data["counterfactual"]["limits"] == {"max_workers": 4, "ceiling_usd": None,
                                                "policy": "truncate"}
    assert data["run"]["started_at"] == "2026-11-06T08:00:00Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "0123456789ab"], "no run '0123456789ab'"),
        (["replay", RUNAWAY, "--max-workers", "-2"], "--max-workers"),
        (["replay", RUNAWAY, "--policy", "drop"], "--policy"),
    ],
)
def test_cli_replay_bad_input_is_one_line_and_exit_2(
    hand: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, [*args, "--db", str(hand)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_replay_live_adds_the_new_run_beside_the_original(
    orchestrated: OrchestratedStore,
) -> None:
    import json

    from typer.testing import CliRunner

    from cliffwatch.cli import app

    original = orchestrated.as_configured[1]
    result = CliRunner().invoke(app, ["replay", original.run_id, "--live", "--format", "json",
                                      "--db", str(orchestrated.path)])
    assert result.exit_code == 0, result.output
    live = json.loads(result.stdout)["live"]
    assert live["cost_usd"] == pytest.approx(original.cost_usd, abs=1e-12)
    with read_store(orchestrated.path) as con:
        assert get_run(con, live["run_id"])["replay_of"] == original.run_id
    figures = {row["figure"]: row for row in live["comparison"]}
    assert figures["cost $"]["original"] == figures["cost $"]["rerun"]


def test_analytics_reaches_the_orchestrator_only_through_its_dispatch_layer() -> None:
    # The one edge from the read side into the orchestrator (pure, no I/O); never the
    # runner (it calls models) and never streamlit.
    import ast

    root = Path(__file__).resolve().parent.parent / "analytics"
    for source in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith("streamlit"), f"{source.name} imports {name}"
                if name.startswith("cliffwatch.orchestrator"):
                    assert name == "cliffwatch.orchestrator.dispatch", (
                        f"{source.name} imports {name}")
