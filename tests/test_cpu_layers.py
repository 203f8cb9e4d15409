"""The fast CPU formulations compute the same function and gradient as the plain lax versions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import compiling, cpu_layers
from jaxcnn import layers as L
from jaxcnn.model import Model
from jaxcnn.train import batch_loss

from conftest import SPECS_DIR

CONV_CASES = [
    # (batch, h, w, cin, cout, size, stride, padding, dilation, groups)
    (7, 12, 11, 1, 8, 5, 1, ((2, 2), (2, 2)), 1, 1),  # conv1-like: shifted-slice forward
    (37, 14, 14, 8, 16, 5, 1, "valid", 1, 1),  # conv2-like, batch not a multiple of the chunk
    (16, 9, 10, 3, 4, 3, 2, "same", 1, 1),  # strided, RGB, exactly one chunk
    (5, 10, 10, 2, 4, 3, (1, 2), ((1, 0), (0, 2)), 2, 1),  # asymmetric padding, dilation
    (20, 8, 8, 4, 6, 3, 1, 1, 1, 2),  # groups: lax forward, chunked weight gradient
    (33, 6, 7, 1, 3, (2, 3), 1, "valid", 1, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES)
def test_fast_conv_equals_lax_conv_forward_and_gradients(case):
    n, h, w, cin, cout, size, stride, padding, dilation, groups = case
    size = size if isinstance(size, tuple) else (size, size)
    kx, kw, kd = jax.random.split(jax.random.key(n), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    kernel = jax.random.normal(kw, (*size, cin // groups, cout))

    def run(impl):
        def f(x, k):
            return L.conv2d(x, k, stride=stride, padding=padding, dilation=dilation, groups=groups, impl=impl)

        y, vjp = jax.vjp(jax.jit(f), x, kernel)
        tangents = (jax.random.normal(kd, x.shape), jax.random.normal(kd, kernel.shape))
        return y, vjp(jax.random.normal(kd, y.shape)), jax.jvp(jax.jit(f), (x, kernel), tangents)[1]

    (y_fast, (dx_fast, dw_fast), jvp_fast), (y_lax, (dx_lax, dw_lax), jvp_lax) = run("fast"), run("lax")
    np.testing.assert_allclose(y_fast, y_lax, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jvp_fast, jvp_lax, rtol=1e-5, atol=1e-4)  # forward mode too
    np.testing.assert_allclose(dx_fast, dx_lax, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dw_fast, dw_lax, rtol=1e-5, atol=2e-4)


CONV_POOL_CASES = [
    # (batch, h, w, cin, cout, size, padding, dilation, pool, bias, relu)
    (5, 12, 12, 1, 8, 5, 2, 1, 2, True, True),  # LeNet's conv1 + ReLU + pool1
    (3, 11, 10, 3, 4, 3, "valid", 1, 2, False, False),  # RGB; the pool crops a row and a column
    (4, 13, 9, 2, 3, 3, ((1, 0), (2, 1)), 2, (3, 2), True, True),  # asymmetric padding, dilation, 3x2 pool
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_POOL_CASES)
def test_conv_then_pool_in_one_step_equals_conv_and_pool(case):
    n, h, w, cin, cout, size, padding, dilation, pool, with_bias, relu = case
    # Small integers: every value is exact in both forms and ties are common.
    keys = jax.random.split(jax.random.key(n), 5)
    x = jax.random.randint(keys[0], (n, h, w, cin), -2, 3).astype(jnp.float32)
    kernel = jax.random.randint(keys[1], (size, size, cin, cout), -2, 3).astype(jnp.float32)
    bias = jax.random.randint(keys[2], (cout,), -2, 3).astype(jnp.float32) if with_bias else None

    def fused(x, k, b):
        return L.conv2d(x, k, b, padding=padding, dilation=dilation, pool=pool, relu_before_pool=relu, impl="fast")

    def separate(x, k, b):
        y = L.conv2d(x, k, b, padding=padding, dilation=dilation, impl="lax")
        return L.max_pool(jax.nn.relu(y) if relu else y, pool, impl="lax")

    assert cpu_layers.fuses_with_max_pool(kernel.shape, (1, 1), 1)
    results = {}
    for name, f in (("fused", fused), ("separate", separate)):
        y, vjp = jax.vjp(jax.jit(f), x, kernel, bias)
        tangents = (jax.random.normal(keys[3], x.shape), jax.random.normal(keys[3], kernel.shape), bias)
        results[name] = (
            y,
            *vjp(jax.random.normal(keys[4], y.shape)),
            jax.jvp(jax.jit(f), (x, kernel, bias), tangents)[1],
        )
    np.testing.assert_array_equal(results["fused"][0], results["separate"][0])
    for a, b in zip(results["fused"][1:], results["separate"][1:], strict=True):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="relu_before_pool applies only with pool="):
        L.conv2d(x, kernel, bias, relu_before_pool=True)
    # Other backends (and impl="lax") compute the same thing as the two calls.
    np.testing.assert_array_equal(
        L.conv2d(x, kernel, bias, padding=padding, dilation=dilation, pool=pool, relu_before_pool=relu, impl="lax"),
        results["separate"][0],
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[-1] == 1])
def test_stacked_conv_forms_equal_lax_conv_forward_and_input_gradient(case):
    """Both matmul forms of the convolution, and so their transposes (the input gradients), at
    every stride, padding and dilation of the cases, whichever form the chooser would pick."""
    n, h, w, cin, cout, size, stride, padding, dilation, _ = case
    size = size if isinstance(size, tuple) else (size, size)
    stride = stride if isinstance(stride, tuple) else (stride, stride)
    pads = L.resolve_padding(padding, size, stride, (dilation, dilation), (h, w))
    kx, kw, kd = jax.random.split(jax.random.key(n), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    kernel = jax.random.normal(kw, (*size, cin, cout))
    y_lax, vjp_lax = jax.vjp(lambda x_: cpu_layers.lax_conv(x_, kernel, stride, pads, (dilation, dilation), 1), x)
    dy = jax.random.normal(kd, y_lax.shape)
    for form in (cpu_layers.row_stacked_conv, cpu_layers.column_stacked_conv):
        y, vjp = jax.vjp(jax.jit(lambda x_, f=form: f(x_, kernel, stride, pads, (dilation, dilation))), x)
        np.testing.assert_allclose(y, y_lax, rtol=1e-5, atol=1e-4, err_msg=form.__name__)
        np.testing.assert_allclose(vjp(dy)[0], vjp_lax(dy)[0], rtol=1e-5, atol=1e-4, err_msg=form.__name__)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "value", "form"),
    [("COLUMN_FORM_MAX_FEATURES", 16, "column"), ("COLUMN_FORM_MAX_FEATURES", 0, "row"),
     ("STACKED_FORM_MAX_FLOATS", 0, "lax")],
)  # fmt: skip
def test_fast_conv_input_gradient_equals_lax_whichever_form_is_chosen(monkeypatch, setting, value, form):
    """The fast convolution's input gradient in each of its three forms, forced by the chooser's limits."""
    monkeypatch.setattr(cpu_layers, setting, value)
    x = jax.random.normal(jax.random.key(1), (9, 10, 10, 4))
    kernel = jax.random.normal(jax.random.key(2), (5, 5, 4, 6))
    assert cpu_layers.input_gradient_form(x.shape, kernel.shape, (1, 1), ((2, 2), (2, 2)), (1, 1)) == form

    def grad(impl):
        def loss(x_):
            return jnp.sum(jnp.sin(L.conv2d(x_, kernel, padding=2, impl=impl)))

        return jax.jit(jax.grad(loss))(x)

    np.testing.assert_allclose(grad("fast"), grad("lax"), rtol=1e-5, atol=1e-4)


def test_input_gradient_forms_are_chosen_as_documented():
    def form(x_shape, kernel_shape, stride=(1, 1), pad=0):
        return cpu_layers.input_gradient_form(x_shape, kernel_shape, stride, ((pad, pad), (pad, pad)), (1, 1))

    assert form((128, 14, 14, 8), (5, 5, 8, 16)) == "column"  # LeNet's conv2
    assert form((128, 14, 14, 8), (3, 3, 8, 16), pad=1) == "column"
    assert form((512, 14, 14, 8), (5, 5, 8, 16)) == "row"  # the column form's product is too large
    assert form((128, 37, 37, 10), (5, 5, 10, 20), stride=(2, 2)) == "row"  # the worked example's conv2
    assert form((128, 8, 8, 64), (3, 3, 64, 128), pad=1) == "row"
    assert form((128, 16, 16, 16), (3, 3, 16, 32), pad=1) == "row"
    assert form((128, 16, 16, 32), (3, 3, 32, 64), pad=1) == "lax"  # the row form's product is 12 MiB
    assert form((128, 32, 32, 16), (3, 3, 16, 32), pad=1) == "lax"


def test_fast_paths_are_chosen_as_documented():
    assert cpu_layers.uses_shift_add((5, 5, 1, 8), 1) and not cpu_layers.uses_shift_add((5, 5, 8, 16), 1)
    assert not cpu_layers.uses_shift_add((3, 3, 2, 4), 2)
    assert cpu_layers.tiles((2, 2), (2, 2), ((0, 0), (0, 0)))
    assert not cpu_layers.tiles((3, 3), (2, 2), ((0, 0), (0, 0)))
    assert not cpu_layers.tiles((2, 2), (2, 2), ((1, 0), (0, 0)))
    with pytest.raises(ValueError, match="impl must be one of auto, lax, fast"):
        L.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="cuda")


JITS = pytest.mark.parametrize("jit", [jax.jit, compiling.jit], ids=["xla-defaults", "jaxcnn-options"])
"""The fast paths must hold under XLA's default options and under those jaxcnn compiles with."""


@pytest.mark.slow
@JITS
@pytest.mark.parametrize(("shape", "size"), [((3, 28, 28, 8), 2), ((2, 11, 9, 3), 2), ((2, 9, 12, 4), (3, 2))])
def test_fast_max_pool_equals_reduce_window(shape, size, jit):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no ties
    dy_key = jax.random.key(1)

    def run(impl):
        def value_and_input_gradient(x, dy):
            y, vjp = jax.vjp(lambda x: L.max_pool(x, size, impl=impl), x)
            return y, vjp(dy)[0]

        out_shape = jax.eval_shape(lambda x: L.max_pool(x, size, impl=impl), x).shape
        return jit(value_and_input_gradient)(x, jax.random.normal(dy_key, out_shape))

    (y_fast, dx_fast), (y_lax, dx_lax) = run("fast"), run("lax")
    np.testing.assert_array_equal(y_fast, y_lax)
    np.testing.assert_array_equal(dx_fast, dx_lax)


@pytest.mark.slow
@JITS
def test_fast_max_pool_sends_the_gradient_where_reduce_window_does_at_ties(jit):
    # Small integers make ties common: all-equal windows, two or three tied maxima, ReLU zeros.
    x = jax.random.randint(jax.random.key(0), (4, 6, 8, 3), -2, 2).astype(jnp.float32)
    x = x.at[0].set(0.0).at[1, :, :, 0].set(jnp.maximum(x[1, :, :, 0], 0))
    tangent = jax.random.normal(jax.random.key(1), x.shape)
    dy = jax.random.normal(jax.random.key(2), (4, 3, 4, 3))
    results = {}
    for impl in ("fast", "lax"):

        def derivatives(x, dy, tangent, impl=impl):  # one top-level program: jit is not nested
            def pool(x):
                return L.max_pool(x, 2, impl=impl)

            y, vjp = jax.vjp(pool, x)
            return y, vjp(dy)[0], jax.jvp(pool, (x,), (tangent,))[1]

        results[impl] = jit(derivatives)(x, dy, tangent)
    for fast_result, lax_result in zip(results["fast"], results["lax"], strict=True):
        np.testing.assert_array_equal(fast_result, lax_result)
    dx = np.asarray(results["fast"][1])
    assert np.count_nonzero(dx[0]) == np.count_nonzero(np.asarray(dy)[0])  # one position per window


@pytest.mark.slow
def test_materialize_is_the_identity_value_and_gradient():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    np.testing.assert_array_equal(jax.jit(cpu_layers.materialize)(x), x)
    np.testing.assert_array_equal(jax.grad(lambda x: (cpu_layers.materialize(x) * x).sum())(x), 2 * x)


def lenet_with_exact_convolutions(impl):
    """LeNet whose convolutions see small integers: both forms compute them exactly, so pooling
    picks the same maxima (float rounding can otherwise flip a near-tie between two positions,
    sending that window's gradient elsewhere: a different, equally valid answer)."""
    model = Model.from_file(SPECS_DIR / "lenet_mnist.json", impl=impl)
    params = model.init(jax.random.key(2))
    for name, key in (("conv1", 3), ("conv2", 4)):
        kernel = params[name]["kernel"]
        params[name] = {"kernel": jax.random.randint(jax.random.key(key), kernel.shape, -2, 3).astype(jnp.float32),
                        "bias": jnp.ones_like(params[name]["bias"])}  # fmt: skip
    params["dense1"] = {**params["dense1"], "kernel": params["dense1"]["kernel"] * 1e-2}  # moderate logits
    return model, params


@pytest.mark.slow
@JITS
def test_lenet_training_gradients_fast_equal_lax(jit):
    x = jax.random.randint(jax.random.key(0), (48, 28, 28, 1), 0, 4).astype(jnp.float32)
    y = jax.random.randint(jax.random.key(1), (48,), 0, 10)
    grads, logits = {}, {}
    for impl in ("fast", "lax"):
        model, params = lenet_with_exact_convolutions(impl)
        grads[impl] = jit(jax.grad(lambda p, m=model: batch_loss(m, p, x, y)[0]))(params)
        logits[impl] = jit(model.apply)(params, x)
    np.testing.assert_allclose(logits["fast"], logits["lax"], rtol=1e-5, atol=1e-5)
    assert float(jnp.std(logits["lax"])) > 0.1  # the loss is not saturated: its gradients mean something
    for a, b in zip(jax.tree.leaves(grads["fast"]), jax.tree.leaves(grads["lax"]), strict=True):
        assert float(jnp.abs(b).max()) > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()))


def test_lenet_fast_equals_lax_on_real_valued_inputs():
    x = jax.random.uniform(jax.random.key(0), (48, 28, 28, 1))
    outputs = {}
    for impl in ("fast", "lax"):
        model = Model.from_file(SPECS_DIR / "lenet_mnist.json", impl=impl)
        outputs[impl] = jax.jit(model.apply)(model.init(jax.random.key(2)), x)
    np.testing.assert_allclose(outputs["fast"], outputs["lax"], rtol=1e-5, atol=1e-5)


LAYOUT_CASES = [
    # (batch, h, w, cin, cout, size, padding): stride 1, so both gradients are NHWC/HWIO convolutions
    (40, 8, 8, 32, 32, 3, ((1, 1), (1, 1))),  # a ResNet shape: XLA's transposed-convolution input gradient
    (3, 6, 7, 4, 5, 3, ((3, 1), (0, 3))),  # padding beyond the kernel: the input gradient crops
    (5, 7, 6, 40, 3, (2, 3), ((0, 1), (2, 0))),  # non-square kernel, asymmetric padding
]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=str)
def test_layout_gradients_equal_lax_and_run_inside_scan(case):
    """The NHWC/HWIO gradient forms give lax's gradients, in reverse and forward mode, and inside a
    ``lax.scan`` every convolution XLA compiles is in that layout (the one its CPU loops run fast)."""
    n, h, w, cin, cout, size, pads = case
    size = size if isinstance(size, tuple) else (size, size)
    kx, kw, kd = jax.random.split(jax.random.key(n), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    kernel = jax.random.normal(kw, (*size, cin, cout)) / np.sqrt(size[0] * size[1] * cin)
    dy = jax.random.normal(kd, (n, h + sum(pads[0]) - size[0] + 1, w + sum(pads[1]) - size[1] + 1, cout))

    def grads(f):
        y, vjp = jax.vjp(f, x, kernel)
        return y, *vjp(dy), jax.jvp(f, (x, kernel), (x, kernel))[1]

    fast = grads(jax.jit(lambda a, b: cpu_layers.conv(a, b, (1, 1), pads, (1, 1), 1)))
    plain = grads(jax.jit(lambda a, b: cpu_layers.lax_conv(a, b, (1, 1), pads, (1, 1), 1)))
    for name, a, b in zip(("value", "input gradient", "kernel gradient", "tangent"), fast, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)

    def scanned(a, kernels):
        def body(carry, k):
            return carry + cpu_layers.conv(carry, k, (1, 1), ((1, 1), (1, 1)), (1, 1), 1), None

        return jax.lax.scan(body, a, kernels)[0].sum()

    square = jnp.zeros((2, 3, 3, cin, cin))
    text = jax.jit(jax.grad(scanned, argnums=(0, 1))).lower(x, square).compile().as_text() or ""
    layouts = [line.split("dim_labels=")[1].split(",")[0] for line in text.splitlines() if " convolution(" in line]
    assert layouts and set(layouts) == {"b01f_01io->b01f"}
