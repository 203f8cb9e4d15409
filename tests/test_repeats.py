"""Repeated block copies run as one lax.scan in training: which runs are found, and the same values as unrolled."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import repeats
from jaxcnn.model import Model
from jaxcnn.spec import load_spec, parse_spec

from conftest import ROOT, SPECS_DIR

RESIDUAL = {
    "description": "two convolutions with batch norm, added to the block's input",
    "params": {"filters": None},
    "layers": [
        {"type": "conv", "name": "conv1", "filters": "$filters", "size": 3, "padding": 1, "use_bias": False},
        {"type": "batch_norm", "name": "bn1"},
        {"type": "activation", "name": "relu1", "activation": "relu"},
        {"type": "conv", "name": "conv2", "filters": "$filters", "size": 3, "padding": 1},
        {"type": "add", "name": "add", "inputs": ["conv2", "input"]},
        {"type": "activation", "name": "relu2", "activation": "relu"},
    ],
}


def small_spec(**change: Any) -> dict[str, Any]:
    """4 residual copies on 6x6x4 (the first changes nothing either: 4 filters in, 4 out), then a classifier."""
    spec = {
        "format": "jaxcnn.spec/1",
        "name": "repeats",
        "input": [6, 6, 4],
        "blocks": {"res": copy.deepcopy(RESIDUAL)},
        "layers": [
            {"block": "res", "name": "stage", "repeat": 4, "filters": 4},
            {"type": "global_avg_pool", "name": "pool"},
            {"type": "dense", "name": "out", "units": 3, "activation": "softmax"},
        ],
    }
    spec.update(change)
    return spec


def runs(spec: dict) -> list[tuple[str, int]]:
    return [(run.template[0].name, len(run.copies)) for run in Model(parse_spec(spec))._runs.values()]


def test_runs_found_in_the_resnets_and_not_in_vgg():
    def found(name):
        return [(run.template[0].name, len(run.copies)) for run in Model(load_spec(SPECS_DIR / name))._runs.values()]

    assert found("resnet20_cifar10.json") == []  # runs of 3 and 2 copies: fewer than MIN_COPIES
    assert found("resnet56_cifar10.json") == [("stage1.block1.conv1", 9), ("stage2.block1.conv1", 8),
                                              ("stage3.block1.conv1", 8)]  # fmt: skip
    assert found("vgg_bn_cifar10.json") == []  # each stage's first copy changes the channels: one copy left
    assert Model(load_spec(SPECS_DIR / "resnet56_cifar10.json"), scan_repeats=False)._runs == {}


def test_copies_that_differ_or_draw_random_numbers_are_not_scanned():
    assert runs(small_spec()) == [("stage.block1.conv1", 4)]
    # The first copy of a plain stack maps 3 channels to 4, so it differs: copies 2-5 run.
    plain = small_spec(input=[6, 6, 3])
    conv = {"type": "conv", "name": "conv", "filters": "$filters", "size": 3, "padding": 1, "activation": "relu"}
    plain["blocks"]["plain"] = {"params": {"filters": None}, "layers": [conv]}
    plain["layers"][0] |= {"block": "plain", "repeat": 5}
    assert runs(plain) == [("stage.block2.conv", 4)]
    # Dropout folds its layer's index into the key, which differs per copy: no run.
    dropout = small_spec()
    dropout["blocks"]["res"]["layers"].insert(3, {"type": "dropout", "name": "drop", "rate": 0.1})
    assert runs(dropout) == []
    # Fewer than MIN_COPIES copies stay unrolled.
    short = small_spec()
    short["layers"][0]["repeat"] = repeats.MIN_COPIES - 1
    assert runs(short) == []


def test_scanned_training_pass_equals_the_unrolled_one():
    resolved = parse_spec(small_spec())
    scanned, unrolled = Model(resolved), Model(resolved, scan_repeats=False)
    assert scanned._runs and not unrolled._runs
    params, state = scanned.init_with_state(0)
    x = jax.random.normal(jax.random.key(1), (8, *scanned.input_shape))

    def step(model):
        def loss(p):
            y, new_state = model.apply_with_state(p, state, x, training=True)
            return jnp.mean(y**2), new_state

        (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return value, new_state, grads

    (loss_a, state_a, grads_a), (loss_b, state_b, grads_b) = step(scanned), step(unrolled)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    assert str(jax.tree.structure(state_a)) == str(jax.tree.structure(state_b))
    assert str(jax.tree.structure(grads_a)) == str(jax.tree.structure(grads_b))
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)
    # Evaluation is not scanned, and is unchanged.
    np.testing.assert_array_equal(scanned.apply(params, x, state=state), unrolled.apply(params, x, state=state))


MULTI_DEVICE_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from datasets import quadrant_dataset
from test_repeats import RESIDUAL
from jaxcnn import repeats
from jaxcnn.model import Model
from jaxcnn.runs import train_run
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig

spec = parse_spec({"format": "jaxcnn.spec/1", "name": "looped", "input": [8, 8, 1], "blocks": {"res": RESIDUAL},
                   "layers": [{"type": "conv", "name": "stem", "filters": 4, "size": 3, "padding": 1},
                              {"block": "res", "name": "stage", "repeat": 4, "filters": 4},
                              {"type": "global_avg_pool"}, {"type": "dense", "units": 4, "activation": "softmax"}]})
config = TrainConfig(epochs=2, batch_size=32, lr=0.05, eval_batch_size=50, devices=2, optimizer="sgd", momentum=0.9)
looped = train_run(spec, quadrant_dataset(256, 100), config, None, progress=False, verbose=False)
loops = len(Model(spec)._runs)
repeats.MIN_COPIES = 10**6  # no run is long enough: the same training unrolled
unrolled = train_run(spec, quadrant_dataset(256, 100), config, None, progress=False, verbose=False)
a, b = jax.tree.leaves(looped.params), jax.tree.leaves(unrolled.params)
print(json.dumps({"devices": jax.device_count(), "loops": loops, "unrolled_loops": len(Model(spec)._runs),
                  "diff": max(float(np.abs(x - y).max()) for x, y in zip(a, b))}))
"""


@pytest.mark.slow
def test_a_looped_network_trains_on_two_devices_as_unrolled():
    """The loop over copies runs inside the data-parallel step (each device's batch norm over its share)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["loops"] == 1 and out["unrolled_loops"] == 0
    assert out["diff"] < 1e-4
