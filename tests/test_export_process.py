"""The exporter's process writer: compact rows map as SDK spans do, and no span is lost
when the writer is busy, killed, or cannot start (real processes, real DuckDB files)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from test_exporter import _sdk_run_spans, _stored
from waits import scaled, scaled_ms, wait_until

from cliffwatch import settings
from cliffwatch.telemetry import sdk_compact, spill
from cliffwatch.telemetry.export_process import ProcessSpanExporter
from cliffwatch.telemetry.export_thread import ThreadSpanExporter
from cliffwatch.telemetry.exporter import DuckDBSpanExporter
from cliffwatch.telemetry.sdk_compact import compact_batch, load_rows, records_from_rows
from cliffwatch.telemetry.sdk_mapping import record_from_sdk_span
from cliffwatch.telemetry.testing import hold_store_lock
from cliffwatch.telemetry.tracing import configure_tracing
from cliffwatch.telemetry.write_ledger import WriteLedger


def _odd_spans() -> list[ReadableSpan]:
    """Spans with every kind of value the mapping treats apart, from two providers."""
    spans: list[ReadableSpan] = []
    for service in ("svc-a", "svc-b"):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service,
                                                            "host.tags": ("x", "y")}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("scope-" + service, "1.2.3")
        with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
            root.set_attribute("cliff.role", "run")
            root.set_attributes({"raw": b"\x00\xffbytes", "nan": math.nan, "inf": -math.inf,
                                 "flag": True, "ints": (1, 2, 3), "floats": [0.5, math.nan],
                                 "text": "caf\u00e9\n"})
            with tracer.start_as_current_span("call", kind=SpanKind.CLIENT) as call:
                call.set_attributes({"cliff.role": "worker", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.usage.input_tokens": 10,
                                     "gen_ai.usage.output_tokens": 3})
                call.add_event("retry", {"attempt": 2, "why": ("a", "b")})
                call.add_event("bare")
                call.set_status(Status(StatusCode.ERROR, "boom"))
            root.set_status(Status(StatusCode.OK))
        provider.shutdown()
        spans += memory.get_finished_spans()
    # a span made by hand, not by a tracer: plain dict attributes, a tuple of events
    ctx = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False)
    spans.append(ReadableSpan(name="by hand", context=ctx, attributes={"k": "v"},
                              events=(Event("e", {"a": 1}, timestamp=5),), start_time=1))
    return spans


@pytest.mark.parametrize("by_hand", [False, True], ids=["sdk-spans", "with-one-by-hand"])
def test_compact_rows_map_exactly_as_the_sdk_spans_do(by_hand: bool) -> None:
    spans = [*_sdk_run_spans(), *_odd_spans()]
    if not by_hand:  # every span made by a tracer: the fast read takes the whole batch
        spans = spans[:-1]
        assert len(sdk_compact._fast_rows(spans)) == len(spans)
    else:  # a span made by hand sends the batch through the public properties
        with pytest.raises(AttributeError):
            sdk_compact._fast_rows(spans)
    payload, n = compact_batch(spans)
    assert n == len(spans)
    assert records_from_rows(load_rows(payload), source="guard") == [
        record_from_sdk_span(s, source="guard") for s in spans]


def test_a_span_without_context_is_left_out_and_reported() -> None:
    spans = _sdk_run_spans()
    bad: list[ReadableSpan] = []
    payload, n = compact_batch([spans[0], ReadableSpan(name="bare"), *spans[1:]],
                               on_error=bad.append)
    assert n == len(spans) and [s.name for s in bad] == ["bare"]
    assert records_from_rows(load_rows(payload)) == [record_from_sdk_span(s) for s in spans]


@pytest.mark.slow
def test_configure_tracing_writes_through_a_writer_process(tmp_path: Path) -> None:
    path = tmp_path / "proc.duckdb"
    tracing = configure_tracing(path, otlp_endpoint=None, writer="process")
    exporter = tracing.exporter
    assert isinstance(exporter, ProcessSpanExporter)
    ledger = exporter.ledger.snapshot()
    for i in range(50):
        with tracing.tracer.start_as_current_span("run") as run:
            run.set_attribute("cliff.role", "run")
            run.set_attribute("i", i)
    assert tracing.flush(scaled_ms(60))
    pid = exporter.writer_pid
    assert pid is not None and pid != os.getpid()
    assert (exporter.ledger.snapshot() - ledger).written == 50  # exact once flush returns
    assert len(_stored(path)) == 50
    tracing.shutdown()
    wait_until(lambda: not _alive(pid), timeout_s=30, what="writer exits")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (its parent reaps it)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_the_setting_chooses_the_writer(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_EXPORT_WRITER, " Process ")
    tracing = configure_tracing(tmp_path / "t.duckdb", otlp_endpoint=None)
    assert isinstance(tracing.exporter, ProcessSpanExporter)
    tracing.shutdown()
    assert tracing.exporter.writer_pid is None  # nothing exported: no process started
    monkeypatch.setenv(settings.CLIFFWATCH_EXPORT_WRITER, "fork")
    with pytest.raises(settings.SettingError, match="CLIFFWATCH_EXPORT_WRITER='fork'"):
        configure_tracing(tmp_path / "t.duckdb", otlp_endpoint=None)
    monkeypatch.delenv(settings.CLIFFWATCH_EXPORT_WRITER)
    assert settings.export_writer() == "thread"  # the default: a library starts no process
    tracing = configure_tracing(tmp_path / "t.duckdb", otlp_endpoint=None)
    assert type(tracing.exporter) is ThreadSpanExporter
    tracing.shutdown()
    # unbatched: written as each span ends, in that thread
    tracing = configure_tracing(tmp_path / "t.duckdb", otlp_endpoint=None, batch=False,
                                writer="process")
    assert type(tracing.exporter) is DuckDBSpanExporter
    tracing.shutdown()


def _writer_with_two_spans_written(
    path: Path,
) -> tuple[ProcessSpanExporter, WriteLedger, list[ReadableSpan]]:
    """An exporter whose writer is running: two of the run's spans written, the rest not."""
    spans = _sdk_run_spans()
    ledger = WriteLedger()
    exporter = ProcessSpanExporter(path, ledger=ledger)
    exporter.export(spans[:2])
    assert exporter.force_flush(scaled_ms(60))
    return exporter, ledger, spans


@pytest.mark.slow
def test_a_killed_writer_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "killed.duckdb"
    exporter, ledger, spans = _writer_with_two_spans_written(path)
    pid = exporter.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with caplog.at_level(logging.ERROR):
        exporter.export(spans[2:])  # sent to a dead writer, or written here: either way kept
        assert exporter.force_flush(scaled_ms(60))
        wait_until(lambda: exporter.writer_pid is None, timeout_s=30,
                   what="the exporter notices its writer died")
        exporter.export(spans[2:])  # idempotent: already stored spans add nothing
        exporter.shutdown()
    counts = ledger.snapshot()
    assert counts.lost == counts.spilled == 0
    assert len(_stored(path)) == len(spans)
    assert "export writer process exited" in caplog.text


def test_a_writer_that_cannot_start_writes_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "")
    path = tmp_path / "here.duckdb"
    ledger = WriteLedger()
    exporter = ProcessSpanExporter(path, ledger=ledger)
    spans = _sdk_run_spans()
    with caplog.at_level(logging.WARNING):
        exporter.export(spans)
    exporter.shutdown()
    assert "cannot start the export writer process" in caplog.text
    assert ledger.snapshot().written == len(spans)
    assert len(_stored(path)) == len(spans)


@pytest.mark.slow
def test_a_busy_store_spills_in_the_writer_and_the_ledger_says_so(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    spans = _sdk_run_spans()
    ledger = WriteLedger()
    exporter = ProcessSpanExporter(path, timeout_s=0.2, ledger=ledger)
    exporter.export(spans[:1])
    assert exporter.force_flush(scaled_ms(60))
    with hold_store_lock(path):
        exporter.export(spans[1:])
        wait_until(lambda: ledger.snapshot().spilled == len(spans) - 1, timeout_s=60,
                   what="the writer spills the batch and answers")
        assert exporter.force_flush(200) is False  # answered, but the spill stays pending
        assert len(spill.pending_spills(path)) == 1
    assert exporter.force_flush(scaled_ms(20)) is True
    exporter.shutdown()
    assert len(_stored(path)) == len(spans)


_PARENT = textwrap.dedent("""
    import os, sys
    from cliffwatch.telemetry.tracing import configure_tracing
    tracing = configure_tracing(sys.argv[1], otlp_endpoint=None, writer="process")
    with tracing.tracer.start_as_current_span("run") as span:
        span.set_attribute("cliff.role", "run")
    assert tracing.flush(600_000)
    print(tracing.exporter.writer_pid, flush=True)
    os.kill(os.getpid(), 9)  # dies without shutting anything down
""")


@pytest.mark.slow
def test_the_writer_exits_when_its_parent_dies(tmp_path: Path) -> None:
    path = tmp_path / "orphan.duckdb"
    proc = subprocess.run([sys.executable, "-c", _PARENT, str(path)], capture_output=True,
                          text=True, timeout=scaled(120), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid = int(proc.stdout.strip())
    wait_until(lambda: not _alive(pid), timeout_s=30, what="orphaned writer exits")
    assert len(_stored(path)) == 1


@pytest.mark.slow
def test_a_fork_of_the_application_starts_its_own_writer(tmp_path: Path) -> None:
    path = tmp_path / "fork.duckdb"
    exporter, ledger, spans = _writer_with_two_spans_written(path)
    parent_writer = exporter.writer_pid
    child = os.fork()
    if child == 0:  # the fork: its exports must not go down the parent's pipe
        code = 1
        try:
            exporter.export(spans[2:])
            ok = exporter.force_flush(600_000)
            mine = exporter.writer_pid
            exporter.shutdown()
            code = 0 if ok and mine not in (None, parent_writer) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exporter.writer_pid == parent_writer and _alive(parent_writer)
    exporter.export(spans[2:])  # the parent's writer still answers
    exporter.shutdown()
    assert ledger.snapshot().written == len(spans)  # the fork counted in its own copy
    assert len(_stored(path)) == len(spans)
