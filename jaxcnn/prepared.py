"""``jaxcnn prepare``: a data set packed into ArrayRecord shards (tensorflow-datasets' own random-access file
format) with a manifest, the fast form for sets larger than memory, read back one record at a time.

A prepared folder holds ``manifest.json`` and, per split, ``SPLIT-0000i-of-0000n.array_record`` files. The
manifest records the class names, each split's count and shards, and each shard's sha256, which are verified
when the folder is opened: a changed or truncated shard is a clear error, not a silent wrong answer.

A record is one example: ``RECORD_MAGIC``, a kind byte, the label (uint32), then either raw uint8 pixels with
their height, width and channels (the built-in sets, whose images all have one size) or the image file's own
bytes (a folder of photos, decoded and resized when it is read, at any size). Folder images are decoded once
while preparing, in worker processes, so every unreadable file is found and listed before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import DataError
from jaxcnn.files import read_format_json, written_whole

FORMAT = "jaxcnn.prepared/1"
MANIFEST = "manifest.json"
RECORD_MAGIC = b"JXR1"
RAW, ENCODED = 0, 1
SHARD_BYTES = 256 * 2**20
"""A split is cut into shards of about this size (one at least), so that no file is huge and readers can spread."""
SPLITS = ("train", "test")
SHOWN_BAD_IMAGES = 20
"""How many unreadable images the refusal names (it always gives the count)."""


def encode_record(label: int, *, pixels: np.ndarray | None = None, file_bytes: bytes | None = None) -> bytes:
    """One example as a record: raw uint8 ``pixels`` (H x W x C) or an image file's ``file_bytes``."""
    if pixels is not None:
        h, w, c = pixels.shape
        return RECORD_MAGIC + struct.pack("<BIHHH", RAW, label, h, w, c) + np.ascontiguousarray(pixels).tobytes()
    assert file_bytes is not None
    return RECORD_MAGIC + struct.pack("<BI", ENCODED, label) + file_bytes


def decode_record(data: bytes, where: str, at_least: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """A record's image (uint8 H x W x C at its own size; a file is decoded as ``jaxcnn predict`` decodes one, a
    large JPEG reduced towards ``at_least``: :func:`jaxcnn.images.open_image`) and label, or a DataError naming
    ``where``."""
    from jaxcnn.images import decode_image

    if data[:4] != RECORD_MAGIC or len(data) < 9:
        raise DataError(f"{where}: not a jaxcnn record; prepare the data set again with jaxcnn prepare")
    kind, label = struct.unpack_from("<BI", data, 4)
    if kind == RAW:
        h, w, c = struct.unpack_from("<HHH", data, 9)
        pixels = np.frombuffer(data, np.uint8, h * w * c, 15)
        return pixels.reshape(h, w, c), int(label)
    return decode_image(data[9:], where, at_least), int(label)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PreparedSplit:
    """One split of a prepared folder: its example count and shard files (in order)."""

    name: str
    count: int
    shards: list[Path]

    def source(self) -> Any:
        """A grain random-access source of this split's records (bytes; :func:`decode_record` reads one)."""
        import grain.python as grain

        return grain.ArrayRecordDataSource([str(path) for path in self.shards])


@dataclass
class Prepared:
    """A prepared folder, opened and verified: class names, the image shape when every image has one (None
    for a folder of photos of many sizes), the splits, and the images that were skipped as unreadable."""

    root: Path
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None
    splits: dict[str, PreparedSplit]
    source: str
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Prepared:
        """Read ``root``'s manifest and (``verify``) check every shard's size and sha256 against it."""
        root = Path(root)
        manifest = read_format_json(root / MANIFEST, FORMAT, DataError,
                                    f"{root}: not a prepared data set (no {MANIFEST}); make one with jaxcnn prepare",
                                    "prepare the data set again with this jaxcnn")  # fmt: skip
        splits = {}
        for name in SPLITS:
            entry = manifest["splits"][name]
            shards = []
            for shard in entry["shards"]:
                shard_path = root / shard["file"]
                if not shard_path.is_file() or shard_path.stat().st_size != shard["bytes"]:
                    raise DataError(f"{shard_path}: missing or of another size than the manifest records; the "
                                    "prepared data set is incomplete or damaged: prepare it again")  # fmt: skip
                if verify and file_sha256(shard_path) != shard["sha256"]:
                    raise DataError(f"{shard_path}: its sha256 differs from the manifest's; the file was changed "
                                    "or damaged: prepare the data set again")  # fmt: skip
                shards.append(shard_path)
            splits[name] = PreparedSplit(name, int(entry["count"]), shards)
        shape = manifest.get("image_shape")
        return cls(root, tuple(manifest["class_names"]), tuple(shape) if shape else None, splits,
                   manifest.get("source", ""), list(manifest.get("skipped", [])))  # fmt: skip

    def read(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """One example (decoded image, label) by its index in ``split``."""
        source = self.splits[split].source()
        return decode_record(source[index], f"{self.root}:{split}[{index}]")


def _check_image(path: str) -> str | None:
    """None when the image decodes, else why not (run in worker processes)."""
    from jaxcnn.images import check_image_file, decode_image

    try:
        check_image_file(Path(path))  # a regular file of a sane size: not a FIFO, which would block
        decode_image(Path(path).read_bytes(), path)
    except (DataError, OSError) as err:
        return str(err)
    return None


def folder_files(root: Path) -> list[tuple[str, str, Path]]:
    """(split, class, path) of every image file under ROOT/{train,test}/<class>/, in a fixed order."""
    from jaxcnn.images import IMAGE_SUFFIXES

    if not root.is_dir():
        raise DataError(f"{root}: no such folder; prepare reads a folder of train/<class>/ and test/<class>/ images")
    found = [(p.parts[-3], p.parts[-2], p) for p in sorted(root.glob("*/*/*"))
             if p.parts[-3] in SPLITS and p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    for split in SPLITS:
        if not any(s == split for s, _, _ in found):
            raise DataError(f"{root}: found no images under {split}/<class>/ (PNG, JPEG or WebP)")
    return found


def _write_split(folder: Path, split: str, records: Iterator[bytes], total_bytes: int,
                 count: int) -> list[dict[str, Any]]:  # fmt: skip
    """Write ``records`` into about total_bytes / SHARD_BYTES shards; their manifest entries."""
    from array_record.python.array_record_module import ArrayRecordWriter

    shard_count = max(1, math.ceil(total_bytes / SHARD_BYTES))
    per_shard = math.ceil(count / shard_count)
    entries = []
    for k in range(shard_count):
        name = f"{split}-{k:05d}-of-{shard_count:05d}.array_record"
        path = folder / name
        writer = ArrayRecordWriter(str(path), "group_size:1")
        written = 0
        for record in records:
            writer.write(record)
            written += 1
            if written == per_shard:
                break
        writer.close()
        entries.append({"file": name, "count": written, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return entries


def prepare(
    source: str,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    skip_bad_images: bool = False,
    workers: int | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> Prepared:
    """Pack ``source`` (``folder:PATH`` of train/test class folders, or a data set ``load_dataset`` reads) into
    ``out`` (a new folder, written in a staging folder and moved into place whole); returns it opened.

    Every folder image is decoded first (``workers`` processes); unreadable ones are refused with their count
    and names, or with ``skip_bad_images`` left out and listed in the manifest."""
    import shutil

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new --out for the prepared data set")
    staging = out.parent / f".{out.name}.preparing{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _pack(source, staging, data_dir, skip_bad_images, workers, report)
        with written_whole(staging / MANIFEST) as temporary:
            temporary.write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Prepared.open(out)


def prepare_dataset(data: Any, out: str | Path) -> Prepared:
    """Pack an in-memory :class:`jaxcnn.data.Dataset` (raw pixels) into ``out`` as :func:`prepare` would."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new folder for the prepared data set")
    out.mkdir(parents=True, exist_ok=True)
    manifest = _pack_arrays(data, out, {"format": FORMAT, "source": data.source, "splits": {}, "skipped": []},
                            lambda line: None)  # fmt: skip
    with written_whole(out / MANIFEST) as temporary:
        temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    return Prepared.open(out)


def _pack_arrays(data: Any, folder: Path, manifest: dict[str, Any], report: Callable[[str], None]) -> dict[str, Any]:
    """An in-memory data set's splits as raw-pixel records."""
    manifest["class_names"] = list(data.class_names)
    manifest["image_shape"] = list(data.image_shape)
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):  # fmt: skip
        records = (encode_record(int(label), pixels=image) for image, label in zip(images, labels, strict=True))
        report(f"writing {len(images):,} {split} images ...")
        shards = _write_split(folder, split, records, images.nbytes, len(images))
        manifest["splits"][split] = {"count": len(images), "shards": shards}
    return manifest


def _pack(source: str, folder: Path, data_dir: str | Path | None, skip_bad_images: bool, workers: int | None,
          report: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    manifest: dict[str, Any] = {"format": FORMAT, "source": source, "splits": {}, "skipped": []}
    if source.startswith("folder:"):
        root = Path(source[len("folder:") :]).expanduser()
        files = folder_files(root)
        report(f"checking {len(files):,} images in {root} ...")
        # Spawned, not forked: a fork of a process that runs JAX's threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context) as pool:
            problems = list(pool.map(_check_image, [str(p) for _, _, p in files], chunksize=64))
        bad = [(str(path), why) for (_, _, path), why in zip(files, problems, strict=True) if why is not None]
        if bad and not skip_bad_images:
            shown = "; ".join(why for _, why in bad[:SHOWN_BAD_IMAGES])
            more = f"; and {len(bad) - SHOWN_BAD_IMAGES} more" if len(bad) > SHOWN_BAD_IMAGES else ""
            raise DataError(f"{root}: {len(bad):,} of {len(files):,} images cannot be read: {shown}{more}. Fix or "
                            "remove them, or pass --skip-bad-images to leave them out (they are listed)")  # fmt: skip
        skipped = {path for path, _ in bad}
        manifest["skipped"] = sorted(skipped)
        kept = [(split, label, path) for split, label, path in files if str(path) not in skipped]
        class_names = sorted({label for split, label, _ in kept if split == "train"})
        unknown = {label for split, label, _ in kept if split == "test"} - set(class_names)
        if unknown:
            raise DataError(f"{root}: test classes {sorted(unknown)} have no training images")
        index = {name: i for i, name in enumerate(class_names)}
        manifest["class_names"] = class_names
        manifest["image_shape"] = None
        for split in SPLITS:
            chosen = [(path, index[label]) for s, label, path in kept if s == split]
            total = sum(path.stat().st_size for path, _ in chosen)
            records = (encode_record(label, file_bytes=path.read_bytes()) for path, label in chosen)
            report(f"writing {len(chosen):,} {split} images ...")
            manifest["splits"][split] = {"count": len(chosen), "shards": _write_split(folder, split, records, total,
                                                                                      len(chosen))}  # fmt: skip
        return manifest
    from jaxcnn.data import load_dataset

    return _pack_arrays(load_dataset(source, data_dir), folder, manifest, report)
