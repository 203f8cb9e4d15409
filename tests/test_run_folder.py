"""Nothing a user made is lost: --overwrite, one writer per run, checksummed checkpoints, 16-bit images.

Each case ends by checking what must have survived (the user's files, the old run, the checkpoints).
Processes that race are started together and synchronised on the run's lock, not on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn.checkpoint import DamagedCheckpointError
from jaxcnn.data import read_class_folders, read_image_file
from jaxcnn.run_folder import RunBusyError, RunLock, lock_path
from jaxcnn.runs import RunError, TrainingDivergedError, load_run, read_metrics, resume_run, train_run
from jaxcnn.train import TrainConfig

from conftest import ROOT
from datasets import change_one_weight, quadrant_dataset, write_class_folders, write_spec


def _cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jaxcnn", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The command failed with exit status 1 and one ``error:`` line holding every fragment, no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to prove later that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _params_equal(a: object, b: object) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))


@pytest.fixture
def folder_data(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny spec and a class-folder data set on disk, for the command line."""
    return write_spec(tmp_path / "tiny.json"), write_class_folders(tmp_path / "imgs", quadrant_dataset(256, 64))


def _train_args(spec: Path, images: Path, *extra: str) -> list[str]:
    return ["train", str(spec), "--dataset", f"folder:{images}", "--batch-size", "16", "--no-progress", *extra]


# ---------------------------------------------------------------- --overwrite


@pytest.mark.slow
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, folder_data):
    spec, images = folder_data
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("months of work")
    (mine / "sub" / "data.csv").write_text("1,2,3")
    before = _snapshot(mine)
    result = _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(mine), "--overwrite"))
    _one_error_line(result, str(mine), "replaces only a jaxcnn run", "sub, thesis.tex", "Nothing was changed")
    assert _snapshot(mine) == before
    # the data set folder itself, given as --out by mistake
    data_before = _snapshot(images)
    result = _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(images), "--overwrite"))
    _one_error_line(result, "replaces only a jaxcnn run")
    assert _snapshot(images) == data_before


@pytest.mark.slow
def test_out_that_is_a_file_or_the_working_folder_is_refused(tmp_path, folder_data):
    spec, images = folder_data
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    _one_error_line(_cli(*_train_args(spec, images, "--epochs", "1", "--out", str(a_file))), "is a file, not a folder")
    assert a_file.read_text() == "keep me"
    run = tmp_path / "run"
    assert _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(run))).returncode == 0
    before = _snapshot(run)
    result = _cli(*_train_args(spec, images, "--epochs", "1", "--out", ".", "--overwrite"), cwd=run)
    _one_error_line(result, "the folder you are working in")
    assert _snapshot(run) == before


@pytest.mark.slow
def test_overwrite_that_diverges_in_epoch_one_keeps_the_old_run(tmp_path):
    spec, data, out = write_spec(tmp_path / "tiny.json"), quadrant_dataset(256, 64), tmp_path / "run"
    train_run(spec, data, TrainConfig(epochs=2, batch_size=32), out, progress=False, verbose=False)
    before = _snapshot(out)
    with pytest.raises(TrainingDivergedError):
        train_run(spec, data, TrainConfig(epochs=3, batch_size=32, lr=1e30, optimizer="sgd", momentum=0.0), out,
                  overwrite=True, progress=False, verbose=False)  # fmt: skip
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == [".run.lock"]
    assert load_run(out).config["train"]["epochs"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_overwrite_stopped_in_epoch_one_keeps_the_old_run(tmp_path, sig):
    spec = write_spec(tmp_path / "tiny.json")
    images = write_class_folders(tmp_path / "imgs", quadrant_dataset(4096, 16))
    out = tmp_path / "run"
    assert _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(out))).returncode == 0
    before = _snapshot(out)
    extra = ["--epochs", "3", "--batch-size", "4", "--loop", "step", "--out", str(out), "--overwrite"]
    args = [sys.executable, "-m", "jaxcnn", *_train_args(spec, images, *extra)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob(".run.staging-*")) and proc.poll() is None:
        time.sleep(0.01)  # the new run's staging folder exists: epoch 1 is about to start
    assert list(tmp_path.glob(".run.staging-*")), "the new run was never staged"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr
    assert _snapshot(out) == before, "the old run changed"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "nothing of the new run was kept" in stderr, stderr
        assert not list(tmp_path.glob(".run.staging-*"))
    else:  # the next writer tidies what the killed one left, and the old run carries on
        resumed = _cli("train", "--resume", str(out), "--epochs", "2", "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        assert "removed" in resumed.stderr and "unfinished first epoch" in resumed.stderr
        assert not list(tmp_path.glob(".run.staging-*"))
        assert [m["epoch"] for m in read_metrics(out)] == [1, 2]


# ---------------------------------------------------------------- one writer per run


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_holder(tmp_path, folder_data):
    spec, images = folder_data
    out = tmp_path / "run"
    assert _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(out))).returncode == 0
    before = _snapshot(out)
    with RunLock(out):  # this test process plays the trainer that holds the run
        for args in (
            _train_args(spec, images, "--epochs", "1", "--out", str(out), "--overwrite"),
            ["train", "--resume", str(out), "--epochs", "2", "--no-progress"],
        ):
            _one_error_line(_cli(*args), "another jaxcnn process is writing this run", f"process {os.getpid()}")
        with pytest.raises(RunBusyError, match=f"process {os.getpid()}"):
            RunLock(out).acquire()
    assert _snapshot(out) == before
    resumed = _cli("train", "--resume", str(out), "--epochs", "2", "--no-progress")  # free again
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.slow
def test_two_trainers_started_together_leave_one_consistent_run(tmp_path, folder_data):
    spec, images = folder_data
    out = tmp_path / "run"

    def trainer(epochs: int) -> subprocess.Popen[str]:
        extra = ["--epochs", str(epochs), "--seed", str(epochs), "--out", str(out)]
        return subprocess.Popen([sys.executable, "-m", "jaxcnn", *_train_args(spec, images, *extra)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    procs = {epochs: trainer(epochs) for epochs in (2, 3)}  # started together, racing for the same --out
    stderrs = {epochs: p.communicate(timeout=300)[1] for epochs, p in procs.items()}
    results = {epochs: (procs[epochs].returncode, stderrs[epochs]) for epochs in procs}
    winners = [epochs for epochs, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    code, stderr = results[loser]
    assert code == 1 and "Traceback" not in stderr
    assert "another jaxcnn process is writing this run" in stderr or "already exists" in stderr
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == config["train"]["seed"] == winners[0]
    assert [m["epoch"] for m in read_metrics(out)] == list(range(1, winners[0] + 1))
    assert load_run(out, "latest").epoch == winners[0]


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path, folder_data):
    spec, images = folder_data
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jaxcnn", *_train_args(spec, images, "--epochs", "50", "--out",
                             str(out))], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # Watch the lock file for the trainer's name rather than probing with acquire: a probe that holds the
    # lock at the moment the trainer asks for it makes the trainer stop as busy (this test failed that way).
    holder, deadline = f"process {proc.pid} on ", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if lock_path(out).exists() and holder in lock_path(out).read_text(errors="replace"):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the trainer stopped before it was killed"
    assert lock_path(out).exists() and holder in lock_path(out).read_text(errors="replace"), "it never took the lock"
    with pytest.raises(RunBusyError):
        RunLock(out).acquire()
    proc.kill()
    proc.wait(timeout=60)
    RunLock(out).acquire().release()  # free at once: the OS released it with the process
    assert lock_path(out).exists()


# ---------------------------------------------------------------- checksummed checkpoints


@pytest.mark.slow
def test_a_flipped_byte_in_a_checkpoint_is_an_error(tmp_path):
    out = tmp_path / "run"
    train_run(write_spec(tmp_path / "tiny.json"), quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32), out,
              progress=False, verbose=False)  # fmt: skip
    change_one_weight(out / "checkpoints" / "1", "conv1")
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint of epoch 1 is damaged: \['params'\]\['conv1'\]"):
        load_run(out)
    _one_error_line(_cli("evaluate", str(out)), "epoch 1 is damaged", "Restore the folder from a copy")


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capfd):
    spec, out = write_spec(tmp_path / "tiny.json"), tmp_path / "run"
    good = quadrant_dataset(256, 64)
    # Epoch 2 is tested against shuffled labels, so epoch 1 stays the best and both checkpoints are kept.
    worse = good.__class__(**{**good.__dict__, "test_labels": (good.test_labels + 1) % 4})
    config = TrainConfig(epochs=1, batch_size=32, lr=0.01)
    train_run(spec, good, config, out, progress=False, verbose=False)
    resume_run(out, epochs=2, dataset=worse, progress=False, verbose=False)
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    epoch2 = load_run(out, "latest").params
    change_one_weight(out / "checkpoints" / "2", "dense1")
    capfd.readouterr()
    result = resume_run(out, epochs=2, dataset=worse, progress=False, verbose=False)
    err = capfd.readouterr().err
    assert "epoch 2 is damaged" in err and "resuming from epoch 1, the newest intact checkpoint" in err
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    assert _params_equal(load_run(out, "latest").params, epoch2)  # epoch 2 trained again, bit for bit
    assert len(list((out / "damaged-checkpoints").iterdir())) == 1  # kept for the user, out of the way


@pytest.mark.slow
def test_resume_without_checkpoints_is_refused(tmp_path, folder_data):
    spec, images = folder_data
    out = tmp_path / "run"
    assert _cli(*_train_args(spec, images, "--epochs", "1", "--out", str(out))).returncode == 0
    for path in sorted((out / "checkpoints").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (out / "checkpoints").rmdir()
    before = _snapshot(out)
    _one_error_line(_cli("train", "--resume", str(out), "--no-progress"), "checkpoints: missing", "--overwrite")
    assert _snapshot(out) == before


# ---------------------------------------------------------------- images of more than 8 bits


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    eight = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same picture at 16 bits: v * 65535 / 255
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    np.testing.assert_array_equal(read_image_file(tmp_path / "sixteen.png", (8, 8, 1))[..., 0], eight)
    np.testing.assert_array_equal(read_image_file(tmp_path / "sixteen.png", (8, 8, 3))[..., 1], eight)
    for split in ("train", "test"):
        (tmp_path / "set" / split / "a").mkdir(parents=True)
        Image.fromarray(sixteen).save(tmp_path / "set" / split / "a" / "0.png")
    arrays, _ = read_class_folders(tmp_path / "set")
    np.testing.assert_array_equal(arrays["train_images"][0, ..., 0], eight)


def test_32_bit_and_float_images_are_refused_clearly(tmp_path):
    Image.fromarray(np.full((4, 4), 1e6, np.float32)).save(tmp_path / "float.tiff")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "int.tiff")
    for name in ("float.tiff", "int.tiff"):
        with pytest.raises(Exception, match="no fixed range to scale to 0-255") as info:
            read_image_file(tmp_path / name, (4, 4, 1))
        assert type(info.value).__name__ == "DataError"


def test_run_error_is_the_base_of_lock_errors():
    assert issubclass(RunBusyError, RunError)


def test_leftovers_of_a_killed_writer_are_tidied_whatever_the_run_is_called(tmp_path):
    from jaxcnn.run_folder import finish_interrupted_writes

    run = tmp_path / "[run]*"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (tmp_path / ".[run]*.staging-999").mkdir()
    (tmp_path / ".[run]*.replaced-999").mkdir()
    (tmp_path / ".other.staging-999").mkdir()  # another run's: left alone
    with RunLock(run):
        notes = finish_interrupted_writes(run)
    assert len(notes) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".[run]*.lock", ".other.staging-999", "[run]*"]
    gone = tmp_path / "gone"
    (tmp_path / ".gone.replaced-5").mkdir()  # killed between the two renames: the old run goes back
    (tmp_path / ".gone.replaced-5" / "config.json").write_text("{}")
    with RunLock(gone):
        assert finish_interrupted_writes(gone) == [f"put back {gone}: an --overwrite of it was stopped before the "
                                                   "new run was in place"]  # fmt: skip
    assert (gone / "config.json").read_text() == "{}"


def test_a_file_written_whole_is_all_new_or_all_old_and_leaves_nothing_behind(tmp_path):
    from jaxcnn.files import written_whole

    target = tmp_path / "net.onnx"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), written_whole(target) as temporary:
        temporary.write_text("half of the new")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    plain = tmp_path / "plain"
    plain.write_text("x")
    with written_whole(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".onnx" and temporary.name.startswith(".")
        temporary.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target, plain]
    assert target.stat().st_mode == plain.stat().st_mode  # the usual permissions, not a private temp file's
