"""Faults during training: a diverging loss, and Ctrl-C / SIGTERM followed by --resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxcnn.checkpoint import CheckpointError
from jaxcnn.runs import RunError, TrainingDivergedError, load_run, read_metrics, train_run
from jaxcnn.train import TrainConfig

from conftest import ROOT
from datasets import quadrant_dataset, write_class_folders, write_spec


def test_nan_loss_stops_with_advice_and_keeps_the_good_epochs(tmp_path):
    spec = write_spec(tmp_path / "tiny.json")
    out = tmp_path / "run"
    data = quadrant_dataset(256, 64)
    with pytest.raises(TrainingDivergedError) as info:
        train_run(spec, data, TrainConfig(epochs=5, batch_size=32, lr=1e30, optimizer="sgd", momentum=0.0), out,
                  progress=False, verbose=False)  # fmt: skip
    message = str(info.value)
    assert "the training loss became" in message and "epoch" in message
    assert "learning rate too high" in message and "--lr 1e+29" in message
    assert all(np.isfinite(m["train_loss"]) for m in read_metrics(out))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxcnn", *args]


def _train_uninterrupted(tmp_path, images: int, epochs: int) -> list[str]:
    """Train the reference run into tmp_path/whole; returns the `jaxcnn train` arguments to repeat."""
    folder = write_class_folders(tmp_path / "imgs", quadrant_dataset(images, 64))
    spec = write_spec(tmp_path / "tiny.json")
    args = [str(spec), "--dataset", f"folder:{folder}", "--epochs", str(epochs), "--batch-size", "16", "--lr", "0.01",
            "--no-progress"]  # fmt: skip
    whole = subprocess.run(_cli("train", *args, "--out", str(tmp_path / "whole")), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    return args


def _resume_and_compare(tmp_path, part, epochs: int) -> None:
    """Resume the interrupted run; its metrics and final parameters must equal the uninterrupted run's."""
    resumed = subprocess.run(_cli("train", "--resume", str(part), "--no-progress"), cwd=ROOT, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert [m["epoch"] for m in read_metrics(part)] == list(range(1, epochs + 1))
    a, b = load_run(tmp_path / "whole", "latest").params, load_run(part, "latest").params
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_then_resume_equals_uninterrupted(tmp_path, sig):
    args = _train_uninterrupted(tmp_path, 1024, 4)
    part = tmp_path / "part"
    proc = subprocess.Popen(_cli("train", *args, "--out", str(part)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(part) if part.exists() else []) < 1:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "jaxcnn train --resume" in stderr and "interrupted" in stderr
    _resume_and_compare(tmp_path, part, 4)


def test_unwritable_out_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match="cannot write the run"):
        train_run(write_spec(tmp_path / "tiny.json"), quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32),
                  blocker / "run", progress=False, verbose=False)  # fmt: skip
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    train_run(write_spec(tmp_path / "tiny.json"), quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32), out,
              progress=False, verbose=False)  # fmt: skip
    for path in (out / "checkpoints" / "1").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoints: .* cannot be read"):
        load_run(out).params  # noqa: B018
    result = subprocess.run(_cli("evaluate", str(out)), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and "cannot be read" in result.stderr and "Traceback" not in result.stderr


def test_network_too_large_for_the_machine_is_refused_before_allocation():
    from jaxcnn.memory import OutOfMemoryError, check_fits, estimate
    from jaxcnn.spec import parse_spec

    layer = {"type": "conv", "filters": 512, "size": 3, "padding": "same"}
    huge = parse_spec({"format": "jaxcnn.spec/1", "input": [4096, 4096, 3], "layers": [layer]}, "huge.json")
    needed = estimate(huge, 64)
    assert needed.activations == 2 * (4096 * 4096 * 3 + 4096 * 4096 * 512) * 64 * 4
    with pytest.raises(OutOfMemoryError, match=r"huge.json: training .* with batch 64 needs at least .* GiB"):
        check_fits(huge, 64)
    small = parse_spec({"format": "jaxcnn.spec/1", "input": [8, 8, 1], "layers": [{"type": "flatten"}]})
    with pytest.raises(OutOfMemoryError, match=r"this machine has 0\.00 GiB"):
        check_fits(small, 1, available=10)
    assert check_fits(small, 1).total > 0


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_hard_kill_then_resume_equals_uninterrupted(tmp_path, delay):
    """SIGKILL right after an epoch's checkpoint starts (or a little later): --resume still works."""
    args = _train_uninterrupted(tmp_path, 512, 3)
    part = tmp_path / "part"
    proc = subprocess.Popen(_cli("train", *args, "--out", str(part)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    checkpoints = part / "checkpoints"
    while time.time() < deadline and not (checkpoints.exists() and any(checkpoints.iterdir())):
        time.sleep(0.01)  # the first checkpoint (or its temporary folder) has just appeared
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=60)
    _resume_and_compare(tmp_path, part, 3)
