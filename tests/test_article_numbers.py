"""The article's own numbers and tiny integer cases worked by hand (no reference code involved)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers as L
from jaxcnn.geometry import output_size, resolve_padding
from jaxcnn.model import Model, param_count
from jaxcnn.spec import load_spec, parse_spec

from conftest import SPECS_DIR

ARTICLE_IMAGE = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
ARTICLE_FILTER = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def nhwc(rows: Any) -> jnp.ndarray:
    a = jnp.asarray(rows, jnp.float32)
    return a[None, :, :, None]


def hwio(rows: Any) -> jnp.ndarray:
    return jnp.asarray(rows, jnp.float32)[:, :, None, None]


def plane(y: jnp.ndarray) -> np.ndarray:
    return np.asarray(y)[0, :, :, 0]


def test_article_5x5_image_and_3x3_filter():
    out = plane(L.conv2d(nhwc(ARTICLE_IMAGE), hwio(ARTICLE_FILTER)))
    assert out.shape == (3, 3)
    assert out[0, 0] == 4
    # Every cell worked by hand: the filter's four corners plus its centre, summed over the window.
    np.testing.assert_array_equal(out, [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_vertical_edge_filter_lights_up_the_edge():
    image = [[10, 10, 10, 0, 0, 0]] * 6
    edge = [[1, 0, -1]] * 3
    np.testing.assert_array_equal(plane(L.conv2d(nhwc(image), hwio(edge))), [[0, 30, 30, 0]] * 4)


def test_rgb_3x3x3_filter_plus_bias_is_28_weights():
    spec = parse_spec(
        {"format": "jaxcnn.spec/1", "input": [6, 6, 3], "layers": [{"type": "conv", "filters": 1, "size": 3}]}
    )
    assert param_count(spec.layers[0]) == 28


def test_padding_6x6_with_3x3_filter_valid_4x4_same_6x6():
    x = jnp.ones((1, 6, 6, 1))
    k = jnp.ones((3, 3, 1, 1))
    assert L.conv2d(x, k, padding="valid").shape == (1, 4, 4, 1)
    assert L.conv2d(x, k, padding="same").shape == (1, 6, 6, 1)
    assert L.conv2d(x, k, padding=1).shape == (1, 6, 6, 1)
    assert L.conv2d(x, k, stride=2).shape == (1, 2, 2, 1)


@pytest.mark.parametrize(
    ("n", "f", "s", "p", "expected"),
    [
        (39, 3, 1, 0, 37),
        (37, 5, 2, 0, 17),
        (17, 5, 2, 0, 7),
        (32, 5, 1, 0, 28),
        (28, 2, 2, 0, 14),
        (7, 3, 2, 0, 3),
        (6, 3, 1, 1, 6),
        (28, 5, 1, 2, 28),
        (5, 5, 1, 0, 1),
    ],
)
def test_output_size_formula(n, f, s, p, expected):
    assert output_size(n, f, s, p, p) == expected


def test_max_pool_f2_s2_keeps_the_largest():
    grid = [[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]]
    np.testing.assert_array_equal(plane(L.max_pool(nhwc(grid), 2)), [[9, 2], [6, 3]])


def test_worked_example_shapes():
    spec = load_spec(SPECS_DIR / "article_worked_example.json")
    assert [layer.output_shape for layer in spec.layers] == [(37, 37, 10), (17, 17, 20), (7, 7, 40), (1960,), (10,)]


def test_article_lenet_shapes_and_weights():
    spec = load_spec(SPECS_DIR / "article_lenet.json")
    shapes = [layer.output_shape for layer in spec.layers]
    assert shapes == [(28, 28, 8), (14, 14, 8), (10, 10, 16), (5, 5, 16), (400,), (120,), (84,), (10,)]
    assert Model(spec).param_count() == 62_958


def test_lenet_mnist_matches_the_table_after_conv1():
    article = load_spec(SPECS_DIR / "article_lenet.json")
    mnist = load_spec(SPECS_DIR / "lenet_mnist.json")
    assert mnist.input_shape == (28, 28, 1)
    assert [la.output_shape for la in mnist.layers] == [la.output_shape for la in article.layers]
    assert mnist.layers[0].padding == ((2, 2), (2, 2))  # type: ignore[attr-defined]


# Equinox-style exact cases on arange inputs: every value below was worked out by hand.
ARANGE_4X4 = np.arange(16, dtype=np.float32).reshape(4, 4)
ONES_2X2 = np.ones((2, 2), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, [[10, 14, 18], [26, 30, 34], [42, 46, 50]]),
        ({"stride": 2}, [[10, 18], [42, 50]]),
        # "same", stride 1, 2x2 filter: one pixel of padding in total, on the high side.
        ({"padding": "same"}, [[10, 14, 18, 10], [26, 30, 34, 18], [42, 46, 50, 26], [25, 27, 29, 15]]),
        # Asymmetric: one row on top only.
        ({"padding": ((1, 0), (0, 0))}, [[1, 3, 5], [10, 14, 18], [26, 30, 34], [42, 46, 50]]),
        # Dilation 2: the 2x2 filter touches pixels two apart.
        ({"dilation": 2}, [[20, 24], [36, 40]]),
    ],
)
def test_conv2d_exact_arange_cases(kwargs, expected):
    np.testing.assert_array_equal(plane(L.conv2d(nhwc(ARANGE_4X4), hwio(ONES_2X2), **kwargs)), expected)


def test_conv2d_groups_keep_channels_apart():
    x = jnp.stack([jnp.asarray(ARANGE_4X4), 100 + jnp.asarray(ARANGE_4X4)], axis=-1)[None]
    kernel = jnp.asarray([2.0, 3.0]).reshape(1, 1, 1, 2)  # 1x1, one input channel per group
    y = np.asarray(L.conv2d(x, kernel, groups=2))
    np.testing.assert_array_equal(y[0, :, :, 0], 2 * ARANGE_4X4)
    np.testing.assert_array_equal(y[0, :, :, 1], 3 * (100 + ARANGE_4X4))


def test_same_padding_puts_the_extra_pixel_on_the_high_side():
    assert resolve_padding("same", (3, 3), (2, 2), (1, 1), (6, 6)) == ((0, 1), (0, 1))
    assert resolve_padding("same", (3, 3), (2, 2), (1, 1), (5, 5)) == ((1, 1), (1, 1))
    assert resolve_padding("same", (2, 2), (1, 1), (1, 1), (4, 4)) == ((0, 1), (0, 1))
    assert resolve_padding([1, 2], (3, 3), (1, 1)) == ((1, 1), (2, 2))


def test_max_pool_same_stride_2_exact():
    x = np.arange(25, dtype=np.float32).reshape(5, 5)
    np.testing.assert_array_equal(
        plane(L.max_pool(nhwc(x), 2, padding="same")), [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    )


def test_max_pool_padding_never_wins_even_for_negative_inputs():
    x = -1 - np.arange(16, dtype=np.float32).reshape(4, 4)
    y = plane(L.max_pool(nhwc(x), 2, padding=1))
    assert y[0, 0] == -1  # only x[0, 0] is inside the corner window; a zero pad would have won
    assert np.isfinite(y).all()


@pytest.mark.parametrize(("include", "corner", "edge"), [(True, 0.0, 0.75), (False, 0.0, 3.0)])
def test_avg_pool_count_include_pad_exact(include, corner, edge):
    y = plane(L.avg_pool(nhwc(ARANGE_4X4), 2, padding=1, count_include_pad=include))
    assert y.shape == (3, 3)
    assert y[0, 0] == corner
    assert y[0, 2] == edge  # only x[0, 3] = 3 is inside this window
    assert y[1, 1] == (5 + 6 + 9 + 10) / 4
