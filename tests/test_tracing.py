"""configure_tracing: private provider, DuckDB export, and OTLP/HTTP to a loopback server."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cliffwatch import settings
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.otlp_decode import decode_protobuf
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_spans
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.tracing import Tracing, configure_tracing, otlp_traces_url


class _Collector:
    """A loopback OTLP/HTTP receiver: keeps every POSTed body with its path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.requests.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def spans(self) -> dict[str, dict]:
        """Received spans by span id (hex), with trace id, name and attributes."""
        out: dict[str, dict] = {}
        for _, body in self.requests:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attrs = {a.key: a.value for a in span.attributes}
                        out[span.span_id.hex()] = {
                            "trace_id": span.trace_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "attributes": attrs,
                        }
        return out


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    c.thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def _emit_run(tracing: Tracing, workers: int = 3) -> None:
    tracer = tracing.tracer
    with tracer.start_as_current_span("run", attributes={
        cv.CLIFF_ROLE: "run", cv.CLIFF_TASK_CLASS: "research", cv.CLIFF_STATUS: "ok",
    }):
        for i in range(workers):
            with tracer.start_as_current_span(f"worker {i}", attributes={
                cv.CLIFF_ROLE: "worker", cv.CLIFF_COST_USD: 0.001 * (i + 1),
                cv.CLIFF_COST_SOURCE: "computed", cv.GEN_AI_USAGE_INPUT_TOKENS: 10 + i,
            }):
                pass


def _stored(path: Path) -> dict[str, tuple]:
    with open_store(path, read_only=True) as con:
        rows = con.sql(
            "SELECT span_id, trace_id, parent_span_id, name, cost_usd, input_tokens, "
            "service_name FROM spans"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_batch_tracing_writes_after_flush_with_a_private_provider(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    tracing = configure_tracing(path, service_name="svc-a", otlp_endpoint=None)
    try:
        assert trace.get_tracer_provider() is not tracing.provider  # global left alone
        _emit_run(tracing)
        assert tracing.flush() is True
        stored = _stored(path)
        assert len(stored) == 4
        assert {row[5] for row in stored.values()} == {"svc-a"}
        with open_store(path, read_only=True) as con:
            assert con.sql("SELECT cost_usd FROM runs").fetchall() == [(pytest.approx(0.006),)]
    finally:
        tracing.shutdown()
    assert tracing.otlp_traces_url is None


def test_simple_processor_writes_each_span_as_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "simple.duckdb"
    tracing = configure_tracing(path, batch=False, otlp_endpoint=None)
    with tracing.tracer.start_as_current_span("one", attributes={cv.CLIFF_ROLE: "call"}):
        pass
    assert len(_stored(path)) == 1  # no flush needed
    tracing.shutdown()
    with tracing.tracer.start_as_current_span("after shutdown"):
        pass
    assert len(_stored(path)) == 1


def test_spans_also_go_to_the_otlp_endpoint_from_the_environment(
    tmp_path: Path, collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "otlp.duckdb"
    monkeypatch.setenv(settings.OTEL_EXPORTER_OTLP_ENDPOINT, collector.endpoint + "/")
    tracing = configure_tracing(path)
    assert tracing.otlp_traces_url == collector.endpoint + "/v1/traces"
    _emit_run(tracing, workers=5)
    tracing.shutdown()

    assert collector.requests, "the OTLP endpoint received nothing"
    assert {p for p, _ in collector.requests} == {"/v1/traces"}
    received = collector.spans()
    stored = _stored(path)
    assert len(stored) == 6
    assert set(received) == set(stored)
    for span_id, (trace_id, parent, name, cost_usd, input_tokens, _) in stored.items():
        got = received[span_id]
        assert (got["trace_id"], got["parent_span_id"], got["name"]) == (trace_id, parent, name)
        if cost_usd is not None:
            assert got["attributes"][cv.CLIFF_COST_USD].double_value == cost_usd
            assert got["attributes"][cv.GEN_AI_USAGE_INPUT_TOKENS].int_value == input_tokens


def test_explicit_none_disables_otlp_even_when_the_environment_sets_it(
    tmp_path: Path, collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.OTEL_EXPORTER_OTLP_ENDPOINT, collector.endpoint)
    tracing = configure_tracing(tmp_path / "none.duckdb", otlp_endpoint=None)
    _emit_run(tracing)
    tracing.shutdown()
    assert tracing.otlp_traces_url is None
    assert collector.requests == []
    assert len(_stored(tmp_path / "none.duckdb")) == 4


def test_otlp_traces_url() -> None:
    assert otlp_traces_url("http://h:4318") == "http://h:4318/v1/traces"
    assert otlp_traces_url("http://h:4318/") == "http://h:4318/v1/traces"
    assert otlp_traces_url("http://h:4318/v1/traces") == "http://h:4318/v1/traces"


def test_a_span_lands_the_same_whether_exported_directly_or_over_otlp(
    tmp_path: Path, collector: _Collector
) -> None:
    """One mapping: the DuckDB exporter's rows equal the records the OTLP receiver's
    decoder and mapping make from the very same spans sent over OTLP/HTTP."""
    path = tmp_path / "same.duckdb"
    tracing = configure_tracing(path, otlp_endpoint=collector.endpoint)
    with tracing.tracer.start_as_current_span("run", attributes={
        cv.CLIFF_ROLE: "run", cv.CLIFF_STATUS: "ok", "cliff.tags": ("x", "y"),
    }):
        with tracing.tracer.start_as_current_span("plan", attributes={
            cv.CLIFF_ROLE: "plan", cv.CLIFF_COST_USD: 0.25, cv.CLIFF_COST_SOURCE: "computed",
            cv.CLIFF_PRICE_INPUT: 1e-6, cv.CLIFF_PRICE_OUTPUT: 2e-6,
            cv.GEN_AI_USAGE_INPUT_TOKENS: 50_000, cv.GEN_AI_USAGE_OUTPUT_TOKENS: 100_000,
            cv.GEN_AI_REQUEST_MODEL: "sim/gpt-4o", cv.GEN_AI_PROVIDER_NAME: "sim",
        }) as plan:
            plan.add_event("retry", {"attempt": 2})
    tracing.shutdown()

    decoded = [s for _, body in collector.requests for s in decode_protobuf(body).spans]
    via_otlp, rejections = map_spans(decoded, MappingConfig(source="cliffwatch"))
    assert rejections == []
    with open_store(path, read_only=True) as con:
        rel = con.sql(f"SELECT {', '.join(SPAN_RECORD_FIELDS)} FROM spans")
        stored = {r[1]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}
    assert len(via_otlp) == len(stored) == 2
    for rec in via_otlp:
        row = stored[rec.span_id]
        for name in SPAN_RECORD_FIELDS:
            want = getattr(rec, name)
            if name in ("attributes", "resource_attributes", "events"):
                assert json.loads(row[name]) == json.loads(want), name
            else:
                assert row[name] == want, name
