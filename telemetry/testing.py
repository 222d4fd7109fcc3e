"""Builders of realistic run traces with exactly known costs, for tests and benchmarks.

A cliffwatch run is one trace: a root span (role ``run``) with a ``plan`` call, one
``worker`` call per dispatched sub-task (running in parallel after the plan) and a
``synthesis`` call. :func:`make_run_records` builds that trace as
:class:`~telemetry.records.SpanRecord` objects shaped exactly like the orchestrator's
(same roles, ``gen_ai.*`` and ``cliff.*`` attributes, run attributes on the root span),
from the per-call costs you give, so a store built with::

    from cliffwatch.telemetry.write_pipeline import write_spans
    from cliffwatch.telemetry.testing import make_run_records, ns_at

    records = make_run_records(
        task_class="research",
        worker_cost_usds=[0.01, 0.02, 0.03],
        plan_cost_usd=0.005,
        synthesis_cost_usd=0.001,
        started_at_ns=ns_at("2026-11-01T09:00:00"),
    )
    write_spans(tmp_path / "t.duckdb", records)

holds a ``runs`` row whose ``cost_usd`` is exactly ``0.005 + 0.01 + 0.02 + 0.03 + 0.001``
(the sum of its leaf LLM calls; a call given a cost of ``None`` is *unpriced*: it adds
nothing to the cost and is counted in ``unpriced_calls``).

:func:`make_runs_costing` builds many runs with given *total* costs in one go (for
percentile tests: P50/P95/P99 over the runs then equal numpy's over the list you gave).

Ids are deterministic: pass ``run_id`` (32 hex chars) or ``seed`` to get the same
trace every time; span ids derive from the run id. Token counts are illustrative (they
are derived from the cost at this module's fixed prices, rounded); ``cost_usd`` on each
call span is exactly the figure you passed.

:func:`hold_store_lock` makes a store busy the way another process does (a real second
process holding the DuckDB file), for tests of lock retry, ``StoreBusyError`` and spills.

This module imports nothing heavy (no duckdb, no litellm); only :func:`hold_store_lock`
touches a store, from a child process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Breach, CostSource, Role, RunStatus
from cliffwatch.telemetry.records import SpanRecord

NS_PER_MS = 1_000_000

DEFAULT_STARTED_AT_NS = 1_793_520_000 * 1_000_000_000
"""2026-11-01T08:00:00Z, a fixed default so traces built without a time are reproducible."""

# Illustrative prices (USD per token) used only to derive plausible token counts from the
# costs given; they are gpt-4o-mini-like and need not match litellm's map.
_PRICE_INPUT_USD_PER_TOKEN = 0.15e-6
_PRICE_OUTPUT_USD_PER_TOKEN = 0.60e-6
_INPUT_TOKENS = 400


def ns_at(iso: str) -> int:
    """Nanoseconds since the Unix epoch of an ISO-8601 time; naive times are UTC.

    >>> ns_at("2026-11-01T08:00:00")
    1793520000000000000
    """
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: float seconds would lose nanosecond precision.
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _span_id(run_id: str, label: str) -> str:
    return hashlib.sha256(f"{run_id}/{label}".encode()).hexdigest()[:16]


def _tokens_for(cost_usd: float | None) -> tuple[int, int]:
    if cost_usd is None:
        return _INPUT_TOKENS, 200
    rest = cost_usd - _INPUT_TOKENS * _PRICE_INPUT_USD_PER_TOKEN
    return _INPUT_TOKENS, max(0, round(rest / _PRICE_OUTPUT_USD_PER_TOKEN))


def llm_call_record(
    *,
    run_id: str,
    span_id: str,
    parent_span_id: str | None,
    role: Role | str,
    name: str,
    model: str,
    cost_usd: float | None,
    start_ns: int,
    duration_ms: float,
    task_class: str | None,
    status_code: str = "ok",
    provider: str = "sim",
    service_name: str = "cliffwatch",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    extra_attributes: dict[str, Any] | None = None,
) -> SpanRecord:
    """One LLM call span as the orchestrator records it.

    Args:
        run_id: the trace id (32 hex chars).
        span_id: this span's id (16 hex chars).
        parent_span_id: the parent's span id (the run root for plan/worker/synthesis).
        role: ``plan``, ``worker``, ``synthesis``, ``critic`` or ``call``.
        name: span name, e.g. ``"worker 2"``.
        model: the model, recorded as both request and response model.
        cost_usd: the call's cost in USD, exactly; None makes the call unpriced
            (``cost_source='unpriced'``, NULL cost).
        start_ns: start, ns since the epoch.
        duration_ms: duration in milliseconds.
        task_class: the run's task class.
        status_code: ``"ok"`` | ``"error"`` | ``"unset"``.
        provider: ``gen_ai.provider.name``.
        service_name: resource ``service.name``.
        input_tokens, output_tokens: token counts; default derived from ``cost_usd``.
        extra_attributes: more span attributes (merged last).

    Returns:
        The span record (``is_llm_call`` True).
    """
    tin, tout = _tokens_for(cost_usd)
    tin = tin if input_tokens is None else input_tokens
    tout = tout if output_tokens is None else output_tokens
    source = CostSource.UNPRICED if cost_usd is None else CostSource.COMPUTED
    price_in = None if cost_usd is None else _PRICE_INPUT_USD_PER_TOKEN
    price_out = None if cost_usd is None else _PRICE_OUTPUT_USD_PER_TOKEN
    attrs: dict[str, Any] = {
        cv.CLIFF_ROLE: str(role),
        cv.GEN_AI_OPERATION_NAME: cv.OPERATION_CHAT,
        cv.GEN_AI_PROVIDER_NAME: provider,
        cv.GEN_AI_REQUEST_MODEL: model,
        cv.GEN_AI_RESPONSE_MODEL: model,
        cv.GEN_AI_USAGE_INPUT_TOKENS: tin,
        cv.GEN_AI_USAGE_OUTPUT_TOKENS: tout,
        cv.CLIFF_COST_SOURCE: str(source),
    }
    if task_class is not None:
        attrs[cv.CLIFF_TASK_CLASS] = task_class
    if cost_usd is not None:
        attrs[cv.CLIFF_COST_USD] = cost_usd
        attrs[cv.CLIFF_PRICE_INPUT] = price_in
        attrs[cv.CLIFF_PRICE_OUTPUT] = price_out
    attrs.update(extra_attributes or {})
    return SpanRecord(
        trace_id=run_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + round(duration_ms * NS_PER_MS),
        status_code=status_code,
        status_message="simulated failure" if status_code == "error" else None,
        role=str(role),
        task_class=task_class,
        is_llm_call=True,
        operation=cv.OPERATION_CHAT,
        provider=provider,
        request_model=model,
        response_model=model,
        input_tokens=tin,
        output_tokens=tout,
        cost_usd=cost_usd,
        cost_source=str(source),
        price_input_usd_per_token=price_in,
        price_output_usd_per_token=price_out,
        service_name=service_name,
        source="cliffwatch",
        attributes=json.dumps(attrs),
        resource_attributes=json.dumps({"service.name": service_name}),
        input_tokens_reported=tin,
        computed_cost_usd=cost_usd,
        cache_detail_missing=False,
    )


def make_run_records(
    *,
    task_class: str = "research",
    worker_cost_usds: Sequence[float | None] = (0.002, 0.002, 0.002),
    plan_cost_usd: float | None = 0.001,
    synthesis_cost_usd: float | None = 0.0005,
    with_synthesis: bool | None = None,
    max_workers: int | None = 8,
    proposed: int | None = None,
    dispatched: int | None = None,
    workers_failed: int = 0,
    workers_cancelled: int = 0,
    status: RunStatus | str = RunStatus.OK,
    breach: Breach | str | None = None,
    ceiling_usd: float | None = None,
    estimate_usd: float | None = None,
    policy: str = "reject",
    plan_attempts: int = 1,
    replay_of: str | None = None,
    started_at_ns: int = DEFAULT_STARTED_AT_NS,
    call_duration_ms: float = 1000.0,
    run_id: str | None = None,
    seed: int | None = None,
    planner_model: str = "sim/gpt-4o",
    worker_model: str = "sim/gpt-4o-mini",
    synthesis_model: str = "sim/gpt-4o-mini",
    service_name: str = "cliffwatch",
) -> list[SpanRecord]:
    """Build one run's trace: root ``run`` span, ``plan``, workers, ``synthesis``.

    Layout in time: the plan starts at ``started_at_ns`` and lasts ``call_duration_ms``;
    all workers then run in parallel for ``call_duration_ms``; synthesis follows for
    ``call_duration_ms``; the root span covers all of it (so the run's duration is 3 x
    ``call_duration_ms``, or 1 x when nothing was dispatched).

    The run's cost as the store materialises it (sum of leaf LLM calls, unpriced ones
    excluded) is ``plan_cost_usd + sum(worker_cost_usds) + synthesis_cost_usd``, leaving
    out every ``None``; ``unpriced_calls`` is the number of ``None`` costs.

    Args:
        task_class: ``cliff.task_class`` on every span.
        worker_cost_usds: one entry per dispatched worker call: its cost in USD, or None
            for an unpriced call. Empty for a run that dispatched nothing.
        plan_cost_usd: the planner call's cost (None = unpriced).
        synthesis_cost_usd: the synthesis call's cost (None = unpriced).
        with_synthesis: whether a synthesis span exists; default: yes unless no worker
            was dispatched (a rejected run ends after the plan).
        max_workers: ``cliff.max_workers`` (None = no cap, attribute left out).
        proposed: ``cliff.workers_proposed``; default ``len(worker_cost_usds)``.
            Greater than ``max_workers`` makes a cap breach (use with ``breach='cap'``).
        dispatched: ``cliff.workers_dispatched``; default ``len(worker_cost_usds)``.
        workers_failed: how many of the worker spans (the last ones) have status error;
            also ``cliff.workers_failed``.
        workers_cancelled: ``cliff.workers_cancelled``.
        status: ``cliff.status`` of the run (``ok|rejected|cancelled|failed``); ``failed``
            also sets the root span's status code to ``error``.
        breach: ``cliff.breach``: ``'cap'``, ``'ceiling'`` or None.
        ceiling_usd: ``cliff.ceiling_usd`` (None = no ceiling, left out).
        estimate_usd: ``cliff.estimate_usd`` (the dispatch-time estimate), left out if None.
        policy: ``cliff.policy`` (``reject|replan|truncate``).
        plan_attempts: ``cliff.plan_attempts``.
        replay_of: ``cliff.replay_of``: the run id this run replays.
        started_at_ns: run start, ns since the Unix epoch (see :func:`ns_at`).
        call_duration_ms: duration of each call in milliseconds.
        run_id: the trace id (32 lowercase hex chars); default from ``seed``, or random.
        seed: makes the default ``run_id`` deterministic.
        planner_model, worker_model, synthesis_model: models recorded on the calls.
        service_name: resource ``service.name``.

    Returns:
        The spans, root first (the order does not matter to the store).

    Raises:
        ValueError: ``run_id`` is not 32 lowercase hex characters.
    """
    if run_id is None:
        rng = random.Random(seed) if seed is not None else random.SystemRandom()
        run_id = f"{rng.getrandbits(128):032x}"
    if len(run_id) != 32 or any(c not in "0123456789abcdef" for c in run_id):
        raise ValueError(f"run_id must be 32 lowercase hex characters, got {run_id!r}")
    workers = list(worker_cost_usds)
    n_dispatched = len(workers) if dispatched is None else dispatched
    n_proposed = len(workers) if proposed is None else proposed
    synth = bool(workers) if with_synthesis is None else with_synthesis
    step_ns = round(call_duration_ms * NS_PER_MS)

    root_id = _span_id(run_id, "run")
    out: list[SpanRecord] = []
    t = started_at_ns
    out.append(
        llm_call_record(
            run_id=run_id, span_id=_span_id(run_id, "plan"), parent_span_id=root_id,
            role=Role.PLAN, name="plan", model=planner_model, cost_usd=plan_cost_usd,
            start_ns=t, duration_ms=call_duration_ms, task_class=task_class,
            service_name=service_name,
            extra_attributes={cv.CLIFF_PLAN_SUBTASKS: json.dumps(
                [{"index": i, "title": f"sub-task {i}", "difficulty": "routine",
                  "model": worker_model, "max_output_tokens": 512}
                 for i in range(n_proposed)]
            )},
        )
    )
    t += step_ns
    for i, cost in enumerate(workers):
        failed = i >= len(workers) - workers_failed
        out.append(
            llm_call_record(
                run_id=run_id, span_id=_span_id(run_id, f"worker-{i}"), parent_span_id=root_id,
                role=Role.WORKER, name=f"worker {i}", model=worker_model, cost_usd=cost,
                start_ns=t, duration_ms=call_duration_ms, task_class=task_class,
                status_code="error" if failed else "ok", service_name=service_name,
                extra_attributes={cv.CLIFF_SUBTASK_INDEX: i,
                                  cv.CLIFF_SUBTASK_TITLE: f"sub-task {i}",
                                  cv.CLIFF_SUBTASK_DIFFICULTY: "routine"},
            )
        )
    if workers:
        t += step_ns
    if synth:
        out.append(
            llm_call_record(
                run_id=run_id, span_id=_span_id(run_id, "synthesis"), parent_span_id=root_id,
                role=Role.SYNTHESIS, name="synthesis", model=synthesis_model,
                cost_usd=synthesis_cost_usd, start_ns=t, duration_ms=call_duration_ms,
                task_class=task_class, service_name=service_name,
            )
        )
        t += step_ns

    run_attrs: dict[str, Any] = {
        cv.CLIFF_ROLE: str(Role.RUN),
        cv.GEN_AI_OPERATION_NAME: cv.OPERATION_INVOKE_AGENT,
        cv.CLIFF_TASK_CLASS: task_class,
        cv.CLIFF_STATUS: str(status),
        cv.CLIFF_POLICY: str(policy),
        cv.CLIFF_WORKERS_PROPOSED: n_proposed,
        cv.CLIFF_WORKERS_DISPATCHED: n_dispatched,
        cv.CLIFF_WORKERS_FAILED: workers_failed,
        cv.CLIFF_WORKERS_CANCELLED: workers_cancelled,
        cv.CLIFF_PLAN_ATTEMPTS: plan_attempts,
    }
    optional = {
        cv.CLIFF_MAX_WORKERS: max_workers,
        cv.CLIFF_CEILING_USD: ceiling_usd,
        cv.CLIFF_ESTIMATE_USD: estimate_usd,
        cv.CLIFF_BREACH: None if breach is None else str(breach),
        cv.CLIFF_REPLAY_OF: replay_of,
    }
    run_attrs.update({k: v for k, v in optional.items() if v is not None})
    root_error = str(status) == RunStatus.FAILED
    root = SpanRecord(
        trace_id=run_id,
        span_id=root_id,
        parent_span_id=None,
        name=f"run {task_class}",
        start_time_unix_nano=started_at_ns,
        end_time_unix_nano=t,
        status_code="error" if root_error else "ok",
        status_message="run failed" if root_error else None,
        role=str(Role.RUN),
        task_class=task_class,
        is_llm_call=False,
        operation=cv.OPERATION_INVOKE_AGENT,
        provider=None,
        request_model=None,
        response_model=None,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        cost_source=None,
        price_input_usd_per_token=None,
        price_output_usd_per_token=None,
        service_name=service_name,
        source="cliffwatch",
        attributes=json.dumps(run_attrs),
        resource_attributes=json.dumps({"service.name": service_name}),
    )
    return [root, *out]


def make_runs_costing(
    run_cost_usds: Sequence[float],
    *,
    task_class: str = "research",
    started_at_ns: int = DEFAULT_STARTED_AT_NS,
    interval_s: float = 3600.0,
    workers: int = 3,
    seed: int = 0,
    **run_kwargs: Any,
) -> list[SpanRecord]:
    """Many runs of one task class, run ``i`` costing exactly ``run_cost_usds[i]``.

    Each run's cost is split evenly over its plan, ``workers`` workers and synthesis
    (``workers + 2`` priced calls), so the materialised ``runs.cost_usd`` equals the
    figure given (up to float rounding of the split, far below 1e-12 USD). Runs start
    ``interval_s`` apart from ``started_at_ns``; run ids derive from ``seed`` and the index.

    Args:
        run_cost_usds: total cost of each run, USD.
        task_class: the task class of every run.
        started_at_ns: start of the first run, ns since the epoch.
        interval_s: seconds between run starts.
        workers: workers per run (>= 1).
        seed: base of the deterministic run ids (use different seeds per class).
        **run_kwargs: passed on to :func:`make_run_records` (not the cost arguments).

    Returns:
        All runs' spans, concatenated.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    out: list[SpanRecord] = []
    for i, total in enumerate(run_cost_usds):
        share = total / (workers + 2)
        out.extend(
            make_run_records(
                task_class=task_class,
                worker_cost_usds=[share] * workers,
                plan_cost_usd=share,
                synthesis_cost_usd=total - share * (workers + 1),
                started_at_ns=started_at_ns + round(i * interval_s * 1e9),
                run_id=f"{random.Random(f'{seed}/{task_class}/{i}').getrandbits(128):032x}",
                **run_kwargs,
            )
        )
    return out


_HOLDER_CODE = """
import select, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "1")
con.sql("SELECT 1").fetchall()
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[3]))  # until stdin closes or time is up
con.close()
"""


@contextmanager
def hold_store_lock(
    path: str | os.PathLike[str], *, read_only: bool = False, seconds: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """Hold a DuckDB file open from another process, as a concurrent writer or reader does.

    Returns once the child holds the file; the child lets go when the ``with`` block
    exits, or after ``seconds`` if that comes first (a way to test that a retrying open
    succeeds once the holder goes away). DuckDB locks files per process, so a second
    process is the only faithful way to make a store busy.

    Args:
        path: the DuckDB file (a read-write hold creates a plain DuckDB file if missing).
        read_only: hold it read-only (blocks writers, not readers) or read-write (blocks
            everyone).
        seconds: the longest the child holds the file.

    Yields:
        The child process.

    Raises:
        RuntimeError: the child could not open the file (its stderr is in the message).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_CODE, os.fspath(path), "1" if read_only else "0",
         str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "locked":
            _, err = proc.communicate(timeout=30)
            raise RuntimeError(f"lock holder could not open {path}: {err.strip()}")
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
