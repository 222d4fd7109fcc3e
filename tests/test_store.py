"""The store: opening (errors, lock retry), span inserts, run materialisation, spill files."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from waits import scaled

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord
from cliffwatch.telemetry.schema import SCHEMA_VERSION
from cliffwatch.telemetry.store import (
    NotACliffwatchStoreError,
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    open_store,
    write_lock,
)
from cliffwatch.telemetry.testing import hold_store_lock, llm_call_record, make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

EPOCH = datetime(1970, 1, 1)


def _one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert str(path) in text
    assert "\n" not in text


def _run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    rel = con.sql("SELECT * FROM runs WHERE run_id = $id", params={"id": run_id})
    rows = rel.fetchall()
    assert len(rows) == 1, f"expected one runs row for {run_id}, got {len(rows)}"
    return dict(zip(rel.columns, rows[0], strict=True))


# --- opening ------------------------------------------------------------------------------


def test_write_open_creates_parent_dir_schema_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.duckdb"
    with open_store(path, read_only=False) as con:
        tables = {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"spans", "runs", "incidents", "cliffwatch_meta"} <= tables
    with open_store(path, read_only=True) as con:
        meta = dict(con.sql("SELECT key, value FROM cliffwatch_meta").fetchall())
    assert meta["schema_version"] == str(SCHEMA_VERSION)


def test_write_open_adds_tables_missing_from_an_older_store(tmp_path: Path) -> None:
    path = tmp_path / "older.duckdb"
    with open_store(path, read_only=False) as con:
        # As if the store predates that table: an older schema version without it (the
        # DDL runs on a read-write open only when the version is older).
        con.execute("DROP TABLE incidents")
        con.execute("UPDATE cliffwatch_meta SET value = '2' WHERE key = 'schema_version'")
    write_spans(path, make_run_records(seed=1, proposed=9, max_workers=8, breach="cap"))
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM incidents").fetchall() == [(1,)]


def test_read_only_open_of_missing_file_is_store_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.duckdb"
    with pytest.raises(StoreNotFoundError) as info:
        with open_store(path, read_only=True):
            pass
    _one_line_naming(info.value, path)
    assert not path.exists()


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("content", [b"", b"this is not a database\n" * 200])
def test_garbage_file_is_not_a_cliffwatch_store(
    tmp_path: Path, read_only: bool, content: bytes
) -> None:
    path = tmp_path / "garbage.duckdb"
    path.write_bytes(content)
    with pytest.raises(NotACliffwatchStoreError) as info:
        with open_store(path, read_only=read_only, timeout_s=1):
            pass
    _one_line_naming(info.value, path)
    assert path.read_bytes() == content  # never "repaired" over someone's file


@pytest.mark.parametrize("read_only", [True, False])
def test_foreign_duckdb_file_is_not_a_cliffwatch_store(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    with pytest.raises(NotACliffwatchStoreError) as info:
        with open_store(path, read_only=read_only, timeout_s=1):
            pass
    _one_line_naming(info.value, path)
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert tables == {"customers"}


def test_empty_duckdb_file_read_only_is_not_a_store_but_write_initialises_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(NotACliffwatchStoreError):
        with open_store(path, read_only=True):
            pass
    with open_store(path, read_only=False):
        pass
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM spans").fetchall() == [(0,)]


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    with open_store(path, read_only=False) as con:
        con.execute("UPDATE cliffwatch_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 999") as info:
        with open_store(path, read_only=True):
            pass
    _one_line_naming(info.value, path)


@pytest.mark.slow
@pytest.mark.parametrize("holder_read_only", [False, True])
def test_lock_held_past_timeout_is_store_busy(tmp_path: Path, holder_read_only: bool) -> None:
    path = tmp_path / "busy.duckdb"
    write_spans(path, make_run_records(seed=1))
    with hold_store_lock(path, read_only=holder_read_only):
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as info:
            with open_store(path, read_only=False, timeout_s=0.3):
                pass
        waited_s = time.monotonic() - started
    _one_line_naming(info.value, path)
    assert 0.3 <= waited_s < scaled(3.0)  # it gave up: no endless retry


def test_the_write_lock_is_one_per_store_and_write_spans_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.duckdb"
    lock = write_lock(path)
    monkeypatch.chdir(tmp_path)
    assert write_lock(str(path)) is lock and write_lock("locked.duckdb") is lock
    assert write_lock(tmp_path / "other.duckdb") is not lock
    with lock:  # held by this thread, as alert delivery holds it while it writes
        with pytest.raises(StoreBusyError, match="another thread") as info:
            write_spans(path, make_run_records(seed=25), timeout_s=0.05)
        _one_line_naming(info.value, path)
    assert write_spans(path, make_run_records(seed=25)).spans_written > 0


@pytest.mark.slow
def test_readers_share_a_store_held_read_only(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    write_spans(path, make_run_records(seed=1))
    with hold_store_lock(path, read_only=True):
        with open_store(path, read_only=True, timeout_s=0.5) as con:
            assert con.sql("SELECT count(*) FROM runs").fetchall() == [(1,)]


@pytest.mark.slow
def test_open_retries_until_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "retry.duckdb"
    write_spans(path, make_run_records(seed=1))
    started = time.monotonic()
    with hold_store_lock(path, seconds=0.5):
        # The holder lets go after 0.5 s, well inside our bound.
        result = write_spans(path, make_run_records(seed=2), timeout_s=scaled(30))
        waited_s = time.monotonic() - started
    assert result.spans_written == 6
    assert waited_s >= 0.4


@pytest.mark.slow
def test_connection_is_closed_on_exit_even_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "closed.duckdb"
    with pytest.raises(ZeroDivisionError):
        with open_store(path, read_only=False) as con:
            1 / 0  # noqa: B018
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")
    # and another process can take the file at once
    with hold_store_lock(path, read_only=False):
        pass


# --- spans ---------------------------------------------------------------------------------


def test_spans_round_trip_with_times_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    records = make_run_records(seed=3, started_at_ns=ns_at("2026-11-02T10:00:00") + 123_456_789)
    write_spans(path, records)
    with open_store(path, read_only=True) as con:
        rel = con.sql(
            f"SELECT {', '.join(SPAN_RECORD_FIELDS)}, started_at, ended_at, duration_ms, "
            "ingested_at FROM spans"
        )
        rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    by_id = {r["span_id"]: r for r in rows}
    assert len(by_id) == len(records)
    for rec in records:
        row = by_id[rec.span_id]
        for name in SPAN_RECORD_FIELDS:
            want, got = getattr(rec, name), row[name]
            if name in ("attributes", "resource_attributes", "events"):
                assert json.loads(got) == json.loads(want), name
            else:
                assert got == want, name
        assert row["duration_ms"] == pytest.approx(rec.duration_ms)
        assert row["started_at"] == EPOCH + timedelta(microseconds=rec.start_time_unix_nano // 1000)
        assert row["ended_at"] == EPOCH + timedelta(microseconds=rec.end_time_unix_nano // 1000)
        assert row["ingested_at"] is not None
    root = by_id[records[0].span_id]
    assert root["started_at"] == datetime(2026, 11, 2, 10, 0, 0, 123456)  # UTC, naive


def test_rewriting_the_same_spans_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "idem.duckdb"
    records = make_run_records(seed=4, proposed=12, max_workers=8, breach="cap")
    first = write_spans(path, records)
    second = write_spans(path, records)
    third = write_spans(path, records + records)  # duplicates inside one batch too
    assert (first.spans_written, second.spans_written, third.spans_written) == (6, 0, 0)
    assert first.incidents_recorded == 1
    assert second.incidents_recorded == third.incidents_recorded == 0
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM spans").fetchall() == [(6,)]
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(1,)]
        assert con.sql("SELECT count(*) FROM incidents").fetchall() == [(1,)]


def test_invalid_json_in_one_span_does_not_fail_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "json.duckdb"
    records = make_run_records(seed=5)
    bad = dataclasses.replace(records[1], attributes="{not json")
    write_spans(path, [records[0], bad, *records[2:]])
    with open_store(path, read_only=True) as con:
        got = con.sql(
            "SELECT attributes FROM spans WHERE span_id = $id", params={"id": bad.span_id}
        ).fetchall()
        assert con.sql("SELECT count(*) FROM spans").fetchall() == [(len(records),)]
    assert json.loads(got[0][0]) == {"cliffwatch.invalid_json": "{not json"}


# --- run materialisation ------------------------------------------------------------------


def test_run_cost_is_sum_of_leaf_calls_and_run_attributes_come_from_root(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.duckdb"
    records = make_run_records(
        seed=6,
        task_class="legal",
        worker_cost_usds=[0.0125, 0.0250, 0.0375],
        plan_cost_usd=0.004,
        synthesis_cost_usd=0.0015,
        max_workers=8,
        proposed=3,
        ceiling_usd=0.5,
        estimate_usd=0.09,
        policy="truncate",
        replay_of="f" * 32,
        planner_model="sim/claude-sonnet-4-5",
        synthesis_model="sim/claude-haiku-4-5",
        call_duration_ms=250.0,
    )
    result = write_spans(path, records)
    assert result.runs_materialised == 1
    with open_store(path, read_only=True) as con:
        run = _run(con, records[0].trace_id)
    assert run["cost_usd"] == pytest.approx(0.004 + 0.0125 + 0.0250 + 0.0375 + 0.0015, abs=1e-15)
    assert run["llm_calls"] == 5
    assert run["unpriced_calls"] == 0
    assert run["input_tokens"] == sum(r.input_tokens or 0 for r in records)
    assert run["output_tokens"] == sum(r.output_tokens or 0 for r in records)
    assert run["task_class"] == "legal"
    assert run["status"] == "ok"
    assert run["breach"] is None
    assert (run["max_workers"], run["workers_proposed"], run["workers_dispatched"]) == (8, 3, 3)
    assert (run["ceiling_usd"], run["estimate_usd"], run["policy"]) == (0.5, 0.09, "truncate")
    assert run["replay_of"] == "f" * 32
    assert run["planner_model"] == "sim/claude-sonnet-4-5"
    assert run["synthesis_model"] == "sim/claude-haiku-4-5"
    assert run["duration_ms"] == pytest.approx(750.0)
    assert (run["service_name"], run["source"]) == ("cliffwatch", "cliffwatch")


def test_parent_llm_span_repeating_children_usage_is_not_double_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nested.duckdb"
    records = make_run_records(seed=7, worker_cost_usds=[0.01, 0.02], plan_cost_usd=0.001,
                               synthesis_cost_usd=0.002)
    run_id, root_id = records[0].trace_id, records[0].span_id
    t0 = records[0].start_time_unix_nano
    # A critic wrapper (an LLM call span) that repeats the usage of its two retries below
    # it, one level deeper through a non-LLM "tool" span.
    common = dict(run_id=run_id, model="sim/gpt-4o", start_ns=t0, duration_ms=10.0,
                  task_class="research")
    wrapper = llm_call_record(span_id="a" * 16, parent_span_id=root_id, role="critic",
                              name="critic", cost_usd=0.30, **common)
    tool = dataclasses.replace(
        records[0], span_id="b" * 16, parent_span_id="a" * 16, name="tool", role="other",
        attributes="{}",
    )
    retry1 = llm_call_record(span_id="c" * 16, parent_span_id="b" * 16, role="critic",
                             name="critic try 1", cost_usd=0.10, **common)
    retry2 = llm_call_record(span_id="d" * 16, parent_span_id="a" * 16, role="critic",
                             name="critic try 2", cost_usd=0.20, **common)
    write_spans(path, [*records, wrapper, tool, retry1, retry2])
    with open_store(path, read_only=True) as con:
        run = _run(con, run_id)
    assert run["cost_usd"] == pytest.approx(0.001 + 0.01 + 0.02 + 0.002 + 0.10 + 0.20)
    assert run["llm_calls"] == 6  # plan, 2 workers, synthesis, 2 critic retries
    assert run["input_tokens"] == sum(
        r.input_tokens or 0 for r in [*records, retry1, retry2]
    )


def test_a_call_that_gains_a_child_call_later_stops_being_a_leaf(tmp_path: Path) -> None:
    # The leaf flag is stored, so it must be re-stamped when a child call arrives in a
    # later batch (out-of-order ingest): the wrapper's 0.30 then drops out of the run.
    path = tmp_path / "restamp.duckdb"
    records = make_run_records(seed=11, worker_cost_usds=[0.01], plan_cost_usd=0.001,
                               synthesis_cost_usd=0.002)
    run_id, root_id = records[0].trace_id, records[0].span_id
    common = dict(run_id=run_id, model="sim/gpt-4o", start_ns=records[0].start_time_unix_nano,
                  duration_ms=10.0, task_class="research")
    wrapper = llm_call_record(span_id="a" * 16, parent_span_id=root_id, role="critic",
                              name="critic", cost_usd=0.30, **common)
    child = llm_call_record(span_id="c" * 16, parent_span_id="a" * 16, role="critic",
                            name="critic try 1", cost_usd=0.10, **common)
    write_spans(path, [*records, wrapper])
    with open_store(path, read_only=True) as con:
        first = _run(con, run_id)["cost_usd"]
        flag_before = con.sql(f"SELECT is_leaf_call FROM spans WHERE span_id = '{'a' * 16}'")
        flag_before = flag_before.fetchall()
    write_spans(path, [child])
    with open_store(path, read_only=True) as con:
        second = _run(con, run_id)["cost_usd"]
        flags = dict(con.sql("SELECT span_id, is_leaf_call FROM spans").fetchall())
    assert first == pytest.approx(0.001 + 0.01 + 0.002 + 0.30)
    assert flag_before == [(True,)]
    assert second == pytest.approx(0.001 + 0.01 + 0.002 + 0.10)
    assert flags["a" * 16] is False and flags["c" * 16] is True
    assert flags[root_id] is False  # the run span is no LLM call


def test_unpriced_calls_are_counted_never_silently_zero(tmp_path: Path) -> None:
    path = tmp_path / "unpriced.duckdb"
    partly = make_run_records(seed=8, worker_cost_usds=[0.01, None, None], plan_cost_usd=0.002,
                              synthesis_cost_usd=0.003)
    wholly = make_run_records(seed=9, worker_cost_usds=[None], plan_cost_usd=None,
                              synthesis_cost_usd=None)
    write_spans(path, partly + wholly)
    with open_store(path, read_only=True) as con:
        run_partly = _run(con, partly[0].trace_id)
        run_wholly = _run(con, wholly[0].trace_id)
        null_costs = con.sql(
            "SELECT count(*) FROM spans WHERE cost_source = 'unpriced' AND cost_usd IS NULL"
        ).fetchall()
    assert run_partly["cost_usd"] == pytest.approx(0.015)
    assert run_partly["unpriced_calls"] == 2
    assert run_wholly["unpriced_calls"] == run_wholly["llm_calls"] == 3
    assert null_costs == [(5,)]


def test_children_arriving_after_the_root_update_the_run(tmp_path: Path) -> None:
    path = tmp_path / "late.duckdb"
    records = make_run_records(seed=10, worker_cost_usds=[0.01, 0.02, 0.04])
    root, plan, *workers = records[:-1]
    synthesis = records[-1]
    # Children without their root make no run yet.
    assert write_spans(path, [plan, *workers]).runs_materialised == 0
    assert write_spans(path, [root]).runs_materialised == 1
    with open_store(path, read_only=True) as con:
        before = _run(con, root.trace_id)["cost_usd"]
    assert write_spans(path, [synthesis]).runs_materialised == 1
    with open_store(path, read_only=True) as con:
        after = _run(con, root.trace_id)
    assert before == pytest.approx(plan.cost_usd + 0.07)
    assert after["cost_usd"] == pytest.approx(before + synthesis.cost_usd)
    assert after["synthesis_model"] == synthesis.request_model


def test_status_and_task_class_fallbacks_for_foreign_traces(tmp_path: Path) -> None:
    path = tmp_path / "foreign.duckdb"
    base = make_run_records(seed=11, task_class="summarise")
    bare_root = dataclasses.replace(
        base[0], attributes="{}", task_class=None, status_code="error", service_name="billing",
    )
    children_without_class = [dataclasses.replace(r, task_class=None) for r in base[1:]]
    write_spans(path, [bare_root, *children_without_class])
    with open_store(path, read_only=True) as con:
        run = _run(con, bare_root.trace_id)
    assert run["status"] == "failed"  # no cliff.status: from the root's error status
    assert run["task_class"] == "billing"  # no task class anywhere: service name
    assert run["workers_proposed"] is None and run["max_workers"] is None

    other = make_run_records(seed=12, task_class="summarise")
    classless_root = dataclasses.replace(other[0], task_class=None, service_name=None)
    write_spans(path, [classless_root, *other[1:]])
    with open_store(path, read_only=True) as con:
        assert _run(con, classless_root.trace_id)["task_class"] == "summarise"  # a child's

    nameless = make_run_records(seed=13)
    nothing = [dataclasses.replace(r, task_class=None, service_name=None) for r in nameless]
    write_spans(path, nothing)
    with open_store(path, read_only=True) as con:
        assert _run(con, nothing[0].trace_id)["task_class"] == "unknown"


def test_only_touched_traces_are_materialised(tmp_path: Path) -> None:
    path = tmp_path / "touched.duckdb"
    many = [r for i in range(30) for r in make_run_records(seed=100 + i)]
    assert write_spans(path, many).runs_materialised == 30
    assert write_spans(path, make_run_records(seed=999)).runs_materialised == 1


# --- spill files --------------------------------------------------------------------------


def test_pending_spill_files_are_loaded_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "spill.duckdb"
    first = make_run_records(seed=20)
    second = make_run_records(seed=21)
    spill.spill_records(path, first)
    spill.spill_records(path, second)
    assert len(spill.pending_spills(path)) == 2
    result = write_spans(path, make_run_records(seed=22))
    assert result.spill_files_loaded == 2
    assert result.spans_written == 18
    assert result.runs_materialised == 3
    assert spill.pending_spills(path) == []
    with open_store(path, read_only=True) as con:
        got = {r[0] for r in con.sql("SELECT run_id FROM runs").fetchall()}
    assert got == {first[0].trace_id, second[0].trace_id, make_run_records(seed=22)[0].trace_id}


@pytest.mark.slow
def test_spill_files_stay_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "stay.duckdb"
    write_spans(path, make_run_records(seed=23))
    spill.spill_records(path, make_run_records(seed=24))
    with hold_store_lock(path):
        with pytest.raises(StoreBusyError):
            write_spans(path, [], timeout_s=0.2)
    assert len(spill.pending_spills(path)) == 1


def test_unreadable_spill_file_is_set_aside_not_blocking(tmp_path: Path) -> None:
    path = tmp_path / "bad.duckdb"
    directory = spill.spill_dir(path)
    directory.mkdir()
    (directory / "00000000000000000001-1-dead.parquet").write_bytes(b"not parquet")
    result = write_spans(path, make_run_records(seed=25))
    assert result.spans_written == 6
    assert spill.pending_spills(path) == []
    assert [p.name for p in directory.iterdir()] == ["00000000000000000001-1-dead.bad"]


def test_records_are_plain_frozen_dataclasses() -> None:
    rec = make_run_records(seed=26)[0]
    assert isinstance(rec, SpanRecord)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.name = "x"  # type: ignore[misc]
