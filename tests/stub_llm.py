"""A loopback stub of the Anthropic Messages API and the OpenAI Chat Completions and Responses
APIs that reports prompt caching and reasoning usage and keeps a ledger of what it answered.

Routes: ``POST /v1/messages`` (Anthropic), ``POST /v1/chat/completions`` and
``POST /v1/responses`` (OpenAI). Real SDKs (``anthropic``, ``openai``) and the frameworks
on top of them (openai-agents, pydantic-ai) talk to it unchanged.

Usage the stub reports, per request:

- the *system prompt* (Anthropic ``system``, a chat ``system``/``developer`` message,
  Responses ``instructions`` or a system/developer input item) is the cacheable prefix: the
  first request of a model with a given system prompt writes it to the cache (Anthropic:
  ``cache_creation_input_tokens``; OpenAI bills no write, so nothing is reported), every
  later one reads it (Anthropic ``cache_read_input_tokens``, OpenAI
  ``prompt_tokens_details.cached_tokens`` / ``input_tokens_details.cached_tokens``);
- every other word of the request is :data:`TOKENS_PER_WORD` uncached prompt tokens, and
  the system prompt is :data:`TOKENS_PER_WORD` per word too;
- output is the request's max tokens (``max_tokens``, ``max_completion_tokens``,
  ``max_output_tokens``) or :data:`DEFAULT_OUTPUT_TOKENS`; a reasoning model (``o1``..,
  ``gpt-5``..) also reasons :data:`REASONING_TOKENS` tokens, counted inside the output
  tokens as OpenAI does;
- a request offering tools whose conversation holds no tool result yet is answered with a
  call of its first tool (each required string argument ``"the tides"``), so an agent
  framework makes a second call.

Each answer appends one :class:`LedgerEntry`. The model reported in the answer is the dated
snapshot of the model asked for when :data:`SNAPSHOTS` has one, as the real APIs do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fake_openai import serve_json

TOKENS_PER_WORD = 50
DEFAULT_OUTPUT_TOKENS = 40
REASONING_TOKENS = 192
CREATED_AT_S = 1_767_225_600

SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
}
"""Model asked for -> the dated id the stub answers with (all of them in litellm's map)."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the stub answered once: tokens as billed (uncached input apart from the cache
    reads and writes; output including reasoning)."""

    api: str  # "anthropic.messages" | "openai.chat" | "openai.responses"
    model: str  # the model asked for
    response_model: str
    uncached_input_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    output_tokens: int
    reasoning_tokens: int
    tool_call: bool


def _words(value: Any) -> int:
    """Whitespace-separated words across every string inside ``value`` (JSON-like)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k not in ("type", "role", "id"))
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 family models reason."""
    base = model.split("/")[-1]
    return base.startswith(("o1", "o3", "o4", "gpt-5"))


class Ledger:
    """The entries answered so far, thread-safe, plus the cache of system prompts seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[LedgerEntry] = []
        self._cached: set[tuple[str, str]] = set()

    def cache_lookup(self, model: str, system: str) -> bool:
        """True when ``system`` was seen for ``model`` before (a cache hit); records it."""
        with self._lock:
            key = (model, system)
            hit = key in self._cached
            self._cached.add(key)
            return hit

    def add(self, entry: LedgerEntry) -> None:
        with self._lock:
            self.entries.append(entry)

    def as_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(e) for e in self.entries]


def _split_system(messages: list[Any], system_roles: tuple[str, ...]) -> tuple[str, list[Any]]:
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in system_roles]
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") in system_roles)]
    text = " ".join(_text_of(m.get("content")) for m in system)
    return text, rest


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return ""


def _has_tool_result(api: str, items: list[Any]) -> bool:
    for item in items:
        if not isinstance(item, dict):
            continue
        if api == "openai.chat" and item.get("role") == "tool":
            return True
        if api == "openai.responses" and item.get("type") == "function_call_output":
            return True
        content = item.get("content")
        if api == "anthropic.messages" and isinstance(content, list):
            if any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content):
                return True
    return False


def _first_tool(api: str, tools: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """The first tool's name and arguments for it: every required string parameter set to
    ``"the tides"``, others left out."""
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if api == "openai.chat":
            tool = tool.get("function") or {}
            schema = tool.get("parameters") or {}
        elif api == "openai.responses":
            schema = tool.get("parameters") or {}
        else:
            schema = tool.get("input_schema") or {}
        name = str(tool.get("name") or "")
        if not name:
            continue
        props = schema.get("properties") or {}
        args = {
            key: "the tides"
            for key in schema.get("required") or []
            if (props.get(key) or {}).get("type") == "string"
        }
        return name, args
    return None


class StubLLM:
    """The stub's answering logic, independent of HTTP (one per server)."""

    def __init__(self) -> None:
        self.ledger = Ledger()

    def answer(self, api: str, request: dict[str, Any]) -> dict[str, Any]:
        """The JSON body answering ``request`` on ``api``; appends a ledger entry."""
        model = str(request.get("model") or "unknown")
        if api == "anthropic.messages":
            system = _text_of(request.get("system"))
            rest: list[Any] = list(request.get("messages") or [])
        elif api == "openai.chat":
            messages = list(request.get("messages") or [])
            system, rest = _split_system(messages, ("system", "developer"))
        else:
            raw_input = request.get("input")
            if isinstance(raw_input, str):
                items: list[Any] = [{"role": "user", "content": raw_input}]
            else:
                items = list(raw_input or [])
            system, rest = _split_system(items, ("system", "developer"))
            system = " ".join(s for s in (str(request.get("instructions") or ""), system) if s)
        system_tokens = TOKENS_PER_WORD * len(system.split())
        hit = bool(system_tokens) and self.ledger.cache_lookup(model, system)
        cache_read = system_tokens if hit else 0
        cache_creation = system_tokens if (not hit and api == "anthropic.messages") else 0
        uncached = TOKENS_PER_WORD * _words(rest) + (0 if hit or cache_creation else system_tokens)
        max_out = (
            request.get("max_tokens")
            or request.get("max_completion_tokens")
            or request.get("max_output_tokens")
        )
        visible = int(max_out) if max_out else DEFAULT_OUTPUT_TOKENS
        reasoning = REASONING_TOKENS if is_reasoning_model(model) else 0
        output = visible + reasoning
        tools = list(request.get("tools") or [])
        tool = _first_tool(api, tools) if not _has_tool_result(api, rest) else None
        response_model = SNAPSHOTS.get(model, model)
        self.ledger.add(
            LedgerEntry(
                api, model, response_model, uncached, cache_read, cache_creation, output,
                reasoning, tool is not None,
            )
        )
        n = len(self.ledger.entries)
        usage = (uncached, cache_read, cache_creation, output, reasoning)
        if api == "anthropic.messages":
            return _anthropic_body(n, response_model, usage, tool)
        if api == "openai.chat":
            return _chat_body(n, response_model, usage, tool)
        return _responses_body(n, response_model, usage, tool)


Tool = tuple[str, dict[str, Any]] | None
"""A tool call the stub answers with: (tool name, arguments), or None for a text answer."""


def _anthropic_body(
    n: int, model: str, usage: tuple[int, int, int, int, int], tool: Tool
) -> dict[str, Any]:
    uncached, cache_read, cache_creation, output, _ = usage
    content: list[dict[str, Any]] = (
        [{"type": "tool_use", "id": f"toolu_{n:04d}", "name": tool[0], "input": tool[1]}]
        if tool
        else [{"type": "text", "text": f"stub answer {n}"}]
    )
    return {
        "id": f"msg_{n:04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": uncached,
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output,
        },
    }


def _chat_body(
    n: int, model: str, usage: tuple[int, int, int, int, int], tool: Tool
) -> dict[str, Any]:
    uncached, cache_read, _, output, reasoning = usage
    prompt = uncached + cache_read
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else f"stub {n}"}
    if tool:
        message["tool_calls"] = [
            {
                "id": f"call_{n:04d}",
                "type": "function",
                "function": {"name": tool[0], "arguments": json.dumps(tool[1])},
            }
        ]
    return {
        "id": f"chatcmpl-{n:04d}",
        "object": "chat.completion",
        "created": CREATED_AT_S,
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": cache_read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


def _responses_body(
    n: int, model: str, usage: tuple[int, int, int, int, int], tool: Tool
) -> dict[str, Any]:
    uncached, cache_read, _, output, reasoning = usage
    prompt = uncached + cache_read
    item: dict[str, Any]
    if tool:
        item = {
            "type": "function_call",
            "id": f"fc_{n:04d}",
            "call_id": f"call_{n:04d}",
            "name": tool[0],
            "arguments": json.dumps(tool[1]),
            "status": "completed",
        }
    else:
        item = {
            "type": "message",
            "id": f"msg_{n:04d}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": f"stub {n}", "annotations": []}],
        }
    return {
        "id": f"resp_{n:04d}",
        "object": "response",
        "created_at": CREATED_AT_S,
        "status": "completed",
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "truncation": "disabled",
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cache_read},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output,
        },
    }


_ROUTES = {
    "/v1/messages": "anthropic.messages",
    "/v1/chat/completions": "openai.chat",
    "/v1/responses": "openai.responses",
}


@contextmanager
def serve_stub(port: int = 0) -> Iterator[tuple[str, StubLLM]]:
    """Run the stub on 127.0.0.1 in a thread; yields (base URL without ``/v1``, the stub)."""
    stub = StubLLM()

    def answer(path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        api = _ROUTES.get(path)
        if api is None:
            return 404, {"error": {"message": f"no route {path}"}}
        if request.get("stream"):
            return 400, {"error": {"message": "the stub does not stream"}}
        return 200, stub.answer(api, request)

    with serve_json(answer, port, "stub-llm") as url:
        yield url, stub
