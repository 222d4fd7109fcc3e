"""The what-if's chunk rows joined into one frame oldest first (whatif_rows._finish),
one column at a time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import polars as pl

from cliffwatch.analytics.whatif_rows import RUN_SCHEMA, _finish


def _chunk(rng: random.Random, n: int) -> pl.DataFrame:
    t0 = datetime(2026, 1, 1)
    rows = [{"run_id": f"{rng.getrandbits(64):016x}",
             "started_at": t0 + timedelta(minutes=rng.randrange(50)),
             "cost_before_usd": rng.random(), "affected": rng.random() < 0.5}
            for _ in range(n)]
    given = ("run_id", "started_at", "cost_before_usd", "affected")
    return pl.DataFrame(rows, schema={c: RUN_SCHEMA[c] for c in given}).select(
        pl.col(c) if c in given else pl.lit(None, RUN_SCHEMA[c]).alias(c) for c in RUN_SCHEMA)


def test_chunks_come_back_as_one_frame_oldest_first() -> None:
    rng = random.Random(5)
    parts = [_chunk(rng, n) for n in (40, 0, 25, 60)]
    expected = pl.concat(parts).sort("started_at", "run_id")
    got = _finish(parts)
    assert parts == []  # taken over
    assert got.schema == pl.Schema(RUN_SCHEMA)
    assert got.equals(expected)
    assert got["started_at"].is_sorted()


def test_no_chunk_is_an_empty_frame_of_the_schema() -> None:
    assert _finish([]).schema == pl.Schema(RUN_SCHEMA)
