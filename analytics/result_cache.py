"""Whole-window analyses kept on disk between processes: the Findings and What-if pages of
the dashboard read a result here instead of computing it again after a server restart, in
another server, or once any process has computed it for the same store and parameters.

A result is found by a key (:func:`cache_key`): the analysis, the store (its resolved path
or URL), the store's write version (:func:`analytics.rollup_read.write_version`: every
write that changes a run moves it, so a new write makes the entry unreachable), the
parameters (window ends, task class, limits, thresholds, as the caller lists them) and a
fingerprint of the analysis code (the ``.py`` files of analytics/ and orchestrator/), so a
changed formula is never answered with an old figure. Only a window whose result does not
depend on the clock is kept (:func:`persistable`, :func:`reads_clock`). The dashboard and
``cliffwatch findings`` / ``cliffwatch whatif`` build the same keys (:func:`analysis_key`),
so either reads what the other computed.

An entry is a folder under ``settings.result_cache_dir()`` (``$CLIFFWATCH_RESULT_CACHE``)
named by the key: one Arrow IPC file per frame (lz4) and ``meta.json`` (the scalars),
written to a temporary folder and renamed into place, so a reader sees a whole entry or
none. At most :data:`MAX_ENTRIES` are kept (the least recently used go first). The cache
never changes a figure and never fails a page: an entry that cannot be read is computed
again, one that cannot be written is logged and skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from cliffwatch import __version__, settings
from cliffwatch.analytics.whatif import WhatIf
from cliffwatch.analytics.whatif_rows import Overrides
from cliffwatch.analytics.window import Window, WindowError, parse_when

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Part of every key: bump it when an entry's layout changes."""

MAX_ENTRIES = 16
"""Entries kept at most; a what-if of a million runs is about 40 MB on disk."""

_META = "meta.json"
_CODE_PACKAGES = ("analytics", "orchestrator")


@cache
def code_fingerprint() -> str:
    """SHA-256 (hex) of the ``.py`` files of analytics/ and orchestrator/ (names and bytes):
    part of every key, so an entry computed by other code is never read. Read once per
    process (about 40 files)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(__version__.encode())
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def persistable(window: Window) -> bool:
    """Whether a result over ``window`` can be kept: True unless the window has a start and
    no end (its length, and so every projection to a year, runs to the clock). A window
    whose ends were read from the clock (``7d``) must be left out too
    (:func:`reads_clock`)."""
    return window.since is None or window.until is not None


_EPOCH = datetime(2000, 1, 1)


def reads_clock(*ends: str | None) -> bool:
    """Whether a window end as typed (``--since`` / ``--until`` text) is read back from the
    clock (``24h``, ``7d``, ``today``): two readings at different times differ. False for
    None, fixed dates and a value that cannot be read (its reader reports it)."""
    for text in filter(None, ends):
        try:
            if parse_when(text, now=_EPOCH) != parse_when(text, now=_EPOCH + timedelta(days=1)):
                return True
        except WindowError:
            continue
    return False


def analysis_key(kind: str, store: str | os.PathLike[str], version: tuple[int, ...] | None,
                 window: Window, ends: tuple[str | None, str | None],
                 task_class: str | None, **params: Any) -> str | None:
    """The key of an analysis of ``window`` (and ``task_class``) in ``store``, or None when
    its result must not outlive the process: no write version (a store without roll-ups,
    or a ClickHouse store), a window end read from the clock (``ends``, the
    ``--since`` / ``--until`` text) or a start without an end (:func:`persistable`).

    Args:
        kind: the analysis (``"findings"``, ``"whatif"``).
        store: the store as given (a DuckDB path, resolved here, or a URL).
        version: :func:`analytics.rollup_read.write_version` of the store, or None.
        window: the window read from ``ends``.
        ends: the window's ``since`` and ``until`` as typed (None: open).
        task_class: the one class analysed, or None for all.
        **params: the analysis' other parameters (limits, thresholds), JSON-able.
    """
    if (version is None or settings.is_engine_store(store) or reads_clock(*ends)
            or not persistable(window)):
        return None
    return cache_key(kind, str(Path(store).resolve()), version,
                     {"since": window.since, "until": window.until, "task_class": task_class,
                      **params})


def cache_key(kind: str, store: str, version: tuple[int, ...],
              params: Mapping[str, Any]) -> str:
    """The key of one result (hex SHA-256).

    Args:
        kind: the analysis (``"findings"``, ``"whatif"``).
        store: the store as opened (a resolved path, or a URL).
        version: the store's write version.
        params: everything else the result depends on, JSON-able (``str`` for the rest).
    """
    text = json.dumps([FORMAT_VERSION, code_fingerprint(), kind, store, list(version),
                       dict(params)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load(key: str) -> tuple[dict[str, pl.DataFrame], dict[str, Any]] | None:
    """The frames and scalars stored under ``key``, or None (no entry, the cache is off,
    or the entry cannot be read: it is then removed)."""
    folder = _folder(key)
    if folder is None or not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        frames = {name: pl.read_ipc(folder / f"{name}.arrow")
                  for name in meta.pop("frames")}
        os.utime(folder)  # recently used
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
        log.warning("result cache entry %s unreadable, computing again: %s", key[:12], exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return frames, meta


def save(key: str, frames: Mapping[str, pl.DataFrame], meta: Mapping[str, Any]) -> None:
    """Store ``frames`` and ``meta`` (JSON-able scalars) under ``key``; then drop the least
    recently used entries past :data:`MAX_ENTRIES`. Best effort: a failure is logged (the
    result was computed and is shown anyway)."""
    folder = _folder(key)
    if folder is None:
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        for name, frame in frames.items():
            frame.write_ipc(building / f"{name}.arrow", compression="lz4")
        (building / _META).write_text(json.dumps({**meta, "frames": list(frames)}),
                                      encoding="utf-8")
        try:
            building.rename(folder)
        except OSError:  # another process stored it first: theirs is the same result
            shutil.rmtree(building, ignore_errors=True)
        _prune(folder.parent)
    except (OSError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        log.warning("result cache: could not keep %s: %s", key[:12], exc)


WAIT_POLL_S = 0.25
"""How often a process waiting for another's computation of the same key looks again."""


@contextmanager
def computing(key: str | None) -> Iterator[None]:
    """Held while this process computes the result of ``key``: one process at a time per
    key (an exclusive ``flock`` on ``.lock-KEY`` in the cache folder), so a second
    process (another server's page, the dashboard's start-up computation, the CLI) waits
    for the first and reads its entry instead of computing the same analysis beside it
    (seconds of both cores and a GB at a million runs). The lock goes with its process:
    one that dies mid-compute holds nobody up. No key, the cache off, or a folder that
    cannot be written: nothing is held (the caller computes).

    Waiting polls every :data:`WAIT_POLL_S` (a Streamlit page stopped meanwhile is not
    held in a blocking call)."""
    folder = _folder(key) if key else None
    handle = None
    if folder is not None:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            handle = _lock(folder.parent / f".lock-{key}")
        except OSError as exc:
            log.warning("result cache: no lock for %s, computing anyway: %s", key, exc)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _lock(path: Path) -> BinaryIO:
    """``path`` opened and exclusively ``flock``-ed, waiting (polling) while another
    process holds it. A lock file unlinked by :func:`_prune` between this process's open
    and its lock is opened again: holding an inode no longer at ``path`` would let a third
    process lock a new file beside it.

    Raises OSError when the file cannot be opened."""
    while True:
        handle = path.open("a+b")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(WAIT_POLL_S)
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def _through(key: str | None, compute: Callable[[], tuple[dict[str, pl.DataFrame], dict[str, Any]]],
             ) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The frames and scalars kept under ``key``; else ``compute()``'s, kept under ``key``
    (None: computed, nothing kept), computed by one process at a time (:func:`computing`:
    a process that waited reads what the other kept)."""
    kept = load(key) if key else None
    if kept is not None:
        return kept
    with computing(key):
        kept = load(key) if key else None
        if kept is not None:
            return kept
        frames, meta = compute()
        if key:
            save(key, frames, meta)
    return frames, meta


def findings_through(key: str | None, compute: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """The findings frame kept under ``key``; else ``compute()``'s, kept under ``key``
    (None: computed, nothing kept; see :func:`computing` for two processes at once)."""
    return _through(key, lambda: ({"findings": compute()}, {}))[0]["findings"]


def whatif_through(key: str | None, overrides: Overrides, window: Window,
                   task_class: str | None, compute: Callable[[], WhatIf]) -> WhatIf:
    """The :class:`~analytics.whatif.WhatIf` kept under ``key``, put back together with the
    arguments it was computed for; else ``compute()``'s, its frames and figures kept under
    ``key`` (None: computed, nothing kept; see :func:`computing` for two processes at
    once)."""
    computed: list[WhatIf] = []

    def parts() -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
        what = compute()
        computed.append(what)
        return ({"runs": what.runs, "by_class": what.by_class},
                {"window_days": what.window_days, "elapsed_s": what.elapsed_s,
                 "load_s": what.load_s, "python_runs": what.python_runs})

    frames, meta = _through(key, parts)
    if computed:
        return computed[0]
    return WhatIf(overrides=overrides, window=window, task_class=task_class,
                  runs=frames["runs"], by_class=frames["by_class"], **meta)


def _folder(key: str) -> Path | None:
    root = settings.result_cache_dir()
    return None if root is None else root / key


STALE_BUILD_S = 3600.0
"""A temporary folder older than this is what a process that died while writing left."""


def _prune(root: Path) -> None:
    entries: list[tuple[float, Path]] = []
    now = time.time()
    for path in root.iterdir():
        try:
            mtime = path.stat().st_mtime
        except OSError:  # removed by another process meanwhile
            continue
        if not path.name.startswith("."):
            entries.append((mtime, path))
        elif path.name.startswith(".building-") and now - mtime > STALE_BUILD_S:
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".lock-") and now - mtime > STALE_BUILD_S:
            _unlink_unheld(path)
    for _, old in sorted(entries, reverse=True)[MAX_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)


def _unlink_unheld(lock: Path) -> None:
    """Remove an old ``.lock-KEY`` file unless a process holds it (a computation may run
    past :data:`STALE_BUILD_S`: its lock must stay, or a second process would lock a new
    file and compute beside it). Taken without waiting; unlinked while held, so a process
    that opened it meanwhile sees the inode gone and opens the path again (:func:`_lock`)."""
    try:
        with lock.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink(missing_ok=True)
    except OSError:  # held (BlockingIOError) or already gone: left as it is
        pass

