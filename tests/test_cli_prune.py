"""``cliffwatch prune --before``: a dry run deletes nothing; ``--yes`` deletes the old runs
with their spans, incidents (triaged too), alerts and deliveries, leaves the rest alone
(the kept runs' percentiles equal numpy's over their costs), and a bad date is one line."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.triage import acknowledge
from cliffwatch.telemetry.write_pipeline import write_spans

CUTOFF = "2026-11-03"
CUTOFF_AT = datetime(2026, 11, 3)
RESEARCH = np.random.default_rng(11).lognormal(-4.0, 1.0, 60).tolist()  # hourly from Nov 1
EXTRACT = np.random.default_rng(12).lognormal(-6.0, 0.5, 20).tolist()  # 6-hourly from Nov 2
OLD_BREACH, NEW_BREACH, ROOTLESS = "a" * 32, "b" * 32, "c" * 32


def _roots(records) -> dict[str, int]:
    return {r.trace_id: r.start_time_unix_nano for r in records if r.parent_span_id is None}


@pytest.fixture()
def store(tmp_path: Path) -> dict:
    path = tmp_path / "store.duckdb"
    research = make_runs_costing(RESEARCH, task_class="research", seed=1,
                                 started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=3600)
    extract = make_runs_costing(EXTRACT, task_class="extract", seed=2,
                                started_at_ns=ns_at("2026-11-02T00:00:00"), interval_s=6 * 3600)
    breaches = []
    for run_id, at in ((OLD_BREACH, "2026-11-01T05:30:00"), (NEW_BREACH, "2026-11-05T05:30:00")):
        breaches += make_run_records(run_id=run_id, task_class="research", worker_cost_usds=[],
                                     plan_cost_usd=0.01, proposed=47, max_workers=8,
                                     status="rejected", breach="cap", started_at_ns=ns_at(at))
    rootless = [r for r in make_run_records(run_id=ROOTLESS, started_at_ns=ns_at(
        "2026-11-02T10:00:00")) if r.parent_span_id is not None]  # its root never arrived
    write_spans(path, research + extract + breaches + rootless)
    with duckdb.connect(str(path)) as con:
        old_incident = con.execute("SELECT incident_id FROM incidents WHERE run_id = ?",
                                   [OLD_BREACH]).fetchall()[0][0]
        con.execute(  # one outbox row per alert, as a configured webhook would have
            "INSERT INTO alert_deliveries (alert_id, webhook_id, webhook, status, attempts, "
            "updated_at) SELECT alert_id, 'w1', 'https://hooks.example/…', 'pending', 0, "
            "now() FROM alerts")
    acknowledge(path, old_incident, note="looked at it")
    roots = {**_roots(research), **_roots(extract), **_roots(breaches)}
    kept = {rid for rid, ns in roots.items() if ns >= ns_at("2026-11-03T00:00:00")}
    return {"path": path, "roots": roots, "kept": kept}


def _counts(path: Path) -> dict[str, int]:
    with open_store(path, read_only=True) as con:  # retried while a writer lets go
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]  # noqa: S608
                for t in ("runs", "spans", "incidents", "alerts", "alert_deliveries")}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def test_dry_run_says_what_would_go_and_deletes_nothing(store) -> None:
    path = store["path"]
    before, size = _counts(path), path.stat().st_size
    result = _invoke("prune", "--before", CUTOFF, "--db", str(path))
    assert result.exit_code == 0, result.output
    gone = len(store["roots"]) - len(store["kept"])
    spend = sum(c for c, i in zip(RESEARCH, range(60), strict=True) if i < 48) + sum(
        EXTRACT[:4]) + 0.01
    out = result.stdout
    assert "dry run: nothing deleted" in out and "--yes" in out
    assert f"runs                 {gone} ({len(store['kept'])} started later are kept)" in out
    assert f"${spend:,.2f}" in out
    assert "2026-11-01 00:00 to 2026-11-02 23:00 UTC" in out
    assert "1 acknowledged or resolved" in out
    assert _counts(path) == before and path.stat().st_size == size


def test_yes_deletes_old_runs_and_all_that_hangs_off_them(store) -> None:
    path = store["path"]
    before = _counts(path)
    result = _invoke("prune", "--before", CUTOFF, "--yes", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert "Deleted, runs started before 2026-11-03 00:00 UTC" in result.stdout
    assert "MiB before" in result.stdout
    after = _counts(path)
    with open_store(path, read_only=True) as con:  # retried while a writer lets go
        runs = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        traces = {r[0] for r in con.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
        incident_runs = {r[0] for r in con.execute("SELECT run_id FROM incidents").fetchall()}
        old_spans = con.execute("SELECT count(*) FROM spans WHERE started_at < ?",
                                [CUTOFF_AT]).fetchall()[0][0]
        orphans = con.execute(
            "SELECT count(*) FROM alert_deliveries WHERE alert_id NOT IN "
            "(SELECT alert_id FROM alerts)").fetchall()[0][0]
        kept_alert_runs = {r[0] for r in con.execute(
            "SELECT run_id FROM alerts WHERE run_id IS NOT NULL").fetchall()}
    assert runs == store["kept"] and traces == store["kept"]  # the rootless trace went too
    assert old_spans == 0 and orphans == 0
    assert incident_runs == {NEW_BREACH} and kept_alert_runs <= {NEW_BREACH}
    assert after["runs"] == len(store["kept"]) < before["runs"]
    assert 0 < after["alert_deliveries"] < before["alert_deliveries"]
    # a second prune finds nothing
    again = _invoke("prune", "--before", CUTOFF, "--yes", "--db", str(path))
    assert again.exit_code == 0 and "nothing to prune" in again.stdout


def test_kept_runs_percentiles_are_unchanged(store) -> None:
    path = store["path"]
    window = ["--since", CUTOFF, "--format", "json", "--db", str(path)]
    before = json.loads(_invoke("percentiles", *window).stdout)
    assert _invoke("prune", "--before", CUTOFF, "--yes", "--db", str(path)).exit_code == 0
    after = json.loads(_invoke("percentiles", "--format", "json", "--db", str(path)).stdout)
    assert after == before
    research = {row["task_class"]: row for row in after}["research"]
    kept_costs = [c for i, c in enumerate(RESEARCH) if i >= 48] + [0.01]  # + the new breach
    for q in (50, 95, 99):
        assert research[f"p{q}_usd"] == pytest.approx(np.percentile(kept_costs, q), rel=1e-9)
    assert research["runs"] == len(kept_costs)


@pytest.mark.parametrize("bad", ["2026-13-45", "yesterday-ish", ""])
def test_bad_date_is_one_line(store, bad) -> None:
    result = _invoke("prune", "--before", bad, "--yes", "--db", str(store["path"]))
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --before: cannot read"), lines
    assert _counts(store["path"])["runs"] == len(store["roots"])


def test_compact_shrinks_the_file_and_keeps_a_working_store(store) -> None:
    path = store["path"]
    window = ["--since", CUTOFF, "--format", "json", "--db", str(path)]
    before = json.loads(_invoke("percentiles", *window).stdout)
    size = path.stat().st_size
    refused = _invoke("prune", "--before", CUTOFF, "--compact", "--db", str(path))
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    result = _invoke("prune", "--before", CUTOFF, "--yes", "--compact", "--db", str(path))
    assert result.exit_code == 0, result.output
    assert "after compacting" in result.stdout
    assert path.stat().st_size < size
    assert not list(path.parent.glob("*.compact*"))
    assert json.loads(_invoke("percentiles", "--format", "json", "--db", str(path)).stdout) \
        == before
    with open_store(path, read_only=True) as con:  # retried while a writer lets go
        indexes = {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()")
                   .fetchall()}
        keys = {r[0] for r in con.execute("SELECT table_name FROM duckdb_constraints() "
                                          "WHERE constraint_type = 'PRIMARY KEY'").fetchall()}
        seen = con.execute("SELECT count(*) FROM seen_traces").fetchall()[0][0]
    assert {"runs_class_time", "incidents_run"} <= indexes
    assert {"incidents", "alerts", "alert_deliveries"} <= keys
    assert "spans" not in keys and seen > 0  # spans are kept unique by seen_traces (schema 4)
    assert "runs" not in keys  # runs are replaced by delete + insert (schema 6)
    # still a cliffwatch store that takes new runs
    write_spans(path, make_runs_costing([0.5], task_class="research", seed=99,
                                        started_at_ns=ns_at("2026-11-07T00:00:00")))
    assert _counts(path)["runs"] == len(store["kept"]) + 1
