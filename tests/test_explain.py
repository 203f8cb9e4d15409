"""jaxcnn.explain against references: finite differences, the completeness of integrated gradients,
Grad-CAM worked by hand on a network whose gradient is known, and occlusion as an explicit loop."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import explain
from jaxcnn.model import Model
from jaxcnn.spec import parse_spec

TINY: dict[str, Any] = {"format": "jaxcnn.spec/1", "input": [6, 5, 2],
        "layers": [{"type": "conv", "name": "conv", "filters": 3, "size": 3, "padding": "same", "activation": "tanh"},
                   {"type": "conv", "name": "maps", "filters": 4, "size": 3, "activation": "relu"},
                   {"type": "flatten"}, {"type": "dense", "name": "head", "units": 3}]}  # fmt: skip
GAP: dict[str, Any] = {"format": "jaxcnn.spec/1", "input": [6, 6, 2],
       "layers": [{"type": "conv", "name": "maps", "filters": 4, "size": 3, "activation": "relu"},
                  {"type": "global_avg_pool"}, {"type": "dense", "name": "head", "units": 3}]}  # fmt: skip


def network(spec: dict, seed: int = 0) -> tuple[Model, dict]:
    model = Model(parse_spec(spec), impl="lax")
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), model.init(seed))
    for layer in params.values():  # non-zero biases, so no function is accidentally odd
        if "bias" in layer:
            layer["bias"] = np.linspace(-0.3, 0.4, layer["bias"].size)
    return model, params


def test_the_gradient_equals_central_differences():
    with jax.enable_x64(True):
        model, params = network(TINY)
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 5, 2)))
        grads = np.asarray(explain.gradient(model, params, None, x, classes=[2, 0]))
        eps = 1e-6
        for n, cls in ((0, 2), (1, 0)):
            for index in [(0, 0, 0), (3, 2, 1), (5, 4, 0), (2, 4, 1)]:
                bump = np.zeros(x.shape)
                bump[(n, *index)] = eps
                up, down = (np.asarray(model.apply(params, x + s * bump))[n, cls] for s in (1, -1))
                assert grads[(n, *index)] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_integrated_gradients_add_up_to_the_change_of_score():
    """The midpoint rule's error shrinks as 1/steps^2 on a smooth network (1% at 64 steps is asked) and as
    1/steps where ReLU kinks cross the path (so the ReLU network gets 1024 steps for the same 1%)."""
    smooth = {
        **TINY,
        "layers": [{**TINY["layers"][0]}, {**TINY["layers"][1], "activation": "tanh"}, *TINY["layers"][2:]],
    }
    with jax.enable_x64(True):
        for spec, steps in ((smooth, 64), (TINY, 1024)):
            model, params = network(spec)
            x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6, 5, 2)))
            classes = explain.predicted_classes(model, params, None, x)
            attributions = np.asarray(explain.integrated_gradients(model, params, None, x, steps=steps))
            logits, black = (np.asarray(model.apply(params, v)) for v in (x, jnp.zeros_like(x)))
            change = np.take_along_axis(logits - black, np.asarray(classes)[:, None], 1)[:, 0]
            np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), change, rtol=0.01)

        linear = {"format": "jaxcnn.spec/1", "input": [4, 4, 1],
                  "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]}  # fmt: skip
        model, params = network(linear)
        x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 4, 1)))
        baseline = jnp.full_like(x, 0.3)
        attributions = np.asarray(explain.integrated_gradients(model, params, None, x, [1, 2], baseline=baseline,
                                                               steps=3))  # fmt: skip
        change = np.asarray(model.apply(params, x) - model.apply(params, baseline))[[0, 1], [1, 2]]
        np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), change, rtol=1e-12)


def test_grad_cam_equals_the_hand_computation():
    """After a global average pool and a dense layer, dS/dA_k = W[k, class] / (h w) everywhere, so the
    weights are W[k, class] / (h w) and the map is relu(sum_k W[k, class] A_k / (h w)), then resized."""
    with jax.enable_x64(True):
        model, params = network(GAP)
        x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 2)))
        cam = np.asarray(explain.grad_cam(model, params, None, x, classes=[0, 2]))
        maps = np.asarray(model.intermediates(params, x)["maps"])  # (2, 4, 4, 4)
        kernel = np.asarray(params["head"]["kernel"])
        for n, cls in ((0, 0), (1, 2)):
            weights = kernel[:, cls] / 16
            by_hand = np.maximum((maps[n] * weights).sum(axis=-1), 0)
            resized = np.asarray(jax.image.resize(jnp.asarray(by_hand), (6, 6), method="bilinear"))
            np.testing.assert_allclose(cam[n], resized, rtol=1e-10, atol=1e-12)
        assert explain.last_spatial_layer(model) == "maps"


def test_occlusion_equals_an_explicit_loop_of_predictions():
    with jax.enable_x64(True):
        model, params = network(TINY)
        x = np.random.default_rng(4).normal(size=(2, 6, 5, 2))
        heat = np.asarray(explain.occlusion(model, params, None, jnp.asarray(x), classes=[1, 1], window=3,
                                            stride=2, fill=0.5))  # fmt: skip
        base = np.asarray(model.apply(params, jnp.asarray(x)))[:, 1]
        total, count = np.zeros((2, 6, 5)), np.zeros((6, 5))
        for top in (0, 2, 3):  # every 2 pixels, and the last position at the edge
            for left in (0, 2):
                occluded = x.copy()
                occluded[:, top : top + 3, left : left + 3, :] = 0.5
                drop = base - np.asarray(model.apply(params, jnp.asarray(occluded)))[:, 1]
                total[:, top : top + 3, left : left + 3] += drop[:, None, None]
                count[top : top + 3, left : left + 3] += 1
        np.testing.assert_allclose(heat, total / count, rtol=1e-10)


@pytest.mark.slow
def test_smoothgrad_is_the_gradient_averaged_over_noisy_copies():
    with jax.enable_x64(True):
        model, params = network(TINY)
        x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 6, 5, 2)))
        key = jax.random.key(7)
        smooth = np.asarray(explain.smoothgrad(model, params, None, x, [1], key=key, samples=4, noise=0.1))
        spread = 0.1 * float(x.max() - x.min())
        by_hand = np.mean([np.asarray(explain.gradient(model, params, None, x + spread * jax.random.normal(k, x.shape,
                                                                                                           x.dtype),
                                                        [1])) for k in jax.random.split(key, 4)], axis=0)  # fmt: skip
        np.testing.assert_allclose(smooth, by_hand, rtol=1e-10)
        still = np.asarray(explain.smoothgrad(model, params, None, x, [1], key=key, samples=2, noise=0.0))
        np.testing.assert_allclose(still, np.asarray(explain.gradient(model, params, None, x, [1])), rtol=1e-12)


def test_a_linear_conv_filters_picture_is_its_kernels_sign_over_its_receptive_field():
    """The centre unit of a linear conv is sum(kernel * window) + bias, so with the regularisers off, gradient
    ascent within [low, high] ends at high where the kernel is positive and low where it is negative; outside
    the unit's window the gradient is zero and the start (mid-grey and noise) stays as it was."""
    spec = {"format": "jaxcnn.spec/1", "input": [9, 9, 2],
            "layers": [{"type": "conv", "name": "conv", "filters": 3, "size": 3}]}  # fmt: skip
    model = Model(parse_spec(spec), impl="lax")
    params = model.init(0)
    explainer = explain.Explainer(model)
    picture, start = (explainer.filter_picture(params, None, "conv", 1, low=-1.0, high=2.0, steps=steps, jitter=0,
                                               blur=0.0, l2=0.0) for steps in (300, 0))  # fmt: skip
    kernel = np.asarray(params["conv"]["kernel"])[..., 1]
    centre = picture[3:6, 3:6]  # the 7x7 output's centre (3, 3) reads input rows and columns 3 to 5
    np.testing.assert_array_equal(centre, np.where(kernel > 0, 2.0, -1.0))
    outside = np.ones((9, 9), bool)
    outside[3:6, 3:6] = False
    np.testing.assert_array_equal(picture[outside], start[outside])
    assert np.abs(start - 0.5).max() > 0.05  # the noise is there


def test_a_filters_picture_excites_it_more_than_any_image_of_a_batch():
    """With the default regularisers on: the unit (at the map's centre) responds more to its picture than to
    any of 256 random images."""
    model, params = network({**TINY, "input": [16, 16, 2]})
    explainer = explain.Explainer(model)
    images = np.random.default_rng(6).uniform(0, 1, (256, 16, 16, 2)).astype(np.float32)
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)

    def centre_values(x: np.ndarray, layer: str, unit: int) -> np.ndarray:
        values = np.asarray(model.logits_and_outputs(params, jnp.asarray(x))[1][layer])
        return values[:, values.shape[1] // 2, values.shape[2] // 2, unit] if values.ndim == 4 else values[:, unit]

    for layer, unit in (("maps", 2), ("head", 1)):
        picture = explainer.filter_picture(params, None, layer, unit, low=0.0, high=1.0)
        assert picture.shape == (16, 16, 2) and picture.min() >= 0 and picture.max() <= 1
        assert centre_values(picture[None], layer, unit)[0] > centre_values(images, layer, unit).max()
    with pytest.raises(ValueError, match="unit 4 is outside layer 'maps', which has 4: choose 0 to 3"):
        explainer.filter_picture(params, None, "maps", 4, low=0.0, high=1.0)


def test_unit_activations_are_each_channels_largest_value_or_the_units_value():
    model, params = network(TINY)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(3, 6, 5, 2)))
    maps = model.intermediates(params, x)
    np.testing.assert_allclose(explain.unit_activations(model, params, None, x, "maps"),
                               np.asarray(maps["maps"]).max(axis=(1, 2)), rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(explain.unit_activations(model, params, None, x, "head"),
                               np.asarray(model.apply(params, x)), rtol=1e-6)  # fmt: skip


def test_randomizing_cascades_from_the_top_and_keeps_the_rest():
    model, params = network(TINY)
    for count, want in ((0, []), (1, ["head"]), (2, ["head", "maps"]), (3, ["head", "maps", "conv"])):
        changed, names = explain.randomize_top_layers(model, params, count, key=5)
        assert names == want
        for name in params:
            same = np.array_equal(changed[name]["kernel"], params[name]["kernel"])
            assert same == (name not in want), name
    with pytest.raises(ValueError, match="has 3 layers with weights"):
        explain.randomize_top_layers(model, params, 4)


def test_heatmap_is_each_method_as_one_map_per_image():
    model, params = network(TINY)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(2, 6, 5, 2)))
    explainer = explain.Explainer(model)
    by_channel = np.asarray(explain.gradient(model, params, None, x, [0, 1]))
    np.testing.assert_allclose(explainer.heatmap(params, None, x, "gradient", [0, 1]), by_channel.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(explainer.heatmap(params, None, x, "grad-cam", [0, 1], layer="conv"),
                               explain.grad_cam(model, params, None, x, [0, 1], layer="conv"), rtol=1e-5)  # fmt: skip
    predicted = explain.predicted_classes(model, params, None, x)
    np.testing.assert_allclose(explainer.heatmap(params, None, x, "occlusion"),
                               explain.occlusion(model, params, None, x, predicted), rtol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="unknown method 'guided'"):
        explainer.heatmap(params, None, x, "guided")


PATTERN_SPEC: dict[str, Any] = {"format": "jaxcnn.spec/1", "name": "patterns", "input": [16, 16, 1], "layers": [
    {"type": "conv", "name": "c1", "filters": 8, "size": 3, "padding": "same", "activation": "relu"},
    {"type": "max_pool", "name": "p1", "size": 2},
    {"type": "conv", "name": "c2", "filters": 16, "size": 3, "padding": "same", "activation": "relu"},
    {"type": "global_max_pool", "name": "gmp"},
    {"type": "dense", "name": "out", "units": 4, "activation": "softmax"}]}  # fmt: skip


@pytest.mark.slow
def test_on_a_trained_network_the_maps_find_the_evidence_and_depend_on_the_weights(tmp_path):
    """A network trained here to tell four 5x5 strokes apart on noise (tests.datasets.pattern_images), over 200
    test images: blacking out the 10% most salient pixels by Grad-CAM and by integrated gradients lowers the
    true class's probability more than blacking out 10% at random, and with every layer's weights randomised
    the gradient and Grad-CAM maps no longer rank pixels alike (Spearman below 0.5)."""
    from jaxcnn.config import TrainConfig
    from jaxcnn.data import Dataset
    from jaxcnn.runs import load_run, train_run
    from jaxcnn.saliency_checks import deletion, rank_correlations

    from datasets import PATTERN_NAMES, pattern_images

    (x, y), (tx, ty) = pattern_images(2000, 0), pattern_images(200, 1)
    data = Dataset("patterns", x, y, tx, ty, PATTERN_NAMES, "made in tests")
    train_run(parse_spec(PATTERN_SPEC), data, TrainConfig(epochs=3, batch_size=32, lr=3e-3), tmp_path / "run",
              progress=False, verbose=False)  # fmt: skip
    run = load_run(tmp_path / "run")
    assert (run.predict(tx).argmax(axis=1) == ty).mean() > 0.9
    explainer, images = explain.Explainer(run.model), run.network_input(tx)
    random_params, _ = explain.randomize_top_layers(run.model, run.params, 3, key=1)
    for method in ("grad-cam", "integrated-gradients", "gradient"):
        maps = explainer.heatmap(run.params, run.state, images, method, ty)
        figures = deletion(run, tx, ty, maps, fraction=0.1)
        random_maps = explainer.heatmap(random_params, run.state, images, method, ty)
        correlation = float(rank_correlations(maps, random_maps).mean())
        print(f"{method}: p(true) {figures.before:.3f}, falls by {figures.salient:.3f} with the 10% most salient "
              f"pixels blacked out, by {figures.random:.3f} with 10% at random; Spearman with random weights "
              f"{correlation:.3f}")  # fmt: skip
        if method != "gradient":
            assert figures.salient > figures.random + 0.2
        if method != "integrated-gradients":
            assert correlation < 0.5


@pytest.mark.slow
def test_every_shipped_spec_can_be_explained(spec_path):
    """Every method, and a filter picture, on each shipped network with fresh weights (batch norm in evaluation
    mode with its initial statistics): one finite map per image at the input's size."""
    from jaxcnn.spec import load_spec

    model = Model(load_spec(spec_path))
    params, state = model.init_with_state(0)
    x = np.random.default_rng(9).uniform(0, 1, (2, *model.input_shape)).astype(np.float32)
    explainer = explain.Explainer(model)
    small = model.param_count() < 1_000_000 and len(model.spec.layers) < 30  # the ResNets: two methods
    spatial = explain.default_method(model) == "grad-cam"
    for method in explain.METHODS if small else ("gradient", "grad-cam"):
        if method == "grad-cam" and not spatial:  # a fully connected network
            with pytest.raises(ValueError, match="has no layer with an H x W x C output for Grad-CAM"):
                explainer.heatmap(params, state, x, method)
            continue
        heat = explainer.heatmap(params, state, x, method, steps=4, samples=2)
        assert heat.shape == (2, *model.input_shape[:2]) and np.isfinite(heat).all(), method
    first = model.spec.layers[0].name
    picture = explainer.filter_picture(params, state, first, 0, low=0.0, high=1.0, steps=3)
    assert picture.shape == model.input_shape and np.isfinite(picture).all()
