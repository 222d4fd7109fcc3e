"""analytics.runs: the run list (filters, window, limit), one run, one run's span tree."""

from __future__ import annotations

from datetime import datetime

import pytest

from cliffwatch.analytics.errors import RunNotFoundError, UnknownTaskClassError
from cliffwatch.analytics.runs import (
    RUN_LIST_COLUMNS,
    get_run,
    list_runs,
    resolve_run_id,
    run_spans,
    task_classes,
)
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.testing import llm_call_record, make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

CAPPED = "a" * 32
BREACHED = "b" * 32
UNCAPPED = "c" * 32


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("runs") / "store.duckdb"
    records = make_run_records(
        run_id=CAPPED, task_class="research", worker_cost_usds=[0.01, 0.02, 0.03],
        plan_cost_usd=0.004, synthesis_cost_usd=0.001, max_workers=8, ceiling_usd=0.5,
        started_at_ns=ns_at("2026-11-02T10:00:00"), call_duration_ms=500,
    )
    records += make_run_records(
        run_id=BREACHED, task_class="research", worker_cost_usds=[], plan_cost_usd=0.006,
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-03T10:00:00"),
    )
    records += make_run_records(
        run_id=UNCAPPED, task_class="extract", max_workers=None,
        started_at_ns=ns_at("2026-11-01T10:00:00"),
    )
    records += make_runs_costing([0.001] * 5, task_class="extract", seed=3,
                                 started_at_ns=ns_at("2026-10-01T00:00:00"))
    write_spans(path, records)
    return path


def test_list_runs_fields_and_order(store) -> None:
    with read_store(store) as con:
        df = list_runs(con)
    assert df.columns == list(RUN_LIST_COLUMNS)
    assert df.height == 8
    assert df["started_at"].to_list() == sorted(df["started_at"].to_list(), reverse=True)
    rows = {r["run_id"]: r for r in df.to_dicts()}
    capped = rows[CAPPED]
    assert capped["task_class"] == "research"
    assert capped["started_at"] == datetime(2026, 11, 2, 10)
    assert capped["status"] == "ok"
    assert capped["breach"] is None
    assert capped["cost_usd"] == pytest.approx(0.004 + 0.01 + 0.02 + 0.03 + 0.001, rel=1e-12)
    assert (capped["workers_proposed"], capped["workers_dispatched"]) == (3, 3)
    assert (capped["max_workers"], capped["ceiling_usd"]) == (8, 0.5)
    assert capped["duration_ms"] == pytest.approx(1500.0)
    assert rows[UNCAPPED]["max_workers"] is None  # no cap: empty, not 0
    assert rows[UNCAPPED]["ceiling_usd"] is None
    breached = rows[BREACHED]
    assert (breached["status"], breached["breach"]) == ("rejected", "cap")
    assert (breached["workers_proposed"], breached["workers_dispatched"]) == (47, 0)


def test_list_runs_filters(store) -> None:
    with read_store(store) as con:
        assert list_runs(con, task_class="research")["run_id"].to_list() == [BREACHED, CAPPED]
        assert list_runs(con, status="rejected")["run_id"].to_list() == [BREACHED]
        assert list_runs(con, limit=2)["run_id"].to_list() == [BREACHED, CAPPED]
        window = Window.parse("2026-11-01", "2026-11-03")
        assert set(list_runs(con, window)["run_id"]) == {CAPPED, UNCAPPED}
        assert list_runs(con, status="cancelled").is_empty()
        assert task_classes(con) == ["extract", "research"]
        with pytest.raises(UnknownTaskClassError, match="'nope'"):
            list_runs(con, task_class="nope")
        with pytest.raises(ValueError, match="limit"):
            list_runs(con, limit=-1)


def test_get_run_by_id_and_prefix(store) -> None:
    with read_store(store) as con:
        run = get_run(con, CAPPED)
        assert run["run_id"] == CAPPED
        assert run["planner_model"] == "sim/gpt-4o"
        assert run["llm_calls"] == 5
        assert get_run(con, CAPPED[:8].upper())["run_id"] == CAPPED
        with pytest.raises(RunNotFoundError, match="no run"):
            get_run(con, "f" * 32)
        with pytest.raises(RunNotFoundError, match="too short"):
            get_run(con, "aaa")  # too short to be taken as a prefix


def test_ambiguous_prefix(tmp_path) -> None:
    path = tmp_path / "amb.duckdb"
    write_spans(
        path,
        make_run_records(run_id="abcdef" + "0" * 26) + make_run_records(run_id="abcdef" + "1" * 26),
    )
    with read_store(path) as con, pytest.raises(RunNotFoundError, match="several"):
        resolve_run_id(con, "abcdef")


def test_run_spans_waterfall_layout(store) -> None:
    with read_store(store) as con:
        spans = run_spans(con, CAPPED)
    assert spans["role"].to_list() == ["run", "plan", "worker", "worker", "worker", "synthesis"]
    assert spans["depth"].to_list() == [0, 1, 1, 1, 1, 1]
    assert spans["offset_ms"].to_list() == [0.0, 0.0, 500.0, 500.0, 500.0, 1000.0]
    assert spans["duration_ms"].to_list() == [1500.0, 500.0, 500.0, 500.0, 500.0, 500.0]
    root = spans.row(0, named=True)
    assert root["parent_span_id"] is None and root["cost_usd"] is None
    plan = spans.row(1, named=True)
    assert plan["parent_span_id"] == root["span_id"]
    assert plan["model"] == "sim/gpt-4o"
    assert plan["cost_usd"] == pytest.approx(0.004)
    assert plan["input_tokens"] > 0 and plan["output_tokens"] > 0
    assert spans["cost_usd"].sum() == pytest.approx(0.065, rel=1e-12)


def test_run_spans_nested_depth(tmp_path) -> None:
    base = make_run_records(run_id="d" * 32, worker_cost_usds=[0.02], seed=1)
    worker = next(r for r in base if r.role == "worker")
    child = llm_call_record(
        run_id=worker.trace_id, span_id="e" * 16, parent_span_id=worker.span_id, role="call",
        name="chat", model="sim/gpt-4o-mini", cost_usd=0.02,
        start_ns=worker.start_time_unix_nano + 1_000_000, duration_ms=5, task_class="research",
    )
    path = tmp_path / "nested.duckdb"
    write_spans(path, [*base, child])
    with read_store(path) as con:
        spans = run_spans(con, "d" * 32)
    depth = dict(zip(spans["name"], spans["depth"], strict=True))
    assert depth["chat"] == 2 and depth["worker 0"] == 1
    names = spans["name"].to_list()
    assert names.index("chat") == names.index("worker 0") + 1  # start order


def test_run_spans_unknown_run(store) -> None:
    with read_store(store) as con, pytest.raises(RunNotFoundError):
        run_spans(con, "0" * 32)
