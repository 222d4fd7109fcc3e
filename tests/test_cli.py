"""The CLI: commands over a real store (CliRunner and real processes), output formats,
and bad input as one line with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from waits import http_ok, scaled, wait_until

from cliffwatch import settings
from cliffwatch.cli import app
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

ROOT = Path(__file__).resolve().parent.parent
CLIFFWATCH_BIN = Path(sys.executable).parent / "cliffwatch"
RESEARCH = np.random.default_rng(3).lognormal(-4.0, 1.0, 40).tolist()
EXTRACT = [0.001, 0.002, 0.003, 0.004]
BREACH_RUN = "b" * 32
UNCAPPED_RUN = "c" * 32
SIX_NOV = datetime(2026, 11, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store.duckdb"
    records = make_runs_costing(RESEARCH, task_class="research", seed=1,
                                started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=3600)
    records += make_runs_costing(EXTRACT, task_class="extract", seed=2,
                                 started_at_ns=ns_at("2026-11-05T00:00:00"))
    records += make_run_records(
        run_id=BREACH_RUN, task_class="research", worker_cost_usds=[], plan_cost_usd=0.01,
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-03T00:30:00"),
    )
    records += make_run_records(run_id=UNCAPPED_RUN, task_class="extract", max_workers=None,
                                worker_cost_usds=[0.001], plan_cost_usd=0.001,
                                synthesis_cost_usd=0.001,
                                started_at_ns=ns_at("2026-11-06T00:00:00"))
    write_spans(path, records)
    return path


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _ok(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _fails_with_one_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""


# --- percentiles --------------------------------------------------------------------------


def test_percentiles_json(runner, db) -> None:
    rows = json.loads(_ok(runner, "percentiles", "--db", str(db), "--format", "json"))
    assert [r["task_class"] for r in rows] == ["extract", "research"]
    research = rows[1]
    costs = [*RESEARCH, 0.01]
    p50, p95, p99 = np.percentile(costs, [50, 95, 99])
    assert research["runs"] == len(costs)
    assert research["total_usd"] == pytest.approx(sum(costs))
    assert (research["p50_usd"], research["p95_usd"], research["p99_usd"]) == pytest.approx(
        (p50, p95, p99)
    )
    assert research["cliff_ratio"] == pytest.approx(p99 / p50)
    assert research["breaches"] == 1
    for key in ("mean_usd", "max_usd", "unpriced_calls"):
        assert key in research


def test_percentiles_window_by_and_task_class(runner, db) -> None:
    args = ["percentiles", "--db", str(db), "--format", "json"]
    rows = json.loads(_ok(runner, *args, "--since", "2026-11-05", "--until", "2026-11-06"))
    assert [(r["task_class"], r["runs"]) for r in rows] == [("extract", 4)]
    rows = json.loads(_ok(runner, *args, "--by", "model", "--task-class", "extract"))
    assert {"model", "runs", "p50_usd", "p95_usd", "p99_usd", "cliff_ratio"} <= set(rows[0])
    assert "task_class" not in rows[0]
    rows = json.loads(_ok(runner, *args, "--by", "role"))
    assert [r["role"] for r in rows] == ["plan", "synthesis", "worker"]
    assert json.loads(_ok(runner, *args, "--since", "2030-01-01")) == []


def test_percentiles_csv_parses_back(runner, db) -> None:
    out = _ok(runner, "percentiles", "--db", str(db), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["task_class"] for r in rows] == ["extract", "research"]
    assert float(rows[0]["total_usd"]) == pytest.approx(sum(EXTRACT) + 0.003)
    assert int(rows[1]["runs"]) == len(RESEARCH) + 1


def test_percentiles_table(runner, db) -> None:
    out = _ok(runner, "percentiles", "--db", str(db))
    assert "research" in out and "extract" in out and "P99 $" in out and "P99/P50" in out
    empty = _ok(runner, "percentiles", "--db", str(db), "--since", "2030-01-01")
    assert "no runs" in empty


def test_db_from_environment(runner, db) -> None:
    out = _ok(runner, "percentiles", "--format", "json", env={settings.CLIFFWATCH_DB: str(db)})
    assert len(json.loads(out)) == 2


# --- runs and incidents -------------------------------------------------------------------


def test_runs_json_fields(runner, db) -> None:
    rows = json.loads(_ok(runner, "runs", "--db", str(db), "--format", "json", "--limit", "0"))
    assert len(rows) == len(RESEARCH) + len(EXTRACT) + 2
    for key in ("run_id", "task_class", "started_at", "status", "cost_usd", "workers_proposed",
                "workers_dispatched", "max_workers", "ceiling_usd", "breach", "duration_ms"):
        assert key in rows[0]
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[UNCAPPED_RUN]["max_workers"] is None
    assert by_id[UNCAPPED_RUN]["ceiling_usd"] is None
    assert datetime.fromisoformat(by_id[UNCAPPED_RUN]["started_at"]) == SIX_NOV
    breach = by_id[BREACH_RUN]
    assert (breach["status"], breach["breach"], breach["workers_proposed"]) == (
        "rejected", "cap", 47
    )


def test_runs_filters_and_default_limit(runner, db) -> None:
    args = ["runs", "--db", str(db), "--format", "json"]
    assert len(json.loads(_ok(runner, *args))) == 46  # JSON: every run unless --limit
    assert len(json.loads(_ok(runner, *args, "--limit", "3"))) == 3
    rejected = json.loads(_ok(runner, *args, "--status", "rejected"))
    assert [r["run_id"] for r in rejected] == [BREACH_RUN]
    extract = json.loads(_ok(runner, *args, "--task-class", "extract", "--since", "2026-11-06"))
    assert [r["run_id"] for r in extract] == [UNCAPPED_RUN]


def test_runs_csv_empty_cells_for_missing(runner, db) -> None:
    out = _ok(runner, "runs", "--db", str(db), "--format", "csv", "--task-class", "extract")
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[UNCAPPED_RUN]["max_workers"] == ""
    assert datetime.fromisoformat(rows[UNCAPPED_RUN]["started_at"]) == SIX_NOV
    assert all(r["max_workers"] == "8" for k, r in rows.items() if k != UNCAPPED_RUN)


def test_runs_table(runner, db) -> None:
    out = _ok(runner, "runs", "--db", str(db), "--limit", "2")
    assert "Runs" in out and "extract" in out


def test_incidents(runner, db) -> None:
    rows = json.loads(_ok(runner, "incidents", "--db", str(db), "--format", "json"))
    for key in ("incident_id", "kind", "run_id", "task_class", "detected_at", "detail",
                "status", "data"):
        assert key in rows[0]
    cap = [r for r in rows if r["kind"] == "cap_breach"]
    assert [r["run_id"] for r in cap] == [BREACH_RUN]
    assert cap[0]["data"]["proposed"] == 47  # JSON data embedded as an object
    only = json.loads(_ok(runner, "incidents", "--db", str(db), "--format", "json",
                          "--kind", "cost_ceiling"))
    assert only == []
    table = _ok(runner, "incidents", "--db", str(db))
    assert "cap_breach" in table
    csv_rows = list(csv.DictReader(io.StringIO(
        _ok(runner, "incidents", "--db", str(db), "--format", "csv", "--kind", "cap_breach")
    )))
    assert [r["run_id"] for r in csv_rows] == [BREACH_RUN]
    assert json.loads(csv_rows[0]["data"])["max_workers"] == 8  # JSON text in CSV


def test_alerts_window_and_task_class(runner, db) -> None:
    args = ["alerts", "--db", str(db), "--format", "json"]
    every = json.loads(_ok(runner, *args))  # the cap breach's and a runaway's, of research
    assert len(every) == 2 and {r["task_class"] for r in every} == {"research"}
    since = json.loads(_ok(runner, *args, "--since", "2026-11-03"))  # on raised_at
    assert [r["run_id"] for r in since] == [BREACH_RUN]
    until = json.loads(_ok(runner, *args, "--until", "2026-11-03"))
    assert [r["alert_id"] for r in until] == [r["alert_id"] for r in every[1:]]
    assert json.loads(_ok(runner, *args, "--task-class", "research")) == every
    assert json.loads(_ok(runner, *args, "--task-class", "extract")) == []
    table = _ok(runner, "alerts", "--db", str(db), "--task-class", "extract")
    assert "no alerts of class extract in the store" in table


# --- bad input: one line, exit 2, no traceback ----------------------------------------------


def test_missing_db(runner, tmp_path) -> None:
    missing = tmp_path / "nope.duckdb"
    for command in ("percentiles", "runs", "incidents", "dashboard"):
        result = runner.invoke(app, [command, "--db", str(missing)])
        _fails_with_one_line(result, str(missing), "does not exist")


def test_garbage_file(runner, tmp_path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"this is not a database\n" * 100)
    _fails_with_one_line(runner.invoke(app, ["runs", "--db", str(garbage)]),
                         "not a cliffwatch store")


def test_foreign_duckdb_file(runner, tmp_path) -> None:
    import duckdb

    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    _fails_with_one_line(runner.invoke(app, ["percentiles", "--db", str(foreign)]),
                         "not a cliffwatch store")


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_bad_date(runner, db, option) -> None:
    result = runner.invoke(app, ["percentiles", "--db", str(db), option, "2026-13-45"])
    _fails_with_one_line(result, "2026-13-45")


def test_empty_window(runner, db) -> None:
    result = runner.invoke(app, ["runs", "--db", str(db), "--since", "2026-11-05",
                                 "--until", "2026-11-01"])
    _fails_with_one_line(result, "empty window")


@pytest.mark.parametrize("command", ["percentiles", "runs", "incidents", "alerts"])
def test_unknown_task_class(runner, db, command) -> None:
    result = runner.invoke(app, [command, "--db", str(db), "--task-class", "nope"])
    _fails_with_one_line(result, "unknown task class 'nope'", "extract, research")


def test_alerts_retry_refuses_an_unknown_task_class_before_sending(runner, db) -> None:
    result = runner.invoke(app, ["alerts", "--retry", "--db", str(db), "--task-class", "nope"])
    _fails_with_one_line(result, "unknown task class 'nope'")  # no "retried ..." line


@pytest.mark.parametrize(
    "args",
    [
        ["percentiles", "--format", "xml"],
        ["runs", "--format", "yaml"],
        ["percentiles", "--by", "colour"],
        ["runs", "--status", "weird"],
        ["runs", "--limit", "-1"],
        ["incidents", "--kind", "meltdown"],
        ["incidents", "--status", "weird"],
        ["incidents", "--limit", "-1"],
        ["alerts", "--since", "2026-13-45"],
        ["percentiles", "--no-such-option"],
        ["no-such-command"],
    ],
)
def test_usage_errors(runner, db, args) -> None:
    _fails_with_one_line(runner.invoke(app, [*args, "--db", str(db)]))


def test_bad_setting(runner, db) -> None:
    result = runner.invoke(app, ["runs", "--db", str(db)],
                           env={settings.CLIFFWATCH_LOCK_TIMEOUT_S: "soon"})
    _fails_with_one_line(result, settings.CLIFFWATCH_LOCK_TIMEOUT_S)


def test_every_command_has_help(runner) -> None:
    out = _ok(runner, "--help")
    for command in ("demo", "run", "percentiles", "runs", "incidents", "dashboard"):
        assert command in out
        assert _ok(runner, command, "--help")


# --- real processes ------------------------------------------------------------------------


def _cliffwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLIFFWATCH_BIN), *args], capture_output=True, text=True, timeout=scaled(120),
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})},
    )


@pytest.mark.slow
def test_console_script_percentiles_json(db) -> None:
    proc = _cliffwatch("percentiles", "--format", "json", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["task_class"] for r in rows] == ["extract", "research"]
    assert rows[1]["p99_usd"] == pytest.approx(np.percentile([*RESEARCH, 0.01], 99))


@pytest.mark.slow
def test_console_script_bad_input(tmp_path) -> None:
    proc = _cliffwatch("runs", "--db", str(tmp_path / "missing.duckdb"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    missing = tmp_path / "missing.duckdb"
    assert proc.stderr.strip().splitlines() == [
        f"error: store {missing} does not exist: fill one with 'cliffwatch demo --db "
        f"{missing}', or point --db or $CLIFFWATCH_DB at your store"
    ]


# --- run and demo (the offline simulated provider) -------------------------------------------


def _store_runs(path: Path) -> list[dict]:
    from cliffwatch.analytics.runs import list_runs
    from cliffwatch.analytics.store_access import read_store

    with read_store(path) as con:
        return list_runs(con).to_dicts()


def test_run_completes_and_records_the_run(runner, tmp_path) -> None:
    path = tmp_path / "run.duckdb"
    task = tmp_path / "task.txt"
    task.write_text("Compare the three main approaches to carbon capture and their costs.")
    result = runner.invoke(app, ["run", "--task-class", "research", "--task-file", str(task),
                                 "--max-workers", "5", "--db", str(path)])
    assert result.exit_code == 0, result.output
    [row] = _store_runs(path)
    assert row["run_id"] in result.stdout
    assert (row["task_class"], row["status"], row["max_workers"]) == ("research", "ok", 5)
    assert row["cost_usd"] > 0
    assert row["workers_dispatched"] >= 1


def test_run_breach_exits_1_with_one_line(runner, tmp_path) -> None:
    path = tmp_path / "breach.duckdb"
    result = runner.invoke(app, [
        "run", "--task-class", "extract_format", "--prompt", "Extract the price: it costs $12.",
        "--ceiling-usd", "0.000001", "--max-workers", "0", "--policy", "reject",
        "--db", str(path),
    ])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: run ") and "rejected" in line and "ceiling" in line
    [row] = _store_runs(path)  # the rejected run is recorded all the same
    assert (row["status"], row["breach"], row["max_workers"]) == ("rejected", "ceiling", None)
    assert row["ceiling_usd"] == pytest.approx(0.000001)
    assert row["policy"] == "reject"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task-class", "nope", "--prompt", "x"], "unknown task class 'nope' (known: "),
        (["--task-class", "research"], "exactly one of --prompt or --task-file"),
        (["--task-class", "research", "--prompt", "x", "--task-file", "t.txt"], "exactly one"),
        (["--task-class", "research", "--task-file", "/no/such/file"], "cannot read"),
        (["--task-class", "research", "--prompt", "  "], "empty"),
        (["--task-class", "research", "--prompt", "x", "--policy", "ignore"], "--policy"),
        (["--task-class", "research", "--prompt", "x", "--max-workers", "-2"], "--max-workers"),
        (["--prompt", "x"], "--task-class"),
    ],
)
def test_run_bad_input(runner, tmp_path, args, needle) -> None:
    path = tmp_path / "bad.duckdb"
    _fails_with_one_line(runner.invoke(app, ["run", *args, "--db", str(path)]), needle)
    assert not path.exists()  # nothing ran


def test_demo_fills_a_store(runner, tmp_path) -> None:
    path = tmp_path / "demo.duckdb"
    result = runner.invoke(app, ["demo", "--runs", "12", "--days", "2", "--seed", "5",
                                 "--db", str(path)])
    assert result.exit_code == 0, result.output
    assert "12/12" in result.stderr  # the progress bar reached the end
    assert "cliffwatch percentiles" in result.stdout and "cliffwatch dashboard" in result.stdout
    # the summary says each unit once, by its value: "total cost  $0.21", "elapsed  3.1 s"
    assert re.search(r"total cost +\$[0-9.]+ ", result.stdout), result.stdout
    assert re.search(r"elapsed +[0-9.]+ s ", result.stdout), result.stdout
    assert "cost usd" not in result.stdout and "elapsed s" not in result.stdout
    rows = _store_runs(path)
    assert len(rows) == 12
    assert {r["max_workers"] is None for r in rows} == {True, False}  # before and after the cap


def test_demo_leaves_a_store_with_runs_alone_unless_fresh_or_append(runner, tmp_path) -> None:
    path = tmp_path / "again.duckdb"
    args = ["demo", "--runs", "6", "--days", "2", "--seed", "5", "--db", str(path)]
    assert runner.invoke(app, args).exit_code == 0
    first = {r["run_id"] for r in _store_runs(path)}
    _fails_with_one_line(runner.invoke(app, args), "--fresh replaces it")
    assert {r["run_id"] for r in _store_runs(path)} == first  # untouched
    _fails_with_one_line(runner.invoke(app, [*args, "--fresh", "--append"]), "exclude")
    assert runner.invoke(app, [*args, "--append"]).exit_code == 0
    appended = {r["run_id"] for r in _store_runs(path)}
    assert len(appended) == 12 and first < appended
    assert runner.invoke(app, [*args, "--fresh"]).exit_code == 0
    fresh = {r["run_id"] for r in _store_runs(path)}
    assert len(fresh) == 6 and not fresh & appended


def test_demo_bad_input(runner, tmp_path) -> None:
    _fails_with_one_line(runner.invoke(app, ["demo", "--runs", "0", "--db",
                                             str(tmp_path / "d.duckdb")]), "--runs")


@pytest.mark.parametrize(
    "command", [["demo"], ["run", "--task-class", "research", "--prompt", "x"]]
)
def test_writers_refuse_a_foreign_file_before_working(runner, tmp_path, command) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_text("my notes, not a store\n")
    _fails_with_one_line(runner.invoke(app, [*command, "--db", str(garbage)]),
                         "not a cliffwatch store")
    assert garbage.read_text() == "my notes, not a store\n"


@pytest.mark.slow
def test_dashboard_serves_the_store(db) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(CLIFFWATCH_BIN), "dashboard", "--db", str(db), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    try:
        assert proc.stdout is not None
        assert f"http://localhost:{port}" in proc.stdout.readline()

        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return http_ok(f"http://127.0.0.1:{port}/_stcore/health", b"ok")

        wait_until(healthy, 120, "the dashboard's /_stcore/health", interval_s=0.3)
    finally:
        os.killpg(proc.pid, 15)
        proc.communicate(timeout=scaled(30))  # reads and closes the pipes
