"""Training from streamed data (--data-in stream): it learns, it is a function of the seed alone (not of the
worker count), a resumed run equals an uninterrupted one, a folder of photos of many sizes is streamed by
itself, the wait for data is recorded, and --normalize measures what the in-memory path does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.config import TrainConfig
from jaxcnn.prepared import prepare_dataset
from jaxcnn.runs import resume_run, train_run
from jaxcnn.spec import parse_spec

from datasets import TINY_SPEC, quadrant_dataset, write_class_folders

pytestmark = pytest.mark.slow  # each test trains whole runs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_dataset(quadrant_dataset(256, 64), tmp_path_factory.mktemp("prepared") / "quadrants").root


def trained(run_dir: Path, data: str, **config: Any) -> dict:
    options: dict[str, Any] = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "data_in": "stream"} | config
    result = train_run(parse_spec(TINY_SPEC, "tiny.json"), data, TrainConfig(**options), run_dir, progress=False,
                       verbose=False)  # fmt: skip
    return jax.tree.map(np.asarray, result.params)


def test_a_streamed_run_learns_and_depends_on_the_seed_not_on_the_workers(prepared, tmp_path):
    alone = trained(tmp_path / "alone", f"prepared:{prepared}", epochs=4)
    metrics = [json.loads(line) for line in (tmp_path / "alone" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["test_accuracy"] > 0.9  # as the same run in memory (1.0 at the 4th epoch)
    assert all(0 <= m["data_wait_seconds"] <= m["seconds"] for m in metrics)
    with_workers = trained(tmp_path / "workers", f"prepared:{prepared}", epochs=4, loader_workers=2)
    jax.tree.map(np.testing.assert_array_equal, alone, with_workers)
    other_seed = trained(tmp_path / "seed", f"prepared:{prepared}", epochs=4, seed=1)
    assert not np.array_equal(other_seed["conv1"]["kernel"], alone["conv1"]["kernel"])


def test_a_resumed_streamed_run_equals_an_uninterrupted_one(prepared, tmp_path):
    whole = trained(tmp_path / "whole", f"prepared:{prepared}", epochs=3, augment="translate=1,flip")
    trained(tmp_path / "parts", f"prepared:{prepared}", epochs=1, augment="translate=1,flip")
    resumed = jax.tree.map(np.asarray, resume_run(tmp_path / "parts", epochs=3, progress=False, verbose=False).params)
    jax.tree.map(np.testing.assert_array_equal, whole, resumed)


def test_a_folder_of_photos_of_many_sizes_is_streamed_by_itself(tmp_path, capsys):
    data = quadrant_dataset(64, 16)
    root = write_class_folders(tmp_path / "photos", data)
    for i, path in enumerate(sorted(root.glob("*/*/*.png"))[::3]):  # every third photo larger, in colour
        image = np.asarray(Image.open(path).convert("RGB").resize((8 + 2 * (i % 5), 8 + 3 * (i % 4))))
        Image.fromarray(image).save(path)
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_SPEC))
    argv = ["train", str(spec), "--dataset", f"folder:{root}", "--epochs", "1", "--batch-size", "16", "--out",
            str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "streamed from disk" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["data_in"] == "auto"


def test_normalize_on_a_streamed_set_records_the_in_memory_figures(prepared, tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_SPEC))
    for data_in in ("stream", "memory"):
        argv = ["train", str(spec), "--dataset", f"prepared:{prepared}", "--epochs", "1", "--normalize",
                "--data-in", data_in, "--out", str(tmp_path / data_in), "--no-progress"]  # fmt: skip
        assert cli.main(argv) == 0
    assert "--normalize: measuring the mean and deviation of 256 training images" in capsys.readouterr().out
    streamed, in_memory = (json.loads((tmp_path / d / "config.json").read_text())["preprocess"]
                           for d in ("stream", "memory"))  # fmt: skip
    assert streamed == in_memory and streamed["mean"] is not None


def test_a_run_trained_from_a_prepared_set_is_evaluated_and_explored_from_it(prepared, tmp_path, capsys):
    """The in-memory form of a prepared set of one image size: --data-in memory trains from it, and evaluate
    and explore read the run's test images back."""
    from jaxcnn.data import load_dataset
    from jaxcnn.explorer import Explorer

    memory = trained(tmp_path / "memory", f"prepared:{prepared}", epochs=1, data_in="memory")
    assert memory["conv1"]["kernel"].shape == (3, 3, 1, 4)
    data = load_dataset(f"prepared:{prepared}")
    assert data.train_count == 256 and data.image_shape == (8, 8, 1)
    trained(tmp_path / "streamed", f"prepared:{prepared}", epochs=1)
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "streamed")]) == 0
    assert "test set, 64 images" in capsys.readouterr().out
    assert Explorer(tmp_path / "streamed").confusion()["counts"]


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture(scope="module")
def big_prepared(tmp_path_factory) -> Path:
    """Enough images that an epoch lasts a few seconds on 2 cores."""
    return prepare_dataset(quadrant_dataset(24000, 64), tmp_path_factory.mktemp("big") / "quadrants").root


def start_training(prepared: Path, run_dir: Path, spec: Path, epochs: int, workers: int) -> subprocess.Popen:
    """The command in a child process, its output in files (a killed trainer's workers may hold pipes open)."""
    spec.write_text(json.dumps(TINY_SPEC))
    argv = [sys.executable, "-m", "jaxcnn", "train", str(spec), "--dataset", f"prepared:{prepared}", "--epochs",
            str(epochs), "--batch-size", "32", "--lr", "0.003", "--loader-workers", str(workers), "--out",
            str(run_dir), "--no-progress"]  # fmt: skip
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run_dir}.out", "w") as out, open(f"{run_dir}.err", "w") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, text=True)


def wait_for(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_ctrl_c_and_kill_leave_no_loader_workers_behind(big_prepared, tmp_path, signal_number):
    trainer = start_training(big_prepared, tmp_path / "run", tmp_path / "tiny.json", 3, 2)
    wait_for(lambda: len(children_of(trainer.pid)) >= 3)  # grain's two workers and the resource tracker
    time.sleep(1.5)  # mid-epoch
    workers = children_of(trainer.pid)
    trainer.send_signal(signal_number)
    trainer.wait(timeout=60)
    if signal_number == signal.SIGINT:
        err = Path(f"{tmp_path / 'run'}.err").read_text()
        assert trainer.returncode == 130 and "interrupted in epoch" in err, err
        assert "leaked" not in err and "Traceback" not in err, err
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30)


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_weights(big_prepared, tmp_path):
    whole = trained(tmp_path / "whole", f"prepared:{big_prepared}", epochs=2, loader_workers=1)
    trainer = start_training(big_prepared, tmp_path / "killed", tmp_path / "tiny.json", 2, 1)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") == 1)  # epoch 1 saved
    time.sleep(1.0)  # into epoch 2
    trainer.kill()
    trainer.communicate(timeout=60)
    assert metrics.read_text().count("\n") == 1  # killed before epoch 2 ended
    resumed = resume_run(tmp_path / "killed", progress=False, verbose=False)
    jax.tree.map(np.testing.assert_array_equal, whole, jax.tree.map(np.asarray, resumed.params))
