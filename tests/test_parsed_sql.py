"""The write path's parsed-statement cache (telemetry/parsed_sql.py), on a real DuckDB file."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pytest

from cliffwatch.telemetry import parsed_sql
from cliffwatch.telemetry.parsed_sql import ParsedStatements, parsed


@pytest.fixture
def con(tmp_path: Path):  # type: ignore[no-untyped-def]
    connection = duckdb.connect(str(tmp_path / "store.duckdb"))
    connection.execute("CREATE TABLE t (k INTEGER, v VARCHAR)")
    yield connection
    connection.close()


def test_a_statement_parsed_once_runs_again_with_new_parameters(con) -> None:  # type: ignore[no-untyped-def]
    wrapped = ParsedStatements(con)
    insert = "INSERT INTO t VALUES ($k, $v)"
    for k in range(3):
        wrapped.execute(insert, {"k": k, "v": f"v{k}"}).fetchall()
    assert parsed(con, insert) is parsed(con, insert)  # the same parsed tree each time
    assert wrapped.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [
        (0, "v0"), (1, "v1"), (2, "v2")]
    # Everything else is the connection's own.
    assert wrapped.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_several_statements_in_one_text_run_as_text(con) -> None:  # type: ignore[no-untyped-def]
    text = "INSERT INTO t VALUES (7, 'a'); INSERT INTO t VALUES (8, 'b')"
    assert parsed(con, text) is None
    ParsedStatements(con).execute(text)
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(2,)]


def test_errors_are_duckdb_errors_as_for_text(con) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(duckdb.CatalogException, match="nope"):
        ParsedStatements(con).execute("SELECT * FROM nope")
    with pytest.raises(duckdb.ParserException):
        ParsedStatements(con).execute("SELEC 1")


def test_the_cache_is_bounded_and_per_thread(con, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(parsed_sql, "MAX_STATEMENTS", 4)
    texts = [f"SELECT {i} AS x" for i in range(10)]
    for text in texts:
        assert ParsedStatements(con).execute(text).fetchall()[0][0] == int(text.split()[1])
    cache = parsed_sql._cache()
    assert list(cache) == texts[-4:]  # the least recently run were dropped
    seen_elsewhere: list[int] = []
    worker = threading.Thread(target=lambda: seen_elsewhere.append(len(parsed_sql._cache())))
    worker.start()
    worker.join()
    assert seen_elsewhere == [0]  # another thread parses its own
