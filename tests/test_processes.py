"""One run trained by several processes (jaxcnn.distributed), as local processes over loopback with gloo
collectives on the CPU: 2 processes x 2 devices give the 1 process x 4 devices run's weights, into one run folder
that any single process reads; a resume with the same or another process count continues it exactly; processes
started with Slurm's variables join through JAX's own detection; streamed, each process reads its share."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.runs import load_run

from conftest import ROOT
from datasets import TINY_SPEC, quadrant_dataset, write_class_folders

pytestmark = pytest.mark.slow  # each test trains in several processes

SETTINGS = ["--batch-size", "32", "--lr", "0.05", "--optimizer", "sgd", "--momentum", "0.9", "--eval-batch-size",
            "32", "--no-progress"]  # fmt: skip  # SGD: a gradient off by a factor shows (Adam would hide it)
TOLERANCE = 1e-6
"""Largest difference of a weight between process layouts after 2 epochs (measured 6e-8: float reassociation)."""


def free_port(low: int = 0, high: int = 0) -> int:
    """A port nobody listens on: any (the system's choice), or the first free one from ``low`` to ``high``."""
    for port in range(low, high + 1) if low else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free port from {low} to {high}")


def start(argv: list[str], processes: int, devices: int, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """``jaxcnn ARGV`` as ``processes`` processes of ``devices`` CPU devices each, joined by hand over loopback
    (or by ``env`` when given per process), their output (both streams) in pipes."""
    base = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    port = free_port()
    started = []
    for i in range(processes):
        joined = [] if processes == 1 or env is not None else ["--coordinator", f"127.0.0.1:{port}",
                                                                "--num-processes", str(processes),
                                                                "--process-id", str(i)]  # fmt: skip
        own = base | (env or {}) | ({"SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)} if env else {})
        started.append(subprocess.Popen([sys.executable, "-m", "jaxcnn", *argv, *joined], cwd=ROOT, env=own,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    return started


def launch(argv: list[str], processes: int, devices: int, env: dict[str, str] | None = None) -> list[str]:
    """:func:`start`, and wait: every process must succeed. Returns their outputs."""
    started = start(argv, processes, devices, env)
    outputs = [p.communicate(timeout=300)[0] for p in started]
    for p, out in zip(started, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return outputs


def until_first_epoch(run: Path) -> None:
    """Wait until ``run`` has its first epoch saved (a row in metrics.jsonl)."""
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)


def longer_set(tmp_path: Path) -> str:
    """A data folder of 4,096 training images: epochs of a second or two, long enough to stop one mid-way."""
    write_class_folders(tmp_path / "big", quadrant_dataset(4096, 64))
    return f"folder:{tmp_path / 'big'}"


def weights(run: Path) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(load_run(run, "latest").params)]


def largest_difference(a: Path, b: Path) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(weights(a), weights(b), strict=True))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """The data folder and spec, and the reference run: 1 process x 4 devices, 2 epochs."""
    folder = tmp_path_factory.mktemp("processes")
    write_class_folders(folder / "data", quadrant_dataset(256, 64))
    (folder / "tiny.json").write_text(json.dumps(TINY_SPEC))
    launch(["train", str(folder / "tiny.json"), "--dataset", f"folder:{folder / 'data'}", "--epochs", "2",
            "--out", str(folder / "one"), *SETTINGS], processes=1, devices=4)  # fmt: skip
    return folder, folder / "one"


def train_args(folder: Path, out: Path, epochs: int, dataset: str = "") -> list[str]:
    return ["train", str(folder / "tiny.json"), "--dataset", dataset or f"folder:{folder / 'data'}", "--epochs",
            str(epochs), "--out", str(out), *SETTINGS]  # fmt: skip


def test_two_processes_write_one_run_equal_to_one_process(setup, tmp_path):
    folder, one = setup
    outputs = launch(train_args(folder, tmp_path / "two", 2), processes=2, devices=2)
    assert largest_difference(one, tmp_path / "two") < TOLERANCE
    rows = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (one, tmp_path / "two")
    ]
    for a, b in zip(*rows, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < TOLERANCE and a["test_accuracy"] == b["test_accuracy"]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["processes"] == 2 and len(config["devices"]) == 4
    assert sum(out.count("run saved in") for out in outputs) == 1  # one console: process 0's
    assert not any("warning:" in out or "error:" in out for out in outputs), outputs  # a normal end is quiet
    assert sorted(p.name for p in tmp_path.iterdir()) == [".two.lock", "two"]  # no staging folder left behind
    evaluated = subprocess.run([sys.executable, "-m", "jaxcnn", "evaluate", str(tmp_path / "two")], cwd=ROOT,
                               capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert evaluated.returncode == 0 and "test set, 64 images" in evaluated.stdout, evaluated.stderr[-2000:]


def test_a_resume_with_the_same_or_another_process_count_continues_the_run(setup, tmp_path):
    folder, one = setup
    for resumed_by in ((2, 2), (1, 1)):
        run = tmp_path / f"resumed-by-{resumed_by[0]}"
        launch(train_args(folder, run, 1), processes=2, devices=2)
        launch(["train", "--resume", str(run), "--epochs", "2", "--no-progress"], *resumed_by)
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        assert largest_difference(one, run) < (TOLERANCE if resumed_by == (2, 2) else 1e-5), resumed_by


def test_processes_started_with_slurms_variables_join_by_themselves(setup, tmp_path):
    folder, one = setup
    port = free_port(61440 + 1000, 65535)  # JAX takes the coordinator's port from the job id: 61440 + id % 4096
    slurm = {"SLURM_JOB_ID": str(port - 61440), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
             "SLURM_STEP_NUM_NODES": "1"}  # fmt: skip
    launch(train_args(folder, tmp_path / "slurm", 2), processes=2, devices=2, env=slurm)
    assert json.loads((tmp_path / "slurm" / "config.json").read_text())["processes"] == 2
    assert largest_difference(one, tmp_path / "slurm") < TOLERANCE


def test_streamed_processes_each_read_their_share_and_train_the_same_run(setup, tmp_path):
    folder, _ = setup
    prepared = tmp_path / "prepared"
    launch(["prepare", f"folder:{folder / 'data'}", "--out", str(prepared)], processes=1, devices=1)
    for out, processes, devices in (("one", 1, 4), ("two", 2, 2)):
        args = [*train_args(folder, tmp_path / out, 2, f"prepared:{prepared}"), "--data-in", "stream"]
        launch(args, processes=processes, devices=devices)
    assert largest_difference(tmp_path / "one", tmp_path / "two") < TOLERANCE


def test_a_process_that_cannot_reach_the_coordinator_names_it_within_its_timeout(setup, tmp_path):
    folder, _ = setup
    port = free_port()
    argv = [sys.executable, "-m", "jaxcnn", *train_args(folder, tmp_path / "run", 1), "--coordinator",
            f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1", "--join-timeout", "3"]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            timeout=120)  # fmt: skip
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert result.stderr.startswith(f"error: could not reach the coordinator at 127.0.0.1:{port} within 3 s")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_when_one_process_dies_or_is_interrupted_all_stop_and_resume_equals_the_whole_run(setup, tmp_path,
                                                                                        signal_number):  # fmt: skip
    """Process 1 of 2 is killed (or gets Ctrl-C) in the middle of epoch 2: both end within 60 s, process 0 with
    one line naming process 1; a resume with 2 processes then equals the uninterrupted run."""
    folder, _ = setup
    data = longer_set(tmp_path)
    started = start(train_args(folder, tmp_path / "run", 3, data), processes=2, devices=1)
    until_first_epoch(tmp_path / "run")
    started[1].send_signal(signal_number)
    stopped = time.monotonic()
    outputs = [p.communicate(timeout=90)[0] for p in started]
    assert time.monotonic() - stopped < 60
    assert all(p.returncode != 0 for p in started), outputs
    named = "process 1 of 2 was interrupted" if signal_number == signal.SIGINT else "lost process 1 of 2"
    assert f"error: {named}; every process of the run stops" in outputs[0], outputs[0][-3000:]
    launch(["train", "--resume", str(tmp_path / "run"), "--no-progress"], processes=2, devices=1)
    launch(train_args(folder, tmp_path / "whole", 3, data), processes=2, devices=1)
    assert largest_difference(tmp_path / "run", tmp_path / "whole") < TOLERANCE


def test_a_second_trainer_on_the_run_of_two_processes_is_refused(setup, tmp_path):
    folder, _ = setup
    args = train_args(folder, tmp_path / "run", 50, longer_set(tmp_path))
    started = start(args, processes=2, devices=1)
    until_first_epoch(tmp_path / "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    second = subprocess.run([sys.executable, "-m", "jaxcnn", *args, "--overwrite"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    started[0].send_signal(signal.SIGINT)
    outputs = [p.communicate(timeout=90)[0] for p in started]
    assert second.returncode == 1 and "another jaxcnn process is writing this run" in second.stderr, second.stderr
    assert started[0].returncode == 130 and started[1].returncode != 0, outputs
    assert "error: process 0 of 2 was interrupted; every process of the run stops" in outputs[1]
