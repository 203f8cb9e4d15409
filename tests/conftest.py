"""Shared test fixtures: where the specs live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"
NETWORK_SPECS = sorted(p for p in SPECS_DIR.glob("*.json") if p.name != "schema.json")

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The command line and experiment scripts the tests run would otherwise write XLA's compilation
# cache under the user's home; tests of the cache give it a temporary folder.
os.environ["JAXCNN_COMPILE_CACHE"] = "off"


@pytest.fixture(params=NETWORK_SPECS, ids=[p.stem for p in NETWORK_SPECS])
def spec_path(request: pytest.FixtureRequest) -> Path:
    """Each network spec shipped in specs/."""
    return request.param
