"""``cliffwatch watch`` on chDB: spans written in the Collector's shape give the runs and
incidents an ingest of the same spans into DuckDB gives; a restart duplicates nothing; a
late span is picked up.

The reference is the DuckDB write path (``map_spans`` then ``write_spans``, what
``cliffwatch ingest`` does); the ClickHouse side is the exporter's table in chDB, filled
with :func:`~telemetry.clickhouse.otel_traces.spans_to_rows`, then ``watch(once=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from otlp_payloads import request_json
from test_ingest import RUN_COLUMNS, _costs

from cliffwatch.telemetry.clickhouse import otel_traces as ot
from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.clickhouse.watch import WatchConfig, read_watermark, watch
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_json import decode_json_object
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

pytest.importorskip("chdb")

INCIDENT_COLUMNS = "incident_id, kind, run_id, task_class, detail"


def fleet_request() -> dict:
    """Two task classes of 25 runs, one a runaway, and a cap breach (as test_ingest), as
    one OTLP/JSON request."""
    research = _costs(25, 1)
    research[7] = 60 * sorted(research)[12]
    records = make_runs_costing(research, task_class="research", seed=1)
    records += make_runs_costing(_costs(25, 2), task_class="support", seed=2, workers=2)
    records += make_run_records(task_class="support", worker_cost_usds=[], max_workers=3,
                                proposed=12, breach="cap", status="rejected", seed=99)
    return request_json(records)


def fleet_spans() -> list[OtlpSpan]:
    """The spans of :func:`fleet_request`, decoded."""
    return list(decode_json_object(fleet_request()).spans)


def duckdb_reference(spans: list[OtlpSpan], db: Path) -> tuple[list[tuple], list[tuple]]:
    records, rejected = map_spans(spans)
    assert not rejected
    write_spans(db, records)
    with open_store(db, read_only=True) as con:
        runs = con.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY run_id").fetchall()
        incidents = con.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY incident_id").fetchall()
    return runs, incidents


def clickhouse_state(client) -> tuple[list[tuple], list[tuple]]:
    def rows(sql: str) -> list[tuple]:
        return [tuple(r.values()) for r in client.query_arrow(sql).to_pylist()]

    runs = rows(f"SELECT {RUN_COLUMNS} FROM cliffwatch_runs FINAL ORDER BY run_id")
    incidents = rows(
        f"SELECT {INCIDENT_COLUMNS} FROM cliffwatch_incidents FINAL ORDER BY incident_id")
    return [_plain(r) for r in runs], incidents


def _plain(row: tuple) -> tuple:
    # ClickHouse gives UTC-aware timestamps; the DuckDB store keeps naive UTC.
    return tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") and v.tzinfo else v
                 for v in row)


def raw_counts(client) -> dict[str, int]:
    """Rows as appended (no FINAL): a second append of the same key would show here."""
    return {t: client.query_arrow(f"SELECT count() AS n FROM {t}").to_pylist()[0]["n"]
            for t in ("cliffwatch_runs", "cliffwatch_incidents", "cliffwatch_spans",
                      "cliffwatch_alerts")}


@pytest.fixture
def client(tmp_path: Path):
    with connect(parse_store_url(f"chdb://{tmp_path}/ch")) as one:
        one.command(ot.create_table_sql())
        yield one


def test_watch_once_gives_the_runs_and_incidents_of_a_duckdb_ingest(client, tmp_path) -> None:
    spans = fleet_spans()
    runs, incidents = duckdb_reference(spans, tmp_path / "ref.duckdb")
    assert {i[1] for i in incidents} == {"cap_breach", "runaway"}

    client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    summary = watch(client, WatchConfig(batch_spans=100_000, deliver=False), once=True)
    assert (summary.spans, summary.runs, summary.incidents) == (len(spans), len(runs), 2)
    assert clickhouse_state(client) == (runs, incidents)
    assert read_watermark(client, "otel_traces") == max(s.end_time_unix_nano for s in spans)


def test_small_batches_give_the_same_answer(client, tmp_path) -> None:
    """Spans in batches that split traces: the scratch store reads the traces' older spans."""
    spans = fleet_spans()
    runs, incidents = duckdb_reference(spans, tmp_path / "ref.duckdb")
    client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    summary = watch(client, WatchConfig(batch_spans=7, deliver=False), once=True)
    assert summary.batches > len(spans) // 7
    got_runs, got_incidents = clickhouse_state(client)
    assert got_runs == runs
    # The same incidents; a detail may name the class's run count when its P50 was taken,
    # which depends on the batches (as on a DuckDB store written in several writes).
    assert [i[:4] for i in got_incidents] == [i[:4] for i in incidents]


def test_a_restart_duplicates_nothing_and_picks_up_a_late_span(client, tmp_path) -> None:
    spans = fleet_spans()
    # One worker call of the first run arrives late: after its run was processed.
    late = next(s for s in spans if s.attributes.get("cliff.role") == "worker")
    early = [s for s in spans if s is not late]
    client.insert_arrow("otel_traces", ot.spans_to_rows(early))
    config = WatchConfig(batch_spans=100_000, deliver=False, lateness_s=10 * 86_400)
    watch(client, config, once=True)
    before = raw_counts(client)

    again = watch(client, config, once=True)  # a restart: nothing new
    assert (again.spans, again.runs, again.incidents) == (0, 0, 0)
    assert raw_counts(client) == before

    client.insert_arrow("otel_traces", ot.spans_to_rows([late]))
    picked = watch(client, config, once=True)
    assert (picked.spans, picked.runs) == (1, 1)
    runs, incidents = duckdb_reference(spans, tmp_path / "ref.duckdb")
    assert clickhouse_state(client) == (runs, incidents)


def test_a_span_the_collector_wrote_twice_is_counted_once(client, tmp_path) -> None:
    spans = fleet_spans()
    runs, _ = duckdb_reference(spans, tmp_path / "ref.duckdb")
    client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    client.insert_arrow("otel_traces", ot.spans_to_rows(spans[:40]))  # an exporter retry
    watch(client, WatchConfig(batch_spans=30, deliver=False), once=True)
    assert clickhouse_state(client)[0] == runs
    counted = client.query_arrow(
        "SELECT count() AS n, uniqExact(trace_id, span_id) AS keys FROM cliffwatch_spans"
    ).to_pylist()[0]
    assert counted == {"n": len(spans), "keys": len(spans)}


def test_a_missing_traces_table_is_a_one_line_error(tmp_path) -> None:
    from cliffwatch.telemetry.clickhouse.watch import WatchError

    with connect(parse_store_url(f"chdb://{tmp_path}/empty")) as empty:
        with pytest.raises(WatchError, match="table otel_traces not found") as caught:
            watch(empty, WatchConfig(deliver=False), once=True)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not os.environ.get("CLICKHOUSE_URL"),
                    reason="CLICKHOUSE_URL (clickhouse://user:password@host:8123/db) not set")
def test_watch_over_a_clickhouse_server(tmp_path) -> None:
    """The clickhouse-connect path: the same answer from a real server, in a database of
    its own (created and dropped)."""
    from dataclasses import replace
    from uuid import uuid4

    spans = fleet_spans()
    runs, incidents = duckdb_reference(spans, tmp_path / "ref.duckdb")
    server = parse_store_url(os.environ["CLICKHOUSE_URL"])
    database = f"cliffwatch_test_{uuid4().hex[:12]}"
    with connect(server) as admin:
        admin.command(f"CREATE DATABASE {database}")
    try:
        with connect(replace(server, database=database)) as client:
            client.command(ot.create_table_sql())
            client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
            watch(client, WatchConfig(deliver=False), once=True)
            assert clickhouse_state(client) == (runs, incidents)
    finally:
        with connect(server) as admin:
            admin.command(f"DROP DATABASE IF EXISTS {database}")


def test_a_call_cut_from_its_agent_by_the_batches_gets_its_role_in_clickhouse(
    client, tmp_path
) -> None:
    """One span a batch, in the order they end (children first): each call is stored
    before its agent span, and the roles in ``cliffwatch_spans`` are those of the trace
    written whole into DuckDB (telemetry/continued_roles.py): the calls stored in an
    earlier batch are appended again with their role."""
    from test_continued_roles import _trace

    spans = _trace()
    records, _ = map_spans(spans)
    write_spans(tmp_path / "ref.duckdb", records)
    with open_store(tmp_path / "ref.duckdb", read_only=True) as con:
        want = dict(con.execute("SELECT span_id, role FROM spans").fetchall())
    assert "worker" in want.values()
    client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    watch(client, WatchConfig(batch_spans=1, deliver=False), once=True)
    got = {r["span_id"]: r["role"] for r in client.query_arrow(
        "SELECT span_id, role FROM cliffwatch_spans FINAL").to_pylist()}
    assert got == want
