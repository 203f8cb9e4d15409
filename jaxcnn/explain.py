"""Why the network said what it said: saliency maps as pure functions of a model, its weights and state, and
a batch of float NHWC images (the network's input, after preprocessing). No I/O, and plain JAX, so a caller
can compile one with ``jax.jit`` (closing over the model).

Every method explains one class per image (``classes``; by default the predicted one) through its score,
the class's logit before the softmax, as PAIR's ``saliency`` package and Grad-CAM's authors do:

- :func:`gradient`: d score / d input (vanilla gradient);
- :func:`smoothgrad`: the gradient averaged over noisy copies of the image (Smilkov et al. 2017);
- :func:`integrated_gradients`: (x - baseline) times the gradient averaged along the straight path from
  the baseline (black by default) to x, by the midpoint rule; the attributions add up to
  score(x) - score(baseline) (Sundararajan et al. 2017);
- :func:`grad_cam`: the ReLU of a spatial layer's feature maps weighted by the spatial mean of the score's
  gradient, resized to the input (Selvaraju et al. 2017);
- :func:`occlusion`: how much the score drops when a window of the image is set to ``fill``, averaged over
  the windows that cover each pixel (Zeiler and Fergus 2014).

Adebayo et al. 2018 ("Sanity checks for saliency maps") is the test to teach: a method worth trusting gives
different maps once the trained weights are replaced by random ones.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.model import Model, Params, State


def predicted_classes(model: Model, params: Params, state: State | None, images: jax.Array) -> jax.Array:
    """The class each image is predicted to be (the largest logit)."""
    return jnp.argmax(model.apply(params, images, state), axis=-1)


def _classes(model: Model, params: Params, state: State | None, images: jax.Array, classes: Any) -> jax.Array:
    if classes is None:
        return predicted_classes(model, params, state, images)
    return jnp.broadcast_to(jnp.asarray(classes, jnp.int32), (images.shape[0],))


def _score_gradient(model: Model, params: Params, state: State | None) -> Any:
    """(images, classes) -> d score / d images, one image at a time (each image's score depends on it alone)."""

    def total_score(images: jax.Array, classes: jax.Array) -> jax.Array:
        logits = model.apply(params, images, state)
        return jnp.take_along_axis(logits, classes[:, None], axis=1).sum()

    return jax.grad(total_score)


def gradient(model: Model, params: Params, state: State | None, images: jax.Array, classes: Any = None) -> jax.Array:
    """d score / d image for each image: the same shape as ``images``."""
    images = jnp.asarray(images)
    return _score_gradient(model, params, state)(images, _classes(model, params, state, images, classes))


def smoothgrad(
    model: Model,
    params: Params,
    state: State | None,
    images: jax.Array,
    classes: Any = None,
    *,
    key: jax.Array,
    samples: int = 25,
    noise: float = 0.15,
) -> jax.Array:
    """The gradient averaged over ``samples`` copies of each image with Gaussian noise of standard deviation
    ``noise`` times the image's value range (drawn from ``key``)."""
    images = jnp.asarray(images)
    classes = _classes(model, params, state, images, classes)
    spread = noise * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))[:, None, None, None]
    grad = _score_gradient(model, params, state)

    def one(k: jax.Array) -> jax.Array:
        return grad(images + spread * jax.random.normal(k, images.shape, images.dtype), classes)

    return jax.lax.map(one, jax.random.split(key, samples)).mean(axis=0)


def integrated_gradients(
    model: Model,
    params: Params,
    state: State | None,
    images: jax.Array,
    classes: Any = None,
    *,
    baseline: jax.Array | None = None,
    steps: int = 64,
) -> jax.Array:
    """(x - baseline) times the mean gradient at ``steps`` points along the path from the baseline (default
    black: zeros) to x, at the midpoints of equal steps; the sum over an image's attributions approaches
    score(x) - score(baseline), exactly for a network that is linear in its input."""
    images = jnp.asarray(images)
    classes = _classes(model, params, state, images, classes)
    start = jnp.zeros_like(images) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline), images.shape)
    grad = _score_gradient(model, params, state)
    alphas = (jnp.arange(steps, dtype=images.dtype) + 0.5) / steps
    mean_gradient = jax.lax.map(lambda a: grad(start + a * (images - start), classes), alphas).mean(axis=0)
    return (images - start) * mean_gradient


def last_spatial_layer(model: Model) -> str:
    """The name of the last layer whose output is still an image (H x W x C): Grad-CAM's default."""
    spatial = [layer.name for layer in model.spec.layers if len(layer.output_shape) == 3]
    if not spatial:
        raise ValueError(f"{model.spec.name} has no layer with an H x W x C output for Grad-CAM")
    return spatial[-1]


def grad_cam(
    model: Model,
    params: Params,
    state: State | None,
    images: jax.Array,
    classes: Any = None,
    *,
    layer: str | None = None,
) -> jax.Array:
    """Grad-CAM over ``layer`` (default :func:`last_spatial_layer`): relu(sum_k mean(dS/dA_k) A_k), resized
    bilinearly to the images' height and width; shape (N, H, W)."""
    images = jnp.asarray(images)
    name = layer or last_spatial_layer(model)
    shape = model.spec.layer(name).output_shape
    if len(shape) != 3:
        raise ValueError(f"layer {name!r} gives {shape}, not an H x W x C image; Grad-CAM needs a spatial layer")
    classes = _classes(model, params, state, images, classes)

    def score(offset: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits, outputs = model.logits_and_outputs(params, images, state, {name: offset})
        return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), outputs[name]

    zero = jnp.zeros((images.shape[0], *shape), images.dtype)
    grads, maps = jax.grad(score, has_aux=True)(zero)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * maps).sum(axis=-1))
    return jax.image.resize(cam, (images.shape[0], images.shape[1], images.shape[2]), method="bilinear")


def occlusion(
    model: Model,
    params: Params,
    state: State | None,
    images: jax.Array,
    classes: Any = None,
    *,
    window: int = 4,
    stride: int = 2,
    fill: float = 0.0,
) -> jax.Array:
    """score(image) - score(image with a ``window`` x ``window`` square set to ``fill``), for every position of
    the square (every ``stride`` pixels, the last one at the edge), averaged over the positions covering each
    pixel; shape (N, H, W)."""
    images = jnp.asarray(images)
    classes = _classes(model, params, state, images, classes)
    _, h, w, _ = images.shape
    if not 1 <= window <= min(h, w) or stride < 1:
        raise ValueError(f"occlusion window {window} must fit the {h}x{w} images and stride {stride} be 1 or more")
    tops = sorted({*range(0, h - window + 1, stride), h - window})
    lefts = sorted({*range(0, w - window + 1, stride), w - window})
    positions = jnp.asarray([(t, left) for t in tops for left in lefts], jnp.int32)
    rows, cols = jnp.arange(h), jnp.arange(w)

    def masks(position: jax.Array) -> jax.Array:
        inside_rows = (rows >= position[0]) & (rows < position[0] + window)
        inside_cols = (cols >= position[1]) & (cols < position[1] + window)
        return inside_rows[:, None] & inside_cols[None, :]

    def score(batch: jax.Array) -> jax.Array:
        return jnp.take_along_axis(model.apply(params, batch, state), classes[:, None], axis=1)[:, 0]

    base = score(images)

    def drop(position: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = masks(position)
        occluded = jnp.where(mask[None, :, :, None], jnp.asarray(fill, images.dtype), images)
        return (base - score(occluded))[:, None, None] * mask[None], mask

    drops, covers = jax.lax.map(drop, positions)
    return drops.sum(axis=0) / covers.sum(axis=0)[None]
