"""One OTLP request's work short of the store: decode, map, and (ack ``journal``) the
request's journal file written and fsynced.

The receiver runs :func:`journal_request` in its worker processes
(:mod:`telemetry.ingest_pool`), or in its own threads with
``CLIFFWATCH_RECEIVER_WORKERS=0``: the same code either way. What comes back is a small
:class:`Ingested` (counts, the rejections, the file's name), never the spans, so a
worker's answer costs the server's GIL next to nothing; the server then renames the file
into the journal (:meth:`telemetry.journal.Journal.commit`) and answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cliffwatch.telemetry.content_capture import without_content
from cliffwatch.telemetry.journal import arrow_table, write_file
from cliffwatch.telemetry.otlp_body import decode_body
from cliffwatch.telemetry.otlp_decode import OtlpDecodeError, OtlpSpan, SpanRejection
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_spans
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.usage_bounds import usage_rejection


@dataclass(slots=True)
class Ingested:
    """What became of one request's body (picklable; a worker's answer).

    Attributes:
        refused: the one-line reason the body does not decode (answered 400), or None.
        spans: spans written to the request's journal file (0: no file was written).
        rejections: spans left out (ids of the wrong length, missing timestamps, values
            Arrow cannot hold), named in ``partial_success``.
        flagged: spans kept with their usage rejected (reason ``usage <why>``).
        usage_reasons: the reason of each flagged span (counted on ``/health``).
        write_error: the journal file could not be written (a full disk; answered 503).
    """

    refused: str | None = None
    spans: int = 0
    rejections: list[SpanRejection] = field(default_factory=list)
    flagged: list[SpanRejection] = field(default_factory=list)
    usage_reasons: list[str] = field(default_factory=list)
    write_error: str | None = None


def decode_and_map(
    data: bytes, kind: str, mapping: MappingConfig, capture_content: bool
) -> tuple[Sequence[OtlpSpan], list[SpanRecord], list[SpanRejection]]:
    """Decode a (decompressed) body of media type ``kind`` and map its spans.

    Returns:
        ``(decoded spans, records, rejections)``.

    Raises:
        OtlpDecodeError: the body does not decode (answered 400).
    """
    decoded = decode_body(data, kind)
    spans = decoded.spans if capture_content else without_content(decoded.spans)
    records, map_rejections = map_spans(spans, mapping)
    return spans, records, [*decoded.rejections, *map_rejections]


def usage_flags(records: Sequence[SpanRecord]) -> tuple[list[SpanRejection], list[str]]:
    """The records stored with their usage rejected (:mod:`telemetry.usage_bounds`), as
    ``usage <why>`` rejections, and each one's reason."""
    flagged: list[SpanRejection] = []
    reasons: list[str] = []
    for record in records:
        if reason := usage_rejection(record):
            flagged.append(SpanRejection(record.trace_id, record.span_id, f"usage {reason}"))
            reasons.append(str(reason))
    return flagged, reasons


def journal_request(
    data: bytes, kind: str, tmp: Path, mapping: MappingConfig, capture_content: bool,
    sync: bool = True,
) -> Ingested:
    """Decode and map one body, write its spans to the journal file ``tmp`` (fsynced when
    ``sync``; :func:`telemetry.journal.write_file`). Never raises for bad input or a full
    disk: those are in the answer.

    Args:
        data: the body, Content-Encoding undone.
        kind: its media type (``application/x-protobuf`` or ``application/json``).
        tmp: where to write (a :meth:`telemetry.journal.Journal.tmp_path`); nothing is
            written when no span is left.
        mapping: how spans become records.
        capture_content: keep prompt and completion content.
        sync: fsync the file.
    """
    try:
        _, records, rejections = decode_and_map(data, kind, mapping, capture_content)
    except OtlpDecodeError as exc:
        return Ingested(refused=str(exc))
    if records:
        table, records, unstorable = arrow_table(records)
        rejections += unstorable
    if records:
        try:
            write_file(tmp, table, sync=sync)
        except OSError as exc:
            return Ingested(spans=len(records), rejections=rejections, write_error=str(exc))
    flagged, reasons = usage_flags(records)
    return Ingested(spans=len(records), rejections=rejections, flagged=flagged,
                    usage_reasons=reasons)
