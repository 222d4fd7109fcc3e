"""A small orchestrator-worker "app" instrumented by a real third-party producer.

Run as a script, one producer per process (two openai instrumentors must not wrap the same
client in one process)::

    python tests/producer_app.py openinference --endpoint http://127.0.0.1:4318/v1/traces \\
        --jsonl out.jsonl

It starts :mod:`fake_openai` on loopback, sets up the global OpenTelemetry SDK the way an
app does (an OTLP/HTTP exporter to ``--endpoint``; the finished spans also written as
OTLP/JSON lines to ``--jsonl``), instruments with the producer's own package, and runs
:data:`PIPELINE` once: a root span, a planner, three workers and a synthesis step, each
making one chat call through the real openai client (or, for ``litellm``, through
``litellm.completion`` with litellm's own ``"otel"`` callback). Nothing is hand-written
but the app's own wrapper spans, shaped as each ecosystem shapes them.

The tests import :data:`PIPELINE` and :data:`TASK_CLASS` to know what to expect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRODUCERS = ("openinference", "openllmetry", "litellm")

PIPELINE: tuple[tuple[str, str, str, int], ...] = (
    ("planner", "gpt-4o", "split the question about tides into three parts", 40),
    ("worker-0", "gpt-4o-mini", "explain part one: the moon", 30),
    ("worker-1", "gpt-4o-mini", "explain part two: the sun and spring tides", 31),
    ("worker-2", "gpt-4o-mini", "explain part three: local geography", 32),
    ("synthesize", "gpt-4o-mini", "combine the three answers into one", 20),
)
"""(step span name, model, prompt, max_tokens) of each call the app makes, in order."""

TASK_CLASS = {p: f"tides-{p}" for p in PRODUCERS}
"""The task class each producer's app names its run with (each in its ecosystem's way)."""


def expected_run() -> tuple[int, int, float]:
    """(input tokens, output tokens, cost USD) of one :data:`PIPELINE` run, by hand: tokens
    as the fake server reports them, prices from ``litellm.model_cost``."""
    from fake_openai import usage_for

    from cliffwatch.telemetry.pricing import import_litellm

    model_cost = import_litellm().model_cost
    tin_total = tout_total = 0
    cost = 0.0
    for _, model, prompt, max_tokens in PIPELINE:
        tin, tout = usage_for([{"content": prompt}], max_tokens)
        tin_total += tin
        tout_total += tout
        entry = model_cost[model]
        cost += tin * entry["input_cost_per_token"] + tout * entry["output_cost_per_token"]
    return tin_total, tout_total, cost


def _root_attributes(producer: str) -> dict[str, object]:
    """The app's own root span, as apps in each ecosystem shape it."""
    if producer == "openinference":
        # An agent framework under OpenInference: an AGENT span that repeats the summed
        # usage of the calls below it (the double counting trap).
        return {
            "openinference.span.kind": "AGENT",
            "agent.name": TASK_CLASS[producer],
            "llm.token_count.prompt": 999_999,
            "llm.token_count.completion": 99_999,
            "llm.model_name": "gpt-4o",
        }
    if producer == "openllmetry":
        # What traceloop-sdk's @workflow decorator sets.
        return {
            "traceloop.span.kind": "workflow",
            "traceloop.workflow.name": TASK_CLASS[producer],
            "traceloop.entity.name": TASK_CLASS[producer],
        }
    # current GenAI conventions for an orchestrating workflow span
    return {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": TASK_CLASS[producer],
    }


def _step_attributes(producer: str, step: str) -> dict[str, object]:
    if producer == "openinference":
        return {"openinference.span.kind": "AGENT", "agent.name": step}
    if producer == "openllmetry":
        return {"traceloop.span.kind": "task", "traceloop.entity.name": step}
    return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": step}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("producer", choices=PRODUCERS)
    parser.add_argument("--endpoint", help="OTLP/HTTP traces URL of the receiver")
    parser.add_argument("--token", help="bearer token for the receiver")
    parser.add_argument("--jsonl", type=Path, help="also write the spans as OTLP/JSON lines")
    args = parser.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

    from fake_openai import serve_fake_openai
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from otlp_payloads import otlp_json_of
    from waits import scaled_ms, wait_until

    provider = TracerProvider(resource=Resource.create({"service.name": f"{args.producer}-app"}))
    if args.endpoint:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=args.endpoint, headers=headers))
        )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("tides-app")

    with serve_fake_openai() as base_url:
        if args.producer == "litellm":
            os.environ["USE_OTEL_LITELLM_REQUEST_SPAN"] = "true"  # a child span per call
            from cliffwatch.telemetry.pricing import import_litellm

            litellm = import_litellm()
            litellm.callbacks = ["otel"]  # litellm's own OTel callback, on the global SDK

            def chat(model: str, prompt: str, max_tokens: int) -> None:
                litellm.completion(
                    model=f"openai/{model}",
                    api_base=base_url,
                    api_key="test-key",
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                )
        else:
            if args.producer == "openinference":
                from openinference.instrumentation.openai import OpenAIInstrumentor
            else:
                from opentelemetry.instrumentation.openai import OpenAIInstrumentor
            OpenAIInstrumentor().instrument()
            import openai

            client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)

            def chat(model: str, prompt: str, max_tokens: int) -> None:
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                )

        with tracer.start_as_current_span(
            "tides-pipeline", attributes=_root_attributes(args.producer)
        ):
            for step, model, prompt, max_tokens in PIPELINE:
                with tracer.start_as_current_span(
                    step, attributes=_step_attributes(args.producer, step)
                ):
                    chat(model, prompt, max_tokens)
        if args.producer == "litellm":
            # litellm logs from its own worker thread after the call returns
            wait_until(
                lambda: sum(s.name == "litellm_request" for s in memory.get_finished_spans())
                >= len(PIPELINE),
                60,
                "litellm's request spans",
            )

    ok = provider.force_flush(scaled_ms(60))
    provider.shutdown()
    spans = memory.get_finished_spans()
    if args.jsonl:
        with args.jsonl.open("w") as out:
            for i in range(0, len(spans), 4):  # several requests, as a Collector writes
                request = encode_spans(spans[i : i + 4])
                out.write(json.dumps(otlp_json_of(request), separators=(",", ":")) + "\n")
    print(json.dumps({"spans": len(spans), "flushed": ok}), flush=True)


if __name__ == "__main__":
    main()
