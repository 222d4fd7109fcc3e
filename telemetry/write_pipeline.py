"""The store's one write path: spill, Arrow insert, run materialisation, incidents and the
alert outbox, in one transaction; then webhook delivery, outside any lock.

:func:`write_spans` is the only way spans enter the store: one read-write connection
(:func:`telemetry.store.open_store`, under this process's
:func:`telemetry.store.write_lock`), one transaction that loads pending spill files
(:mod:`telemetry.spill`), inserts the batch from Arrow, then materialises the touched runs
(:mod:`telemetry.materialise`) and their days' roll-ups (:mod:`telemetry.rollups`),
records incidents (:mod:`telemetry.incident_rules`) and
queues their alerts (:mod:`telemetry.alert_rules`); once it has committed, the alerts are
handed to the background delivery (:mod:`telemetry.alerts`).

Imports run one way: this module -> alert_rules, alerts -> store (the connection layer),
which imports none of them. :mod:`telemetry.alerts` is imported when an alert is due, not
at the top, only because of what it costs to load.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from cliffwatch import settings
from cliffwatch.telemetry import alert_rules, incident_rules, materialise, rollups, spill
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord, records_to_arrow
from cliffwatch.telemetry.store import StoreBusyError, open_store, transaction, write_lock

logger = logging.getLogger("cliffwatch.alerts")

BATCH_VIEW = "cliff_batch"
"""Name the Arrow batch is registered under during a write (touched traces come from it)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :func:`write_spans` call changed.

    Attributes:
        spans_written: spans newly inserted (the batch plus loaded spill files, less
            those already in the store).
        runs_materialised: ``runs`` rows inserted or replaced (traces touched by the
            write whose root span is in the store).
        incidents_recorded: ``incidents`` rows newly inserted.
        spill_files_loaded: pending spill files loaded and deleted.
    """

    spans_written: int
    runs_materialised: int
    incidents_recorded: int
    spill_files_loaded: int = 0


_SPAN_COLUMNS = ", ".join(SPAN_RECORD_FIELDS)
_JSON_COLUMNS = ("attributes", "resource_attributes", "events")


def _select_expr(name: str) -> str:
    if name in _JSON_COLUMNS:
        # One span with malformed JSON must not fail the whole batch:
        # keep its text under a marker key instead.
        return (
            f"CASE WHEN json_valid({name}) THEN {name}::JSON "
            f"ELSE json_object('cliffwatch.invalid_json', {name}) END"
        )
    return name


_INSERT_SPANS = f"""
    INSERT INTO spans ({_SPAN_COLUMNS}, started_at, ended_at, duration_ms, ingested_at)
    SELECT {", ".join(_select_expr(n) for n in SPAN_RECORD_FIELDS)},
        make_timestamp(start_time_unix_nano // 1000),
        make_timestamp(end_time_unix_nano // 1000),
        (end_time_unix_nano - start_time_unix_nano) / 1e6,
        $ingested_at
    FROM {BATCH_VIEW}
    ON CONFLICT DO NOTHING
"""


def _inserted(result: duckdb.DuckDBPyConnection) -> int:
    rows = result.fetchall()
    return int(rows[0][0]) if rows else 0


def write_spans(
    path: str | os.PathLike[str],
    records: Sequence[SpanRecord],
    *,
    timeout_s: float | None = None,
    runaway_k: float | None = None,
) -> WriteResult:
    """Append spans to the store, then materialise their runs and record incidents.

    One short read-write connection and one transaction: pending spill files of this
    store are loaded with the batch; spans are inserted from an Arrow table
    (``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so writing the same
    ``(trace_id, span_id)`` twice adds nothing); every trace touched whose root span is
    in the store gets its ``runs`` row (re)built; incident rules run over those runs.
    Spill files are deleted once the transaction has committed.

    Args:
        path: the store (created when missing).
        records: the spans, any order, any number of traces (may be empty: then only
            pending spill files are loaded).
        timeout_s: lock retry bound; default ``settings.lock_timeout_s()``.
        runaway_k: runaway multiple; default ``settings.runaway_k()``.

    Returns:
        A :class:`WriteResult` with the counts of what changed.

    Raises:
        StoreBusyError: the lock was not obtained in time (nothing was written; the
            caller may spill the batch with :func:`telemetry.spill.spill_records`).
        NotACliffwatchStoreError, StoreDamagedError, StoreError: as
            :func:`telemetry.store.open_store` (a disk that fills up during the write is a
            ``StoreError`` naming the cause; nothing of the batch is stored).
    """
    k = settings.runaway_k() if runaway_k is None else runaway_k
    timeout = settings.lock_timeout_s() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout
    lock = write_lock(path)
    if not lock.acquire(timeout=timeout):
        raise StoreBusyError(
            f"store {path} is busy: another thread held it for {timeout:g} s (write gave up)"
        )
    try:
        return _write_locked(path, records, max(0.0, deadline - time.monotonic()), k)
    finally:
        lock.release()


def _write_locked(
    path: str | os.PathLike[str], records: Sequence[SpanRecord], timeout_s: float, k: float
) -> WriteResult:
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    with open_store(path, read_only=False, timeout_s=timeout_s) as con:
        spill_tables, spill_paths = spill.read_spills(spill.pending_spills(path))
        tables = [records_to_arrow(list(records)), *spill_tables]
        batch = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if batch.num_rows == 0:
            return WriteResult(0, 0, 0, 0)
        con.register(BATCH_VIEW, batch)
        try:
            with transaction(con):  # a failed COMMIT (disk full) is the error raised
                spans_written = _inserted(
                    con.execute(_INSERT_SPANS, {"ingested_at": ingested_at})
                )
                runs = materialise.materialise_runs(con, BATCH_VIEW, ingested_at)
                rollups.update_rollups(con, materialise.TOUCHED_RUNS, ingested_at)
                incidents = incident_rules.record_incidents(con, k, ingested_at)
                alerts_pending = alert_rules.enqueue_alerts(con)  # outbox rows
        finally:
            con.unregister(BATCH_VIEW)
        spill.remove_spills(spill_paths)
    deliver_soon(path, alerts_pending)  # HTTP in a background thread, no lock
    return WriteResult(spans_written, runs, incidents, len(spill_paths))


def deliver_soon(path: str | os.PathLike[str], pending: int) -> None:
    """Start (or wake) this process's background delivery for the store at ``path`` when
    ``pending`` deliveries wait. Returns at once; never raises."""
    if pending <= 0:
        return
    try:
        # Imported here, not at the top: alerts loads polars and urllib (about 0.2 s), which
        # a write with nothing to deliver (most writes) does not need.
        from cliffwatch.telemetry import alerts

        alerts.deliver_in_background(path)
    except Exception:  # noqa: BLE001 - alerting must never fail a span write
        logger.exception("cliffwatch alerts: could not start background delivery")
