"""Bench ``exporter``: cliffwatch's DuckDB exporter against a do-nothing exporter, same SDK.

Both pipelines are built alike: a private ``TracerProvider`` with the same resource, the
ledger's ``_CountEnded`` processor and a ``BatchSpanProcessor`` with
``telemetry.tracing.DUCKDB_BATCH`` settings; only the exporter differs (ours, as
``configure_tracing`` sets it up with each writer, ``process`` and ``thread``, or one whose
``export`` returns ``SUCCESS`` at once).
The application thread makes runs shaped like the orchestrator's (a root, a plan, four
workers with cost and token attributes). Figures:

- spans/s made by the application thread (what users feel: the export thread competes
  for the GIL), for each pipeline, and their ratio (target, issue 11: >= 0.9x);
- spans/s durably written (making plus the final flush) and the ledger's written,
  spilled, lost and dropped counts, beside the rows in the store (none may be lost);
- sustained (full bench only): 120,000 spans made without pause, twice the SDK's queue,
  once per writer: a writer slower than the application makes the SDK drop spans;
- the same made ratio for a paced application (bursts of runs between short pauses, as an
  app waiting on LLM calls makes them), counting only the time spent making spans;
- each pipeline's peak resident memory from the first span made to the flush's end: the
  application's process and its children (the process writer's), :mod:`bench.memory`.

The pipelines run interleaved (do-nothing, process, thread) for :data:`ROUNDS` rounds and
each figure is the best round's, the median beside it (and each round's made ratio): on a
shared 2-core machine the load of other processes halves or doubles a run's speed from one
run to the next.
``process`` is cliffwatch's writer process (``CLIFFWATCH_EXPORT_WRITER=process``),
``thread`` a writer thread in the application's process that gives way while spans are
made (the default; telemetry/export_thread.py). Every round builds fresh pipelines, so
each process round includes its writer's start-up (an interpreter, DuckDB, pyarrow, and
litellm's price map on the first mapping: ~3 s of CPU, on the other core), while the
thread writer maps in the bench's own process, whose imports are warm after its first round.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from bench.memory import mb, reset_peak, tree_peak_rss_mb
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.tracing import DUCKDB_BATCH, _CountEnded, configure_tracing
from cliffwatch.telemetry.write_ledger import LEDGER, LedgerCounts

Result = list[tuple[str, str]]

WRITERS = ("process", "thread")
"""``configure_tracing`` writers measured (``settings.CLIFFWATCH_EXPORT_WRITER``)."""


class _NullExporter(SpanExporter):
    """Exports nothing, at once: the ceiling of the SDK path."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


PACED_BURST_RUNS = 100
"""Runs (of 6 spans) an application makes between pauses in the paced case."""
PACED_PAUSE_S = 0.05
"""Pause between bursts in the paced case (an app waiting on its LLM calls)."""


def _make(tracer: Tracer, n_runs: int, paced: bool = False) -> float:
    """Seconds the application thread spends making ``n_runs`` runs of 6 spans.

    Paced: bursts of :data:`PACED_BURST_RUNS` runs with :data:`PACED_PAUSE_S` pauses
    between them; the pauses are not counted (the time the app spends making spans is).
    """
    if paced:
        busy = 0.0
        for start in range(0, n_runs, PACED_BURST_RUNS):
            busy += _make(tracer, min(PACED_BURST_RUNS, n_runs - start))
            time.sleep(PACED_PAUSE_S)
        return busy
    t0 = time.perf_counter()
    for i in range(n_runs):
        with tracer.start_as_current_span("run") as run:
            run.set_attribute("cliff.role", "run")
            run.set_attribute("cliff.task_class", "bench")
            for role in ("plan", "worker", "worker", "worker", "worker"):
                with tracer.start_as_current_span(role) as span:
                    span.set_attribute("cliff.role", role)
                    span.set_attribute("cliff.task_class", "bench")
                    span.set_attribute("cliff.cost_usd", 0.001 * (i % 7))
                    span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                    span.set_attribute("gen_ai.usage.input_tokens", 100 + i % 50)
                    span.set_attribute("gen_ai.usage.output_tokens", 20 + i % 10)
    return time.perf_counter() - t0


def _run_queue_wait_s() -> float:
    """Seconds this thread has been runnable but waiting for a core (Linux's
    ``/proc/self/task/<tid>/schedstat``, second field, ns); 0.0 where it cannot be read."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


_QUEUED: dict[str, list[float]] = {}
"""Seconds the application thread waited for a core while making spans (run-queue wait),
per pipeline and run: the time other processes (the other helpers' load, the process
writer) held both cores. Waiting for the GIL is not in it (a thread that waits for the
GIL sleeps), so made less this is the made time with the load taken out and the GIL
kept in."""

_PEAK_MB: dict[str, list[tuple[float | None, float, float | None]]] = {}
"""Peak resident memory, MB, from the start of making to the end of the flush, per
pipeline and round: ``(this process, its child processes summed, this process at the
start)`` (the children: the process writer's writer; :func:`bench.memory.tree_peak_rss_mb`)."""

_APP_CPU: dict[str, list[float]] = {}
"""CPU seconds of the application thread while making spans, per pipeline and run
(``time.thread_time``): what the exporter's own threads and processes cost it beyond
sharing the cores (cache, GIL hand-overs)."""


def _null_run(n_runs: int, paced: bool = False) -> tuple[float, float, int]:
    """(made seconds, made + flush seconds, spans exported) through the do-nothing path."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "cliffwatch"}))
    provider.add_span_processor(_CountEnded())
    null = _NullExporter()
    provider.add_span_processor(BatchSpanProcessor(null, **DUCKDB_BATCH))
    start = reset_peak()
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    queued0 = _run_queue_wait_s()
    made = _make(provider.get_tracer("cliffwatch"), n_runs, paced)
    if not paced:
        _APP_CPU.setdefault("do-nothing", []).append(time.thread_time() - cpu0)
        _QUEUED.setdefault("do-nothing", []).append(_run_queue_wait_s() - queued0)
    provider.force_flush()
    total = time.perf_counter() - t0
    if not paced:
        _PEAK_MB.setdefault("do-nothing", []).append((*tree_peak_rss_mb(os.getpid()), start))
    provider.shutdown()
    return made, total, null.spans


def _paced(tmp: Path, n_runs: int) -> Result:
    """The paced case: spans/s while making, do-nothing vs each writer vs do-nothing again."""
    n = n_runs * 6
    null_a, _, _ = _null_run(n_runs, paced=True)
    made: dict[str, tuple[float, int]] = {}
    for writer in WRITERS:
        path = tmp / f"paced-{writer}.duckdb"
        tracing = configure_tracing(path, otlp_endpoint=None, writer=writer)
        seconds = _make(tracing.tracer, n_runs, paced=True)
        tracing.shutdown()
        with open_store(path, read_only=True) as con:
            made[writer] = (seconds, con.sql("SELECT count(*) FROM spans").fetchall()[0][0])
    null_b, _, _ = _null_run(n_runs, paced=True)
    null_made = (null_a + null_b) / 2
    label = f"paced ({PACED_BURST_RUNS * 6} spans, {PACED_PAUSE_S * 1000:g} ms pause)"
    rows = [(f"{label}, do-nothing made",
             f"{null_made:.2f} s = {_rate(n, null_made)} while making")]
    for writer, (seconds, stored) in made.items():
        rows.append((f"{label}, {writer} writer made",
                     f"{seconds:.2f} s = {_rate(n, seconds)} while making, ratio "
                     f"{null_made / seconds:.2f}x ({stored:,} of {n:,} stored)"))
    return rows


def _duck_run(tmp: Path, n_runs: int, writer: str) -> tuple[float, float, LedgerCounts, int]:
    """(made seconds, made + flush seconds, ledger counts, rows stored) through
    ``configure_tracing`` with ``writer``."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"exp-{writer}.duckdb"
    before = LEDGER.snapshot()
    tracing = configure_tracing(path, otlp_endpoint=None, writer=writer)
    start = reset_peak()
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    queued0 = _run_queue_wait_s()
    made = _make(tracing.tracer, n_runs)
    _APP_CPU.setdefault(writer, []).append(time.thread_time() - cpu0)
    _QUEUED.setdefault(writer, []).append(_run_queue_wait_s() - queued0)
    tracing.flush()
    total = time.perf_counter() - t0
    _PEAK_MB.setdefault(writer, []).append((*tree_peak_rss_mb(os.getpid()), start))
    tracing.shutdown()
    counts = LEDGER.snapshot() - before
    with open_store(path, read_only=True) as con:
        stored = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    return made, total, counts, stored


def _median_mb(values: Iterable[float | None]) -> str:
    known = [v for v in values if v is not None]
    return mb(statistics.median(known) if known else None)


def _rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "inf"


ROUNDS = 5
"""Rounds of (do-nothing, process, thread) in the full bench; each figure is the best
round's (the least disturbed by other load on the machine), the median beside it, and the
made ratio of each round (do-nothing and the writer side by side in it) too."""


def bench_exporter(tmp: Path, quick: bool) -> Result:
    """Run the exporter bench (module doc); ``quick`` makes a tenth of the spans, once."""
    n_runs = 1_000 if quick else 10_000
    rounds = 1 if quick else ROUNDS
    n = n_runs * 6
    load_before = os.getloadavg()
    nulls: list[tuple[float, float, int]] = []
    runs: dict[str, list[tuple[float, float, LedgerCounts, int]]] = {w: [] for w in WRITERS}
    for r in range(rounds):  # interleaved, so that a change of load hits all three alike
        nulls.append(_null_run(n_runs))
        for writer in WRITERS:
            runs[writer].append(_duck_run(tmp / f"round{r}", n_runs, writer))
    paced = _paced(tmp, n_runs // 2)
    sustained = [] if quick else _sustained(tmp, SUSTAINED_RUNS)
    load_after = os.getloadavg()
    null_made = min(made for made, _, _ in nulls)
    null_median = statistics.median(made for made, _, _ in nulls)
    rows: Result = [
        ("spans", f"{n:,} ({n_runs:,} runs of 6) a run, {rounds} round(s); batch settings "
                  f"{DUCKDB_BATCH}"),
        ("do-nothing exporter, made", _best_and_median(n, [made for made, _, _ in nulls])),
        ("do-nothing exporter, incl. flush",
         _best_and_median(n, [total for _, total, _ in nulls])
         + f" ({', '.join(f'{spans:,}' for _, _, spans in nulls)} exported)"),
    ]
    # _sustained's runs come after the rounds in _QUEUED and _APP_CPU: zip and [:rounds]
    # keep the rounds only
    null_net = statistics.median(
        m - q for (m, _, _), q in zip(nulls, _QUEUED.get("do-nothing", []), strict=False))
    for writer, results in runs.items():
        made = min(m for m, _, _, _ in results)
        net = [m - q for (m, _, _, _), q in zip(results, _QUEUED.get(writer, []), strict=False)]
        total = min(t for _, t, _, _ in results)
        n_all = n * len(results)
        written = sum(c.written for _, _, c, _ in results)
        stored = sum(s for _, _, _, s in results)
        bad = sum(c.lost + c.spilled + c.dropped for _, _, c, _ in results)
        ok = stored == written == n_all and not bad
        rows += [
            (f"{writer} writer, made", _best_and_median(n, [m for m, _, _, _ in results])),
            (f"{writer} writer, durable (incl. flush)",
             _best_and_median(n, [t for _, t, _, _ in results])),
            (f"{writer} writer, ratio made vs do-nothing (best rounds)",
             f"{null_made / made:.2f}x (target >= 0.9x)"),
            (f"{writer} writer, ratio made vs do-nothing (median rounds; each round)",
             f"{null_median / statistics.median(m for m, _, _, _ in results):.2f}x; "
             + ", ".join(f"{null[0] / m:.2f}x"
                         for null, (m, _, _, _) in zip(nulls, results, strict=True))),
            (f"{writer} writer, ratio made less run-queue wait vs do-nothing (median rounds)",
             f"{null_net / statistics.median(net):.2f}x (the load of other processes taken "
             f"out; the GIL kept in: module doc of _QUEUED)"),
            (f"{writer} writer, ratio durable vs do-nothing made", f"{null_made / total:.2f}x"),
            (f"{writer} writer, ledger (all rounds)",
             f"{written:,} written, {bad:,} lost, spilled or dropped; {stored:,} of {n_all:,} "
             f"in the stores ({'none lost' if ok else 'LOST'})"),
        ]
    rows.append(("application thread CPU while making (least of the rounds)",
                 ", ".join(f"{name} {min(cpu[:rounds]):.2f} s" for name, cpu in _APP_CPU.items())))
    rows.append(("application thread run-queue wait while making (median of the rounds)",
                 ", ".join(f"{name} {statistics.median(q[:rounds]):.2f} s"
                           for name, q in _QUEUED.items())))
    rows.append(("peak RSS making + flushing (median of the rounds): this process "
                 "(at the start) + its children",
                 ", ".join(f"{name} {_median_mb(p[0] for p in peaks[:rounds])} "
                           f"({_median_mb(p[2] for p in peaks[:rounds])}) + "
                           f"{_median_mb(p[1] for p in peaks[:rounds])}"
                           for name, peaks in _PEAK_MB.items())))
    _APP_CPU.clear()
    _QUEUED.clear()
    _PEAK_MB.clear()
    return [
        *rows,
        *paced,
        *sustained,
        ("load average 1/5/15 min, before", " ".join(f"{x:.2f}" for x in load_before)),
        ("load average 1/5/15 min, after", " ".join(f"{x:.2f}" for x in load_after)),
    ]


SUSTAINED_RUNS = 20_000
"""Runs (of 6 spans) of the sustained case: 120,000 spans, about twice the SDK's queue
(``DUCKDB_BATCH["max_queue_size"]``), so a writer slower than the application drops."""


def _sustained(tmp: Path, n_runs: int) -> Result:
    """The sustained case (full bench only): more spans than the queue holds, made without
    pause, once per writer; what each made, wrote and the SDK dropped (a full queue)."""
    n = n_runs * 6
    rows: Result = []
    # The SDK logs one warning per dropped span ("Queue full"): tens of thousands of
    # lines on stderr. Kept quiet here; the ledger counts them.
    sdk_logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    level = sdk_logger.level
    sdk_logger.setLevel(logging.ERROR)
    try:
        runs = {w: _duck_run(tmp / "sustained", n_runs, w) for w in WRITERS}
    finally:
        sdk_logger.setLevel(level)
    for writer, (made, total, counts, stored) in runs.items():
        rows.append((f"sustained ({n:,} spans), {writer} writer",
                     f"made {_rate(n, made)}, durable {_rate(n, total)}; "
                     f"{counts.written:,} written, {counts.dropped:,} dropped by the SDK "
                     f"(queue full), {counts.lost:,} lost; {stored:,} in the store"))
    return rows


def _best_and_median(n: int, seconds: list[float]) -> str:
    best = min(seconds)
    median = statistics.median(seconds)
    return f"{best:.2f} s = {_rate(n, best)} best, {_rate(n, median)} median"
