"""Real producers of LLM spans, each calling the loopback stub of the provider APIs.

Run as a script, one scenario per process (instrumentations patch SDKs process-wide)::

    python tests/cost_producer_app.py anthropic-openllmetry --jsonl out.jsonl

It starts :mod:`stub_llm` on loopback, sets up the global OpenTelemetry SDK as an app does
(every finished span written as OTLP/JSON lines to ``--jsonl``, as a Collector's file
exporter writes them), instruments with the scenario's real packages, makes
:data:`RUNS_PER_SCENARIO` runs, and prints one JSON line: the runs it made, each with its
task class and the stub's ledger entries of its calls (what the stub answered, the truth
to price by hand), and the number of spans written.

Scenarios (:data:`SCENARIOS`): the Anthropic SDK with prompt caching under OpenLLMetry's
and OpenInference's instrumentations (the SDK's own tracing stays on, as it is by
default: two instrumentations of the same calls); the OpenAI SDK (chat with cached
prompts, reasoning models on chat and Responses) under OpenInference's and OpenLLMetry's
instrumentations, and under both at once; the OpenAI Agents SDK traced by OpenInference
(nested agent spans, a tool call); Pydantic AI's own instrumentation (invoke_agent spans
over chat spans, ``operation.cost`` from genai-prices), also with the agent span carrying
its chat spans' summed ``gen_ai.usage.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS_PER_SCENARIO = 2

PLANNER_SYSTEM = (
    "You are the planning desk of a coastal tide service. Split every question into "
    "independent parts a junior analyst can answer alone, one line each."
)
WORKER_SYSTEM = "You are a junior tide analyst. Answer the part you are given in two lines."


def _anthropic(url: str, which: str) -> Callable[[str], None]:
    if which == "openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    else:
        from openinference.instrumentation.anthropic import AnthropicInstrumentor  # type: ignore[no-redef]
    AnthropicInstrumentor().instrument()
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="stub-key", max_retries=0)

    def ask(model: str, max_tokens: int, system: str, text: str) -> None:
        client.messages.create(
            model=model,
            max_tokens=max_tokens,
            system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": text}],
        )

    def run(label: str) -> None:
        ask("claude-sonnet-4-5", 60, PLANNER_SYSTEM, f"plan the {label} question on neap tides")
        for part in ("the moon", "the sun"):
            ask("claude-haiku-4-5", 30, WORKER_SYSTEM, f"explain {part} for {label}")

    return run


def _openai(url: str, which: str) -> Callable[[str], None]:
    if which in ("openinference", "both"):
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    if which in ("openllmetry", "both"):
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OLInstrumentor

        OLInstrumentor().instrument()
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="stub-key", max_retries=0)

    def run(label: str) -> None:
        client.chat.completions.create(
            model="gpt-4o",
            max_tokens=50,
            messages=[
                {"role": "system", "content": PLANNER_SYSTEM},
                {"role": "user", "content": f"plan the {label} question on spring tides"},
            ],
        )
        client.chat.completions.create(
            model="gpt-5-mini",
            max_completion_tokens=40,
            messages=[
                {"role": "developer", "content": WORKER_SYSTEM},
                {"role": "user", "content": f"explain the moon for {label}"},
            ],
        )
        client.responses.create(
            model="o4-mini",
            instructions=WORKER_SYSTEM,
            input=f"explain the sun for {label}",
            max_output_tokens=30,
        )

    return run


def _openai_agents(url: str) -> Callable[[str], None]:
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    # exclusive: replace the SDK's default processor, which uploads traces to OpenAI
    OpenAIAgentsInstrumentor().instrument(exclusive_processor=True)
    import openai
    from agents import Agent, RunConfig, Runner, function_tool, set_default_openai_client

    set_default_openai_client(
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="stub-key", max_retries=0),
        use_for_tracing=False,
    )

    @function_tool
    def tide_table() -> str:
        """Today's tide table for the harbour."""
        return "high 06:12, low 12:30"

    helper = Agent(
        name="tide-helper",
        instructions=WORKER_SYSTEM,
        model="gpt-4o-mini",
        tools=[tide_table],
    )
    planner = Agent(
        name="tide-planner",
        instructions=PLANNER_SYSTEM,
        model="gpt-4o",
        tools=[helper.as_tool(tool_name="ask_helper", tool_description="ask the analyst")],
    )

    def run(label: str) -> None:
        Runner.run_sync(
            planner, f"when is high water for {label}", run_config=RunConfig(workflow_name=label)
        )

    return run


def _pydantic_ai(url: str, *, summed_usage_on_agent: bool = False) -> Callable[[str], None]:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    # Pydantic AI's own OpenTelemetry instrumentation, on the global SDK. With
    # summed_usage_on_agent the invoke_agent span carries gen_ai.usage.* summed over its chat
    # spans (as Pydantic AI did by default before gen_ai.aggregated_usage.*).
    Agent.instrument_all(
        InstrumentationSettings(use_aggregated_usage_attribute_names=not summed_usage_on_agent)
    )
    model = OpenAIChatModel(
        "gpt-4o", provider=OpenAIProvider(base_url=f"{url}/v1", api_key="stub-key")
    )

    def run(label: str) -> None:
        agent = Agent(model, name=label, instructions=PLANNER_SYSTEM)

        @agent.tool_plain
        def tide_table() -> str:
            """Today's tide table for the harbour."""
            return "high 06:12, low 12:30"

        agent.run_sync(f"when is high water for {label}")

    return run


SCENARIOS: dict[str, Callable[[str], Callable[[str], None]]] = {
    "anthropic-openllmetry": lambda url: _anthropic(url, "openllmetry"),
    "anthropic-openinference": lambda url: _anthropic(url, "openinference"),
    "openai-openinference": lambda url: _openai(url, "openinference"),
    "openai-openllmetry": lambda url: _openai(url, "openllmetry"),
    "openai-both": lambda url: _openai(url, "both"),
    "openai-agents": _openai_agents,
    "pydantic-ai": _pydantic_ai,
    "pydantic-ai-summed-usage": lambda url: _pydantic_ai(url, summed_usage_on_agent=True),
}
"""Scenario name -> set-up that instruments and returns one run's work (given its label)."""

OWN_ROOT = {"anthropic-openllmetry", "anthropic-openinference", "openai-openinference",
            "openai-openllmetry", "openai-both"}
"""Scenarios whose runs are the app's own root span (the frameworks make their own)."""


def task_class(scenario: str, index: int) -> str:
    """The task class run ``index`` of ``scenario`` is named with."""
    return f"{scenario}-run{index}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--jsonl", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "false"

    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from otlp_payloads import otlp_json_of
    from stub_llm import serve_stub

    provider = TracerProvider(resource=Resource.create({"service.name": args.scenario}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("tides-app")

    runs: list[dict[str, Any]] = []
    with serve_stub() as (url, stub):
        one_run = SCENARIOS[args.scenario](url)
        for index in range(RUNS_PER_SCENARIO):
            label = task_class(args.scenario, index)
            before = len(stub.ledger.entries)
            if args.scenario in OWN_ROOT:
                attrs = {"gen_ai.workflow.name": label}
                with tracer.start_as_current_span(label, attributes=attrs):
                    one_run(label)
            else:
                one_run(label)
            runs.append({"task_class": label, "ledger": stub.ledger.as_json()[before:]})
    provider.force_flush(30_000)
    spans = memory.get_finished_spans()
    with args.jsonl.open("w") as out:
        for i in range(0, len(spans), 8):
            request = encode_spans(spans[i : i + 8])
            out.write(json.dumps(otlp_json_of(request), separators=(",", ":")) + "\n")
    provider.shutdown()
    print(json.dumps({"runs": runs, "spans": len(spans)}), flush=True)


if __name__ == "__main__":
    main()
