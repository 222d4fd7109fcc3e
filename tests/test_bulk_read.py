"""run_bounded: a bound that keeps memory low never turns an answer into an error, and
nested bounded reads retry once, at the outermost, never one level at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
from waits import scaled

from cliffwatch.analytics.bulk_read import release_cache, run_bounded

# a hash aggregate over 2,000,000 distinct strings: far more than 8 MB of memory (a bound
# of a few KB would leave DuckDB unable to run even the statement that lifts it)
_HEAVY = "SELECT count(*) FROM (SELECT DISTINCT 'k' || range::VARCHAR FROM range(2000000))"


def _limit(con: duckdb.DuckDBPyConnection) -> str:
    return str(con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0])


def test_a_read_that_runs_out_under_the_bound_is_read_again_under_the_connections_own() -> None:
    con = duckdb.connect()
    own = _limit(con)
    limits: list[str] = []

    def work() -> int:
        limits.append(_limit(con))
        return int(con.sql(_HEAVY).fetchall()[0][0])

    assert run_bounded(con, work, limit="8MB") == 2000000
    assert len(limits) == 2 and limits[0] != own and limits[1] == own
    assert _limit(con) == own


def test_nested_bounded_reads_retry_once_at_the_outermost_without_bounds() -> None:
    con = duckdb.connect()
    own = _limit(con)
    inner_limits: list[str] = []

    def inner() -> int:
        inner_limits.append(_limit(con))
        return int(con.sql(_HEAVY).fetchall()[0][0])

    def outer() -> int:
        # a what-if inside the findings: its own bound inside the findings' one
        return run_bounded(con, inner, limit="8MB")

    assert run_bounded(con, outer, limit="16MB") == 2000000
    # first try under the inner bound, then the outermost's one retry with no bound set
    # anywhere (each level retrying under the bound around it made four tries)
    assert len(inner_limits) == 2, inner_limits
    assert inner_limits[1] == own
    assert _limit(con) == own
    # and the state is left clean: a later read is bounded again
    limits: list[str] = []
    run_bounded(con, lambda: limits.append(_limit(con)), limit="1GB")
    assert limits and limits[0] != own


def test_a_nested_read_without_a_limit_of_its_own_reads_under_the_enclosing_bound() -> None:
    # findings (their own lower bound) run what-ifs that bring no limit: those read under
    # the findings' bound, not the default one
    con = duckdb.connect()
    seen: list[str] = []
    run_bounded(con, lambda: run_bounded(con, lambda: seen.append(_limit(con))), limit="64MB")
    run_bounded(con, lambda: seen.append(_limit(con)), limit="64MB")
    run_bounded(con, lambda: seen.append(_limit(con)))  # alone: the default bound
    assert seen[0] == seen[1] != seen[2], seen


def _cached_mb(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.sql("SELECT sum(memory_usage_bytes) // 1048576 FROM duckdb_memory()")
               .fetchall()[0][0])


def test_release_cache_lets_go_of_read_blocks_and_puts_the_bound_back(tmp_path) -> None:
    path = str(tmp_path / "blocks.duckdb")
    with duckdb.connect(path) as con:
        con.execute("CREATE TABLE t AS SELECT md5(range::VARCHAR) || md5((range + 1)::VARCHAR)"
                    " AS s FROM range(3000000)")
    con = duckdb.connect(path, read_only=True)
    own = _limit(con)
    seen: dict[str, object] = {}

    def work() -> None:
        bound = _limit(con)
        con.sql("SELECT max(s) FROM t").fetchall()  # the table's blocks, read and kept
        seen["read"] = _cached_mb(con)
        release_cache(con)
        seen["released"] = _cached_mb(con)
        seen["bound"], seen["bound_after"] = bound, _limit(con)

    run_bounded(con, work, limit="512MB")
    assert isinstance(seen["read"], int) and seen["read"] >= 80, seen
    assert seen["released"] <= 64 < seen["read"], seen  # down to RELEASE_FLOOR
    assert seen["bound_after"] == seen["bound"] != own
    assert _limit(con) == own
    release_cache(con)  # outside any bound: the connection's own limit stays
    assert _limit(con) == own


def test_two_bulk_reads_in_threads_of_one_process_leave_the_databases_own_limit(
    tmp_path: Path,
) -> None:
    """Two connections to one file share DuckDB's settings: bulk reads side by side (two
    viewers' what-ifs in the dashboard server) run one at a time, so the second never
    finds the first's bound and puts it back for good after the first restored the own."""
    db = tmp_path / "store.duckdb"
    duckdb.connect(str(db)).close()
    first, second = duckdb.connect(str(db)), duckdb.connect(str(db))
    own = _limit(first)
    first_inside, second_inside, first_done = (threading.Event() for _ in range(3))
    overlapped: list[bool] = []

    def first_work() -> None:
        first_inside.set()
        # the second read starts meanwhile: it may not enter until this one has ended
        overlapped.append(second_inside.wait(scaled(1.0)))

    def second_work() -> None:
        second_inside.set()
        first_done.wait(scaled(30.0))  # end after the first (the order that broke)

    def run_first() -> None:
        run_bounded(first, first_work, limit="300MB")
        first_done.set()

    threads = [threading.Thread(target=run_first),
               threading.Thread(target=lambda: (first_inside.wait(scaled(30.0)),
                                                run_bounded(second, second_work,
                                                            limit="200MB")))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(60.0))
    assert overlapped == [False]
    assert second_inside.is_set()
    assert _limit(first) == _limit(second) == own
