"""fast_frozen_init's __init__ and positional_builder against the dataclass they stand for."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from cliffwatch.telemetry.frozen_init import fast_frozen_init, positional_builder
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    """The same fields as :class:`_Fast`, with the dataclass's own ``__init__``."""

    a: int
    b: str | None
    c: float | None = None
    d: Any = "d"


@fast_frozen_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Fast:
    a: int
    b: str | None
    c: float | None = None
    d: Any = "d"


def _values(rng: random.Random, n: int, hashable: bool = False) -> list[Any]:
    choices = (None, 0, -1, 2**70, 1.5, "", "x", True, (1, "t"))
    if not hashable:
        choices += ([1], {"k": 2})
    return [rng.choice(choices) for _ in range(n)]


@pytest.mark.parametrize("given", [2, 3, 4])
def test_builder_equals_the_constructor_and_the_plain_dataclass(given: int) -> None:
    rng = random.Random(given)
    build = positional_builder(_Fast)
    for _ in range(200):
        values = _values(rng, given, hashable=True)
        built, made = build(*values), _Fast(*values)
        assert type(built) is _Fast
        assert built == made and hash(built) == hash(made)
        assert dataclasses.astuple(built) == dataclasses.astuple(_Plain(*values))
        assert repr(built) == repr(made)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.a = 1  # type: ignore[misc]
        assert dataclasses.replace(built, a=5) == _Fast(5, *values[1:])


def test_builders_of_the_hot_records_equal_their_constructors() -> None:
    rng = random.Random(7)
    record_fields = len(SPAN_RECORD_FIELDS)
    span_fields = len(dataclasses.fields(OtlpSpan))
    for cls, n in ((SpanRecord, record_fields), (OtlpSpan, span_fields)):
        build = positional_builder(cls)
        for _ in range(100):
            values = _values(rng, n)
            built = build(*values)
            assert type(built) is cls
            assert built == cls(*values)
            assert [getattr(built, f.name) for f in dataclasses.fields(cls)] == values


def test_builder_of_an_unprepared_class_and_a_class_it_refuses() -> None:
    with pytest.raises(KeyError):
        positional_builder(_Plain)

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    with pytest.raises(TypeError):
        fast_frozen_init(NotFrozen)
