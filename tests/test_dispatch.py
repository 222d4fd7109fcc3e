"""The dispatch layer on its own: cap policies, the pre-dispatch estimate, spend tracking."""

from __future__ import annotations

import pytest

from cliffwatch.orchestrator.dispatch import (
    Action,
    Difficulty,
    DispatchGuard,
    Limits,
    PlannedSubTask,
)
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.telemetry.conventions import Breach, CapPolicy


def plan(n: int, cost_usd: float | None = 0.01) -> list[PlannedSubTask]:
    return [
        PlannedSubTask(i, f"sub-task {i}", Difficulty.ROUTINE, "gpt-4o-mini", 500, cost_usd)
        for i in range(n)
    ]


def test_within_cap_dispatches_everything() -> None:
    verdict = DispatchGuard(Limits(max_workers=8)).check_plan(plan(8))
    assert verdict.action is Action.DISPATCH
    assert verdict.dispatch == tuple(range(8))
    assert verdict.breaches == ()
    assert verdict.breach is None


def test_reject_is_the_default_and_dispatches_nothing() -> None:
    verdict = DispatchGuard(Limits(max_workers=8)).check_plan(plan(47))
    assert verdict.action is Action.REJECT
    assert verdict.dispatch == ()
    assert verdict.breach is Breach.CAP
    assert verdict.proposed == 47
    assert "47" in verdict.reason and "8" in verdict.reason


def test_a_count_alone_is_checked_against_the_cap() -> None:
    guard = DispatchGuard(Limits(max_workers=3))
    assert guard.check_plan(3).action is Action.DISPATCH
    verdict = guard.check_plan(4)
    assert verdict.action is Action.REJECT
    assert verdict.estimate_usd is None


def test_replan_asks_once_then_rejects() -> None:
    guard = DispatchGuard(Limits(max_workers=5, policy=CapPolicy.REPLAN))
    first = guard.check_plan(plan(9))
    assert first.action is Action.REPLAN and first.dispatch == ()
    second_ok = guard.check_plan(plan(4), replanned=True)
    assert second_ok.action is Action.DISPATCH and second_ok.dispatch == (0, 1, 2, 3)
    second_over = guard.check_plan(plan(6), replanned=True)
    assert second_over.action is Action.REJECT and second_over.breach is Breach.CAP


def test_truncate_dispatches_exactly_max_workers_and_keeps_the_breach() -> None:
    verdict = DispatchGuard(Limits(max_workers=8, policy=CapPolicy.TRUNCATE)).check_plan(plan(47))
    assert verdict.action is Action.DISPATCH
    assert verdict.dispatch == tuple(range(8))
    assert verdict.breach is Breach.CAP
    # only what is dispatched is estimated
    assert verdict.estimate_usd == pytest.approx(8 * 0.01)


def test_no_cap_lets_any_plan_through() -> None:
    verdict = DispatchGuard(Limits(max_workers=None)).check_plan(plan(50))
    assert verdict.action is Action.DISPATCH and len(verdict.dispatch) == 50


def test_estimate_adds_spent_subtasks_and_reserves() -> None:
    guard = DispatchGuard(Limits(max_workers=8, ceiling_usd=1.0))
    verdict = guard.check_plan(
        plan(4, 0.05), spent_usd=0.02, reserve_usd=0.03, reserve_usd_per_subtask=0.001
    )
    assert verdict.estimate_usd == pytest.approx(0.02 + 4 * 0.05 + 0.03 + 4 * 0.001)
    assert verdict.action is Action.DISPATCH


def test_estimate_over_ceiling_rejects_before_dispatch() -> None:
    guard = DispatchGuard(Limits(max_workers=8, ceiling_usd=0.10))
    verdict = guard.check_plan(plan(4, 0.02), spent_usd=0.03)  # 0.03 + 0.08 = 0.11
    assert verdict.action is Action.REJECT
    assert verdict.breaches == (Breach.CEILING,)
    assert verdict.dispatch == ()
    at_ceiling = guard.check_plan(plan(4, 0.02), spent_usd=0.02)  # exactly 0.10 is allowed
    assert at_ceiling.action is Action.DISPATCH


def test_truncated_plan_can_still_breach_the_ceiling() -> None:
    guard = DispatchGuard(Limits(max_workers=4, ceiling_usd=0.05, policy=CapPolicy.TRUNCATE))
    verdict = guard.check_plan(plan(10, 0.02))
    assert verdict.action is Action.REJECT
    assert verdict.breaches == (Breach.CAP, Breach.CEILING)
    assert verdict.breach is Breach.CAP


def test_unpriced_subtasks_add_nothing_to_the_estimate() -> None:
    guard = DispatchGuard(Limits(ceiling_usd=0.01))
    verdict = guard.check_plan(plan(3, None))
    assert verdict.estimate_usd == 0.0
    assert verdict.action is Action.DISPATCH


def test_record_spend_reports_crossing_the_ceiling_once_over() -> None:
    guard = DispatchGuard(Limits(ceiling_usd=0.10))
    assert guard.record_spend(0.04) is False
    assert guard.record_spend(None) is False  # unpriced: unknown, adds nothing
    assert guard.record_spend(0.06) is False  # exactly at the ceiling
    assert guard.spent_usd == pytest.approx(0.10)
    assert guard.record_spend(0.001) is True
    assert guard.ceiling_crossed
    assert guard.record_spend(0.0) is True  # stays crossed


def test_without_a_ceiling_spend_never_crosses() -> None:
    guard = DispatchGuard(Limits(ceiling_usd=None))
    assert guard.record_spend(1e6) is False
    assert not guard.ceiling_crossed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_workers": 0},
        {"max_workers": -3},
        {"max_workers": 2.5},
        {"ceiling_usd": 0.0},
        {"ceiling_usd": float("nan")},
        {"policy": "shrug"},
    ],
)
def test_bad_limits_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)
