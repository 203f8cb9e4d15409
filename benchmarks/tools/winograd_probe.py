"""A first measurement for issue 33: Winograd F(2x2, 3x3) written in pure ``lax`` against XLA's CPU convolution,
for ResNet-20's three 3x3 stride-1 shapes at batch 128: the error, the forward time, and the forward and both
gradients (the Winograd form differentiated by JAX as it stands, not yet a hand-written backward).

Command:  python benchmarks/tools/winograd_probe.py [--repeats 7] [--batch 128]
Smoke:    python benchmarks/tools/winograd_probe.py --batch 8 --repeats 1   (seconds)
Machine, time and result: docs/performance.md ("Winograd, a first probe").

The form: the input padded by one ('same'), cut into 4x4 tiles two pixels apart, each transformed (B^T d B); the
kernel transformed once (G g G^T); 16 batched matrix products of (tiles x C) by (C x K), one per point of the
4x4 transformed tile; the 2x2 outputs transformed back (A^T m A) and interleaved. 2.25x fewer multiplications
than the direct convolution, moved into matrix products, which XLA's CPU runs at 200-300 GFLOP/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def winograd_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 3x3 stride-1 'same' convolution of NHWC ``x`` (even height and width) with an HWIO ``kernel``."""
    n, h, w, c = x.shape
    k = kernel.shape[-1]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows, cols = h // 2, w // 2
    tiles = jnp.stack([jnp.stack([padded[:, i : i + h : 2, j : j + w : 2, :] for j in range(4)]) for i in range(4)])
    v = jnp.einsum("ai,bj,ijnyxc->abnyxc", B_T, B_T, tiles).reshape(16, n * rows * cols, c)
    u = jnp.einsum("ai,bj,ijck->abck", G, G, kernel).reshape(16, c, k)
    m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, n, rows, cols, k)
    y = jnp.einsum("pa,qb,abnyxk->nypxqk", A_T, A_T, m)
    return y.reshape(n, h, w, k)


def _input_transform(d: list[jax.Array]) -> list[jax.Array]:
    """B^T applied along one axis of four slices: only additions (B^T holds 1, -1 and 0)."""
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def winograd_conv_adds(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """:func:`winograd_conv` with the tile transforms written as additions (fused by XLA), not as einsums."""
    n, h, w, c = x.shape
    k = kernel.shape[-1]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows, cols = h // 2, w // 2
    by_row = _input_transform([padded[:, i : i + h : 2] for i in range(4)])  # 4 x (n, rows, w + 2, c)
    v = jnp.stack([jnp.stack(_input_transform([r[:, :, j : j + w : 2] for j in range(4)])) for r in by_row])
    u = jnp.einsum("ai,bj,ijck->abck", G, G, kernel).reshape(16, c, k)  # once per step: the kernel is small
    m = jax.lax.dot_general(v.reshape(16, n * rows * cols, c), u, (((2,), (1,)), ((0,), (0,))))
    m = m.reshape(4, 4, n, rows, cols, k)
    top, bottom = m[0] + m[1] + m[2], m[1] - m[2] - m[3]  # A^T along the tile's rows
    y = jnp.stack([jnp.stack([t[0] + t[1] + t[2], t[1] - t[2] - t[3]], axis=3) for t in (top, bottom)], axis=2)
    return y.reshape(n, h, w, k)  # (n, rows, 2, cols, 2, k) interleaved


def lax_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def median_ms(fn: Any, *args: Any, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}; median of {args.repeats}; {jax.devices()[0].device_kind}")
    for size, channels in ((32, 16), (16, 32), (8, 64)):
        x = jnp.asarray(rng.standard_normal((args.batch, size, size, channels)), jnp.float32)
        kernel = jnp.asarray(rng.standard_normal((3, 3, channels, channels)) / np.sqrt(9 * channels), jnp.float32)
        exact = np.asarray(jax.jit(lax_conv)(x, kernel))
        error = float(np.abs(np.asarray(jax.jit(winograd_conv)(x, kernel)) - exact).max() / np.abs(exact).max())
        row = [f"{size}x{size}x{channels}", f"rel. error {error:.1e}"]
        adds_error = float(
            np.abs(np.asarray(jax.jit(winograd_conv_adds)(x, kernel)) - exact).max() / np.abs(exact).max()
        )
        row.append(f"with additions {adds_error:.1e}")
        forms = (("lax", lax_conv), ("winograd", winograd_conv), ("winograd, additions", winograd_conv_adds))
        for name, form in forms:
            forward = jax.jit(form)
            both = jax.jit(jax.grad(lambda a, b, f=form: jnp.sum(f(a, b) ** 2), argnums=(0, 1)))
            row.append(f"{name}: forward {median_ms(forward, x, kernel, repeats=args.repeats):.1f} ms, "
                       f"with both gradients {median_ms(both, x, kernel, repeats=args.repeats):.1f} ms")  # fmt: skip
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
