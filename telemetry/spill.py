"""Spill files: span batches parked on local disk while the store cannot be written.

DuckDB lets one process hold a file read-write, or several hold it read-only, never both
(docs/sources.md#duckdb-single-writer). When a write fails (the lock not obtained within
``settings.lock_timeout_s()``, a full disk, a damaged store file), the writer
(:func:`telemetry.write_ledger.write_or_spill`) puts the batch here instead of dropping
it, and the next successful :func:`telemetry.write_pipeline.write_spans` on the same store
loads every pending file and deletes it after its transaction commits. Nothing is lost;
a crash between commit and delete only means the batch is loaded again, which adds
nothing (a span already stored is left out: ``write_pipeline.insert_new_spans``). When the
spill file cannot be written either (the same full disk), the batch is lost and the writer says so.

Layout: ``<db path>.spill/<time_ns>-<pid>-<random>.parquet`` (git-ignored). Each file is
written under a ``.tmp`` name and renamed into place (``os.replace`` is atomic on one
file system), so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cliffwatch.telemetry.records import ARROW_SCHEMA, SpanRecord, records_to_arrow

logger = logging.getLogger(__name__)

SPILL_SUFFIX = ".parquet"
BAD_SUFFIX = ".bad"


def spill_dir(db_path: str | os.PathLike[str]) -> Path:
    """The spill directory of a store: ``<db path>.spill`` beside the database file."""
    return Path(f"{os.fspath(db_path)}.spill")


def spill_records(db_path: str | os.PathLike[str], records: Sequence[SpanRecord]) -> Path:
    """Park ``records`` in a new spill file of ``db_path``'s store.

    Args:
        db_path: the store the records were meant for.
        records: the batch (written as one parquet file in :data:`ARROW_SCHEMA`).

    Returns:
        The spill file's path.

    Raises:
        OSError: the directory or file cannot be written (disk full, permissions).
    """
    directory = spill_dir(db_path)
    directory.mkdir(parents=True, exist_ok=True)
    # time first so that a sorted listing loads batches in the order they were spilled
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
    final = directory / f"{name}{SPILL_SUFFIX}"
    tmp = directory / f"{name}.tmp"
    try:
        pq.write_table(records_to_arrow(list(records)), tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk that filled up mid-file leaves no debris
        raise
    return final


def pending_spills(db_path: str | os.PathLike[str]) -> list[Path]:
    """Spill files waiting to be loaded into ``db_path``'s store, oldest first."""
    directory = spill_dir(db_path)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SPILL_SUFFIX}"))


def _in_schema(table: pa.Table) -> pa.Table:
    # A file spilled by an older cliffwatch lacks the columns added since: they are null.
    for field in ARROW_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)


def read_spills(paths: Iterable[Path]) -> tuple[list[pa.Table], list[Path]]:
    """Read spill files as Arrow tables in :data:`ARROW_SCHEMA`.

    A file that cannot be read (it should not happen: files are renamed into place whole)
    is renamed to ``*.bad`` and logged with its path, so one damaged file never blocks
    every later write; it stays on disk for a person to look at.

    Returns:
        ``(tables, read_paths)``: the tables, and the paths they came from (to delete
        once the tables are committed).
    """
    tables: list[pa.Table] = []
    read: list[Path] = []
    for path in paths:
        try:
            table = _in_schema(pq.read_table(path))
        except FileNotFoundError:
            continue  # another writer loaded it first
        except (OSError, pa.ArrowException, KeyError) as exc:
            bad = path.with_suffix(BAD_SUFFIX)
            logger.error("spill file %s is unreadable (%s); moved to %s", path, exc, bad)
            os.replace(path, bad)
            continue
        tables.append(table)
        read.append(path)
    return tables, read


def remove_spills(paths: Iterable[Path]) -> None:
    """Delete loaded spill files (missing ones are ignored)."""
    for path in paths:
        path.unlink(missing_ok=True)
