"""An OTLP/HTTP trace receiver (``POST /v1/traces``) that is its store's one writer.

Any OpenTelemetry SDK's OTLP/HTTP exporter, or a Collector's ``otlphttp`` exporter, can
point at it: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces`` (or
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``). Built on the standard library's
``ThreadingHTTPServer``: no web framework, one thread per connection, which suits a
receiver on loopback or behind a Collector.

Answers follow the OTLP/HTTP spec (https://opentelemetry.io/docs/specs/otlp/#otlphttp):

=====  ==================================================================================
200    accepted; ``partial_success`` names how many spans were rejected and why
       (ids of the wrong length, missing timestamps), the rest are stored
400    malformed payload (truncated protobuf, invalid JSON, corrupt gzip): nothing stored
401    a token is set and the request lacks ``Authorization: Bearer <token>``
404    any path but ``/v1/traces`` (and ``/health``)
411    no Content-Length and not chunked
413    body over the size limit (on the wire or once gunzipped)
415    a content type other than ``application/x-protobuf`` or ``application/json``, or
       a content encoding other than gzip / identity
503    the write did not finish in time or failed; retryable (``Retry-After``), and
       re-sending adds nothing twice (spans are keyed by trace and span id)
=====  ==================================================================================

Error bodies are a ``google.rpc.Status`` in the request's encoding. A request is answered
200 only once its spans are durable: written to the store, or spilled to
``<db>.spill/`` when another process (a dashboard) held the file past the lock timeout.
All writes go through one :class:`~telemetry.span_writer.SpanWriter` thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from cliffwatch import settings
from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.otlp_decode import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    OtlpDecodeError,
    PayloadTooLargeError,
    SpanRejection,
    UnsupportedEncodingError,
    decode_body,
    decompress_body,
    media_type,
)
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_spans
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.span_writer import SpanWriter
from cliffwatch.telemetry.write_pipeline import write_spans

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/health"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
"""The IANA-registered OTLP/HTTP port, where SDKs and Collectors send by default."""

SOCKET_TIMEOUT_S = 30.0
"""A connection idle this long mid-request is dropped, so a stalled client frees its thread."""

DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
"""A refused request's body up to this size is read and dropped before the answer (so the
client reads our 4xx rather than a connection reset); a larger one is not read at all."""

MAX_REJECTIONS_IN_MESSAGE = 3
"""Rejected spans named in a ``partial_success.error_message`` (the count covers all)."""

# google.rpc.Code values for the error bodies.
_RPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 503: 14}


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
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = settings.DEFAULT_OTLP_MAX_BODY_BYTES
    mapping: MappingConfig = field(default_factory=MappingConfig)
    write_timeout_s: float = 60.0


@dataclass(slots=True)
class ReceiverStats:
    """Running totals since start (served as JSON on ``GET /health``)."""

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    requests_refused: int = 0
    """Requests answered 4xx: nothing of them stored."""
    requests_failed: int = 0
    """Requests answered 503: the write failed or timed out."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


class _Refused(Exception):
    """Internal: answer ``status`` with ``message``; nothing of the request is stored."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


def _encode(message: Any, kind: str) -> tuple[str, bytes]:
    if kind == CONTENT_TYPE_PROTOBUF:
        return CONTENT_TYPE_PROTOBUF, message.SerializeToString()
    from google.protobuf import json_format

    return CONTENT_TYPE_JSON, json_format.MessageToJson(message, indent=None).encode()


def _error_reply(status: int, message: str, kind: str, *, close: bool = False) -> _Reply:
    content_type, body = _encode(
        status_pb2.Status(code=_RPC_CODES.get(status, 2), message=message), kind
    )
    headers: tuple[tuple[str, str], ...] = ()
    if status == 401:
        headers = (("WWW-Authenticate", 'Bearer realm="cliffwatch"'),)
    elif status == 503:
        headers = (("Retry-After", "1"),)
    elif status == 405:
        headers = (("Allow", "POST"),)
    return _Reply(status, content_type, body, headers, close)


def partial_success_message(rejections: Sequence[SpanRejection]) -> str:
    """One line naming the first rejected spans and why, e.g. for ``partial_success``."""
    shown = "; ".join(str(r) for r in rejections[:MAX_REJECTIONS_IN_MESSAGE])
    more = len(rejections) - MAX_REJECTIONS_IN_MESSAGE
    return f"{len(rejections)} span(s) rejected: {shown}" + (
        f"; and {more} more" if more > 0 else ""
    )


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
        config: ReceiverConfig = ReceiverConfig(),  # noqa: B008 (frozen, immutable default)
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self.stats = ReceiverStats()
        self._stats_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._writer: SpanWriter | None = None
        self._stopped = threading.Event()

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Check the store, bind the socket and serve in a background thread.

        Raises:
            StoreError: the store cannot be used (not a cliffwatch store, busy, unwritable).
            SettingError: a bad price override file.
            ReceiverError: the address cannot be bound.
        """
        # Fail before listening: a foreign file or a locked store is one clear error now,
        # not a 503 on every request later. The empty write also loads pending spills.
        write_spans(self.db_path, [])
        import_litellm()  # the first price lookup costs seconds: pay it before serving
        server_class = _IPv6Server if ":" in self.config.host else _Server
        try:
            server = server_class((self.config.host, self.config.port), _Handler)
        except (OSError, OverflowError) as exc:
            raise ReceiverError(
                f"cannot listen on {self.config.host}:{self.config.port}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        server.receiver = self
        self._server = server
        self._writer = SpanWriter(self.db_path)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="cliffwatch-otlp"
        )
        self._thread.daemon = True
        self._thread.start()
        logger.info("cliffwatch: OTLP receiver on %s (store %s)", self.endpoint, self.db_path)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting requests, finish the writes under way, close. Idempotent."""
        if self._stopped.is_set():
            return
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._writer is not None:
            self._writer.close(timeout_s)
        self._stopped.set()

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
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The traces URL, e.g. ``http://127.0.0.1:4318/v1/traces``."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{TRACES_PATH}"

    def stats_snapshot(self) -> dict[str, int]:
        """The running totals as a plain dict."""
        with self._stats_lock:
            return asdict(self.stats)

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

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

    def export(self, body: bytes, content_type: str | None, content_encoding: str | None) -> _Reply:
        """Decode, map and durably write one request body; the reply to send.

        Never raises for bad input: every refusal is a 4xx reply, a failed write a 503.
        """
        kind = media_type(content_type)
        reply_kind = kind if kind in (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON) else ""
        try:
            data = decompress_body(body, content_encoding, self.config.max_body_bytes)
            decoded = decode_body(data, content_type)
        except PayloadTooLargeError as exc:
            return self._refuse(413, str(exc), reply_kind)
        except UnsupportedEncodingError as exc:
            return self._refuse(415, str(exc), reply_kind)
        except OtlpDecodeError as exc:
            return self._refuse(400, str(exc), reply_kind)
        records, map_rejections = map_spans(decoded.spans, self.config.mapping)
        rejections = [*decoded.rejections, *map_rejections]
        for rejection in rejections[:MAX_REJECTIONS_IN_MESSAGE]:
            logger.warning("cliffwatch: rejected %s", rejection)
        if records:
            assert self._writer is not None, "receiver not started"
            try:
                self._writer.write(records, timeout_s=self.config.write_timeout_s)
            except Exception as exc:  # timeout, store failure, spill failure: retryable
                self._count(requests=1, requests_failed=1)
                logger.error("cliffwatch: %d spans not stored: %s", len(records), exc)
                return _error_reply(503, f"spans not stored, retry: {exc}", reply_kind)
        self._count(requests=1, spans_accepted=len(records), spans_rejected=len(rejections))
        response = ExportTraceServiceResponse()
        if rejections:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=len(rejections),
                    error_message=partial_success_message(rejections),
                )
            )
        reply_type, payload = _encode(response, reply_kind or CONTENT_TYPE_PROTOBUF)
        return _Reply(200, reply_type, payload)

    def _refuse(self, status: int, message: str, kind: str, *, close: bool = False) -> _Reply:
        self._count(requests=1, requests_refused=1)
        logger.warning("cliffwatch: refused a request (%d): %s", status, message)
        return _error_reply(status, message, kind, close=close)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Restarting on the same port right after a stop must not fail on TIME_WAIT sockets.
    allow_reuse_address = True
    receiver: OtlpReceiver


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SDK exporters reuse their connection
    server_version = "cliffwatch-otlp"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._body_read = False
        receiver = self.server.receiver
        kind = media_type(self.headers.get("Content-Type"))
        reply_kind = kind if kind in (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON) else ""
        try:
            if urlsplit(self.path).path.rstrip("/") != TRACES_PATH:
                raise _Refused(
                    404, f"no such endpoint {self.path} (use POST {TRACES_PATH})", close=True
                )
            if not receiver.authorised(self.headers.get("Authorization")):
                raise _Refused(401, "missing or wrong bearer token", close=True)
            if not reply_kind:
                raise _Refused(
                    415,
                    f"Content-Type {self.headers.get('Content-Type')!r} is not supported "
                    f"(use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON})",
                    close=True,
                )
            body = self._read_body(receiver.config.max_body_bytes)
        except _Refused as refused:
            self._discard_body()
            reply = receiver._refuse(refused.status, str(refused), reply_kind, close=refused.close)
        else:
            reply = receiver.export(
                body, self.headers.get("Content-Type"), self.headers.get("Content-Encoding")
            )
        self._send(reply)

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        if path == HEALTH_PATH:
            stats = self.server.receiver.stats_snapshot()
            body = json.dumps({"status": "ok", **stats}).encode()
            self._send(_Reply(200, CONTENT_TYPE_JSON, body))
        elif path == TRACES_PATH:
            self._send(_error_reply(405, f"use POST {TRACES_PATH}", ""))
        else:
            self._send(_error_reply(404, f"no such endpoint {self.path}", ""))

    def _discard_body(self) -> None:
        """Read and drop an unread body of a refused request, up to :data:`DRAIN_LIMIT_BYTES`.

        A server that closes a socket with unread data makes the kernel reset the
        connection, and the client then sees "connection reset" instead of our 4xx.
        """
        if self._body_read:
            return
        self._body_read = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if length > DRAIN_LIMIT_BYTES:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _read_body(self, max_bytes: int) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(max_bytes)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise _Refused(411, "Content-Length is required", close=True)
        try:
            length = int(raw_length)
        except ValueError:
            raise _Refused(400, f"bad Content-Length {raw_length!r}", close=True) from None
        if length < 0:
            raise _Refused(400, f"bad Content-Length {raw_length!r}", close=True)
        if length > max_bytes:
            raise _Refused(
                413, f"body of {length} bytes is over the limit of {max_bytes}", close=True
            )
        self._body_read = True
        body = self.rfile.read(length)
        if len(body) < length:
            raise _Refused(400, "body shorter than its Content-Length", close=True)
        return body

    def _read_chunked(self, max_bytes: int) -> bytes:
        self._body_read = True  # partly, at worst: the connection is closed on a refusal
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Refused(400, "malformed chunked body", close=True) from None
            if size == 0:
                while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > max_bytes:
                raise _Refused(413, f"body is over the limit of {max_bytes} bytes", close=True)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _Refused(400, "chunked body is truncated", close=True)
            parts.append(chunk)
            self.rfile.readline(3)  # CRLF after the chunk

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        logger.debug("cliffwatch-otlp %s " + format, self.address_string(), *args)
