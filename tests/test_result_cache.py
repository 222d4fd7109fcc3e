"""The persisted result cache (analytics/result_cache.py) and the dashboard pages that use
it (Findings, What-if): an entry is written after a compute, read by a fresh process state
(Streamlit's caches cleared, as after a restart), unreachable after a write to the store,
never written for a window that runs to the clock, and an unreadable one is computed again.
Real DuckDB stores through the real write path; the pages run in-process (AppTest).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from apptest_pages import open_page
from dashboard_store import StoreFixture, build_store
from streamlit.testing.v1 import AppTest
from waits import scaled

from cliffwatch import settings
from cliffwatch.analytics import result_cache
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.testing import make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TIMEOUT_S = scaled(120)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "results"
    monkeypatch.setenv(settings.CLIFFWATCH_RESULT_CACHE, str(folder))
    return folder


def test_entry_round_trips_frames_and_scalars(cache_dir: Path) -> None:
    key = result_cache.cache_key("whatif", "/s.duckdb", (1, 2), {"since": None})
    frame = pl.DataFrame({"run_id": ["a", "b"], "cost_usd": [0.5, None]})
    assert result_cache.load(key) is None
    result_cache.save(key, {"runs": frame}, {"window_days": 2.5, "python_runs": 3})
    frames, meta = result_cache.load(key) or ({}, {})
    assert frames["runs"].equals(frame)
    assert meta == {"window_days": 2.5, "python_runs": 3}


def test_key_moves_with_version_parameters_and_store() -> None:
    base = result_cache.cache_key("findings", "/s.duckdb", (1, 2), {"task_class": None})
    assert base == result_cache.cache_key("findings", "/s.duckdb", (1, 2), {"task_class": None})
    assert base != result_cache.cache_key("findings", "/s.duckdb", (1, 3), {"task_class": None})
    assert base != result_cache.cache_key("findings", "/t.duckdb", (1, 2), {"task_class": None})
    assert base != result_cache.cache_key("findings", "/s.duckdb", (1, 2), {"task_class": "a"})
    assert base != result_cache.cache_key("whatif", "/s.duckdb", (1, 2), {"task_class": None})


def test_unreadable_entry_is_dropped(cache_dir: Path) -> None:
    key = result_cache.cache_key("findings", "/s.duckdb", (1,), {})
    result_cache.save(key, {"findings": pl.DataFrame({"a": [1]})}, {})
    (cache_dir / key / "findings.arrow").write_bytes(b"not arrow")
    assert result_cache.load(key) is None
    assert not (cache_dir / key).exists()


def test_off_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_RESULT_CACHE, "off")
    assert settings.result_cache_dir() is None
    key = result_cache.cache_key("findings", "/s.duckdb", (1,), {})
    result_cache.save(key, {"findings": pl.DataFrame({"a": [1]})}, {})
    assert result_cache.load(key) is None


def test_oldest_entries_go_past_the_limit(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(result_cache, "MAX_ENTRIES", 2)
    keys = [result_cache.cache_key("findings", "/s.duckdb", (n,), {}) for n in range(3)]
    for key in keys:
        result_cache.save(key, {"findings": pl.DataFrame({"a": [1]})}, {})
    kept = sorted(p.name for p in cache_dir.iterdir())
    assert len(kept) == 2 and keys[-1] in kept


def test_a_window_open_after_a_start_is_not_kept() -> None:
    assert result_cache.persistable(Window())
    assert result_cache.persistable(Window.parse("2026-11-01", "2026-11-05"))
    assert not result_cache.persistable(Window.parse("2026-11-01"))


@pytest.fixture
def store(tmp_path: Path) -> StoreFixture:
    return build_store(tmp_path / "cliffwatch.duckdb")


def _page(store: StoreFixture, page: str, **params: str) -> AppTest:
    """A new session on ``page`` with Streamlit's in-memory caches cleared (a restart)."""
    st.cache_data.clear()
    st.cache_resource.clear()
    return open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S), page, **params)


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if not p.name.startswith(".")) \
        if cache_dir.exists() else []


def test_findings_page_reads_the_kept_result_after_a_restart(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    first = _page(store, "views/findings.py")
    (entry,) = _entries(cache_dir)
    kept = pl.read_ipc(entry / "findings.arrow")
    assert kept.height > 0
    assert {m.label: m.value for m in first.metric}["Findings"] == str(kept.height)
    # The page shows what the entry holds: mark it, and a fresh state shows the mark.
    kept.with_columns(pl.lit("kept-entry-title").alias("title")).write_ipc(
        entry / "findings.arrow")
    again = _page(store, "views/findings.py")
    assert "kept-entry-title" in " ".join(t.value for t in again.text)

    # A write to the store moves its version: the entry is not read, a new one is kept.
    with_new = make_runs_costing([0.03], started_at_ns=ns_at("2026-11-09T12:00:00"))
    write_spans(store.path, with_new)
    fresh = _page(store, "views/findings.py")
    assert "kept-entry-title" not in " ".join(t.value for t in fresh.text)
    assert len(_entries(cache_dir)) == 2


def test_findings_of_a_window_from_the_clock_are_not_kept(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    _page(store, "views/findings.py", since="30d")
    _page(store, "views/findings.py", until="today")
    assert _entries(cache_dir) == []


def test_whatif_page_reads_the_kept_result_after_a_restart(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    first = _page(store, "views/whatif.py", max_workers="2")
    (entry,) = _entries(cache_dir)
    metrics = {m.label: m.value for m in first.metric}
    runs = pl.read_ipc(entry / "runs.arrow")
    assert metrics["Runs"] == f"{runs.height:,}" and runs.height == sum(
        len(c) for c in store.costs_usd.values())
    # Half the runs dropped from the entry: a fresh state counts what the entry holds.
    runs.head(10).write_ipc(entry / "runs.arrow")
    again = _page(store, "views/whatif.py", max_workers="2")
    assert {m.label: m.value for m in again.metric}["Runs"] == "10"
    # Other limits are another entry.
    _page(store, "views/whatif.py", max_workers="3")
    assert len(_entries(cache_dir)) == 2


def test_the_cli_and_the_dashboard_share_results(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli.app import app as cli

    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    done = CliRunner().invoke(cli, ["findings", "--db", str(store.path), "--format", "json"])
    assert done.exit_code == 0, done.output
    (entry,) = _entries(cache_dir)
    pl.read_ipc(entry / "findings.arrow").with_columns(
        pl.lit("kept-by-the-cli").alias("title")).write_ipc(entry / "findings.arrow")
    page = _page(store, "views/findings.py")
    assert "kept-by-the-cli" in " ".join(t.value for t in page.text)
    assert len(_entries(cache_dir)) == 1

    # The page computes a what-if; the CLI then prints what the page kept.
    _page(store, "views/whatif.py", max_workers="2")
    (whatif_entry,) = set(_entries(cache_dir)) - {entry}
    kept_runs = pl.read_ipc(whatif_entry / "runs.arrow")
    kept_runs.head(7).write_ipc(whatif_entry / "runs.arrow")
    done = CliRunner().invoke(cli, ["whatif", "--db", str(store.path), "--max-workers", "2",
                                    "--format", "json"])
    assert done.exit_code == 0, done.output
    assert '"runs": 7' in done.output and kept_runs.height > 7


def test_a_dead_writers_folder_is_removed(cache_dir: Path) -> None:
    import os
    import time

    cache_dir.mkdir(parents=True)
    dead = cache_dir / ".building-dead"
    dead.mkdir()
    old = time.time() - result_cache.STALE_BUILD_S - 60
    os.utime(dead, (old, old))
    fresh = cache_dir / ".building-now"  # another process writing now: left alone
    fresh.mkdir()
    result_cache.save(result_cache.cache_key("findings", "/s.duckdb", (1,), {}),
                      {"findings": pl.DataFrame({"a": [1]})}, {})
    assert not dead.exists() and fresh.exists()


def test_a_second_computation_of_a_key_waits_and_reads_the_first(cache_dir: Path) -> None:
    import threading

    key = result_cache.cache_key("findings", "/s.duckdb", (1,), {})
    first = pl.DataFrame({"a": [1, 2]})
    started, release = threading.Event(), threading.Event()

    def slow() -> pl.DataFrame:
        started.set()
        assert release.wait(scaled(30))
        return first

    computed: list[pl.DataFrame] = []
    holder = threading.Thread(target=lambda: computed.append(
        result_cache.findings_through(key, slow)))
    holder.start()
    assert started.wait(scaled(30))
    second_calls: list[int] = []
    got: list[pl.DataFrame] = []

    def again() -> pl.DataFrame:
        second_calls.append(1)
        return pl.DataFrame({"a": [9]})

    waiter = threading.Thread(target=lambda: got.append(
        result_cache.findings_through(key, again)))
    waiter.start()
    waiter.join(3 * result_cache.WAIT_POLL_S)
    assert waiter.is_alive()  # held while the first computes, not computing beside it
    release.set()
    holder.join(scaled(30))
    waiter.join(scaled(30))
    assert not second_calls  # it read what the first kept
    assert got[0].equals(first) and computed[0].equals(first)


def test_a_lock_whose_holder_is_gone_holds_nobody(cache_dir: Path) -> None:
    key = result_cache.cache_key("findings", "/s.duckdb", (2,), {})
    with result_cache.computing(key):
        pass  # a computation that ended without keeping anything (it failed)
    assert result_cache.findings_through(key, lambda: pl.DataFrame({"a": [3]}))["a"][0] == 3
    assert result_cache.load(key) is not None


def test_an_old_lock_still_held_is_not_pruned(cache_dir: Path) -> None:
    """A computation running past STALE_BUILD_S keeps its lock: a prune (any save) must
    not unlink it, or a second process would lock a new file and compute beside it."""
    import os
    import threading
    import time

    key = result_cache.cache_key("findings", "/s.duckdb", (4,), {})
    lock = cache_dir / f".lock-{key}"
    old = time.time() - result_cache.STALE_BUILD_S - 60
    entered = threading.Event()
    with result_cache.computing(key):
        os.utime(lock, (old, old))
        result_cache.save(result_cache.cache_key("findings", "/s.duckdb", (5,), {}),
                          {"findings": pl.DataFrame({"a": [1]})}, {})  # prunes
        assert lock.exists()
        def wait_for_it() -> None:
            with result_cache.computing(key):
                entered.set()

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert not entered.wait(3 * result_cache.WAIT_POLL_S)  # still excluded
    assert entered.wait(scaled(30))
    waiter.join(scaled(30))


def test_an_old_lock_nobody_holds_is_pruned(cache_dir: Path) -> None:
    import os
    import time

    key = result_cache.cache_key("findings", "/s.duckdb", (6,), {})
    with result_cache.computing(key):
        pass
    lock = cache_dir / f".lock-{key}"
    old = time.time() - result_cache.STALE_BUILD_S - 60
    os.utime(lock, (old, old))
    result_cache.save(result_cache.cache_key("findings", "/s.duckdb", (7,), {}),
                      {"findings": pl.DataFrame({"a": [1]})}, {})
    assert not lock.exists()


def test_a_lock_unlinked_while_waiting_is_taken_again_at_its_path(cache_dir: Path) -> None:
    """A waiter that opened the lock file before a prune unlinked it must not hold the
    unlinked inode: it locks the file at the path, which excludes a later process."""
    import fcntl
    import threading

    key = result_cache.cache_key("findings", "/s.duckdb", (8,), {})
    lock = cache_dir / f".lock-{key}"
    entered = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with result_cache.computing(key):
            entered.set()
            assert release.wait(scaled(30))

    with result_cache.computing(key):
        thread = threading.Thread(target=waiter)
        thread.start()
        assert not entered.wait(3 * result_cache.WAIT_POLL_S)
        lock.unlink()  # as a prune does, while the waiter holds the old file open
    assert entered.wait(scaled(30))
    with lock.open("a+b") as handle:  # the path's file is the one the waiter holds
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    release.set()
    thread.join(scaled(30))


def test_the_start_up_computation_is_what_the_pages_show_first(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dashboard/serve.py runs these commands at start: the Findings and What-if pages,
    # opened with no parameters, read their entries (marked here) and compute nothing.
    from typer.testing import CliRunner

    from cliffwatch.cli.app import app as cli
    from cliffwatch.dashboard import serve

    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    commands = serve.precompute_commands(str(store.path))
    assert [c[3] for c in commands] == ["findings", "whatif"]
    for command in commands:
        done = CliRunner().invoke(cli, command[3:])
        assert done.exit_code == 0, done.output
    entries = _entries(cache_dir)
    assert len(entries) == 2
    for entry in entries:
        for name in ("findings", "runs"):
            if (entry / f"{name}.arrow").exists():
                kept = pl.read_ipc(entry / f"{name}.arrow")
                mark = {"findings": pl.lit("kept-at-start").alias("title"),
                        "runs": pl.lit("kept-at-start").alias("task_class")}[name]
                kept.with_columns(mark).head(3).write_ipc(entry / f"{name}.arrow")
    findings = _page(store, "views/findings.py")
    assert "kept-at-start" in " ".join(t.value for t in findings.text)
    whatif = _page(store, "views/whatif.py")
    assert {m.label: m.value for m in whatif.metric}["Runs"] == "3"
    assert _entries(cache_dir) == entries  # nothing computed again


def test_nothing_is_computed_at_start_without_a_result_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cliffwatch.dashboard import serve

    monkeypatch.setenv(settings.CLIFFWATCH_RESULT_CACHE, "off")
    assert serve.precompute_commands("/s.duckdb") == []
    assert serve.precompute_commands("chdb:///tmp/x") == []


def test_the_start_up_computation_can_be_turned_off_alone(
    store: StoreFixture, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli.app import app as cli
    from cliffwatch.dashboard import serve

    assert serve.precompute_commands(str(store.path))  # the result cache is on here
    monkeypatch.setenv(settings.CLIFFWATCH_DASHBOARD_PRECOMPUTE, "off")
    assert serve.precompute_commands(str(store.path)) == []
    monkeypatch.setenv(settings.CLIFFWATCH_DASHBOARD_PRECOMPUTE, "sometimes")
    refused = CliRunner().invoke(cli, ["dashboard", "--db", str(store.path)])
    assert refused.exit_code != 0
    assert "CLIFFWATCH_DASHBOARD_PRECOMPUTE" in refused.output
    assert "Traceback" not in refused.output
