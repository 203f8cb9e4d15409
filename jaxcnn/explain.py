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

What a filter or unit looks for: :func:`filter_picture` (activation maximisation: gradient ascent from noise,
with jitter, blur and an L2 penalty) and :func:`unit_activations` (to rank real images by how much they excite
it). :func:`heatmap` gives any method as one (N, H, W) map; :class:`Explainer` compiles them once per network.

Adebayo et al. 2018 ("Sanity checks for saliency maps") is the test to teach: a method worth trusting gives
different maps once the trained weights are replaced by random ones (:func:`randomize_top_layers`, cascading
from the output down as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxcnn.model import Model, Params, State

METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "gradient": (),
    "smoothgrad": ("samples",),
    "integrated-gradients": ("steps",),
    "grad-cam": ("layer",),
    "occlusion": ("window", "stride"),
}
"""Each method :func:`heatmap` knows (``jaxcnn explain --method``, the explorer's "why" panel) and its options."""
METHODS = tuple(METHOD_OPTIONS)


def predicted_classes(model: Model, params: Params, state: State | None, images: ArrayLike) -> jax.Array:
    """The class each image is predicted to be (the largest logit)."""
    return jnp.argmax(model.apply(params, jnp.asarray(images), state), axis=-1)


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


def gradient(model: Model, params: Params, state: State | None, images: ArrayLike, classes: Any = None) -> jax.Array:
    """d score / d image for each image: the same shape as ``images``."""
    images = jnp.asarray(images)
    return _score_gradient(model, params, state)(images, _classes(model, params, state, images, classes))


def smoothgrad(
    model: Model,
    params: Params,
    state: State | None,
    images: ArrayLike,
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
    images: ArrayLike,
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


def default_method(model: Model) -> str:
    """Grad-CAM where the network has a spatial layer to weigh, else the gradient (a fully connected network)."""
    return "grad-cam" if any(len(layer.output_shape) == 3 for layer in model.spec.layers) else "gradient"


def grad_cam(
    model: Model,
    params: Params,
    state: State | None,
    images: ArrayLike,
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
    images: ArrayLike,
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


def pixel_map(attributions: jax.Array) -> jax.Array:
    """An (N, H, W, C) attribution as one (N, H, W) map: the sum over the channels, sign kept (positive: the
    pixel counts for the class; negative: against it)."""
    return attributions.sum(axis=-1)


def heatmap(
    model: Model,
    params: Params,
    state: State | None,
    images: ArrayLike,
    method: str,
    classes: Any = None,
    *,
    layer: str | None = None,
    key: jax.Array | None = None,
    steps: int = 64,
    samples: int = 25,
    window: int = 4,
    stride: int = 2,
) -> jax.Array:
    """One (N, H, W) map per image by ``method`` (one of :data:`METHODS`): Grad-CAM and occlusion as they are,
    the pixel methods through :func:`pixel_map`. ``layer`` is Grad-CAM's, ``key`` and ``samples`` SmoothGrad's,
    ``steps`` integrated gradients', ``window`` and ``stride`` occlusion's."""
    if method == "gradient":
        return pixel_map(gradient(model, params, state, images, classes))
    if method == "smoothgrad":
        noise_key = jax.random.key(0) if key is None else key
        return pixel_map(smoothgrad(model, params, state, images, classes, key=noise_key, samples=samples))
    if method == "integrated-gradients":
        return pixel_map(integrated_gradients(model, params, state, images, classes, steps=steps))
    if method == "grad-cam":
        return grad_cam(model, params, state, images, classes, layer=layer)
    if method == "occlusion":
        return occlusion(model, params, state, images, classes, window=window, stride=stride)
    raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def _layer_values(model: Model, params: Params, state: State | None, images: jax.Array, layer: str) -> jax.Array:
    """``layer``'s output for ``images``; for the output layer, its logits (before any softmax)."""
    logits, outputs = model.logits_and_outputs(params, images, state)
    return logits if layer == model.spec.output_layer.name else outputs[layer]


def unit_activations(model: Model, params: Params, state: State | None, images: ArrayLike, layer: str) -> jax.Array:
    """How much each image excites each unit of ``layer``: (N, units), the largest value of each channel's map
    (its strongest response anywhere in the image) for a layer with an H x W x C output, the value itself for
    a vector layer (dense units; logits, before the softmax, for the output layer)."""
    values = _layer_values(model, params, state, jnp.asarray(images), layer)
    return values.max(axis=(1, 2)) if values.ndim == 4 else values


def unit_count(model: Model, layer: str) -> int:
    """How many units (channels, or vector entries) ``layer`` has."""
    return int(model.spec.layer(layer).output_shape[-1])


def unit_out_of_range(model: Model, layer: str, unit: int) -> str | None:
    """Why ``unit`` is not a unit of ``layer`` (one line, for any caller's error), or None when it is one."""
    count = unit_count(model, layer)
    if 0 <= unit < count:
        return None
    return f"unit {unit} is outside layer {layer!r}, which has {count}: choose 0 to {count - 1}"


def _blur(images: jax.Array) -> jax.Array:
    """A 3x3 binomial blur of each channel (edges repeated)."""
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    w = images.shape[2]
    rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    return 0.25 * rows[:, :, :w] + 0.5 * rows[:, :, 1 : w + 1] + 0.25 * rows[:, :, 2 : w + 2]


def filter_picture(
    model: Model,
    params: Params,
    state: State | None,
    layer: str,
    unit: Any,
    *,
    key: jax.Array,
    low: Any,
    high: Any,
    steps: int = 256,
    learning_rate: float = 0.05,
    jitter: int = 0,
    blur: float = 0.2,
    l2: float = 1e-3,
) -> jax.Array:
    """Activation maximisation: an input image (H x W x C, in the network's input space, between ``low`` and
    ``high``: the values black and white pixels become) that makes ``unit`` of ``layer`` large, found by
    ``steps`` of Adam from mid-grey with a little noise. The objective is the unit's value (for a layer with
    an H x W x C output, channel ``unit`` at the map's centre, so the picture shows its receptive field) minus
    ``l2`` times the mean square distance from mid-grey. Each step blurs the image by ``blur`` (0 to 1) after,
    so the picture shows a pattern, not pixel noise; ``jitter`` shifts it by up to that many pixels before
    each step (robust patterns for deep units with large receptive fields; off by default, since a shift of
    one pixel is already large for a small network's units)."""
    low = jnp.broadcast_to(jnp.asarray(low, jnp.float32), model.input_shape)
    high = jnp.broadcast_to(jnp.asarray(high, jnp.float32), model.input_shape)
    init_key, jitter_key = jax.random.split(key)
    noise = 0.05 * jax.random.normal(init_key, (1, *model.input_shape))
    grey = (low + high) / 2
    image = grey + noise * (high - low)
    optimizer = optax.scale_by_adam()  # steps of about learning_rate x the input's range, whatever its scale

    def objective(x: jax.Array) -> jax.Array:
        values = _layer_values(model, params, state, x, layer)[0]
        if values.ndim == 3:
            values = values[values.shape[0] // 2, values.shape[1] // 2]
        return -(jnp.take(values, unit) - l2 * jnp.mean(jnp.square(x - grey)))

    def step(carry: tuple[jax.Array, Any], shift: jax.Array) -> tuple[tuple[jax.Array, Any], None]:
        x, opt_state = carry
        moved = jnp.roll(x, shift, axis=(1, 2))
        grads = jnp.roll(jax.grad(objective)(moved), -shift, axis=(1, 2))
        updates, opt_state = optimizer.update(grads, opt_state, x)
        x = x - learning_rate * (high - low) * updates
        x = x + blur * (_blur(x) - x)
        return (jnp.clip(x, low, high), opt_state), None

    shifts = jax.random.randint(jitter_key, (steps, 2), -jitter, jitter + 1)
    (image, _), _ = jax.lax.scan(step, (image, optimizer.init(image)), shifts)
    return image[0]


def randomize_top_layers(
    model: Model, params: Params, count: int, key: jax.Array | int = 0
) -> tuple[Params, list[str]]:
    """``params`` with the top ``count`` layers that have weights re-initialised (from the output down: the
    cascading randomisation of Adebayo et al. 2018), and those layers' names, top first. Batch-norm
    statistics (the state) are left as trained."""
    weighted = [layer.name for layer in model.spec.layers if layer.name in params][::-1]
    if not 0 <= count <= len(weighted):
        raise ValueError(f"randomize {count} layers: {model.spec.name} has {len(weighted)} layers with weights "
                         f"({', '.join(weighted[::-1])}); choose 0 to {len(weighted)}")  # fmt: skip
    fresh = model.init(key)
    chosen = weighted[:count]
    return {name: fresh[name] if name in chosen else value for name, value in params.items()}, chosen


class Explainer:
    """The explanations of one network, compiled once each (the model is closed over; params, state, images and
    classes are arguments): what ``jaxcnn explain`` and the explorer call."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._compiled: dict[tuple[Any, ...], Callable[..., jax.Array]] = {}

    def _jit(self, what: tuple[Any, ...], build: Callable[[], Callable[..., jax.Array]]) -> Callable[..., jax.Array]:
        if what not in self._compiled:
            self._compiled[what] = jax.jit(build())
        return self._compiled[what]

    def heatmap(
        self, params: Params, state: State | None, images: Any, method: str, classes: Any = None, **options: Any
    ) -> np.ndarray:
        """:func:`heatmap` for float input images, compiled once per method and options; options that are not
        the method's (:data:`METHOD_OPTIONS`) are ignored, so one call can carry every method's."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        model = self.model
        options = {name: value for name, value in options.items() if name in METHOD_OPTIONS[method]}
        fixed = tuple(sorted(options.items()))

        def build() -> Callable[..., jax.Array]:
            return lambda p, s, x, c: heatmap(model, p, s, x, method, c, **options)

        images = jnp.asarray(images)
        chosen = self.predicted_classes(params, state, images) if classes is None else classes
        chosen = jnp.broadcast_to(jnp.asarray(chosen, jnp.int32), (images.shape[0],))
        return np.asarray(self._jit(("heatmap", method, fixed), build)(params, state, images, chosen))

    def predicted_classes(self, params: Params, state: State | None, images: Any) -> np.ndarray:
        """:func:`predicted_classes`, compiled once."""
        model = self.model
        compiled = self._jit(("predicted",), lambda: lambda p, s, x: predicted_classes(model, p, s, x))
        return np.asarray(compiled(params, state, jnp.asarray(images)))

    def unit_activations(self, params: Params, state: State | None, images: Any, layer: str) -> np.ndarray:
        """:func:`unit_activations`, compiled once per layer."""
        model = self.model
        compiled = self._jit(("units", layer), lambda: lambda p, s, x: unit_activations(model, p, s, x, layer))
        return np.asarray(compiled(params, state, jnp.asarray(images)))

    def filter_picture(
        self, params: Params, state: State | None, layer: str, unit: int, *, low: Any, high: Any, seed: int = 0,
        **options: Any,
    ) -> np.ndarray:  # fmt: skip
        """:func:`filter_picture`, compiled once per layer and options (the unit is an argument)."""
        problem = unit_out_of_range(self.model, layer, unit)
        if problem:
            raise ValueError(problem)
        model = self.model
        fixed = tuple(sorted(options.items()))

        def build() -> Callable[..., jax.Array]:
            return lambda p, s, u, k, lo, hi: filter_picture(model, p, s, layer, u, key=k, low=lo, high=hi, **options)

        compiled = self._jit(("picture", layer, fixed), build)
        return np.asarray(compiled(params, state, unit, jax.random.key(seed), jnp.asarray(low), jnp.asarray(high)))
