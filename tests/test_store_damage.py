"""A damaged store is one line, at open or at query time; the real cause of a failed
write is the error raised (never the ROLLBACK's "no transaction is active")."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from cliffwatch.telemetry.store import (
    StoreDamagedError,
    StoreError,
    open_store,
    transaction,
)
from cliffwatch.telemetry.testing import make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

HEADERS_BYTES = 3 * 4096  # DuckDB's file headers, before block 0


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("damage") / "sound.duckdb"
    write_spans(path, make_runs_costing([0.01 * (i + 1) for i in range(40)], seed=3))
    return path


def _copy(sound: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copyfile(sound, path)
    return path


@pytest.mark.parametrize("read_only", [True, False])
def test_a_store_cut_to_half_is_damaged_at_open(
    sound_store: Path, tmp_path: Path, read_only: bool
) -> None:
    path = _copy(sound_store, tmp_path, "half.duckdb")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(StoreDamagedError, match=r"is damaged: .* \(truncated\?\)") as info:
        with open_store(path, read_only=read_only):
            pass
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("size_bytes", [5_000, 100_000])
def test_a_store_cut_before_what_duckdb_reads_to_open_is_damaged(
    sound_store: Path, tmp_path: Path, read_only: bool, size_bytes: int
) -> None:
    # DuckDB itself fails to open such a file ("Could not read enough bytes"): the same
    # damaged-store line as a store cut further on, never DuckDB's own message.
    path = _copy(sound_store, tmp_path, "cut.duckdb")
    with path.open("r+b") as f:
        f.truncate(size_bytes)
    with pytest.raises(StoreDamagedError, match=r"is damaged: .* \(truncated\?\)") as info:
        with open_store(path, read_only=read_only):
            pass
    assert f"store {path} is damaged: the file is {size_bytes:,} bytes" in str(info.value)
    assert "IO Error" not in str(info.value) and "\n" not in str(info.value)
    assert path.stat().st_size == size_bytes


def test_a_sound_store_opens_after_writes_and_checkpoints(sound_store: Path,
                                                          tmp_path: Path) -> None:
    # A checkpoint cuts free blocks off the file: the length check must allow for it.
    path = _copy(sound_store, tmp_path, "grown.duckdb")
    for seed in (4, 5, 6):
        write_spans(path, make_runs_costing([0.02, 0.03], seed=seed))
        con = duckdb.connect(str(path))
        con.execute("CHECKPOINT")
        con.close()
        with open_store(path, read_only=True) as con:
            assert con.sql("SELECT count(*) FROM runs").fetchall()[0][0] > 40


def test_a_corrupt_block_is_damaged_when_read(sound_store: Path, tmp_path: Path) -> None:
    path = _copy(sound_store, tmp_path, "flipped.duckdb")
    with open_store(path, read_only=True) as con:
        block_size = con.sql("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        block_id = con.sql(
            "SELECT max(block_id) FROM pragma_storage_info('spans') WHERE block_id >= 0"
        ).fetchall()[0][0]
    with path.open("r+b") as f:  # flip bytes inside one data block of the spans table
        f.seek(HEADERS_BYTES + block_id * block_size + 512)
        data = f.read(64)
        f.seek(HEADERS_BYTES + block_id * block_size + 512)
        f.write(bytes(b ^ 0xFF for b in data))
    # DuckDB checks a block's checksum when it reads it: at open when the block holds
    # catalog data too, else at the first query that reads it; one error either way.
    with pytest.raises(StoreDamagedError, match="damaged .*checksum") as info:
        with open_store(path, read_only=True) as con:
            con.sql("SELECT * FROM spans").fetchall()
    assert isinstance(info.value.__cause__, duckdb.Error)
    assert "\n" not in str(info.value)


def test_query_errors_that_are_not_the_store_pass_through(sound_store: Path) -> None:
    with open_store(sound_store, read_only=True) as con:
        with pytest.raises(duckdb.BinderException):
            con.sql("SELECT no_such_column FROM runs").fetchall()


def test_a_failed_commit_is_the_error_raised_not_the_rollback(tmp_path: Path) -> None:
    # When COMMIT fails (a full disk), DuckDB has already ended the transaction and the
    # ROLLBACK of the error path fails with "no transaction is active": the block's own
    # error must come out. A COMMIT inside the block stands in for that state here.
    with open_store(tmp_path / "t.duckdb", read_only=False) as con:
        with pytest.raises(ValueError, match="the real cause"):
            with transaction(con):
                con.execute("COMMIT")
                raise ValueError("the real cause")
        with transaction(con):  # and the connection is usable afterwards
            con.execute("CREATE TABLE t AS SELECT 1 AS x")
        assert con.sql("SELECT x FROM t").fetchall() == [(1,)]


def test_an_error_in_a_transaction_rolls_it_back(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.duckdb", read_only=False) as con:
        con.execute("CREATE TABLE t (x INTEGER NOT NULL)")
        with pytest.raises(duckdb.ConstraintException):
            with transaction(con):
                con.execute("INSERT INTO t VALUES (1)")
                con.execute("INSERT INTO t VALUES (NULL)")
        assert con.sql("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_store_errors_are_cliffwatch_errors() -> None:
    assert issubclass(StoreDamagedError, StoreError)
