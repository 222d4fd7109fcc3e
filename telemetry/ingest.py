"""Import OTLP trace files into a store: the offline twin of the OTLP receiver.

Formats, told apart by their first bytes (any of them may be gzipped), except that a file
named ``.json``, ``.jsonl`` or ``.ndjson`` is JSON (:func:`check_files` refuses one that is
not):

- **OTLP/JSON lines** (``.jsonl``): one ``ExportTraceServiceRequest`` per line, as the
  OpenTelemetry Collector's file exporter writes (``format: json``) and as the OTel spec's
  file exporter describes (https://opentelemetry.io/docs/specs/otel/protocol/file-exporter/).
- **OTLP/JSON**: one request per file, pretty-printed or not, or a JSON array of requests.
- **OTLP protobuf**: one binary ``ExportTraceServiceRequest`` per file (an HTTP body as
  sent), or the Collector file exporter's ``format: proto`` stream (each message preceded by
  its length as a 4-byte big-endian integer).

Every span goes through the same decode (:mod:`telemetry.otlp_decode`,
:mod:`telemetry.otlp_json`) and mapping (:mod:`telemetry.otlp_mapping`) as the receiver's,
drops content unless capture is on (:mod:`telemetry.content_capture`), and goes into the
store through :func:`telemetry.write_pipeline.write_spans` in batches. Spans are keyed by
(trace_id, span_id), so ingesting a file again adds nothing. A line or message that does
not decode is counted and named in the summary and the rest goes on.
Spans stored with their usage rejected (:mod:`telemetry.usage_bounds`) are counted and
named too.
"""

from __future__ import annotations

import gzip
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from cliffwatch import settings
from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.content_capture import without_content
from cliffwatch.telemetry.otlp_decode import (
    DecodedRequest,
    OtlpDecodeError,
    OtlpSpan,
    decode_protobuf,
    printable,
)
from cliffwatch.telemetry.otlp_json import (
    decode_json_object,
    may_hold_lone_surrogates,
    parse_json,
)
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_spans
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.usage_bounds import usage_rejection
from cliffwatch.telemetry.write_ledger import write_or_spill

DEFAULT_BATCH_SPANS = 20_000
"""Spans mapped and written per transaction. Bigger batches amortise the per-write run
materialisation; the spans of one trace usually sit close together in a file, so a batch
this size also gives most calls their ancestors for role hints."""

MAX_PROBLEMS_KEPT = 20
"""Problems (bad lines, rejected spans) named in the summary; all are counted."""

_PROGRESS_EVERY = 256
"""Items (lines, messages) between progress callbacks within a file."""

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)`` over all files, in bytes of the files as stored."""


class IngestError(CliffwatchError):
    """A file cannot be ingested at all (missing, unreadable, not a file, named JSON but
    not JSON)."""


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What an ingest read and changed.

    Attributes:
        files: files read.
        requests: OTLP requests decoded (lines, messages or documents).
        spans_read: spans that passed decoding and mapping (duplicates included).
        spans_written: spans new to the store (0 when the files were ingested before).
        spans_rejected: spans left out (bad ids, missing timestamps, unmappable).
        bad_requests: lines or messages that did not decode at all.
        runs_materialised: ``runs`` rows inserted or replaced.
        incidents_recorded: incidents newly recorded.
        unpriced_calls: LLM calls read with no known cost (cost_source ``unpriced``).
        elapsed_s: wall time of the whole ingest, seconds.
        problems: the first :data:`MAX_PROBLEMS_KEPT` problems, each ``file:where: why``.
        spans_usage_rejected: spans stored with their usage rejected as out of bounds
            (:mod:`telemetry.usage_bounds`; named in ``problems`` too).
        spans_spilled: spans whose write failed and that wait in spill files
            (:mod:`telemetry.spill`) for the next write that succeeds.
    """

    files: int
    requests: int
    spans_read: int
    spans_written: int
    spans_rejected: int
    bad_requests: int
    runs_materialised: int
    incidents_recorded: int
    unpriced_calls: int
    elapsed_s: float
    problems: tuple[str, ...] = ()
    spans_usage_rejected: int = 0
    spans_spilled: int = 0

    @property
    def spans_per_s(self) -> float:
        """Spans read per second of wall time."""
        return self.spans_read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """True when nothing was rejected or undecodable and no usage was out of bounds."""
        return self.spans_rejected == 0 and self.bad_requests == 0 and (
            self.spans_usage_rejected == 0
        )


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    spans_read: int = 0
    spans_written: int = 0
    spans_rejected: int = 0
    bad_requests: int = 0
    runs_materialised: int = 0
    incidents_recorded: int = 0
    unpriced_calls: int = 0
    spans_usage_rejected: int = 0
    spans_spilled: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)


@dataclass(frozen=True, slots=True)
class FileItem:
    """One request read from a file, or why it could not be.

    Attributes:
        where: its place in the file (``line 12``, ``message 3``, ``document``).
        request: the decoded request, or None when it did not decode.
        error: why it did not decode, or None.
        offset: bytes of the (possibly compressed) file consumed so far.
    """

    where: str
    request: DecodedRequest | None
    error: str | None
    offset: int


# --- reading files -----------------------------------------------------------------------


def _decode_json_text(text: bytes) -> DecodedRequest:
    return decode_json_object(parse_json(text), check_text=may_hold_lone_surrogates(text))


def _item(where: str, offset: int, decode: Callable[[], DecodedRequest]) -> FileItem:
    try:
        return FileItem(where, decode(), None, offset)
    except OtlpDecodeError as exc:
        return FileItem(where, None, str(exc), offset)


def _json_items(stream: IO[bytes], raw: IO[bytes]) -> Iterator[FileItem]:
    first = stream.readline()
    try:
        parse_json(first)
        whole_first_line = True
    except OtlpDecodeError:
        whole_first_line = False
    if not whole_first_line:
        # One pretty-printed document (a request, or an array of requests).
        text = first + stream.read()
        try:
            doc = parse_json(text)
        except OtlpDecodeError as exc:
            if text.count(b"\n") > 1:
                # JSON lines whose first line is the broken one: go on line by line.
                yield from _json_lines(io.BytesIO(text).readline, raw)
            else:
                yield FileItem("document", None, str(exc), raw.tell())
            return
        docs = doc if isinstance(doc, list) else [doc]
        check_text = may_hold_lone_surrogates(text)
        for index, obj in enumerate(docs, start=1):
            where = f"request {index}" if isinstance(doc, list) else "document"
            decode = partial(decode_json_object, obj, check_text=check_text)
            yield _item(where, raw.tell(), decode)
        return
    pending = [first]
    yield from _json_lines(lambda: pending.pop() if pending else stream.readline(), raw)


def _json_lines(readline: Callable[[], bytes], raw: IO[bytes]) -> Iterator[FileItem]:
    line_no = 0
    while line := readline():
        line_no += 1
        if line.strip():
            yield _item(f"line {line_no}", raw.tell(), partial(_decode_json_text, line))


def _protobuf_items(stream: IO[bytes], raw: IO[bytes], head: bytes) -> Iterator[FileItem]:
    if head[:1] == b"\x0a":
        # Field 1 (resource_spans), wire type 2: a bare ExportTraceServiceRequest.
        data = stream.read()
        yield _item("message", raw.tell(), lambda: decode_protobuf(data))
        return
    index = 0
    while True:
        header = stream.read(4)
        if not header:
            return
        index += 1
        if len(header) < 4:
            yield FileItem(f"message {index}", None, "truncated length prefix", raw.tell())
            return
        size = int.from_bytes(header, "big")
        data = stream.read(size)
        if len(data) < size:
            yield FileItem(
                f"message {index}", None, f"truncated: {len(data)} of {size} bytes", raw.tell()
            )
            return
        yield _item(f"message {index}", raw.tell(), partial(decode_protobuf, data))


JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
"""File names (before an optional ``.gz``) that say the file is OTLP/JSON: read as JSON
whatever its first bytes, and refused by :func:`ingest_files` when they are not JSON."""

_HEAD_BYTES = 64
_LEADING = b"\xef\xbb\xbf \t\r\n"  # a UTF-8 BOM and blank lines before the first value


def _named_json(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(JSON_SUFFIXES)


def _looks_json(stripped_head: bytes) -> bool:
    return stripped_head[:1] in (b"{", b"[")


def _decompressed(raw: io.BufferedReader) -> io.BufferedReader:
    """``raw``, or the gzip stream it holds (told by its magic bytes)."""
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))
    return raw


def _not_json(path: Path) -> str | None:
    """Why a file named OTLP/JSON (:data:`JSON_SUFFIXES`) is not JSON, from its first bytes;
    None when it starts as JSON, is empty, or cannot be read (:func:`read_file` says so)."""
    if not _named_json(path):
        return None
    try:
        with open(path, "rb") as raw:
            stripped = _decompressed(raw).peek(_HEAD_BYTES)[:_HEAD_BYTES].lstrip(_LEADING)
    except (OSError, EOFError):
        return None
    if not stripped or _looks_json(stripped):
        return None
    try:
        parse_json(stripped.splitlines()[0])
    except OtlpDecodeError as exc:
        return str(exc).removeprefix("not valid JSON: ")
    return f"it starts with {printable(repr(stripped[:20]))}, not an object or an array"


def read_file(path: str | os.PathLike[str]) -> Iterator[FileItem]:
    """The OTLP requests of one file, in order, whatever its format (see the module doc;
    a file named ``.json``/``.jsonl``/``.ndjson``, gzipped or not, is read as JSON).

    Raises:
        IngestError: the file does not exist or cannot be read.
    """
    file_path = Path(path)
    try:
        raw = open(file_path, "rb")
    except OSError as exc:
        raise IngestError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    with raw:
        try:
            stream = _decompressed(raw)
            head = stream.peek(_HEAD_BYTES)[:_HEAD_BYTES]
            stripped = head.lstrip(_LEADING)
            if not stripped and len(head) < _HEAD_BYTES:
                return  # an empty (or blank) file holds no requests
            if _looks_json(stripped) or _named_json(file_path):
                if len(head) != len(stripped):
                    stream.read(len(head) - len(stripped))  # the BOM / blank lines
                yield from _json_items(stream, raw)
            else:
                yield from _protobuf_items(stream, raw, head)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            yield FileItem("file", None, f"cannot read: {exc}", _tell(raw))


def _tell(raw: IO[bytes]) -> int:
    try:
        return raw.tell()
    except (OSError, ValueError):
        return 0


# --- ingest ---------------------------------------------------------------------------------


def _write(
    db_path: Path,
    spans: list[OtlpSpan],
    mapping: MappingConfig,
    totals: _Totals,
    timeout_s: float | None,
) -> None:
    records: list[SpanRecord]
    records, rejections = map_spans(spans, mapping)
    for rejection in rejections:
        totals.problem(str(rejection))
    totals.spans_rejected += len(rejections)
    # Read counts every span as the files hold it (a span twice in a batch is read twice,
    # mapped and stored once); written counts only spans new to the store.
    totals.spans_read += len(spans) - len(rejections)
    totals.unpriced_calls += sum(
        1 for r in records if r.is_llm_call and r.cost_source == "unpriced"
    )
    for record in records:
        reason = usage_rejection(record)
        if reason is not None:
            totals.spans_usage_rejected += 1
            totals.problem(
                f"span {record.span_id} of trace {record.trace_id}: stored with its usage "
                f"rejected ({reason})"
            )
    if records:
        result = write_or_spill(db_path, records, timeout_s=timeout_s)
        if result is None:
            totals.spans_spilled += len(records)
            return
        totals.spans_written += result.spans_written
        totals.runs_materialised += result.runs_materialised
        totals.incidents_recorded += result.incidents_recorded


def check_files(paths: Sequence[str | os.PathLike[str]]) -> list[int]:
    """Check that every file can be ingested at all, before any is read; their sizes.

    Returns:
        Each file's size in bytes, in order.

    Raises:
        IngestError: a file is missing, not a file or unreadable, or is named ``.json`` /
            ``.jsonl`` / ``.ndjson`` (gzipped or not) but does not start as JSON (``F is
            not OTLP JSON: <the JSON parse error>``).
    """
    sizes: list[int] = []
    for file_path in map(Path, paths):
        if not file_path.is_file():
            raise IngestError(f"{file_path} is not a file")
        why = _not_json(file_path)
        if why is not None:
            raise IngestError(f"{file_path} is not OTLP JSON: {why}")
        try:
            sizes.append(file_path.stat().st_size)
        except OSError as exc:
            raise IngestError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    return sizes


def ingest_files(
    paths: Sequence[str | os.PathLike[str]],
    db_path: str | os.PathLike[str],
    *,
    mapping: MappingConfig | None = None,
    batch_spans: int = DEFAULT_BATCH_SPANS,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    capture_content: bool | None = None,
) -> IngestSummary:
    """Read OTLP trace files and write their spans into the store.

    Args:
        paths: the files (any mix of the formats in the module doc).
        db_path: the store (created when missing).
        mapping: task class rule, source label, price overrides; default
            ``MappingConfig()``.
        batch_spans: spans per write transaction.
        timeout_s: lock retry bound per write (another process holding the store).
        progress: called with (bytes done, bytes total) as files are read.
        capture_content: keep prompt and completion content; None reads
            :func:`cliffwatch.settings.capture_content` (off by default: content is
            dropped, see :mod:`telemetry.content_capture`).

    Returns:
        An :class:`IngestSummary`.

    Raises:
        IngestError: a file cannot be ingested at all (:func:`check_files`; checked for
            all before any write).
        SpansLostError: a batch could be neither written nor spilled (a full disk); the
            files after it are not read (what was written before stays; ingesting again
            completes it without duplicates). A write that fails but spills is no error:
            it is counted in ``spans_spilled``.
    """
    started = time.perf_counter()
    mapping = mapping or MappingConfig()
    capture = settings.capture_content() if capture_content is None else capture_content
    files = [Path(p) for p in paths]
    sizes = check_files(files)
    total_bytes = sum(sizes)
    done_before = 0
    totals = _Totals()
    pending: list[OtlpSpan] = []
    store = Path(db_path)
    for file_path, size in zip(files, sizes, strict=True):
        for count, item in enumerate(read_file(file_path), start=1):
            if item.request is None:
                totals.bad_requests += 1
                totals.problem(f"{file_path}:{item.where}: {item.error}")
            else:
                totals.requests += 1
                for rejection in item.request.rejections:
                    totals.problem(f"{file_path}:{item.where}: {rejection}")
                totals.spans_rejected += len(item.request.rejections)
                spans = item.request.spans
                pending.extend(spans if capture else without_content(spans))
                if len(pending) >= batch_spans:
                    _write(store, pending, mapping, totals, timeout_s)
                    pending = []
            if progress is not None and count % _PROGRESS_EVERY == 0:
                progress(done_before + min(item.offset, size), total_bytes)
        done_before += size
        if progress is not None:
            progress(done_before, total_bytes)
    if pending:
        _write(store, pending, mapping, totals, timeout_s)
    return IngestSummary(
        files=len(files),
        requests=totals.requests,
        spans_read=totals.spans_read,
        spans_written=totals.spans_written,
        spans_rejected=totals.spans_rejected,
        bad_requests=totals.bad_requests,
        runs_materialised=totals.runs_materialised,
        incidents_recorded=totals.incidents_recorded,
        unpriced_calls=totals.unpriced_calls,
        elapsed_s=time.perf_counter() - started,
        problems=tuple(totals.problems),
        spans_usage_rejected=totals.spans_usage_rejected,
        spans_spilled=totals.spans_spilled,
    )
