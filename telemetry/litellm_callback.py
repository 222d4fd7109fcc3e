"""A litellm callback that records every call into a cliffwatch store, in one line::

    import litellm
    from cliffwatch.telemetry.litellm_callback import CliffwatchLogger

    litellm.callbacks = [CliffwatchLogger("data/cliffwatch.duckdb")]

    litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[...],
        metadata={"cliff_task_class": "support", "cliff_run_id": ticket_id},
    )

Each call becomes one span (request and response model, provider, the response's whole
usage: tokens with their cache and reasoning split) built as an
:class:`~telemetry.otlp_decode.OtlpSpan` and mapped by the same
:func:`telemetry.otlp_mapping.map_span` as OTLP spans, so a call costs the same whichever
way it reaches the store: litellm's cost of its tokens (source ``computed``), or the cost
the provider put in its response (``usage.cost``, source ``provider``) with the computed
one beside it. litellm's own ``response_cost`` is kept on the span as
``litellm.response_cost`` for reference.

Call metadata (``metadata={...}``) read by the logger:

- ``cliff_task_class``: the task class of the call's run (else the run falls back to the
  logger's ``service_name``).
- ``cliff_run_id``: calls sharing it form one run (one trace). Without it each call is a
  run of its own. A run's root span is written when :meth:`CliffwatchLogger.end_run` is
  called, when it has had no call for ``run_idle_s`` seconds, or at :meth:`flush` /
  :meth:`close` (and at interpreter exit); until then its calls are stored but the run is
  not listed. Ids are derived from the run id and litellm's call id, so logging the same
  call twice adds nothing.
- ``cliff_role``: ``plan``, ``worker``, ``synthesis`` or ``critic`` when the app knows
  the call's place in an orchestrator-worker run (default ``call``).

Writes go through a :class:`~telemetry.span_writer.SpanWriter` thread (about one write per
``linger_s`` seconds), so neither litellm's threads nor an event loop wait on DuckDB.
A callback never raises into litellm: a failure is logged and the call is not recorded.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cliffwatch import settings
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_span
from cliffwatch.telemetry.pricing import import_litellm, usage_of_litellm
from cliffwatch.telemetry.span_writer import SpanWriter

CustomLogger = import_litellm().integrations.custom_logger.CustomLogger

logger = logging.getLogger(__name__)

META_TASK_CLASS = "cliff_task_class"
META_RUN_ID = "cliff_run_id"
META_ROLE = "cliff_role"

SOURCE = "litellm"
"""The ``source`` column of everything this logger writes."""

DEFAULT_RUN_IDLE_S = 30.0
"""A run with no call for this long is taken as finished and its root span written."""

MAX_STATUS_MESSAGE_CHARS = 500

_HEX32 = re.compile(r"[0-9a-f]{32}")
_SPAN_KIND_CLIENT = 3

_OPERATIONS = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
}
"""litellm ``call_type`` -> ``gen_ai.operation.name``."""


def _hex(label: str, chars: int) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:chars]


def run_trace_id(run_id: str) -> str:
    """The trace id of a run: the run id itself when it is 32 hex chars, else derived."""
    low = run_id.strip().lower()
    return low if _HEX32.fullmatch(low) and low != "0" * 32 else _hex(f"cliff-run/{run_id}", 32)


def run_root_span_id(trace_id: str) -> str:
    """The span id of a run's root span (derived, so every process agrees on it)."""
    return _hex(f"cliff-run-root/{trace_id}", 16)


def _metadata(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    merged: dict[str, Any] = {}
    for key in ("litellm_metadata", "metadata"):
        value = params.get(key)
        if isinstance(value, Mapping):
            merged.update(value)
    return merged


def _ns(epoch_s: Any, fallback: Any) -> int:
    if isinstance(epoch_s, int | float) and epoch_s > 0:
        return int(epoch_s * 1e9)
    if isinstance(fallback, datetime):
        return int(fallback.timestamp() * 1e9)
    return time.time_ns()


def call_span(
    kwargs: Mapping[str, Any],
    response_obj: Any,
    start_time: Any,
    end_time: Any,
    *,
    failed: bool,
    service_name: str = SOURCE,
) -> OtlpSpan:
    """The span of one litellm call, from what litellm hands a CustomLogger (pure).

    Args:
        kwargs: the callback's ``kwargs`` (``standard_logging_object``, ``litellm_params``).
        response_obj: the response (its ``model`` is the response model), or None.
        start_time, end_time: the callback's datetimes (used when the standard logging
            object lacks epoch times).
        failed: whether this is a failure event.
        service_name: the resource ``service.name``.

    Returns:
        An :class:`OtlpSpan` with GenAI attributes (tokens from the response's usage, else
        the standard logging object's counts; ``gen_ai.usage.cost.amount`` only when the
        provider reported a cost) and ``cliff.*`` ones from the call's metadata.
    """
    slo = kwargs.get("standard_logging_object") or {}
    meta = _metadata(kwargs)
    call_id = str(
        slo.get("litellm_call_id") or kwargs.get("litellm_call_id") or slo.get("id") or uuid.uuid4()
    )
    run_id = meta.get(META_RUN_ID)
    if run_id not in (None, ""):
        trace_id = run_trace_id(str(run_id))
        parent: str | None = run_root_span_id(trace_id)
    else:
        trace_id = _hex(f"litellm-call/{call_id}", 32)
        parent = None
    call_type = str(slo.get("call_type") or kwargs.get("call_type") or "completion")
    operation = _OPERATIONS.get(call_type, call_type)
    request_model = slo.get("model") or kwargs.get("model")
    response_model = getattr(response_obj, "model", None) if not failed else None
    usage = getattr(response_obj, "usage", None) if not failed else None
    if usage is None:
        usage = (slo.get("metadata") or {}).get("usage_object") if not failed else None
    tokens, provider_cost_usd = usage_of_litellm(usage)
    attrs: dict[str, Any] = {
        cv.GEN_AI_OPERATION_NAME: operation,
        cv.GEN_AI_PROVIDER_NAME: slo.get("custom_llm_provider"),
        cv.GEN_AI_REQUEST_MODEL: request_model,
        cv.GEN_AI_RESPONSE_MODEL: response_model,
        cv.GEN_AI_USAGE_INPUT_TOKENS: (
            tokens.input_tokens if tokens.input_tokens is not None else slo.get("prompt_tokens")
        ),
        cv.GEN_AI_USAGE_OUTPUT_TOKENS: (
            tokens.output_tokens
            if tokens.output_tokens is not None
            else slo.get("completion_tokens")
        ),
        cv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: tokens.cache_read_tokens,
        cv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: tokens.cache_creation_tokens,
        cv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: tokens.reasoning_tokens,
        cv.GEN_AI_USAGE_COST_AMOUNT: provider_cost_usd,
        cv.GEN_AI_USAGE_COST_CURRENCY: "USD" if provider_cost_usd is not None else None,
        cv.GEN_AI_USAGE_COST_SOURCE: "provider" if provider_cost_usd is not None else None,
        "litellm.response_cost": slo.get("response_cost"),
        "litellm.call_id": call_id,
        cv.CLIFF_TASK_CLASS: meta.get(META_TASK_CLASS),
    }
    role = meta.get(META_ROLE)
    if role in {r.value for r in cv.LLM_CALL_ROLES}:
        attrs[cv.CLIFF_ROLE] = role
    status_message = None
    if failed:
        exception = kwargs.get("exception")
        attrs[cv.ERROR_TYPE] = type(exception).__name__ if exception is not None else "error"
        status_message = str(slo.get("error_str") or exception or "call failed")
        status_message = status_message[:MAX_STATUS_MESSAGE_CHARS]
    return OtlpSpan(
        trace_id=trace_id,
        span_id=_hex(f"litellm-call/{call_id}", 16),
        parent_span_id=parent,
        name=f"{operation} {request_model}" if request_model else operation,
        kind=_SPAN_KIND_CLIENT,
        start_time_unix_nano=_ns(slo.get("startTime"), start_time),
        end_time_unix_nano=_ns(slo.get("endTime"), end_time),
        status_code="error" if failed else "unset",
        status_message=status_message,
        attributes={k: v for k, v in attrs.items() if v is not None},
        resource_attributes={"service.name": service_name},
    )


@dataclass(slots=True)
class _OpenRun:
    trace_id: str
    task_class: str | None
    start_ns: int
    end_ns: int
    last_seen_s: float


class CliffwatchLogger(CustomLogger):  # type: ignore[misc, valid-type]
    """A litellm ``CustomLogger`` that writes every call into a cliffwatch store.

    Args:
        db_path: the store; default :func:`cliffwatch.settings.db_path` ($CLIFFWATCH_DB,
            else ``data/cliffwatch.duckdb``).
        service_name: the resource ``service.name`` of the spans (a run's task class
            when the call's metadata names none).
        run_idle_s: seconds without a call after which a run counts as finished.
        linger_s: seconds the writer collects calls before one write.
        mapping: task class rule and price overrides (``source`` is always ``litellm``).
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        service_name: str = SOURCE,
        run_idle_s: float = DEFAULT_RUN_IDLE_S,
        linger_s: float = 1.0,
        mapping: MappingConfig | None = None,
    ) -> None:
        super().__init__()
        self.db_path = Path(settings.db_path(db_path))
        self.service_name = service_name
        self.run_idle_s = run_idle_s
        base = mapping or MappingConfig()
        self.mapping = MappingConfig(base.task_class_attributes, SOURCE, base.overrides_path)
        self._writer = SpanWriter(self.db_path, linger_s=linger_s)
        # litellm keeps one logger per "key" built from the public str/bool/int attributes
        # (LoggingCallbackManager._get_custom_logger_key): the store path makes loggers of
        # different stores distinct; counters stay private so the key never changes.
        self.store = str(self.db_path)
        self._calls_recorded = 0
        self._runs: dict[str, _OpenRun] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_idle_runs, name="cliffwatch-litellm-runs", daemon=True
        )
        self._reaper.start()
        atexit.register(self.close)

    # --- litellm hooks (names and parameters are litellm's contract) -------------------

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    # --- public -------------------------------------------------------------------------

    @property
    def calls_recorded(self) -> int:
        """Calls handed to the writer so far.

        litellm calls its hooks after the call has returned, from its own threads or
        tasks: wait on this before :meth:`end_run` when the last call must be part of the
        run's first materialisation (a later call updates the run anyway).
        """
        return self._calls_recorded

    def end_run(self, run_id: str, *, status: cv.RunStatus | str | None = None) -> None:
        """Mark a run finished now: its root span is written with the calls seen so far.

        Args:
            run_id: the ``cliff_run_id`` the calls carried.
            status: the run's ``cliff.status`` (ok, failed, ...); default ok.
        """
        trace_id = run_trace_id(str(run_id))
        with self._lock:
            run = self._runs.pop(trace_id, None)
        if run is not None:
            self._write_root(run, status)

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Finish every open run and wait until all calls so far are stored (or spilled)."""
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            self._write_root(run, None)
        return self._writer.flush(timeout_s)

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Leave litellm's callback lists, flush and stop the writer; idempotent.

        Called at interpreter exit too.
        """
        if self._closed.is_set():
            return
        import_litellm().logging_callback_manager.remove_callback_from_all_lists(self)
        self.flush(timeout_s)
        self._closed.set()
        self._writer.close(timeout_s)

    # --- internals ----------------------------------------------------------------------

    def _record(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool
    ) -> None:
        if self._closed.is_set():
            logger.warning("cliffwatch: a litellm call after close() was not recorded")
            return
        try:
            span = call_span(
                kwargs,
                response_obj,
                start_time,
                end_time,
                failed=failed,
                service_name=self.service_name,
            )
            record = map_span(span, self.mapping)
            if span.parent_span_id is not None:
                self._track_run(span, record.task_class)
            self._writer.submit([record])
            with self._lock:
                self._calls_recorded += 1
        except Exception:  # never raise into litellm; the call itself succeeded or not
            logger.exception("cliffwatch: a litellm call was not recorded")

    def _track_run(self, span: OtlpSpan, task_class: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(span.trace_id)
            if run is None:
                self._runs[span.trace_id] = _OpenRun(
                    span.trace_id,
                    task_class,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    now,
                )
                return
            run.start_ns = min(run.start_ns, span.start_time_unix_nano)
            run.end_ns = max(run.end_ns, span.end_time_unix_nano)
            run.task_class = run.task_class or task_class
            run.last_seen_s = now

    def _write_root(self, run: _OpenRun, status: cv.RunStatus | str | None) -> None:
        attrs: dict[str, Any] = {cv.CLIFF_ROLE: Role.RUN.value}
        if run.task_class:
            attrs[cv.CLIFF_TASK_CLASS] = run.task_class
        if status is not None:
            attrs[cv.CLIFF_STATUS] = str(status)
        root = OtlpSpan(
            trace_id=run.trace_id,
            span_id=run_root_span_id(run.trace_id),
            parent_span_id=None,
            name="run",
            kind=1,
            start_time_unix_nano=run.start_ns,
            end_time_unix_nano=run.end_ns,
            status_code="unset",
            status_message=None,
            attributes=attrs,
            resource_attributes={"service.name": self.service_name},
        )
        try:
            self._writer.submit([map_span(root, self.mapping)])
        except Exception:
            logger.exception("cliffwatch: the root span of run %s was not recorded", run.trace_id)

    def _reap_idle_runs(self) -> None:
        interval = max(0.05, min(1.0, self.run_idle_s / 4))
        while not self._closed.wait(interval):
            cutoff = time.monotonic() - self.run_idle_s
            with self._lock:
                idle = [r for r in self._runs.values() if r.last_seen_s <= cutoff]
                for run in idle:
                    del self._runs[run.trace_id]
            for run in idle:
                self._write_root(run, None)
