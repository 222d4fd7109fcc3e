"""``cliffwatch migrate`` on chDB: a DuckDB store moved up gives the same percentiles and
incidents, its spans in the traces table map back to the same costs, a second migration
adds nothing, and ``watch`` does not redo the migrated spans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_clickhouse_watch import fleet_spans
from typer.testing import CliRunner

from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.analytics.store_access import read_store
from cliffwatch.cli import app
from cliffwatch.telemetry.clickhouse import otel_traces as ot
from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.migrate import migrate_store
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.clickhouse.watch import WatchConfig, read_watermark, watch
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans

pytest.importorskip("chdb")


@pytest.fixture
def duck(tmp_path: Path) -> Path:
    db = tmp_path / "team.duckdb"
    records, _ = map_spans(fleet_spans())
    write_spans(db, records)
    return db


def _percentiles(store: str | Path):
    with read_store(store) as con:
        return cost_percentiles(con).sort("task_class")


def test_migrated_store_gives_the_same_percentiles_and_spans(duck: Path, tmp_path) -> None:
    url = f"chdb://{tmp_path}/ch"
    with connect(parse_store_url(url)) as client:
        summary = migrate_store(duck, client, chunk_rows=40)
        assert summary.complete and summary.spans_added == summary.spans_read > 0
        assert summary.tables["runs"] == 51 and summary.tables["incidents"] == 2

        # The traces table's rows map back to the costs the DuckDB store holds.
        rows = client.query_arrow(f"SELECT {ot.select_columns_sql()} FROM otel_traces")
        records, rejected = map_spans(ot.rows_to_spans(rows))
        assert not rejected
        with open_store(duck, read_only=True) as con:
            expected = dict(((t, s), (c, k)) for t, s, c, k in con.execute(
                "SELECT trace_id, span_id, cost_usd, task_class FROM spans").fetchall())
        assert {(r.trace_id, r.span_id): (r.cost_usd, r.task_class) for r in records} == expected

        again = migrate_store(duck, client)
        assert again.spans_added == 0 and again.complete
        assert client.query_arrow("SELECT count() AS n FROM otel_traces").to_pylist() == [
            {"n": summary.spans_read}]
        with open_store(duck, read_only=True) as con:
            last_end = con.execute("SELECT max(end_time_unix_nano) FROM spans").fetchall()[0][0]
        assert read_watermark(client, "otel_traces") == last_end
        redone = watch(client, WatchConfig(deliver=False), once=True)
        assert redone.spans == 0

    theirs, ours = _percentiles(duck), _percentiles(url)
    assert theirs["task_class"].to_list() == ours["task_class"].to_list()
    for column in ("runs", "p50_usd", "p95_usd", "p99_usd"):
        assert np.allclose(theirs[column].to_numpy(), ours[column].to_numpy(), rtol=1e-12), column


def test_the_cli_migrates_and_refuses_a_duckdb_target(duck: Path, tmp_path) -> None:
    url = f"chdb://{tmp_path}/cli"
    done = CliRunner().invoke(app, ["migrate", "--from", str(duck), "--to", url])
    assert done.exit_code == 0, done.output
    assert "migrated" in done.stdout and "added to otel_traces" in done.stdout

    refused = CliRunner().invoke(app, ["migrate", "--from", str(duck), "--to", str(duck)])
    assert refused.exit_code == 2
    assert "is a DuckDB file" in refused.stderr and "Traceback" not in refused.output

    missing = CliRunner().invoke(
        app, ["migrate", "--from", str(tmp_path / "none.duckdb"), "--to", url])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_a_history_of_months_migrates_whole(tmp_path: Path) -> None:
    """More daily partitions than ClickHouse takes in one insert by default (100)."""
    from cliffwatch.telemetry.testing import make_runs_costing

    db = tmp_path / "months.duckdb"
    write_spans(db, make_runs_costing([0.01] * 150, interval_s=2 * 86_400, seed=4))
    with connect(parse_store_url(f"chdb://{tmp_path}/ch")) as client:
        summary = migrate_store(db, client)
        days = client.query_arrow(
            "SELECT uniqExact(toDate(Timestamp)) AS days FROM otel_traces").to_pylist()[0]
    assert summary.complete and summary.spans_added == summary.spans_read
    assert days["days"] == 150
