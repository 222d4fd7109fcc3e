"""OTLP/HTTP request bodies: content types, Content-Encoding (gzip), decoding by type.

Framework-free, so the receiver's HTTP side (:mod:`telemetry.otlp_http`) and tests share
it. The body is undone chunk by chunk (:class:`BodyInflater`), so neither a large body nor
a gzip bomb is ever held beyond the size limit.
"""

from __future__ import annotations

import zlib

from cliffwatch.telemetry.otlp_decode import (
    DecodedRequest,
    OtlpDecodeError,
    PayloadTooLargeError,
    UnsupportedEncodingError,
    decode_protobuf,
    printable,
)
from cliffwatch.telemetry.otlp_json import decode_json

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lowercased (parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class BodyInflater:
    """Undoes a Content-Encoding chunk by chunk, never holding more than ``max_bytes``.

    Feed the body as it arrives (:meth:`feed`), then take the decoded bytes
    (:meth:`finish`). A gzip body may hold several members (RFC 1952), decoded one after
    the other. Decoded data past ``max_bytes`` stops the inflater at once, so a gzip bomb
    costs at most ``max_bytes`` of memory.

    Args:
        content_encoding: the Content-Encoding header (``gzip``, ``x-gzip``, ``identity``
            or none).
        max_bytes: the largest decoded size accepted.

    Raises:
        UnsupportedEncodingError: (on construction) an encoding other than gzip or identity.
    """

    def __init__(self, content_encoding: str | None, max_bytes: int) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise UnsupportedEncodingError(
                f"Content-Encoding {printable(content_encoding or '')[:60]!r} is not supported "
                "(use gzip or identity)"
            )
        self.max_bytes = max_bytes
        self._gzip = encoding in ("gzip", "x-gzip")
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._buffer = bytearray()

    def _add(self, data: bytes) -> None:
        if len(self._buffer) + len(data) > self.max_bytes:
            raise PayloadTooLargeError(f"body is over the limit of {self.max_bytes} bytes")
        self._buffer += data

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body as received.

        Raises:
            PayloadTooLargeError: the decoded body is now over ``max_bytes``.
            OtlpDecodeError: the gzip data is corrupt.
        """
        if not self._gzip:
            self._add(chunk)
            return
        data = chunk
        while data:
            if self._inflater.eof:  # the next gzip member starts here
                self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            room = self.max_bytes - len(self._buffer) + 1
            try:
                out = self._inflater.decompress(data, room)
            except zlib.error as exc:
                raise OtlpDecodeError(f"gzip body is corrupt: {exc}") from None
            self._add(out)
            data = self._inflater.unused_data if self._inflater.eof else b""
            data = data or self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        """The decoded body.

        Raises:
            OtlpDecodeError: the gzip data ended inside a member (truncated).
        """
        if self._gzip and not self._inflater.eof:
            raise OtlpDecodeError("gzip body is truncated")
        data = bytes(self._buffer)
        self._buffer = bytearray()
        return data


def decompress_body(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body with its Content-Encoding undone, refusing to grow past ``max_bytes``
    (a whole-body :class:`BodyInflater`).

    Raises:
        UnsupportedEncodingError: an encoding other than gzip or identity.
        PayloadTooLargeError: the decompressed body is over ``max_bytes``.
        OtlpDecodeError: the gzip data is corrupt or truncated.
    """
    inflater = BodyInflater(content_encoding, max_bytes)
    inflater.feed(body)
    return inflater.finish()


def decode_body(body: bytes, content_type: str | None) -> DecodedRequest:
    """Decode a request body by its Content-Type (protobuf or JSON).

    Raises:
        UnsupportedEncodingError: a content type other than application/x-protobuf or
            application/json.
        OtlpDecodeError: the body does not decode as that type.
    """
    kind = media_type(content_type)
    if kind == CONTENT_TYPE_PROTOBUF:
        return decode_protobuf(body)
    if kind == CONTENT_TYPE_JSON:
        return decode_json(body)
    raise UnsupportedEncodingError(
        f"Content-Type {content_type!r} is not supported "
        f"(use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON})"
    )
