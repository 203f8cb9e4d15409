"""The article's small worked examples, computed with :mod:`jaxcnn.layers` (numbers only, no drawing).

Each function returns the arrays a picture or a printout shows, so tests can check the numbers
and :mod:`jaxcnn.plots` can draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jaxcnn import layers as L

ARTICLE_IMAGE = np.array(
    [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], np.float32
)
"""The article's 5x5 binary image."""

ARTICLE_FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)
"""The article's 3x3 filter."""

VERTICAL_EDGE_FILTER = np.array([[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]], np.float32)
"""Negative outer columns, positive middle: lights up thin vertical strokes."""

POOLING_GRID = np.array([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]], np.float32)
"""A small grid for max pooling f=2, s=2."""


def convolve(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: str | int = "valid") -> np.ndarray:
    """A 2-D grey image convolved with one 2-D filter, through :func:`jaxcnn.layers.conv2d`."""
    x = jnp.asarray(image, jnp.float32)[None, :, :, None]
    k = jnp.asarray(kernel, jnp.float32)[:, :, None, None]
    return np.asarray(L.conv2d(x, k, stride=stride, padding=padding))[0, :, :, 0]


def max_pool_with_winners(grid: np.ndarray, size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling f=size, s=size of a 2-D grid, and a mask of the cells each window kept."""
    pooled = np.asarray(L.max_pool(jnp.asarray(grid, jnp.float32)[None, :, :, None], size))[0, :, :, 0]
    upsampled = np.kron(pooled, np.ones((size, size)))
    h, w = upsampled.shape
    return pooled, grid[:h, :w] == upsampled


@dataclass(frozen=True)
class PaddingCase:
    """One row of the padding picture: the settings and the output the formula predicts and conv gives."""

    padding: str
    stride: int
    output: np.ndarray


def padding_cases(image: np.ndarray, kernel: np.ndarray) -> list[PaddingCase]:
    """The same image with valid and same padding, at stride 1 and 2."""
    return [
        PaddingCase(padding, stride, convolve(image, kernel, stride, padding))
        for stride in (1, 2)
        for padding in ("valid", "same")
    ]


def synthetic_digit() -> np.ndarray:
    """A 28x28 uint8 '1'-like stroke, for the edge demo when no MNIST digit is at hand."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 13:16] = 255
    image[4:8, 10:13] = 160
    return image
