"""jaxcnn.layers against Flax's layers on the same weights and inputs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers as L

PADDINGS = ["VALID", "SAME", ((1, 0), (2, 1)), 1]


def _ours(padding):
    return padding.lower() if isinstance(padding, str) else padding


@pytest.mark.slow
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize(("stride", "dilation", "groups"), [(1, 1, 1), (2, 1, 1), ((1, 2), (2, 1), 1), (1, 1, 2)])
def test_conv_matches_flax(padding, stride, dilation, groups):
    key_x, key_p = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (3, 9, 8, 4))
    module = nn.Conv(6, (3, 2), strides=stride, padding=padding, kernel_dilation=dilation, feature_group_count=groups)
    variables = module.init(key_p, x)
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # non-zero bias too
    params = variables["params"]
    expected = module.apply(variables, x)
    got = L.conv2d(
        x, params["kernel"], params["bias"], stride=stride, padding=_ours(padding), dilation=dilation, groups=groups
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS[:3], ids=str)
@pytest.mark.parametrize(("size", "stride"), [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_max_pool_matches_flax(padding, size, stride):
    x = jax.random.normal(jax.random.key(1), (2, 7, 8, 3))
    window = size if isinstance(size, tuple) else (size, size)
    # Flax defaults the stride to 1; jaxcnn (like the article and PyTorch) to the window size.
    strides = window if stride is None else (stride if isinstance(stride, tuple) else (stride, stride))
    expected = nn.max_pool(x, window, strides, padding)
    np.testing.assert_array_equal(np.asarray(L.max_pool(x, size, stride, _ours(padding))), np.asarray(expected))


@pytest.mark.parametrize("padding", PADDINGS[:3], ids=str)
@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize(("size", "stride"), [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_avg_pool_matches_flax(padding, include, size, stride):
    x = jax.random.normal(jax.random.key(2), (2, 7, 8, 3))
    window = size if isinstance(size, tuple) else (size, size)
    # Flax defaults the stride to 1; jaxcnn (like the article and PyTorch) to the window size.
    strides = window if stride is None else (stride if isinstance(stride, tuple) else (stride, stride))
    expected = nn.avg_pool(x, window, strides, padding, count_include_pad=include)
    got = L.avg_pool(x, size, stride, _ours(padding), count_include_pad=include)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_dense_matches_flax():
    x = jax.random.normal(jax.random.key(3), (5, 12))
    module = nn.Dense(7)
    variables = module.init(jax.random.key(4), x)
    params = variables["params"]
    np.testing.assert_allclose(
        np.asarray(L.dense(x, params["kernel"], params["bias"])), np.asarray(module.apply(variables, x)), rtol=1e-6
    )
    assert jnp.allclose(L.flatten(x[:, :, None, None]), x)
