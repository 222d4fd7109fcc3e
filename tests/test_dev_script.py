"""``python3 dev.py demo``: what it runs (its set-up of .venv is not run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

DEV_PY = Path(__file__).resolve().parent.parent / "dev.py"


@pytest.fixture(scope="module")
def dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", DEV_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("store_exists", [True, False])
def test_demo_help_shows_the_help_only_never_the_dashboard(dev, flag, store_exists) -> None:
    assert dev.demo_commands([flag], store_exists) == [["demo", flag]]
    assert dev.demo_commands(["--runs", "5", flag], store_exists) == [["demo", "--runs", "5",
                                                                       flag]]


def test_demo_then_dashboard_and_a_second_quickstart_opens_the_store(dev) -> None:
    assert dev.demo_commands([], False) == [["demo"], ["dashboard"]]
    assert dev.demo_commands([], True) == [["dashboard"]]
    assert dev.demo_commands(["--fresh"], True) == [["demo", "--fresh"], ["dashboard"]]
