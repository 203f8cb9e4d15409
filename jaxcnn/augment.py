"""Data augmentation of uint8 training batches, on the device, inside the jitted step.

The random choices (each image's shift, flip and erased square) are drawn with NumPy once per
epoch from the run's seed and the epoch, in a stream of their own, and travel with the epoch's
shuffle; the step slices its batch's share. So the same seed gives the same run, ``--resume``
stays exact, and a run without augmentation computes exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxcnn.config import Augmentation

AUGMENT_STREAM = 0x4155_474D
"""Leading word of the NumPy seed of each epoch's augmentation draws, apart from the shuffle's stream."""

Draws = Mapping[str, ArrayLike]


def draw(
    augmentation: Augmentation, count: int, height: int, width: int, seed: int, epoch: int
) -> dict[str, np.ndarray]:
    """The random choices for ``count`` images of an epoch: a function of (seed, epoch) only."""
    rng = np.random.default_rng([AUGMENT_STREAM, seed % 2**64, epoch])
    t = augmentation.translate
    return {
        "shift": rng.integers(-t, t + 1, (count, 2)).astype(np.int32),
        "flip": rng.random(count) < 0.5 if augmentation.flip else np.zeros(count, bool),
        "centre": np.stack([rng.integers(0, height, count), rng.integers(0, width, count)], 1).astype(np.int32),
    }


def translate(images: jax.Array, shift: jax.Array, most: int) -> jax.Array:
    """Move each image by ``shift[i] = (down, right)`` pixels (each within ``most``), filling with zeros.

    ``out[i, y, x] = images[i, y - down, x - right]`` where that pixel exists, else 0.
    """
    if most == 0:
        return images
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (most, most), (most, most), (0, 0)))

    def one(image: jax.Array, s: jax.Array) -> jax.Array:
        return lax.dynamic_slice(image, (most - s[0], most - s[1], 0), (h, w, c))

    return jax.vmap(one)(padded, shift)


def flip(images: jax.Array, which: jax.Array) -> jax.Array:
    """Mirror left-right the images where ``which`` is true."""
    return jnp.where(which[:, None, None, None], images[:, :, ::-1, :], images)


def erase(images: jax.Array, centre: jax.Array, side: int) -> jax.Array:
    """Set to zero a ``side`` x ``side`` square of each image, from ``centre - side // 2`` (clipped at the edges)."""
    if side == 0:
        return images
    _, h, w, _ = images.shape
    top, left = centre[:, 0] - side // 2, centre[:, 1] - side // 2
    rows, cols = jnp.arange(h), jnp.arange(w)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side)
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return jnp.where(square[..., None], jnp.zeros((), images.dtype), images)


def apply(augmentation: Augmentation, images: jax.Array, draws: Draws) -> jax.Array:
    """A batch changed as ``augmentation`` says, with its images' ``draws``: translate, flip, then erase."""
    images = translate(images, jnp.asarray(draws["shift"]), augmentation.translate)
    if augmentation.flip:
        images = flip(images, jnp.asarray(draws["flip"]))
    return erase(images, jnp.asarray(draws["centre"]), augmentation.erase)
