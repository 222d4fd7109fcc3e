"""dashboard/serve.py: the pages' modules are loaded before Streamlit serves (so the first
visitor's script run does not import them), and Streamlit's post-run GC is off."""

from __future__ import annotations

import sys

import pytest

from cliffwatch.dashboard import serve


def test_warm_imports_load_every_listed_module_and_skip_a_broken_one() -> None:
    serve.warm_imports((*serve.WARM_MODULES, "cliffwatch.no_such_module"))
    assert all(name in sys.modules for name in serve.WARM_MODULES)
    assert "cliffwatch.no_such_module" not in sys.modules


def test_every_module_a_page_imports_is_warmed() -> None:
    from pathlib import Path

    views = Path(serve.__file__).with_name("views")
    imported = set()
    for page in views.glob("*.py"):
        for line in page.read_text().splitlines():
            if line.startswith("from cliffwatch.dashboard import "):
                imported |= {f"cliffwatch.dashboard.{n.strip()}"
                             for n in line.split(" import ")[1].split(",")}
            elif line.startswith("from cliffwatch.dashboard."):
                imported.add(line.split()[1])
    heavy = {m for m in imported if m.endswith(("_queries", "_panel", "controls"))}
    assert heavy <= set(serve.WARM_MODULES)


def test_streamlit_runs_without_its_post_script_gc_and_with_a_cache_budget() -> None:
    assert serve.STREAMLIT_FLAGS == ("--runner.postScriptGC", "false",
                                     "--server.maxCacheDataSize", "256mb")


def test_warm_store_reads_the_write_version_before_the_first_page(
        tmp_path, monkeypatch) -> None:
    from dashboard_store import build_store

    from cliffwatch.dashboard import queries

    path = tmp_path / "store.duckdb"
    build_store(path)
    monkeypatch.setenv("CLIFFWATCH_DB", str(path))
    monkeypatch.setattr(queries, "_VERSIONS", {})
    serve.warm_store()
    _, version = queries._VERSIONS[path]
    assert version[0] == 1  # the write version was read, not the file signature
    assert queries.store_version(path) == version


def test_warm_store_leaves_a_missing_store_to_the_page(tmp_path, monkeypatch) -> None:
    from cliffwatch.dashboard import queries

    monkeypatch.setenv("CLIFFWATCH_DB", str(tmp_path / "none.duckdb"))
    monkeypatch.setattr(queries, "_VERSIONS", {})
    serve.warm_store()
    assert queries._VERSIONS == {}
    assert not (tmp_path / "none.duckdb").exists()


@pytest.mark.slow
def test_the_start_up_commands_run_one_after_the_other_below_the_server(tmp_path) -> None:
    import os

    from waits import scaled, wait_until

    marks = [tmp_path / f"done-{n}" for n in range(2)]
    step = ("import os, pathlib, sys, time; time.sleep(0.3); "
            "policy = os.sched_getscheduler(0) if hasattr(os, 'sched_getscheduler') else -1; "
            "pathlib.Path(sys.argv[1]).write_text(f'{os.getpriority(os.PRIO_PROCESS, 0)} '"
            "f'{policy} {[p.name for p in pathlib.Path(sys.argv[2]).iterdir()]}')")
    stop = serve.precompute([[sys.executable, "-c", step, str(m), str(tmp_path)]
                             for m in marks])
    wait_until(lambda: all(m.exists() and m.read_text() for m in marks), scaled(60),
               "both commands done")
    stop()
    first, second = (m.read_text().split(" ", 2) for m in marks)
    niceness = os.getpriority(os.PRIO_PROCESS, 0) + serve.PRECOMPUTE_NICE
    assert int(first[0]) == int(second[0]) == min(niceness, 19)
    if hasattr(os, "SCHED_IDLE"):  # Linux: they run only on a CPU nothing else wants
        assert int(first[1]) == int(second[1]) == os.SCHED_IDLE
    assert "done-0" not in first[2] and "done-0" in second[2]  # the second after the first


@pytest.mark.slow
def test_stopping_the_server_stops_the_start_up_computation(tmp_path) -> None:
    from waits import scaled, wait_until

    started = tmp_path / "started"
    never = tmp_path / "never"
    hold = ("import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(600)")
    stop = serve.precompute([[sys.executable, "-c", hold, str(started)],
                             [sys.executable, "-c", hold, str(never)]])
    wait_until(started.exists, scaled(60), "the first command started")
    stop()  # the first is terminated, the second never starts
    assert not never.exists()


def test_the_start_up_analyses_wait_for_the_server_at_most_the_time_given() -> None:
    import time

    from streamlit import runtime

    assert not runtime.exists()  # no server in this process: waits out the bound
    began = time.monotonic()
    serve.wait_for_runtime(0.2)
    assert 0.2 <= time.monotonic() - began < 30


def test_the_start_up_analyses_wait_for_a_first_paint_at_most_the_time_given() -> None:
    import threading
    import time

    from cliffwatch.dashboard import paint_gate

    paint_gate.FIRST_PAINT.clear()
    began = time.monotonic()
    serve.wait_for_first_paint(0.2)  # no visitor: waits out the bound
    assert 0.2 <= time.monotonic() - began < 30
    threading.Timer(0.1, paint_gate.page_sent).start()  # a visitor's page was sent
    began = time.monotonic()
    serve.wait_for_first_paint(60)
    assert time.monotonic() - began < 30
    assert paint_gate.FIRST_PAINT.is_set()
    paint_gate.FIRST_PAINT.clear()


@pytest.mark.slow
def test_warm_imports_say_nothing_of_the_stand_in_cache() -> None:
    """Decorating ``st.cache_data`` functions before the runtime exists made Streamlit warn
    once per function ("No runtime found, using MemoryCacheStorageManager"): 14 lines on
    the terminal at every ``cliffwatch dashboard`` start. A new process, so that every
    page module is imported (and decorated) for the first time."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", "from cliffwatch.dashboard import serve; serve.warm_imports()"],
        capture_output=True, text=True, check=True)
    assert "MemoryCacheStorageManager" not in done.stderr
    assert "cliffwatch.dashboard.queries" in serve.WARM_MODULES  # a module that decorates


def test_warm_imports_give_the_cache_logger_its_level_back() -> None:
    import logging

    logger = logging.getLogger(serve.CACHE_LOGGER)
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        serve.warm_imports(("cliffwatch.no_such_module",))
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)
