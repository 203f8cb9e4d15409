"""Data sets read from disk while they train (``--data-in stream``): what they are, without importing the
loader (grain) until one is opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcnn.errors import DataError


@dataclass(frozen=True)
class StreamingData:
    """A data set read from disk as it trains: its name and source, class names, the image shape when all its
    images have one (None for photos of many sizes), and its train and test examples."""

    name: str
    source: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None
    train: Any  # jaxcnn.streaming.FolderImages or RecordImages (imported with grain, when used)
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
