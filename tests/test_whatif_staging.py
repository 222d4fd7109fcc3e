"""The what-if's staging (analytics/chunks.py ``partition_by_chunk``, analytics/whatif_sql.py
``stage_chunks``): one read of the spans split into run chunks, each chunk's files read
back; the same rows as the Python counterfactual in chunks; temporary files removed, also
when a read fails."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from test_whatif_sql import NOW, OVERRIDES, _differences, _random_run

from cliffwatch.analytics import whatif_rows
from cliffwatch.analytics.chunks import partition_by_chunk
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import read_recorded_runs
from cliffwatch.analytics.whatif import what_if, what_ifs
from cliffwatch.analytics.whatif_rows import decided_alike
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans

_ROWS = ("SELECT k.chunk, k.rk, sp.trace_id, sp.span_id FROM spans sp "
         "JOIN ({keys}) k ON k.run_id = sp.trace_id")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("staging") / "runs.duckdb"
    write_spans(path, [r for n in range(50) for r in _random_run(rng, n)])
    return path


@pytest.mark.parametrize("chunks_n", [1, 7, 80])
def test_every_run_and_row_lands_in_one_chunk_in_run_id_order(
    store: Path, tmp_path: Path, chunks_n: int
) -> None:
    with open_store(store, read_only=True) as con:
        ids = [r[0] for r in con.sql("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
        files = partition_by_chunk(con, "SELECT run_id, task_class FROM runs", {}, chunks_n,
                                   _ROWS, tmp_path)
        assert len(files) == chunks_n
        seen: list[str] = []
        rows = 0
        for chunk in files:
            mine = [r[0] for r in con.sql(
                f"SELECT run_id FROM {chunk.keys} ORDER BY run_id").fetchall()]
            assert con.sql(f"SELECT * FROM {chunk.keys}").columns == [
                "run_id", "task_class", "rk"]
            seen += mine
            # a chunk's rows are its runs' spans, the run's key with each
            assert con.sql(f"SELECT count(*) FROM {chunk.rows} r JOIN {chunk.keys} k "
                           "ON k.run_id = r.trace_id AND k.rk = r.rk").fetchall()[0][0] == \
                con.sql(f"SELECT count(*) FROM {chunk.rows}").fetchall()[0][0]
            rows += con.sql(f"SELECT count(*) FROM {chunk.rows}").fetchall()[0][0]
            assert con.sql(f"SELECT * FROM {chunk.rows}").columns == ["rk", "trace_id",
                                                                       "span_id"]
        assert seen == ids  # each once, the chunks in run-id order
        assert rows == spans
        if chunks_n > len(ids):  # empty chunks read as empty files of the same columns
            assert any(con.sql(f"SELECT count(*) FROM {c.keys}").fetchall()[0][0] == 0
                       for c in files)


def test_no_runs_gives_empty_chunks(store: Path, tmp_path: Path) -> None:
    with open_store(store, read_only=True) as con:
        files = partition_by_chunk(con, "SELECT run_id FROM runs WHERE run_id = $none",
                                   {"none": "-"}, 3, _ROWS, tmp_path)
        for chunk in files:
            assert con.sql(f"SELECT count(*) FROM {chunk.rows}").fetchall()[0][0] == 0
            assert con.sql(f"SELECT count(*) FROM {chunk.keys}").fetchall()[0][0] == 0


def test_a_parameter_named_as_the_start_of_another_is_passed_only_where_named(
    store: Path, tmp_path: Path
) -> None:
    # the scope names $cls_x only: $cls, which the rows query names, must not be passed
    # to the scope's COPY (DuckDB refuses a parameter a statement does not name)
    with open_store(store, read_only=True) as con:
        cls = con.sql("SELECT min(task_class) FROM runs").fetchall()[0][0]
        wanted = con.sql("SELECT count(*) FROM spans sp JOIN runs r ON r.run_id = sp.trace_id "
                         "WHERE r.task_class = ?", params=[cls]).fetchall()[0][0]
        rows = _ROWS + " WHERE sp.trace_id IN (SELECT run_id FROM runs WHERE task_class = $cls)"
        files = partition_by_chunk(con, "SELECT run_id FROM runs WHERE task_class = $cls_x",
                                   {"cls": cls, "cls_x": cls}, 3, rows, tmp_path)
        got = sum(con.sql(f"SELECT count(*) FROM {c.rows}").fetchall()[0][0] for c in files)
        assert got == wanted > 0


@pytest.mark.parametrize("stage_min_chunks", [1, 1000])
def test_a_window_with_the_estimates_given_is_staged_in_chunks(
    store: Path, monkeypatch: pytest.MonkeyPatch, stage_min_chunks: int
) -> None:
    # the findings' and report's path: the class estimates given, the window's runs
    # staged in chunks of CHUNK_PAIRS (variant, run) pairs, replayed one at a time; or,
    # as few chunks are, read inline chunk by chunk
    monkeypatch.setattr(whatif_rows, "CHUNK_PAIRS", 6)
    monkeypatch.setattr(whatif_rows, "STAGE_MIN_CHUNKS", stage_min_chunks)
    window = Window.parse("2026-11-01T00:20:00", None)
    with open_store(store, read_only=True) as con:
        for task_class in (None, "research"):
            estimates = load_estimates(con, task_class)
            for override in OVERRIDES[:4]:
                sql = what_if(con, override, window, task_class, now=NOW, estimates=estimates)
                py = what_if(con, override, window, task_class, now=NOW, pushdown=False)
                assert 0 < sql.runs.height < 50
                assert _differences(sql.runs, py.runs) == [], override.describe()


@pytest.mark.parametrize("given", [False, True])
def test_the_staged_files_are_removed_after_a_read_and_after_a_failure(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(whatif_rows, "CHUNK_PAIRS", 9)
    monkeypatch.setattr(whatif_rows, "STAGE_MIN_CHUNKS", 1)
    monkeypatch.setattr("cliffwatch.analytics.whatif_sql.CHUNK_RUNS", 9)
    with open_store(store, read_only=True) as con:
        estimates = load_estimates(con) if given else None
        assert what_if(con, OVERRIDES[0], estimates=estimates).runs.height == 50
        assert list(tmp_path.iterdir()) == []
        staged: list[Path] = []

        def fail(*args: object) -> None:
            # the chunks are on disk when their replay fails
            staged.extend(Path(tempfile.gettempdir()).glob("cliffwatch-whatif-*/**/*.parquet"))
            raise RuntimeError("read failed")

        monkeypatch.setattr(whatif_rows, "sql_run_rows", fail)
        with pytest.raises(RuntimeError, match="read failed"):
            what_if(con, OVERRIDES[0], estimates=estimates)
        assert len(staged) > 2
        assert list(tmp_path.iterdir()) == []


def test_a_what_if_stages_the_runs_it_replays_only(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runs each variant's limits decide as recorded keep their record: their spans are
    # never staged; every other run of the window is, once, whichever variants replay it
    staged: list[str] = []
    real = whatif_rows.stage_chunks

    def spy(con: Any, *args: Any) -> Any:
        files = real(con, *args)
        for chunk in files:
            staged.extend(r[0] for r in con.sql(f"SELECT run_id FROM {chunk.keys}").fetchall())
        return files

    monkeypatch.setattr(whatif_rows, "stage_chunks", spy)
    with open_store(store, read_only=True) as con:
        runs = read_recorded_runs(con).records()
        estimates = load_estimates(con)
        # fewer chunks than STAGE_MIN_CHUNKS (here one): read inline, nothing staged
        assert what_if(con, OVERRIDES[0], estimates=estimates).runs.height == 50
        assert staged == []
        monkeypatch.setattr(whatif_rows, "STAGE_MIN_CHUNKS", 1)
        for variants in ([OVERRIDES[0]], [OVERRIDES[0], OVERRIDES[4]]):
            staged.clear()
            assert [w.runs.height for w in what_ifs(con, variants, estimates=estimates)] == \
                [50] * len(variants)
            replayed = {run.run_id for run in runs for override in variants
                        if not decided_alike(run, override.apply(run.limits))}
            assert 0 < len(replayed) < 50
            assert sorted(staged) == sorted(replayed)
