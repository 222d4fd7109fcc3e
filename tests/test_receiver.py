"""The OTLP/HTTP receiver, on a free loopback port in this process, against a real store.

Why one file: every test drives the same receiver fixture and request helpers;
splitting by status code would scatter one protocol's contract over several files.

Every bad request must get its OTLP status, store nothing of its payload, and leave the
server serving (each bad-input test ends with a good request that is stored).
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_payloads import otlp_span, request_json, request_of_spans, to_protobuf
from waits import scaled, stop_process

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.ingest import ingest_files
from cliffwatch.telemetry.otlp_decode import MAX_ATTRIBUTE_VALUE_CHARS
from cliffwatch.telemetry.otlp_json import may_hold_lone_surrogates
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig, ReceiverError
from cliffwatch.telemetry.store import NotACliffwatchStoreError, open_store
from cliffwatch.telemetry.testing import hold_store_lock, make_run_records

TRACE = "5b8efff798038103d269b633813fc60c"
T0 = 1_793_520_000_000_000_000
LIMIT = 300_000
TOKEN = "s3cret-token"

PB = "application/x-protobuf"
JSON = "application/json"


def sid(n: int) -> str:
    return f"{n:016x}"


def _call_request(n: int = 3, trace: str = TRACE, first: int = 1) -> dict:
    spans = [
        otlp_span(
            trace_id=trace,
            span_id=sid(i),
            name="openai.chat",
            start_ns=T0 + i,
            end_ns=T0 + i + 10**9,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
            },
        )
        for i in range(first, first + n)
    ]
    return request_of_spans(spans, resource={"service.name": "rx-test"})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "rx.duckdb"


@pytest.fixture
def receiver(db: Path) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(db, ReceiverConfig(port=0, max_body_bytes=LIMIT, token=TOKEN)) as rx:
        yield rx


def post(
    rx: OtlpReceiver,
    body: bytes,
    content_type: str | None = PB,
    *,
    token: str | None = TOKEN,
    path: str = "/v1/traces",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One request on a fresh connection: (status, body, headers; names in any case),
    once what it sent is in the store (the receiver answers once it is in its journal)."""
    conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=scaled(60))
    try:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        answer = response.status, response.read(), response.headers
    finally:
        conn.close()
    assert rx.flush(scaled(60)), "the journal was not written to the store in time"
    return answer


def span_count(db: Path) -> int:
    with open_store(db, read_only=True) as con:
        return con.execute("SELECT count(*) FROM spans").fetchall()[0][0]


def assert_still_serving(rx: OtlpReceiver, db: Path) -> None:
    before = span_count(db)
    status, _, _ = post(rx, to_protobuf(_call_request(1, trace="f" * 32, first=before + 100)))
    assert status == 200
    assert span_count(db) == before + 1


# --- accepted ----------------------------------------------------------------------------


def test_protobuf_json_and_gzip_requests_are_stored(receiver: OtlpReceiver, db: Path) -> None:
    status, body, headers = post(receiver, to_protobuf(_call_request(3)))
    assert status == 200 and headers["Content-Type"] == PB
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")

    json_req = json.dumps(_call_request(2, trace="a" * 32)).encode()
    status, body, headers = post(receiver, json_req, JSON)
    assert (status, headers["Content-Type"], json.loads(body)) == (200, JSON, {})

    gz = gzip.compress(to_protobuf(_call_request(4, trace="b" * 32)))
    status, _, _ = post(receiver, gz, headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert span_count(db) == 3 + 2 + 4
    with open_store(db, read_only=True) as con:
        rows = con.execute(
            "SELECT task_class, llm_calls, input_tokens, output_tokens, source FROM runs "
            "WHERE run_id = ?",
            [TRACE],
        ).fetchall()
    # three calls in one trace make one run; its service names it (no task class attribute)
    assert rows == [("rx-test", 3, 300, 30, "otlp")]


def test_partial_success_names_rejected_spans_and_stores_the_rest(
    receiver: OtlpReceiver, db: Path
) -> None:
    request = _call_request(2)
    spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(otlp_span(trace_id=TRACE, span_id="abcd", name="short id"))
    spans.append(otlp_span(trace_id=TRACE, span_id=sid(77), start_ns=None, name="no start"))
    for content_type in (JSON, PB):
        body = json.dumps(request).encode() if content_type == JSON else to_protobuf(request)
        status, payload, _ = post(receiver, body, content_type)
        assert status == 200
        if content_type == JSON:
            partial = json.loads(payload)["partialSuccess"]
            rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        else:
            partial = ExportTraceServiceResponse.FromString(payload).partial_success
            rejected, message = partial.rejected_spans, partial.error_message
        assert rejected == 2
        assert "span_id has" in message and "start_time_unix_nano is missing" in message
    assert span_count(db) == 2
    assert receiver.stats_snapshot()["spans_rejected"] == 4


def test_resending_the_same_spans_adds_nothing(receiver: OtlpReceiver, db: Path) -> None:
    body = to_protobuf(request_json(make_run_records(seed=11)))
    for _ in range(3):
        assert post(receiver, body)[0] == 200
    with open_store(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchall()[0][0] == 6
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 1


def test_huge_attribute_values_are_stored_cut(receiver: OtlpReceiver, db: Path) -> None:
    request = _call_request(1)
    big = "y" * (MAX_ATTRIBUTE_VALUE_CHARS * 5)
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "app.note", "value": {"stringValue": big}}
    )
    assert post(receiver, to_protobuf(request))[0] == 200
    with open_store(db, read_only=True) as con:
        (stored,) = con.execute("SELECT attributes->>'$.\"app.note\"' FROM spans").fetchall()[0]
    assert len(stored) < MAX_ATTRIBUTE_VALUE_CHARS + 100 and "truncated" in stored


def test_chunked_bodies_are_read(receiver: OtlpReceiver, db: Path) -> None:
    body = to_protobuf(_call_request(2))
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=scaled(60))
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([body[:10], body[10:]]),
            headers={"Content-Type": PB, "Authorization": f"Bearer {TOKEN}"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert receiver.flush(scaled(60))
    assert span_count(db) == 2


def test_one_connection_serves_many_requests(receiver: OtlpReceiver, db: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=scaled(60))
    try:
        for i in range(5):
            conn.request(
                "POST",
                "/v1/traces",
                body=to_protobuf(_call_request(1, first=i + 1)),
                headers={"Content-Type": PB, "Authorization": f"Bearer {TOKEN}"},
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()
    assert receiver.flush(scaled(60))
    assert span_count(db) == 5


# --- refused -------------------------------------------------------------------------------


def _bomb() -> bytes:
    return gzip.compress(b"\x0a" * (LIMIT * 4))


BAD_REQUESTS = {
    "truncated protobuf": (lambda: to_protobuf(_call_request(5))[:-7], PB, {}, 400),
    "garbage protobuf": (lambda: b"\xff\xfe not a protobuf", PB, {}, 400),
    "invalid JSON": (lambda: b'{"resourceSpans": [', JSON, {}, 400),
    "JSON that is not a request": (lambda: b'{"hello": 1}', JSON, {}, 400),
    "wrong content type": (lambda: to_protobuf(_call_request()), "text/plain", {}, 415),
    "no content type": (lambda: to_protobuf(_call_request()), None, {}, 415),
    "unknown content encoding": (
        lambda: to_protobuf(_call_request()),
        PB,
        {"Content-Encoding": "br"},
        415,
    ),
    "corrupt gzip": (lambda: b"\x1f\x8b garbage", PB, {"Content-Encoding": "gzip"}, 400),
    "body over the limit": (lambda: b"\x0a" * (LIMIT + 1), PB, {}, 413),
    "gzip bomb": (_bomb, PB, {"Content-Encoding": "gzip"}, 413),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_its_4xx_stores_nothing_and_the_server_goes_on(
    receiver: OtlpReceiver, db: Path, case: str
) -> None:
    make_body, content_type, headers, expected = BAD_REQUESTS[case]
    status, body, reply_headers = post(receiver, make_body(), content_type, headers=headers)
    assert status == expected
    if reply_headers["Content-Type"] == JSON:
        assert json.loads(body)["message"]
    assert span_count(db) == 0
    assert receiver.stats_snapshot()["requests_refused"] == 1
    assert_still_serving(receiver, db)


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_a_missing_or_wrong_token_is_401(receiver: OtlpReceiver, db: Path, token) -> None:
    status, _, headers = post(receiver, to_protobuf(_call_request()), token=token)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert span_count(db) == 0
    assert_still_serving(receiver, db)


def test_wrong_paths_and_methods(receiver: OtlpReceiver, db: Path) -> None:
    assert post(receiver, b"{}", JSON, path="/v1/metrics")[0] == 404
    status, _, headers = post(receiver, b"", None, method="GET")
    assert (status, headers["Allow"]) == (405, "POST")
    status, _, headers = post(receiver, b"", None, method="DELETE", path="/health")
    assert (status, headers["Allow"]) == (405, "GET")
    assert post(receiver, to_protobuf(_call_request(1)), path="/v1/traces/")[0] == 200
    status, body, _ = post(receiver, b"", None, method="GET", path="/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert_still_serving(receiver, db)


def test_missing_content_length_is_411(receiver: OtlpReceiver, db: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=scaled(60))
    try:
        conn.putrequest("POST", "/v1/traces")
        conn.putheader("Content-Type", PB)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        assert conn.getresponse().status == 411
    finally:
        conn.close()
    assert_still_serving(receiver, db)


# --- the store side --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_busy_store_spills_and_the_next_write_loads_it(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "0.3")
    with OtlpReceiver(db, ReceiverConfig(port=0, ack="store")) as rx:
        with hold_store_lock(db, read_only=True, seconds=30):
            assert post(rx, to_protobuf(_call_request(3)), token=None)[0] == 200
            assert len(spill.pending_spills(db)) == 1
        assert post(rx, to_protobuf(_call_request(1, trace="c" * 32)), token=None)[0] == 200
    assert spill.pending_spills(db) == []
    assert span_count(db) == 4


def test_start_refuses_a_foreign_file_and_a_taken_port(tmp_path: Path, db: Path) -> None:
    foreign = tmp_path / "notes.duckdb"
    foreign.write_text("not a database")
    with pytest.raises(NotACliffwatchStoreError):
        OtlpReceiver(foreign, ReceiverConfig(port=0)).start()
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        with pytest.raises(ReceiverError, match=f"cannot listen on 127.0.0.1:{rx.port}"):
            OtlpReceiver(tmp_path / "other.duckdb", ReceiverConfig(port=rx.port)).start()


def test_the_sdk_otlp_exporter_delivers_to_the_receiver(receiver: OtlpReceiver, db: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    exporter = OTLPSpanExporter(
        endpoint=receiver.endpoint, headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=scaled(30)
    )
    results: list[SpanExportResult] = []
    original = exporter.export
    exporter.export = lambda spans: results.append(original(spans)) or results[-1]  # type: ignore[method-assign]
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("pipeline", attributes={"cliff.task_class": "triage"}):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
            },
        ):
            pass
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
    assert receiver.flush(scaled(60))
    with open_store(db, read_only=True) as con:
        rows = con.execute("SELECT task_class, llm_calls, cost_usd FROM runs").fetchall()
    from cliffwatch.telemetry.pricing import import_litellm

    entry = import_litellm().model_cost["gpt-4o"]
    expected = 1000 * entry["input_cost_per_token"] + 100 * entry["output_cost_per_token"]
    assert rows == [("triage", 1, pytest.approx(expected))]


# --- bad input is a 4xx, never a retry, never a dropped connection --------------------------


def _json_call(span_id: str, trace: str = TRACE, **attrs: str) -> dict:
    return otlp_span(
        trace_id=trace, span_id=span_id, name="chat", start_ns=T0, end_ns=T0 + 10**9,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 100, **attrs},
    )


@pytest.mark.parametrize(
    "attribute", ["gen_ai.request.model", "cliff.task_class", "gen_ai.agent.name"]
)
def test_a_lone_surrogate_rejects_its_span_and_the_good_ones_are_stored(
    receiver: OtlpReceiver, db: Path, attribute: str
) -> None:
    spans = [_json_call(sid(1)), _json_call(sid(2), **{attribute: "bad\ud800text"}),
             _json_call(sid(3))]
    body = json.dumps(request_of_spans(spans)).encode()  # ensure_ascii: "\\ud800" in the text
    assert b"\\ud800" in body
    status, payload, _ = post(receiver, body, JSON)
    assert status == 200
    partial = json.loads(payload)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert sid(2) in partial["errorMessage"] and "surrogate" in partial["errorMessage"]
    with open_store(db, read_only=True) as con:
        stored = [r[0] for r in con.execute("SELECT span_id FROM spans ORDER BY 1").fetchall()]
    assert stored == [sid(1), sid(3)]


def test_a_lone_surrogate_in_the_resource_rejects_its_spans(receiver: OtlpReceiver, db: Path):
    request = request_of_spans([_json_call(sid(1))], resource={"service.name": "x\udfff"})
    request["resourceSpans"].append(request_of_spans([_json_call(sid(2))])["resourceSpans"][0])
    status, payload, _ = post(receiver, json.dumps(request).encode(), JSON)
    assert status == 200 and int(json.loads(payload)["partialSuccess"]["rejectedSpans"]) == 1
    assert span_count(db) == 1


def test_the_fast_text_check_sends_every_possible_surrogate_to_the_walk(tmp_path: Path) -> None:
    assert not may_hold_lone_surrogates(b'{"a": "caf\xc3\xa9 \\n"}')
    for text in (b'{"a": "\\ud800"}', b'{"a": "\\uDFFF"}', b'{"a": "\xed\xa0\x80"}',
                 '{"a": "x"}'.encode("utf-16"), '{"a": "\ud800"}'):
        assert may_hold_lone_surrogates(text), text
    # a surrogate encoded in UTF-8, read by ingest: the span is rejected, the other stored
    line = json.dumps(request_of_spans([_json_call(sid(1)), _json_call(sid(2), x="QQQ")]))
    source = tmp_path / "spans.jsonl"
    source.write_bytes(line.encode().replace(b"QQQ", b"\xed\xa0\x80"))
    summary = ingest_files([source], tmp_path / "in.duckdb")
    assert (summary.spans_written, summary.spans_rejected) == (1, 1)
    assert "surrogate" in summary.problems[0]


def test_an_integer_longer_than_pythons_limit_is_a_400(receiver: OtlpReceiver, db: Path) -> None:
    body = json.dumps(request_of_spans([_json_call(sid(1))])).encode()
    body = body.replace(b'"100"', b"9" * 5000)  # past sys.get_int_max_str_digits()
    status, payload, _ = post(receiver, body, JSON)
    assert status == 400 and "not valid JSON" in json.loads(payload)["message"]
    assert_still_serving(receiver, db)


def _raw(rx: OtlpReceiver, request: bytes) -> bytes:
    """Send bytes on a new connection, shut the sending side, read until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", rx.port), timeout=60) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


CHUNKED_HEAD = (
    f"POST /v1/traces HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
    f"Content-Type: {PB}\r\nTransfer-Encoding: chunked\r\n\r\n"
).encode()


@pytest.mark.parametrize("size_line", [b"-5", b"zz", b"f" * 30])
def test_a_bad_chunk_size_is_a_400_status_line(
    receiver: OtlpReceiver, db: Path, size_line: bytes
) -> None:
    body = to_protobuf(_call_request(1))
    answer = _raw(receiver, CHUNKED_HEAD + size_line + b"\r\n" + body + b"\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert_still_serving(receiver, db)


def test_a_chunked_body_over_the_limit_is_a_413(receiver: OtlpReceiver, db: Path) -> None:
    chunk = b"\x0a" * 100_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))
    answer = _raw(receiver, CHUNKED_HEAD + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert_still_serving(receiver, db)


def test_a_client_that_half_closes_after_its_request_is_answered(
    receiver: OtlpReceiver, db: Path
) -> None:
    body = to_protobuf(_call_request(2))
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {PB}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    assert _raw(receiver, head + body).startswith(b"HTTP/1.1 200 ")
    assert receiver.flush(scaled(60))
    assert span_count(db) == 2
    # the body cut short: a 400, not silence
    assert _raw(receiver, head + body[:-3]).startswith(b"HTTP/1.1 400 ")
    assert _raw(receiver, head[:30]).startswith(b"HTTP/1.1 400 ")
    assert span_count(db) == 2


def test_a_stalled_body_is_a_408(db: Path) -> None:
    import socket

    with OtlpReceiver(db, ReceiverConfig(port=0, body_idle_timeout_s=0.5)) as rx:
        with socket.create_connection(("127.0.0.1", rx.port), timeout=60) as sock:
            sock.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-Type: {PB}\r\n"
                         "Content-Length: 100\r\n\r\nabc".encode())
            answer = sock.recv(65536)  # no half-close: the server times the body out
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert rx.stats_snapshot()["requests_refused"] == 1


def test_health_needs_the_token_for_its_counters(receiver: OtlpReceiver) -> None:
    for token, keys in ((None, {"status"}), ("wrong", {"status"}),
                        (TOKEN, {"status", "requests", "spans_accepted", "usage_rejected"})):
        status, body, _ = post(receiver, b"", None, method="GET", path="/health", token=token)
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert keys <= set(json.loads(body)) and (token == TOKEN) == ("requests" in body.decode())


def test_spans_no_store_can_hold_are_rejected_and_the_others_written(db: Path) -> None:
    """The fallback behind the decoder's checks: a value the store cannot take is named in
    partial_success, not retried forever (503), and the spans beside it are written."""
    good = make_run_records(seed=5)
    bad = dataclasses.replace(good[1], span_id="e" * 16, name="bad \ud800 name")
    with OtlpReceiver(db, ReceiverConfig(port=0, ack="store")) as rx:
        written, rejected = rx._write([*good, bad])
    assert written == good
    assert [r.span_id for r in rejected] == ["e" * 16] and "cannot be stored" in rejected[0].reason
    assert span_count(db) == len(good)


@pytest.mark.slow
def test_sigterm_stops_serve_after_writing_every_answered_span(tmp_path: Path) -> None:
    """``cliffwatch serve`` as a real process: SIGTERM while requests are in flight; every
    request answered 200 has its spans in the store once the process has exited (0), and
    its worker processes are gone with it."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    db = tmp_path / "served.duckdb"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
           "CLIFFWATCH_RECEIVER_WORKERS": "2"}
    server = subprocess.Popen(
        [sys.executable, "-c", "from cliffwatch.cli import main; main()", "serve",
         "--port", "0", "--db", str(db)],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    assert server.stderr is not None
    line = server.stderr.readline()  # blocks until the receiver listens (or exits)
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", line)
    assert match, line + server.stderr.read()
    port = int(match.group(1))
    answered: list[str] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        for i in range(1_000):
            trace = f"{worker + 1:02x}{i:030x}"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/v1/traces", to_protobuf(_call_request(2, trace=trace)),
                             {"Content-Type": PB})
                ok = conn.getresponse().status == 200
            except OSError:
                return  # the server has stopped listening
            finally:
                conn.close()  # a refused or reset connection too (else a ResourceWarning)
            if ok:
                with lock:
                    answered.append(trace)

    senders = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in senders:
        thread.start()
    deadline = time.monotonic() + 300
    while len(answered) < 20 and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(server.pid)
    server.send_signal(signal.SIGTERM)
    _, rest = server.communicate(timeout=120)
    for thread in senders:
        thread.join(60)
    assert server.returncode == 0, rest
    assert len(workers) == 2
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped by serve, not left behind
    assert "stopped:" in rest
    with open_store(db, read_only=True) as con:
        stored = {r[0] for r in con.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
    assert len(answered) >= 20 and set(answered) <= stored


@pytest.mark.slow
def test_sigint_stops_serve_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A ``cliffwatch serve`` started in a script's background inherits SIGINT ignored
    (``trap "" INT`` here, as a non-interactive shell's ``&`` does): ``kill -INT`` still
    stops it cleanly, with its summary (it was ignored, and serve ran on)."""
    import os
    import signal
    import subprocess
    import sys

    ignoring = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", sys.executable]
    premise = subprocess.run(  # what such a process's Python makes of SIGINT
        [*ignoring, "-c", "import signal; print(signal.getsignal(signal.SIGINT).name)"],
        capture_output=True, text=True, timeout=scaled(60), check=True)
    assert premise.stdout.strip() == "SIG_IGN"
    server = subprocess.Popen(
        [*ignoring, "-c", "from cliffwatch.cli import main; main()", "serve", "--port", "0",
         "--db", str(tmp_path / "served.duckdb")],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
             "PYTHONFAULTHANDLER": "1"},  # stacks printed if it does not stop
    )
    assert server.stderr is not None
    line = server.stderr.readline()  # the banner: it listens, and its handlers are set
    assert "/v1/traces" in line, line + server.stderr.read()
    stopped = stop_process(server, signal.SIGINT, 120)
    assert stopped.in_time, f"serve did not stop within {scaled(120):.0f} s of SIGINT"
    assert server.returncode == 0, stopped.err
    assert "stopped: 0 requests" in stopped.err, stopped.err


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children
