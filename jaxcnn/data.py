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
- any other name: ``tensorflow_datasets.load``, which needs TensorFlow (``pip install
  'jaxcnn[tensorflow]'``).

Decoded arrays are cached as ``.npy`` files under ``JAXCNN_CACHE_DIR`` (default
``~/.cache/jaxcnn``), keyed by the source files' checksums, so a second load is fast.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import os
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from jaxcnn.errors import DataError as DataError  # raised here, and imported from here by users
from jaxcnn.images import IMAGE_SUFFIXES, check_image_file, check_image_size, decode_image
from jaxcnn.images import read_image_file as read_image_file  # the public name it had here

DATA_DIR_ENV = "JAXCNN_DATA_DIR"
CACHE_DIR_ENV = "JAXCNN_CACHE_DIR"
DOWNLOAD_PROBE_SECONDS = 5.0
"""How long a download waits to reach the data's host before saying that it cannot."""

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
CIFAR10_BINARY = "cifar-10-binary.tar.gz"
CIFAR10_JPEG = "cifar10_jpeg.tar.gz"
BUILTIN = ("mnist", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class Dataset:
    """A classification data set held in memory as uint8 NHWC images and int32 labels."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DataError(
                    f"data set {self.name}: {split}_images must be uint8 (0-255) of shape (N, H, W, C); "
                    f"got {images.dtype} of shape {images.shape}"
                )
            if len(labels) != len(images):
                raise DataError(f"data set {self.name}: {len(images)} {split} images but {len(labels)} labels")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train_images.shape[1:]
        return (int(h), int(w), int(c))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------- checksums and files


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_record_path(name: str) -> Path:
    """tensorflow-datasets' checksum record for a data set (``url_checksums/<name>.txt`` in its package)."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"{name}: tensorflow-datasets is not installed; it records the checksums jaxcnn verifies "
            "the data against (pip install tensorflow-datasets)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "url_checksums" / f"{name}.txt"


def recorded_checksums(name: str) -> dict[str, tuple[str, str]]:
    """tensorflow-datasets' record for a data set: file name -> (url, sha256).

    Read from the record file itself (tab-separated url, size, sha256, file name per line), as
    tensorflow-datasets reads it: importing tensorflow-datasets just to parse it took 0.45 s.
    ``tests/test_data.py`` checks the result equals tensorflow-datasets' own parse.
    """
    records = {}
    for line in checksum_record_path(name).read_text().splitlines():
        fields = line.strip().split("\t")
        if len(fields) == 4 and not fields[0].startswith("#"):
            url, _size, checksum, filename = fields
            records[filename] = (url, checksum)
    return records


def verify(path: Path, expected: str, dataset: str) -> None:
    """Raise DataError unless ``path`` exists and has the expected sha256."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing. The offline folder for {dataset} must hold the original file {path.name} "
            f"(sha256 {expected}); copy it there, or unset --data-dir/{DATA_DIR_ENV} to download it."
        )
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: sha256 is {actual}, expected {expected} (the checksum tensorflow-datasets records). "
            "The file is corrupt or not the original; replace it with the original file, or delete it and "
            f"unset --data-dir/{DATA_DIR_ENV} to download it again."
        )


def cache_dir() -> Path:
    """Where decoded arrays and downloads are kept."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    try:
        return Path.home() / ".cache" / "jaxcnn"
    except RuntimeError:  # no HOME and no user database entry
        return Path(tempfile.gettempdir()) / f"jaxcnn-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _download(name: str, files: list[str]) -> dict[str, Path]:
    """Fetch original files with tensorflow-datasets' download manager (verifies sha256)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    infos = checksums.load_url_infos(checksum_record_path(name))
    by_file = {str(info.filename): url for url, info in infos.items()}
    from tensorflow_datasets.core.download import resource

    for f in files:  # files downloaded before are used without the network
        url = by_file[f]
        if not (cache_dir() / "downloads" / name / resource.get_dl_fname(url, str(infos[url].checksum))).is_file():
            _check_reachable(url, name)
    manager = tfds.download.DownloadManager(
        download_dir=cache_dir() / "downloads",
        url_infos=infos,
        dataset_name=name,
        force_checksums_validation=True,
    )
    try:
        fetched = manager.download({f: by_file[f] for f in files})
    except Exception as err:  # network, checksum or disk errors from tensorflow-datasets
        raise DataError(
            f"could not download {name} ({err}). Offline, point --data-dir or {DATA_DIR_ENV} at a folder "
            f"holding {name}/ with the original files."
        ) from None
    return {f: Path(str(p)) for f, p in fetched.items()}


def _check_reachable(url: str, name: str) -> None:
    """A DataError within seconds when ``url``'s host cannot be reached, instead of the minutes that
    tensorflow-datasets' download retries take on a machine without network access."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=DOWNLOAD_PROBE_SECONDS):
            pass
    except OSError as err:
        raise DataError(
            f"cannot download {name}: {parts.hostname}:{port} is unreachable ({err.strerror or err}). Offline, "
            f"point --data-dir or {DATA_DIR_ENV} at a folder holding {name}/ with the original files "
            "(see the README's Data section)"
        ) from None


def _source_files(name: str, files: list[str], data_dir: Path | None) -> tuple[dict[str, Path], str]:
    """Verified paths of the original files, offline or downloaded, and a description of where from."""
    records = recorded_checksums(name)
    if data_dir is None:
        return _download(name, files), "downloaded by tensorflow-datasets (sha256 verified)"
    folder = data_dir / name
    paths = {f: folder / f for f in files}
    for f, p in paths.items():
        verify(p, records[f][1], name)
    return paths, f"offline folder {folder} (sha256 verified)"


# ---------------------------------------------------------------- decoders


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Decode a gzip IDX file (MNIST format): big-endian header, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err}); replace it with the original") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise DataError(f"{path}: not an IDX file of uint8 with {expected_dims} dimensions (bad magic number)")
    header_end = 4 + 4 * expected_dims
    if len(raw) < header_end:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims)]
    count = int(np.prod(dims))
    if len(raw) - header_end != count:
        raise DataError(
            f"{path}: truncated or padded: the header promises {'x'.join(map(str, dims))} = {count} bytes of data, "
            f"the file holds {len(raw) - header_end}; replace it with the original"
        )
    return np.frombuffer(raw, np.uint8, offset=header_end).reshape(dims)


def _decode_idx_set(name: str, paths: dict[str, Path], source: str, class_names: tuple[str, ...]) -> Dataset:
    arrays = {}
    for key, filename in IDX_FILES.items():
        array = read_idx(paths[filename], 3 if key.endswith("images") else 1)
        arrays[key] = array[..., None] if key.endswith("images") else array.astype(np.int32)
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"{name}: {split} images and labels differ in number")
    return Dataset(name=name, class_names=class_names, source=source, **arrays)


def read_cifar10_binary(path: Path) -> dict[str, np.ndarray]:
    """Decode CIFAR-10's binary tarball: records of 1 label byte + 3072 bytes (3 planes of 32x32)."""
    record = 1 + 3 * 32 * 32
    splits: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                base = PurePosixPath(member.name).name
                split = "train" if base.startswith("data_batch_") else "test" if base == "test_batch.bin" else None
                if split is None:
                    continue
                f = tar.extractfile(member)
                raw = f.read() if f else b""
                if len(raw) % record:
                    raise DataError(f"{path}: {member.name} is truncated ({len(raw)} bytes is not whole records)")
                splits[split].append(np.frombuffer(raw, np.uint8).reshape(-1, record))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 tar.gz ({err}); replace it with the original") from None
    out = {}
    for split, parts in splits.items():
        if not parts:
            raise DataError(f"{path}: holds no {split} batches; is it {CIFAR10_BINARY}?")
        rows = np.concatenate(parts)
        out[f"{split}_labels"] = rows[:, 0].astype(np.int32)
        out[f"{split}_images"] = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return out


def _folder_entries(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, where, bytes) for every image under root/{train,test}/<class>/, dir or tar."""
    if root.is_dir():
        for path in sorted(root.glob("*/*/*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.parts[-3] in ("train", "test"):
                check_image_file(path)
                try:
                    yield path.parts[-3], path.parts[-2], str(path), path.read_bytes()
                except OSError as err:
                    raise DataError(f"{path}: cannot be read ({err.strerror})") from None
        return
    try:
        with tarfile.open(root) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                parts = PurePosixPath(member.name).parts
                is_image = PurePosixPath(member.name).suffix.lower() in IMAGE_SUFFIXES
                if member.isfile() and is_image and len(parts) >= 3 and parts[-3] in ("train", "test"):
                    check_image_size(f"{root}:{member.name}", member.size)
                    f = tar.extractfile(member)
                    yield parts[-3], parts[-2], f"{root}:{member.name}", f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{root}: not a readable folder or tar archive of class folders ({err})") from None


def read_class_folders(root: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Images from ROOT/train/<class>/* and ROOT/test/<class>/*; classes in sorted order."""
    if not root.exists():
        raise DataError(f"{root}: no such folder or archive")
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[str]] = {"train": [], "test": []}
    first_shape: tuple[tuple[int, ...], str] | None = None
    for split, label, where, data in _folder_entries(root):
        image = decode_image(data, where)
        if first_shape is None:
            first_shape = (image.shape, where)
        elif image.shape != first_shape[0]:
            raise DataError(
                f"{where}: image is {'x'.join(map(str, image.shape))}, but {first_shape[1]} is "
                f"{'x'.join(map(str, first_shape[0]))}; all images of a data set must have one size"
            )
        images[split].append(image)
        labels[split].append(label)
    for split in ("train", "test"):
        if not images[split]:
            raise DataError(f"{root}: found no images under {split}/<class>/ (PNG or JPEG)")
    class_names = tuple(sorted(set(labels["train"])))
    unknown = set(labels["test"]) - set(class_names)
    if unknown:
        raise DataError(f"{root}: test classes {sorted(unknown)} have no training images")
    index = {c: i for i, c in enumerate(class_names)}
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = np.stack(images[split])
        arrays[f"{split}_labels"] = np.asarray([index[c] for c in labels[split]], np.int32)
    return arrays, class_names


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
            return _cached(f"cifar10-jpeg-{sha256_of(jpeg)[:16]}", source, decode_jpeg_copy)
    paths, source = _source_files("cifar10", [CIFAR10_BINARY], data_dir)
    expected = recorded_checksums("cifar10")[CIFAR10_BINARY][1]
    return _cached(
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


# ---------------------------------------------------------------- cache and entry point


def _read_cache(path: Path, source: str) -> Dataset | None:
    """The cached arrays, or None when there are none; a damaged cache file is deleted (and said so)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return Dataset(
                name=str(z["name"]),
                train_images=z["train_images"],
                train_labels=z["train_labels"],
                test_images=z["test_images"],
                test_labels=z["test_labels"],
                class_names=tuple(str(c) for c in z["class_names"]),
                source=source,
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, DataError) as err:
        _warn(f"{path}: the cached arrays are damaged ({type(err).__name__}); deleted, decoding the data again")
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _write_cache(path: Path, data: Dataset) -> None:
    """Keep the decoded arrays for next time; a cache folder that cannot be written only costs time."""
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            tmp,
            name=data.name,
            train_images=data.train_images,
            train_labels=data.train_labels,
            test_images=data.test_images,
            test_labels=data.test_labels,
            class_names=np.asarray(data.class_names),
        )
        os.replace(tmp, path)
    except OSError as err:
        _warn(f"cannot cache the decoded arrays in {path.parent} ({err.strerror}); set {CACHE_DIR_ENV} to a "
              "writable folder to load faster next time")  # fmt: skip
        with contextlib.suppress(OSError):
            tmp.unlink()


def _cached(key: str, source: str, decode: Callable[[], Dataset]) -> Dataset:
    """The decoded data set from the array cache, or decode it and fill the cache."""
    path = cache_dir() / "arrays" / f"{key}.npz"
    data = _read_cache(path, source)
    if data is None:
        data = replace(decode(), source=source)
        _write_cache(path, data)
    return data


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
    if name not in BUILTIN:
        return _load_with_tfds(name, folder)
    if name == "cifar10":
        return _load_cifar10(folder)
    classes = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
    # The original files are verified on every load; a cache hit only skips decoding them.
    paths, source = _source_files(name, list(IDX_FILES.values()), folder)
    key = hashlib.sha256(repr(sorted(recorded_checksums(name).items())).encode()).hexdigest()[:16]
    return _cached(f"{name}-{key}", source, lambda: _decode_idx_set(name, paths, source, classes))


# ---------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become the network's float input; recorded in a run so predict matches training.

    ``fit`` (NumPy, once, on uint8) pads and repeats channels; ``to_float`` (NumPy or JAX, per
    batch) scales to [0, 1] and, when ``mean``/``std`` are set, normalises each channel.
    """

    pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    grey_to_rgb: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def fit(self, images: np.ndarray) -> np.ndarray:
        """Pad and convert channels of a uint8 NHWC batch."""
        if any(p for pair in self.pad for p in pair):
            images = np.pad(images, ((0, 0), *self.pad, (0, 0)))
        if self.grey_to_rgb and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        return images

    def to_float(self, images):  # type: ignore[no-untyped-def]  # NumPy or JAX arrays alike
        """uint8 -> float32 in [0, 1], then (x - mean) / std per channel if normalising."""
        x = images.astype(np.float32) / np.float32(255)
        if self.mean is not None and self.std is not None:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x

    def to_dict(self) -> dict[str, object]:
        return {"pad": [list(p) for p in self.pad], "grey_to_rgb": self.grey_to_rgb, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        (top, bottom), (left, right) = d.get("pad") or [[0, 0], [0, 0]]
        mean, std = d.get("mean"), d.get("std")
        return cls(
            pad=((int(top), int(bottom)), (int(left), int(right))),
            grey_to_rgb=bool(d.get("grey_to_rgb", False)),
            mean=tuple(float(v) for v in mean) if mean is not None else None,
            std=tuple(float(v) for v in std) if std is not None else None,
        )


def plan_preprocess(
    data: Dataset,
    input_shape: tuple[int, ...],
    *,
    pad: bool = False,
    grey_to_rgb: bool = False,
    normalize: bool = False,
) -> Preprocess:
    """The preprocessing that turns ``data``'s images into the spec's input, or a DataError saying why not.

    Padding (centred, zeros) and grey -> RGB happen only when asked; normalisation uses the
    training set's per-channel mean and standard deviation.
    """
    h, w, c = data.image_shape
    want_h, want_w, want_c = input_shape
    pads = ((0, 0), (0, 0))
    if (h, w) != (want_h, want_w):
        if not pad or want_h < h or want_w < w:
            hint = " Pass --pad to pad the images with zeros." if want_h >= h and want_w >= w and not pad else ""
            raise DataError(
                f"{data.name} images are {h}x{w}x{c} but the spec takes {want_h}x{want_w}x{want_c}.{hint} "
                f"Or use a spec whose input is [{h}, {w}, {c}]."
            )
        pads = (((want_h - h) // 2, (want_h - h + 1) // 2), ((want_w - w) // 2, (want_w - w + 1) // 2))
    if c != want_c and not (grey_to_rgb and c == 1 and want_c == 3):
        hint = " Pass --grey-to-rgb to repeat the grey channel." if c == 1 and want_c == 3 else ""
        raise DataError(f"{data.name} images have {c} channel(s) but the spec takes {want_c}.{hint}")
    mean = std = None
    if normalize:
        mean_c, std_c = channel_mean_std(data.train_images)
        std_c = std_c + 1e-8
        if grey_to_rgb and c == 1 and want_c == 3:
            mean_c, std_c = np.repeat(mean_c, 3), np.repeat(std_c, 3)
        mean, std = tuple(float(v) for v in mean_c), tuple(float(v) for v in std_c)
    return Preprocess(pad=pads, grey_to_rgb=grey_to_rgb and c == 1 and want_c == 3, mean=mean, std=std)


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images scaled to [0, 1].

    Exact: the sums of the pixel values and of their squares are integers, accumulated in int64
    over blocks of images, so no float copy of the whole set is made (MNIST's would be 376 MB).
    The squares are taken in uint16 (255**2 fits), not on an int64 copy: MNIST's statistics in
    0.07 s instead of 0.3-0.6.
    """
    channels = images.shape[-1]
    count, sums, squares = 0, np.zeros(channels, np.int64), np.zeros(channels, np.int64)
    for start in range(0, len(images), 4096):
        block = images[start : start + 4096].reshape(-1, channels)
        count += len(block)
        sums += block.sum(axis=0, dtype=np.int64)
        squares += np.square(block, dtype=np.uint16).sum(axis=0, dtype=np.int64)
    # Python integers for count * squares - sums**2: exact, no overflow.
    variance = [(count * int(q) - int(t) ** 2) / count**2 for q, t in zip(squares, sums, strict=True)]
    return sums / count / 255, np.sqrt(np.array(variance, np.float64)) / 255


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted] over a test set."""
    index = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
