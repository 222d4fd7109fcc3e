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
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cliffwatch import settings
from cliffwatch.telemetry import alert_rules, incident_rules, materialise, rollups, spill
from cliffwatch.telemetry.continued_roles import resolve_continued_roles
from cliffwatch.telemetry.parsed_sql import ParsedStatements
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord, records_to_arrow
from cliffwatch.telemetry.seen_copy import SeenCopy, copy_for, new_keys
from cliffwatch.telemetry.store import (
    HeldStore,
    StoreBusyError,
    open_store,
    transaction,
    write_lock,
)

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
        # One span with malformed JSON must not fail the whole batch: keep its text under
        # a marker key instead. TRY_CAST parses once (NULL exactly where json_valid is
        # false), where json_valid and a cast parsed every document twice.
        return f"coalesce(TRY_CAST({name} AS JSON), json_object('cliffwatch.invalid_json', {name}))"
    return name


SEEN = "cliff_seen"
"""Temporary table of the batch's traces already in the store: ``trace_id``,
``first_ingested_at`` (from ``seen_traces``, schema.py); made only when there are any."""

ORDINAL = "cliff_ord"
"""Column added to the Arrow batch: each span's place in it (the first of two spans with
the same ids in one batch is the one stored)."""

CLOCK_SLACK = timedelta(minutes=10)
"""Widening of the duplicate check's window below a trace's ``first_ingested_at``, so a
wall clock stepped back between two writes cannot hide a stored span."""

_FIND_SEEN = f"""
SELECT b.trace_id, min(t.first_ingested_at) AS first_ingested_at
FROM (SELECT DISTINCT trace_id, md5_number_lower(trace_id) AS trace_key FROM {BATCH_VIEW}) AS b
JOIN seen_traces AS t USING (trace_key)
GROUP BY b.trace_id
"""

_INSERT_SPANS = f"""
    INSERT INTO spans ({_SPAN_COLUMNS}, started_at, ended_at, duration_ms, ingested_at,
        is_leaf_call)
    SELECT {", ".join(_select_expr(n) for n in SPAN_RECORD_FIELDS)},
        make_timestamp(start_time_unix_nano // 1000),
        make_timestamp(end_time_unix_nano // 1000),
        (end_time_unix_nano - start_time_unix_nano) / 1e6,
        $ingested_at,
        is_llm_call
    FROM {BATCH_VIEW} AS b
    {{not_stored}}
    {{first_of_repeats}}
"""
"""``is_leaf_call`` starts as ``is_llm_call`` (most calls are leaves), so that the leaf
rule (telemetry/materialise.py), run before the transaction commits, rewrites only the
calls that are not."""

_FIRST_OF_REPEATS = (
    f"QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY {ORDINAL}) = 1")

# A span of a trace already seen is new unless its ids are in the trace's window of spans;
# the window is a literal, not a parameter, so DuckDB prunes row groups by zone maps.
_NOT_STORED = f"""NOT EXISTS (
        SELECT 1 FROM spans AS s
        WHERE s.ingested_at >= TIMESTAMP '{{since}}'
            AND s.trace_id IN (SELECT trace_id FROM {SEEN})
            AND s.trace_id = b.trace_id AND s.span_id = b.span_id)"""

_KEEP_SEEN = f"""
CREATE OR REPLACE TEMP TABLE {SEEN} AS
SELECT unnest($trace_ids::VARCHAR[]) AS trace_id,
    unnest($first_ingested_at::TIMESTAMP[]) AS first_ingested_at
"""

_REMEMBER_TRACES = f"""
    INSERT INTO seen_traces
    SELECT DISTINCT md5_number_lower(trace_id), $ingested_at::TIMESTAMP FROM {BATCH_VIEW}
    {{not_seen}}
"""

_REMEMBER_KEYS = """
    INSERT INTO seen_traces SELECT unnest($keys::UBIGINT[]), $ingested_at::TIMESTAMP
"""
""":data:`_REMEMBER_TRACES` for keys the caller computed (telemetry/seen_copy.py): half
the CPU of hashing the batch's every span in SQL (2 ms against 4 on a 1,000-span batch)."""


def has_repeats(batch: pa.Table) -> bool:
    """Whether two rows of ``batch`` (:data:`telemetry.records.ARROW_SCHEMA`) share their
    ``(trace_id, span_id)`` (or one lacks an id): then the insert keeps the first of them
    by a window over the batch, which a batch without repeats does not need."""
    keys = pc.binary_join_element_wise(batch["trace_id"], batch["span_id"], "/")
    return bool(pc.count_distinct(keys).as_py() < batch.num_rows)


def insert_new_spans(
    con: duckdb.DuckDBPyConnection, ingested_at: datetime, *, repeats: bool = True,
    seen: list[tuple[str, datetime]] | None = None, new_keys: list[int] | None = None,
) -> int:
    """Insert the spans of :data:`BATCH_VIEW` whose ``(trace_id, span_id)`` is not stored
    yet (nor earlier in the batch), and record the batch's new traces in ``seen_traces``.
    When the batch continues traces already stored, their calls' roles are worked out
    again over their whole stored ancestry (:mod:`telemetry.continued_roles`).

    What a re-sent span does is what the ``spans`` primary key did before schema version
    4 (``ON CONFLICT DO NOTHING``): the span stored first stays, whatever the re-sent one
    holds. Only the windows of the batch's traces already seen are read (schema.py,
    ``seen_traces``); a batch of new traces reads no ``spans`` row at all.

    Args:
        con: the write's connection, inside its transaction; :data:`BATCH_VIEW` registered
            with an :data:`ORDINAL` column.
        ingested_at: naive UTC time of the write, stored in ``spans.ingested_at``.
        repeats: whether the batch may hold one span twice (:func:`has_repeats`).
        seen: the batch's traces already in ``seen_traces`` with their
            ``first_ingested_at``, when the caller has looked them up
            (:class:`telemetry.seen_copy.SeenCopy`); None: looked up here, in the table.
        new_keys: with ``seen``, the distinct ``trace_key`` s of the batch's other traces
            (:func:`telemetry.seen_copy.new_keys`), added to ``seen_traces`` as they are.

    Returns:
        Spans inserted.
    """
    # Fetched, not kept in a table: a batch of new traces (most batches) finds none, and
    # then needs neither the table nor the checks that read it.
    if seen is None:
        seen = con.execute(_FIND_SEEN).fetchall()
    not_stored = not_seen = ""
    if seen:
        con.execute(_KEEP_SEEN, {"trace_ids": [row[0] for row in seen],
                                 "first_ingested_at": [row[1] for row in seen]})
        # Every stored span of these traces was ingested at or after this.
        since = min(row[1] for row in seen) - CLOCK_SLACK
        not_stored = "WHERE " + _NOT_STORED.format(since=since.isoformat(sep=" "))
        not_seen = f"WHERE trace_id NOT IN (SELECT trace_id FROM {SEEN})"
    inserted = _inserted(con.execute(
        _INSERT_SPANS.format(not_stored=not_stored,
                             first_of_repeats=_FIRST_OF_REPEATS if repeats else ""),
        {"ingested_at": ingested_at}))
    if seen and inserted:
        # A batch that continues traces: their calls' roles by their whole ancestry now.
        resolve_continued_roles(con, SEEN, since)
    if new_keys is None:
        con.execute(_REMEMBER_TRACES.format(not_seen=not_seen), {"ingested_at": ingested_at})
    elif new_keys:
        con.execute(_REMEMBER_KEYS, {"keys": new_keys, "ingested_at": ingested_at})
    return inserted


def _inserted(result: duckdb.DuckDBPyConnection) -> int:
    rows = result.fetchall()
    return int(rows[0][0]) if rows else 0


def write_spans(
    path: str | os.PathLike[str],
    records: Sequence[SpanRecord],
    *,
    timeout_s: float | None = None,
    runaway_k: float | None = None,
    held: HeldStore | None = None,
    tables: Sequence[pa.Table] = (),
) -> WriteResult:
    """Append spans to the store, then materialise their runs and record incidents.

    One read-write connection (opened and closed for this write, or the caller's
    ``held`` one) and one transaction: pending spill files of this
    store are loaded with the batch; spans are inserted from an Arrow table, less those
    whose ``(trace_id, span_id)`` is already stored (:func:`insert_new_spans`: writing
    the same span twice adds nothing); every trace touched whose root span is
    in the store gets its ``runs`` row (re)built; incident rules run over those runs.
    Spill files are deleted once the transaction has committed.

    Args:
        path: the store (created when missing).
        records: the spans, any order, any number of traces (may be empty: then only
            pending spill files are loaded).
        timeout_s: lock retry bound; default ``settings.lock_timeout_s()``.
        runaway_k: runaway multiple; default ``settings.runaway_k()``.
        held: write through this long-lived connection (opened when it has none)
            instead of opening and closing the store for this write.
        tables: more spans already in :data:`telemetry.records.ARROW_SCHEMA` (the
            receiver's journal, :mod:`telemetry.journal`), written after ``records``.

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
        return _write_locked(path, records, max(0.0, deadline - time.monotonic()), k, held,
                             tables)
    finally:
        lock.release()


def _write_locked(
    path: str | os.PathLike[str],
    records: Sequence[SpanRecord],
    timeout_s: float,
    k: float,
    held: HeldStore | None,
    extra: Sequence[pa.Table] = (),
) -> WriteResult:
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    connection = (open_store(path, read_only=False, timeout_s=timeout_s) if held is None
                  else held.use(timeout_s))
    with connection as con:
        spill_tables, spill_paths = spill.read_spills(spill.pending_spills(path))
        tables = [records_to_arrow(list(records)), *extra, *spill_tables]
        batch = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if batch.num_rows == 0:
            return WriteResult(0, 0, 0, 0)
        set_threads(con, batch.num_rows)
        with transaction(con):  # a failed COMMIT (disk full) is the error raised
            spans_written, runs, incidents, alerts_pending = apply_batch(
                con, batch, ingested_at, k, seen_copy=copy_for(path, held=held is not None)
            )
        spill.remove_spills(spill_paths)
    deliver_soon(path, alerts_pending)  # HTTP in a background thread, no lock
    return WriteResult(spans_written, runs, incidents, len(spill_paths))


SINGLE_THREAD_MAX_SPANS = 5_000
"""Batches up to this many spans are written with DuckDB on one thread (:func:`set_threads`)."""


def set_threads(con: duckdb.DuckDBPyConnection, spans: int) -> None:
    """Set DuckDB's ``threads`` for a write of ``spans`` spans: 1 when at most
    :data:`SINGLE_THREAD_MAX_SPANS`, else DuckDB's default (one per core).

    A write's statements each read a few thousand rows at most: spread over threads they
    spend more on scheduling tasks and waiting for them (``Executor::WaitForTask``,
    ``TaskScheduler::ScheduleTasks`` in a py-spy profile) than they gain. Measured on the
    six largest statements of a 1,000-span write over 10k runs of history
    (bench/store_write.py's batch, each statement repeated 20 times, CPU time, 2 cores):
    44 and 49 ms on one thread against 54 and 58 ms on two. The setting is the database
    instance's and is left as it is after the write: a short connection closes, and a
    held one (:class:`telemetry.store.HeldStore`) serves only writes, each setting it
    (resetting it after every write restarted DuckDB's worker threads: 5 ms). A held
    connection already at the setting is not set again (0.5 ms a write).
    """
    setting = "SET threads = 1" if spans <= SINGLE_THREAD_MAX_SPANS else "RESET threads"
    if _THREADS_SET.get(con) != setting:
        con.execute(setting)
        _THREADS_SET[con] = setting


_THREADS_SET: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, str] = (
    weakref.WeakKeyDictionary())
"""The ``threads`` statement last run on each open connection (:func:`set_threads`)."""


def apply_batch(
    con: duckdb.DuckDBPyConnection, batch: pa.Table, ingested_at: datetime, k: float,
    *, keep_rollups: bool = True, seen_copy: SeenCopy | None = None,
) -> tuple[int, int, int, int]:
    """The write's steps on an open connection, inside the caller's transaction: insert
    the batch's spans (:data:`telemetry.records.ARROW_SCHEMA`; a re-sent span is left out by
    :func:`insert_new_spans`),
    materialise the touched runs, record incidents, queue alerts.

    The one rule set every writer runs: :func:`write_spans` on the DuckDB store, and
    ``cliffwatch watch`` (telemetry/clickhouse/watch.py) on a scratch DuckDB holding a
    batch's traces and the context the rules read. ``keep_rollups=False`` skips the per-day
    roll-ups (:mod:`telemetry.rollups`), which no rule reads: the scratch store's would
    cover only its partial runs and are never copied anywhere. ``seen_copy``: this
    process's copy of ``seen_traces`` (:func:`telemetry.seen_copy.copy_for`), where the
    batch's traces are looked up instead of in the table.

    Every statement runs parsed once per thread (:class:`telemetry.parsed_sql.ParsedStatements`:
    parsing the same texts again was a seventh of a write's CPU).

    Returns:
        ``(spans_written, runs_materialised, incidents_recorded, deliveries_pending)``.
    """
    # The wrapper has the connection's every method: the steps below take it as one.
    con = cast(duckdb.DuckDBPyConnection, ParsedStatements(con))
    batch = batch.append_column(ORDINAL, pa.array(range(batch.num_rows), pa.int64()))
    con.register(BATCH_VIEW, batch)
    try:
        seen = keys = None
        if seen_copy is not None:
            trace_ids = pc.unique(batch["trace_id"]).drop_null().to_pylist()
            seen = seen_copy.find(con, trace_ids)
            keys = None if seen is None else new_keys(trace_ids, seen)
        spans_written = insert_new_spans(con, ingested_at, repeats=has_repeats(batch),
                                         seen=seen, new_keys=keys)
        runs = materialise.materialise_runs(con, BATCH_VIEW, ingested_at)
        if keep_rollups:
            rollups.update_rollups(con, materialise.TOUCHED_RUNS, ingested_at)
        incidents = incident_rules.record_incidents(con, k, ingested_at)
        alerts_pending = alert_rules.enqueue_alerts(con, incidents)  # outbox rows
    finally:
        con.unregister(BATCH_VIEW)
    return spans_written, runs, incidents, alerts_pending


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
