"""The ``store_write`` benchmark: one 1,000-span ``write_spans`` over 10k, 100k and 1M runs
of history, against a bare Arrow insert of the same spans (issue 11's write-path target:
>= 0.5x the bare insert, flat from 10k to 1M). Then the same held writes into the scale
benchmarks' store of as many runs, whose month holds ~31k runs a day at 1M, the batches'
runs starting on its last day: the rules that read a day's or a window's runs (roll-ups,
alerts) cost by the runs a day, not by history.

History is a real 200-run demo copied in SQL with new ids (:func:`grow_history`), never
written through ``write_spans``, so 1M runs build in about two minutes.

The held connection's writes are also set against a bare insert made right after each of
them (wall and CPU time): on a shared 2-core machine a neighbour's burst can slow the
held writes alone when the bare inserts were timed a minute earlier. A held connection's
median leaves out DuckDB's checkpoints (one about every ten writes, when its write-ahead
log is full, and one at every release), so :func:`sustained` writes 130 batches as
``cliffwatch serve`` does and sets the mean, checkpoints included, against the bare
inserts' mean.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.memory import peak_rss_mb, peak_since, reset_peak

Result = list[tuple[str, str]]

STORE_WRITE_HISTORY_RUNS = (10_000, 100_000, 1_000_000)
"""Runs of history the write batch is measured against (issue 11: flat from 10k to 1M)."""

STORE_WRITE_BATCH_SPANS = 1_000
"""Spans in the measured ``write_spans`` batch (an exporter-sized batch)."""

STORE_WRITE_REPEATS = 5
"""Batches measured per history size and way of writing (the median is reported): at
three, one slow write on a busy machine moved the figure by a third."""

SUSTAINED_WRITES = 130
"""Batches of the sustained, serve-like run per history size: enough for DuckDB's automatic
checkpoints (its write-ahead log reaches ``checkpoint_threshold``, 16 MB, about every ten
1,000-span writes) and the writer's releases (every ``WRITER_HOLD_S``) to fall inside it,
and for one of the checkpoint vacuum's large merges. DuckDB 2.0's checkpoint merges
under-filled row groups (its vacuum, ``max_vacuum_tasks``), and so about once every
122,880 rows appended (a row group) it rewrites the newest rows with up to two full row
groups before them, 2.6-3.5 s of CPU at 1,000-span writes where a checkpoint is otherwise
15-40 ms (DuckDB's ``Checkpoint`` log: ``type: vacuum, merge_rows=368417``). With thirty
writes (30,000 rows) a sitting caught one such merge or none, by chance, and the figure
swung by a fifth; 130 writes hold one about every time. A bare insert's table merges the
same way."""

SEED_RUNS = 200
"""Runs of the real demo (seed 7) that history and the measured batches are copied from."""

_COPY_TABLES = (
    # (table, id column, expression of the copy's id, extra replaced columns)
    ("spans", "trace_id", "md5(k::VARCHAR || trace_id)",
     ", start_time_unix_nano + k * 86_400_000_000_000 AS start_time_unix_nano, "
     "end_time_unix_nano + k * 86_400_000_000_000 AS end_time_unix_nano"),
    ("runs", "run_id", "md5(k::VARCHAR || run_id)", ""),
    ("incidents", "incident_id", "kind || '-' || left(md5(k::VARCHAR || run_id), 16)",
     ", md5(k::VARCHAR || run_id) AS run_id, detected_at + to_days(k::INTEGER) AS detected_at"),
    ("alerts", "alert_id", "kind || '-' || left(md5(k::VARCHAR || run_id), 16)",
     ", md5(k::VARCHAR || run_id) AS run_id, raised_at + to_days(k::INTEGER) AS raised_at"),
)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def grow_history(con, seed_path: Path, copies_done: int, target_runs: int) -> int:  # type: ignore[no-untyped-def]
    """Copy the seed store's runs, spans, incidents, alerts and seen traces in SQL, with new
    ids (an md5 of the copy number and the old id: random-looking, as real trace ids are) and times
    moved one day per copy, until there are ``target_runs // SEED_RUNS`` copies. No
    ``write_spans``: 1M runs build in minutes, not hours. 100k runs per statement. The
    roll-ups are then rebuilt from the runs, as ``write_spans`` would have kept them.

    Returns:
        The number of copies now in the store (the seed itself, written by
        ``write_spans``, is copy 0).
    """
    from cliffwatch.telemetry.rollups import rebuild_rollups
    from cliffwatch.telemetry.store import transaction

    con.execute(f"ATTACH '{seed_path}' AS seed (READ_ONLY)")
    step = 100_000 // SEED_RUNS
    try:
        while copies_done < target_runs // SEED_RUNS:
            last = min(copies_done + step, target_runs // SEED_RUNS)
            for table, id_col, new_id, extra in _COPY_TABLES:
                times = {
                    "spans": "started_at + to_days(k::INTEGER) AS started_at, "
                             "ended_at + to_days(k::INTEGER) AS ended_at, ",
                    "runs": "started_at + to_days(k::INTEGER) AS started_at, "
                            "ended_at + to_days(k::INTEGER) AS ended_at, ",
                }.get(table, "")
                where = "WHERE source = 'incident'" if table == "alerts" else ""
                con.execute(f"""
                    INSERT INTO {table}
                    SELECT * EXCLUDE (k) REPLACE ({times}{new_id} AS {id_col}{extra})
                    FROM (SELECT * FROM seed.{table} {where})
                    CROSS JOIN range({copies_done}, {last}) AS c(k)
                """)
            # Every copied trace is seen, as write_spans records it (schema.py, seen_traces).
            con.execute(f"""
                INSERT INTO seen_traces
                SELECT md5_number_lower(md5(k::VARCHAR || trace_id)), first_ingested_at
                FROM (SELECT trace_id, min(ingested_at) AS first_ingested_at
                      FROM seed.spans GROUP BY trace_id)
                CROSS JOIN range({copies_done}, {last}) AS c(k)
            """)
            copies_done = last
            con.execute("CHECKPOINT")
    finally:
        con.execute("DETACH seed")
    # The roll-ups of the copied runs, as write_spans keeps them (else the first write
    # measured finds them behind and rebuilds them all: 0.9 s at 1M runs).
    with transaction(con):
        rebuild_rollups(con)
    return copies_done


def fresh_batch(seed_path: Path, tag: int) -> list:  # type: ignore[type-arg]
    """The first :data:`STORE_WRITE_BATCH_SPANS` spans of the seed's traces (whole traces
    but the last), with new trace ids: the spans of new runs, as an exporter sends them."""
    import duckdb

    from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord

    cols = ", ".join(f"{f}::VARCHAR" if f in ("attributes", "resource_attributes", "events")
                     else f for f in SPAN_RECORD_FIELDS)
    con = duckdb.connect(str(seed_path), read_only=True)
    try:
        rows = con.execute(
            f"SELECT * REPLACE (md5('batch' || $tag || trace_id) AS trace_id) FROM ("
            f"SELECT {cols} FROM spans ORDER BY trace_id, start_time_unix_nano, span_id "
            f"LIMIT {STORE_WRITE_BATCH_SPANS})", {"tag": str(tag)}
        ).fetchall()
    finally:
        con.close()
    return [SpanRecord(*row) for row in rows]


_PHASES = (
    # (label, how the statement starts): the first match names a statement's phase.
    ("insert spans (duplicate check)", "INSERT INTO spans"),
    ("find seen traces", "SELECT b.trace_id, min(t.first_ingested_at)"),
    ("find seen traces", "CREATE OR REPLACE TEMP TABLE cliff_seen"),
    ("remember new traces", "INSERT INTO seen_traces"),
    ("replace runs (delete + insert)", "DELETE FROM runs"),
    ("replace runs (delete + insert)", "INSERT INTO runs"),
    ("commit", "COMMIT"),
    ("materialise, incidents, alerts (SQL)", ""),
)


def write_phases(path: Path, records: list) -> dict[str, float]:  # type: ignore[type-arg]
    """One ``write_spans`` with its seconds split by phase: open (schema check included),
    each statement by :data:`_PHASES`, and the close (DuckDB's checkpoint). Times the
    statements through a wrapper of the write's connection, for this call only."""
    from contextlib import contextmanager

    from cliffwatch.telemetry import write_pipeline

    phases: dict[str, float] = {"open": 0.0, **{label: 0.0 for label, _ in _PHASES}}
    original = write_pipeline.open_store

    class Timed:
        def __init__(self, con) -> None:  # type: ignore[no-untyped-def]
            self._con = con

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self._con, name)

        def execute(self, sql, *args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = self._con.execute(sql, *args, **kwargs)
            # A statement parsed before (telemetry/parsed_sql.py) has its text in `query`.
            head = " ".join((sql if isinstance(sql, str) else sql.query).split())
            label = next(lb for lb, start in _PHASES if head.startswith(start))
            phases[label] += time.perf_counter() - t0
            if not label.startswith(("insert", "find", "remember", "replace", "commit")):
                key = f"  [{head[:48]}]"  # the SQL bucket, statement by statement
                phases[key] = phases.get(key, 0.0) + time.perf_counter() - t0
            return out

    @contextmanager
    def timed_open(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        with original(*args, **kwargs) as con:
            phases["open"] += time.perf_counter() - t0
            yield Timed(con)
            t1 = time.perf_counter()
        phases["close (checkpoint)"] = time.perf_counter() - t1

    write_pipeline.open_store = timed_open  # type: ignore[assignment]
    try:
        write_pipeline.write_spans(path, records)
    finally:
        write_pipeline.open_store = original
    return phases


def _beside(ours: list[float], bares: list[float]) -> str:
    """Medians of our writes and of the bare inserts made right after each (so that what
    else runs on the machine slows both alike), and their ratio."""
    w, b = statistics.median(ours), statistics.median(bares)
    return f"{w:.3f} s vs bare {b:.3f} s = {b / w:.2f}x"


def sustained(path: Path, batches: Iterable[list[Any]],
              bare_insert: Callable[[list[Any]], tuple[float, float]]
              ) -> tuple[float, float, int]:
    """Write ``batches`` as ``cliffwatch serve``'s journal drain does (telemetry/journal.py):
    one held connection, let go once held ``WRITER_HOLD_S`` (closing it checkpoints the
    store), the reader window slept after each release (not counted). Each write is
    followed by ``bare_insert`` of the same batch, out of the clock (but inside the hold's
    second, so the releases come a little more often than in serve). Returns the mean
    seconds a write took, the checkpoints and the final release included, the bare
    inserts' mean, and the releases made."""
    from cliffwatch.telemetry.receiver import WRITER_HOLD_S
    from cliffwatch.telemetry.store import READER_WINDOW_S, HeldStore
    from cliffwatch.telemetry.write_pipeline import write_spans

    held = HeldStore(path, hold_max_s=WRITER_HOLD_S)
    spent, bares, releases = 0.0, [], 0
    for batch in batches:
        t0 = time.perf_counter()
        write_spans(path, batch, held=held)
        due = held.due
        if due:
            held.release()
            releases += 1
        spent += time.perf_counter() - t0
        if due:
            time.sleep(READER_WINDOW_S)
        bares.append(bare_insert(batch)[0])
    t0 = time.perf_counter()
    held.release()
    spent += time.perf_counter() - t0
    return spent / len(bares), statistics.mean(bares), releases + 1


def bench_store_write(tmp: Path, quick: bool) -> Result:
    """One 1,000-span ``write_spans`` against a bare Arrow insert of the same spans, over
    stores holding 10k, 100k and 1M runs of history (a tenth with ``--quick``)."""
    import shutil

    import duckdb

    from cliffwatch.orchestrator.demo import run_demo
    from cliffwatch.telemetry.records import records_to_arrow
    from cliffwatch.telemetry.store import HeldStore, open_store
    from cliffwatch.telemetry.write_pipeline import write_spans

    seed_path, path = tmp / "seed.duckdb", tmp / "history.duckdb"
    t0 = time.perf_counter()
    run_demo(seed_path, runs=SEED_RUNS, days=30, seed=7)
    seed_s = time.perf_counter() - t0
    shutil.copy(seed_path, path)
    bare_path = tmp / "bare.duckdb"
    bare = duckdb.connect(str(bare_path))
    bare.register("b", records_to_arrow(fresh_batch(seed_path, 0)))
    bare.execute("CREATE TABLE bare AS SELECT * FROM b LIMIT 0")
    bare.close()
    out: Result = [
        ("seed", f"demo of {SEED_RUNS} runs (seed 7) in {seed_s:.0f} s; history = copies"),
        ("batch", f"{STORE_WRITE_BATCH_SPANS:,} spans of new runs; median of "
         f"{STORE_WRITE_REPEATS} batches"),
        ("load average 1/5/15 at start", _load()),
    ]
    sizes = [n // 10 if quick else n for n in STORE_WRITE_HISTORY_RUNS]
    first = last = first_held = last_held = 0.0
    copies = 1

    def bare_insert(batch: list) -> tuple[float, float]:  # type: ignore[type-arg]
        """Wall and CPU seconds of the bare insert of ``batch`` (open, insert, close)."""
        table = records_to_arrow(batch)
        t0, c0 = time.perf_counter(), time.process_time()
        con = duckdb.connect(str(bare_path))
        con.register("b", table)
        con.execute("INSERT INTO bare SELECT * FROM b")
        con.close()
        return time.perf_counter() - t0, time.process_time() - c0

    for i, n_runs in enumerate(sizes):
        t0 = time.perf_counter()
        with open_store(path, read_only=False) as con:
            copies = grow_history(con, seed_path, copies, n_runs)
            spans = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
            runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        build_s = time.perf_counter() - t0
        ours, bares = [], []
        for j in range(STORE_WRITE_REPEATS):
            batch = fresh_batch(seed_path, 100 * i + j + 1)
            t0 = time.perf_counter()
            write_spans(path, batch)
            ours.append(time.perf_counter() - t0)
            bares.append(bare_insert(batch)[0])
        held_start = reset_peak()
        held = HeldStore(path, hold_max_s=3600)  # as `cliffwatch serve` keeps it
        kept = []  # the first write opens the store (and loads the seen-trace copy)
        kept_cpu, beside, beside_cpu = [], [], []  # and a bare insert after each write
        for j in range(STORE_WRITE_REPEATS + 1):
            batch = fresh_batch(seed_path, 100 * i + j + 50)
            t0, c0 = time.perf_counter(), time.process_time()
            write_spans(path, batch, held=held)
            kept.append(time.perf_counter() - t0)
            kept_cpu.append(time.process_time() - c0)
            wall_s, cpu_s = bare_insert(batch)
            beside.append(wall_s)
            beside_cpu.append(cpu_s)
        held_peak = peak_rss_mb()
        t0 = time.perf_counter()
        held.release()
        release_s = time.perf_counter() - t0
        mean_s, bare_mean_s, releases = sustained(
            path, (fresh_batch(seed_path, 1000 * (i + 1) + j) for j in range(SUSTAINED_WRITES)),
            bare_insert)
        phases = write_phases(path, fresh_batch(seed_path, 100 * i + 9))
        w, b = statistics.median(ours), statistics.median(bares)
        held_all, held_steady = statistics.median(kept[:-1]), statistics.median(kept[1:])
        first, last = (w, w) if i == 0 else (first, w)
        first_held, last_held = ((held_steady, held_steady) if i == 0
                                 else (first_held, held_steady))
        out += [
            (f"history {runs:,} runs", f"{spans:,} spans (copied in SQL in {build_s:.0f} s)"),
            ("  write_spans", f"{w:.3f} s (each: {', '.join(f'{x:.3f}' for x in ours)})"),
            ("  bare Arrow insert (open, insert, close)", f"{b:.3f} s"),
            ("  speed vs bare (target >= 0.5x)", f"{b / w:.2f}x"),
            ("  write_spans, held connection (serve)",
             f"{held_all:.3f} s = {b / held_all:.2f}x bare (median of the first "
             f"{STORE_WRITE_REPEATS}, the open included; each: "
             f"{', '.join(f'{x:.3f}' for x in kept)}; release {release_s:.3f} s)"),
            ("  held connection, steady state", f"{held_steady:.3f} s = {b / held_steady:.2f}x "
             f"bare (median of the {STORE_WRITE_REPEATS} writes after the first)"),
            ("  the same against a bare insert after each", _beside(kept[1:], beside[1:])
             + "; CPU " + _beside(kept_cpu[1:], beside_cpu[1:])),
            ("  held writer's peak RSS (this process)", peak_since(held_start, held_peak)),
            (f"  as serve writes, sustained ({SUSTAINED_WRITES} writes)",
             f"{mean_s:.3f} s a write = {bare_mean_s / mean_s:.2f}x a bare insert's mean "
             f"({bare_mean_s:.3f} s): means, DuckDB's automatic checkpoints and the "
             f"{releases} releases' (each closing checkpoints) included"),
            ("  one more write, by phase", ", ".join(
                f"{label} {sec * 1000:.0f} ms" for label, sec in phases.items()
                if not label.startswith("  ["))),
            ("  its slowest SQL statements", ", ".join([
                f"{label.strip()} {sec * 1000:.0f} ms" for label, sec in sorted(
                    phases.items(), key=lambda kv: -kv[1]) if label.startswith("  [")][:6])),
            ("  load average 1/5/15", _load()),
        ]
    out.append((f"write at {sizes[-1]:,} / at {sizes[0]:,} runs (flat: 1x)",
                f"{last / first:.2f}x"))
    out.append((f"held, steady state: at {sizes[-1]:,} / at {sizes[0]:,} runs",
                f"{last_held / first_held:.2f}x"))
    dense, runs_a_day, day_ns = _dense_copy(tmp, sizes[-1])
    dense_start = reset_peak()
    held = HeldStore(dense, hold_max_s=3600)
    kept, beside = [], []
    for j in range(STORE_WRITE_REPEATS + 1):
        batch = live_batch(fresh_batch(seed_path, 900 + j), day_ns, j)
        t0 = time.perf_counter()
        write_spans(dense, batch, held=held)
        kept.append(time.perf_counter() - t0)
        beside.append(bare_insert(batch)[0])
    dense_peak = peak_rss_mb()
    held.release()
    out += [
        (f"dense history: {sizes[-1]:,} runs, {runs_a_day:,.0f} a day",
         "the scale benchmarks' store (bench/bigstore.py); each batch's runs start on its "
         "last day, as live traffic's do"),
        ("  held connection, steady state", f"{statistics.median(kept[1:]):.3f} s (each: "
         f"{', '.join(f'{x:.3f}' for x in kept)}); against a bare insert after each "
         + _beside(kept[1:], beside[1:])),
        ("  held writer's peak RSS (this process)", peak_since(dense_start, dense_peak)),
        ("  dense / sparse history at the same size (flat: 1x)",
         f"{statistics.median(kept[1:]) / last_held:.2f}x"),
        ("  load average 1/5/15", _load()),
    ]
    return out


def _dense_copy(tmp: Path, runs: int) -> tuple[Path, float, int]:
    """A copy of the cached store of ``runs`` runs (bench/bigstore.py: a month of runs,
    many a day) to write into, its runs a day, and Unix nanoseconds of midnight UTC of
    its newest run's day."""
    import shutil

    import duckdb

    from bench.bigstore import big_store

    source, _ = big_store(runs, say=False)
    path = tmp / "dense.duckdb"
    shutil.copyfile(source, path)
    con = duckdb.connect(str(path), read_only=True)
    try:
        days, last_day_ns = con.execute(
            "SELECT count(DISTINCT started_at::DATE), "
            "epoch_ns(date_trunc('day', max(started_at))) FROM runs").fetchall()[0]
    finally:
        con.close()
    return path, runs / max(int(days), 1), int(last_day_ns)


def live_batch(batch: list, day_ns: int, minute: int) -> list:  # type: ignore[type-arg]
    """``batch`` with every trace moved to start on the day at ``day_ns``: the first at
    ``minute`` minutes past midnight, each next one a second later (spans keep their
    places within their trace)."""
    import dataclasses

    first: dict[str, int] = {}
    for record in batch:
        first[record.trace_id] = min(first.get(record.trace_id, record.start_time_unix_nano),
                                     record.start_time_unix_nano)
    order = {trace_id: i for i, trace_id in enumerate(first)}
    out = []
    for record in batch:
        shift = (day_ns + minute * 60_000_000_000 + order[record.trace_id] * 1_000_000_000
                 - first[record.trace_id])
        out.append(dataclasses.replace(
            record, start_time_unix_nano=record.start_time_unix_nano + shift,
            end_time_unix_nano=record.end_time_unix_nano + shift))
    return out
