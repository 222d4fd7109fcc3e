"""The leaf flags of a scope where every LLM call is a leaf (telemetry/leaf_calls.py,
``_ALL_CALLS_LEAVES``) are those the full rule (``_LEAF_FLAGS``: the walk of every call's
ancestors and the duplicate rule) computes, on random trees; and the shortcut is taken
only where it may be."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pyarrow as pa

from cliffwatch.telemetry import leaf_calls

_SCOPE_DDL = """
CREATE TABLE scope (trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR,
    is_llm_call BOOLEAN, reported_cost_usd DOUBLE, cache_read_tokens BIGINT,
    cache_creation_tokens BIGINT, start_time_unix_nano BIGINT, end_time_unix_nano BIGINT,
    scope_name VARCHAR, input_tokens BIGINT, output_tokens BIGINT, response_id VARCHAR,
    model_asked VARCHAR, model_answered VARCHAR, is_leaf_call BOOLEAN, duplicate_of VARCHAR)
"""


def _random_scope(rng: random.Random, traces: int) -> list[tuple]:  # type: ignore[type-arg]
    rows = []
    for t in range(traces):
        spans = rng.randint(1, 8)
        calls_have_children = rng.random() < 0.4
        two_scopes = rng.random() < 0.3
        ids = [f"{t:04d}{i:012d}" for i in range(spans)]
        for i, span_id in enumerate(ids):
            parents = [j for j in range(i) if calls_have_children or not rows[-i + j][3]]
            parent = None if i == 0 else ids[rng.choice(parents)] if parents else ids[0]
            is_call = None if rng.random() < 0.05 else (i > 0 and rng.random() < 0.6)
            scope = rng.choice(["a", "b"]) if two_scopes else "a"
            rows.append((f"trace{t}", span_id, parent, is_call,
                         rng.choice([None, 0.01]), rng.choice([None, 5]), None,
                         i * 10, i * 10 + 50, scope if is_call else None, 100, 20,
                         rng.choice([None, "r1"]), "m", "m",
                         rng.choice([None, True, False]), rng.choice([None, None, "x"])))
    return rows


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:  # type: ignore[type-arg]
    """Append ``rows`` (tuples in the table's column order) to ``scope`` as one Arrow
    table (not executemany: a statement a row)."""
    names = [column[0] for column in con.execute("SELECT * FROM scope LIMIT 0").description]
    con.register("scope_rows", pa.Table.from_pylist([dict(zip(names, row, strict=True))
                                                     for row in rows]))
    try:
        con.execute("INSERT INTO scope SELECT * FROM scope_rows")
    finally:
        con.unregister("scope_rows")


def _flags(con: duckdb.DuckDBPyConnection) -> list[tuple]:  # type: ignore[type-arg]
    return con.execute(f"SELECT * FROM {leaf_calls.FLAGS} ORDER BY trace_id, span_id"
                       ).fetchall()


def test_the_shortcut_gives_the_full_rules_flags_where_it_is_taken(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "flags.duckdb"))
    taken = full = 0
    for seed in range(60):
        rng = random.Random(seed)
        con.execute("DROP TABLE IF EXISTS scope")
        con.execute(_SCOPE_DDL)
        _insert(con, _random_scope(rng, rng.randint(1, 6)))
        two_scopes, call_parents, changed = con.execute(
            leaf_calls._SHAPE.format(scope_spans="scope")).fetchall()[0]
        con.execute(leaf_calls._LEAF_FLAGS.format(
            scope_spans="scope", duplicate_rule=leaf_calls.DUPLICATE_RULE,
            dup=leaf_calls._DUPLICATES, flags=leaf_calls.FLAGS))
        expected = _flags(con)
        if two_scopes or call_parents:
            full += 1
            # Where the shortcut is not taken, some call is not a leaf, or two are one,
            # or neither can be ruled out by the shape alone.
            continue
        taken += 1
        assert bool(changed) == any(row[4] for row in expected)
        con.execute(leaf_calls._ALL_CALLS_LEAVES.format(scope_spans="scope",
                                                        flags=leaf_calls.FLAGS))
        assert _flags(con) == expected
    assert taken >= 10 and full >= 10  # both ways were exercised


def test_a_call_that_is_a_parent_takes_the_full_rule(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "parent.duckdb"))
    con.execute(_SCOPE_DDL)
    row = ("t", "root", None, False, None, None, None, 0, 100, None, 1, 1, None, "m", "m",
           False, None)
    wrapper = ("t", "wrap", "root", True, None, None, None, 1, 90, "a", 1, 1, None, "m", "m",
               True, None)
    tool = ("t", "tool", "wrap", False, None, None, None, 2, 80, None, 1, 1, None, "m", "m",
            False, None)
    _insert(con, [row, wrapper])
    assert con.execute(leaf_calls._SHAPE.format(scope_spans="scope")).fetchall()[0][:2] == (
        False, False)
    # A non-call child under the call: the shape cannot tell whether a call lies below.
    _insert(con, [tool])
    assert con.execute(leaf_calls._SHAPE.format(scope_spans="scope")).fetchall()[0][1]
