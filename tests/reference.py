"""Independent NumPy loop references for convolution and pooling.

Written from the textbook definitions (slide a window, multiply and add / take the max / take
the mean), with explicit loops and no JAX, so a mistake in jaxcnn's use of ``lax`` cannot hide
in the reference too. Padding is given as explicit ((top, bottom), (left, right)) pairs.
"""

from __future__ import annotations

import numpy as np

Pairs = tuple[tuple[int, int], tuple[int, int]]


def same_pads(n: int, f: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME": output ceil(n/s), total padding split with the extra on the high side."""
    span = d * (f - 1) + 1
    out = -(-n // s)
    total = max((out - 1) * s + span - n, 0)
    return total // 2, total - total // 2


def conv2d_ref(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    pads: Pairs,
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Cross-correlation of NHWC ``x`` with HWIO ``w`` by explicit loops."""
    n, h, wd, c = x.shape
    fh, fw, cg, o = w.shape
    assert cg * groups == c and o % groups == 0
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (h + sum(pads[0]) - dilation[0] * (fh - 1) - 1) // stride[0] + 1
    ow = (wd + sum(pads[1]) - dilation[1] * (fw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, oh, ow, o), dtype=np.float64)
    per_group_out = o // groups
    for bi in range(n):
        for i in range(oh):
            for j in range(ow):
                for k in range(o):
                    g = k // per_group_out
                    acc = 0.0
                    for di in range(fh):
                        for dj in range(fw):
                            row = i * stride[0] + di * dilation[0]
                            col = j * stride[1] + dj * dilation[1]
                            for ci in range(cg):
                                acc += xp[bi, row, col, g * cg + ci] * w[di, dj, ci, k]
                    out[bi, i, j, k] = acc + (0.0 if b is None else b[k])
    return out


def _out_size(h: int, w: int, size: tuple[int, int], stride: tuple[int, int], pads: Pairs) -> tuple[int, int]:
    return (h + sum(pads[0]) - size[0]) // stride[0] + 1, (w + sum(pads[1]) - size[1]) // stride[1] + 1


def _window(i: int, j: int, h: int, w: int, size: tuple[int, int], stride: tuple[int, int], pads: Pairs):
    """The in-image rows and columns of output (i, j)'s window."""
    top = i * stride[0] - pads[0][0]
    left = j * stride[1] - pads[1][0]
    rows = [r for r in range(top, top + size[0]) if 0 <= r < h]
    cols = [c for c in range(left, left + size[1]) if 0 <= c < w]
    return rows, cols


def max_pool_ref(x: np.ndarray, size: tuple[int, int], stride: tuple[int, int], pads: Pairs) -> np.ndarray:
    """Max over each window; padded positions never win."""
    n, h, w, c = x.shape
    oh, ow = _out_size(h, w, size, stride, pads)
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(oh):
        for j in range(ow):
            rows, cols = _window(i, j, h, w, size, stride, pads)
            if rows and cols:
                out[:, i, j] = x[:, rows][:, :, cols].max(axis=(1, 2))
    return out


def avg_pool_ref(
    x: np.ndarray, size: tuple[int, int], stride: tuple[int, int], pads: Pairs, count_include_pad: bool
) -> np.ndarray:
    """Mean over each window, dividing by the full window or by the in-image pixels."""
    n, h, w, c = x.shape
    oh, ow = _out_size(h, w, size, stride, pads)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            rows, cols = _window(i, j, h, w, size, stride, pads)
            total = x[:, rows][:, :, cols].sum(axis=(1, 2))
            out[:, i, j] = total / (size[0] * size[1] if count_include_pad else len(rows) * len(cols))
    return out
