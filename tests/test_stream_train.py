"""Training from streamed data (--data-in stream): it learns, it is a function of the seed alone (not of the
worker count), a resumed run equals an uninterrupted one, a folder of photos of many sizes is streamed by
itself, the wait for data is recorded, and what streaming cannot do is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.config import TrainConfig
from jaxcnn.prepared import prepare
from jaxcnn.runs import resume_run, train_run
from jaxcnn.spec import parse_spec

from datasets import TINY_SPEC, quadrant_dataset, write_class_folders

pytestmark = pytest.mark.slow  # each test trains whole runs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    data = quadrant_dataset(256, 64)
    out = tmp_path_factory.mktemp("prepared") / "quadrants"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("jaxcnn.data.load_dataset", lambda name, data_dir=None: data)
        prepare("quadrants", out)
    return out


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


def test_what_streaming_cannot_do_is_refused_in_one_line(prepared, tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_SPEC))
    base = ["train", str(spec), "--dataset", f"prepared:{prepared}", "--epochs", "1", "--out", str(tmp_path / "r")]
    for extra, message in ((["--normalize"], "--normalize measures the training images' mean"),
                           (["--data-in", "memory"], "a prepared data set is streamed")):  # fmt: skip
        assert cli.main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
