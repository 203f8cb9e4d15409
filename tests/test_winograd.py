"""Winograd F(2x2, 3x3) computes lax's convolution and its gradients, in both modes, at every padding and size."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcnn import winograd

CASES = [
    # (batch, h, w, cin, cout, pads)
    (3, 8, 8, 16, 16, ((1, 1), (1, 1))),  # 'same', as in ResNets
    (2, 9, 7, 5, 6, ((1, 1), (1, 1))),  # odd sizes: the last 2x2 blocks are cropped
    (2, 6, 10, 4, 3, ((0, 0), (0, 0))),  # 'valid'
    (2, 7, 6, 3, 5, ((2, 2), (2, 1))),  # larger padding: the input gradient's pads go to 0
    (2, 6, 7, 3, 4, ((1, 0), (0, 2))),  # asymmetric
    (2, 5, 5, 2, 2, ((3, 1), (0, 3))),  # padding beyond the kernel: the input gradient crops
    (4, 1, 1, 8, 4, ((1, 1), (1, 1))),  # the 1x1 hidden map
    (4, 2, 2, 8, 4, ((1, 1), (1, 1))),  # the 2x2 hidden map
    (1, 3, 3, 1, 1, ((0, 0), (0, 0))),  # a single output
]


def _lax(x, kernel, pads):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_winograd_equals_lax_values_and_gradients(case):
    n, h, w, cin, cout, pads = case
    kx, kw, kd, kt = jax.random.split(jax.random.key(h * w + cin), 4)
    x = jax.random.normal(kx, (n, h, w, cin))
    kernel = jax.random.normal(kw, (3, 3, cin, cout)) / np.sqrt(9 * cin)

    def run(f):
        y, vjp = jax.vjp(jax.jit(f, static_argnums=2), x, kernel, pads)[0:2]
        cotangent = jax.random.normal(kd, y.shape)
        dx, dk, _ = vjp(cotangent)
        tangents = (jax.random.normal(kt, x.shape), jax.random.normal(kt, kernel.shape))
        jvp = jax.jvp(lambda a, b: f(a, b, pads), (x, kernel), tangents)[1]
        return y, dx, dk, jvp

    got, want = run(winograd.conv3x3), run(_lax)
    assert got[0].shape == want[0].shape
    names = ("value", "input gradient", "kernel gradient", "forward-mode tangent")
    for name, a, b in zip(names, got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


def test_the_input_gradient_is_computed_by_winograd_not_by_transposing_its_tiles():
    """Reverse mode runs the input gradient's own Winograd convolution: the gradient holds three
    batched products of transformed tiles (forward, input gradient, kernel gradient) and no interior
    padding (the transpose of the tiles' strided slices: what JAX's own derivative would do)."""
    x = jax.numpy.ones((2, 8, 8, 4))
    kernel = jax.numpy.ones((3, 3, 4, 4))
    loss = lambda a, b: winograd.conv3x3(a, b, ((1, 1), (1, 1))).sum()  # noqa: E731
    eqns = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, kernel).eqns
    tile_products = [e for e in eqns if e.primitive.name == "dot_general" and e.invars[0].aval.shape[:2] == (16, 32)]
    assert len(tile_products) == 3
    interior = [e.params["padding_config"] for e in eqns if e.primitive.name == "pad"]
    assert all(step == 0 for config in interior for (_, _, step) in config)
