"""Decoded data sets kept as ``.npz`` files under ``JAXCNN_CACHE_DIR`` (default ``~/.cache/jaxcnn``), keyed by
their sources' checksums, so a second load skips decoding."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from jaxcnn.dataset import Dataset
from jaxcnn.errors import DataError

CACHE_DIR_ENV = "JAXCNN_CACHE_DIR"


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


def cached(key: str, source: str, decode: Callable[[], Dataset]) -> Dataset:
    """The decoded data set from the array cache, or decode it and fill the cache."""
    path = cache_dir() / "arrays" / f"{key}.npz"
    data = _read_cache(path, source)
    if data is None:
        data = replace(decode(), source=source)
        _write_cache(path, data)
    return data
