"""Images streamed from disk for data sets larger than memory: a grain loader over a prepared folder's records
(:mod:`jaxcnn.prepared`), a folder of photos or a set tensorflow-datasets prepared (:mod:`jaxcnn.tfds_source`),
decoding and resizing in worker processes, shuffled by index each epoch from the run's seed, sharded per
process, in uint8 batches of the network's input size.

The resize policy: an image that already has the network's height and width is used as it is (so a set of one
size streams exactly the pixels the in-memory path holds, and ``--augment`` works on the device alike). Another
is resized and cropped. In evaluation, as torchvision and timm do, its shorter side is scaled to the network's
size divided by EVAL_CROP_FRACTION (0.875: 256 for 224) and the centre is cut out. In training, ``random-resized``
(the default) cuts a random region of 8% to 100% of the image's area with an aspect ratio from 3/4 to 4/3 and
resizes it (Inception's and torchvision's RandomResizedCrop); ``shorter-side`` scales as in evaluation and cuts
at a random place. Grey and colour are converted to the network's channels as ``jaxcnn predict`` does.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grain.python as grain
import numpy as np

from jaxcnn.errors import DataError
from jaxcnn.prepared import PreparedSplit, decode_record

EVAL_CROP_FRACTION = 0.875
"""Evaluation crops this fraction of the resized image's shorter side (torchvision's 224 of 256)."""
TRAIN_CROPS = ("random-resized", "shorter-side")
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
READ_THREADS = 2
READ_BUFFER = 32
"""Records read ahead per process. grain's default (500) costs more than it saves here: its reader measures
the whole buffer's depth at every record (a quarter of the time of an MNIST epoch on 2 cores)."""
DRAFT_MARGIN = 4
"""A JPEG is decoded at the smallest of libjpeg's scales (1/2, 1/4, 1/8) that keeps both its sides at least
this many times the network's: a random-resized crop of 8% of the area (0.28 of a side) still has the network's
resolution, and a 12-megapixel photo for a 32x32 network decodes several times faster."""
SEED_STREAM = 0x5EED
"""Mixed into each epoch's shuffle seed, so it draws apart from the run's other random streams."""


def _pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _converted(image: Any, channels: int) -> np.ndarray:
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _resized(image: Any, box: tuple[float, float, float, float], size: tuple[int, int]) -> Any:
    """The region ``box`` (left, top, right, bottom) of ``image`` resized to ``size`` (width, height), bilinear."""
    from PIL import Image

    return image.resize(size, Image.Resampling.BILINEAR, box=box)


def centre_view(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Evaluation's view of ``image`` (uint8 H x W x C) at ``shape``: as it is when it has that height and width,
    else scaled so it covers shape / EVAL_CROP_FRACTION and cut out at the centre."""
    height, width, channels = shape
    h, w = image.shape[:2]
    if image.shape == tuple(shape):
        return image
    pil = _pil(image)
    if (h, w) != (height, width):
        scale = max(height / h, width / w) / EVAL_CROP_FRACTION
        crop_h, crop_w = height / scale, width / scale  # the region, in the image's own pixels
        top, left = (h - crop_h) / 2, (w - crop_w) / 2
        pil = _resized(pil, (left, top, left + crop_w, top + crop_h), (width, height))
    return _converted(pil, channels)


def random_view(image: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator, crop: str) -> np.ndarray:
    """Training's view of ``image`` at ``shape``, drawn from ``rng``: as it is when it has that height and width,
    else a random crop by ``crop`` (one of TRAIN_CROPS), resized."""
    height, width, channels = shape
    h, w = image.shape[:2]
    if image.shape == tuple(shape):
        return image
    pil = _pil(image)
    if (h, w) == (height, width):
        return _converted(pil, channels)
    if crop == "shorter-side":
        scale = max(height / h, width / w) / EVAL_CROP_FRACTION
        crop_h, crop_w = height / scale, width / scale
        top, left = rng.uniform(0, h - crop_h), rng.uniform(0, w - crop_w)
        return _converted(_resized(pil, (left, top, left + crop_w, top + crop_h), (width, height)), channels)
    area = h * w
    for _ in range(10):  # torchvision's RandomResizedCrop: ten tries, then the centre
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        crop_w, crop_h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if crop_w <= w and crop_h <= h:
            top, left = rng.uniform(0, h - crop_h), rng.uniform(0, w - crop_w)
            return _converted(_resized(pil, (left, top, left + crop_w, top + crop_h), (width, height)), channels)
    ratio = min(max(w / h, CROP_RATIO[0]), CROP_RATIO[1])
    crop_w, crop_h = (w, w / ratio) if w / h < ratio else (h * ratio, h)
    top, left = (h - crop_h) / 2, (w - crop_w) / 2
    return _converted(_resized(pil, (left, top, left + crop_w, top + crop_h), (width, height)), channels)


@dataclass(frozen=True)
class FolderImages:
    """Image files and their labels, read one at a time (a folder of photos that does not fit in memory)."""

    files: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from jaxcnn.images import check_image_file

        path, label = self.files[index]
        try:
            check_image_file(Path(path))  # not a FIFO (which would block), a device or a huge file
            data = Path(path).read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot be read while streaming ({err.strerror}); the run stops here") from None
        return {"record": data, "label": label, "where": path, "encoded": True}


@dataclass(frozen=True)
class RecordImages:
    """A prepared split's records, read one at a time."""

    split: PreparedSplit
    root: str

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not hasattr(self, "_source"):
            object.__setattr__(self, "_source", self.split.source())  # opened in each worker, on first use
        return {"record": self._source[index], "label": -1, "where": f"{self.root}:{self.split.name}[{index}]",  # type: ignore[attr-defined]
                "encoded": False}  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the files themselves
        return {"split": self.split, "root": self.root}


class ImageSource(Protocol):
    """What the loader reads examples from (:class:`FolderImages`, :class:`RecordImages`,
    :class:`jaxcnn.tfds_source.TfdsImages`): their count, and each one's record, label and where it is from;
    picklable, for the worker processes."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def decoded(element: dict[str, Any], shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, int]:
    """An element's image (uint8, its own size) and label, or a DataError naming its file or record. For a
    network of ``shape``, a JPEG is decoded at a reduced scale that keeps DRAFT_MARGIN times its size."""
    from jaxcnn.images import decode_image

    at_least = None if shape is None else (DRAFT_MARGIN * shape[0], DRAFT_MARGIN * shape[1])
    if element["encoded"]:
        return decode_image(element["record"], element["where"], at_least), int(element["label"])
    return decode_record(element["record"], element["where"], at_least)


_watching = False


def _exit_with_trainer(trainer: int) -> None:
    """In a loader worker: exit as soon as the trainer that started it is gone. A trainer killed with SIGKILL
    cannot stop its workers, and a worker blocked on a full queue would otherwise live on (with
    multiprocessing's resource tracker waiting for it); one watching thread per worker, polling its parent."""
    global _watching
    if _watching or os.getpid() == trainer:
        return
    _watching = True

    def watch() -> None:
        while os.getppid() == trainer:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="jaxcnn-exit-with-trainer", daemon=True).start()


def epoch_order(count: int, seed: int, epoch: int, training: bool) -> np.ndarray:
    """The order of the examples in ``epoch``: a permutation drawn from (``seed``, ``epoch``) alone for training,
    the stored order for evaluation."""
    if not training:
        return np.arange(count)
    return np.random.default_rng([seed % 2**63, epoch, SEED_STREAM]).permutation(count)


@dataclass(frozen=True)
class EpochBatches:
    """The batches of one epoch as a random-access source: batch ``b`` holds this process's share of examples
    ``order[b * batch_size : (b + 1) * batch_size]``, decoded and viewed in whichever worker reads it. A whole
    batch is one item, so the batches, and each image's random view (drawn from the seed, the epoch and the
    example's own index), do not depend on how many workers there are or on how processes share the work."""

    images: ImageSource
    order: np.ndarray
    batch_size: int
    shape: tuple[int, int, int]
    training: bool
    crop: str
    seed: int
    epoch: int
    process_index: int = 0
    process_count: int = 1
    trainer: int = field(default_factory=os.getpid)
    """The process that made the loader: a worker exits when it is gone (see :func:`_exit_with_trainer`)."""

    def __len__(self) -> int:
        if self.training:
            return len(self.order) // self.batch_size
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        _exit_with_trainer(self.trainer)
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        share = -(-len(chosen) // self.process_count)
        chosen = chosen[self.process_index * share : (self.process_index + 1) * share]
        views, labels = [], []
        for example in chosen:
            image, label = decoded(self.images[int(example)], self.shape)
            if image.shape == tuple(self.shape):  # used as it is (the common case of a set of one size)
                views.append(image)
            elif self.training:
                rng = np.random.default_rng([self.seed % 2**63, self.epoch, int(example), SEED_STREAM])
                views.append(random_view(image, self.shape, rng, self.crop))
            else:
                views.append(centre_view(image, self.shape))
            labels.append(label)
        return {"image": np.stack(views), "label": np.asarray(labels, np.int32)}


def _quiet_resource_tracker() -> None:
    """Batches in flight between grain's workers and this process when training stops (Ctrl-C) are shared memory
    that multiprocessing's resource tracker removes at exit, with a warning per stop that alarms and helps no
    one. The tracker is started with this process's warning options, so the one filter below reaches it."""
    import sys

    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)


def loader(
    images: ImageSource,
    shape: tuple[int, int, int],
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    crop: str = "random-resized",
    workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Any:
    """A grain loader of one epoch's batches (:class:`EpochBatches`): dicts of ``image`` (uint8, batch x
    ``shape``) and ``label`` (int32), in order.

    Training shuffles from (``seed``, ``epoch``) and drops the last partial batch; evaluation keeps the order
    and every image (its last batch may be short). Each of ``process_count`` processes gets its share of every
    batch (``process_index``). ``workers`` processes decode whole batches (0: this one does)."""
    if crop not in TRAIN_CROPS:
        raise ValueError(f"crop must be one of {', '.join(TRAIN_CROPS)}, got {crop!r}")
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read its absl flags; a library has none to parse
        flags.FLAGS.mark_as_parsed()
    if workers:
        _quiet_resource_tracker()
    order = epoch_order(len(images), seed, epoch, training)
    batches = EpochBatches(images, order, batch_size, shape, training, crop, seed, epoch, process_index, process_count)
    sampler = grain.IndexSampler(len(batches), shuffle=False, num_epochs=1)
    read = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_BUFFER)
    return grain.DataLoader(data_source=batches, sampler=sampler, worker_count=workers, read_options=read)
