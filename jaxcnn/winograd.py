"""Winograd's F(2x2, 3x3): a 3x3 stride-1 convolution as 16 batched matrix products (Lavin and Gray 2016).

Each 2x2 block of outputs is computed from the 4x4 input tile under it: the tile is transformed
(``B^T d B``, only additions), the kernel once (``G g G^T``), the 16 points of the transformed tile
each become one matrix product over the input channels, and the products are transformed back
(``A^T m A``, additions). That is 16 multiplications per 2x2 outputs instead of 36 (2.25x fewer),
done by XLA's matrix product, which the CPU runs two to three times faster than its convolution.
The transforms cost memory traffic (the transformed tiles are four times the input): on the
2-core CPUs measured (``benchmarks/tools/conv3x3_forms.py``, ``docs/performance.md``) that made
it slower than :func:`jaxcnn.cpu_layers.conv` at every ResNet and VGG shape, so the CPU path
does not choose it; it is kept, tested, for machines where it measures faster.

Exactness: the same function as ``lax.conv_general_dilated`` up to float32 rounding (the
transforms add and subtract; relative error about 1e-6). The derivative is exact too, and fast:

- the input gradient of a 3x3 stride-1 convolution is another one (the kernel turned half a circle,
  its channel axes swapped, the padding ``2 - p``), so it is computed by Winograd as well: the
  tangent is written as the *transpose* of that form, which reverse mode transposes back;
- the kernel gradient is one matrix product per tile point of the stored transformed input tiles
  with the transformed output gradient, contracted over every tile of the batch.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.cpu_layers import input_gradient_pads, is_zero_tangent, transposed_tangent, turned_kernel
from jaxcnn.geometry import PaddingPairs

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
"""The kernel transform: the transformed kernel is ``G g G^T`` (4x4 from 3x3)."""


class _Tiling(NamedTuple):
    """How the output is cut into 2x2 blocks: the output size, and the blocks down and across."""

    batch: int
    out_h: int
    out_w: int
    rows: int
    cols: int


def _tiling(x_shape: tuple[int, ...], pads: PaddingPairs) -> _Tiling:
    out_h = x_shape[1] + pads[0][0] + pads[0][1] - 2
    out_w = x_shape[2] + pads[1][0] + pads[1][1] - 2
    return _Tiling(x_shape[0], out_h, out_w, -(-out_h // 2), -(-out_w // 2))


def _input_transform(d: list[jax.Array]) -> list[jax.Array]:
    """``B^T`` along one axis of four slices: B^T holds only 1, -1 and 0."""
    return [lax.sub(d[0], d[2]), lax.add(d[1], d[2]), lax.sub(d[2], d[1]), lax.sub(d[1], d[3])]


def transformed_tiles(x: jax.Array, pads: PaddingPairs) -> jax.Array:
    """``B^T d B`` for every 4x4 input tile two pixels apart: (16, tiles, channels).

    The input is padded as asked (a negative pad crops), plus a row or column of zeros when the
    output's height or width is odd, so that the 2x2 blocks cover it.
    """
    t = _tiling(x.shape, pads)
    n, channels = x.shape[0], x.shape[3]
    config = [(0, 0, 0), (pads[0][0], pads[0][1] + 2 * t.rows - t.out_h, 0),
              (pads[1][0], pads[1][1] + 2 * t.cols - t.out_w, 0), (0, 0, 0)]  # fmt: skip
    padded = lax.pad(x, jnp.zeros((), x.dtype), config)
    width = padded.shape[2]
    by_row = _input_transform(
        [lax.slice(padded, (0, i, 0, 0), (n, i + 2 * t.rows - 1, width, channels), (1, 2, 1, 1)) for i in range(4)]
    )
    points = [
        point
        for r in by_row
        for point in _input_transform(
            [lax.slice(r, (0, 0, j, 0), (n, t.rows, j + 2 * t.cols - 1, channels), (1, 1, 2, 1)) for j in range(4)]
        )
    ]
    return jnp.stack(points).reshape(16, n * t.rows * t.cols, channels)


def transformed_kernel(kernel: jax.Array) -> jax.Array:
    """``G g G^T`` for each (input, output) channel pair of a 3x3 HWIO kernel: (16, C, K)."""
    g = jnp.asarray(_G, kernel.dtype)
    return jnp.einsum("ai,bj,ijck->abck", g, g, kernel).reshape(16, *kernel.shape[2:])


def _products(tiles: jax.Array, kernel16: jax.Array) -> jax.Array:
    """The 16 matrix products (tiles x C) @ (C x K), one per point of the transformed tile."""
    return lax.dot_general(tiles, kernel16, (((2,), (1,)), ((0,), (0,))))


def _outputs(m: jax.Array, t: _Tiling) -> jax.Array:
    """``A^T m A`` for every tile, the 2x2 blocks put in place and cropped to the output size."""
    features = m.shape[-1]
    m = m.reshape(4, 4, t.batch, t.rows, t.cols, features)
    top, bottom = m[0] + m[1] + m[2], m[1] - m[2] - m[3]  # A^T along the tile's rows
    blocks = [jnp.stack([p[0] + p[1] + p[2], p[1] - p[2] - p[3]], axis=3) for p in (top, bottom)]
    y = jnp.stack(blocks, axis=2).reshape(t.batch, 2 * t.rows, 2 * t.cols, features)
    if (2 * t.rows, 2 * t.cols) != (t.out_h, t.out_w):
        y = y[:, : t.out_h, : t.out_w]
    return y


def _conv(x: jax.Array, kernel: jax.Array, pads: PaddingPairs) -> jax.Array:
    return _outputs(_products(transformed_tiles(x, pads), transformed_kernel(kernel)), _tiling(x.shape, pads))


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, kernel: jax.Array, pads: PaddingPairs) -> jax.Array:
    """A 3x3, stride-1 convolution of NHWC ``x`` with an HWIO ``kernel`` (groups 1, no dilation)
    by Winograd F(2x2, 3x3): the value and both gradients as the module docstring says."""
    return _conv(x, kernel, pads)


def _conv3x3_jvp(
    pads: PaddingPairs, primals: tuple[jax.Array, jax.Array], tangents: tuple[object, object]
) -> tuple[jax.Array, jax.Array]:
    x, kernel = primals
    dx, dkernel = tangents
    t = _tiling(x.shape, pads)
    tiles = transformed_tiles(x, pads)  # kept for the kernel gradient
    y = _outputs(_products(tiles, transformed_kernel(kernel)), t)
    dy = None
    if not is_zero_tangent(dx):
        # conv(dx, kernel), written as the transpose of the input gradient's own Winograd convolution,
        # so that reverse mode (which transposes the tangent) computes that convolution.
        def input_gradient(cotangent: jax.Array) -> jax.Array:
            return _conv(cotangent, turned_kernel(kernel), input_gradient_pads(kernel.shape, pads))

        dy = transposed_tangent(input_gradient, jax.ShapeDtypeStruct(y.shape, y.dtype), dx)
    if not is_zero_tangent(dkernel):
        term = _outputs(_products(tiles, transformed_kernel(dkernel)), t)  # type: ignore[arg-type]
        dy = term if dy is None else dy + term
    return y, jnp.zeros_like(y) if dy is None else dy


conv3x3.defjvp(_conv3x3_jvp, symbolic_zeros=True)
