"""The HTTP side of the OTLP receiver: a Starlette app served by uvicorn (h11).

uvicorn parses HTTP (request lines, headers, Content-Length, chunked bodies, keep-alive)
and answers 400 to anything malformed at that level (a negative or non-hex chunk size, a
Content-Length that is not a number, headers over 16 KiB) with a status line, never a
silent close. This module routes ``POST /v1/traces`` and ``GET /health``, refuses what it
can before reading the body (401, 411, 413 by Content-Length, 415), then reads the body
as it streams in through a :class:`~telemetry.otlp_body.BodyInflater` (413 once over
the limit, on the wire or gunzipped), and hands the decoded bytes to
:meth:`telemetry.receiver.OtlpReceiver.export_body` in a worker thread. Every error body
is a ``google.rpc.Status`` in the request's encoding, as the OTLP/HTTP spec asks.

A refused request's unread body is read and dropped by uvicorn after the answer, so the
connection stays usable and the client reads the 4xx rather than a reset.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from cliffwatch.telemetry.otlp_body import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    BodyInflater,
    media_type,
)
from cliffwatch.telemetry.otlp_decode import (
    OtlpDecodeError,
    PayloadTooLargeError,
    SpanRejection,
    UnsupportedEncodingError,
    printable,
)

if TYPE_CHECKING:
    from cliffwatch.telemetry.receiver import OtlpReceiver

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/health"

KEEP_ALIVE_TIMEOUT_S = 30
"""An idle keep-alive connection is closed after this long. Longer than the SDK's batch
interval (5 s by default), so an exporter's pooled connection is not closed just as it
sends its next batch."""

SHUTDOWN_GRACE_S = 10
"""On stop, requests under way get this long to finish before they are cancelled."""

MAX_REJECTIONS_IN_MESSAGE = 3
"""Rejected spans named in a ``partial_success.error_message`` (the count covers all)."""

# google.rpc.Code values for the error bodies.
_RPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 408: 4, 411: 3, 413: 8, 415: 3, 503: 14}


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> Response:
        """The Starlette response of this reply."""
        return Response(
            self.body, self.status, headers=dict(self.headers), media_type=self.content_type
        )


def encode_message(message: Any, kind: str) -> tuple[str, bytes]:
    """(content type, body) of a protobuf message in the request's encoding: OTLP/JSON for
    ``application/json``, else binary protobuf."""
    if kind == CONTENT_TYPE_JSON:
        from google.protobuf import json_format

        return CONTENT_TYPE_JSON, json_format.MessageToJson(message, indent=None).encode()
    return CONTENT_TYPE_PROTOBUF, message.SerializeToString()


def error_reply(status: int, message: str, kind: str, *, allow: str = "POST") -> Reply:
    """A ``google.rpc.Status`` answer in the request's encoding (protobuf when unknown);
    ``allow`` is the ``Allow`` header of a 405."""
    from google.rpc import status_pb2

    content_type, body = encode_message(
        status_pb2.Status(code=_RPC_CODES.get(status, 2), message=printable(message)), kind
    )
    headers: tuple[tuple[str, str], ...] = ()
    if status == 401:
        headers = (("WWW-Authenticate", 'Bearer realm="cliffwatch"'),)
    elif status == 503:
        headers = (("Retry-After", "1"),)
    elif status == 405:
        headers = (("Allow", allow),)
    elif status == 408:
        headers = (("Connection", "close"),)
    return Reply(status, content_type, body, headers)


def partial_success_message(rejections: Sequence[SpanRejection], what: str = "rejected") -> str:
    """One line naming the first spans and why, e.g. for ``partial_success``."""
    shown = "; ".join(str(r) for r in rejections[:MAX_REJECTIONS_IN_MESSAGE])
    more = len(rejections) - MAX_REJECTIONS_IN_MESSAGE
    return printable(
        f"{len(rejections)} span(s) {what}: {shown}" + (f"; and {more} more" if more > 0 else "")
    )


class _Disconnected(Exception):
    """Internal: the client went away before its body was read."""


async def _read_body(request: Request, inflater: BodyInflater, idle_timeout_s: float) -> bytes:
    """The body undone of its encoding, read chunk by chunk as it arrives.

    Raises:
        PayloadTooLargeError: over the limit on the wire or once decoded.
        OtlpDecodeError: corrupt or truncated gzip.
        TimeoutError: no data for ``idle_timeout_s``.
        _Disconnected: the client closed the connection.
    """
    received = 0
    while True:
        message = await asyncio.wait_for(request.receive(), idle_timeout_s)
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > inflater.max_bytes:
            raise PayloadTooLargeError(f"body is over the limit of {inflater.max_bytes} bytes")
        if chunk:
            inflater.feed(chunk)
        if not message.get("more_body", False):
            return inflater.finish()


async def _traces(receiver: OtlpReceiver, request: Request) -> Reply:
    """``POST /v1/traces``: check, read the body as it streams, export it."""
    headers = request.headers
    kind = media_type(headers.get("content-type"))
    reply_kind = kind if kind in (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON) else ""
    config = receiver.config
    if not receiver.authorised(headers.get("authorization")):
        return receiver.refuse(401, "missing or wrong bearer token", reply_kind)
    if not reply_kind:
        return receiver.refuse(
            415,
            f"Content-Type {headers.get('content-type')!r} is not supported "
            f"(use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON})",
            reply_kind,
        )
    try:
        inflater = BodyInflater(headers.get("content-encoding"), config.max_body_bytes)
    except UnsupportedEncodingError as exc:
        return receiver.refuse(415, str(exc), reply_kind)
    length = headers.get("content-length")
    if length is None and "chunked" not in headers.get("transfer-encoding", "").lower():
        return receiver.refuse(411, "Content-Length is required", reply_kind)
    if length is not None and int(length) > config.max_body_bytes:  # h11 checked the digits
        message = f"body of {length} bytes is over the limit of {config.max_body_bytes}"
        return receiver.refuse(413, message, reply_kind)
    try:
        data = await _read_body(request, inflater, config.body_idle_timeout_s)
    except PayloadTooLargeError as exc:
        return receiver.refuse(413, str(exc), reply_kind)
    except OtlpDecodeError as exc:
        return receiver.refuse(400, str(exc), reply_kind)
    except TimeoutError:
        message = f"the body stalled for {config.body_idle_timeout_s:g} s"
        return receiver.refuse(408, message, reply_kind)
    except _Disconnected:
        return Reply(400, CONTENT_TYPE_PROTOBUF, b"")  # nobody to answer; uvicorn drops it
    return await run_in_threadpool(receiver.export_body, data, reply_kind)


def build_app(receiver: OtlpReceiver) -> Starlette:
    """The ASGI app of a receiver: ``POST /v1/traces``, ``GET /health``, else 404 / 405
    as ``google.rpc.Status`` bodies. A trailing slash is accepted on both paths."""

    async def traces(request: Request) -> Response:
        return (await _traces(receiver, request)).response()

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok"}
        if receiver.authorised(request.headers.get("authorization")):
            body.update(receiver.stats_snapshot())
        return Response(json.dumps(body), media_type=CONTENT_TYPE_JSON)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        path = request.url.path
        allow = "GET" if path.rstrip("/") == HEALTH_PATH else "POST"
        if status == 405:
            message = f"use {allow} {path}"
        else:
            message = f"no such endpoint {path} (use POST {TRACES_PATH})"
        kind = media_type(request.headers.get("content-type"))
        return error_reply(status, message, kind, allow=allow).response()

    routes = [Route(p, traces, methods=["POST"]) for p in (TRACES_PATH, TRACES_PATH + "/")]
    routes += [Route(p, health, methods=["GET"]) for p in (HEALTH_PATH, HEALTH_PATH + "/")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False
    return app


class _H11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a client that half-closes after its request.

    asyncio closes a connection whose peer sent EOF unless the protocol's
    ``eof_received`` says otherwise, and uvicorn's does not: a client that shuts its
    sending side after the request (``nc -N``, many scripts) would get no answer. Here a
    complete request is still answered (then the connection closes), and a request cut
    short (headers or body) goes to h11, which raises, so uvicorn answers 400.
    """

    def eof_received(self) -> bool | None:  # type: ignore[override]
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return None  # our answer is out: close, as uvicorn does
        state = conn.their_state
        if state is h11.SEND_BODY or (state is h11.IDLE and conn.trailing_data[0]):
            # Cut short: h11 raises, uvicorn answers 400 and closes. Never at a clean end,
            # where h11 would report the close and uvicorn's event loop spin on it.
            conn.receive_data(b"")
            self.handle_events()
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return True  # a whole request under way: answer it, then close
        return None


def uvicorn_server(receiver: OtlpReceiver) -> uvicorn.Server:
    """The uvicorn server of a receiver's app (h11, asyncio, no lifespan, no access log,
    no logging set-up of its own: its warnings go to the ``uvicorn.error`` logger)."""
    return uvicorn.Server(
        uvicorn.Config(
            build_app(receiver),
            http=_H11Protocol,
            loop="asyncio",
            lifespan="off",
            log_config=None,
            log_level=None,  # leave logging levels to the application
            access_log=False,
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
