"""Data retention: delete every run started before a date, with all that hangs off it.

:func:`prune_plan` counts what a prune would delete (read-only, for the dry run);
:func:`prune_store` deletes it in one transaction, then checkpoints the store so the freed
blocks can be reused. What goes, for runs started before ``before`` (naive UTC):

- the ``runs`` rows, and their ``spans`` (``trace_id = run_id``);
- spans of traces that never became a run (no root span arrived) whose every span started
  before ``before``;
- their ``incidents`` (with the triage state and note kept on each);
- the alerts raised for those incidents, and threshold-rule alerts raised before
  ``before``, with their webhook deliveries (the outbox, ``alert_deliveries``).

Every figure (percentiles, findings, what-if) is computed from ``runs`` and ``spans`` at
query time, and the per-day roll-ups (telemetry/rollups.py) of the pruned days are dropped
and the cut-off's day recomputed in the same transaction, so the remaining runs' figures
are exactly what they would be had the pruned runs never been recorded.

DuckDB reuses the blocks a delete frees for later writes and gives them back to the file
system only when they end the file (docs/sources.md#duckdb-reclaiming-space);
:class:`PruneResult` reports the file size before and after. ``compact=True`` shrinks the
file for sure: the store is copied into a new file (DuckDB's ``COPY FROM DATABASE``:
tables, keys, indexes and rows) that then replaces it, all while the store's lock is held,
so no other process reads or writes it in between.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cliffwatch import settings
from cliffwatch.telemetry.rollups import refresh_days_before
from cliffwatch.telemetry.spill import pending_spills
from cliffwatch.telemetry.store import (
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    open_store,
    write_lock,
)

_PRUNED_RUNS = "SELECT run_id FROM runs WHERE started_at < $before"
_ROOTLESS_TRACES = (
    "SELECT trace_id FROM spans GROUP BY trace_id HAVING max(started_at) < $before "
    "AND trace_id NOT IN (SELECT run_id FROM runs)"
)
_PRUNED_ALERTS = (
    f"SELECT alert_id FROM alerts WHERE run_id IN ({_PRUNED_RUNS}) "
    "OR (run_id IS NULL AND raised_at < $before)"
)

WHERE: dict[str, str] = {
    "alert_deliveries": f"alert_id IN ({_PRUNED_ALERTS})",
    "alerts": f"alert_id IN ({_PRUNED_ALERTS})",
    "incidents": f"run_id IN ({_PRUNED_RUNS})",
    "spans": f"trace_id IN ({_PRUNED_RUNS}) OR trace_id IN ({_ROOTLESS_TRACES})",
    "runs": "started_at < $before",
}
"""Each table's rows a prune deletes, in the order they are deleted (what hangs off a run
first, the run last); ``$before`` is the cut-off."""


@dataclass(frozen=True)
class PrunePlan:
    """What a prune before ``before`` deletes (or deleted).

    Attributes:
        before: the cut-off, naive UTC; runs started before it go.
        rows: rows per table (keys of :data:`WHERE`).
        spend_usd: the pruned runs' summed cost (USD).
        first_started_at, last_started_at: the pruned runs' earliest and latest start
            (naive UTC), None when no run goes.
        triaged_incidents: pruned incidents acknowledged or resolved (their notes go too).
        undelivered_alerts: pruned deliveries not delivered yet (pending, sending,
            failed, unknown): they will never be sent.
        runs_kept: runs that stay.
    """

    before: datetime
    rows: dict[str, int]
    spend_usd: float
    first_started_at: datetime | None
    last_started_at: datetime | None
    triaged_incidents: int
    undelivered_alerts: int
    runs_kept: int

    @property
    def empty(self) -> bool:
        """True when nothing would be deleted."""
        return not any(self.rows.values())


@dataclass(frozen=True)
class PruneResult:
    """A prune done: its :class:`PrunePlan` and the store file's size around it (bytes)."""

    plan: PrunePlan
    size_before_bytes: int
    size_after_bytes: int
    pending_spill_files: int
    compacted: bool = False


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _compact(con: duckdb.DuckDBPyConnection, store: Path) -> None:
    """Copy the open store into ``<store>.compact`` and put that in its place (the caller
    holds the store's lock and has checkpointed it). On failure the store is untouched."""
    fresh = store.with_name(store.name + ".compact")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    name = con.execute("SELECT current_database()").fetchall()[0][0]
    try:
        con.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS cliffwatch_compact")
        con.execute(f"COPY FROM DATABASE {_quoted(name)} TO cliffwatch_compact")
        con.execute("DETACH cliffwatch_compact")
        shutil.copymode(store, fresh)
        os.replace(fresh, store)
    except (duckdb.Error, OSError) as exc:
        fresh.unlink(missing_ok=True)
        raise StoreError(f"compacting {store} failed (the pruned store is kept as it is): "
                         f"{str(exc).splitlines()[0]}") from exc


def _plan(con: duckdb.DuckDBPyConnection, before: datetime) -> PrunePlan:
    params = {"before": before}
    rows = {
        table: int(con.execute(f"SELECT count(*) FROM {table} WHERE {where}",  # noqa: S608
                               params).fetchall()[0][0])
        for table, where in WHERE.items()
    }
    spend, first, last = con.execute(
        "SELECT coalesce(sum(cost_usd), 0), min(started_at), max(started_at) FROM runs "
        "WHERE started_at < $before", params).fetchall()[0]
    triaged = con.execute(
        f"SELECT count(*) FROM incidents WHERE {WHERE['incidents']} "  # noqa: S608
        "AND status <> 'open'", params).fetchall()[0][0]
    undelivered = con.execute(
        f"SELECT count(*) FROM alert_deliveries WHERE {WHERE['alert_deliveries']} "  # noqa: S608
        "AND status <> 'delivered'", params).fetchall()[0][0]
    kept = con.execute("SELECT count(*) FROM runs WHERE started_at >= $before",
                       params).fetchall()[0][0]
    return PrunePlan(before, rows, float(spend), first, last, int(triaged), int(undelivered),
                     int(kept))


def prune_plan(path: str | os.PathLike[str], before: datetime) -> PrunePlan:
    """What :func:`prune_store` would delete from the store at ``path`` (read-only).

    Raises:
        StoreNotFoundError, NotACliffwatchStoreError, StoreBusyError, StoreError: as
            :func:`telemetry.store.open_store` (read-only).
    """
    with open_store(path, read_only=True) as con:
        return _plan(con, before)


def prune_store(path: str | os.PathLike[str], before: datetime, *,
                compact: bool = False) -> PruneResult:
    """Delete every run started before ``before`` and what hangs off it (see the module
    docstring), in one transaction, then CHECKPOINT (and, with ``compact``, rewrite the
    file so it shrinks).

    Args:
        path: the store; never created here.
        before: the cut-off, naive UTC.
        compact: copy the store into a new file that replaces it (needs free disk space
            for the copy); done even when nothing was deleted.

    Returns:
        The :class:`PruneResult`: what was deleted and the file size before and after.

    Raises:
        StoreNotFoundError: the store does not exist.
        StoreBusyError: another writer held the store past the lock timeout.
        StoreError: the delete failed (nothing was deleted: the transaction rolled back),
            or the compaction failed (the pruned store is kept).
    """
    store = Path(path)
    if not store.exists():
        raise StoreNotFoundError(f"store {store} does not exist")
    size_before = store.stat().st_size
    lock = write_lock(store)
    if not lock.acquire(timeout=settings.lock_timeout_s()):
        raise StoreBusyError(f"store {store} is busy: prune gave up waiting for it")
    try:
        with open_store(store, read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                plan = _plan(con, before)
                for table, where in WHERE.items():
                    con.execute(f"DELETE FROM {table} WHERE {where}",  # noqa: S608
                                {"before": before})
                refresh_days_before(con, before, datetime.now(UTC).replace(tzinfo=None))
                con.execute("COMMIT")
            except duckdb.Error as exc:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the original error is the one worth reporting
                raise StoreError(f"prune of {store} failed, nothing deleted: "
                                 f"{str(exc).splitlines()[0]}") from exc
            con.execute("CHECKPOINT")
            if compact:
                _compact(con, store)
    finally:
        lock.release()
    return PruneResult(plan, size_before, store.stat().st_size, len(pending_spills(store)),
                       compacted=compact)
