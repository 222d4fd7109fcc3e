"""The OpenTelemetry span exporter that writes finished spans into the DuckDB store.

It follows the SDK's exporter contract (opentelemetry-python,
``sdk/trace/export/__init__.py``;
docs/sources.md#opentelemetry-sdk-exporter-contract):

- ``export`` never raises; it returns ``SUCCESS`` or ``FAILURE``, and ``FAILURE`` after
  ``shutdown``.
- While it writes, instrumentation is suppressed (``_SUPPRESS_INSTRUMENTATION_KEY`` in
  the context), so writing spans produces no spans about writing spans.
- When a write fails for any reason (the store locked by another process past
  ``settings.lock_timeout_s()``, a full disk, a damaged file), the batch is spilled to
  ``<db>.spill/`` (:func:`telemetry.write_ledger.write_or_spill`) and the export counts
  as a ``SUCCESS``: the data is safe on disk and the next write that succeeds loads it.
  When the spill fails too, the export is a ``FAILURE`` and its spans are counted lost.
- Every span is counted in :data:`telemetry.write_ledger.LEDGER` (written, spilled or
  lost): the SDK's ``BatchSpanProcessor`` ignores export results, so a command reads the
  ledger after flushing to learn what reached the store.
- ``force_flush`` has no buffer of its own to empty (every export is written before it
  returns), so it loads pending spill files into the store and reports whether none is
  left.

A span that cannot be mapped to a record is logged with its ids, skipped and counted
lost; the rest of its batch is still written.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cliffwatch.settings import lock_timeout_s
from cliffwatch.telemetry import spill
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.sdk_mapping import records_from_sdk_spans
from cliffwatch.telemetry.store import StoreError
from cliffwatch.telemetry.write_ledger import LEDGER, SpansLostError, WriteLedger, write_or_spill
from cliffwatch.telemetry.write_pipeline import write_spans

logger = logging.getLogger(__name__)


def skipped_span(name: str, trace_id: str, span_id: str, ledger: WriteLedger) -> None:
    """Log (inside the ``except`` that caught why) and count lost a span that cannot be
    mapped to a record; ids as hex (``?`` when unknown)."""
    logger.exception("cliffwatch: skipped span %r (trace %s, span %s): cannot map it",
                     name, trace_id, span_id)
    ledger.add(lost=1, error=f"span {name!r} could not be mapped")


def write_records(
    path: Path, records: list[SpanRecord], *, timeout_s: float | None, ledger: WriteLedger
) -> bool:
    """Write or spill one exported batch and count it (:func:`write_or_spill`), never raising.

    Returns:
        True when the records are in the store or in a spill file; False when they are
        lost (logged in one line, counted lost in ``ledger``).
    """
    try:
        write_or_spill(path, records, timeout_s=timeout_s, ledger=ledger)
        return True
    except SpansLostError as exc:
        logger.error("cliffwatch: %s", exc)
        return False
    except Exception as exc:  # the values (or a bug): neither written nor spilled
        ledger.add(lost=len(records), error=str(exc).strip().split("\n")[0])
        logger.exception("cliffwatch: failed to export %d spans to %s", len(records), path)
        return False


class DuckDBSpanExporter(SpanExporter):
    """Writes each exported batch of SDK spans to a cliffwatch DuckDB store.

    Args:
        path: the store file (created with its schema on the first write).
        timeout_s: seconds to retry a locked store before spilling; default
            ``settings.lock_timeout_s()``.
        source: the producer recorded on every row.
        ledger: where spans are counted written, spilled or lost; default the process's
            :data:`telemetry.write_ledger.LEDGER`.

    Thread-safe: exports from several threads are written one at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float | None = None,
        source: str = "cliffwatch",
        ledger: WriteLedger = LEDGER,
    ) -> None:
        self.path = Path(path)
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.source = source
        self._lock = threading.Lock()
        self._shut_down = False

    def _skipped(self, span: ReadableSpan) -> None:
        """Log (inside the ``except``) and count lost a span that cannot be mapped."""
        ctx = span.context
        skipped_span(span.name, format(ctx.trace_id, "032x") if ctx else "?",
                     format(ctx.span_id, "016x") if ctx else "?", self.ledger)

    def _records(self, spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
        return records_from_sdk_spans(spans, source=self.source, on_error=self._skipped)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` to the store, or spill them when the write fails.

        Returns:
            ``SUCCESS`` when the spans are in the store or in a spill file; ``FAILURE``
            after :meth:`shutdown` or when they could be neither written nor spilled
            (logged in one line; the spans are counted lost in the ledger).
        """
        if self._shut_down:
            logger.warning("cliffwatch: exporter already shut down, %d spans dropped", len(spans))
            self.ledger.add(lost=len(spans), error="spans exported after shutdown")
            return SpanExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            records = self._records(spans)
            with self._lock:
                stored = write_records(self.path, records, timeout_s=self.timeout_s,
                                       ledger=self.ledger)
            return SpanExportResult.SUCCESS if stored else SpanExportResult.FAILURE
        finally:
            detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Load pending spill files into the store, retrying the lock up to the timeout.

        Returns:
            True when no spill file is left (always when none was pending), False when
            the store stayed busy or failed (logged in one line; the files stay).
        """
        if not spill.pending_spills(self.path):
            return True
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                write_spans(self.path, [], timeout_s=max(timeout_millis, 1) / 1000)
            return not spill.pending_spills(self.path)
        except StoreError as exc:  # busy, damaged, disk full: the files stay, safe
            logger.warning("cliffwatch: flush left spill files pending: %s", exc)
            return False
        except Exception:
            logger.exception("cliffwatch: failed to load spill files into %s", self.path)
            return False
        finally:
            detach(token)

    def shutdown(self) -> None:
        """Load pending spill files if the store can be had, then refuse further exports.

        Spill files that cannot be loaded within the lock timeout stay on disk for the
        next writer of this store.
        """
        if not self._shut_down and spill.pending_spills(self.path):
            timeout_s = self.timeout_s if self.timeout_s is not None else lock_timeout_s()
            self.force_flush(round(timeout_s * 1000))
        self._shut_down = True
