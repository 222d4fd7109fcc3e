"""Writers into the Collector's trace table: what ``serve`` and the orchestrator write when
their store is ClickHouse (``--db clickhouse://...`` or ``chdb:///dir``).

They write spans in the shape the Collector's ``clickhouse`` exporter writes them
(:mod:`telemetry.clickhouse.otel_traces`), into the traces table the store URL names, and
nothing else: cliffwatch's own tables (runs, incidents, alerts) are written by ``cliffwatch
watch`` alone, so a span gets the same verdicts whether an app's Collector or cliffwatch
itself put it there, and a team can start embedded and move up to a fleet's ClickHouse.

- :class:`OtelTracesWriter`: decoded spans (:class:`~telemetry.otlp_decode.OtlpSpan`) in,
  rows appended (the OTLP receiver's writer for an engine store).
- :class:`ClickHouseSpanExporter`: the OpenTelemetry SDK exporter for the orchestrator
  (:func:`telemetry.tracing.configure_tracing` picks it for an engine store). It follows
  the SDK's exporter contract as :class:`telemetry.exporter.DuckDBSpanExporter` does
  (never raises, ``FAILURE`` after ``shutdown``, instrumentation suppressed while
  writing) and counts every span in :data:`telemetry.write_ledger.LEDGER`; there is no
  spill: a batch ClickHouse refuses is counted lost (the SDK does not retry either).

The table is created with the exporter's DDL when missing (as the Collector does on start).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cliffwatch.telemetry.clickhouse import otel_traces
from cliffwatch.telemetry.clickhouse.client import ClickHouseClient, connect
from cliffwatch.telemetry.clickhouse.url import StoreURL
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.sdk_mapping import otlp_span_from_sdk, plain_resource
from cliffwatch.telemetry.write_ledger import LEDGER, WriteLedger

logger = logging.getLogger(__name__)


class OtelTracesWriter:
    """Appends spans to the traces table of an engine store; thread-safe.

    Args:
        url: the ClickHouse store (``url.traces_table`` is written).
        ledger: where spans are counted written or lost.

    Raises:
        ClickHouseError, ClickHouseMissingError: the engine cannot be reached, or the
            table cannot be created (on construction: fail before serving).
    """

    def __init__(self, url: StoreURL, *, ledger: WriteLedger = LEDGER) -> None:
        self.url = url
        self.ledger = ledger
        self._lock = threading.Lock()
        self._client: ClickHouseClient = connect(url)
        try:
            self._client.command(otel_traces.create_table_sql(url.traces_table))
        except BaseException:
            self._client.close()
            raise

    def write(self, spans: Sequence[OtlpSpan]) -> int:
        """Append ``spans`` as exporter rows; returns how many.

        Raises:
            ClickHouseError: ClickHouse refused the insert (the spans are counted lost;
                an OTLP sender retries on the 503 the receiver answers).
        """
        if not spans:
            return 0
        rows = otel_traces.spans_to_rows(spans)
        try:
            with self._lock:
                self._client.insert_arrow(self.url.traces_table, rows)
        except Exception as exc:
            self.ledger.add(lost=len(spans), store_failed=1, error=str(exc).split("\n")[0])
            raise
        self.ledger.add(written=len(spans))
        return len(spans)

    def close(self) -> None:
        """Release the connection; idempotent."""
        with self._lock:
            self._client.close()


class ClickHouseSpanExporter(SpanExporter):
    """The SDK exporter writing finished spans as exporter rows into an engine store.

    Args:
        url: the ClickHouse store.
        ledger: where spans are counted written or lost.
    """

    def __init__(self, url: StoreURL, *, ledger: WriteLedger = LEDGER) -> None:
        self.url = url
        self.ledger = ledger
        self._writer: OtelTracesWriter | None = None
        self._lock = threading.Lock()
        self._shut_down = False

    def _spans(self, spans: Sequence[ReadableSpan]) -> list[OtlpSpan]:
        resources: dict[int, tuple[object, dict[str, Any]]] = {}
        out: list[OtlpSpan] = []
        for span in spans:
            try:
                known = resources.get(id(span.resource))
                if known is None or known[0] is not span.resource:
                    known = resources[id(span.resource)] = (span.resource, plain_resource(span))
                out.append(otlp_span_from_sdk(span, known[1]))
            except Exception:
                logger.exception("cliffwatch: skipped span %r: cannot convert it", span.name)
                self.ledger.add(lost=1, error=f"span {span.name!r} could not be converted")
        return out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans`` to the traces table.

        Returns:
            ``SUCCESS`` when they are in the table; ``FAILURE`` after :meth:`shutdown` or
            when ClickHouse refused them (logged in one line; counted lost).
        """
        if self._shut_down:
            self.ledger.add(lost=len(spans), error="spans exported after shutdown")
            return SpanExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            plain = self._spans(spans)
            with self._lock:
                if self._writer is None:
                    self._writer = OtelTracesWriter(self.url, ledger=self.ledger)
                self._writer.write(plain)
            return SpanExportResult.SUCCESS
        except Exception as exc:
            if self._writer is None:  # never connected: the spans were not counted yet
                self.ledger.add(lost=len(spans), store_failed=1,
                                error=str(exc).split("\n")[0])
            logger.error("cliffwatch: %d spans not written to %s: %s", len(spans), self.url,
                         str(exc).split("\n")[0])
            return SpanExportResult.FAILURE
        finally:
            detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is written before it returns."""
        return True

    def shutdown(self) -> None:
        """Close the connection and refuse further exports."""
        with self._lock:
            self._shut_down = True
            if self._writer is not None:
                self._writer.close()
