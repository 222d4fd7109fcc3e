"""cliffwatch's own writers pointed at ClickHouse (chDB): ``serve`` and the orchestrator
write the Collector's ``otel_traces`` rows and nothing else; ``watch`` then gives the runs
the DuckDB store gets from the same work."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime
from pathlib import Path

import pytest
from otlp_payloads import request_json, to_protobuf
from test_clickhouse_watch import (
    clickhouse_state,
    duckdb_reference,
    fleet_request,
    fleet_spans,
)
from test_ingest import RUN_COLUMNS

from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.clickhouse.watch import WatchConfig, watch
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_runs_costing

pytest.importorskip("chdb")

UNTIL = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _tables(client) -> set[str]:
    rows = client.query_arrow("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {r["name"] for r in rows.to_pylist()}


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_serve_into_chdb_writes_otel_traces_and_watch_makes_the_runs(tmp_path: Path) -> None:
    spans = fleet_spans()
    runs, incidents = duckdb_reference(spans, tmp_path / "ref.duckdb")
    url = f"chdb://{tmp_path}/ch"
    receiver = OtlpReceiver(url, ReceiverConfig(port=0))
    receiver.start()
    try:
        probe = to_protobuf(request_json(make_runs_costing([0.01], task_class="probe", seed=5)))
        assert _post(receiver.port, probe) == 200
    finally:
        receiver.stop()
    with connect(parse_store_url(url)) as client:
        # The receiver wrote the Collector's table only: cliffwatch's are watch's to make.
        assert "otel_traces" in _tables(client)
        assert not {t for t in _tables(client) if t.startswith("cliffwatch_")}
        assert client.query_arrow("SELECT count() AS n FROM otel_traces").to_pylist()[0]["n"] > 0

    receiver = OtlpReceiver(url, ReceiverConfig(port=0))
    receiver.start()
    try:
        assert _post(receiver.port, to_protobuf(fleet_request())) == 200
    finally:
        receiver.stop()
    with connect(parse_store_url(url)) as client:
        watch(client, WatchConfig(deliver=False), once=True)
        got_runs, got_incidents = clickhouse_state(client)
    probe = [r for r in got_runs if r[1] == "probe"]
    assert len(probe) == 1
    assert [r for r in got_runs if r[1] != "probe"] == runs
    assert got_incidents == incidents


def test_demo_into_chdb_gives_the_runs_of_a_duckdb_demo(tmp_path: Path) -> None:
    from cliffwatch.orchestrator.demo import run_demo

    duck = tmp_path / "demo.duckdb"
    url = f"chdb://{tmp_path}/ch"
    run_demo(duck, runs=25, days=3, seed=11, until=UNTIL)
    run_demo(url, runs=25, days=3, seed=11, until=UNTIL)
    with open_store(duck, read_only=True) as con:
        # Run ids are random trace ids: compare the runs in start order, without them.
        columns = RUN_COLUMNS.replace("run_id, ", "")
        expected = con.execute(f"SELECT {columns} FROM runs ORDER BY started_at").fetchall()
    with connect(parse_store_url(url)) as client:
        assert not {t for t in _tables(client) if t.startswith("cliffwatch_")}
        summary = watch(client, WatchConfig(deliver=False), once=True)
        got = [tuple(v.replace(tzinfo=None) if getattr(v, "tzinfo", None) else v
                     for v in r.values())
               for r in client.query_arrow(
                   f"SELECT {columns} FROM cliffwatch_runs FINAL ORDER BY started_at"
               ).to_pylist()]
    assert summary.runs == 25
    assert got == expected


def test_a_guarded_run_into_chdb_becomes_a_run_after_watch(tmp_path: Path) -> None:
    """The library (cliffwatch_guard) with a chdb:// store: its spans go into otel_traces
    through the SDK exporter; watch then makes the run, costed as on DuckDB."""
    from cliffwatch.orchestrator.guard import cliffwatch_guard
    from cliffwatch.telemetry.tracing import configure_tracing

    url = f"chdb://{tmp_path}/ch"
    tracing = configure_tracing(url, otlp_endpoint=None)
    try:
        with cliffwatch_guard("research", max_workers=2, ceiling_usd=0.5, tracing=tracing,
                              worker_model="gpt-4o-mini", task_id="t-ch",
                              raise_on_breach=False) as guard:
            guard.record_call("gpt-4.1", 1000, 300, role="plan")
            approved = guard.check_plan(["a", "b", "c"])  # over the cap: rejected
            assert not list(approved)
    finally:
        tracing.shutdown()
    with connect(parse_store_url(url)) as client:
        assert not {t for t in _tables(client) if t.startswith("cliffwatch_")}
        watch(client, WatchConfig(deliver=False), once=True)
        run = client.query_arrow(
            "SELECT run_id, status, breach, cost_usd, workers_proposed, max_workers "
            "FROM cliffwatch_runs FINAL").to_pylist()
        kinds = client.query_arrow("SELECT kind FROM cliffwatch_incidents FINAL").to_pylist()
    assert len(run) == 1 and run[0]["run_id"] == guard.run_id
    assert (run[0]["status"], run[0]["breach"]) == ("rejected", "cap")
    assert run[0]["cost_usd"] == pytest.approx(guard.spent_usd, rel=1e-12) and guard.spent_usd > 0
    assert (run[0]["workers_proposed"], run[0]["max_workers"]) == (3, 2)
    assert kinds == [{"kind": "cap_breach"}]
