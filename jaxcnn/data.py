"""Image-classification data sets as uint8 NHWC arrays, int labels and class names.

Where the data comes from, by ``name``:

- ``mnist``, ``fashion_mnist``, ``cifar10``: the original files, fetched and sha256-verified by
  tensorflow-datasets' download manager with the URLs and checksums tensorflow-datasets itself
  records, and decoded here with NumPy, so no TensorFlow is needed. Offline, the same files are
  read from ``DATA_DIR/<name>/`` (``--data-dir`` or ``JAXCNN_DATA_DIR``) and verified against the
  same checksums. For ``cifar10`` an offline folder may instead hold ``cifar10_jpeg.tar.gz`` (class
  folders of JPEG copies); the data set's ``source`` then says "JPEG copy".
- ``folder:PATH``: class folders ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (PNG or
  JPEG), a directory or a ``.tar``/``.tar.gz`` archive of one.
- ``prepared:DIR``: a folder ``jaxcnn prepare`` made (:mod:`jaxcnn.prepared`), of one image size.
- any other name: a tensorflow-datasets set. Prepared as ArrayRecord files it is read without TensorFlow
  (:mod:`jaxcnn.tfds_source`); otherwise by ``tensorflow_datasets.load``, which needs TensorFlow (``pip install
  'jaxcnn[tensorflow]'``).

Decoded arrays are cached as ``.npy`` files under ``JAXCNN_CACHE_DIR`` (default
``~/.cache/jaxcnn``), keyed by the source files' checksums, so a second load is fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from jaxcnn import downloads
from jaxcnn.array_cache import CACHE_DIR_ENV as CACHE_DIR_ENV
from jaxcnn.array_cache import cache_dir as cache_dir
from jaxcnn.array_cache import cached
from jaxcnn.dataset import Dataset as Dataset
from jaxcnn.downloads import DATA_DIR_ENV as DATA_DIR_ENV
from jaxcnn.errors import DataError as DataError  # raised here, and imported from here by users
from jaxcnn.images import read_image_file as read_image_file  # the public names they had here
from jaxcnn.metrics import confusion_matrix as confusion_matrix
from jaxcnn.preprocess import Preprocess as Preprocess
from jaxcnn.preprocess import channel_mean_std as channel_mean_std
from jaxcnn.preprocess import plan_preprocess as plan_preprocess
from jaxcnn.readers import CIFAR10_BINARY as CIFAR10_BINARY
from jaxcnn.readers import read_cifar10_binary, read_class_folders, read_idx

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR10_JPEG = "cifar10_jpeg.tar.gz"
BUILTIN = ("mnist", "fashion_mnist", "cifar10")
IMPORTED = "imported"
"""The data-set name of a run made by ``jaxcnn import``: trained elsewhere, on data jaxcnn does not know."""


def _decode_idx_set(name: str, paths: dict[str, Path], source: str, class_names: tuple[str, ...]) -> Dataset:
    arrays = {}
    for key, filename in IDX_FILES.items():
        array = read_idx(paths[filename], 3 if key.endswith("images") else 1)
        arrays[key] = array[..., None] if key.endswith("images") else array.astype(np.int32)
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"{name}: {split} images and labels differ in number")
    return Dataset(name=name, class_names=class_names, source=source, **arrays)


def _load_cifar10(data_dir: Path | None) -> Dataset:
    if data_dir is not None and not (data_dir / "cifar10" / CIFAR10_BINARY).exists():
        jpeg = data_dir / "cifar10" / CIFAR10_JPEG
        if jpeg.exists():

            def decode_jpeg_copy() -> Dataset:
                arrays, classes = read_class_folders(jpeg)
                if classes != CIFAR10_CLASSES:
                    raise DataError(f"{jpeg}: class folders {classes} are not CIFAR-10's {CIFAR10_CLASSES}")
                return Dataset(name="cifar10", class_names=classes, source="", **arrays)

            source = f"JPEG copy {jpeg} (JPEG quality copies, not the exact images)"
            return cached(f"cifar10-jpeg-{downloads.sha256_of(jpeg)[:16]}", source, decode_jpeg_copy)
    paths, source = downloads.source_files("cifar10", [CIFAR10_BINARY], data_dir)
    expected = downloads.recorded_checksums("cifar10")[CIFAR10_BINARY][1]
    return cached(
        f"cifar10-{expected[:16]}",
        source,
        lambda: Dataset(
            name="cifar10", class_names=CIFAR10_CLASSES, source="", **read_cifar10_binary(paths[CIFAR10_BINARY])
        ),
    )


def _load_with_tfds(name: str, data_dir: Path | None) -> Dataset:
    """Any other tensorflow-datasets image-classification set; needs TensorFlow."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise DataError(
            f"the data set {name!r} is read by tensorflow-datasets, which needs TensorFlow: "
            "pip install 'jaxcnn[tensorflow]'. Built in without TensorFlow: "
            f"{', '.join(BUILTIN)}, and folder:PATH for class folders."
        ) from None
    import tensorflow_datasets as tfds

    try:
        splits, info = tfds.load(
            name, split=["train", "test"], as_supervised=True, batch_size=-1, with_info=True, data_dir=data_dir
        )
    except Exception as err:  # tensorflow-datasets raises many kinds
        raise DataError(f"tensorflow-datasets could not load {name!r}: {err}") from None
    (train_x, train_y), (test_x, test_y) = tfds.as_numpy(splits)
    label = info.features[info.supervised_keys[1]]
    return Dataset(
        name=name,
        train_images=np.asarray(train_x, np.uint8),
        train_labels=np.asarray(train_y, np.int32),
        test_images=np.asarray(test_x, np.uint8),
        test_labels=np.asarray(test_y, np.int32),
        class_names=tuple(label.names),
        source="tensorflow-datasets",
    )


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The offline folder: the argument, else ``JAXCNN_DATA_DIR``, else None (download)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: the offline data folder (--data-dir / {DATA_DIR_ENV}) does not exist")
    return path


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a data set by name (see the module docstring), offline when ``data_dir`` is given."""
    folder = resolve_data_dir(data_dir)
    if name.startswith("folder:"):
        root = Path(name[len("folder:") :]).expanduser()
        arrays, classes = read_class_folders(root)
        return Dataset(name=name, class_names=classes, source=f"class folders {root}", **arrays)
    if name.startswith("prepared:"):
        from jaxcnn.stream_data import open_streaming

        return open_streaming(name).in_memory()
    if name == IMPORTED:
        raise DataError("this run was imported (jaxcnn import) and records no data set of its own; name one with "
                        "--dataset NAME (mnist, cifar10, folder:PATH, ...)")  # fmt: skip
    if name not in BUILTIN:
        from jaxcnn.tfds_source import find_prepared, streaming

        found = find_prepared(name, folder)  # prepared as ArrayRecord: read without TensorFlow
        return streaming(found).in_memory() if found is not None else _load_with_tfds(name, folder)
    if name == "cifar10":
        return _load_cifar10(folder)
    classes = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
    # The original files are verified on every load; a cache hit only skips decoding them.
    paths, source = downloads.source_files(name, list(IDX_FILES.values()), folder)
    key = hashlib.sha256(repr(sorted(downloads.recorded_checksums(name).items())).encode()).hexdigest()[:16]
    return cached(f"{name}-{key}", source, lambda: _decode_idx_set(name, paths, source, classes))
