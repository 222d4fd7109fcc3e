"""json_text (orjson where it gives the same text) against the standard encoder."""

from __future__ import annotations

import datetime as dt
import random
import struct
import uuid
from typing import Any

import pytest

from cliffwatch.telemetry.conventions import Role
from cliffwatch.telemetry.json_text import JSON_ENCODER, json_text, standard_json_text


def _random_float(rng: random.Random) -> float:
    if rng.random() < 0.5:
        return struct.unpack("d", rng.randbytes(8))[0]  # any double, NaN and inf included
    return rng.random() * 10 ** rng.randint(-12, 20) * rng.choice((1, -1))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return _random_float(rng)
    if kind == 1:
        return rng.choice((0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70), rng.randrange(10**6)))
    if kind == 2:
        return "".join(chr(rng.choice((rng.randrange(0x20), rng.randrange(0x20, 0x3000),
                                        0xD800, 0x2028, 0x7F, 0x1F600)))
                       for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice((None, True, False, "", "null", "0.00001", "claude-3-5"))
    if kind == 4:
        return rng.choice((b"\x00\xff", Role.WORKER, dt.datetime(2026, 1, 2, 3, 4, 5),
                           uuid.UUID(int=rng.getrandbits(128)), (1, "a")))
    if kind == 5:
        return f"e-{rng.randrange(10)}x"
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}.{rng.randrange(99)}": _random_value(rng, depth + 1)
            for i in range(rng.randrange(5))}


@pytest.mark.parametrize("seed", range(4))
def test_json_text_equals_the_standard_encoder(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5_000):
        value = {"a": _random_value(rng), "b": [_random_value(rng), _random_value(rng)]}
        assert json_text(value) == JSON_ENCODER.encode(value), value


@pytest.mark.parametrize("value", [
    1e-05, 3.865571047614699e-05, 5.705446293870352e-07, 1e-09, 1e-10, 1e16, 1e15,
    float("nan"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 2**64, "\ud800",
    {1: "non-str key"}, {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    "x" * 100_000,
])
def test_json_text_edge_values(value: Any) -> None:
    assert json_text(value) == JSON_ENCODER.encode(value)
    assert standard_json_text(value) == JSON_ENCODER.encode(value)


def test_json_text_past_orjson_nesting_limit() -> None:
    value: Any = 1
    for _ in range(300):
        value = [value]
    assert json_text(value) == JSON_ENCODER.encode(value)


def test_json_text_of_a_typical_span() -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.temperature": 0.2,
             "gen_ai.usage.input_tokens": 1234, "gen_ai.response.finish_reasons": ["stop"],
             "llm.is_streaming": False, "text": 'quote " back \\ newline \n é'}
    assert json_text(attrs) == JSON_ENCODER.encode(attrs)


@pytest.mark.parametrize("seed", range(2))
def test_json_text_of_a_dict_without_floats_skips_nothing_it_needs(seed: int) -> None:
    # The short cut for dicts of exact str/int/bool/None values (no search of the text)
    # against the standard encoder, with the texts the searches look for inside strings,
    # ints past orjson's 64 bits, lone surrogates, and subclasses that must not take it.
    rng = random.Random(seed)
    plain = ("null", "0.00001", "1e-05", "e-5", "NaN", "\ud800", "é \n \"", "", None, True,
             False, 0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70), Role.WORKER, 1e-05)
    for _ in range(5_000):
        value = {f"k{i}": rng.choice(plain) for i in range(rng.randrange(6))}
        assert json_text(value) == JSON_ENCODER.encode(value), value
