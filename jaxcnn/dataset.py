"""The in-memory data set: uint8 NHWC images, int32 labels and class names, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxcnn.errors import DataError


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

    @property
    def train_count(self) -> int:
        return len(self.train_images)

    @property
    def test_count(self) -> int:
        return len(self.test_images)
