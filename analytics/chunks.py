"""Run-id range chunks for reads that group the store's spans by run.

A read that groups every LLM call by run (the what-if's per-run arithmetic, the class
estimates on ClickHouse) holds one group per run: at a million runs that is more than
DuckDB's memory bound for bulk reads (:mod:`analytics.bulk_read`), and DuckDB spills to
disk. Read a chunk of runs at a time instead, each chunk a run-id range. (The class
estimates on DuckDB are one query now: grouped per run before they are joined to the runs,
their spill costs less than the chunks did; :mod:`analytics.estimates`.)

Two ways to read the chunks' spans: a range filter on the spans' ``trace_id`` per chunk
(:func:`range_filters`; still the ClickHouse path, which stages nothing), which
lets DuckDB skip row groups only where spans are stored in id order, and no real store's
are (OpenTelemetry ids are random; rows lie in ingestion order): there every chunk reads
every row group. On DuckDB a what-if replaying many chunks of runs therefore partitions
their spans once into Parquet files per chunk (:func:`partition_by_chunk`) and reads each
chunk's files (issue 11: the what-if at 1M runs with random ids, side by side, 83 -> 54 s);
a few chunks are read inline (:data:`analytics.whatif_rows.STAGE_MIN_CHUNKS`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

Bounds = tuple[str | None, str | None]
"""A run-id range: ``(low, high)``, low inclusive, high exclusive, None open."""


def chunk_bounds(
    con: duckdb.DuckDBPyConnection, scope_sql: str, params: dict[str, Any], runs: int,
    per_chunk: int,
) -> list[Bounds]:
    """``[(low, high), ...]`` run-id ranges splitting the ``runs`` runs of ``scope_sql``
    (a query with a ``run_id`` column, named parameters ``params``) into chunks of about
    ``per_chunk`` runs; ``[(None, None)]`` (one open range) when one chunk holds them."""
    chunks = -(-runs // per_chunk)
    if chunks <= 1:
        return [(None, None)]
    # the run ids at the quantile_disc positions (1-based ceil(runs * q)), by row number:
    # the same cuts, in SQL that DuckDB and ClickHouse both run (no quantile of strings)
    positions = sorted({max(1, math.ceil(runs * i / chunks)) for i in range(1, chunks)})
    rows = con.sql(f"SELECT run_id FROM (SELECT run_id, row_number() OVER (ORDER BY run_id) "
                   f"AS n FROM ({scope_sql})) WHERE n IN ({', '.join(map(str, positions))})",
                   params=params or None).fetchall()
    cuts = sorted({row[0] for row in rows})
    edges: list[str | None] = [None, *cuts, None]
    return list(zip(edges[:-1], edges[1:], strict=True))


def range_filters(
    bounds: Bounds, run_column: str, span_column: str, params: dict[str, Any]
) -> tuple[list[str], str]:
    """SQL for the run-id range ``bounds``: ``(conditions on run_column, " AND ..." on
    span_column)``, adding ``$chunk_low`` / ``$chunk_high`` to ``params`` (in place). The
    span filter is a plain range (DuckDB skips row groups outside it), on top of the
    caller's join or semi-join to its runs."""
    conds: list[str] = []
    spans = ""
    for key, op, value in (("chunk_low", ">=", bounds[0]), ("chunk_high", "<", bounds[1])):
        if value is not None:
            conds.append(f"{run_column} {op} ${key}")
            spans += f" AND {span_column} {op} ${key}"
            params[key] = value
    return conds, spans


class ChunkFiles(NamedTuple):
    """One chunk written by :func:`partition_by_chunk`: SQL reading its files back.

    Attributes:
        keys: ``read_parquet(...)`` of the chunk's runs: the scope query's columns and
            ``rk`` (the run's integer key, 1.. in run-id order over every chunk).
        rows: ``read_parquet(...)`` of the chunk's rows of the partitioned query (no
            ``chunk`` column); a chunk none of whose runs has a row gets an empty file of
            the same columns.
    """

    keys: str
    rows: str


def _read(path: Path) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_parquet('{quoted}', hive_partitioning = false)"


def partition_by_chunk(
    con: duckdb.DuckDBPyConnection, scope_sql: str, params: dict[str, Any], chunks_n: int,
    rows_sql: str, directory: Path,
) -> list[ChunkFiles]:
    """Split the runs of ``scope_sql`` into ``chunks_n`` chunks (run-id order, even sizes)
    and write the rows of ``rows_sql`` to Parquet files per chunk, in ONE read of
    whatever ``rows_sql`` reads, whatever the order its table's rows are stored in.

    Why: a run-id range filter per chunk (:func:`range_filters`) lets DuckDB skip the span
    blocks outside the range only where spans are stored in trace-id order; a real store's
    ids are random (OTel), so each of n chunks read every block: n scans of the spans
    table (at 1M runs and 40 chunks the what-if's staging took 52 s against 16.5 s on an
    id-ordered store, issue 11). One ``COPY ... PARTITION_BY (chunk)`` reads them once
    (:func:`_copy_chunks`). (A streaming read whose rows Python routed to the chunks'
    files took less CPU under a 256 MB bound but held up to ~200 MB more outside it; it
    went when the what-if began to stage only the runs it replays, issue 11.)

    Args:
        con: a DuckDB connection (DuckDB only).
        scope_sql: a query with a ``run_id`` column (named parameters ``params``): the
            runs to split; its columns are kept in the keys files.
        params: ``scope_sql``'s and ``rows_sql``'s named parameters.
        chunks_n: how many chunks (at least 1; a chunk can be empty when there are fewer
            runs than chunks).
        rows_sql: the query whose rows are partitioned; ``{keys}`` in it is replaced by a
            query of the runs' keys: the scope's columns, ``rk`` and ``chunk`` (0-based).
            It must return a ``chunk`` column (from the keys it joins), which decides
            each row's file and is left out of it.
        directory: an existing, empty directory the files are written under (the
            caller's to remove: a ``tempfile.TemporaryDirectory``).

    Returns:
        ``[ChunkFiles, ...]``, one per chunk in run-id order (every chunk's files exist).

    Raises:
        duckdb.Error: a query failed (files written so far stay in ``directory``).

    Disk: the files are LZ4-compressed Parquet (a few typed columns a row: the what-if's
    replayed runs' spans). Memory: DuckDB's partitioned writer holds a buffer per chunk,
    under the connection's ``memory_limit``.
    """
    chunks_n = max(1, chunks_n)
    keys_dir, rows_dir = directory / "keys", directory / "rows"
    number = "row_number() OVER (ORDER BY run_id)"
    _copy_chunks(con, f"SELECT *, {number} AS rk, ({number} - 1) * {chunks_n} // count(*) "
                      f"OVER () AS chunk FROM ({scope_sql})", _used(params, scope_sql),
                 chunks_n, keys_dir)
    keys = (f"SELECT * FROM read_parquet('{_quoted(keys_dir)}/*/*.parquet', "
            "hive_partitioning = true)")
    sql = rows_sql.replace("{keys}", keys)
    _copy_chunks(con, sql, _used(params, sql), chunks_n, rows_dir)
    return [ChunkFiles(_read(keys_dir / f"chunk={chunk}" / "*.parquet"),
                       _read(rows_dir / f"chunk={chunk}" / "*.parquet"))
            for chunk in range(chunks_n)]


def _copy_chunks(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], chunks_n: int,
    folder: Path,
) -> None:
    """The rows of ``sql`` (a ``chunk`` column, 0 .. ``chunks_n`` - 1, and others) in
    Parquet files under ``folder/chunk=<k>/`` (an empty file of the same columns for a
    chunk without rows), without the ``chunk`` column: one ``COPY ... PARTITION_BY``.

    Raises:
        duckdb.Error: the query failed."""
    con.execute(f"COPY ({sql}) TO '{_quoted(folder)}' (FORMAT parquet, "
                "PARTITION_BY (chunk), COMPRESSION lz4_raw)", params or None)
    for chunk in range(chunks_n):
        path = folder / f"chunk={chunk}"
        if not path.exists():
            path.mkdir(parents=True)
            con.execute(f"COPY (SELECT * EXCLUDE (chunk) FROM ({sql}) LIMIT 0) "
                        f"TO '{_quoted(path / 'empty.parquet')}' (FORMAT parquet)",
                        params or None)


def _used(params: dict[str, Any], sql: str) -> dict[str, Any]:
    """The parameters ``sql`` names (DuckDB refuses one it does not): ``$name`` as a whole
    word, so ``$chunk`` is not taken for ``$chunk_low``."""
    named = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql))
    return {key: value for key, value in params.items() if key in named}


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
