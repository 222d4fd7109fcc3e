"""Schema version 6: ``runs`` without its primary key; a write replaces the runs it
rebuilds (delete in a window + insert), and an older store migrates once."""

from __future__ import annotations

from pathlib import Path

import duckdb
from keyed_tables import rebuild_keyed

from cliffwatch.telemetry.schema import RUNS_ALTER_COLUMNS, RUNS_DDL_TEMPLATE, SCHEMA_VERSION
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans


def _runs(path: Path) -> list[tuple]:
    with open_store(path, read_only=True) as con:
        return con.execute(
            "SELECT * EXCLUDE (materialised_at) FROM runs ORDER BY run_id").fetchall()


def _keys_and_index(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    keys = con.execute(
        "SELECT count(*) FROM duckdb_constraints() "
        "WHERE table_name = 'runs' AND constraint_type = 'PRIMARY KEY'").fetchall()[0][0]
    index = con.execute(
        "SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'runs_class_time'"
    ).fetchall()[0][0]
    return keys, index


def test_a_late_span_replaces_its_run_row_once(tmp_path: Path) -> None:
    path = tmp_path / "late.duckdb"
    records = make_run_records(seed=31)
    root = next(r for r in records if r.parent_span_id is None)
    children = [r for r in records if r is not root]
    write_spans(path, [root, *children[:-1]])
    before = _runs(path)
    write_spans(path, children[-1:])  # the last call arrives after its run
    write_spans(path, records)  # everything re-sent: nothing new, no second row
    after = _runs(path)
    assert len(before) == len(after) == 1
    assert after[0][0] == before[0][0]
    assert after[0] != before[0]  # the late call's cost and tokens are counted


def _as_version_4(path: Path) -> None:
    """Give a store the shape of schema version 4: ``runs`` keyed on ``run_id``."""
    con = duckdb.connect(str(path))
    try:
        rebuild_keyed(con, "runs", RUNS_DDL_TEMPLATE, RUNS_ALTER_COLUMNS, "run_id")
        con.execute("UPDATE cliffwatch_meta SET value = '4' WHERE key = 'schema_version'")
        assert _keys_and_index(con) == (1, 0)
    finally:
        con.close()


def test_a_version_4_store_loses_the_runs_key_and_keeps_every_row(tmp_path: Path) -> None:
    path, fresh = tmp_path / "v4.duckdb", tmp_path / "fresh.duckdb"
    write_spans(path, [*make_run_records(seed=32), *make_run_records(seed=33)])
    write_spans(fresh, [])
    _as_version_4(path)
    before = _runs(path)
    with open_store(path, read_only=False) as con:
        assert _keys_and_index(con) == (0, 1)
        version = con.execute(
            "SELECT value FROM cliffwatch_meta WHERE key = 'schema_version'").fetchall()
        columns = con.execute("SELECT * FROM runs LIMIT 0").description
    with open_store(fresh, read_only=True) as con:
        fresh_columns = con.execute("SELECT * FROM runs LIMIT 0").description
    assert version == [(str(SCHEMA_VERSION),)]
    assert _runs(path) == before and len(before) == 2
    assert [c[:2] for c in columns] == [c[:2] for c in fresh_columns]
    # A re-sent run after the migration is replaced, not doubled.
    write_spans(path, make_run_records(seed=32))
    assert _runs(path) == before
