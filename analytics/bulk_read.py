"""Bulk reads of the store: DuckDB's memory bounded while they run, and small polars
frames registered for their SQL to join.

A what-if at a million runs reads every LLM call's attributes once; without a bound,
DuckDB's buffer pool keeps every block it read, and the process grows by about 1 GB per
100,000 runs. :func:`run_bounded` runs such a read under :data:`MEMORY_LIMIT` and gives
the connection back its own limit afterwards.

Those settings (``memory_limit``, ``preserve_insertion_order``) belong to the whole DuckDB
database instance,
which every connection of the process to the same file shares. Two bulk reads side by side
(two dashboard viewers' what-ifs in the server's threads) would each put back what it found,
in the wrong order, and leave a bound or one thread in force for every later query; so the
outermost :func:`run_bounded` of a thread holds :data:`_SETTINGS_LOCK` while it runs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TypeVar

import duckdb
import polars as pl

from cliffwatch.telemetry.memory_limit import (
    current_memory_limit,
    memory_limit,
    restore_memory_limit,
)

T = TypeVar("T")
_log = logging.getLogger(__name__)

MEMORY_LIMIT = "512MB"
"""DuckDB's ``memory_limit`` while the report reads the store (:func:`bounded_memory`), and
a what-if whose caller brings the class estimates: without it the buffer pool keeps every
block of span attributes it has read (about 1 GB per 100,000 runs), with it DuckDB evicts
them, or spills, as it goes. A report at 1M runs under 256 MB ran out of it and read
everything again unbounded, 5.1 GB (issue 11), so the report keeps 512 MB. Traced (RSS and
``duckdb_memory()`` per step): the spend by model and role (chunked,
:data:`analytics.percentiles.UNIT_CHUNK_RUNS`) now fits 256 MB; the read that ran out was
the what-if's Python counterfactual loading its runs' calls in one batch
(:func:`analytics.recorded.load_recorded_runs`: 6,000 runs spread over the whole store,
every span block scanned), since read in one pass with the run ids a registered table
DuckDB filters the scan by (:data:`analytics.whatif_rows.PY_READ_RUNS`; DuckDB at ~175
MB under 256 MB at 1M runs). The report's what-if pass (the findings'
two what-ifs and the report's, 41 chunks) reads under :data:`FINDINGS_MEMORY_LIMIT`, the
report's own what-if replayed as a summary (no per-run rows kept): at 1M runs the
report's peak went from 1.29 GB to 0.95 GB (issue 11)."""

FINDINGS_MEMORY_LIMIT = "256MB"
"""DuckDB's ``memory_limit`` while ``cliffwatch findings`` (:func:`analytics.findings.
find_findings`) reads the store; inside a report the findings read under the report's
:data:`MEMORY_LIMIT`, but for their what-ifs (the report's among them), read under this
bound there too (at 1M runs: DuckDB ~210 MB through the pass, where the report's 512 MB
held up to ~450 MB). Each of its reads holds one chunk of runs (the what-ifs' (variant,
run) pairs, :data:`analytics.whatif_rows.CHUNK_PAIRS`, only the runs the findings sum; the
class estimates'). At 1M runs it peaked at 0.94-0.96 GB against 1.18 GB under 512 MB,
with no read out of the bound (two runs, load 5-10; issue 11)."""


WHATIF_MEMORY_LIMIT = "256MB"
"""DuckDB's ``memory_limit`` while a what-if reads its class estimates and its rows
(:func:`analytics.whatif.what_ifs` without given estimates: ``cliffwatch whatif``, the
dashboard's What-if page): the class estimates (from ``runs``, or on an older store one
query over every worker call), the runs' alike read and one chunk of replayed runs at a time
(:data:`analytics.whatif_rows.CHUNK_PAIRS`), so the buffer pool needs no more; the lower
bound is meant to keep ``whatif`` at 1M runs under 1 GB of peak RSS (issue 11: 1.11 GB
under 512 MB when it staged every run). Should a read still run out of it,
:func:`run_bounded` reads again under the bound around it. The findings and the report
(which bring their estimates) read under :data:`FINDINGS_MEMORY_LIMIT` and
:data:`MEMORY_LIMIT`."""


@contextmanager
def bounded_memory(
    con: duckdb.DuckDBPyConnection, limit: str | None = None, *, keep_order: bool = False
) -> Iterator[None]:
    """Run the block under DuckDB ``memory_limit`` = ``limit`` (default
    :data:`MEMORY_LIMIT`), then put back the connection's own (the setting is the database
    instance's, so a caller's limit is restored whatever happens). Insertion order is not
    preserved within (callers sort what they read) unless ``keep_order``. A ClickHouse
    store's connection is left as it is: the engine bounds its own memory."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        yield
        return
    # the order read before either is set, so it comes back whatever fails (and the limit
    # whatever putting the order back does)
    order = con.sql("SELECT current_setting('preserve_insertion_order')").fetchall()
    with memory_limit(con, limit or MEMORY_LIMIT):
        try:
            if not keep_order:
                con.execute("SET preserve_insertion_order = false")  # callers sort what they read
            yield
        finally:
            con.execute("SET preserve_insertion_order = $keep",
                        {"keep": bool(order[0][0]) if order else True})


_BOUND: ContextVar[str | None] = ContextVar("cliffwatch_bulk_read_bound", default=None)
"""Where this thread's :func:`run_bounded` calls stand: None outside any, ``"bounded"``
inside one's bound, ``"unbounded"`` inside the outermost one's second try."""
_LIMIT: ContextVar[str | None] = ContextVar("cliffwatch_bulk_read_limit", default=None)
"""The bound of the innermost :func:`run_bounded` call running in this thread: a nested
call given no limit of its own reads under it (the findings' lower bound stays the
bound of the what-ifs they run)."""


_SETTINGS_LOCK = threading.Lock()
"""Held by a thread's outermost :func:`run_bounded` on a DuckDB connection while its block
runs: bulk reads of one process change the database's settings one at a time (module doc).
Nested calls run inside it; the chunk pool's threads only read."""


def run_bounded(
    con: duckdb.DuckDBPyConnection, work: Callable[[], T], *, keep_order: bool = False,
    limit: str | None = None,
) -> T:
    """``work()`` under :func:`bounded_memory` (``limit``, default :data:`MEMORY_LIMIT`, or
    inside another call the bound of that call, and ``keep_order`` as there); when DuckDB
    runs out of memory there (an operator that cannot spill), ``work()`` again under the
    connection's own limit (the one around this call): a bound that keeps memory low must
    never turn an answer into an error.

    Nested calls (a what-if inside the findings inside the report) leave the second try to
    the outermost: an inner one that runs out of memory raises to it, and inside its second
    try no inner call sets a bound again. (Each level retrying under the bound around it
    had findings at 1M runs under a 320 MB bound fail three times, then finish with no
    bound at 5.4 GB: issue 11.)

    Raises:
        duckdb.OutOfMemoryException: only from a nested call (to the outermost), or from
            the outermost's second try.
    """
    state = _BOUND.get()
    if state == "unbounded":
        return work()
    if limit is None and state == "bounded":
        limit = _LIMIT.get()
    held: AbstractContextManager[object] = (
        _SETTINGS_LOCK if state is None and isinstance(con, duckdb.DuckDBPyConnection)
        else nullcontext())
    with held:
        token = _BOUND.set("bounded")
        limit_token = _LIMIT.set(limit or MEMORY_LIMIT)
        try:
            with bounded_memory(con, limit, keep_order=keep_order):
                return work()
        except duckdb.OutOfMemoryException:
            if state == "bounded":
                raise
            _log.warning("DuckDB ran out of memory under the %s bound; reading again under "
                         "the connection's own limit", limit or MEMORY_LIMIT)
            _BOUND.set("unbounded")
            return work()
        finally:
            _LIMIT.reset(limit_token)
            _BOUND.reset(token)


RELEASE_FLOOR = "64MB"
"""The ``memory_limit`` :func:`release_cache` sets for a moment to make DuckDB evict the
blocks it keeps cached."""


def release_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Let DuckDB drop the blocks it has kept cached since the last bound was set (they
    count in the process's resident memory), then put the limit back: the bound of the
    innermost :func:`run_bounded` call running, else the connection's own. Call it
    between a bulk read and Python work that builds large frames of its own (the findings'
    detectors after their what-ifs at 1M runs read the runs' columns and filter them
    with up to 512 MB of span blocks still cached: issue 11).

    Blocks a running query holds cannot be evicted: then DuckDB refuses the lower limit,
    and the limit stays as it was (nothing raised). A ClickHouse store's connection is
    left as it is."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return
    bound = _LIMIT.get() if _BOUND.get() == "bounded" else None
    before = current_memory_limit(con)
    try:
        con.execute("SET memory_limit = $limit", {"limit": RELEASE_FLOOR})
    except duckdb.Error:
        pass  # pinned blocks over the floor: nothing to let go of now
    finally:
        if bound is not None:
            con.execute("SET memory_limit = $limit", {"limit": bound})
        else:
            restore_memory_limit(con, before)


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, **frames: pl.DataFrame) -> Iterator[dict[str, str]]:
    """Register small polars frames on ``con`` under unique names; yield ``{key: name}``
    and unregister them afterwards (the caller's connection is left as it was)."""
    suffix = uuid.uuid4().hex[:12]
    names = {key: f"_cw_{key}_{suffix}" for key in frames}
    try:
        for key, df in frames.items():
            con.register(names[key], df.to_arrow())
        yield names
    finally:
        for name in names.values():
            con.unregister(name)
