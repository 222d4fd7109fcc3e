"""A process's copy of ``seen_traces`` (telemetry/seen_copy.py) answers as the table does,
whoever wrote the table meanwhile (this process on another connection, another process),
and a re-sent span through it adds nothing; a late span of an old trace is still added."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from waits import scaled

from cliffwatch.telemetry import seen_copy
from cliffwatch.telemetry.seen_copy import SeenCopy, copy_for, trace_key
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


def test_a_process_keeps_one_copy_a_file_from_a_short_writers_second_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_copy, "_COPIES", type(seen_copy._COPIES)())
    monkeypatch.setattr(seen_copy, "_SHORT_WRITES", type(seen_copy._SHORT_WRITES)())
    monkeypatch.setattr(seen_copy, "MAX_COPIES", 2)
    a, b, c = (tmp_path / f"{n}.duckdb" for n in "abc")
    assert copy_for(a, held=False) is None  # a one-off write looks in the table
    copy = copy_for(a, held=False)
    assert copy is not None
    assert copy_for(os.path.relpath(a), held=True) is copy  # one copy a file, any spelling
    assert copy_for(b, held=True) is not None  # a held writer: at once
    assert copy_for(c, held=True) is not None
    assert copy_for(a, held=True) is not copy  # the least recently written was dropped


def _counting_finds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the lookups answered by a copy (not by the table)."""
    answered: list[int] = []
    find = SeenCopy.find

    def counted(self, con, trace_ids):  # type: ignore[no-untyped-def]
        found = find(self, con, trace_ids)
        if found is not None:
            answered.append(len(found))
        return found

    monkeypatch.setattr(SeenCopy, "find", counted)
    return answered


def _run_cost(path: Path, run_id: str) -> tuple[float, int]:
    with open_store(path, read_only=True) as con:
        row = con.execute("SELECT cost_usd, llm_calls FROM runs WHERE run_id = $id",
                          {"id": run_id}).fetchall()
    assert len(row) == 1, row
    return float(row[0][0]), int(row[0][1])


def test_short_writes_through_the_copy_keep_out_resent_spans_and_take_late_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _counting_finds(monkeypatch)
    path = tmp_path / "short.duckdb"
    old = make_run_records(seed=50, worker_cost_usds=(0.01, 0.02, 0.03))
    root_first = sorted(old, key=lambda r: r.parent_span_id is not None)
    write_spans(path, root_first[:2])  # the root and one call: the first write, no copy
    assert answered == []
    for seed in range(51, 81):  # thirty writes of other runs, through the copy
        write_spans(path, make_run_records(seed=seed))
    assert len(answered) == 30
    stored = _spans(path)
    for seed in (51, 60, 80):  # re-sent: nothing added
        assert write_spans(path, make_run_records(seed=seed)).spans_written == 0
    # The rest of the old trace, long after its first spans, with those sent again.
    assert write_spans(path, old).spans_written == len(old) - 2
    assert write_spans(path, old).spans_written == 0
    assert _spans(path) == stored + len(old) - 2
    assert _run_cost(path, old[0].trace_id) == (pytest.approx(0.001 + 0.06 + 0.0005), 5)
    assert len(answered) == 30 + 5 and answered[-2:] == [1, 1]


def test_a_held_and_a_short_writer_of_one_process_share_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _counting_finds(monkeypatch)
    path = tmp_path / "both.duckdb"
    held = HeldStore(path, hold_max_s=60)
    write_spans(path, make_run_records(seed=61), held=held)
    # The held connection stays open: this process's short connection writes beside it.
    first = make_run_records(seed=61)
    late = make_run_records(seed=62)
    assert write_spans(path, late[:3]).spans_written == 3
    assert write_spans(path, late[:3], held=held).spans_written == 0
    assert write_spans(path, late, held=held).spans_written == len(late) - 3
    assert write_spans(path, first).spans_written == 0
    held.release()
    assert _spans(path) == len(first) + len(late)
    assert len(answered) == 5  # every write but none: all through the one copy


_OTHER_WRITER = """
import sys
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans
path, seed, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
records = make_run_records(seed=seed)
print(write_spans(path, records[:first] if first else records).spans_written)
"""


def _other_process_writes(path: Path, seed: int, first: int = 0) -> int:
    """Spans written by another process: run ``seed``'s trace (its first ``first`` spans)."""
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_WRITER, str(path), str(seed), str(first)],
        capture_output=True, text=True, timeout=scaled(120),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.slow
def test_another_process_writing_between_two_writes_leaves_no_copy_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _counting_finds(monkeypatch)
    path = tmp_path / "two.duckdb"
    held = HeldStore(path, hold_max_s=60)
    write_spans(path, make_run_records(seed=71), held=held)  # loads the copy
    write_spans(path, make_run_records(seed=72))  # a short write of this process too
    held.release()  # another process can open the file only now
    assert _other_process_writes(path, 73) > 0
    late = make_run_records(seed=74)
    assert _other_process_writes(path, 74, first=2) == 2
    stored = _spans(path)
    # Through the held writer, then through this process's short connections: what the
    # other process stored is found, and its trace's late spans are added once.
    assert write_spans(path, make_run_records(seed=73), held=held).spans_written == 0
    assert write_spans(path, late, held=held).spans_written == len(late) - 2
    held.release()
    assert _other_process_writes(path, 75) == len(make_run_records(seed=75))
    assert write_spans(path, make_run_records(seed=75)).spans_written == 0
    assert write_spans(path, late).spans_written == 0
    assert _spans(path) == stored + len(late) - 2 + len(make_run_records(seed=75))
    assert answered == [0, 0, 1, 1, 1, 1]  # every write of this process through its copy
