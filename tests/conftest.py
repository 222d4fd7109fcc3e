"""Shared pytest set-up: offline litellm, and the project root on hand for tests."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports litellm: use the bundled price map, never the network
# (docs/sources.md#litellm-offline-price-map).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (where data/ and README.md live)."""
    return ROOT
