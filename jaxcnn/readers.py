"""The data sets' file formats read into arrays: gzip IDX (MNIST), CIFAR-10's binary tarball, and class
folders (a folder or tar archive of ``train/<class>/*`` and ``test/<class>/*`` images)."""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from jaxcnn.errors import DataError
from jaxcnn.images import IMAGE_SUFFIXES, check_image_file, check_image_size, decode_image

CIFAR10_BINARY = "cifar-10-binary.tar.gz"


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
            raise DataError(f"{root}: found no images under {split}/<class>/ (PNG, JPEG or WebP)")
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
