"""Sets tensorflow-datasets prepared as ArrayRecord (jaxcnn.tfds_source), built here without TensorFlow by
tests/tfds_fixture.py in a process of its own: read whole or streamed by name, photos of many sizes from a
``validation`` split, a damaged image named, and what cannot be read refused in one line without a download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import cli
from jaxcnn.config import TrainConfig
from jaxcnn.data import load_dataset
from jaxcnn.errors import DataError
from jaxcnn.images import decode_image
from jaxcnn.runs import train_run
from jaxcnn.spec import parse_spec
from jaxcnn.stream_data import open_streaming
from jaxcnn.streaming import centre_view, loader
from jaxcnn.tfds_source import find_prepared

from datasets import TINY_SPEC, quadrant_dataset

FIXTURE = Path(__file__).with_name("tfds_fixture.py")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """A tensorflow-datasets data folder holding jaxcnn_quadrants, jaxcnn_photos and jaxcnn_damaged."""
    folder = tmp_path_factory.mktemp("tensorflow_datasets")
    for name, kind in (("jaxcnn_quadrants", "quadrants"), ("jaxcnn_photos", "photos"), ("jaxcnn_damaged", "damaged")):
        subprocess.run([sys.executable, str(FIXTURE), str(folder), name, kind], check=True, capture_output=True)
    return folder


def as_set(images: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, int]]:
    """The examples in an order of their own (tensorflow-datasets shuffles them as it writes)."""
    return sorted((image.tobytes(), int(label)) for image, label in zip(images, labels, strict=True))


def test_a_prepared_set_is_read_whole_by_its_name(tfds_dir):
    data = load_dataset("jaxcnn_quadrants", tfds_dir)
    want = quadrant_dataset(200, 50)
    assert data.class_names == want.class_names and data.image_shape == (8, 8, 1)
    assert as_set(data.train_images, data.train_labels) == as_set(want.train_images, want.train_labels)
    assert as_set(data.test_images, data.test_labels) == as_set(want.test_images, want.test_labels)
    assert "ArrayRecord" in data.source
    assert "tensorflow" not in sys.modules  # read without TensorFlow


@pytest.mark.slow
def test_a_prepared_set_streams_by_its_name_trains_and_is_evaluated(tfds_dir, tmp_path, capsys):
    config = TrainConfig(epochs=8, batch_size=32, lr=3e-3)  # --data-in auto
    result = train_run(parse_spec(TINY_SPEC, "tiny.json"), "jaxcnn_quadrants", config, tmp_path / "run",
                       data_dir=tfds_dir, progress=False)  # fmt: skip
    assert "streamed from disk" in capsys.readouterr().out
    assert result.metrics[-1]["test_accuracy"] > 0.9, result.metrics
    assert cli.main(["evaluate", str(tmp_path / "run")]) == 0  # the run's data folder, read whole
    assert "test set, 50 images" in capsys.readouterr().out


def test_photos_of_many_sizes_stream_from_the_validation_split(tfds_dir):
    data = open_streaming("jaxcnn_photos", tfds_dir)
    assert data.image_shape is None and data.class_names == ("red", "green", "blue")
    assert (data.train_count, data.test_count) == (40, 12)
    batches = list(loader(data.test, (8, 8, 3), 5, training=False))
    images = np.concatenate([b["image"] for b in batches])
    for i, image in enumerate(images):  # evaluation's view of each stored photo, in the stored order
        element = data.test[i]
        np.testing.assert_array_equal(image, centre_view(decode_image(element["record"], element["where"]), (8, 8, 3)))
    assert [int(label) for b in batches for label in b["label"]] == [data.test[i]["label"] for i in range(12)]
    training = next(iter(loader(data.train, (8, 8, 3), 8, training=True, seed=3, epoch=1)))
    assert training["image"].shape == (8, 8, 8, 3)
    with pytest.raises(DataError, match="its images have many sizes, so it is only streamed"):
        load_dataset("jaxcnn_photos", tfds_dir)


def test_a_damaged_image_stops_the_epoch_with_its_record(tfds_dir):
    data = open_streaming("jaxcnn_damaged", tfds_dir)
    with pytest.raises(DataError, match=r"tensorflow-datasets jaxcnn_damaged train\[\d+\]: not a readable"):
        for _ in loader(data.train, (8, 8, 3), 8, training=True):
            pass


def test_what_cannot_be_read_is_refused_without_a_download(tfds_dir, tmp_path):
    before = sorted(p.name for p in tfds_dir.iterdir())
    assert find_prepared("mnist", tfds_dir) is None  # known to tensorflow-datasets, not prepared here
    assert find_prepared("no_such_set", tfds_dir) is None
    assert sorted(p.name for p in tfds_dir.iterdir()) == before  # nothing downloaded or written
    with pytest.raises(DataError, match="tfds build NAME --file_format=array_record") as refused:
        open_streaming("no_such_set", tfds_dir)
    assert "\n" not in str(refused.value)
    with pytest.raises(DataError, match="pack one with jaxcnn prepare mnist --out DIR"):
        open_streaming("mnist", tfds_dir)  # a built-in name: its original files, not tensorflow-datasets'
    copy = tmp_path / "copy"
    copy.mkdir()
    info_dir = next((tfds_dir / "jaxcnn_quadrants").iterdir())
    target = copy / "jaxcnn_quadrants" / info_dir.name
    target.mkdir(parents=True)
    for f in info_dir.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps(info | {"fileFormat": "tfrecord"}))
    with pytest.raises(DataError, match="prepared it as tfrecord files, which only TensorFlow reads; prepare it "):
        load_dataset("jaxcnn_quadrants", copy)
