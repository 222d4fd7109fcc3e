"""Mutated OTLP/HTTP requests for fuzzing the receiver, and a raw-socket client to send them.

Used by ``tests/test_receiver_fuzz.py`` (a few hundred payloads of each kind) and
``python -m bench fuzz`` (10,000). Everything is drawn from one ``random.Random(seed)``,
so a seed gives the same requests in the same order on every machine.

Kinds (:data:`KINDS`), each a whole HTTP/1.1 request as bytes:

- ``protobuf``: a valid protobuf body with bytes flipped, inserted, cut or spliced;
- ``json``: OTLP/JSON with one value replaced by a poison (lone UTF-16 surrogates in the
  model, task class or agent name, integers past int64 or past Python's int parsing
  limit, NaN and 1e308 costs, negative and 2^62 token counts, huge strings, deep nesting,
  bad ids, wrong types) or its text damaged (cut, invalid UTF-8, encoded surrogates);
- ``gzip``: gzip bodies flipped, cut, concatenated, bombs, and encodings that lie;
- ``http``: the HTTP framing itself: negative, non-hex and enormous chunk sizes,
  truncated chunks, conflicting or non-numeric Content-Length, bad request lines and
  headers, requests cut short.

:func:`send_raw` sends one request on a fresh connection, shuts the sending side and
reads the answer; its status is None when no status line came back (a dropped
connection). Good spans (:func:`good_request`) use :data:`GOOD_TASK_CLASS` so a caller
can count them in the store.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

KINDS = ("protobuf", "json", "gzip", "http")
GOOD_TASK_CLASS = "fuzz-good"
"""Task class of the spans of :func:`good_request` (and of no mutated span's run)."""

PB = "application/x-protobuf"
JSON = "application/json"
_T0 = 1_793_520_000_000_000_000
_HUGE_INT = "__HUGE_INT__"  # replaced by a literal longer than Python's int parsing limit
_NAN = "__NAN__"
_INF = "__INF__"
_DEEP = "__DEEP__"


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """One request to send: its kind, a short label of the mutation, the raw bytes."""

    kind: str
    label: str
    request: bytes


def _hex(rng: random.Random, size: int) -> str:
    return rng.randbytes(size).hex()


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _spans(rng: random.Random, n: int, task_class: str) -> list[dict[str, Any]]:
    trace = _hex(rng, 16)
    root = _hex(rng, 8)
    spans = []
    for i in range(n):
        start = _T0 + rng.randrange(10**12)
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": rng.randrange(1, 5000),
            "gen_ai.usage.output_tokens": rng.randrange(1, 500),
            "cliff.task_class": task_class,
            "gen_ai.agent.name": "fuzz agent",
            "gen_ai.input.messages": '[{"role": "user", "content": "hello"}]',
        }
        if rng.random() < 0.3:
            attrs["gen_ai.usage.cost.amount"] = rng.random() / 100
        span: dict[str, Any] = {
            "traceId": trace,
            "spanId": root if i == 0 else _hex(rng, 8),
            "name": "chat gpt-4o-mini",
            "kind": 3,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + rng.randrange(10**9)),
            "attributes": [_kv(k, v) for k, v in attrs.items()],
            "status": {"code": 0},
        }
        if i:
            span["parentSpanId"] = root
        spans.append(span)
    return spans


def request_json(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` of ``spans`` under one resource."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", "fuzz")]},
                "scopeSpans": [{"scope": {"name": "fuzz"}, "spans": spans}],
            }
        ]
    }


def good_request(rng: random.Random, n_spans: int = 3) -> dict[str, Any]:
    """A valid OTLP/JSON request of ``n_spans`` LLM-call spans of one new trace (task
    class :data:`GOOD_TASK_CLASS`)."""
    return request_json(_spans(rng, n_spans, GOOD_TASK_CLASS))


def to_protobuf(request: dict[str, Any]) -> bytes:
    """The protobuf body of an OTLP/JSON request (hex ids become bytes)."""
    message = copy.deepcopy(request)
    for resource_spans in message["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(message, ExportTraceServiceRequest()).SerializeToString()


def http_request(
    body: bytes,
    content_type: str | None = PB,
    *,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    path: str = "/v1/traces",
) -> bytes:
    """A whole POST request with a correct Content-Length."""
    lines = [f"POST {path} HTTP/1.1", "Host: fuzz", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- mutations -----------------------------------------------------------------------------


def _flip(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    action = rng.choice(("flip", "cut", "insert", "splice", "zero"))
    if not out:
        return "empty", b""
    if action == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif action == "cut":
        del out[rng.randrange(len(out)) :]
    elif action == "insert":
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(1, 16))
    elif action == "splice":
        a, b = sorted(rng.randrange(len(out) + 1) for _ in range(2))
        out[a:a] = out[a:b] * rng.randint(1, 3)
    else:
        a = rng.randrange(len(out))
        out[a : a + rng.randint(1, 8)] = b"\x00" * len(out[a : a + 8])
    return action, bytes(out)


_TEXT_POISONS: tuple[Any, ...] = ("\ud800", "ok\udfffok", "\udc00" * 3, "", None, 7, [], {})
_TOKEN_POISONS: tuple[Any, ...] = (
    _HUGE_INT, _NAN, _INF, 2**62, 2**63, 2**64, -1, -(2**63) - 1, 10**30, 1e15, 1.5,
    "-1", "1e400", "nan", True, None, "",
)
_COST_POISONS: tuple[Any, ...] = (1e308, -1e308, 1e15, 5e-324, _NAN, _INF, -1, 2**64, "1e400")
_TARGETS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "gen_ai.request.model": ("stringValue", _TEXT_POISONS),
    "cliff.task_class": ("stringValue", _TEXT_POISONS),
    "gen_ai.agent.name": ("stringValue", _TEXT_POISONS),
    "gen_ai.usage.input_tokens": ("intValue", _TOKEN_POISONS),
    "gen_ai.usage.output_tokens": ("intValue", _TOKEN_POISONS),
    "gen_ai.usage.cost.amount": ("doubleValue", _COST_POISONS),
}


def _poisons(rng: random.Random) -> list[Any]:
    """Values for anywhere in the tree."""
    return [
        *_TEXT_POISONS, *_TOKEN_POISONS, *_COST_POISONS,
        "x" * rng.choice((40_000, 300_000)),
        "zz" * 16, "0" * 32, "a" * 31, "ff" * 17, "AAAAAAAAAAAAAAAAAAAAAA==",
    ]


def _slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, without recursion."""
    out: list[tuple[Any, Any]] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, value in list(pairs):
            out.append((item, key))
            if isinstance(value, dict | list):
                stack.append(value)
    return out


def _dump(obj: Any) -> bytes:
    text = json.dumps(obj)  # ensure_ascii: a lone surrogate is written as \\udxxx
    text = text.replace(f'"{_HUGE_INT}"', "9" * 5000)
    text = text.replace(f'"{_NAN}"', "NaN").replace(f'"{_INF}"', "Infinity")
    return text.encode()


def _json_case(rng: random.Random) -> FuzzCase:
    request = request_json(_spans(rng, rng.randint(1, 4), "fuzz"))
    spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    poison = rng.choice(_poisons(rng))
    mode = rng.choice(("target", "target", "anywhere", "key", "deep", "text"))
    if mode == "target":
        target = rng.choice(sorted(_TARGETS))
        value_type, pool = _TARGETS[target]
        if rng.random() < 0.3:
            value_type = rng.choice(("stringValue", "intValue", "doubleValue"))
        poison = rng.choice(pool)
        for span in rng.sample(spans, rng.randint(1, len(spans))):
            span["attributes"].append({"key": target, "value": {value_type: poison}})
        label = f"{target}={str(poison)[:20]!r}"
    elif mode == "anywhere":
        container, key = rng.choice(_slots(request))
        container[key] = poison
        label = f"{key}={str(poison)[:20]!r}"
    elif mode == "key":
        rng.choice(spans)["attributes"].append({"key": "k\ud800", "value": {"intValue": 1}})
        label = "surrogate key"
    elif mode == "deep":  # nested in the text: json.dumps itself would hit the limit
        depth = rng.choice((40, 400, 3000))
        rng.choice(spans)["attributes"].append({"key": "deep", "value": _DEEP})
        nested = '{"arrayValue":{"values":[' * depth + '{"intValue":1}' + "]}}" * depth
        body = _dump(request).replace(f'"{_DEEP}"'.encode(), nested.encode())
        return FuzzCase("json", f"nesting {depth}", http_request(body, JSON))
    else:
        text = bytearray(_dump(request))
        at = rng.randrange(len(text))
        damage = rng.choice((b"\xff", b"\xed\xa0\x80", b"\xc3", b"", b"\x00"))
        text[at : at + rng.randint(0, 3)] = damage
        return FuzzCase("json", f"text {damage!r}", http_request(bytes(text), JSON))
    return FuzzCase("json", label, http_request(_dump(request), JSON))


def _protobuf_case(rng: random.Random) -> FuzzCase:
    body = to_protobuf(request_json(_spans(rng, rng.randint(1, 4), "fuzz")))
    action, mutated = _flip(rng, body)
    return FuzzCase("protobuf", action, http_request(mutated, PB))


def _gzip_case(rng: random.Random) -> FuzzCase:
    body = to_protobuf(request_json(_spans(rng, rng.randint(1, 3), "fuzz")))
    action = rng.choice(("flip", "cut", "members", "bomb", "garbage", "lying", "empty"))
    encoding = "gzip"
    if action in ("flip", "cut"):
        data = _flip(rng, gzip.compress(body))[1]
    elif action == "members":
        data = gzip.compress(body) + gzip.compress(b"") + rng.randbytes(rng.randint(0, 4))
    elif action == "bomb":
        data = gzip.compress(b"\x0a" * rng.choice((3, 30)) * 1024 * 1024)
    elif action == "garbage":
        data = b"\x1f\x8b" + rng.randbytes(rng.randint(0, 64))
    elif action == "lying":
        data, encoding = body, rng.choice(("gzip", "deflate", "br", "gzip, gzip", "GZIP", ""))
    else:
        data = b""
    return FuzzCase("gzip", action, http_request(data, PB, headers={"Content-Encoding": encoding}))


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _http_case(rng: random.Random) -> FuzzCase:
    body = to_protobuf(request_json(_spans(rng, 1, "fuzz")))
    head = b"POST /v1/traces HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/x-protobuf\r\n"
    te = head + b"Transfer-Encoding: chunked\r\n\r\n"
    size = b"%x\r\n" % len(body)

    def sized(length: bytes | int, extra: bytes = b"", tail: bytes = b"") -> bytes:
        length = str(length).encode() if isinstance(length, int) else length
        return head + extra + b"Content-Length: " + length + b"\r\n\r\n" + body + tail

    cases: dict[str, Callable[[], bytes]] = {
        "negative chunk": lambda: te + b"-%d\r\n" % rng.randint(1, 99) + body + b"\r\n0\r\n\r\n",
        "non-hex chunk": lambda: te + b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "huge chunk size": lambda: te + b"f" * rng.randint(17, 40) + b"\r\n" + body,
        "short chunk": lambda: te + b"%x\r\n" % (len(body) + 50) + body + b"\r\n0\r\n\r\n",
        "no crlf after chunk": lambda: te + size + body + b"0\r\n\r\n",
        "chunk extension": lambda: te + _chunked([body]).replace(b"\r\n", b";x=\x01\r\n", 1),
        "no last chunk": lambda: te + size + body + b"\r\n",
        "cl and chunked": lambda: head + b"Content-Length: 3\r\n" + te[len(head) :] + body,
        "two lengths": lambda: sized(len(body), b"Content-Length: 1\r\n"),
        "negative length": lambda: sized(b"-1"),
        "text length": lambda: sized(b"abc"),
        "huge length": lambda: sized(b"9" * rng.choice((30, 5000))),
        "short body": lambda: sized(len(body) + 9),
        "bad version": lambda: b"POST /v1/traces HTTP/9.9\r\nHost: f\r\n\r\n",
        "garbage line": lambda: rng.randbytes(rng.randint(1, 200)) + b"\r\n\r\n",
        "no colon": lambda: head + b"Broken header\r\nContent-Length: 0\r\n\r\n",
        "nul in header": lambda: head + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        "folded header": lambda: head + b"X-A: a\r\n  folded\r\nContent-Length: 0\r\n\r\n",
        "huge header": lambda: head + b"X-A: " + b"a" * 40_000 + b"\r\n\r\n",
        "bare lf": lambda: sized(len(body)).replace(b"\r\n", b"\n"),
        "cut headers": lambda: head[: rng.randrange(1, len(head))],
        "pipelined garbage": lambda: sized(len(body), tail=b"\x16\x03\x01"),
        "expect continue": lambda: sized(len(body), b"Expect: 100-continue\r\n"),
    }
    label = rng.choice(sorted(cases))
    return FuzzCase("http", label, cases[label]())


_MAKERS: dict[str, Callable[[random.Random], FuzzCase]] = {
    "protobuf": _protobuf_case,
    "json": _json_case,
    "gzip": _gzip_case,
    "http": _http_case,
}


def fuzz_cases(seed: int, per_kind: int, kinds: tuple[str, ...] = KINDS) -> Iterator[FuzzCase]:
    """``per_kind`` cases of each kind, interleaved, all drawn from ``Random(seed)``."""
    rng = random.Random(seed)
    for _ in range(per_kind):
        for kind in kinds:
            yield _MAKERS[kind](rng)


def send_raw(
    host: str, port: int, request: bytes, *, token: str | None = None, timeout_s: float = 60.0
) -> int | None:
    """Send one raw request on a new connection, half-close, read the answer.

    ``token`` is added as an ``Authorization`` header right after the request line.
    Returns the status of the first response, or None when the connection closed without
    a status line (or timed out).
    """
    if token:
        line_end = request.find(b"\r\n")
        if line_end > 0:
            auth = b"\r\nAuthorization: Bearer " + token.encode()
            request = request[:line_end] + auth + request[line_end:]
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before reading it all
            while True:
                status = _final_status(answer)
                if status is not None:
                    return status
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                answer += chunk
    except OSError:
        return _final_status(answer)


def _final_status(answer: bytes) -> int | None:
    """The status of the first non-1xx response in ``answer``, or None (not there yet)."""
    while b"\r\n" in answer:
        line, _, rest = answer.partition(b"\r\n")
        parts = line.split(b" ")
        if not (len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit()):
            return None
        status = int(parts[1])
        if status >= 200:
            return status
        if b"\r\n\r\n" not in answer:
            return None
        answer = answer.split(b"\r\n\r\n", 1)[1]  # past the 1xx: the final answer follows
    return None
