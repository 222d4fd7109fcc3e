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
from cliffwatch.telemetry.schema import SCHEMA_VERSION
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
        ).fetchall() == [(str(SCHEMA_VERSION),)]
    finally:
        con.close()


def _orphans(path: Path) -> int:
    """Traces in the store without a root span (0 while the store is missing or busy)."""
    if not path.exists():
        return 0
    try:
        with open_store(path, read_only=True, timeout_s=1) as con:
            return int(con.execute(_ORPHANS).fetchall()[0][0])
    except Exception:  # noqa: BLE001 - the demo may be writing the schema; poll again
        return 0


_ORPHANS = """
    SELECT count(DISTINCT trace_id) FROM spans
    WHERE trace_id NOT IN (SELECT trace_id FROM spans WHERE parent_span_id IS NULL)
"""


@pytest.mark.slow
def test_a_killed_demo_leaves_traces_that_become_incomplete_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from waits import scaled

    path = tmp_path / "killed.duckdb"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           settings.CLIFFWATCH_DB: str(path)}
    command = [sys.executable, "-c", "from cliffwatch.cli import main; main()",
               "demo", "--runs", "2000", "--db", str(path)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # Kill it (SIGKILL: no exit hook, no final flush) once a run's spans are stored
        # without their root, i.e. mid-run.
        wait_until(lambda: proc.poll() is not None or _orphans(path) > 0, 180,
                   "spans of an unfinished run in the store")
        assert proc.poll() is None, "the demo finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=scaled(30))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    orphaned = _orphans(path)
    assert orphaned > 0

    monkeypatch.setenv(settings.CLIFFWATCH_INCOMPLETE_GRACE_S, GRACE_S)
    seeds = list(range(2000, 2400))

    def all_swept() -> bool:
        write_spans(path, make_run_records(seed=seeds.pop()))
        with open_store(path, read_only=True) as con:
            return con.execute(
                "SELECT count(*) FROM runs WHERE status = 'incomplete'"
            ).fetchall()[0][0] > 0 and _missing(con) == 0

    wait_until(all_swept, 60, "every orphan trace's incomplete run")
    with open_store(path, read_only=True) as con:
        rows = con.execute(f"""
            SELECT r.run_id, r.status, r.cost_usd, r.llm_calls,
                (SELECT sum(coalesce(s.cost_usd, 0)) FROM spans AS s
                 WHERE s.trace_id = r.run_id AND s.is_leaf_call),
                (SELECT count(*) FROM spans AS s
                 WHERE s.trace_id = r.run_id AND s.is_leaf_call)
            FROM runs AS r WHERE r.run_id IN ({_ORPHANS.replace("count(DISTINCT trace_id)",
                                                                "DISTINCT trace_id")})
        """).fetchall()
    with_calls = [r for r in rows if r[5] > 0]
    assert with_calls, "no orphan trace held a call"
    for run_id, status, cost_usd, calls, stored_cost, stored_calls in with_calls:
        assert status == "incomplete", run_id
        assert cost_usd == pytest.approx(stored_cost, rel=1e-12, abs=1e-15), run_id
        assert calls == stored_calls, run_id


def _missing(con: duckdb.DuckDBPyConnection) -> int:
    """Orphan traces holding an LLM call that have no run yet."""
    return int(con.execute(f"""
        SELECT count(DISTINCT trace_id) FROM spans
        WHERE is_llm_call AND trace_id IN ({_ORPHANS.replace("count(DISTINCT trace_id)",
                                                              "DISTINCT trace_id")})
            AND trace_id NOT IN (SELECT run_id FROM runs)
    """).fetchall()[0][0])


def test_a_rooted_trace_leaves_open_traces_on_a_write_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write runs open_traces' DELETE only when a row was rooted before the cutoff
    # (materialise.materialise_runs looks first): it must still run when one was.
    monkeypatch.setenv(settings.CLIFFWATCH_INCOMPLETE_GRACE_S, GRACE_S)
    path = tmp_path / "rooted.duckdb"
    run = make_run_records(seed=43, worker_cost_usds=[0.01])
    write_spans(path, run)

    def tracked() -> int:
        with open_store(path, read_only=True) as con:
            return int(con.execute("SELECT count(*) FROM open_traces WHERE trace_id = ?",
                                   [run[0].trace_id]).fetchall()[0][0])

    assert tracked() == 1  # rooted now: kept for the grace period
    seeds = list(range(900, 1200))
    wait_until(lambda: _swept(path, "none", seeds) is None and tracked() == 0, 30,
               "the rooted trace to leave open_traces")
    assert _runs(path, run[0].trace_id)[0]["status"] == "ok"
