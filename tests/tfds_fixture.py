"""Build a small tensorflow-datasets set in its ArrayRecord format, without TensorFlow, as a user's
``tfds build NAME --file_format=array_record`` leaves one: ``python tests/tfds_fixture.py DATA_DIR NAME KIND``.

KIND ``quadrants``: the tests' quadrant set (8x8 grey, 4 classes, 200 train and 50 test, one size), split
``test``. KIND ``photos``: 40 train and 12 validation RGB images of 8 to 40 pixels a side, 3 classes, split
``validation`` (as food101 and imagenette name it). KIND ``damaged``: the photos, one training image cut
short. Run in its own process so that the builder class is unknown to the test that reads the set, which then
reads it from its files alone, as a user's jaxcnn does. The images are given to tensorflow-datasets already
PNG-encoded: its own encoder needs TensorFlow.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from datasets import quadrant_dataset


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format="PNG")
    return out.getvalue()


def photos(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 41, (count, 2))
    return [(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8), i % 3) for i, (h, w) in enumerate(sizes)]


def examples(kind: str) -> tuple[dict[str, list[tuple[np.ndarray, int]]], tuple[int | None, ...], list[str]]:
    if kind == "quadrants":
        data = quadrant_dataset(200, 50)
        splits = {"train": list(zip(data.train_images, data.train_labels.tolist(), strict=True)),
                  "test": list(zip(data.test_images, data.test_labels.tolist(), strict=True))}  # fmt: skip
        return splits, (8, 8, 1), list(data.class_names)
    return {"train": photos(40, 0), "validation": photos(12, 1)}, (None, None, 3), ["red", "green", "blue"]


def build(data_dir: str, name: str, kind: str) -> None:
    splits, shape, names = examples(kind)

    set_name = name

    class MadeInTests(tfds.core.GeneratorBasedBuilder):
        name = set_name
        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> tfds.core.DatasetInfo:
            features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=shape),
                                                   "label": tfds.features.ClassLabel(names=names)})  # fmt: skip
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager: object) -> dict[str, object]:
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, object]]]:
            for i, (image, label) in enumerate(splits[split]):
                encoded = png(image)
                if kind == "damaged" and split == "train" and i == 5:
                    encoded = encoded[: len(encoded) // 2]
                yield i, {"image": encoded, "label": int(label)}

    MadeInTests(data_dir=data_dir, file_format="array_record").download_and_prepare()


if __name__ == "__main__":
    build(*sys.argv[1:4])
