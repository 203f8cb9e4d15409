"""Bad input is one ``error:`` line from the command, never a traceback or a hang.

Most cases call ``jaxcnn.cli.main`` in this process (the same code the command runs, without a
new interpreter per case); each asserts the exit status and the one line, and that the run the
case started from is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn import memory as M
from jaxcnn.memory import OutOfMemoryError, check_fits, estimate
from jaxcnn.runs import train_run
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig

from datasets import TINY_SPEC, quadrant_dataset, write_class_folders, write_spec


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str, status: int = 1) -> str:
    """``jaxcnn ARGV`` exits with ``status`` and prints one ``error:`` line holding every fragment."""
    capsys.readouterr()
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A trained tiny run and its class-folder data set (read-only for the tests: they copy it)."""
    root = tmp_path_factory.mktemp("trained")
    images = write_class_folders(root / "imgs", quadrant_dataset(128, 32))
    train_run(write_spec(root / "tiny.json"), f"folder:{images}", TrainConfig(epochs=1, batch_size=32), root / "run",
              progress=False, verbose=False)  # fmt: skip
    return root / "run", images


@pytest.fixture
def run_copy(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(trained[0], tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--warmup-epochs", "nan", "warmup_epochs must be a finite number >= 0, got nan"),
        ("--warmup-epochs", "inf", "warmup_epochs must be a finite number >= 0, got inf"),
        ("--lr", "inf", "lr must be a finite number a positive number, got inf"),
        ("--weight-decay", "nan", "weight_decay must be a finite number >= 0, got nan"),
        ("--momentum", "nan", "momentum must be a finite number in [0, 1), got nan"),
    ],
)
def test_non_finite_hyperparameters_name_the_culprit(capsys, tmp_path, flag, value, fragment):
    spec = write_spec(tmp_path / "tiny.json")
    argv = ["train", str(spec), "--dataset", "mnist", "--out", str(tmp_path / "run"), flag, value]
    _error_line(capsys, argv, fragment)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- memory


def test_padding_to_a_huge_input_is_refused_before_allocating(tmp_path):
    spec = parse_spec({**TINY_SPEC, "input": [16384, 16384, 1]}, "huge.json")
    with pytest.raises(OutOfMemoryError, match=r"huge.json: training tiny with batch 32 needs at least .* data "):
        train_run(spec, quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32), tmp_path / "run", pad=True,
                  progress=False, verbose=False)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_evaluation_memory_is_estimated_with_the_batch_used(monkeypatch):
    spec = parse_spec(TINY_SPEC, "tiny.json")
    per_image = estimate(spec, 1, training=False).activations
    assert estimate(spec, 1).activations == 2 * per_image  # training also keeps the gradients
    # Room for training batches of 32 and evaluating 300 test images, not for 1,000 at once.
    room = estimate(spec, 300, training=False).total + 10
    with pytest.raises(OutOfMemoryError, match=r"evaluating tiny with batch 1000 .* smaller --eval-batch-size"):
        check_fits(spec, 1000, available=room, training=False, flag="--eval-batch-size")
    monkeypatch.setattr(M, "machine_bytes", lambda: room + quadrant_dataset(512, 300).train_images.nbytes * 2)
    train_run(
        spec, quadrant_dataset(512, 300), TrainConfig(epochs=1, batch_size=32), None, progress=False, verbose=False
    )  # fmt: skip  (evaluates the 300 test images in one batch of 300)


# ---------------------------------------------------------------- specs


def test_validate_reports_a_deeply_nested_spec_and_goes_on(capsys, tmp_path):
    deep = tmp_path / "deep.json"
    layer = {"type": "max_pool", "size": 2, "padding": json.loads("[" * 500 + "]" * 500)}
    deep.write_text(json.dumps({"format": "jaxcnn.spec/1", "input": [4, 4, 1], "layers": [layer]}))
    good = write_spec(tmp_path / "good.json")
    capsys.readouterr()
    assert cli.main(["validate", str(deep), str(good)]) == 1
    out, err = capsys.readouterr()
    assert "deep.json: nests lists and objects" in err and "Traceback" not in err
    assert f"ok: {good}" in out


def test_a_name_that_is_not_math_text_is_drawn_as_written(tmp_path, capsys):
    spec = write_spec(tmp_path / "odd.json", {**TINY_SPEC, "name": "price $\\foo{ $"})
    result = train_run(spec, quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32), tmp_path / "run",
                       progress=False, verbose=False)  # fmt: skip
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0 and result.metrics
    assert cli.main(["draw", str(spec), "--out", str(tmp_path / "odd.png")]) == 0
    assert (tmp_path / "odd.png").stat().st_size > 0


# ---------------------------------------------------------------- hand-edited runs


def _edit_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: c["spec"]["layers"][0].update(filters=5), "its spec does not match the checkpoint of epoch 1"),
        (lambda c: c["dataset"].pop("class_names"), "field 'dataset.class_names' is missing"),
        (lambda c: c["dataset"].update(class_names=["a", "b", "c"]), "'dataset.class_names' lists 3 classes"),
        (lambda c: c.pop("preprocess"), "field 'preprocess' is missing"),
    ],
    ids=["spec changed", "class names gone", "class names shortened", "preprocess gone"],
)
def test_a_hand_edited_config_is_one_clear_line(capsys, run_copy, trained, edit, fragment):
    _edit_config(run_copy, edit)
    before = {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}
    image = trained[1] / "test" / "top-left"
    for argv in (["evaluate", str(run_copy)], ["predict", str(run_copy), str(next(image.iterdir()))],
                 ["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"]):  # fmt: skip
        _error_line(capsys, argv, "config.json", fragment)
    assert before == {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [("[1, 2]", "line 2: not a metrics row"), ("{oops", "line 2: not JSON"), ('{"loss": 1}', "line 2: not a metrics")],
)
def test_a_hand_edited_metrics_file_names_the_line(capsys, run_copy, line, fragment):
    path = run_copy / "metrics.jsonl"
    path.write_text(path.read_text() + line + "\n")
    _error_line(
        capsys, ["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"], "metrics.jsonl", fragment
    )


# ---------------------------------------------------------------- show, evaluate


def test_show_image_out_of_range_and_an_unwritable_picture_folder(capsys, run_copy):
    _error_line(capsys, ["show", str(run_copy), "--image", "1000000"], "--image 1000000", "has 32 images")
    (run_copy / "pictures").write_text("a file where the folder would go")
    _error_line(capsys, ["show", str(run_copy)], "cannot write the picture", "give --out a writable folder")
    assert (run_copy / "pictures").read_text() == "a file where the folder would go"


def test_evaluate_on_a_data_set_of_another_shape_or_class_count(capsys, run_copy, tmp_path):
    six = quadrant_dataset(16, 8)
    cropped = {"train_images": six.train_images[:, :6, :6], "test_images": six.test_images[:, :6, :6]}
    small = write_class_folders(tmp_path / "six", six.__class__(**{**six.__dict__, **cropped}))
    _error_line(capsys, ["evaluate", str(run_copy), "--dataset", f"folder:{small}"], "predict takes", "(N, 8, 8, 1)")
    two = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("a", "b", "c", "d", "e"):
            (two / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(two / split / name / "0.png")
    _error_line(capsys, ["evaluate", str(run_copy), "--dataset", f"folder:{two}"], "has 5 classes", "tells 4 apart")


def test_predict_goes_on_after_an_image_it_cannot_read(capsys, run_copy, tmp_path, monkeypatch):
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "bomb.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "fine.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    capsys.readouterr()
    assert cli.main(["predict", str(run_copy), str(tmp_path / "bomb.png"), str(tmp_path / "fine.png")]) == 1
    out, err = capsys.readouterr()
    assert "bomb.png: more than 50 pixels" in err and "Traceback" not in err
    assert out.startswith(f"{tmp_path / 'fine.png'}: ")


# ---------------------------------------------------------------- noise after a real error, slow compiles


def test_closed_event_loop_noise_and_swallowed_interrupts_are_dropped_and_other_unraisables_are_not(
    capsys, monkeypatch
):
    class Raises:
        def __init__(self, err: BaseException) -> None:
            self.err = err

        def __del__(self) -> None:
            raise self.err

    monkeypatch.setattr(sys, "unraisablehook", cli._quiet_unraisables)
    Raises(RuntimeError("Event loop is closed"))  # collected at once: an unraisable error, as orbax's threads leave
    assert capsys.readouterr().err == ""
    Raises(KeyboardInterrupt())  # Ctrl-C inside a callback that cannot raise (JAX's gc hook): run() reports it
    assert capsys.readouterr().err == ""
    Raises(ValueError("real"))
    assert "ValueError: real" in capsys.readouterr().err


def test_a_long_compilation_says_it_is_still_compiling(monkeypatch, capsys, tmp_path):
    from jaxcnn import console

    monkeypatch.setattr(console, "COMPILE_NOTICE_SECONDS", 0.0)
    train_run(write_spec(tmp_path / "tiny.json"), quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32),
              None, progress=False, verbose=True)  # fmt: skip
    assert "compiling tiny (4 layers):" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_among_the_images_does_not_hang_the_command(tmp_path):
    import subprocess

    images = write_class_folders(tmp_path / "imgs", quadrant_dataset(16, 8))
    os.mkfifo(images / "train" / "top-left" / "pipe.png")
    argv = ["train", str(write_spec(tmp_path / "tiny.json")), "--dataset", f"folder:{images}", "--out",
            str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "jaxcnn", *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pipe.png: is not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_top_below_one_is_refused_and_above_the_classes_is_clipped(capsys, run_copy, tmp_path):
    """Issue 27 (11): before, --top 0 printed nothing and --top -2 all but two classes, both with exit 0."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    for top in ("0", "-2", "²"):
        with pytest.raises(SystemExit) as stopped:
            cli.main(["predict", str(run_copy), str(tmp_path / "x.png"), "--top", top])
        assert stopped.value.code == 2 and "argument --top" in capsys.readouterr().err
    assert cli.main(["predict", str(run_copy), str(tmp_path / "x.png"), "--top", "9"]) == 0
    out, err = capsys.readouterr()
    assert "note: --top 9: the run tells 4 classes apart, so all 4 are shown" in err
    assert out.count("%)") == 4


def test_batch_norm_over_one_value_per_channel_is_refused():
    """Issue 27 (9): batch norm after a dense layer at batch size 1 trained nothing (6.7%), without a word."""
    from jaxcnn.spec import parse_spec
    from jaxcnn.train import ConfigError

    layers = [{"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "batch_norm", "name": "norm"},
              {"type": "dense", "units": 4}]  # fmt: skip
    spec = parse_spec({"format": "jaxcnn.spec/1", "input": [8, 8, 1], "layers": layers}, "bn.json")
    with pytest.raises(ConfigError) as caught:
        train_run(spec, quadrant_dataset(8, 8), TrainConfig(epochs=1, batch_size=1), None, progress=False,
                  verbose=False)  # fmt: skip
    for fragment in ("bn.json: layer 2 (batch_norm 'norm')", "over 1 value per channel", "--batch-size 2 or more"):
        assert fragment in str(caught.value)
    # After a conv layer one image gives 8x8 values per channel: allowed at batch size 1.
    conv = [{"type": "conv", "filters": 2, "size": 3, "padding": "same"}, {"type": "batch_norm"}, *layers[:2]]
    conv[-1] = {"type": "dense", "units": 4}
    spec = parse_spec({"format": "jaxcnn.spec/1", "input": [8, 8, 1], "layers": conv}, "conv_bn.json")
    result = train_run(spec, quadrant_dataset(8, 8), TrainConfig(epochs=1, batch_size=1), None, progress=False,
                       verbose=False)  # fmt: skip
    assert len(result.metrics) == 1


@pytest.mark.parametrize(
    ("augment", "fragment"),
    [
        ("translate=8", "translate=8 would shift images entirely out"),
        ("erase=64", "erase=64 would erase whole images (8x8 images"),
    ],
)
def test_augmentation_as_large_as_the_image_is_refused(augment, fragment):
    """Issue 27 (10): translate=64,erase=64 on 28x28 images blanked every image and trained to chance."""
    from jaxcnn.spec import parse_spec
    from jaxcnn.train import ConfigError

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        train_run(parse_spec(TINY_SPEC), quadrant_dataset(64, 8), TrainConfig(epochs=1, batch_size=32, augment=augment),
                  None, progress=False, verbose=False)  # fmt: skip


@pytest.mark.parametrize(("epochs", "fragment"), [("1", "already has its 1 epochs; nothing was done")])
def test_resume_to_no_more_epochs_says_so_before_loading_anything(capsys, run_copy, monkeypatch, epochs, fragment):
    """Issue 27 (18): `--resume RUN --epochs 2` on a 3-epoch run loaded the data, compiled and exited 0 silently."""
    from jaxcnn import session

    monkeypatch.setattr(session, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    before = sorted((p.relative_to(run_copy), p.stat().st_mtime_ns) for p in run_copy.rglob("*"))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run_copy), "--epochs", epochs, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert fragment in out and str(run_copy) in out and "--epochs N with N above 1 trains further" in out
    assert sorted((p.relative_to(run_copy), p.stat().st_mtime_ns) for p in run_copy.rglob("*")) == before
    _error_line(capsys, ["train", "--resume", str(run_copy), "--epochs", "0"], "epochs must be a positive integer")
