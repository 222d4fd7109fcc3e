"""A small OpenAI-compatible server on loopback, for driving real instrumented clients.

``POST /v1/chat/completions`` answers every request with deterministic content and usage
computed from the request alone (:func:`usage_for`), so a test knows the exact token counts
a producer must report without asking the server. Nothing else is served (404). Used by
``tests/test_producers.py`` and its producer subprocesses; runnable on its own for manual
checks: ``python tests/fake_openai.py 8099``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_COMPLETION_TOKENS = 25
"""Completion tokens reported when the request sets no max_tokens."""

CREATED_AT_S = 1_767_225_600
"""A fixed ``created`` timestamp (2026-01-01T00:00:00Z) so responses are byte-identical."""


def usage_for(messages: list[dict[str, Any]], max_tokens: int | None) -> tuple[int, int]:
    """The (prompt_tokens, completion_tokens) the server reports for a request.

    Prompt tokens are 7 + the number of whitespace-separated words across all message
    contents (a stand-in for a tokenizer that is easy to compute by hand); completion tokens
    are ``max_tokens`` when given, else :data:`DEFAULT_COMPLETION_TOKENS`.
    """
    words = sum(len(str(m.get("content") or "").split()) for m in messages)
    completion = int(max_tokens) if max_tokens else DEFAULT_COMPLETION_TOKENS
    return 7 + words, completion


def completion_body(request: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion JSON object answering ``request`` (an OpenAI chat request body)."""
    messages = request.get("messages") or []
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    prompt_tokens, completion_tokens = usage_for(messages, max_tokens)
    model = str(request.get("model", "gpt-4o-mini"))
    return {
        "id": f"chatcmpl-fake-{prompt_tokens}-{completion_tokens}",
        "object": "chat.completion",
        "created": CREATED_AT_S,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"fake answer ({completion_tokens})"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


JsonAnswer = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]
"""(request path, JSON request body) -> (HTTP status, JSON response body)."""


def _json_handler(answer: JsonAnswer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                request = json.loads(raw)
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            self._send(*answer(self.path.split("?")[0].rstrip("/"), request))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
            pass

    return Handler


@contextmanager
def serve_json(answer: JsonAnswer, port: int = 0, name: str = "fake-api") -> Iterator[str]:
    """Serve JSON POSTs on 127.0.0.1 in a thread with ``answer``; yields ``http://host:port``.

    Args:
        answer: builds each response from the request's path and JSON body (a body that is
            not JSON is answered 400 before it is called).
        port: the port to bind, 0 for a free one.
        name: the server thread's name.
    """
    server = ThreadingHTTPServer(("127.0.0.1", port), _json_handler(answer))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _answer(path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if path not in ("/v1/chat/completions", "/chat/completions"):
        return 404, {"error": {"message": f"no route {path}"}}
    return 200, completion_body(request)


@contextmanager
def serve_fake_openai(port: int = 0) -> Iterator[str]:
    """Run the fake server on 127.0.0.1 in a thread; yields its base URL (``.../v1``).

    Args:
        port: the port to bind, 0 for a free one.
    """
    with serve_json(_answer, port, "fake-openai") as url:
        yield f"{url}/v1"


if __name__ == "__main__":
    with serve_fake_openai(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as url:
        print(url, flush=True)
        while True:
            time.sleep(3600)
