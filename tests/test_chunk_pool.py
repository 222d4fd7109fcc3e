"""analytics/chunk_pool.py: chunks read side by side on cursors of one DuckDB database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cliffwatch.analytics.chunk_pool import WORKERS, Worker, chunk_cursors, in_order, one_worker


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect(str(tmp_path / "pool.duckdb"))
    db.execute("CREATE TABLE n AS SELECT range AS i FROM range(1000)")
    db.execute("SET threads = 2")
    return db


def _threads(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.sql("SELECT current_setting('threads')").fetchall()[0][0])


def test_results_come_in_task_order_from_every_cursor(con: duckdb.DuckDBPyConnection) -> None:
    frames = {"k": pl.DataFrame({"x": [10, 20]})}
    seen: set[str] = set()

    def task(i: int, worker: Worker) -> tuple[int, int, int]:
        cursor, names = worker
        seen.add(threading.current_thread().name)
        if i == 0:
            time.sleep(0.2)  # the first task ends last: its result still comes first
        # each cursor reads the store and its own registered frame
        total = cursor.sql(f"SELECT sum(x) FROM {names['k']}").fetchall()[0][0]
        below = cursor.sql(f"SELECT count(*) FROM n WHERE i < {i}").fetchall()[0][0]
        return i, int(total), int(below)

    with chunk_cursors(con, **frames) as workers:
        assert len(workers) == WORKERS == 2
        assert _threads(con) == 1  # two threads shared out between two cursors
        got = list(in_order(workers, [lambda w, i=i: task(i, w) for i in range(6)]))
    assert got == [(i, 30, i) for i in range(6)]
    assert len(seen) == 2 and all(name.startswith("cw-chunk") for name in seen)
    assert _threads(con) == 2  # put back


def test_a_task_error_is_raised_and_threads_put_back(con: duckdb.DuckDBPyConnection) -> None:
    def task(i: int, worker: Worker) -> int:
        if i == 2:
            worker[0].sql("SELECT * FROM no_such_table").fetchall()
        return i

    with pytest.raises(duckdb.CatalogException), chunk_cursors(con) as workers:
        list(in_order(workers, [lambda w, i=i: task(i, w) for i in range(5)]))
    assert _threads(con) == 2


def test_one_worker_runs_in_the_calling_thread(con: duckdb.DuckDBPyConnection) -> None:
    with one_worker(con, k=pl.DataFrame({"x": [1]})) as workers:
        assert workers[0][0] is con
        got = list(in_order(workers, [
            lambda w: (threading.current_thread() is threading.main_thread(),
                       w[0].sql(f"SELECT x FROM {w[1]['k']}").fetchall()[0][0])]))
    assert got == [(True, 1)]
    assert _threads(con) == 2
