"""Traces whose root span never arrived become ``incomplete`` runs after a grace period, and
complete runs if the root arrives later (telemetry/materialise.py, issue 12)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from waits import wait_until

from cliffwatch import settings
from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans

GRACE_S = "0.3"


def _runs(path: Path, run_id: str) -> list[dict]:
    with open_store(path, read_only=True) as con:
        rel = con.sql("SELECT * FROM runs WHERE run_id = $id", params={"id": run_id})
        return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def _leaf_cost(records: list[SpanRecord]) -> float:
    return sum(r.cost_usd or 0.0 for r in records if r.is_llm_call)


def _swept(path: Path, run_id: str, seeds: list[int]) -> dict | None:
    """One unrelated write (the sweep runs on write); the run of ``run_id`` once it exists."""
    write_spans(path, make_run_records(seed=seeds.pop()))
    rows = _runs(path, run_id)
    return rows[0] if rows else None


def test_a_rootless_trace_becomes_an_incomplete_run_then_complete_when_its_root_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_INCOMPLETE_GRACE_S, GRACE_S)
    path = tmp_path / "orphan.duckdb"
    records = make_run_records(seed=41, worker_cost_usds=[0.01, 0.02, 0.04])
    root, *children = records
    assert root.parent_span_id is None
    assert write_spans(path, children).runs_materialised == 0
    seeds = list(range(500, 800))
    run = wait_until(lambda: _swept(path, root.trace_id, seeds), 30, "the incomplete run")
    assert run["status"] == "incomplete"
    assert run["cost_usd"] == pytest.approx(_leaf_cost(children), rel=1e-12)
    assert run["llm_calls"] == sum(1 for r in children if r.is_llm_call) == 5
    assert run["task_class"] == root.task_class
    assert run["max_workers"] is None and run["breach"] is None
    with open_store(path, read_only=True) as con:
        span_times = con.execute(
            "SELECT min(started_at), max(ended_at) FROM spans WHERE trace_id = ?",
            [root.trace_id],
        ).fetchall()[0]
    assert (run["started_at"], run["ended_at"]) == span_times  # of the spans that arrived
    # Counted where runs are: the class's percentiles include it.
    with open_store(path, read_only=True) as con:
        pct = cost_percentiles(con)
    assert pct.filter(pct["task_class"] == root.task_class)["runs"].item() >= 2

    # The root arrives late: the complete run replaces the incomplete one.
    assert write_spans(path, [root]).runs_materialised == 1
    (done,) = _runs(path, root.trace_id)
    assert done["status"] == "ok"
    assert done["cost_usd"] == pytest.approx(_leaf_cost(records), rel=1e-12)
    assert done["max_workers"] == 8
    with open_store(path, read_only=True) as con:
        left = con.execute(
            "SELECT count(*) FROM open_traces WHERE trace_id = ? AND rooted_at IS NULL",
            [root.trace_id],
        ).fetchall()
    assert left == [(0,)]


def test_within_the_grace_period_a_rootless_trace_is_no_run(tmp_path: Path) -> None:
    path = tmp_path / "grace.duckdb"
    root, *children = make_run_records(seed=42)
    write_spans(path, children)
    for seed in range(600, 603):
        write_spans(path, make_run_records(seed=seed))
    assert _runs(path, root.trace_id) == []  # default grace: 10 minutes of arrival


def test_spans_arriving_after_the_sweep_update_the_incomplete_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_INCOMPLETE_GRACE_S, GRACE_S)
    path = tmp_path / "more.duckdb"
    root, *children = make_run_records(seed=43, worker_cost_usds=[0.01, 0.02])
    early, late = children[:-1], children[-1:]
    write_spans(path, early)
    seeds = list(range(700, 1000))
    wait_until(lambda: _swept(path, root.trace_id, seeds), 30, "the incomplete run")
    write_spans(path, late)
    (run,) = _runs(path, root.trace_id)
    assert run["status"] == "incomplete"
    assert run["cost_usd"] == pytest.approx(_leaf_cost(children), rel=1e-12)


def test_an_older_store_s_rootless_traces_are_swept_after_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_INCOMPLETE_GRACE_S, GRACE_S)
    path = tmp_path / "v2.duckdb"
    root, *children = make_run_records(seed=44)
    write_spans(path, children)
    with open_store(path, read_only=False) as con:  # as a version-2 store left it
        con.execute("DROP TABLE open_traces")
        con.execute("DROP TABLE class_p50")
        con.execute("UPDATE cliffwatch_meta SET value = '2' WHERE key = 'schema_version'")
    seeds = list(range(800, 1100))
    run = wait_until(lambda: _swept(path, root.trace_id, seeds), 30, "the incomplete run")
    assert run["status"] == "incomplete"
    assert run["cost_usd"] == pytest.approx(_leaf_cost(children), rel=1e-12)
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute(
            "SELECT value FROM cliffwatch_meta WHERE key = 'schema_version'"
        ).fetchall() == [("3",)]
    finally:
        con.close()
