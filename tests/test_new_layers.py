"""The layers after the article: batch norm, dropout, global pooling, activation, add and concat.

Batch norm is checked against ``flax.linen.BatchNorm`` on the same inputs and weights, dropout
against its definition (statistically and exactly), a residual network against the same network
written directly with ``lax``, and the ResNets' weight counts against He et al.'s.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import layers as L
from jaxcnn.model import Model, StateError
from jaxcnn.spec import ConvLayer, load_spec, parse_spec

from conftest import SPECS_DIR


def spec_of(*layers, input_shape=(6, 5, 3)):
    return parse_spec({"format": "jaxcnn.spec/1", "input": list(input_shape), "layers": list(layers)})


@pytest.mark.parametrize("flat", [False, True], ids=["nhwc", "flat"])
@pytest.mark.parametrize(("momentum", "epsilon"), [(0.9, 1e-5), (0.99, 1e-3)])
def test_batch_norm_matches_flax_in_training_and_evaluation(flat, momentum, epsilon):
    layers = [{"type": "flatten"}] if flat else []
    spec = spec_of(*layers, {"type": "batch_norm", "name": "bn", "momentum": momentum, "epsilon": epsilon})
    model = Model(spec)
    x = jax.random.normal(jax.random.key(0), (7, 6, 5, 3)) * 3 + 1
    features = x.reshape(7, -1) if flat else x
    module = nn.BatchNorm(momentum=momentum, epsilon=epsilon)
    variables = module.init(jax.random.key(1), features, use_running_average=False)
    rng = np.random.default_rng(0)
    channels = features.shape[-1]
    params: dict[str, Any] = {
        "scale": rng.normal(size=channels).astype(np.float32),
        "bias": rng.normal(size=channels).astype(np.float32),
    }
    stats: dict[str, Any] = {
        "mean": rng.normal(size=channels).astype(np.float32),
        "var": rng.uniform(0.5, 2, channels).astype(np.float32),
    }
    variables = {"params": params, "batch_stats": stats}

    expected, updated = module.apply(variables, features, use_running_average=False, mutable=["batch_stats"])
    ours, new_state = model.apply_with_state({"bn": params}, {"bn": stats}, x, training=True)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)
    for key in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(new_state["bn"][key]), np.asarray(updated["batch_stats"][key]),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip

    expected_eval = module.apply(variables, features, use_running_average=True)
    ours_eval, same_state = model.apply_with_state({"bn": params}, {"bn": stats}, x, training=False)
    np.testing.assert_allclose(np.asarray(ours_eval), np.asarray(expected_eval), rtol=1e-5, atol=1e-5)
    assert same_state["bn"] is stats or np.array_equal(same_state["bn"]["mean"], stats["mean"])
    np.testing.assert_array_equal(np.asarray(model.apply({"bn": params}, x, {"bn": stats})), np.asarray(ours_eval))


def test_batch_norm_without_scale_or_center_has_no_weights_and_plain_normalisation():
    model = Model(spec_of({"type": "batch_norm", "scale": False, "center": False}))
    assert model.init(0) == {} and model.param_count() == 0
    x = jax.random.normal(jax.random.key(2), (4, 6, 5, 3))
    y, _ = model.apply_with_state({}, model.init_state(), x, training=True)
    np.testing.assert_allclose(np.asarray(y.mean(axis=(0, 1, 2))), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y.var(axis=(0, 1, 2))), 1, atol=1e-3)


def test_batch_norm_statistics_stay_float32_in_bfloat16():
    model = Model(spec_of({"type": "batch_norm", "name": "bn"}))
    params, state = model.init_with_state(0)
    low = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    x = jax.random.normal(jax.random.key(3), (8, 6, 5, 3)).astype(jnp.bfloat16)
    y, new_state = model.apply_with_state(low, state, x, training=True)
    assert y.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(new_state))
    assert state["bn"]["var"].dtype == jnp.float32


def test_a_network_with_state_needs_it():
    model = Model(spec_of({"type": "batch_norm", "name": "bn"}))
    params = model.init(0)
    x = jnp.zeros((2, 6, 5, 3))
    with pytest.raises(StateError, match="keeps batch-norm statistics, so it needs its state: pass state="):
        model.apply(params, x)
    with pytest.raises(StateError, match=r"state\['bn'\]\['var'\] should have shape \(3,\)"):
        model.apply(params, x, {"bn": {"mean": jnp.zeros(3), "var": jnp.zeros(4)}})
    assert Model(spec_of({"type": "flatten"})).init_state() == {}


DROPOUT = spec_of({"type": "dropout", "name": "drop", "rate": 0.3}, input_shape=(100, 100, 10))


def test_dropout_drops_at_its_rate_scales_the_rest_and_is_identity_in_evaluation():
    model = Model(DROPOUT)
    x = jnp.ones((1, 100, 100, 10))
    out, _ = model.apply_with_state({}, {}, x, training=True, key=jax.random.key(0))
    y = np.asarray(out)
    dropped = float((y == 0).mean())
    n = y.size  # 100,000 draws: the dropped share is within 5 standard deviations of 0.3
    assert abs(dropped - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n), dropped
    np.testing.assert_array_equal(np.unique(y), np.array([0, np.float32(1) / np.float32(0.7)], np.float32))
    np.testing.assert_array_equal(np.asarray(model.apply({}, x)), np.asarray(x))
    again, _ = model.apply_with_state({}, {}, x, training=True, key=jax.random.key(0))
    other, _ = model.apply_with_state({}, {}, x, training=True, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(again), y)
    assert not np.array_equal(np.asarray(other), y)
    with pytest.raises(ValueError, match="dropout layer 'drop' needs a random key in training"):
        model.apply_with_state({}, {}, x, training=True)


def test_dropout_rate_zero_is_the_identity_even_in_training():
    x = jnp.arange(6.0).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(np.asarray(L.dropout(x, 0.0, jax.random.key(0))), np.asarray(x))
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        L.dropout(x, 1.0, jax.random.key(0))


def test_global_pools_and_concat_by_hand():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(np.asarray(L.global_avg_pool(x)), np.asarray(x).mean(axis=(1, 2)))
    np.testing.assert_array_equal(np.asarray(L.global_max_pool(x)), np.asarray(x)[:, -1, -1, :])
    spec = spec_of(
        {"type": "global_max_pool", "name": "top"},
        {"type": "global_avg_pool", "name": "mean", "inputs": "input"},
        {"type": "concat", "name": "both", "inputs": ["top", "mean"]},
        input_shape=(3, 4, 5),
    )
    out = Model(spec).apply({}, x)
    np.testing.assert_array_equal(
        np.asarray(out), np.concatenate([np.asarray(x)[:, -1, -1], np.asarray(x).mean((1, 2))], 1)
    )


RESIDUAL = spec_of(
    {"type": "conv", "name": "a", "filters": 3, "size": 3, "padding": "same", "activation": "relu"},
    {"type": "conv", "name": "b", "filters": 3, "size": 3, "padding": "same"},
    {"type": "add", "name": "sum", "inputs": ["b", "input"]},
    {"type": "activation", "name": "relu", "activation": "tanh"},
    {"type": "conv", "name": "proj", "filters": 2, "size": 1, "stride": 2, "inputs": "input"},
    {"type": "conv", "name": "down", "filters": 2, "size": 3, "stride": 2, "padding": 1, "inputs": "relu"},
    {"type": "concat", "name": "cat", "inputs": ["down", "proj"]},
    {"type": "global_avg_pool", "name": "gap"},
    {"type": "dense", "name": "out", "units": 4},
)


def _direct(params, x):
    """RESIDUAL written out with lax, as a reader would by hand."""

    def conv(x, w, stride, pad):
        y = lax.conv_general_dilated(x, w["kernel"], (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + w["bias"]

    a = jax.nn.relu(conv(x, params["a"], 1, "SAME"))
    b = conv(a, params["b"], 1, "SAME")
    r = jnp.tanh(b + x)
    proj = conv(x, params["proj"], 2, "VALID")
    down = conv(r, params["down"], 2, ((1, 1), (1, 1)))
    pooled = jnp.concatenate([down, proj], axis=-1).mean(axis=(1, 2))
    return pooled @ params["out"]["kernel"] + params["out"]["bias"]


@pytest.mark.parametrize("impl", ["lax", "fast"])
def test_a_residual_branching_network_equals_the_same_network_written_with_lax(impl):
    model = Model(RESIDUAL, impl)
    params = jax.tree.map(lambda p: p + 0.05, model.init(4))  # non-zero biases too
    x = jax.random.normal(jax.random.key(5), (3, 6, 5, 3))
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), np.asarray(_direct(params, x)), rtol=1e-5, atol=1e-5)
    ours = jax.grad(lambda p: (model.apply(p, x) ** 2).sum())(params)
    theirs = jax.grad(lambda p: (_direct(p, x) ** 2).sum())(params)
    for name in params:
        for field in params[name]:
            np.testing.assert_allclose(np.asarray(ours[name][field]), np.asarray(theirs[name][field]),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{name}.{field}")  # fmt: skip


def test_resnets_have_he_et_al_weight_counts():
    resnet20 = Model(load_spec(SPECS_DIR / "resnet20_cifar10.json"))
    resnet56 = Model(load_spec(SPECS_DIR / "resnet56_cifar10.json"))
    assert resnet20.param_count() == 272_474  # option B shortcuts (option A: 269,722)
    assert resnet56.param_count() == 855_770  # the paper's "0.85M"
    convs = [layer for layer in resnet20.spec.layers if isinstance(layer, ConvLayer) and layer.size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convolutions and the dense layer: the 20 weighted layers
    assert resnet20.spec.layer("stage3.block2.relu2").output_shape == (8, 8, 64)


def test_every_layer_of_a_resnet_block_is_named_by_its_use():
    spec = load_spec(SPECS_DIR / "resnet20_cifar10.json")
    names = [layer.name for layer in spec.layers]
    assert "stage1.block3.conv2" in names and "stage2_in.proj" in names and "stage2.block2.add" in names
    assert spec.layer("stage2_in.proj").inputs == ("stage1.block3.relu2",)
    assert spec.layer("stage2_in.add").inputs == ("stage2_in.bn2", "stage2_in.proj_bn")
    params = Model(spec).init(0)
    assert set(params["stage2_in.proj_bn"]) == {"scale", "bias"}
    assert set(Model(spec).init_state()["stage2_in.proj_bn"]) == {"mean", "var"}


@pytest.mark.parametrize("shape", [(64, 6, 5, 16), (256, 32)], ids=["nhwc", "flat"])
def test_batch_statistics_keep_their_precision_when_the_mean_is_large(shape):
    """Issue 27 (19): the unshifted one-pass variance (E[x^2] - E[x]^2 in float32) was off by 3e-4 to 3.7e-3
    relative for a mean of about 1e3 and a spread of 1; the shifted pass keeps float32's own precision."""
    rng = np.random.default_rng(3)
    x = (1e3 + rng.normal(0, 1, shape) * rng.uniform(0.5, 2, shape[-1])).astype(np.float32)
    mean, var = L.batch_moments(jnp.asarray(x))
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(np.asarray(var), x.astype(np.float64).var(axis=axes), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(mean), x.astype(np.float64).mean(axis=axes), rtol=1e-7)


def test_batch_statistics_gradient_equals_the_two_pass_forms():
    """The shift is a constant to the gradient, so the normalised output's gradient is the textbook one."""
    x = jax.random.normal(jax.random.key(2), (9, 4, 3, 5)) * 2 + 5
    weights = jax.random.normal(jax.random.key(3), x.shape)

    def ours(x):
        mean, var = L.batch_moments(x)
        return jnp.sum(L.batch_norm(x, mean, var, None, None, 1e-3) * weights)

    def two_pass(x):
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return jnp.sum((x - mean) / jnp.sqrt(var + 1e-3) * weights)

    np.testing.assert_allclose(np.asarray(jax.grad(ours)(x)), np.asarray(jax.grad(two_pass)(x)), atol=2e-5)


DEAD_CHANNEL_SPEC = {
    "format": "jaxcnn.spec/1", "name": "dead-channel-bn", "input": [9, 8, 2],
    "layers": [
        {"type": "conv", "name": "stem", "filters": 4, "size": 3, "padding": [[1, 1], [1, 1]], "use_bias": False,
         "activation": "relu"},
        {"type": "batch_norm", "epsilon": 0.1}, {"type": "activation", "activation": "relu"},
        {"type": "batch_norm", "momentum": 0.5, "epsilon": 1e-05, "center": False},
        {"type": "global_avg_pool", "name": "h_1_avg", "inputs": "bn2"},
        {"type": "global_max_pool", "name": "h_1_max", "inputs": "bn2"},
        {"type": "concat", "name": "h_1_cat", "inputs": ["h_1_max", "h_1_avg"]},
        {"type": "dense", "name": "head", "units": 2, "activation": "softmax"}]}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 6])
def test_a_dead_channel_before_batch_norm_gives_the_textbook_input_gradient(batch):
    """Issue 27 (20): a channel that ReLU leaves all zero feeds batch norm (zero variance) and global pooling.
    In training mode the input gradient equals a float64 reference written directly (two-pass variance,
    jnp.max), for every implementation: the points where the functions are not differentiable (the
    variance's clamp at 0, ties in the max, ReLU at 0) do not reach the input, since ReLU'(0) = 0 stops the
    dead channel's gradient in both."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(batch)
        x = jnp.asarray(rng.uniform(0, 1, (batch, 9, 8, 2)))
        weights = jnp.asarray(rng.normal(size=(batch, 2)))
        for impl in ("lax", "auto"):
            model = Model(parse_spec(DEAD_CHANNEL_SPEC), impl=impl)
            params = jax.tree.map(lambda a: np.asarray(a, np.float64), model.init(0))
            params["stem"]["kernel"][..., 3] = -np.abs(params["stem"]["kernel"][..., 3])  # inputs >= 0: dead
            state = jax.tree.map(lambda a: np.asarray(a, np.float64), model.init_state())

            def ours(x, model=model, params=params, state=state):
                return jnp.sum(model.apply_with_state(params, state, x, training=True)[0] * weights)

            def reference(x, params=params):
                def norm(y, p, epsilon):
                    mean = jnp.mean(y, axis=(0, 1, 2))
                    var = jnp.mean(jnp.square(y - mean), axis=(0, 1, 2))
                    return (y - mean) / jnp.sqrt(var + epsilon) * p["scale"] + p.get("bias", 0.0)

                y = lax.conv_general_dilated(x, params["stem"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
                y = norm(jax.nn.relu(norm(jax.nn.relu(y), params["bn1"], 0.1)), params["bn2"], 1e-5)
                pooled = jnp.concatenate([jnp.max(y, axis=(1, 2)), jnp.mean(y, axis=(1, 2))], axis=1)
                return jnp.sum((pooled @ params["head"]["kernel"] + params["head"]["bias"]) * weights)

            assert float(jnp.abs(jax.grad(reference)(x)).max()) > 0.05  # a gradient to compare
            np.testing.assert_allclose(np.asarray(jax.grad(ours)(x)), np.asarray(jax.grad(reference)(x)),
                                       atol=2e-5, err_msg=impl)  # fmt: skip
