"""Shared test fixtures: where the specs live."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"
NETWORK_SPECS = sorted(p for p in SPECS_DIR.glob("*.json") if p.name != "schema.json")

# The command line and experiment scripts the tests run would otherwise write XLA's compilation
# cache under the user's home; tests of the cache give it a temporary folder.
os.environ["JAXCNN_COMPILE_CACHE"] = "off"
# On a GPU, JAX takes 75% of its memory at start by default, so a test's child process (tests that
# count compilations or run the scripts) would start beside a test process holding most of it. The
# compilation-counting test failed once on an H100 in the whole suite and passed alone; this is the
# likely cause (not confirmed there: the device time ran out).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@pytest.fixture(params=NETWORK_SPECS, ids=[p.stem for p in NETWORK_SPECS])
def spec_path(request: pytest.FixtureRequest) -> Path:
    """Each network spec shipped in specs/."""
    return request.param


@pytest.fixture(autouse=True, scope="session")
def full_float32_products_on_accelerators() -> None:
    """Tests compare formulations (fast against lax, micro-batches against the whole batch) within
    float32 rounding. GPUs multiply float32 as TF32 by default (about 1e-3 relative), which would
    hide or fake a difference, so there the tests ask for full float32 products. CPUs always use it."""
    if jax.default_backend() != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")


@contextlib.contextmanager
def serving(explorer: Any) -> Iterator[Any]:
    """``jaxcnn explore``'s server for ``explorer`` on a free loopback port, in a thread; yields the server."""
    from jaxcnn.explore_server import ExploreServer

    server = ExploreServer(explorer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def graph_folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run of the small graph spec (batch norm, dropout, a residual block) on class folders, made
    once per test session and only read by the tests that use it (the explorer's, in Python and in Chromium)."""
    from datasets import GRAPH_SPEC, train_folder_run

    return train_folder_run(tmp_path_factory.mktemp("graph_run"), GRAPH_SPEC)
