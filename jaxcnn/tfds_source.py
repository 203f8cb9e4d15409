"""Image-classification sets that tensorflow-datasets has prepared in its ArrayRecord format, read through its
data sources (``builder.as_data_source``) without TensorFlow: streamed as they train, or read whole
(:meth:`jaxcnn.stream_data.StreamingData.in_memory`).

A set is prepared once on the user's machine (``tfds build NAME --file_format=array_record``, or
``builder.download_and_prepare(file_format="array_record")``) under tensorflow-datasets' data folder
(``--data-dir``, else ``TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). Its images are read as the encoded
bytes tensorflow-datasets stored and decoded by :func:`jaxcnn.images.decode_image` (the same rules as for
photos: EXIF orientation, grey or RGB), so a damaged record is named in the error. The test split is ``test``,
or ``validation`` for sets that have none (food101, imagenette).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcnn.errors import DataError

TEST_SPLITS = ("test", "validation")
"""The split evaluated, the first of these that the set has."""


@dataclass(frozen=True)
class TfdsSet:
    """What jaxcnn needs of a prepared tensorflow-datasets set: where it is, its splits, keys and classes."""

    name: str
    data_dir: str | None
    splits: dict[str, str]  # "train" / "test" -> the set's own split name
    image_key: str
    label_key: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None  # None when its images have many sizes
    counts: dict[str, int]


def tfds_data_dir(data_dir: str | Path | None) -> Path:
    """The folder tensorflow-datasets keeps its prepared sets in: ``data_dir``, else ``TFDS_DATA_DIR``, else
    ``~/tensorflow_datasets`` (its own rule)."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def _builder(name: str, data_dir: str | Path | None) -> Any:
    """tensorflow-datasets' builder of ``name``, as the files under ``data_dir`` describe it, or None when there is
    no such set (tensorflow-datasets would list its whole catalogue)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except Exception:  # DatasetNotFoundError, or a malformed name: both mean it is not a set we can read
        return None


def find_prepared(name: str, data_dir: str | Path | None) -> TfdsSet | None:
    """The set ``name`` when tensorflow-datasets has prepared it as ArrayRecord files (no download is started and
    nothing is written), else None. A set prepared in another form, or not an image-classification set, is a
    DataError saying what to do."""
    if not (tfds_data_dir(data_dir) / name.split(":")[0].split("/")[0]).is_dir():
        return None  # nothing there: not even tensorflow-datasets' catalogue is consulted
    builder = _builder(name, data_dir)
    if builder is None or not builder.is_prepared():
        return None
    info = builder.info
    if str(getattr(info.file_format, "value", info.file_format)) != "array_record":
        raise DataError(f"{name}: tensorflow-datasets prepared it as {info.file_format.value} files, which only "
                        "TensorFlow reads; prepare it again with tfds build "
                        f"{name} --file_format=array_record to read it without TensorFlow")  # fmt: skip
    return _describe(name, data_dir, builder)


def _describe(name: str, data_dir: str | Path | None, builder: Any) -> TfdsSet:
    import tensorflow_datasets as tfds

    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise DataError(f"{name}: tensorflow-datasets gives it no (image, label) pair (supervised_keys); jaxcnn "
                        "trains on image-classification sets")  # fmt: skip
    image_key, label_key = keys
    image, label = info.features[image_key], info.features[label_key]
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise DataError(f"{name}: its {image_key!r} is not an image or its {label_key!r} not a class label; "
                        "jaxcnn trains on image-classification sets")  # fmt: skip
    available = list(info.splits.keys())
    test = next((s for s in TEST_SPLITS if s in available), None)
    if "train" not in available or test is None:
        raise DataError(f"{name}: it has the splits {', '.join(available)}; jaxcnn needs train and one of "
                        f"{', '.join(TEST_SPLITS)}")  # fmt: skip
    shape = tuple(image.shape)
    fixed = None if any(d is None for d in shape) else (int(shape[0]), int(shape[1]), int(shape[2]))
    return TfdsSet(name, None if data_dir is None else str(data_dir), {"train": "train", "test": test},
                   image_key, label_key, tuple(label.names), fixed,
                   {"train": info.splits["train"].num_examples, "test": info.splits[test].num_examples})  # fmt: skip


@dataclass(frozen=True)
class TfdsImages:
    """One split of a prepared set, read one example at a time as encoded image bytes and a label (the loader's
    source, like :class:`jaxcnn.streaming.RecordImages`)."""

    dataset: TfdsSet
    split: str  # "train" or "test"

    def __len__(self) -> int:
        return self.dataset.counts[self.split]

    def _source(self) -> Any:
        if not hasattr(self, "_opened"):  # opened in each worker, on first use
            import tensorflow_datasets as tfds

            builder = _builder(self.dataset.name, self.dataset.data_dir)
            skip = {self.dataset.image_key: tfds.decode.SkipDecoding()}  # decoded by jaxcnn.images, not by tfds
            object.__setattr__(self, "_opened", builder.as_data_source(self.dataset.splits[self.split], decoders=skip))
        return self._opened  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> dict[str, Any]:
        where = f"tensorflow-datasets {self.dataset.name} {self.dataset.splits[self.split]}[{index}]"
        example = self._source()[index]
        return {"record": example[self.dataset.image_key], "label": int(example[self.dataset.label_key]),
                "where": where, "encoded": True}  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the files themselves
        return {"dataset": self.dataset, "split": self.split}


def _source_text(found: TfdsSet) -> str:
    where = found.data_dir or "its default data folder"
    return f"tensorflow-datasets ArrayRecord files in {where}"


def streaming(found: TfdsSet) -> Any:
    """The set as :class:`jaxcnn.stream_data.StreamingData`, read as it trains."""
    from jaxcnn.stream_data import StreamingData

    return StreamingData(found.name, _source_text(found), found.class_names, found.image_shape,
                         TfdsImages(found, "train"), TfdsImages(found, "test"))  # fmt: skip
