"""Re-sent spans without a primary key on ``spans`` (schema version 4): a span whose
(trace_id, span_id) is stored adds nothing, whenever it comes back; the migration of an
older store keeps every row."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
from keyed_tables import rebuild_keyed

from cliffwatch.telemetry.schema import SPANS_ALTER_COLUMNS, SPANS_DDL_TEMPLATE
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans


def _spans(path: Path) -> list[tuple]:
    with open_store(path, read_only=True) as con:
        return con.execute(
            "SELECT * EXCLUDE (ingested_at) FROM spans ORDER BY trace_id, span_id"
        ).fetchall()


def _primary_keys(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute(
        "SELECT count(*) FROM duckdb_constraints() "
        "WHERE table_name = 'spans' AND constraint_type = 'PRIMARY KEY'"
    ).fetchall()[0][0]


def test_a_span_resent_after_its_trace_closed_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "closed.duckdb"
    records = make_run_records(seed=21)
    assert write_spans(path, records).spans_written == len(records)
    with open_store(path, read_only=False) as con:
        # What the grace period does to a rooted trace: open_traces forgets it.
        con.execute("DELETE FROM open_traces")
    before = _spans(path)
    assert write_spans(path, records).spans_written == 0
    assert write_spans(path, [records[2]]).spans_written == 0
    assert _spans(path) == before


def test_the_span_stored_first_stays_whatever_the_resent_one_holds(tmp_path: Path) -> None:
    path = tmp_path / "first.duckdb"
    records = make_run_records(seed=22)
    changed = dataclasses.replace(records[1], name="changed", cost_usd=9.0)
    # Within one batch, the first of two spans with the same ids is the one stored ...
    assert write_spans(path, [records[0], records[1], changed]).spans_written == 2
    # ... and across writes, the stored one stays.
    assert write_spans(path, [changed, *records[2:]]).spans_written == len(records) - 2
    with open_store(path, read_only=True) as con:
        rows = con.execute(
            "SELECT name, cost_usd FROM spans WHERE span_id = ?", [records[1].span_id]
        ).fetchall()
        runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    assert rows == [(records[1].name, records[1].cost_usd)]
    assert runs == 1


def test_a_new_trace_sharing_a_seen_key_is_stored_whole(tmp_path: Path) -> None:
    path = tmp_path / "collide.duckdb"
    old, new = make_run_records(seed=23), make_run_records(seed=24)
    write_spans(path, old)
    with open_store(path, read_only=False) as con:
        # As if the new trace's key collided with an old trace's (the check is on the ids).
        con.execute(
            "INSERT INTO seen_traces VALUES (md5_number_lower(?), TIMESTAMP '2000-01-01')",
            [new[0].trace_id],
        )
    assert write_spans(path, new).spans_written == len(new)
    assert write_spans(path, new).spans_written == 0
    with open_store(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchall()[0][0] == len(old) + len(new)
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 2


def _as_version_3(path: Path) -> None:
    """Give a store the shape of schema version 3: ``spans`` keyed, no ``seen_traces``."""
    con = duckdb.connect(str(path))
    try:
        rebuild_keyed(con, "spans", SPANS_DDL_TEMPLATE, SPANS_ALTER_COLUMNS, "trace_id, span_id")
        con.execute("DROP TABLE seen_traces")
        con.execute("UPDATE cliffwatch_meta SET value = '3' WHERE key = 'schema_version'")
        assert _primary_keys(con) == 1
    finally:
        con.close()


def test_a_version_3_store_loses_the_spans_key_and_keeps_every_row(tmp_path: Path) -> None:
    path, fresh = tmp_path / "v3.duckdb", tmp_path / "fresh.duckdb"
    first, second = make_run_records(seed=25), make_run_records(seed=26)
    write_spans(path, [*first, *second[:-1]])
    write_spans(fresh, [])
    _as_version_3(path)
    before = _spans(path)
    with open_store(path, read_only=False) as con:
        assert _primary_keys(con) == 0
        seen = con.execute("SELECT count(*) FROM seen_traces").fetchall()[0][0]
        columns = con.execute("SELECT * FROM spans LIMIT 0").description
    with open_store(fresh, read_only=True) as con:
        fresh_columns = con.execute("SELECT * FROM spans LIMIT 0").description
    assert _spans(path) == before
    assert seen == 2
    assert [c[:2] for c in columns] == [c[:2] for c in fresh_columns]
    # Re-sent spans of the migrated traces add nothing; the missing one is added.
    assert write_spans(path, [*first, *second]).spans_written == 1
    assert len(_spans(path)) == len(first) + len(second)
