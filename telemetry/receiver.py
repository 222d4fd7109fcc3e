"""An OTLP/HTTP trace receiver (``POST /v1/traces``) that is its store's one writer.

Why one file: the receiver's life cycle and its one request path share its state (the
counters and their lock, the drain, the worker pool, the writer); HTTP is in
:mod:`telemetry.otlp_http`, the decode-map-journal work in :mod:`telemetry.otlp_ingest`,
the worker processes in :mod:`telemetry.ingest_pool`.

Any OpenTelemetry SDK's OTLP/HTTP exporter, or a Collector's ``otlphttp`` exporter, can
point at it: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces`` (or
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``). HTTP is uvicorn's (its h11
protocol: request parsing, chunked bodies, keep-alive, a 400 for anything malformed at
the HTTP level); routing and requests are Starlette's. With ack ``journal`` (the default)
and a DuckDB store, decoding, mapping and the journal write run in worker processes
(:mod:`telemetry.ingest_pool`, ``CLIFFWATCH_RECEIVER_WORKERS``), else in worker threads;
all store writes go through one thread (the journal's drain, or with ack ``store`` a
:class:`~telemetry.span_writer.SpanWriter`).

Answers follow the OTLP/HTTP spec (https://opentelemetry.io/docs/specs/otlp/#otlphttp):

=====  ==================================================================================
200    accepted; ``partial_success`` names how many spans were rejected and why (ids of
       the wrong length, missing timestamps, text that is not valid Unicode), the rest
       are stored; with ``rejected_spans`` 0 it is a warning naming spans stored with
       their usage rejected (out of :mod:`telemetry.usage_bounds`)
400    malformed payload (truncated protobuf, invalid JSON, corrupt gzip, malformed HTTP
       such as a bad chunk size) or spans no store could hold: nothing stored
401    a token is set and the request lacks ``Authorization: Bearer <token>``
404    any path but ``/v1/traces`` (and ``/health``)
405    ``/v1/traces`` with a method other than POST
408    the body stalled for ``body_idle_timeout_s`` (30 s)
411    no Content-Length and not chunked
413    body over the size limit (on the wire or once gunzipped)
415    a content type other than ``application/x-protobuf`` or ``application/json``, or
       a content encoding other than gzip / identity
503    the journal holds :attr:`ReceiverConfig.backlog_max_spans` spans not yet in the
       store (throttling, as the OTLP spec says: the sender retries after
       ``Retry-After``), or the spans could not be made durable (a full disk), or the
       worker process decoding the request died or did not answer within
       ``write_timeout_s`` (it is replaced), or (ack ``store``) the write did not finish
       in time; retryable, and re-sending adds nothing twice (spans are keyed by trace
       and span id)
=====  ==================================================================================

Error bodies are a ``google.rpc.Status`` in the request's encoding. A request is answered
200 only once its spans are durable. By default (ack ``journal``,
``CLIFFWATCH_RECEIVER_ACK``) that is once they are fsynced to the store's journal
(:mod:`telemetry.journal`, ``<db>.journal/``), which one thread loads into the store in
batches of up to tens of thousands of spans; :meth:`OtlpReceiver.flush` waits for that,
:meth:`OtlpReceiver.stop` does it for everything answered. With ack ``store`` it is once
they are written to the store, or spilled to ``<db>.spill/`` when the write failed
(another process held the file past the lock timeout; a damaged file).
The body is read as it streams in and never held beyond the size limit.

``GET /health`` answers ``{"status": "ok", ...counters}`` (with the journal's backlog:
``backlog_spans``, ``backlog_files``, ``spans_stored``, ``store_errors``); when a token is
set, the counters need it too (without it: ``{"status": "ok"}`` alone, for liveness probes).
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from cliffwatch import settings
from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.ingest_pool import IngestPool, WorkerLost
from cliffwatch.telemetry.journal import BacklogFullError, Journal, JournalDrain
from cliffwatch.telemetry.listen import ListenError, listen_socket
from cliffwatch.telemetry.otlp_decode import OtlpDecodeError, OtlpSpan, SpanRejection, printable
from cliffwatch.telemetry.otlp_http import (
    HEALTH_PATH,
    MAX_REJECTIONS_IN_MESSAGE,
    TRACES_PATH,
    Reply,
    encode_message,
    error_reply,
    partial_success_message,
    uvicorn_server,
)
from cliffwatch.telemetry.otlp_ingest import decode_and_map, journal_request, usage_flags
from cliffwatch.telemetry.otlp_mapping import MappingConfig
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.span_writer import SpanWriter
from cliffwatch.telemetry.write_ledger import LEDGER, is_data_error
from cliffwatch.telemetry.write_pipeline import write_spans

if TYPE_CHECKING:
    from cliffwatch.telemetry.clickhouse.writer import OtelTracesWriter

__all__ = [
    "HEALTH_PATH",
    "TRACES_PATH",
    "OtlpReceiver",
    "ReceiverConfig",
    "ReceiverError",
    "ReceiverStats",
    "partial_success_message",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
"""The IANA-registered OTLP/HTTP port, where SDKs and Collectors send by default."""

BODY_IDLE_TIMEOUT_S = 30.0
"""Default :attr:`ReceiverConfig.body_idle_timeout_s`."""

START_TIMEOUT_S = 60.0
"""How long :meth:`OtlpReceiver.start` waits for the server to serve."""

WRITER_HOLD_S = 1.0
"""Default :attr:`ReceiverConfig.writer_hold_s`."""


class ReceiverError(CliffwatchError):
    """The receiver cannot start (the port is taken, the host does not resolve)."""


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """How the receiver listens and maps.

    Attributes:
        host: interface to bind; loopback by default (say ``0.0.0.0`` to listen on all).
        port: TCP port; 0 picks a free one (see :attr:`OtlpReceiver.port`).
        token: when set, every request needs ``Authorization: Bearer <token>``.
        max_body_bytes: largest body accepted, compressed or not.
        mapping: task class rule, source label, price overrides.
        write_timeout_s: how long a request waits for its spans to be durable before
            the sender gets a retryable 503.
        capture_content: keep prompt and completion content
            (:mod:`telemetry.content_capture`); default
            :func:`cliffwatch.settings.capture_content` (off).
        body_idle_timeout_s: a request whose body sends nothing for this long is
            answered 408 and its connection closed.
        writer_hold_s: how long the writer keeps one store connection across batches
            before it lets readers in (:class:`~telemetry.span_writer.SpanWriter`'s
            ``hold_s``); 0 opens and closes the store for every batch.
        ack: ``journal`` (answer once the spans are in the journal) or ``store`` (once
            they are in the store); default :func:`cliffwatch.settings.receiver_ack`.
        backlog_max_spans: with ack ``journal``, spans the journal may hold unwritten
            before good requests are answered 503; default
            :func:`cliffwatch.settings.receiver_backlog_spans`.
        workers: with ack ``journal`` and a DuckDB store, worker processes that decode,
            map and journal requests (:mod:`telemetry.ingest_pool`); 0 does it in this
            process's threads; default :func:`cliffwatch.settings.receiver_workers`.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = settings.DEFAULT_OTLP_MAX_BODY_BYTES
    mapping: MappingConfig = field(default_factory=MappingConfig)
    write_timeout_s: float = 60.0
    capture_content: bool = field(default_factory=settings.capture_content)
    body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S
    writer_hold_s: float = WRITER_HOLD_S
    ack: str = field(default_factory=settings.receiver_ack)
    backlog_max_spans: int = field(default_factory=settings.receiver_backlog_spans)
    workers: int = field(default_factory=settings.receiver_workers)


@dataclass(slots=True)
class ReceiverStats:
    """Running totals since start (served as JSON on ``GET /health``)."""

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    spans_usage_rejected: int = 0
    """Spans stored with their usage rejected (out of bounds): never summed."""
    usage_rejected: dict[str, int] = field(default_factory=dict)
    """``spans_usage_rejected`` per reason (:class:`~telemetry.usage_bounds.UsageRejection`)."""
    requests_refused: int = 0
    """Requests answered 4xx: nothing of them stored."""
    requests_failed: int = 0
    """Requests answered 503: the write failed or timed out."""
    requests_throttled: int = 0
    """Requests answered 503 because the journal's backlog was full (not counted failed)."""


class OtlpReceiver:
    """The OTLP/HTTP receiver of one store; start it, then stop it (or use ``with``).

    Args:
        db_path: the store; created when missing. While the receiver runs it is the
            only process that should write this store (readers are fine).
        config: where to listen and how to map spans.

    Example::

        with OtlpReceiver("data/cliffwatch.duckdb", ReceiverConfig(port=0)) as rx:
            print(rx.endpoint)  # http://127.0.0.1:<port>/v1/traces
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        config: ReceiverConfig | None = None,
    ) -> None:
        # A ClickHouse store URL: spans go, as received, into its Collector-shaped traces
        # table (telemetry/clickhouse/writer.py); `cliffwatch watch` makes runs of them.
        text = os.fspath(db_path)
        self.engine_url = text if settings.is_engine_store(text) else None
        self._traces: OtelTracesWriter | None = None
        self.db_path = Path(db_path)
        self.config = config or ReceiverConfig()
        self.stats = ReceiverStats()
        self._stats_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._port = self.config.port
        self._thread: threading.Thread | None = None
        self._writer: SpanWriter | None = None
        self._drain: JournalDrain | None = None
        self._pool: IngestPool | None = None
        self._stopped = threading.Event()

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Check the store, bind the socket and serve in a background thread.

        Signals are left to the caller (the server runs outside the main thread): stop
        the receiver from a SIGTERM or Ctrl-C handler with :meth:`stop`.

        Raises:
            StoreError: the store cannot be used (not a cliffwatch store, busy, unwritable).
            SettingError: a bad price override file.
            ReceiverError: the address cannot be bound, or the server did not start.
        """
        # Fail before listening: a foreign file or a locked store is one clear error now,
        # not a 503 on every request later. The empty write also loads pending spills.
        if self.engine_url is not None:
            from cliffwatch.telemetry.clickhouse.url import parse_store_url
            from cliffwatch.telemetry.clickhouse.writer import OtelTracesWriter

            self._traces = OtelTracesWriter(parse_store_url(self.engine_url))
        else:
            write_spans(self.db_path, [])
        journaled = self._traces is None and self.config.ack == "journal"
        if journaled and self.config.workers > 0:
            self._pool = self._start_pool()
        if self._pool is None:
            import_litellm()  # the first price lookup costs seconds: pay it before serving
        sock = _bind(self.config.host, self.config.port)
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        if self._traces is None and not journaled:
            self._writer = SpanWriter(self.db_path, hold_s=self.config.writer_hold_s)
        elif journaled:
            # Files an earlier receiver left are the first thing the drain loads.
            self._drain = JournalDrain(self.db_path, Journal(self.db_path),
                                       hold_s=self.config.writer_hold_s)
        server = uvicorn_server(self)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="cliffwatch-otlp", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ReceiverError(f"the OTLP server on {self.endpoint} did not start")
            time.sleep(0.01)
        logger.info("cliffwatch: OTLP receiver on %s (store %s)", self.endpoint, self.db_path)
        return self

    def _start_pool(self) -> IngestPool | None:
        """The started worker pool, or None (logged) when a worker cannot start: requests
        are then decoded in this process's threads."""
        config = self.config
        try:
            return IngestPool(config.workers, config.mapping, config.capture_content).start()
        except (OSError, WorkerLost) as exc:
            logger.warning("cliffwatch: receiver workers cannot start (%s); decoding in "
                           "the server process", exc)
            return None

    def stop(self, timeout_s: float = 30.0, drain_timeout_s: float = 300.0) -> None:
        """Stop accepting requests, let those under way finish (up to
        :data:`telemetry.otlp_http.SHUTDOWN_GRACE_S`), write what is queued or in the
        journal (for up to ``drain_timeout_s``: what is left then stays in the journal
        for the next receiver), close. Idempotent."""
        if self._stopped.is_set():
            return
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._socket is not None:
            self._socket.close()
        if self._pool is not None:
            self._pool.close()
        if self._writer is not None:
            self._writer.close(timeout_s)
        if self._drain is not None:
            if not self._drain.close(drain_timeout_s):
                logger.error("cliffwatch: %d spans left in %s, loaded by the next receiver",
                             self._drain.journal.backlog_spans, self._drain.journal.directory)
        if self._traces is not None:
            self._traces.close()
        self._stopped.set()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until every span answered 200 so far is in the store (True), or
        ``timeout_s`` passes (False). Immediate with ack ``store``."""
        if self._drain is not None:
            return self._drain.flush(timeout_s)
        return True

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (True) or ``timeout_s`` passes (False)."""
        return self._stopped.wait(timeout_s)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the real one when the config said 0)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """The traces URL, e.g. ``http://127.0.0.1:4318/v1/traces``."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{TRACES_PATH}"

    def stats_snapshot(self) -> dict[str, Any]:
        """The running totals as a plain dict (``usage_rejected`` a dict of counts), and
        with ack ``journal`` the journal's: ``backlog_spans`` and ``backlog_files`` (not
        yet in the store), ``backlog_limit_spans``, and the drain's ``spans_stored``,
        ``spans_unstorable``, ``store_errors``, ``last_store_error``."""
        with self._stats_lock:
            snapshot = asdict(self.stats)
        if self._drain is not None:
            journal = self._drain.journal
            snapshot.update(backlog_spans=journal.backlog_spans,
                            backlog_files=journal.backlog_files,
                            backlog_limit_spans=self.config.backlog_max_spans,
                            **asdict(self._drain.stats))
        return snapshot

    def _count(self, usage_reasons: Sequence[str] = (), **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            for reason in usage_reasons:
                self.stats.usage_rejected[reason] = self.stats.usage_rejected.get(reason, 0) + 1

    # --- one export request -------------------------------------------------------------

    def authorised(self, authorization: str | None) -> bool:
        """Whether an Authorization header value passes (always, when no token is set)."""
        token = self.config.token
        if token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )

    def export_body(self, data: bytes, kind: str) -> Reply:
        """Decode, map and durably write one request's (decompressed) body; the reply.

        Blocking: runs in a worker thread. Never raises for bad input: a payload that
        does not decode is a 400, spans that do not are named in ``partial_success``, a
        failed write of sound spans a 503.
        """
        if self._drain is not None:
            return self._export_to_journal(data, kind)
        config = self.config
        try:
            spans, records, rejections = decode_and_map(
                data, kind, config.mapping, config.capture_content)
        except OtlpDecodeError as exc:
            return self.refuse(400, str(exc), kind)
        if records:
            try:
                if self._traces is None:
                    records, unstorable = self._write(records)
                else:
                    records, unstorable = self._write_rows(spans, records)
            except Exception as exc:  # timeout, store failure, spill failure: retryable
                return self._failed(f"{len(records)} spans", exc, kind)
            rejections += unstorable
        return self._accepted(kind, len(records), rejections, *usage_flags(records))

    def _export_to_journal(self, data: bytes, kind: str) -> Reply:
        """:meth:`export_body` with ack ``journal``: the body is decoded, mapped and
        written to a journal file by a worker process (or this thread, with no pool),
        and the file renamed into the journal before the answer."""
        assert self._drain is not None, "receiver not started"
        journal, config = self._drain.journal, self.config
        tmp = journal.tmp_path()
        spans = 0
        try:
            journal.check_room(1, config.backlog_max_spans)  # full: spend nothing on it
            if self._pool is not None:
                done = self._pool.run(data, kind, tmp, config.write_timeout_s)
            else:
                done = journal_request(data, kind, tmp, config.mapping, config.capture_content,
                                       journal.sync)
            if done.refused is not None:
                return self.refuse(400, done.refused, kind)
            spans = done.spans
            if done.write_error is not None:
                raise OSError(done.write_error)
            if spans:
                journal.commit(tmp, spans, config.backlog_max_spans)
        except BacklogFullError as exc:
            self._count(requests=1, requests_throttled=1)
            return error_reply(503, str(exc), kind)
        except (OSError, WorkerLost) as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                LEDGER.add(lost=spans, error=f"journal {journal.directory}: {exc}")
            return self._failed(f"{spans} spans" if spans else "a request's spans", exc, kind)
        return self._accepted(kind, spans, done.rejections, done.flagged, done.usage_reasons)

    def _failed(self, what: str, exc: BaseException, kind: str) -> Reply:
        """Count and log a request whose sound spans were not made durable; its 503."""
        self._count(requests=1, requests_failed=1)
        logger.error("cliffwatch: %s not stored: %s", what, exc)
        return error_reply(503, f"spans not stored, retry: {exc}", kind)

    def _accepted(self, kind: str, accepted: int, rejections: Sequence[SpanRejection],
                  flagged: Sequence[SpanRejection], usage_reasons: Sequence[str]) -> Reply:
        """Count a request whose ``accepted`` spans are durable; its 200, with
        ``partial_success`` naming the rejected spans and those stored with their usage
        rejected (``flagged``)."""
        for rejection in rejections[:MAX_REJECTIONS_IN_MESSAGE]:
            logger.warning("cliffwatch: rejected %s", rejection)
        self._count(
            usage_reasons,
            requests=1,
            spans_accepted=accepted,
            spans_rejected=len(rejections),
            spans_usage_rejected=len(flagged),
        )
        response = ExportTraceServiceResponse()
        messages = []
        if rejections:
            response.partial_success.rejected_spans = len(rejections)
            messages.append(partial_success_message(rejections))
        if flagged:
            # Alone, the spec's warning form: nothing rejected, a message saying what was
            # changed (https://opentelemetry.io/docs/specs/otlp/#partial-success-1).
            messages.append(partial_success_message(flagged, "stored with their usage rejected"))
        if messages:
            response.partial_success.error_message = "; ".join(messages)
        content_type, payload = encode_message(response, kind)
        return Reply(200, content_type, payload)

    def _write_rows(
        self, spans: Sequence[OtlpSpan], records: list[SpanRecord]
    ) -> tuple[list[SpanRecord], list[SpanRejection]]:
        """Append the spans that mapped, as received, to the engine store's traces table.

        Raises what the insert raises (the engine unreachable): answered 503.
        """
        assert self._traces is not None, "receiver not started"
        mapped = {(r.trace_id, r.span_id) for r in records}
        self._traces.write([s for s in spans if (s.trace_id, s.span_id) in mapped])
        return records, []

    def _write(self, records: list[SpanRecord]) -> tuple[list[SpanRecord], list[SpanRejection]]:
        """Write durably; spans no store could hold are rejected, not retried.

        Returns ``(written, rejected)``. Raises what a retry may cure (the store busy
        past the timeout, the disk full): the request is then answered 503.
        """
        assert self._writer is not None, "receiver not started"
        timeout_s = self.config.write_timeout_s
        try:
            self._writer.write(records, timeout_s=timeout_s)
            return records, []
        except Exception as exc:
            if not is_data_error(exc):
                raise
        # A value the store cannot take (it would fail on every retry): submit the spans
        # one by one, so the writer isolates the bad ones and the rest are stored.
        futures = [(record, self._writer.submit([record])) for record in records]
        written: list[SpanRecord] = []
        rejected: list[SpanRejection] = []
        for record, future in futures:
            try:
                future.result(timeout=timeout_s)
                written.append(record)
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                rejected.append(SpanRejection.unstorable(record.trace_id, record.span_id, exc))
        return written, rejected

    def refuse(self, status: int, message: str, kind: str) -> Reply:
        """Count and log a refused request; its error reply (nothing of it is stored)."""
        self._count(requests=1, requests_refused=1)
        logger.warning("cliffwatch: refused a request (%d): %s", status, printable(message))
        return error_reply(status, message, kind)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (:func:`telemetry.listen.listen_socket`).

    Raises:
        ReceiverError: the host does not resolve or the address cannot be bound.
    """
    try:
        return listen_socket(host, port)
    except ListenError as exc:
        raise ReceiverError(str(exc)) from None
