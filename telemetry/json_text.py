"""The store's JSON text of span attributes, resources and events, made fast.

The text form is the standard library's ``json`` with ``ensure_ascii=False``, separators
``(",", ":")`` and ``default=str`` (:data:`JSON_ENCODER`): the ``attributes``,
``resource_attributes`` and ``events`` columns hold it, for every span of every producer.
Encoding it was the largest single cost of mapping an OTLP span, so :func:`json_text` makes
the same text with orjson (https://github.com/ijl/orjson, a Rust encoder about 8x faster)
wherever orjson's output is known to equal it, and falls back to the standard encoder
everywhere else:

- orjson writes floats below 1e-4 in other forms (``0.00001`` or ``1e-7`` where ``json``
  writes ``1e-05`` and ``1e-07``; checked over 400k random doubles: those exponents are the
  only differences), and NaN or infinity as ``null`` (``json``: ``NaN``). A text that holds
  ``0.0000``, ``e-`` and a one-digit exponent, or ``null`` anywhere (inside strings too) is
  made again by ``json``.
- What orjson refuses (ints beyond 64 bits, lone surrogates, non-string keys, nesting past
  254 levels) and what ``json`` would pass to ``default=str`` (bytes, dates, dataclasses,
  ``str``/``int``/``dict``/``list`` subclasses, sent through by the ``OPT_PASSTHROUGH_*``
  options) raise in orjson and are made by ``json``.
- A dict whose values are all exactly ``str``, ``int``, ``bool`` or None (most spans'
  attributes) holds no float, so its text is orjson's without the three searches (which
  cost more than orjson's encoding on a span's ~300 characters; ints past 64 bits and lone
  surrogates still raise in orjson and go to ``json``).

Values a plain ``enum.Enum`` member (neither ``str`` nor ``int``) would differ (orjson
writes its value, ``json`` its ``str``); no decoder or SDK span carries one: decoded OTLP
values are str, int, float, bool, None, list and dict, and the OTel SDK keeps only
primitives and their sequences. tests/test_json_text.py holds the two equal.
"""

from __future__ import annotations

import json
import re
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import orjson

JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""The store's JSON text form (one encoder, not one per value as ``json.dumps`` with
options builds; it keeps no state between calls)."""

_C_JSON = (
    c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
    if c_make_encoder is not None
    else None
)
"""The C encoder :data:`JSON_ENCODER` builds on every call, built once: the same text,
without the circular-reference check (span values are trees) so it keeps no state and
threads can share it. None where CPython's ``_json`` accelerator is missing."""

_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_SHORT_EXPONENT = re.compile(r"e-\d(?!\d)")
_NO_FLOAT_TYPES = frozenset({str, int, bool, type(None)})
"""Exact value types whose orjson text always equals ``json``'s (or orjson refuses them)."""


def standard_json_text(value: Any) -> str:
    """``value`` as :data:`JSON_ENCODER` writes it."""
    if _C_JSON is None:
        return JSON_ENCODER.encode(value)
    return "".join(_C_JSON(value, 0))


def json_text(value: Any) -> str:
    """``value`` as :data:`JSON_ENCODER` writes it (the same text), through orjson where
    that is known to give it (module docstring)."""
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return standard_json_text(value)
    if type(value) is dict and _NO_FLOAT_TYPES.issuperset(map(type, value.values())):
        return text  # no float anywhere: nothing orjson writes otherwise
    if "0.0000" in text or "null" in text or ("e-" in text and _SHORT_EXPONENT.search(text)):
        return standard_json_text(value)
    return text
