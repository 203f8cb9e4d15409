"""Golden summaries (Haiku-style): shapes, weights and FLOPs of every shipped spec.

An accidental change to a spec, the loader or the counting fails here. After a deliberate
change, regenerate with ``JAXCNN_UPDATE_GOLDEN=1 pytest tests/test_summary.py`` and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from jaxcnn.cli import summary_dict
from jaxcnn.model import Model
from jaxcnn.spec import load_spec

from conftest import ROOT

GOLDEN_DIR = ROOT / "tests" / "golden"


def _current(spec_path) -> dict:
    spec = load_spec(spec_path.relative_to(ROOT))
    data = summary_dict(spec)
    del data["description"]
    params = jax.eval_shape(Model(spec).init, jax.random.key(0))
    data["param_shapes"] = {name: {k: list(v.shape) for k, v in leaf.items()} for name, leaf in params.items()}
    state = jax.eval_shape(Model(spec).init_state)
    if state:
        data["state_shapes"] = {name: {k: list(v.shape) for k, v in leaf.items()} for name, leaf in state.items()}
    data["init_seed0_sha256"] = _init_checksum(Model(spec))
    return data


def _init_checksum(model: Model) -> str:
    """sha256 of the weights ``init(0)`` draws, so a change to initialisation (one bit) fails here."""
    digest = hashlib.sha256()
    for name, leaf in sorted(model.init(0).items()):
        for field, value in sorted(leaf.items()):
            digest.update(f"{name}/{field}".encode())
            digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return digest.hexdigest()


def test_summary_matches_golden(spec_path):
    golden = GOLDEN_DIR / f"{spec_path.stem}.json"
    current = _current(spec_path)
    if os.environ.get("JAXCNN_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(current, indent=1) + "\n")
    assert golden.exists(), f"no golden file {golden}; create it with JAXCNN_UPDATE_GOLDEN=1"
    assert json.loads(golden.read_text()) == current
