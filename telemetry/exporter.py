"""The OpenTelemetry span exporter that writes finished spans into the DuckDB store.

It follows the SDK's exporter contract (opentelemetry-python,
``sdk/trace/export/__init__.py``;
docs/sources.md#opentelemetry-sdk-exporter-contract):

- ``export`` never raises; it returns ``SUCCESS`` or ``FAILURE``, and ``FAILURE`` after
  ``shutdown``.
- While it writes, instrumentation is suppressed (``_SUPPRESS_INSTRUMENTATION_KEY`` in
  the context), so writing spans produces no spans about writing spans.
- When the store stays locked by another process past ``settings.lock_timeout_s()``, the
  batch is spilled to ``<db>.spill/`` (:mod:`telemetry.spill`) and the export counts as
  a ``SUCCESS``: the data is safe on disk and the next write loads it.
- ``force_flush`` has no buffer of its own to empty (every export is written before it
  returns), so it loads pending spill files into the store and reports whether none is
  left.

A span that cannot be mapped to a record is logged with its ids and skipped; the rest of
its batch is still written.
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
from cliffwatch.telemetry.sdk_mapping import record_from_sdk_span
from cliffwatch.telemetry.store import StoreBusyError
from cliffwatch.telemetry.write_pipeline import write_spans

logger = logging.getLogger(__name__)


class DuckDBSpanExporter(SpanExporter):
    """Writes each exported batch of SDK spans to a cliffwatch DuckDB store.

    Args:
        path: the store file (created with its schema on the first write).
        timeout_s: seconds to retry a locked store before spilling; default
            ``settings.lock_timeout_s()``.
        source: the producer recorded on every row.

    Thread-safe: exports from several threads are written one at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float | None = None,
        source: str = "cliffwatch",
    ) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.source = source
        self._lock = threading.Lock()
        self._shut_down = False

    def _records(self, spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
        records: list[SpanRecord] = []
        for span in spans:
            try:
                records.append(record_from_sdk_span(span, source=self.source))
            except Exception:
                ctx = span.context
                logger.exception(
                    "cliffwatch: skipped span %r (trace %s, span %s): cannot map it",
                    span.name,
                    format(ctx.trace_id, "032x") if ctx else "?",
                    format(ctx.span_id, "016x") if ctx else "?",
                )
        return records

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` to the store (or spill them when it stays locked).

        Returns:
            ``SUCCESS`` when the spans are in the store or in a spill file; ``FAILURE``
            after :meth:`shutdown` or on any other error (logged with the span count).
        """
        if self._shut_down:
            logger.warning("cliffwatch: exporter already shut down, %d spans dropped", len(spans))
            return SpanExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            records = self._records(spans)
            with self._lock:
                try:
                    write_spans(self.path, records, timeout_s=self.timeout_s)
                except StoreBusyError as exc:
                    if not records:
                        raise
                    spilled = spill.spill_records(self.path, records)
                    logger.warning(
                        "cliffwatch: %s; %d spans spilled to %s", exc, len(records), spilled
                    )
            return SpanExportResult.SUCCESS
        except Exception:
            logger.exception(
                "cliffwatch: failed to export %d spans to %s", len(spans), self.path
            )
            return SpanExportResult.FAILURE
        finally:
            detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Load pending spill files into the store, retrying the lock up to the timeout.

        Returns:
            True when no spill file is left (always when none was pending), False when
            the store stayed busy or the load failed (logged).
        """
        if not spill.pending_spills(self.path):
            return True
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                write_spans(self.path, [], timeout_s=max(timeout_millis, 1) / 1000)
            return not spill.pending_spills(self.path)
        except StoreBusyError as exc:
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
