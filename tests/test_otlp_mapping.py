"""OTLP decoding (protobuf and OTLP/JSON) and the one OTLP span -> SpanRecord mapping.

Why one file: decode and mapping are tested together because a producer's payload goes
through both and each case checks the record that comes out; the two share the payload
builders, and the 25 tests are mostly one case each, read as a list of producer rules.

Pure functions, no store: every producer's attribute names, cost sources checked by hand
against litellm's price map, what is and is not an LLM call, task class and role rules,
per-span rejections, and the round trip record -> OTLP -> record for cliffwatch's own runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
from otlp_payloads import otlp_span, request_json, request_of_spans, to_protobuf

from cliffwatch.telemetry.conventions import CostSource, Role
from cliffwatch.telemetry.otlp_body import decode_body, decompress_body
from cliffwatch.telemetry.otlp_decode import (
    MAX_ATTRIBUTE_VALUE_CHARS,
    OtlpDecodeError,
    OtlpSpan,
    PayloadTooLargeError,
    UnsupportedEncodingError,
    decode_protobuf,
)
from cliffwatch.telemetry.otlp_json import decode_json, decode_json_object
from cliffwatch.telemetry.otlp_mapping import (
    MappingConfig,
    call_role,
    llm_kind,
    map_span,
    map_spans,
    reported_cost_usd,
    role_from_words,
)
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.testing import make_run_records

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_793_520_000_000_000_000


def sid(n: int) -> str:
    return f"{n:016x}"


def _span(
    attrs: dict,
    *,
    name: str = "span",
    span_id: int = 1,
    parent: int | None = None,
    resource: dict | None = None,
) -> OtlpSpan:
    return OtlpSpan(
        trace_id=TRACE,
        span_id=sid(span_id),
        parent_span_id=sid(parent) if parent else None,
        name=name,
        kind=1,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 10**9,
        status_code="unset",
        status_message=None,
        attributes=attrs,
        resource_attributes=resource or {"service.name": "app"},
    )


def by_hand_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    entry = import_litellm().model_cost[model]
    return (
        input_tokens * entry["input_cost_per_token"]
        + output_tokens * entry["output_cost_per_token"]
    )


# --- decoding ------------------------------------------------------------------------------


def _mixed_request() -> dict:
    return request_of_spans(
        [
            otlp_span(
                trace_id=TRACE,
                span_id=sid(1),
                name="root",
                attributes={
                    "s": "x",
                    "i": 7,
                    "d": 0.5,
                    "b": True,
                    "a": [1, "two"],
                    "kv": {"k": "v"},
                },
            ),
            otlp_span(
                trace_id=TRACE, span_id=sid(2), parent_span_id=sid(1), name="child", status_code=2
            ),
        ],
        resource={"service.name": "svc", "deployment.environment": "test"},
        scope_name="my.scope",
    )


def test_protobuf_and_json_decode_to_the_same_spans() -> None:
    request = _mixed_request()
    from_json = decode_json(json.dumps(request))
    from_pb = decode_protobuf(to_protobuf(request))
    assert from_json == from_pb
    root, child = from_json.spans
    assert root.attributes == {
        "s": "x",
        "i": 7,
        "d": 0.5,
        "b": True,
        "a": [1, "two"],
        "kv": {"k": "v"},
    }
    assert root.parent_span_id is None and child.parent_span_id == sid(1)
    assert child.status_code == "error"
    assert root.resource_attributes["service.name"] == "svc"
    assert root.scope_name == "my.scope"
    assert root.start_time_unix_nano == 1_793_520_000_000_000_000


def test_json_accepts_snake_case_enum_names_and_base64_ids() -> None:
    import base64

    span = {
        "trace_id": base64.b64encode(bytes.fromhex(TRACE)).decode(),
        "span_id": base64.b64encode(bytes.fromhex(sid(5))).decode(),
        "name": "s",
        "kind": "SPAN_KIND_CLIENT",
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 1,
        "status": {"code": "STATUS_CODE_OK"},
    }
    decoded = decode_json_object({"resource_spans": [{"scope_spans": [{"spans": [span]}]}]})
    (out,) = decoded.spans
    assert (out.trace_id, out.span_id, out.kind, out.status_code) == (TRACE, sid(5), 3, "ok")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"traceId": TRACE[:30]}, "trace_id has 15 bytes"),
        ({"spanId": "abcd"}, "span_id has 2 bytes"),
        ({"spanId": "0" * 16}, "all zeros"),
        ({"parentSpanId": "123"}, "not hex"),
        ({"traceId": "zz" * 16}, "not hex"),
        ({"startTimeUnixNano": None}, "start_time_unix_nano is missing"),
        ({"endTimeUnixNano": "0"}, "end_time_unix_nano is missing"),
        ({"endTimeUnixNano": str(T0 - 1)}, "before start"),
        ({"startTimeUnixNano": str(2**64 - 1)}, "out of range"),
        ({"startTimeUnixNano": "soon"}, "not an integer"),
    ],
)
def test_a_bad_span_is_rejected_alone(change: dict, reason: str) -> None:
    bad = otlp_span(trace_id=TRACE, span_id=sid(9), start_ns=T0, end_ns=T0 + 5)
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    good = otlp_span(trace_id=TRACE, span_id=sid(1))
    request = request_of_spans([good, bad])
    for decoded in (decode_json(json.dumps(request)),) + (
        # The protobuf form can only carry ids and times the JSON could be converted from.
        (decode_protobuf(to_protobuf(request)),) if "not" not in reason else ()
    ):
        assert [s.span_id for s in decoded.spans] == [sid(1)]
        (rejection,) = decoded.rejections
        assert reason in rejection.reason


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"resourceSpans": 3}',
        b'"text"',
        b'{"resourceMetrics": []}',
        "é".encode("latin-1"),
        b"[" * 100_000,
    ],
)
def test_a_malformed_json_payload_is_refused_whole(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_json(body)


def test_empty_requests_are_valid_and_empty() -> None:
    assert decode_json(b"{}").spans == ()
    assert decode_json(b'{"resourceSpans": []}').spans == ()
    assert decode_protobuf(b"").spans == ()


def test_truncated_protobuf_is_refused_whole() -> None:
    body = to_protobuf(_mixed_request())
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(body[: len(body) // 2])
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(b"\xff\xff\xff\xff garbage")


def test_content_types_and_encodings() -> None:
    body = json.dumps(_mixed_request()).encode()
    assert len(decode_body(body, "application/json; charset=utf-8").spans) == 2
    with pytest.raises(UnsupportedEncodingError):
        decode_body(body, "text/plain")
    assert decompress_body(gzip.compress(body), "gzip", 10**6) == body
    with pytest.raises(UnsupportedEncodingError):
        decompress_body(body, "br", 10**6)
    with pytest.raises(PayloadTooLargeError):
        decompress_body(gzip.compress(b"0" * 2_000_000), "gzip", 1_000_000)  # a gzip bomb
    with pytest.raises(OtlpDecodeError):
        decompress_body(gzip.compress(body)[:-20], "gzip", 10**6)
    with pytest.raises(OtlpDecodeError):
        decompress_body(b"not gzip at all", "gzip", 10**6)


def test_huge_strings_are_cut_and_nan_kept_as_text() -> None:
    span = otlp_span(
        trace_id=TRACE,
        span_id=sid(1),
        attributes={"input.value": "x" * (MAX_ATTRIBUTE_VALUE_CHARS + 10)},
    )
    span["attributes"].append({"key": "d", "value": {"doubleValue": "NaN"}})
    (decoded,) = decode_json(json.dumps(request_of_spans([span]))).spans
    text = decoded.attributes["input.value"]
    assert text.startswith("x" * MAX_ATTRIBUTE_VALUE_CHARS) and text.endswith(
        "[truncated 10 chars]"
    )
    assert decoded.attributes["d"] == "nan"
    record = map_span(decoded)
    assert json.loads(record.attributes)["d"] == "nan"  # valid JSON, no bare NaN


# --- producers' attribute names ----------------------------------------------------------------


PRODUCERS = {
    "genai current": {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
    },
    "genai legacy / OpenLLMetry": {
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 120,
        "gen_ai.usage.completion_tokens": 30,
    },
    "OpenInference": {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.model_name": "gpt-4o-mini",
        "llm.token_count.prompt": 120,
        "llm.token_count.completion": 30,
        "llm.token_count.total": 150,
    },
    "OpenLLMetry with traceloop kind": {
        "traceloop.span.kind": "llm",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 120,
        "gen_ai.usage.completion_tokens": 30,
    },
}


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_each_producers_call_maps_to_tokens_model_provider_and_computed_cost(
    producer: str,
) -> None:
    record = map_span(_span(PRODUCERS[producer]))
    assert record.is_llm_call and record.role == Role.CALL
    assert (record.input_tokens, record.output_tokens) == (120, 30)
    assert record.request_model == "gpt-4o-mini" and record.provider == "openai"
    assert record.cost_source == CostSource.COMPUTED
    assert record.cost_usd == pytest.approx(by_hand_usd("gpt-4o-mini", 120, 30), rel=1e-12)
    entry = import_litellm().model_cost["gpt-4o-mini"]
    assert record.price_input_usd_per_token == entry["input_cost_per_token"]


@pytest.mark.parametrize(
    ("attrs", "cost"),
    [
        ({"gen_ai.cost.total_cost": 0.0042}, 0.0042),  # litellm's OTel callback
        ({"gen_ai.cost.input_cost": 0.001, "gen_ai.cost.output_cost": 0.002}, 0.003),
        ({"llm.cost.total": 0.5}, 0.5),  # OpenInference
        ({"llm.cost.prompt": 0.25, "llm.cost.completion": 0.125}, 0.375),
        ({"gen_ai.usage.cost.amount": "0.07"}, 0.07),  # proposed convention, numeric text
        ({"gen_ai.usage.cost.amount": 0.07, "gen_ai.usage.cost.currency": "EUR"}, None),
        ({"llm.cost.total": -1.0}, None),
        ({"llm.cost.total": "n/a"}, None),
    ],
)
def test_reported_cost(attrs: dict, cost: float | None) -> None:
    assert reported_cost_usd(attrs) == (pytest.approx(cost) if cost is not None else None)


def test_a_reported_cost_wins_and_the_computed_one_is_kept_beside_it() -> None:
    attrs = {**PRODUCERS["genai current"], "gen_ai.cost.total_cost": 0.0042}
    record = map_span(_span(attrs))
    assert (record.cost_usd, record.cost_source) == (0.0042, CostSource.PROVIDER)
    assert record.reported_cost_usd == 0.0042
    assert record.computed_cost_usd == pytest.approx(by_hand_usd("gpt-4o-mini", 120, 30))
    entry = import_litellm().model_cost["gpt-4o-mini"]
    assert record.price_input_usd_per_token == entry["input_cost_per_token"]
    assert not record.cache_detail_missing  # the figure is the provider's, not a bound


def test_an_unknown_model_is_unpriced_never_zero() -> None:
    attrs = {
        **PRODUCERS["genai current"],
        "gen_ai.request.model": "acme-llm-9",
        "gen_ai.response.model": "acme-llm-9",
    }
    record = map_span(_span(attrs))
    assert record.is_llm_call
    assert (record.cost_usd, record.cost_source) == (None, CostSource.UNPRICED)


def test_the_response_model_is_priced_first_then_the_request_model() -> None:
    attrs = {**PRODUCERS["genai current"], "gen_ai.response.model": "acme-snapshot-1"}
    record = map_span(_span(attrs))
    assert record.cost_source == CostSource.COMPUTED
    assert record.cost_usd == pytest.approx(by_hand_usd("gpt-4o-mini", 120, 30))


def test_price_overrides_price_a_custom_model(tmp_path) -> None:
    overrides = tmp_path / "prices.json"
    overrides.write_text(
        json.dumps({"acme-llm-9": {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}})
    )
    attrs = {
        **PRODUCERS["genai current"],
        "gen_ai.request.model": "acme-llm-9",
        "gen_ai.response.model": "acme-llm-9",
    }
    record = map_span(_span(attrs), MappingConfig(overrides_path=overrides))
    assert record.cost_usd == pytest.approx(120 * 1e-6 + 30 * 4e-6)


# --- what is an LLM call (no double counting) -----------------------------------------------


SUMMED_USAGE = {
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 999,
    "gen_ai.usage.output_tokens": 99,
    "llm.token_count.prompt": 999,
    "llm.token_count.completion": 99,
}


@pytest.mark.parametrize(
    "marker",
    [
        {"openinference.span.kind": "AGENT"},
        {"openinference.span.kind": "CHAIN"},
        {"openinference.span.kind": "TOOL"},
        {"traceloop.span.kind": "workflow"},
        {"traceloop.span.kind": "agent"},
        {"traceloop.span.kind": "task"},
        {"gen_ai.operation.name": "invoke_agent"},
        {"gen_ai.operation.name": "invoke_workflow"},
        {"gen_ai.operation.name": "execute_tool"},
        {"cliff.role": "run"},
    ],
)
def test_agent_workflow_and_chain_spans_are_never_calls_even_with_summed_usage(
    marker: dict,
) -> None:
    record = map_span(_span({**SUMMED_USAGE, **marker}))
    assert not record.is_llm_call
    assert record.cost_usd is None and record.cost_source is None


def test_call_detection_without_markers() -> None:
    assert map_span(
        _span({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 5})
    ).is_llm_call
    # a model name alone, or usage alone, on an unmarked span is not a call
    assert not map_span(_span({"gen_ai.request.model": "gpt-4o-mini"})).is_llm_call
    assert not map_span(_span({"gen_ai.usage.input_tokens": 5})).is_llm_call
    assert not map_span(_span({"http.method": "POST"})).is_llm_call


@pytest.mark.parametrize("role", [["worker", "plan"], 3, True])
def test_a_cliff_role_that_is_not_text_is_no_marker(role: object) -> None:
    """An array, a number or a bool in ``cliff.role`` is ignored (the other markers decide),
    never a span rejected for a TypeError."""
    call = map_span(_span({"cliff.role": role, "gen_ai.operation.name": "chat",
                           "gen_ai.request.model": "gpt-4o-mini",
                           "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 2}))
    assert call.is_llm_call and call.cost_usd is not None
    assert not map_span(_span({"cliff.role": role, "http.method": "POST"})).is_llm_call


def test_a_marked_call_without_usage_is_counted_as_unpriced() -> None:
    # streaming without usage: a real call whose cost is unknown, not a vanished one
    record = map_span(
        _span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"})
    )
    assert record.is_llm_call and record.cost_source == CostSource.UNPRICED


def test_embeddings_are_calls() -> None:
    record = map_span(
        _span(
            {
                "openinference.span.kind": "EMBEDDING",
                "embedding.model_name": "text-embedding-3-small",
                "llm.token_count.prompt": 1000,
            }
        )
    )
    assert record.is_llm_call
    assert record.cost_usd == pytest.approx(by_hand_usd("text-embedding-3-small", 1000, 0))


def test_llm_kind_markers() -> None:
    assert llm_kind({"openinference.span.kind": "LLM"}) is True
    assert llm_kind({"traceloop.span.kind": "llm"}) is True
    assert llm_kind({"gen_ai.operation.name": "generate_content"}) is True
    assert llm_kind({"gen_ai.operation.name": "text_completion"}) is True
    assert llm_kind({"gen_ai.operation.name": "retrieval"}) is False
    assert llm_kind({}) is None


# --- task class and roles --------------------------------------------------------------------


def test_task_class_rule_order_and_resource_fallback() -> None:
    both = {"traceloop.workflow.name": "wf", "gen_ai.agent.name": "agent"}
    assert map_span(_span(both)).task_class == "wf"
    assert map_span(_span({**both, "cliff.task_class": "mine"})).task_class == "mine"
    assert map_span(_span({"agent.name": "oi-agent"})).task_class == "oi-agent"
    resource = {"service.name": "svc", "cliff.task_class": "from-resource"}
    assert map_span(_span({}, resource=resource)).task_class == "from-resource"
    # nothing matches: None here, and the store falls back to service.name
    plain = map_span(_span({}))
    assert plain.task_class is None and plain.service_name == "app"
    custom = MappingConfig(task_class_attributes=("deployment.environment",))
    assert (
        map_span(_span({}, resource={"deployment.environment": "prod"}), custom).task_class
        == "prod"
    )


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("planner", Role.PLAN),
        ("PlanTask", Role.PLAN),
        ("decompose_question", Role.PLAN),
        ("worker 3", Role.WORKER),
        ("research_subtask", Role.WORKER),
        ("synthesize", Role.SYNTHESIS),
        ("SummarizeResults", Role.SYNTHESIS),
        ("final_answer", Role.SYNTHESIS),
        ("aggregator", Role.SYNTHESIS),
        ("critic", Role.CRITIC),
        ("evaluate_draft", Role.CRITIC),
        ("openai.chat", None),
        ("ChatCompletion", None),
        ("litellm_request", None),
        ("explanation", None),
        ("planet", None),
        ("workflow", None),
    ],
)
def test_role_words(text: str, role: Role | None) -> None:
    assert role_from_words(text) == role


def test_roles_from_the_structure_of_a_trace() -> None:
    call = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    }
    spans = [
        _span({"openinference.span.kind": "CHAIN"}, name="pipeline", span_id=1),
        _span({"openinference.span.kind": "AGENT"}, name="planner", span_id=2, parent=1),
        _span(call, name="openai.chat", span_id=3, parent=2),
        _span({"openinference.span.kind": "AGENT"}, name="researcher", span_id=4, parent=1),
        _span({"openinference.span.kind": "TOOL"}, name="web_search", span_id=5, parent=4),
        _span(call, name="openai.chat", span_id=6, parent=5),
        _span(
            {"gen_ai.agent.name": "Summarizer", "openinference.span.kind": "AGENT"},
            name="agent",
            span_id=7,
            parent=1,
        ),
        _span(call, name="openai.chat", span_id=8, parent=7),
        _span(call, name="openai.chat", span_id=9, parent=1),
    ]
    records, rejections = map_spans(spans)
    assert not rejections
    roles = {r.span_id: r.role for r in records}
    assert roles[sid(1)] == Role.RUN and roles[sid(2)] == Role.OTHER
    assert roles[sid(3)] == Role.PLAN
    assert roles[sid(6)] == Role.WORKER  # under a tool
    assert roles[sid(8)] == Role.SYNTHESIS
    assert roles[sid(9)] == Role.CALL


def test_a_parent_cycle_does_not_hang() -> None:
    a = dataclasses.replace(_span({}, span_id=1), parent_span_id=sid(2))
    b = dataclasses.replace(_span({}, span_id=2), parent_span_id=sid(1))
    assert call_role(a, [b, a] * 100) == Role.CALL
    records, _ = map_spans([a, b])
    assert len(records) == 2


def test_map_spans_keeps_one_span_per_key() -> None:
    first = _span({"x": 1})
    again = _span({"x": 2})
    records, _ = map_spans([first, again])
    assert len(records) == 1 and json.loads(records[0].attributes)["x"] == 1


# --- round trip: cliffwatch's own spans through OTLP ----------------------------------------


def test_own_runs_round_trip_through_otlp_json_and_protobuf() -> None:
    originals = make_run_records(
        task_class="research",
        worker_cost_usds=[0.01, None, 0.03],
        plan_cost_usd=0.002,
        synthesis_cost_usd=0.0005,
        max_workers=2,
        proposed=3,
        breach="cap",
        seed=3,
        workers_failed=1,
    )
    request = request_json(originals)
    config = MappingConfig(source="cliffwatch")
    for decoded in (decode_json(json.dumps(request)), decode_protobuf(to_protobuf(request))):
        records, rejections = map_spans(decoded.spans, config)
        assert not rejections
        assert len(records) == len(originals)
        for got, want in zip(records, originals, strict=True):
            for field in dataclasses.fields(want):
                a, b = getattr(got, field.name), getattr(want, field.name)
                if field.name in ("attributes", "resource_attributes", "events"):
                    a, b = json.loads(a), json.loads(b)
                assert a == b, (want.name, field.name)
