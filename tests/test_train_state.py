"""Training networks with state and randomness: batch norm and dropout through every path.

The state is threaded through each step, the scan loop, checkpoints, --resume, load_run and several
devices; dropout draws from the run's seed, so the same seed still gives the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.data import Preprocess
from jaxcnn.runs import resume_run, train_run
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig, Trainer

from conftest import NETWORK_SPECS, ROOT
from datasets import GRAPH_SPEC, quadrant_dataset

DATA = quadrant_dataset()
FAST: dict[str, Any] = {"batch_size": 32, "lr": 1e-2, "eval_batch_size": 128}
SPEC = parse_spec(GRAPH_SPEC, "tiny-graph.json")


def trees_equal(a: Any, b: Any) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))


def train(seed: int = 0, **config: Any):
    settings = {"epochs": 2, "seed": seed, **FAST, **config}
    return train_run(SPEC, DATA, TrainConfig(**settings), None, progress=False, verbose=False)


def test_a_network_with_batch_norm_and_dropout_learns_and_keeps_its_state():
    result = train(epochs=3)
    assert result.metrics[-1]["test_accuracy"] > 0.8
    mean = result.model_state["bn1"]["mean"]
    assert mean.shape == (4,) and not np.allclose(mean, 0)  # the running statistics moved
    assert result.model_state["bn1"]["var"].dtype == np.float32


def test_same_seed_same_run_other_seed_other_run_with_dropout():
    first, again, other = train(0), train(0), train(1)
    assert trees_equal(first.params, again.params) and trees_equal(first.model_state, again.model_state)
    assert not trees_equal(first.params, other.params)


def test_dropout_masks_differ_between_steps_and_epochs():
    trainer = Trainer(jaxcnn.Model(SPEC), TrainConfig(**FAST), Preprocess(), DATA.train_images, DATA.train_labels,
                      DATA.test_images, DATA.test_labels)  # fmt: skip
    keys = [np.asarray(trainer.epoch_plan(epoch)["key"]) for epoch in (1, 2)]
    assert not np.array_equal(keys[0], keys[1])
    assert np.array_equal(keys[0], np.asarray(trainer.epoch_plan(1)["key"]))  # a function of (seed, epoch)


def test_scan_loop_and_step_loop_train_the_same_with_state():
    scan, step = train(loop="scan"), train(loop="step")
    trained = [jax.tree.leaves((run.params, run.model_state)) for run in (scan, step)]
    for a, b in zip(*trained, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_bfloat16_training_keeps_float32_statistics():
    result = train(compute_dtype="bfloat16")
    assert all(v.dtype == np.float32 for v in jax.tree.leaves(result.model_state))
    assert result.metrics[-1]["test_accuracy"] > 0.5


@pytest.mark.slow
def test_resume_with_batch_norm_and_dropout_equals_uninterrupted(tmp_path):
    config = TrainConfig(epochs=3, **FAST)
    whole = train_run(SPEC, DATA, config, tmp_path / "whole", progress=False, verbose=False)
    train_run(SPEC, DATA, config, tmp_path / "part", progress=False, verbose=False, stop_after_epochs=1)
    resumed = resume_run(tmp_path / "part", dataset=DATA, progress=False, verbose=False)
    assert trees_equal(whole.params, resumed.params)
    assert trees_equal(whole.model_state, resumed.model_state)
    assert [m["test_accuracy"] for m in whole.metrics] == [m["test_accuracy"] for m in resumed.metrics]


@pytest.mark.slow
def test_load_run_predicts_with_the_running_statistics(tmp_path):
    result = train_run(SPEC, DATA, TrainConfig(epochs=2, **FAST), tmp_path / "run", progress=False, verbose=False)
    run = jaxcnn.load_run(tmp_path / "run")
    assert trees_equal(run.state, result.model_state) or run.epoch != 2
    x = jnp.asarray(DATA.test_images[:50], jnp.float32) / 255
    expected = run.model.predict(run.params, x, run.state)
    np.testing.assert_allclose(run.predict(DATA.test_images[:50]), np.asarray(expected), rtol=1e-5, atol=1e-6)
    fresh = run.model.predict(run.params, x, run.model.init_state())
    assert not np.allclose(np.asarray(fresh), np.asarray(expected), atol=1e-3)  # the statistics matter
    accuracy = float((run.predict(DATA.test_images).argmax(1) == DATA.test_labels).mean())
    assert accuracy == pytest.approx(max(m["test_accuracy"] for m in result.metrics), abs=1e-9)


TWO_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, "tests")
    from test_train_state import GRAPH_SPEC
    from jaxcnn.model import Model
    from jaxcnn.spec import parse_spec
    from jaxcnn.parallel import DataParallel
    from jaxcnn.steps import _sums_and_gradient

    next(layer for layer in GRAPH_SPEC["layers"] if layer.get("type") == "dropout")["rate"] = 0.0  # no draws
    model = Model(parse_spec(GRAPH_SPEC))
    params, state = model.init_with_state(0)
    x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1)) * 0.2
    x = x.at[4:].add(0.8)  # the halves differ, so the whole batch's variance is not the halves' mean
    labels = jnp.arange(8) % 4
    core = _sums_and_gradient(model, "float32", 0.0)
    sums, grads, new_state = jax.jit(DataParallel.over(2).local_gradients(core))(params, state, x, labels, None)
    halves = [core(params, state, x[i * 4:(i + 1) * 4], labels[i * 4:(i + 1) * 4], None) for i in (0, 1)]
    mean = lambda trees: jax.tree.map(lambda a, b: (a + b) / 2, *trees)
    diff = lambda a, b: max(float(np.abs(np.asarray(p) - np.asarray(q)).max())
                            for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    whole = core(params, state, x, labels, None)
    print(json.dumps({"state": diff(new_state, mean([h[2] for h in halves])),
                      "grads": diff(grads, mean([h[1] for h in halves])),
                      "whole_batch_state": diff(new_state, whole[2])}))
    """
)


@pytest.mark.slow
def test_on_two_devices_each_normalises_its_share_and_the_running_statistics_are_averaged():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # each device its share's statistics, then averaged (float32 rounding apart; summed gradients were off by 0.6)
    assert out["state"] < 2e-5 and out["grads"] < 2e-5
    assert out["whole_batch_state"] > 1e-4  # which is not the whole batch's (no SyncBatchNorm)


SHIPPED = [p for p in NETWORK_SPECS if p.stem != "resnet56_cifar10"]  # ResNet-20's blocks, 3x the compile time


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_spec_trains(path):
    """Two steps of each shipped spec on random images: a finite loss, moved weights and statistics."""
    model = jaxcnn.Model.from_file(path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, *model.input_shape), dtype=np.uint8)
    labels = rng.integers(0, model.output_shape[-1], 32).astype(np.int32)
    trainer = Trainer(model, TrainConfig(batch_size=16, eval_batch_size=16), Preprocess(), images, labels,
                      images[:16], labels[:16])  # fmt: skip
    start = trainer.init_state()
    state, loss, _ = trainer.run_epoch(trainer.init_state(), 1)
    assert np.isfinite(loss)
    assert not trees_equal(start.params, state.params)
    if model.spec.has_state:
        assert not trees_equal(start.model_state, state.model_state)
    test_loss, _, _ = trainer.evaluate(state.params, state.model_state)
    assert np.isfinite(test_loss)
