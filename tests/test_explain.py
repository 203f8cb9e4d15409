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
