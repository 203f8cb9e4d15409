"""Data parallelism on 4 forced CPU devices gives the same training as on 1 device, in memory and streamed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from datasets import TINY_SPEC, quadrant_dataset
    from jaxcnn.parallel import DeviceError
    from jaxcnn.runs import train_run
    from jaxcnn.spec import parse_spec
    from jaxcnn.train import TrainConfig

    spec = parse_spec(TINY_SPEC)
    data = quadrant_dataset(256, 100)
    out = {"device_count": jax.device_count()}
    runs = {}
    for devices in (1, 4):
        config = TrainConfig(epochs=2, batch_size=32, lr=0.05, eval_batch_size=50, devices=devices, optimizer="sgd",
                             momentum=0.9)  # SGD: a gradient off by a factor shows (Adam would hide it)
        runs[devices] = train_run(spec, data, config, None, progress=False, verbose=False)
    a, b = (jax.tree.leaves(runs[d].params) for d in (1, 4))
    out["max_param_diff"] = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    out["losses"] = {d: [m["train_loss"] for m in runs[d].metrics] for d in (1, 4)}
    out["test_accuracy"] = {d: runs[d].metrics[-1]["test_accuracy"] for d in (1, 4)}
    import tempfile
    from jaxcnn.prepared import prepare_dataset
    prepared = f"prepared:{prepare_dataset(data, tempfile.mkdtemp() + '/set').root}"
    streamed = {}
    for devices in (1, 4):  # streamed batches are placed and evaluated on every device alike
        config = TrainConfig(epochs=2, batch_size=32, lr=0.05, eval_batch_size=50, devices=devices, optimizer="sgd",
                             momentum=0.9, data_in="stream")
        streamed[devices] = train_run(spec, prepared, config, None, progress=False, verbose=False)
    a, b = (jax.tree.leaves(streamed[d].params) for d in (1, 4))
    out["streamed_max_param_diff"] = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    out["streamed_test_accuracy"] = {d: streamed[d].metrics[-1]["test_accuracy"] for d in (1, 4)}
    try:
        train_run(spec, data, TrainConfig(epochs=1, batch_size=30, devices=4), None, progress=False, verbose=False)
    except DeviceError as err:
        out["error"] = str(err)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_four_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["device_count"] == 4
    assert out["max_param_diff"] < 1e-4
    for one, four in zip(out["losses"]["1"], out["losses"]["4"], strict=True):
        assert abs(one - four) < 1e-4 * max(1.0, abs(one))
    assert abs(out["test_accuracy"]["1"] - out["test_accuracy"]["4"]) <= 0.01
    assert out["streamed_max_param_diff"] < 1e-4
    assert abs(out["streamed_test_accuracy"]["1"] - out["streamed_test_accuracy"]["4"]) <= 0.01
    assert "batch size 30 does not split evenly across 4 devices: use a multiple of 4" in out["error"]


@pytest.mark.slow
def test_two_processes_over_loopback_equal_one_process():
    """jax.distributed with two local processes (gloo collectives on the CPU) trains like one process."""
    result = subprocess.run([sys.executable, "experiments/multi_process.py", "--launch", "2", "--smoke"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 processes (2 devices in all) vs 1 process: match: True" in result.stdout


LENET_ON_TWO_DEVICES = textwrap.dedent(
    """
    import numpy as np
    from jaxcnn.data import Preprocess
    from jaxcnn.model import Model
    from jaxcnn.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6400, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 6400).astype(np.int32)
    model = Model.from_file("specs/lenet_mnist.json")
    trainer = Trainer(model, TrainConfig(batch_size=64, devices=2), Preprocess(), images, labels, images[:500],
                      labels[:500])
    state = trainer.init_state()
    trainer.compile(state)  # as train_run does
    state, loss, accuracy = trainer.run_epoch(state, 1)
    test_loss, test_accuracy, predictions = trainer.evaluate(state.params)
    print("finished", loss, test_accuracy)
    """
)


@pytest.mark.slow
def test_lenet_on_two_cpu_devices_of_one_process_does_not_deadlock():
    """Queued back-to-back, steps on 2 forced CPU devices deadlocked in XLA's in-process all-reduce
    (XLA aborts after its collective timeout); the trainer finishes each step first on such meshes."""
    flags = "--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=20"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", LENET_ON_TWO_DEVICES], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished" in result.stdout
