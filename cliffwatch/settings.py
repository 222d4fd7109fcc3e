"""Every setting cliffwatch reads from the environment, in one place.

Each setting is a module-level constant naming its environment variable, with a reader
function that validates the value and raises :class:`SettingError` (one clear line) on a
bad one. Nothing else in cliffwatch reads ``os.environ`` for its own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB_PATH = Path("data") / "cliffwatch.duckdb"
"""The default store, relative to the working directory (git-ignored in the repo)."""

CLIFFWATCH_DB = "CLIFFWATCH_DB"
"""Path of the DuckDB store used when no ``--db`` is given. Default ``data/cliffwatch.duckdb``."""

CLIFFWATCH_CAPTURE_CONTENT = "CLIFFWATCH_CAPTURE_CONTENT"
"""``true`` records prompt and completion text on spans. Default ``false``: text can hold
secrets, so it is opt-in (as OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is)."""

CLIFFWATCH_RUNAWAY_K = "CLIFFWATCH_RUNAWAY_K"
"""A run costing more than k x its task class's P50 is a ``runaway`` incident. Default 10:
the handbook puts P99 at about 10x P50 in a pipeline without caps, so anything past it is
the tail itself (../shared/seeds, "Production cost data")."""

CLIFFWATCH_LOCK_TIMEOUT_S = "CLIFFWATCH_LOCK_TIMEOUT_S"
"""Seconds a process keeps retrying to open the DuckDB file while another process holds
it, before it spills (writer) or reports the store busy (reader). Default 10."""

CLIFFWATCH_PRICE_OVERRIDES = "CLIFFWATCH_PRICE_OVERRIDES"
"""Path of a JSON file of extra model prices, in litellm's model_cost format
(``{"my-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}``).
Default: ``data/prices.json`` when it exists."""

OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""Standard OTel variable: when set, every span also goes to this OTLP/HTTP endpoint."""

CLIFFWATCH_OTLP_MAX_BODY_BYTES = "CLIFFWATCH_OTLP_MAX_BODY_BYTES"
"""Largest OTLP request body ``cliffwatch serve`` accepts, in bytes, checked before and after
gzip decompression (larger gets HTTP 413). Default 20 MiB (20971520), the OpenTelemetry
Collector's own default for its OTLP/HTTP receiver (confighttp ``max_request_body_size``)."""

DEFAULT_OTLP_MAX_BODY_BYTES = 20 * 1024 * 1024

CLIFFWATCH_RECEIVER_TOKEN = "CLIFFWATCH_RECEIVER_TOKEN"
"""Bearer token ``cliffwatch serve`` requires (``Authorization: Bearer <token>``; else HTTP
401) when no ``--token`` is given. Default: none, no token required. An environment variable
keeps the secret out of the process list."""

CLIFFWATCH_TASK_CLASS_ATTRIBUTES = "CLIFFWATCH_TASK_CLASS_ATTRIBUTES"
"""Comma-separated span (then resource) attribute names that give an ingested span its task
class, tried in order; a run with none of them falls back to ``service.name``. Default
``cliff.task_class,gen_ai.workflow.name,traceloop.workflow.name,gen_ai.agent.name,agent.name``
(``telemetry.otlp_mapping.DEFAULT_TASK_CLASS_ATTRIBUTES``)."""

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """An environment variable holds a value cliffwatch cannot use."""


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store path: ``explicit`` if given, else $CLIFFWATCH_DB, else the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CLIFFWATCH_DB)
    return Path(env) if env else DEFAULT_DB_PATH


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise SettingError(f"{name}={raw!r} is not a boolean (use true or false)")


def _positive_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingError(f"{name}={raw!r} must be greater than 0")
    return value


def capture_content() -> bool:
    """Whether prompt and completion text is recorded on spans ($CLIFFWATCH_CAPTURE_CONTENT)."""
    return _bool(CLIFFWATCH_CAPTURE_CONTENT, False)


def runaway_k() -> float:
    """The runaway multiple k ($CLIFFWATCH_RUNAWAY_K, default 10)."""
    return _positive_float(CLIFFWATCH_RUNAWAY_K, 10.0)


def lock_timeout_s() -> float:
    """Seconds to keep retrying a locked store ($CLIFFWATCH_LOCK_TIMEOUT_S, default 10)."""
    return _positive_float(CLIFFWATCH_LOCK_TIMEOUT_S, 10.0)


def price_overrides_path() -> Path | None:
    """The price override file, or None when there is none."""
    env = os.environ.get(CLIFFWATCH_PRICE_OVERRIDES)
    if env:
        return Path(env)
    default = Path("data") / "prices.json"
    return default if default.exists() else None


def otlp_endpoint() -> str | None:
    """The OTLP/HTTP endpoint spans are also sent to, or None."""
    return os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or None


def otlp_max_body_bytes() -> int:
    """The receiver's body size limit in bytes ($CLIFFWATCH_OTLP_MAX_BODY_BYTES, default 20 MiB)."""
    raw = os.environ.get(CLIFFWATCH_OTLP_MAX_BODY_BYTES)
    if raw is None or raw.strip() == "":
        return DEFAULT_OTLP_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{CLIFFWATCH_OTLP_MAX_BODY_BYTES}={raw!r} is not an integer") from None
    if value <= 0:
        raise SettingError(f"{CLIFFWATCH_OTLP_MAX_BODY_BYTES}={raw!r} must be greater than 0")
    return value


def receiver_token() -> str | None:
    """The token the OTLP receiver requires ($CLIFFWATCH_RECEIVER_TOKEN), or None."""
    return os.environ.get(CLIFFWATCH_RECEIVER_TOKEN) or None


def task_class_attributes() -> tuple[str, ...] | None:
    """Attribute names for an ingested span's task class ($CLIFFWATCH_TASK_CLASS_ATTRIBUTES),
    or None for the default list."""
    raw = os.environ.get(CLIFFWATCH_TASK_CLASS_ATTRIBUTES)
    if raw is None or raw.strip() == "":
        return None
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        raise SettingError(f"{CLIFFWATCH_TASK_CLASS_ATTRIBUTES}={raw!r} names no attribute")
    return names
