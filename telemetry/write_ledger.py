"""No span lost silently: write or spill, and this process's count of where spans went.

:func:`write_or_spill` is how the span exporter, the :class:`~telemetry.span_writer.SpanWriter`
(receiver, litellm callback) and ``ingest`` write a batch: :func:`write_spans`, and when
that fails for any reason (a busy store, a full disk, a damaged file) the batch is parked
in a spill file (:mod:`telemetry.spill`) that the next successful write loads. Only a
batch that can be neither written nor spilled is lost, and that raises
:class:`SpansLostError` naming both causes. The one exception is a batch whose *values*
the store cannot take (:func:`is_data_error`): spilled, it would fail every later write
that loads it, so it is raised to the caller as it is (the receiver isolates the bad
spans and rejects them).

:data:`LEDGER` counts, for the whole process, spans written, spilled and lost; a command
takes a :meth:`WriteLedger.snapshot` before its work and prints the difference after
(``spans: 107 written, 0 spilled, 0 lost``). The OTel SDK's ``BatchSpanProcessor``
ignores what ``export`` returns, so this count, not the export result, is how a loss
reaches the command.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.store import HeldStore, StoreBusyError, StoreError
from cliffwatch.telemetry.write_pipeline import WriteResult, write_spans

logger = logging.getLogger(__name__)

DATA_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeError,
    OverflowError,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
)
"""Errors of a write that come from the values written, not from the store."""


def is_data_error(exc: BaseException) -> bool:
    """Whether a failed write failed on the values written (a retry fails the same way),
    not on the store: looks through the exception's causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DATA_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class SpansLostError(StoreError):
    """A batch could be neither written to the store nor spilled: its spans are lost.

    Attributes:
        spans_lost: how many spans the batch held.
    """

    def __init__(self, message: str, spans_lost: int) -> None:
        super().__init__(message)
        self.spans_lost = spans_lost


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """Spans written, spilled and lost (a snapshot, or the difference of two).

    Attributes:
        written: spans handed to a store write that committed (a span already in the
            store counts too: it is there).
        spilled: spans parked in spill files (loaded into the store by a later write).
        lost: spans neither written nor spilled, or dropped before a write (an exporter
            shut down, a span that could not be mapped).
        store_failed: spills for a cause other than a busy store (disk full, damaged
            file): those wait for the store to be repaired, not just released.
        last_error: the last write failure's cause in one line (no count), or None.
        ended: spans ended in a cliffwatch tracer (:func:`telemetry.tracing.configure_tracing`);
            once its pipeline is shut down each must be written, spilled or lost, so
            the difference is what the SDK dropped before any export (a full queue).
    """

    written: int = 0
    spilled: int = 0
    lost: int = 0
    store_failed: int = 0
    last_error: str | None = None
    ended: int = 0

    def __sub__(self, before: LedgerCounts) -> LedgerCounts:
        return LedgerCounts(
            self.written - before.written,
            self.spilled - before.spilled,
            self.lost - before.lost,
            self.store_failed - before.store_failed,
            self.last_error if self.last_error != before.last_error else None,
            self.ended - before.ended,
        )

    @property
    def dropped(self) -> int:
        """Spans ended in a cliffwatch tracer that never reached the exporter (0 when no
        tracer ended any: ``ingest`` and ``serve`` write without one)."""
        if not self.ended:
            return 0
        return max(0, self.ended - self.written - self.spilled - self.lost)

    def summary(self, lost_label: str = "lost") -> str:
        """``spans: 107 written, 0 spilled, 0 lost`` (``lost_label`` names the last; spans
        dropped before export count as lost)."""
        return (f"spans: {self.written:,} written, {self.spilled:,} spilled, "
                f"{self.lost + self.dropped:,} {lost_label}")


class WriteLedger:
    """Thread-safe running counts of one process's span writes (see :class:`LedgerCounts`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = LedgerCounts()

    def add(self, *, written: int = 0, spilled: int = 0, lost: int = 0,
            store_failed: int = 0, error: str | None = None, ended: int = 0) -> None:
        """Add to the counts; ``error`` (one line) becomes ``last_error`` when given."""
        with self._lock:
            c = self._counts
            self._counts = LedgerCounts(
                c.written + written, c.spilled + spilled, c.lost + lost,
                c.store_failed + store_failed, error if error is not None else c.last_error,
                c.ended + ended,
            )

    def snapshot(self) -> LedgerCounts:
        """The counts now (subtract an earlier snapshot for what happened since)."""
        with self._lock:
            return self._counts


LEDGER = WriteLedger()
"""This process's ledger: every :func:`write_or_spill` and exporter counts into it."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_or_spill(
    path: str | os.PathLike[str],
    records: Sequence[SpanRecord],
    *,
    timeout_s: float | None = None,
    ledger: WriteLedger = LEDGER,
    held: HeldStore | None = None,
) -> WriteResult | None:
    """Write ``records`` to the store, or spill them when the write fails; count either.

    Args:
        path: the store.
        records: the batch.
        timeout_s: lock retry bound of the write; default ``settings.lock_timeout_s()``.
        ledger: where the spans are counted.
        held: the writer's long-lived connection, if it keeps one
            (:class:`~telemetry.store.HeldStore`).

    Returns:
        The :class:`~telemetry.write_pipeline.WriteResult`, or None when the batch was
        spilled (logged as a warning naming the cause).

    Raises:
        SpansLostError: the write failed and so did the spill (both causes in the
            message); the spans are counted lost.
        Exception: the write failed on the values (:func:`is_data_error`): nothing is
            counted, the caller decides (isolate the bad spans, or count them lost).
    """
    try:
        result = write_spans(path, records, timeout_s=timeout_s, held=held)
    except Exception as exc:
        if is_data_error(exc) or not records:
            raise
        cause = _one_line(exc)
        busy = isinstance(exc, StoreBusyError)
        try:
            spilled = spill.spill_records(path, records)
        except Exception as spill_exc:
            reason = (
                f"{cause}; spilling them to {spill.spill_dir(path)} failed too: "
                f"{_one_line(spill_exc)}"
            )
            ledger.add(lost=len(records), error=reason)
            raise SpansLostError(
                f"{len(records):,} spans neither stored nor spilled: {reason}", len(records)
            ) from exc
        ledger.add(spilled=len(records), store_failed=0 if busy else len(records),
                   error=None if busy else cause)
        logger.warning("cliffwatch: %s; %d spans spilled to %s", cause, len(records), spilled)
        return None
    ledger.add(written=len(records))
    return result
