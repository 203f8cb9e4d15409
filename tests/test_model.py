"""Model: init, apply, predict, jit, batch sizes and clear input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.model import InputShapeError, Model

from conftest import SPECS_DIR


@pytest.fixture(scope="module")
def lenet() -> Model:
    return Model.from_file(SPECS_DIR / "lenet_mnist.json")


def test_params_are_a_plain_dict_keyed_by_layer_name(lenet):
    params = lenet.init(jax.random.key(0))
    assert type(params) is dict
    assert list(params) == ["conv1", "conv2", "dense1", "dense2", "dense3"]
    assert set(params["conv1"]) == {"kernel", "bias"}
    assert float(jnp.abs(params["conv1"]["bias"]).sum()) == 0.0
    again = lenet.init(jax.random.key(0))
    assert all(jnp.array_equal(params[k]["kernel"], again[k]["kernel"]) for k in params)
    other = lenet.init(jax.random.key(1))
    assert not jnp.array_equal(params["conv1"]["kernel"], other["conv1"]["kernel"])


def test_init_draws_lecun_normal_kernels_like_flax(lenet):
    params = lenet.init(jax.random.key(3))
    kernel = np.asarray(params["dense1"]["kernel"])  # 400 x 120 weights, fan-in 400
    flax_kernel = np.asarray(jax.nn.initializers.lecun_normal()(jax.random.key(3), (400, 120)))
    assert kernel.dtype == np.float32
    assert abs(kernel.std() / flax_kernel.std() - 1) < 0.03
    assert abs(kernel.std() - (1 / 400) ** 0.5) < 0.002
    bound = 2 * (1 / 400) ** 0.5 / 0.87962566103423978  # truncated at two standard deviations
    assert np.abs(kernel).max() <= bound < np.abs(kernel).max() * 1.02
    assert abs(float(np.mean(np.abs(kernel) > bound / 2)) - float(np.mean(np.abs(flax_kernel) > bound / 2))) < 0.02
    assert np.array_equal(np.asarray(lenet.init(7)["conv1"]["kernel"]), np.asarray(lenet.init(7)["conv1"]["kernel"]))


def test_init_gives_the_same_weights_under_jit_vmap_and_eval_shape(lenet):
    eager = lenet.init(jax.random.key(5))
    jitted = jax.jit(lenet.init)(jax.random.key(5))
    batched = jax.vmap(lenet.init)(jax.random.split(jax.random.key(0), 2))
    shapes = jax.eval_shape(lenet.init, jax.random.key(5))
    for a, b, s in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), jax.tree.leaves(shapes), strict=True):
        np.testing.assert_array_equal(a, b)
        assert (s.shape, s.dtype) == (a.shape, a.dtype)
    first = lenet.init(jax.random.split(jax.random.key(0), 2)[1])
    np.testing.assert_array_equal(batched["conv2"]["kernel"][1], first["conv2"]["kernel"])


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_apply_any_batch_and_jit_agree(lenet, batch):
    params = lenet.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(batch), (batch, 28, 28, 1))
    logits = lenet.apply(params, x)
    assert logits.shape == (batch, 10)
    np.testing.assert_allclose(np.asarray(jax.jit(lenet.apply)(params, x)), np.asarray(logits), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_predict_applies_the_final_softmax(lenet):
    params = lenet.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(5), (4, 28, 28, 1))
    probs = lenet.predict(params, x)
    np.testing.assert_allclose(np.asarray(probs.sum(axis=1)), np.ones(4), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(jax.nn.softmax(lenet.apply(params, x))), rtol=1e-5)
    assert not np.allclose(np.asarray(lenet.apply(params, x).sum(axis=1)), 1.0)


@pytest.mark.slow
def test_intermediates_are_the_layers_outputs(lenet):
    params = lenet.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(6), (2, 28, 28, 1))
    maps = lenet.intermediates(params, x)
    assert list(maps) == [layer.name for layer in lenet.spec.layers]
    assert float(maps["conv1"].min()) >= 0.0  # after relu
    np.testing.assert_allclose(np.asarray(maps["dense3"]), np.asarray(lenet.predict(params, x)), rtol=1e-6)


@pytest.mark.parametrize(
    ("x", "fragment"),
    [
        (jnp.zeros((28, 28, 1)), "(batch, 28, 28, 1); got (28, 28, 1)"),
        (jnp.zeros((2, 32, 32, 1)), "got (2, 32, 32, 1)"),
        (jnp.zeros((2, 28, 28, 3)), "got (2, 28, 28, 3)"),
        (jnp.zeros((2, 28, 28, 1), jnp.uint8), "floating-point input"),
    ],
)
def test_wrong_input_is_a_clear_error_even_under_jit(lenet, x, fragment):
    params = lenet.init(jax.random.key(0))
    with pytest.raises(InputShapeError) as info:
        jax.jit(lenet.apply)(params, x)
    assert fragment in str(info.value)
    assert "lenet-mnist" in str(info.value)


def test_params_of_another_network_are_a_clear_error(lenet):
    other = Model.from_file(SPECS_DIR / "article_lenet.json").init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"params\['conv1'\]\['kernel'\] should have shape \(5, 5, 1, 8\)"):
        lenet.apply(other, jnp.zeros((1, 28, 28, 1)))


def test_light_top_level_import_exposes_model_lazily():
    assert jaxcnn.Model is Model
    with pytest.raises(AttributeError):
        _ = jaxcnn.no_such_thing


def test_activation_names_agree_between_spec_and_layers():
    from jaxcnn import layers
    from jaxcnn.spec import ACTIVATION_NAMES

    assert tuple(layers.ACTIVATIONS) == ACTIVATION_NAMES
