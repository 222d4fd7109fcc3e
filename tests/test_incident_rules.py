"""Write-side incident rules: cap breach, cost ceiling and runaway, through write_spans."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cliffwatch import settings
from cliffwatch.telemetry.incident_rules import RUNAWAY_MIN_RUNS
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

EPOCH = datetime(1970, 1, 1)


def _incidents(path: Path, kind: str | None = None) -> dict[str, dict]:
    with open_store(path, read_only=True) as con:
        rel = con.sql(
            "SELECT * FROM incidents WHERE $kind IS NULL OR kind = $kind", params={"kind": kind}
        )
        rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    return {r["run_id"]: r for r in rows}


def test_cap_breach_rejected_at_dispatch(tmp_path: Path) -> None:
    path = tmp_path / "cap.duckdb"
    records = make_run_records(
        seed=1, worker_cost_usds=[], proposed=47, max_workers=8, dispatched=0,
        status="rejected", breach="cap", policy="reject", plan_attempts=1,
    )
    assert write_spans(path, records).incidents_recorded == 1
    incident = _incidents(path)[records[0].trace_id]
    assert incident["kind"] == "cap_breach"
    assert incident["incident_id"] == f"cap_breach-{records[0].trace_id[:16]}"
    assert incident["detail"] == "plan proposed 47 workers, cap 8: rejected at dispatch"
    assert json.loads(incident["data"]) == {
        "proposed": 47, "max_workers": 8, "dispatched": 0, "policy": "reject",
        "plan_attempts": 1,
    }
    assert incident["status"] == "open"
    assert incident["task_class"] == "research"
    root = records[0]
    assert incident["detected_at"] == EPOCH + timedelta(
        microseconds=root.end_time_unix_nano // 1000
    )


@pytest.mark.parametrize(
    ("policy", "dispatched", "attempts", "detail_tail"),
    [
        ("truncate", 8, 1, "truncated to 8 at dispatch"),
        ("replan", 5, 2, "replanned (2 plan attempts), 5 dispatched"),
    ],
)
def test_cap_breach_detail_names_what_dispatch_did(
    tmp_path: Path, policy: str, dispatched: int, attempts: int, detail_tail: str
) -> None:
    path = tmp_path / "cap.duckdb"
    records = make_run_records(
        seed=2, worker_cost_usds=[0.01] * dispatched, proposed=12, max_workers=8,
        breach="cap", policy=policy, plan_attempts=attempts,
    )
    write_spans(path, records)
    incident = _incidents(path, "cap_breach")[records[0].trace_id]
    assert incident["detail"] == f"plan proposed 12 workers, cap 8: {detail_tail}"


def test_no_cap_breach_at_or_under_the_cap_or_without_one(tmp_path: Path) -> None:
    path = tmp_path / "nocap.duckdb"
    at_cap = make_run_records(seed=3, worker_cost_usds=[0.01] * 8, max_workers=8)
    no_cap = make_run_records(seed=4, worker_cost_usds=[0.01] * 30, max_workers=None)
    assert write_spans(path, at_cap + no_cap).incidents_recorded == 0
    assert _incidents(path) == {}


def test_cost_ceiling_at_estimate_and_at_spend(tmp_path: Path) -> None:
    path = tmp_path / "ceiling.duckdb"
    rejected = make_run_records(
        seed=5, worker_cost_usds=[], status="rejected", breach="ceiling",
        ceiling_usd=0.25, estimate_usd=0.42,
    )
    cancelled = make_run_records(
        seed=6, worker_cost_usds=[0.1, 0.2], plan_cost_usd=0.01, synthesis_cost_usd=0.02,
        status="cancelled", breach="ceiling", ceiling_usd=0.25, estimate_usd=0.2,
        proposed=5, workers_cancelled=3,
    )
    assert write_spans(path, rejected + cancelled).incidents_recorded == 2
    got = _incidents(path, "cost_ceiling")
    at_estimate = got[rejected[0].trace_id]
    assert at_estimate["detail"] == (
        "estimated $0.4200 over the ceiling of $0.2500: rejected before dispatch"
    )
    assert json.loads(at_estimate["data"]) == {
        "stage": "estimate", "estimate_usd": 0.42, "ceiling_usd": 0.25,
    }
    at_spend = got[cancelled[0].trace_id]
    assert at_spend["detail"] == (
        "spent $0.3300, over the ceiling of $0.2500: 3 pending workers cancelled"
    )
    data = json.loads(at_spend["data"])
    assert data["stage"] == "spend"
    assert data["spent_usd"] == pytest.approx(0.33)
    assert data["ceiling_usd"] == 0.25


def _class_costs(seed: int, n: int) -> list[float]:
    rng = np.random.default_rng(seed)
    # Log-normal body (a typical cost distribution) plus a few clear runaways.
    costs = list(rng.lognormal(mean=np.log(0.02), sigma=0.5, size=n))
    costs[3] = 0.02 * 40
    costs[11] = 0.02 * 25
    return [float(c) for c in costs]


def test_runaway_runs_are_those_over_k_times_numpy_median(tmp_path: Path) -> None:
    path = tmp_path / "runaway.duckdb"
    costs = _class_costs(seed=7, n=60)
    records = make_runs_costing(costs, task_class="research", seed=7)
    write_spans(path, records, runaway_k=10)
    median = float(np.median(costs))  # numpy's linear interpolation = quantile_cont
    run_ids = [records[i * 6].trace_id for i in range(len(costs))]
    want = {run_ids[i] for i, c in enumerate(costs) if c > 10 * median}
    got = _incidents(path, "runaway")
    assert set(got) == want
    assert len(want) >= 2  # the test would be empty otherwise
    for i in (3, 11):
        incident = got[run_ids[i]]
        data = json.loads(incident["data"])
        assert data["p50_usd"] == pytest.approx(median, rel=1e-12)
        assert data["cost_usd"] == pytest.approx(costs[i], rel=1e-12)
        assert data["class_runs"] == 60 and data["k"] == 10
        assert incident["detail"].startswith(f"run cost ${costs[i]:.4f} is ")
        assert "research P50 of $" in incident["detail"]


def test_runaway_needs_twenty_runs_in_the_class_and_is_re_evaluated(tmp_path: Path) -> None:
    path = tmp_path / "grow.duckdb"
    costs = [0.01] * (RUNAWAY_MIN_RUNS - 2) + [1.0]
    first = make_runs_costing(costs, task_class="small", seed=8)
    assert write_spans(path, first, runaway_k=10).incidents_recorded == 0
    # The 20th run of the class (an ordinary one) makes its P50 trustworthy: the earlier
    # expensive run is flagged now, though this write did not contain it.
    later = make_runs_costing([0.01], task_class="small", seed=9)
    assert write_spans(path, later, runaway_k=10).incidents_recorded == 1
    assert set(_incidents(path, "runaway")) == {first[-6].trace_id}
    # Another class with few runs is not judged by this one's P50.
    other = make_runs_costing([5.0], task_class="other", seed=10)
    assert write_spans(path, other, runaway_k=10).incidents_recorded == 0


def test_runaway_k_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.duckdb"
    costs = [0.01] * 24 + [0.05]
    records = make_runs_costing(costs, seed=11)
    monkeypatch.setenv(settings.CLIFFWATCH_RUNAWAY_K, "4")
    assert write_spans(path, records).incidents_recorded == 1
    path2 = tmp_path / "k2.duckdb"
    monkeypatch.setenv(settings.CLIFFWATCH_RUNAWAY_K, "6")
    assert write_spans(path2, records).incidents_recorded == 0


def test_triage_state_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "triage.duckdb"
    records = make_run_records(seed=12, proposed=20, max_workers=8, breach="cap")
    records += make_runs_costing([0.01] * 24 + [1.0], seed=13)
    assert write_spans(path, records).incidents_recorded == 2
    with open_store(path, read_only=False) as con:
        con.execute(
            "UPDATE incidents SET status = 'acknowledged', note = 'known planner bug', "
            "updated_at = now()"
        )
    result = write_spans(path, records)
    assert result.incidents_recorded == 0
    with open_store(path, read_only=True) as con:
        rows = con.sql("SELECT kind, status, note FROM incidents ORDER BY kind").fetchall()
    assert rows == [
        ("cap_breach", "acknowledged", "known planner bug"),
        ("runaway", "acknowledged", "known planner bug"),
    ]


def test_a_write_finding_old_and_new_incidents_records_and_alerts_only_the_new(
    tmp_path: Path,
) -> None:
    # The second write re-materialises the first run (its spans are re-sent) and finds its
    # cap breach again: only the new run's incident is recorded and gets an alert.
    path = tmp_path / "again.duckdb"
    first = make_run_records(seed=21, proposed=20, max_workers=8, breach="cap")
    assert write_spans(path, first).incidents_recorded == 1
    second = make_run_records(seed=22, proposed=30, max_workers=8, breach="cap")
    assert write_spans(path, first + second).incidents_recorded == 1
    with open_store(path, read_only=True) as con:
        per_write = con.sql(
            "SELECT list(alert_id ORDER BY alert_id) FROM alerts WHERE source = 'incident' "
            "GROUP BY write_id ORDER BY min(created_at)").fetchall()
    assert [ids for (ids,) in per_write] == [[f"cap_breach-{first[0].trace_id[:16]}"],
                                             [f"cap_breach-{second[0].trace_id[:16]}"]]
    assert set(_incidents(path)) == {first[0].trace_id, second[0].trace_id}


def test_each_rule_still_fires_alone_when_the_others_cannot(tmp_path: Path) -> None:
    # A write leaves out of its statement the rules none of its runs can fire on
    # (incident_rules.RuleWork): each rule must still fire in a write where it alone can.
    path = tmp_path / "alone.duckdb"
    costs = _class_costs(seed=8, n=60)
    write_spans(path, make_runs_costing(costs, task_class="research", seed=8), runaway_k=10)
    median = float(np.median(costs))
    before = set(_incidents(path))

    def kept_p50() -> tuple[int, int]:
        with open_store(path, read_only=True) as con:
            row = con.execute("SELECT class_runs, runs_since FROM class_p50 "
                              "WHERE task_class = 'research'").fetchall()[0]
        return int(row[0]), int(row[1])

    # Under the kept P50, no cap, no ceiling: no rule can fire, nothing is recorded.
    under = make_runs_costing([median], task_class="research", seed=9)
    assert write_spans(path, under, runaway_k=10).incidents_recorded == 0
    # Over 10 x the kept P50, which is fresh (1 run written since, of 60): runaway alone.
    over = make_runs_costing([median * 30], task_class="research", seed=10)
    assert write_spans(path, over, runaway_k=10).incidents_recorded == 1
    assert kept_p50() == (60, 2)  # judged against the kept P50, not a recomputed one
    assert _incidents(path, "runaway")[over[0].trace_id]["incident_id"] == (
        f"runaway-{over[0].trace_id[:16]}")
    # A ceiling breached at spend, cheap enough for no runaway: cost_ceiling alone.
    ceiling = make_run_records(
        seed=11, worker_cost_usds=[0.01], status="cancelled", breach="ceiling",
        ceiling_usd=0.01, estimate_usd=0.005, proposed=2, workers_cancelled=1,
    )
    assert write_spans(path, ceiling, runaway_k=10).incidents_recorded == 1
    assert _incidents(path)[ceiling[0].trace_id]["kind"] == "cost_ceiling"
    # More workers proposed than the cap: cap_breach alone.
    cap = make_run_records(seed=12, worker_cost_usds=[0.01] * 8, proposed=12, max_workers=8,
                           breach="cap", policy="truncate", plan_attempts=1)
    assert write_spans(path, cap, runaway_k=10).incidents_recorded == 1
    assert _incidents(path)[cap[0].trace_id]["kind"] == "cap_breach"
    assert kept_p50() == (60, 4)
    assert set(_incidents(path)) - before == {
        over[0].trace_id, ceiling[0].trace_id, cap[0].trace_id}
