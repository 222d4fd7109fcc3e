"""SDK span mapping and the DuckDB span exporter, with real SDK spans and real store files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context
from waits import scaled_ms

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry import spill
from cliffwatch.telemetry.exporter import DuckDBSpanExporter
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord
from cliffwatch.telemetry.sdk_mapping import record_from_sdk_span, records_from_sdk_spans
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import hold_store_lock
from cliffwatch.telemetry.write_ledger import WriteLedger

T0 = 1_793_520_000_000_000_000  # 2026-11-01T08:00:00Z in ns


def _sdk_run_spans(service_name: str = "svc-test") -> list[ReadableSpan]:
    """A small run trace made by the real SDK: run -> plan, 2 workers (one failing)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    run = tracer.start_span("run research", start_time=T0, attributes={
        cv.CLIFF_ROLE: "run", cv.CLIFF_TASK_CLASS: "research", cv.CLIFF_STATUS: "ok",
        cv.CLIFF_MAX_WORKERS: 8, cv.CLIFF_WORKERS_PROPOSED: 2, cv.CLIFF_WORKERS_DISPATCHED: 2,
        cv.CLIFF_CEILING_USD: 0.5, cv.CLIFF_POLICY: "reject",
    })
    ctx = set_span_in_context(run)

    def call(name: str, role: str, start: int, cost: float | None, tin: int, tout: int):
        attrs = {
            cv.CLIFF_ROLE: role, cv.CLIFF_TASK_CLASS: "research",
            cv.GEN_AI_OPERATION_NAME: "chat", cv.GEN_AI_PROVIDER_NAME: "sim",
            cv.GEN_AI_REQUEST_MODEL: "sim/gpt-4o-mini", cv.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini",
            cv.GEN_AI_USAGE_INPUT_TOKENS: tin, cv.GEN_AI_USAGE_OUTPUT_TOKENS: tout,
            cv.CLIFF_COST_SOURCE: "computed" if cost is not None else "unpriced",
            "cliff.tags": ("a", "b"),
        }
        if cost is not None:
            attrs |= {cv.CLIFF_COST_USD: cost, cv.CLIFF_PRICE_INPUT: 1.5e-7,
                      cv.CLIFF_PRICE_OUTPUT: 6e-7}
        return tracer.start_span(name, context=ctx, start_time=start, attributes=attrs)

    plan = call("plan", "plan", T0 + 1_000, 0.00012, 400, 100)
    plan.end(end_time=T0 + 2_000_000)
    ok = call("worker 0", "worker", T0 + 3_000_000, 0.0021, 800, 3300)
    ok.add_event("retry", {"attempt": 1, "reason": "rate limited"}, timestamp=T0 + 4_000_000)
    ok.set_status(Status(StatusCode.OK))
    ok.end(end_time=T0 + 9_000_000)
    bad = call("worker 1", "worker", T0 + 3_000_000, None, 800, 0)
    bad.set_status(Status(StatusCode.ERROR, "provider timeout"))
    bad.end(end_time=T0 + 8_000_000)
    run.end(end_time=T0 + 10_000_000)
    provider.shutdown()
    return list(memory.get_finished_spans())


def _stored(path: Path) -> dict[str, dict]:
    with open_store(path, read_only=True) as con:
        rel = con.sql(f"SELECT {', '.join(SPAN_RECORD_FIELDS)} FROM spans")
        return {r[1]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}


# --- mapping ------------------------------------------------------------------------------


def test_sdk_span_maps_to_record_with_hex_ids_tokens_cost_and_json() -> None:
    spans = {s.name: s for s in _sdk_run_spans()}
    run, worker, failed = spans["run research"], spans["worker 0"], spans["worker 1"]
    rec = record_from_sdk_span(worker)
    assert rec.trace_id == format(worker.context.trace_id, "032x") and len(rec.trace_id) == 32
    assert rec.span_id == format(worker.context.span_id, "016x") and len(rec.span_id) == 16
    assert rec.parent_span_id == format(run.context.span_id, "016x")
    assert (rec.role, rec.is_llm_call, rec.task_class) == ("worker", True, "research")
    assert (rec.input_tokens, rec.output_tokens) == (800, 3300)
    assert (rec.cost_usd, rec.cost_source) == (0.0021, "computed")
    assert (rec.price_input_usd_per_token, rec.price_output_usd_per_token) == (1.5e-7, 6e-7)
    assert (rec.request_model, rec.response_model) == ("sim/gpt-4o-mini", "gpt-4o-mini")
    assert (rec.provider, rec.operation, rec.service_name) == ("sim", "chat", "svc-test")
    assert (rec.status_code, rec.status_message) == ("ok", None)
    assert rec.start_time_unix_nano == T0 + 3_000_000
    assert rec.end_time_unix_nano == T0 + 9_000_000
    assert json.loads(rec.attributes)["cliff.tags"] == ["a", "b"]
    assert json.loads(rec.resource_attributes)["service.name"] == "svc-test"
    assert json.loads(rec.events) == [{
        "name": "retry", "time_unix_nano": T0 + 4_000_000,
        "attributes": {"attempt": 1, "reason": "rate limited"},
    }]
    assert rec.source == "cliffwatch"

    root = record_from_sdk_span(run, source="guard")
    assert (root.parent_span_id, root.role, root.is_llm_call) == (None, "run", False)
    assert (root.cost_usd, root.cost_source, root.status_code) == (None, None, "unset")
    assert root.source == "guard"

    err = record_from_sdk_span(failed)
    assert (err.status_code, err.status_message) == ("error", "provider timeout")
    assert (err.cost_usd, err.cost_source) == (None, "unpriced")


def _one_sdk_span(name: str = "x", *, end: bool = True, root: bool = False, **attrs: object):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("edge")
    parent = None if root else set_span_in_context(tracer.start_span("parent"))
    span = tracer.start_span(name, context=parent, start_time=T0, attributes=attrs)
    if not end:
        return span  # a live SDK span is a ReadableSpan too
    span.end(end_time=T0 + 5)
    return memory.get_finished_spans()[0]


def test_roles_come_from_cliff_role_and_unknown_ones_are_other() -> None:
    assert record_from_sdk_span(_one_sdk_span()).role == "other"
    tool = record_from_sdk_span(_one_sdk_span(**{cv.CLIFF_ROLE: "tool"}))
    assert (tool.role, tool.is_llm_call) == ("other", False)
    for role in ("plan", "worker", "synthesis", "critic", "call"):
        rec = record_from_sdk_span(_one_sdk_span(**{cv.CLIFF_ROLE: role,
                                                    cv.CLIFF_COST_SOURCE: "unpriced"}))
        assert (rec.role, rec.is_llm_call) == (role, True), role
    run = record_from_sdk_span(_one_sdk_span(root=True, **{cv.CLIFF_ROLE: "run"}))
    assert (run.role, run.is_llm_call, run.parent_span_id) == ("run", False, None)


def test_sdk_values_are_mapped_as_otlp_would_carry_them() -> None:
    rec = record_from_sdk_span(_one_sdk_span(
        **{"f": float("nan"), "b": b"\x00\xff", "t": (1, 2), cv.CLIFF_ROLE: "worker",
           cv.CLIFF_COST_SOURCE: "unpriced"}
    ))
    attrs = json.loads(rec.attributes)  # valid JSON: no NaN in it
    assert (attrs["f"], attrs["b"], attrs["t"]) == ("nan", "AP8=", [1, 2])
    assert attrs["otel.scope.name"] == "edge"
    # An LLM call with no cost at all is unpriced, never $0.
    assert (rec.cost_usd, rec.cost_source) == (None, "unpriced")
    live = record_from_sdk_span(_one_sdk_span(end=False))
    assert live.end_time_unix_nano == live.start_time_unix_nano == T0


def test_a_span_without_context_cannot_be_mapped() -> None:
    with pytest.raises(ValueError, match="no span context"):
        record_from_sdk_span(ReadableSpan(name="bare"))


# --- exporter -----------------------------------------------------------------------------


def test_round_trip_sdk_spans_through_exporter_to_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "rt.duckdb"
    spans = _sdk_run_spans()
    exporter = DuckDBSpanExporter(path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    stored = _stored(path)
    assert len(stored) == len(spans)
    for span in spans:
        row = stored[format(span.context.span_id, "016x")]
        assert row["trace_id"] == format(span.context.trace_id, "032x")
        want = record_from_sdk_span(span)
        for name in SPAN_RECORD_FIELDS:
            if name in ("attributes", "resource_attributes", "events"):
                assert json.loads(row[name]) == json.loads(getattr(want, name)), name
            else:
                assert row[name] == getattr(want, name), name
        # and against the SDK span itself, not only against our own mapping
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()}
        attrs["otel.scope.name"] = "test"  # the instrumentation scope, kept as OTLP keeps it
        assert json.loads(row["attributes"]) == attrs
        assert row["input_tokens"] == span.attributes.get(cv.GEN_AI_USAGE_INPUT_TOKENS)
        assert row["cost_usd"] == span.attributes.get(cv.CLIFF_COST_USD)
    with open_store(path, read_only=True) as con:
        run = con.sql(
            "SELECT cost_usd, llm_calls, unpriced_calls, failed_calls, status FROM runs"
        ).fetchall()
    assert run == [(pytest.approx(0.00012 + 0.0021), 3, 1, 1, "ok")]


def test_export_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "idem.duckdb"
    spans = _sdk_run_spans()
    exporter = DuckDBSpanExporter(path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(_stored(path)) == len(spans)


def test_export_after_shutdown_fails_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shut.duckdb"
    exporter = DuckDBSpanExporter(path)
    exporter.shutdown()
    assert exporter.export(_sdk_run_spans()) is SpanExportResult.FAILURE
    assert not path.exists()


def test_a_failed_write_spills_whatever_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "garbage.duckdb"
    path.write_bytes(b"garbage" * 100)  # not a store: every write to it fails
    spans = _sdk_run_spans()
    ledger = WriteLedger()
    with caplog.at_level(logging.WARNING, logger="cliffwatch.telemetry.write_ledger"):
        assert DuckDBSpanExporter(path, ledger=ledger).export(spans) is SpanExportResult.SUCCESS
    assert "not a cliffwatch store" in caplog.text  # the cause is named
    [parked] = spill.pending_spills(path)
    tables, _ = spill.read_spills([parked])
    assert tables[0].num_rows == len(spans)
    counts = ledger.snapshot()
    assert (counts.written, counts.spilled, counts.lost) == (0, len(spans), 0)
    assert counts.store_failed == len(spans)  # not a busy store: it needs a person
    assert "not a cliffwatch store" in (counts.last_error or "")


def test_write_and_spill_both_failing_is_a_counted_loss_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "garbage.duckdb"
    path.write_bytes(b"garbage" * 100)
    spill.spill_dir(path).write_text("a file where the spill directory should be")
    spans = _sdk_run_spans()
    ledger = WriteLedger()
    with caplog.at_level(logging.ERROR, logger="cliffwatch.telemetry.exporter"):
        result = DuckDBSpanExporter(path, ledger=ledger).export(spans)
    assert result is SpanExportResult.FAILURE
    assert f"{len(spans)} spans neither stored nor spilled" in caplog.text
    assert "not a cliffwatch store" in caplog.text and "failed too" in caplog.text
    assert "Traceback" not in caplog.text
    counts = ledger.snapshot()
    assert (counts.written, counts.spilled, counts.lost) == (0, 0, len(spans))


def test_written_spans_and_late_exports_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "counted.duckdb"
    spans = _sdk_run_spans()
    ledger = WriteLedger()
    exporter = DuckDBSpanExporter(path, ledger=ledger)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.export(spans[:2]) is SpanExportResult.FAILURE
    counts = ledger.snapshot()
    assert (counts.written, counts.spilled, counts.lost) == (len(spans), 0, 2)
    assert counts.summary() == f"spans: {len(spans)} written, 0 spilled, 2 lost"


@pytest.mark.slow
def test_busy_store_spills_returns_success_and_flush_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    spans = _sdk_run_spans()
    exporter = DuckDBSpanExporter(path, timeout_s=0.2)
    exporter.export(spans[:1])  # the store exists
    with hold_store_lock(path):
        assert exporter.export(spans[1:]) is SpanExportResult.SUCCESS
        assert len(spill.pending_spills(path)) == 1
        assert exporter.force_flush(timeout_millis=200) is False  # still held
    assert exporter.force_flush(timeout_millis=scaled_ms(20)) is True
    assert spill.pending_spills(path) == []
    assert len(_stored(path)) == len(spans)


def test_shutdown_loads_pending_spills(tmp_path: Path) -> None:
    path = tmp_path / "drain.duckdb"
    spans = _sdk_run_spans()
    spill.spill_records(path, [record_from_sdk_span(s) for s in spans])
    exporter = DuckDBSpanExporter(path, timeout_s=5)
    exporter.shutdown()
    assert spill.pending_spills(path) == []
    assert len(_stored(path)) == len(spans)


def test_instrumentation_is_suppressed_while_writing(tmp_path: Path) -> None:
    seen: list[object] = []

    class Probe(DuckDBSpanExporter):
        def _records(self, spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
            seen.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            return super()._records(spans)

    exporter = Probe(tmp_path / "quiet.duckdb")
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None
    assert exporter.export(_sdk_run_spans()) is SpanExportResult.SUCCESS
    assert seen == [True]
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None  # detached afterwards


def test_one_unmappable_span_is_logged_and_the_rest_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "partial.duckdb"
    spans = _sdk_run_spans()
    broken = ReadableSpan(name="no context")  # context None: cannot be mapped
    with caplog.at_level(logging.ERROR, logger="cliffwatch.telemetry.exporter"):
        result = DuckDBSpanExporter(path).export([*spans, broken])
    assert result is SpanExportResult.SUCCESS
    assert "skipped span 'no context'" in caplog.text
    assert len(_stored(path)) == len(spans)


def test_a_batch_maps_to_the_same_records_as_one_span_at_a_time() -> None:
    # records_from_sdk_spans shares price look-ups and resource JSON across a batch: every
    # record must equal the one-span mapping, across two resources, priced, unpriced and
    # odd values; an unmappable span is handed to on_error and the rest still map.
    spans = _sdk_run_spans() + _sdk_run_spans("svc-other")
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-calls"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i, model in enumerate(("gpt-4o", "nope-model-xyz", "gpt-4o", "gpt-4o-mini")):
        with provider.get_tracer("llm", "1.2").start_as_current_span("chat") as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": 1000 + i, "gen_ai.usage.output_tokens": 50,
                "odd.nan": float("nan"), "odd.bytes": b"\x00\xff", "odd.tuple": (1, 2),
            })
            span.add_event("retry", {"odd.inf": float("inf")})
    spans += list(memory.get_finished_spans())
    broken = ReadableSpan(name="no context", context=None)
    one_by_one = [record_from_sdk_span(s) for s in spans]
    skipped: list[str] = []
    batch = records_from_sdk_spans(
        [*spans[:3], broken, *spans[3:]], on_error=lambda s: skipped.append(s.name)
    )
    assert batch == one_by_one
    assert skipped == ["no context"]
    assert {r.service_name for r in batch} == {"svc-test", "svc-other", "svc-calls"}
    priced = [r for r in batch if r.request_model and r.request_model.startswith("gpt-4o")]
    assert priced and all(r.cost_usd is not None and r.cost_usd > 0 for r in priced)
    with pytest.raises(ValueError):
        records_from_sdk_spans([broken])


def test_records_to_arrow_round_trips_every_field() -> None:
    # The column-wise build must keep each value in its own column and row, Nones included.
    from cliffwatch.telemetry.records import ARROW_SCHEMA, records_from_arrow, records_to_arrow

    records = [record_from_sdk_span(s) for s in _sdk_run_spans()]
    table = records_to_arrow(records)
    assert table.schema == ARROW_SCHEMA and table.num_rows == len(records)
    assert records_from_arrow(table) == records
    assert table.column("span_id").to_pylist() == [r.span_id for r in records]
    assert records_to_arrow([]).num_rows == 0 and records_to_arrow([]).schema == ARROW_SCHEMA
