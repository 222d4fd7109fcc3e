"""Chunks of a bulk read run side by side: each chunk's query on its own DuckDB cursor.

DuckDB runs one query on every thread it has, but a what-if chunk's query is many small
operators (groups, joins of 25,000 runs): on 2 cores the staging and :data:`analytics.
whatif_sql.RUN_SQL` kept 1.5-1.8 of them busy, and a parallel hash group costs CPU of its
own to combine. :func:`chunk_cursors` gives :data:`WORKERS` cursors of one connection
(the database's threads shared out between them) and :func:`in_order` runs one chunk on
each at a time, the results in chunk order (issue 11).

Memory: :data:`WORKERS` chunks are read at once, under the one ``memory_limit`` of the
database (:mod:`analytics.bulk_read`); the callers' chunks are sized for it.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TypeVar

import duckdb
import polars as pl

from cliffwatch.analytics.bulk_read import registered

T = TypeVar("T")

WORKERS = 2
"""Chunks read at once (at most the database's ``threads``)."""

Worker = tuple[duckdb.DuckDBPyConnection, dict[str, str]]
"""A cursor and the names its registered frames have on it."""


@contextmanager
def one_worker(con: duckdb.DuckDBPyConnection, **frames: pl.DataFrame) -> Iterator[list[Worker]]:
    """``con`` itself as the one worker (``frames`` registered on it): the chunks read one
    after the other, on every thread of the database (or a ClickHouse store's engine)."""
    with registered(con, **frames) as names:
        yield [(con, names)]


@contextmanager
def chunk_cursors(con: duckdb.DuckDBPyConnection, **frames: pl.DataFrame) -> Iterator[list[Worker]]:
    """Cursors of ``con`` (up to :data:`WORKERS`, at most its ``threads``), each with
    ``frames`` registered (:func:`analytics.bulk_read.registered`: ``{key: name}`` per
    cursor) and the database's ``threads`` shared out between them; ``threads`` is put back
    and the cursors closed afterwards, whatever happens."""
    rows = con.sql("SELECT current_setting('threads')").fetchall()
    threads = int(rows[0][0]) if rows else 1
    n = max(1, min(WORKERS, threads))
    with ExitStack() as stack:
        workers: list[Worker] = []
        for _ in range(n):
            cursor = con.cursor()
            stack.callback(cursor.close)
            workers.append((cursor, stack.enter_context(registered(cursor, **frames))))
        con.execute(f"SET threads = {max(1, threads // n)}")
        try:
            yield workers
        finally:
            con.execute(f"SET threads = {threads}")


def in_order(workers: list[Worker], tasks: Iterable[Callable[[Worker], T]]) -> Iterator[T]:
    """Each of ``tasks`` run on a free one of ``workers`` (one task per worker at a time,
    the next started as one ends; at most two tasks per worker started or done and not
    yet yielded), its result yielded in task order. A task's exception is raised here, at
    its turn (the tasks already submitted finish first). One worker runs them in the
    calling thread."""
    if len(workers) == 1:
        for task in tasks:
            yield task(workers[0])
        return
    free: queue.SimpleQueue[Worker] = queue.SimpleQueue()
    for worker in workers:
        free.put(worker)

    def run(task: Callable[[Worker], T]) -> T:
        worker = free.get()
        try:
            return task(worker)
        finally:
            free.put(worker)

    with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="cw-chunk") as pool:
        pending: deque[Future[T]] = deque()
        for task in tasks:
            pending.append(pool.submit(run, task))
            # a task queued ahead of each worker: one that ends starts the next even while
            # the oldest (whose result comes first) still runs
            if len(pending) >= 2 * len(workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
