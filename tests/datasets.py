"""Tiny data sets made in the tests: IDX files, CIFAR-10 binary batches, class folders, arrays."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from jaxcnn.data import IDX_FILES, Dataset


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) as a gzip IDX file: magic 0 0 8 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def quadrant_images(n: int, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 4-class problem: class k has a bright quadrant k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    half = size // 2
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 2)
        images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] += 150
    return images, labels


def quadrant_dataset(train: int = 512, test: int = 300) -> Dataset:
    x, y = quadrant_images(train, 0)
    tx, ty = quadrant_images(test, 1)
    return Dataset("quadrants", x, y, tx, ty, ("top-left", "top-right", "bottom-left", "bottom-right"), "made in tests")


PATTERNS = np.stack([np.eye(5, dtype=np.uint8)[2].repeat(5).reshape(5, 5).T,  # a vertical bar
                     np.eye(5, dtype=np.uint8)[2].repeat(5).reshape(5, 5),  # a horizontal bar
                     np.eye(5, dtype=np.uint8), np.eye(5, dtype=np.uint8)[::-1]])  # the two diagonals  # fmt: skip
PATTERN_NAMES = ("vertical", "horizontal", "diagonal", "anti-diagonal")


def pattern_images(n: int, seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class k has PATTERNS[k] (5x5, bright) somewhere on dim noise: the evidence is a few pixels at a place
    that changes, which a saliency map must find (and blacking them out must matter)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.integers(0, 50, (n, size, size, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = rng.integers(0, size - 4, 2)
        window = images[i, r : r + 5, c : c + 5, 0]
        window[...] = np.maximum(window, PATTERNS[k] * rng.integers(180, 256)).astype(np.uint8)
    return images, labels


TINY_SPEC = {
    "format": "jaxcnn.spec/1",
    "name": "tiny",
    "input": [8, 8, 1],
    "layers": [
        {"type": "conv", "filters": 4, "size": 3, "padding": "same", "activation": "relu"},
        {"type": "max_pool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 4, "activation": "softmax"},
    ],
}


# A small graph: batch norm, a residual block (qualified names), max pooling, dropout.
GRAPH_SPEC = {
    "format": "jaxcnn.spec/1",
    "name": "tiny-graph",
    "input": [8, 8, 1],
    "blocks": {
        "residual": {
            "layers": [
                {"type": "conv", "name": "conv", "filters": 4, "size": 3, "padding": 1},
                {"type": "add", "name": "add", "inputs": ["conv", "input"]},
            ]
        }
    },
    "layers": [
        {"type": "conv", "name": "c1", "filters": 4, "size": 3, "padding": 1, "use_bias": False},
        {"type": "batch_norm", "name": "bn1"},
        {"type": "activation", "name": "r1", "activation": "relu"},
        {"block": "residual", "name": "res"},  # qualified names (res.conv, res.add) in checkpoints too
        {"type": "max_pool", "name": "pool", "size": 2},
        {"type": "flatten", "name": "flat"},
        {"type": "dropout", "name": "drop", "rate": 0.2},
        {"type": "dense", "name": "out", "units": 4, "activation": "softmax"},
    ],
}


def write_spec(path: Path, spec: dict | None = None) -> Path:
    path.write_text(json.dumps(spec or TINY_SPEC))
    return path


def write_class_folders(root: Path, data: Dataset) -> Path:
    """PNG files in root/{train,test}/<class>/NNNN.png."""
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / data.class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:04d}.png")
    return root


def write_cifar_binary(path: Path, per_batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny cifar-10-binary.tar.gz: 5 train batches and a test batch of ``per_batch`` records."""
    rng = np.random.default_rng(seed)
    expected: dict[str, list[np.ndarray]] = {
        "train_images": [],
        "train_labels": [],
        "test_images": [],
        "test_labels": [],
    }
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            split = "test" if name.startswith("test") else "train"
            labels = rng.integers(0, 10, per_batch).astype(np.uint8)
            chw = rng.integers(0, 256, (per_batch, 3, 32, 32)).astype(np.uint8)
            raw = np.concatenate([labels[:, None], chw.reshape(per_batch, -1)], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            expected[f"{split}_images"].append(chw.transpose(0, 2, 3, 1))
            expected[f"{split}_labels"].append(labels.astype(np.int32))
    return {k: np.concatenate(v) for k, v in expected.items()}


def write_mnist_files(folder: Path, train: int, test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The four MNIST-format files of random 28x28 digits in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (train, 28, 28)).astype(np.uint8),
        "train_labels": rng.integers(0, 10, train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (test, 28, 28)).astype(np.uint8),
        "test_labels": rng.integers(0, 10, test).astype(np.uint8),
    }
    for key, filename in IDX_FILES.items():
        write_idx(folder / filename, arrays[key])
    return arrays


def change_one_weight(checkpoint: Path, layer: str) -> None:
    """Change one weight of ``layer`` in a saved checkpoint without the storage format noticing.

    tensorstore catches some damage itself (small arrays sit in checksummed index nodes, others are
    compressed), but a changed value in array data it does not checksum reads back silently. That
    case is made here exactly: the arrays are rewritten with one weight changed, the recorded
    checksums are left as they were.
    """
    import orbax.checkpoint as ocp

    item = checkpoint / "default"
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(item)
        state["params"][layer]["kernel"] = np.asarray(state["params"][layer]["kernel"]).copy()
        state["params"][layer]["kernel"].flat[0] += 0.25
        rewritten = checkpoint.parent / "rewritten"
        checkpointer.save(rewritten, state)
    shutil.rmtree(item)
    os.replace(rewritten, item)


def train_folder_run(
    root: Path, spec: dict, size: int = 8, train: int = 256, test: int = 64, epochs: int = 1, rgb: bool = False
) -> Path:
    """A run trained on quadrant images written as class folders, so its test set can be read back
    (``jaxcnn evaluate``, ``show``, ``explore``); returns the run directory. ``rgb``: three different
    channels (the grey image, its negative, half of it)."""
    from jaxcnn.config import TrainConfig
    from jaxcnn.data import load_dataset
    from jaxcnn.runs import train_run
    from jaxcnn.spec import parse_spec

    x, y = quadrant_images(train, 0, size)
    tx, ty = quadrant_images(test, 1, size)
    if rgb:
        x, tx = (np.concatenate([a, 255 - a, a // 2], axis=-1) for a in (x, tx))
    names = ("top-left", "top-right", "bottom-left", "bottom-right")
    folders = write_class_folders(root / "images", Dataset("quadrants", x, y, tx, ty, names, "made in tests"))
    data = load_dataset(f"folder:{folders}")
    config = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3)
    train_run(parse_spec(spec, "spec.json"), data, config, root / "run", progress=False, verbose=False)
    return root / "run"


def awkward_image_files(folder: Path, height: int, width: int) -> list[Path]:
    """Image files that the decoders of browsers and libraries read differently: an RGB JPEG stored on its side
    with an EXIF orientation, white ink drawn only in an alpha channel (RGBA and grey+alpha), a paletted PNG
    and a grey PNG with a transparent colour, and 16-bit grey. Each shows a light stroke on black."""
    ink = np.zeros((height, width), np.uint8)
    ink[height // 5 : -height // 5, width // 2 - 1 : width // 2 + 2] = 255
    ink[height // 5, width // 4 : width // 2] = 160  # a serif: the stroke is not symmetric
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: stored turned the other way
    sideways = Image.fromarray(np.stack([ink, ink // 2, ink], -1)).transpose(Image.Transpose.ROTATE_90)
    sideways.save(folder / "sideways.jpg", quality=95, exif=exif.tobytes())
    rgba = np.full((height, width, 4), 255, np.uint8)
    rgba[..., 3] = ink
    Image.fromarray(rgba, "RGBA").save(folder / "alpha_ink.png")
    Image.fromarray(np.stack([np.full_like(ink, 255), ink], -1), "LA").save(folder / "grey_alpha.png")
    palette = Image.fromarray((ink > 0).astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 255, 255, 255] + [0] * 762)
    palette.save(folder / "palette.png", transparency=0)
    Image.fromarray(np.where(ink > 0, ink, 17).astype(np.uint8), "L").save(folder / "grey_trns.png", transparency=17)
    Image.fromarray(ink.astype(np.uint16) * 257).save(folder / "sixteen.png")
    names = ("sideways.jpg", "alpha_ink.png", "grey_alpha.png", "palette.png", "grey_trns.png", "sixteen.png")
    return [folder / name for name in names]
