"""Prompt and completion content is stored only with CLIFFWATCH_CAPTURE_CONTENT on, on every
path: the OTLP receiver, ``cliffwatch ingest``, and cliffwatch's own runs (sub-task titles
are model-written). Replay works without the titles.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from otlp_payloads import otlp_span, request_of_spans, to_protobuf

from cliffwatch import settings
from cliffwatch.analytics.replay import LimitsOverride, replay
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.telemetry.content_capture import is_content, without_content
from cliffwatch.telemetry.ingest import ingest_files
from cliffwatch.telemetry.otlp_json import decode_json
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.store import open_store

TRACE = "9b8efff798038103d269b633813fc60c"
PLAN = [{"index": 0, "title": "Find the sources", "difficulty": "routine", "model": "m"},
        {"index": 1, "title": "Check the prices", "difficulty": "hard", "model": "m"}]
CONTENT = {
    "gen_ai.input.messages": '[{"role": "user", "content": "my password is hunter2"}]',
    "gen_ai.output.messages": '[{"role": "assistant", "content": "noted"}]',
    "gen_ai.system_instructions": "be terse",
    "gen_ai.prompt.0.content": "hunter2",  # OpenLLMetry
    "gen_ai.completion.0.content": "noted",
    "input.value": "hunter2",  # OpenInference
    "llm.input_messages.0.message.content": "hunter2",
    "traceloop.entity.input": "hunter2",
    "cliff.task.input": "hunter2",
    "cliff.subtask.title": "Find the sources",
}
KEPT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
    "cliff.task_class": "capture",
    "cliff.subtask.index": 0,
    "llm.input_messages_count": 2,  # not content: a count, and not under the prefix
}


def _request() -> dict[str, Any]:
    span = otlp_span(
        trace_id=TRACE, span_id="00000000000000c1", name="chat",
        attributes={**CONTENT, **KEPT, "cliff.plan.subtasks": json.dumps(PLAN)},
    )
    span["events"] = [
        {"name": "gen_ai.content.prompt", "timeUnixNano": "1793520000500000000",
         "attributes": [{"key": "gen_ai.prompt", "value": {"stringValue": "hunter2"}}]},
        {"name": "retry", "timeUnixNano": "1793520000600000000",
         "attributes": [{"key": "input.value", "value": {"stringValue": "hunter2"}},
                        {"key": "attempt", "value": {"intValue": "2"}}]},
    ]
    return request_of_spans([span])


def _stored(db: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with open_store(db, read_only=True) as con:
        attrs, events = con.execute("SELECT attributes, events FROM spans").fetchall()[0]
    return json.loads(attrs), json.loads(events)


def _assert_without_content(attrs: dict[str, Any], events: list[dict[str, Any]]) -> None:
    assert not set(CONTENT) & set(attrs)
    assert {k: attrs[k] for k in KEPT} == KEPT
    plan = json.loads(attrs["cliff.plan.subtasks"])
    assert plan == [{k: v for k, v in p.items() if k != "title"} for p in PLAN]
    assert [e["name"] for e in events] == ["retry"]
    assert events[0]["attributes"] == {"attempt": 2}
    assert "hunter2" not in json.dumps([attrs, events])


def _post(rx: OtlpReceiver, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=60)
    try:
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_receiver_drops_content_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.CLIFFWATCH_CAPTURE_CONTENT, raising=False)
    db = tmp_path / "rx.duckdb"
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        assert _post(rx, to_protobuf(_request())) == 200
    _assert_without_content(*_stored(db))


def test_the_receiver_keeps_content_with_capture_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    assert ReceiverConfig().capture_content  # the setting is the default
    db = tmp_path / "rx.duckdb"
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        assert _post(rx, to_protobuf(_request())) == 200
    attrs, events = _stored(db)
    assert {k: attrs[k] for k in CONTENT} == CONTENT
    assert json.loads(attrs["cliff.plan.subtasks"]) == PLAN
    assert [e["name"] for e in events] == ["gen_ai.content.prompt", "retry"]


def test_ingest_drops_content_unless_capture_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "spans.json"
    source.write_text(json.dumps(_request()))
    monkeypatch.delenv(settings.CLIFFWATCH_CAPTURE_CONTENT, raising=False)
    ingest_files([source], tmp_path / "off.duckdb")
    _assert_without_content(*_stored(tmp_path / "off.duckdb"))
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    ingest_files([source], tmp_path / "on.duckdb")
    assert _stored(tmp_path / "on.duckdb")[0]["input.value"] == "hunter2"


def test_a_span_without_content_is_passed_through_as_is() -> None:
    spans = decode_json(json.dumps(request_of_spans([otlp_span(
        trace_id=TRACE, span_id="00000000000000c2", attributes=KEPT)]))).spans
    assert without_content(spans)[0] is spans[0]
    assert is_content("gen_ai.prompt.3.role") and not is_content("gen_ai.usage.prompt_tokens")


def test_own_runs_without_capture_keep_no_titles_and_still_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.CLIFFWATCH_CAPTURE_CONTENT, raising=False)
    db = tmp_path / "demo.duckdb"
    run_demo(db, runs=4, days=1, seed=3)
    with open_store(db, read_only=True) as con:
        titles = con.execute(
            """SELECT count(*) FROM spans WHERE attributes->>'$."cliff.subtask.title"'
               IS NOT NULL OR attributes->>'$."cliff.plan.subtasks"' LIKE '%"title"%'"""
        ).fetchall()[0][0]
        run_ids = [r[0] for r in con.execute(
            "SELECT run_id FROM runs WHERE workers_dispatched > 1 ORDER BY run_id").fetchall()]
        assert titles == 0 and run_ids
        rp = replay(con, run_ids[0], LimitsOverride.parse(1))
    subtasks = rp.subtasks
    assert subtasks.height > 1 and subtasks["model"].null_count() == 0
    assert subtasks["title"].to_list() == [f"sub-task {i}" for i in range(subtasks.height)]
    assert rp.counterfactual.status == "rejected"  # a cap of 1 under the reject policy
