"""A held writer's copy of ``seen_traces`` (telemetry/seen_copy.py) answers as the table
does, whoever wrote the table meanwhile, and a re-sent span through it adds nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from cliffwatch.telemetry import seen_copy
from cliffwatch.telemetry.seen_copy import SeenCopy, trace_key
from cliffwatch.telemetry.store import HeldStore, open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans


def _in_table(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[tuple[str, datetime]]:
    """The SQL lookup the copy stands in for (write_pipeline._FIND_SEEN)."""
    return set(con.execute("""
        SELECT b.trace_id, min(t.first_ingested_at)
        FROM (SELECT unnest($ids::VARCHAR[]) AS trace_id) AS b
        JOIN seen_traces AS t ON t.trace_key = md5_number_lower(b.trace_id)
        GROUP BY b.trace_id""", {"ids": ids}).fetchall())


def _found(copy: SeenCopy, con: duckdb.DuckDBPyConnection, ids: list[str]) -> set:  # type: ignore[type-arg]
    found = copy.find(con, ids)
    assert found is not None
    return set(found)


def test_trace_key_is_duckdbs_md5_number_lower() -> None:
    ids = ["", "a", "0af7651916cd43dd8448eb211c80319c", "trace-é-日本", "x" * 300]
    con = duckdb.connect()
    expected = [row[0] for row in con.execute(
        "SELECT md5_number_lower(unnest($ids::VARCHAR[]))", {"ids": ids}).fetchall()]
    assert [trace_key(i) for i in ids] == expected


def test_the_copy_answers_as_the_table_through_appends_deletes_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "seen.duckdb"
    ids = [f"trace-{i}" for i in range(40)]
    copy = SeenCopy()
    with open_store(path, read_only=False) as con:
        assert _found(copy, con, ids) == set()  # an empty table
        insert = "INSERT INTO seen_traces VALUES (md5_number_lower($id), $at)"
        for i in range(10):
            con.execute(insert, {"id": ids[i], "at": datetime(2026, 1, 1, 0, i)})
        assert _found(copy, con, ids) == _in_table(con, ids) != set()
        # The same key twice: the earliest time answers, whichever row came first.
        con.execute(insert, {"id": ids[3], "at": datetime(2025, 6, 1)})
        con.execute(insert, {"id": ids[20], "at": datetime(2026, 2, 1)})
        con.execute(insert, {"id": ids[20], "at": datetime(2026, 1, 15)})
        assert _found(copy, con, ids) == _in_table(con, ids)
        assert (ids[3], datetime(2025, 6, 1)) in _found(copy, con, ids)
        # Rows deleted (nothing in cliffwatch does; a person might): the copy reloads.
        con.execute("DELETE FROM seen_traces WHERE trace_key = md5_number_lower($id)",
                    {"id": ids[5]})
        assert _found(copy, con, ids) == _in_table(con, ids)
        assert ids[5] not in {trace_id for trace_id, _ in _found(copy, con, ids)}
        con.execute("CHECKPOINT")  # the deleted row's place may be reused
        con.execute(insert, {"id": ids[30], "at": datetime(2026, 3, 1)})
        assert _found(copy, con, ids) == _in_table(con, ids)
        # More rows appended than the copy keeps unsorted: it reloads, and still answers.
        monkeypatch.setattr(seen_copy, "RELOAD_AFTER_ROWS", 2)
        for i in range(31, 40):
            con.execute(insert, {"id": ids[i], "at": datetime(2026, 4, 1, 0, i)})
        assert _found(copy, con, ids) == _in_table(con, ids)
        assert len(_found(copy, con, ids)) == 9 + 1 + 1 + 9  # 0-9 but 5, 20, 30, 31-39
        # A table over the bound: no copy, the caller looks in the table.
        monkeypatch.setattr(seen_copy, "MAX_COPY_TRACES", 5)
        assert copy.find(con, ids) is None


def _spans(path: Path) -> int:
    with open_store(path, read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM spans").fetchall()[0][0])


def test_a_held_writer_keeps_out_spans_another_writer_stored_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    held = HeldStore(path, hold_max_s=60)
    write_spans(path, make_run_records(seed=41), held=held)  # loads the copy
    held.release()
    # Written while the held writer let go: by a short connection, as another process.
    write_spans(path, make_run_records(seed=42))
    stored = _spans(path)
    # Re-sent through the held writer: its copy must have caught up, or these are new.
    write_spans(path, make_run_records(seed=42), held=held)
    write_spans(path, make_run_records(seed=41), held=held)
    # Part of a trace first, then the whole trace: the late spans are added, once.
    late = make_run_records(seed=43)
    write_spans(path, late[:2], held=held)
    write_spans(path, late, held=held)
    write_spans(path, late, held=held)
    held.release()
    assert _spans(path) == stored + len(late)
