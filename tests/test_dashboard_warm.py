"""dashboard/serve.py: the pages' modules are loaded before Streamlit serves (so the first
visitor's script run does not import them), and Streamlit's post-run GC is off."""

from __future__ import annotations

import sys

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
