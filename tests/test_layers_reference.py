"""Differential tests: jaxcnn.layers against the NumPy loop references, forward and gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import layers as L

from reference import avg_pool_ref, conv2d_ref, max_pool_ref, same_pads

CASES = 24


def _random_pads(rng: np.random.Generator):
    kind = rng.integers(4)
    if kind == 0:
        return "valid"
    if kind == 1:
        return "same"
    if kind == 2:
        return int(rng.integers(0, 3))
    return ((int(rng.integers(0, 3)), int(rng.integers(0, 3))), (int(rng.integers(0, 3)), int(rng.integers(0, 3))))


def _explicit(padding, size, stride, dilation, hw):
    """Explicit pairs computed here, independently of jaxcnn.geometry."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(same_pads(hw[a], size[a], stride[a], dilation[a]) for a in range(2))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding


def _conv_case(seed: int):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(1, 3))
    cout = groups * int(rng.integers(1, 3))
    size = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    hw = (int(rng.integers(size[0] * dilation[0], 9)), int(rng.integers(size[1] * dilation[1], 9)))
    padding = _random_pads(rng)
    x = rng.normal(size=(2, *hw, cin))
    w = rng.normal(size=(*size, cin // groups, cout))
    b = rng.normal(size=(cout,))
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(CASES))
def test_conv2d_matches_numpy_loops(seed):
    x, w, b, kw = _conv_case(seed)
    pads = _explicit(kw["padding"], w.shape[:2], kw["stride"], kw["dilation"], x.shape[1:3])
    expected = conv2d_ref(x, w, b, kw["stride"], pads, kw["dilation"], kw["groups"])
    with jax.enable_x64(True):
        got = L.conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kw)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def _pool_case(seed: int):
    rng = np.random.default_rng(1000 + seed)
    size = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = None if rng.integers(2) else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    hw = (int(rng.integers(size[0], 9)), int(rng.integers(size[1], 9)))
    padding = _random_pads(rng)
    if not isinstance(padding, str):  # a window must still see at least one real pixel
        padding = _explicit(padding, size, stride or size, (1, 1), hw)
        padding = tuple((min(lo, size[a] - 1), min(hi, size[a] - 1)) for a, (lo, hi) in enumerate(padding))
    x = rng.normal(size=(2, *hw, 3))
    return x, size, stride, padding


@pytest.mark.parametrize("seed", range(CASES))
def test_max_pool_matches_numpy_loops(seed):
    x, size, stride, padding = _pool_case(seed)
    pads = _explicit(padding, size, stride or size, (1, 1), x.shape[1:3])
    expected = max_pool_ref(x, size, stride or size, pads)
    with jax.enable_x64(True):
        got = L.max_pool(jnp.asarray(x), size, stride, padding)
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("seed", range(CASES))
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_matches_numpy_loops(seed, include):
    x, size, stride, padding = _pool_case(seed)
    pads = _explicit(padding, size, stride or size, (1, 1), x.shape[1:3])
    expected = avg_pool_ref(x, size, stride or size, pads, include)
    with jax.enable_x64(True):
        got = L.avg_pool(jnp.asarray(x), size, stride, padding, count_include_pad=include)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_conv2d_gradients(seed):
    x, w, b, kw = _conv_case(seed)
    with jax.enable_x64(True):
        check_grads(
            lambda x, w, b: L.conv2d(x, w, b, **kw),
            (jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)),
            order=2,
            modes=["fwd", "rev"],
        )


def test_conv2d_kernel_gradient_matches_numpy_finite_differences():
    x, w, b, kw = _conv_case(3)
    pads = _explicit(kw["padding"], w.shape[:2], kw["stride"], kw["dilation"], x.shape[1:3])
    rng = np.random.default_rng(7)
    probe = rng.normal(size=conv2d_ref(x, w, b, kw["stride"], pads, kw["dilation"], kw["groups"]).shape)

    def ref_loss(w_):
        return float((conv2d_ref(x, w_, b, kw["stride"], pads, kw["dilation"], kw["groups"]) * probe).sum())

    eps = 1e-6
    numeric = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        step = np.zeros_like(w)
        step[idx] = eps
        numeric[idx] = (ref_loss(w + step) - ref_loss(w - step)) / (2 * eps)
    with jax.enable_x64(True):
        grad = jax.grad(lambda w_: (L.conv2d(jnp.asarray(x), w_, jnp.asarray(b), **kw) * probe).sum())(jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_pool_gradients(seed):
    x, size, stride, padding = _pool_case(seed)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        check_grads(lambda x: L.avg_pool(x, size, stride, padding, count_include_pad=False), (xj,), order=2)
        # Max pooling is piecewise linear: random normal inputs have no ties, so the gradient is defined.
        check_grads(lambda x: L.max_pool(x, size, stride, padding), (xj,), order=1, modes=["rev"])


def test_activations_and_dense():
    x = jnp.asarray([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(np.asarray(L.activation("relu")(x)), [[0, 0, 3]])
    np.testing.assert_allclose(np.asarray(L.activation("softmax")(x)).sum(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(L.activation("linear")(x)), np.asarray(x))
    kernel = jnp.asarray([[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(np.asarray(L.dense(x, kernel, jnp.asarray([1.0]))), [[-2 + 9 + 1]])
    assert L.flatten(jnp.zeros((2, 3, 4, 5))).shape == (2, 60)
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        L.activation("rleu")


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: L.conv2d(jnp.zeros((4, 4, 1)), jnp.zeros((3, 3, 1, 1))), "4-D NHWC"),
        (lambda: L.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((5, 5, 1, 1))), "does not fit"),
        (lambda: L.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 1))), "input channels"),
        (lambda: L.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), padding="full"), "padding must be"),
        (lambda: L.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), stride=0), "stride must be at least 1"),
        (lambda: L.max_pool(jnp.zeros((1, 4, 4, 1)), 2, padding=-1), "must not be negative"),
        (lambda: L.dense(jnp.zeros((2, 3, 3, 1)), jnp.zeros((9, 2))), "flatten first"),
    ],
)
def test_layer_errors_are_clear(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_pool_gradients_under_jit():
    """reduce_window needs a constant init value to be differentiable inside jit."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    g_max = jax.jit(jax.grad(lambda x: L.max_pool(x, 2).sum()))(x)
    g_avg = jax.jit(jax.grad(lambda x: L.avg_pool(x, 2, padding=1, count_include_pad=False).sum()))(x)
    assert float(g_max.sum()) == 2 * 3 * 3 * 3  # one max per window gets the gradient
    assert g_avg.shape == x.shape
