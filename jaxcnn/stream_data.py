"""Data sets read from disk while they train (``--data-in stream``): what they are, without importing the
loader (grain) until one is opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import DataError
from jaxcnn.preprocess import ChannelMoments, Preprocess, normalization

NORMALIZE_SAMPLE = 50_000
"""``--normalize`` on a streamed set measures the mean and deviation on all its training images up to this
many (so CIFAR-10 gets exactly the in-memory figures), else on this many evenly spaced ones."""


@dataclass(frozen=True)
class StreamingData:
    """A data set read from disk as it trains: its name and source, class names, the image shape when all its
    images have one (None for photos of many sizes), and its train and test examples."""

    name: str
    source: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None
    train: Any  # a jaxcnn.streaming.ImageSource (imported with grain, when used)
    test: Any

    @property
    def train_count(self) -> int:
        return len(self.train)

    @property
    def test_count(self) -> int:
        return len(self.test)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def in_memory(self) -> Any:
        """The whole set as an in-memory :class:`jaxcnn.data.Dataset` (for ``evaluate``, ``show``, ``explore`` and
        ``--data-in memory``), when its images have one size: each decoded as the loader decodes it."""
        from jaxcnn.dataset import Dataset
        from jaxcnn.streaming import centre_view, decoded

        shape = self.image_shape
        if shape is None:
            raise DataError(f"{self.name}: its images have many sizes, so it is only streamed (jaxcnn train); to "
                            "evaluate or explore a run on it, name a data set of one size with --dataset")  # fmt: skip
        arrays: dict[str, np.ndarray] = {}
        for split, images in (("train", self.train), ("test", self.test)):
            examples = [decoded(images[i]) for i in range(len(images))]
            # A grey image among colour ones (some sets have a few) takes the set's channels, as the loader gives it.
            arrays[f"{split}_images"] = np.stack([centre_view(image, shape) for image, _ in examples])
            arrays[f"{split}_labels"] = np.asarray([label for _, label in examples], np.int32)
        return Dataset(name=self.name, class_names=self.class_names, source=self.source, **arrays)


def open_streaming(name: str, data_dir: str | Path | None = None) -> StreamingData:
    """``prepared:DIR`` (a folder ``jaxcnn prepare`` made, verified), ``folder:PATH`` (class folders of photos,
    listed, not read) or a set tensorflow-datasets has prepared as ArrayRecord (under ``data_dir``, else its
    default folder) as streamed data."""
    from jaxcnn.prepared import Prepared, folder_files
    from jaxcnn.streaming import FolderImages, RecordImages

    if name.startswith("prepared:"):
        prepared = Prepared.open(name[len("prepared:") :])
        root = str(prepared.root)
        return StreamingData(name, f"prepared shards in {root} (sha256 verified)", prepared.class_names,
                             prepared.image_shape, RecordImages(prepared.splits["train"], root),
                             RecordImages(prepared.splits["test"], root))  # fmt: skip
    if name.startswith("folder:"):
        root_path = Path(name[len("folder:") :]).expanduser()
        files = folder_files(root_path)
        classes = tuple(sorted({label for split, label, _ in files if split == "train"}))
        unknown = {label for split, label, _ in files if split == "test"} - set(classes)
        if unknown:
            raise DataError(f"{root_path}: test classes {sorted(unknown)} have no training images")
        index = {c: i for i, c in enumerate(classes)}
        lists = {s: tuple((str(p), index[label]) for split, label, p in files if split == s) for s in ("train", "test")}
        return StreamingData(name, f"class folders {root_path}, read as they train", classes, None,
                             FolderImages(lists["train"]), FolderImages(lists["test"]))  # fmt: skip
    from jaxcnn.data import BUILTIN, IMPORTED
    from jaxcnn.tfds_source import find_prepared, streaming

    found = None if name in (*BUILTIN, IMPORTED) else find_prepared(name, data_dir)
    if found is None:
        raise DataError(f"{name}: streamed data sets are prepared:DIR (pack one with jaxcnn prepare {name} --out DIR), "
                        "folder:PATH, and tensorflow-datasets sets prepared as ArrayRecord (tfds build NAME "
                        "--file_format=array_record); --data-in memory reads the others")  # fmt: skip
    return streaming(found)


@dataclass(frozen=True)
class Sampled:
    """The examples ``indices`` of ``images``, as a source of their own for the loader."""

    images: Any
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.images[int(self.indices[index])]


def measured_normalization(data: StreamingData, shape: tuple[int, int, int], workers: int = 0) -> Preprocess:
    """``--normalize`` for a streamed set: the per-channel mean and deviation of its training images as the
    network sees them in evaluation (at its size and channels), over at most NORMALIZE_SAMPLE of them, read in
    batches by the loader (``workers`` processes) and counted exactly, never all in memory."""
    from jaxcnn.streaming import loader

    count = data.train_count
    chosen = np.unique(np.linspace(0, count - 1, min(count, NORMALIZE_SAMPLE)).round().astype(np.int64))
    moments = ChannelMoments(shape[-1])
    for batch in loader(Sampled(data.train, chosen), shape, 256, training=False, workers=workers):
        moments.add(np.asarray(batch["image"]))
    mean, std = normalization(*moments.mean_std())
    return Preprocess(mean=mean, std=std)
