"""The layer rules hold, and would catch a break.

The rules are the import-linter contracts in pyproject.toml (``[tool.importlinter]``): imports
run cli -> dashboard -> analytics -> orchestrator -> telemetry; telemetry never imports the
layers above it; analytics reaches the orchestrator only through its dispatch policy; the
dashboard reads through analytics (no duckdb, telemetry or orchestrator of its own, but for
the workload's caps); nothing imports the dashboard; no import cycles. ``make lint`` runs
``lint-imports`` on them.

The contracts are checked here in-process on cliffwatch's real import graph (grimp follows
the cliffwatch/<layer> symlinks: it finds the package through the import system), then on
that graph plus one forbidden import each, which must break the contract named.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import api
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.protected import ProtectedContract
from importlinter.domain.contract import Contract

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"

CONTRACT_TYPES: dict[str, type[Contract]] = {
    "layers": LayersContract,
    "forbidden": ForbiddenContract,
    "protected": ProtectedContract,
    "acyclic_siblings": AcyclicSiblingsContract,
}

EXPECTED_CONTRACTS = {
    "layers", "telemetry-alone", "analytics-dispatch-only", "nothing-imports-dashboard",
    "analytics-no-streamlit", "dashboard-through-analytics", "acyclic",
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return api.read_configuration(str(PYPROJECT))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    spec = importlib.util.find_spec("cliffwatch")
    assert spec is not None and spec.origin is not None
    # The graph must be of this checkout, not of another cliffwatch on the path.
    assert Path(spec.origin).resolve().parent == ROOT / "cliffwatch"
    return grimp.build_graph("cliffwatch", include_external_packages=True,
                             exclude_type_checking_imports=True, cache_dir=None)


def check_contracts(config: dict[str, Any], graph: grimp.ImportGraph) -> dict[str, bool]:
    """Contract id -> kept, for every contract of pyproject.toml on ``graph``."""
    kept = {}
    for options in config["contracts_options"]:
        contract = CONTRACT_TYPES[options["type"]](
            name=options["name"],
            session_options=config["session_options"],
            contract_options=options,
        )
        kept[options["id"]] = contract.check(copy.deepcopy(graph), verbose=False).kept
    return kept


def test_graph_follows_the_layer_symlinks(graph: grimp.ImportGraph) -> None:
    for module in ("cliffwatch.orchestrator.dispatch", "cliffwatch.telemetry.store",
                   "cliffwatch.telemetry.write_pipeline", "cliffwatch.analytics.report",
                   "cliffwatch.dashboard.app", "cliffwatch.dashboard.views.report"):
        assert module in graph.modules
    assert graph.direct_import_exists(importer="cliffwatch.telemetry.write_pipeline",
                                      imported="cliffwatch.telemetry.store")


def test_every_contract_is_kept(config: dict[str, Any], graph: grimp.ImportGraph) -> None:
    kept = check_contracts(config, graph)
    assert set(kept) == EXPECTED_CONTRACTS
    assert [name for name, ok in kept.items() if not ok] == []


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        # the store importing the read side: layers, and telemetry's own rule
        ("cliffwatch.telemetry.store", "cliffwatch.analytics.window", "telemetry-alone"),
        ("cliffwatch.telemetry.store", "cliffwatch.analytics.window", "layers"),
        ("cliffwatch.orchestrator.guard", "cliffwatch.analytics.runs", "layers"),
        # analytics past the dispatch policy
        ("cliffwatch.analytics.report", "cliffwatch.orchestrator.workload",
         "analytics-dispatch-only"),
        ("cliffwatch.cli", "cliffwatch.dashboard.app", "nothing-imports-dashboard"),
        ("cliffwatch.analytics.charts", "streamlit", "analytics-no-streamlit"),
        ("cliffwatch.dashboard.ui", "duckdb", "dashboard-through-analytics"),
        ("cliffwatch.dashboard.queries", "cliffwatch.telemetry.store",
         "dashboard-through-analytics"),
        ("cliffwatch.dashboard.replay_queries", "cliffwatch.orchestrator.runner",
         "dashboard-through-analytics"),
        # the cycle the store split removed: connection layer -> write pipeline -> store
        ("cliffwatch.telemetry.store", "cliffwatch.telemetry.write_pipeline", "acyclic"),
        ("cliffwatch.telemetry.alert_rules", "cliffwatch.telemetry.alerts", "acyclic"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    config: dict[str, Any], graph: grimp.ImportGraph, importer: str, imported: str,
    contract: str,
) -> None:
    broken_graph = copy.deepcopy(graph)
    broken_graph.add_import(importer=importer, imported=imported)
    assert check_contracts(config, broken_graph)[contract] is False


def cycles(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """Every direct import a -> b between cliffwatch modules where b also leads back to a."""
    found = []
    for module in sorted(m for m in graph.modules if m.split(".")[0] == "cliffwatch"):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.startswith("cliffwatch") and graph.chain_exists(
                importer=imported, imported=module
            ):
                found.append((module, imported))
    return found


def test_no_module_reaches_itself(graph: grimp.ImportGraph) -> None:
    # acyclic_siblings compares siblings; this also covers a package's own __init__ (the
    # root's lazy public API) taking part in a cycle.
    assert cycles(graph) == []
    looped = copy.deepcopy(graph)
    looped.add_import(importer="cliffwatch.telemetry.schema", imported="cliffwatch")
    looped.add_import(importer="cliffwatch", imported="cliffwatch.telemetry.store")
    assert ("cliffwatch.telemetry.store", "cliffwatch.telemetry.schema") in cycles(looped)


@pytest.mark.slow
def test_lint_imports_command_passes() -> None:
    """What ``make lint`` runs: the lint-imports command beside this Python."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(EXPECTED_CONTRACTS)} kept, 0 broken" in done.stdout
