"""OpenTelemetry set-up for cliffwatch: a private TracerProvider that writes to DuckDB.

:func:`configure_tracing` builds a ``TracerProvider`` of its own (the global one is left
alone, so embedding cliffwatch never hijacks an application's tracing) with a
``BatchSpanProcessor`` over :class:`~telemetry.exporter.DuckDBSpanExporter`, and, when an
OTLP endpoint is set ($OTEL_EXPORTER_OTLP_ENDPOINT), a second ``BatchSpanProcessor`` over
the OTLP/HTTP protobuf exporter, so every span can also go to any other OTLP backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypedDict

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

from cliffwatch import settings
from cliffwatch.telemetry.export_process import ProcessSpanExporter
from cliffwatch.telemetry.export_thread import ThreadSpanExporter
from cliffwatch.telemetry.exporter import DuckDBSpanExporter
from cliffwatch.telemetry.write_ledger import LEDGER

INSTRUMENTATION_NAME = "cliffwatch"
OTLP_TRACES_PATH = "/v1/traces"
"""Signal path appended to a base OTLP/HTTP endpoint (OTel exporter specification)."""


class _FromSettings:
    def __repr__(self) -> str:
        return "<from settings>"


FROM_SETTINGS: Final = _FromSettings()
"""Default of ``otlp_endpoint``: read $OTEL_EXPORTER_OTLP_ENDPOINT at call time."""


@dataclass(frozen=True)
class Tracing:
    """A configured tracing pipeline.

    Attributes:
        tracer: the tracer to start spans with.
        provider: the private ``TracerProvider`` behind it.
        exporter: the store's exporter: DuckDB (its spill files are drained by
            :meth:`flush`), or ClickHouse's traces table for an engine store URL.
        db_path: the store the spans go to (a path, or the engine store URL as given).
        otlp_traces_url: the OTLP/HTTP traces URL spans also go to, or None.
    """

    tracer: Tracer
    provider: TracerProvider
    exporter: DuckDBSpanExporter | SpanExporter
    db_path: Path | str
    otlp_traces_url: str | None = None

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now and load any spilled batch into the store.

        The SDK's processors do not pass ``force_flush`` on to their exporter, so the
        DuckDB exporter's own flush (which loads spill files) is called here.

        Returns:
            True when every processor flushed and no spill file is left.
        """
        flushed = self.provider.force_flush(timeout_millis)
        return self.exporter.force_flush(timeout_millis) and flushed

    def shutdown(self) -> None:
        """Flush and stop every processor; the tracer records nothing afterwards."""
        self.provider.shutdown()


class _CountEnded(SpanProcessor):
    """Counts every ended span in :data:`telemetry.write_ledger.LEDGER` (``ended``): what
    the exporter does not account for after shutdown, the SDK dropped (a full queue)."""

    def on_end(self, span: ReadableSpan) -> None:
        LEDGER.add(ended=1)


def _spans_ended() -> int:
    """Spans ended in cliffwatch tracers so far: the thread writer gives way while it grows."""
    return LEDGER.snapshot().ended


class _BatchSettings(TypedDict):
    """Keyword arguments of ``BatchSpanProcessor`` (named, so their types are checked)."""

    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_millis: int


DUCKDB_BATCH: _BatchSettings = {
    # Every DuckDB write opens the file, inserts, materialises runs and closes it again
    # (other processes must get the lock between batches), a fixed ~50-120 ms whatever
    # the batch size. With the SDK defaults (queue 2,048, batch 512) that caps the
    # exporter near 4-5k spans/s and a burst overflows the queue, which *drops* spans
    # ("Queue full, dropping Span"; bench/ exporter). Large batches amortise the fixed
    # cost and a large queue absorbs bursts: 65,536 spans of ~2 KB is ~130 MB at worst.
    # 16,384 per batch (fewer transactions) wrote 8.7k -> 9.5k spans/s durably in
    # `python -m bench exporter` against 8,192 (2 cores, load 1.2-2.0); an Arrow batch of
    # 16,384 spans is ~35 MB.
    "max_queue_size": 65_536,
    "max_export_batch_size": 16_384,
    "schedule_delay_millis": 1_000,
}
"""BatchSpanProcessor settings of the DuckDB exporter (see the comment for why)."""


def _writer(writer: str | None) -> str:
    if writer is None:
        return settings.export_writer()
    if writer not in settings.EXPORT_WRITERS:
        raise settings.SettingError(f"writer {writer!r} is not one of "
                                    f"{', '.join(settings.EXPORT_WRITERS)}")
    return writer


def otlp_traces_url(endpoint: str) -> str:
    """The traces URL of a base OTLP/HTTP endpoint (``http://host:4318`` -> ``.../v1/traces``).

    An endpoint that already ends with ``/v1/traces`` is kept as it is.
    """
    base = endpoint.rstrip("/")
    return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH


def configure_tracing(
    db_path: str | os.PathLike[str],
    *,
    service_name: str = "cliffwatch",
    batch: bool = True,
    otlp_endpoint: str | None | _FromSettings = FROM_SETTINGS,
    writer: str | None = None,
) -> Tracing:
    """Build the tracing pipeline that records spans into the store at ``db_path``.

    Args:
        db_path: the DuckDB store (created on the first export), or a ClickHouse store URL
            (``clickhouse://...``, ``chdb:///dir``): spans then go into its Collector-shaped
            traces table (:class:`telemetry.clickhouse.writer.ClickHouseSpanExporter`),
            where ``cliffwatch watch`` makes runs of them.
        service_name: resource ``service.name`` of every span.
        batch: ``BatchSpanProcessor`` (True, production) or ``SimpleSpanProcessor``
            (False: each span is written as it ends; for tests).
        otlp_endpoint: base OTLP/HTTP endpoint to also send spans to; default
            ``settings.otlp_endpoint()`` ($OTEL_EXPORTER_OTLP_ENDPOINT); None for none.
        writer: where a batched DuckDB exporter maps and writes: ``process`` (a writer
            process: :class:`telemetry.export_process.ProcessSpanExporter`) or ``thread``
            (a writer thread that gives way while the application makes spans:
            :class:`telemetry.export_thread.ThreadSpanExporter`); default
            ``settings.export_writer()``
            ($CLIFFWATCH_EXPORT_WRITER). ``batch=False`` always writes in the thread that
            ends the span.

    Raises:
        SettingError: ``writer`` (or its setting) is neither ``process`` nor ``thread``.

    Returns:
        A :class:`Tracing`; call ``.shutdown()`` (or at least ``.flush()``) before exit.
    """
    endpoint = settings.otlp_endpoint() if isinstance(otlp_endpoint, _FromSettings) else (
        otlp_endpoint)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(_CountEnded())  # first: counted before any export
    store: Path | str = Path(db_path)
    duck: DuckDBSpanExporter | SpanExporter
    if settings.is_engine_store(os.fspath(db_path)):
        # Imported here: only an engine store needs the ClickHouse client.
        from cliffwatch.telemetry.clickhouse.url import parse_store_url
        from cliffwatch.telemetry.clickhouse.writer import ClickHouseSpanExporter

        store = os.fspath(db_path)
        duck = ClickHouseSpanExporter(parse_store_url(store))
    elif batch and _writer(writer) == "process":
        duck = ProcessSpanExporter(db_path)
    elif batch:
        duck = ThreadSpanExporter(db_path, activity=_spans_ended)
    else:
        duck = DuckDBSpanExporter(db_path)
    provider.add_span_processor(
        BatchSpanProcessor(duck, **DUCKDB_BATCH) if batch else SimpleSpanProcessor(duck)
    )
    url = None
    if endpoint:
        # Imported here: the OTLP exporter pulls in requests and protobuf, which most
        # runs (no endpoint) never need.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = otlp_traces_url(endpoint)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return Tracing(
        tracer=provider.get_tracer(INSTRUMENTATION_NAME),
        provider=provider,
        exporter=duck,
        db_path=store,
        otlp_traces_url=url,
    )
