"""A resolved spec -> a ``Model``: pure ``init`` and ``apply`` functions, plus summary rows.

Parameters are a plain dict keyed by layer name (``{"conv1": {"kernel": ..., "bias": ...}}``);
only layers with weights (conv, dense) appear in it. ``apply`` returns logits: a final softmax
in the spec is left to :meth:`Model.predict`, so training can use a numerically stable
softmax cross-entropy on the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu_layers
from jaxcnn import layers as L
from jaxcnn.errors import JaxcnnError
from jaxcnn.spec import AnyLayer, ConvLayer, DenseLayer, NetworkSpec, PoolLayer, Shape, load_spec

Params = dict[str, dict[str, jax.Array]]

TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of a standard normal truncated to [-2, 2], which LeCun-normal divides by."""


class InputShapeError(JaxcnnError, ValueError):
    """An input batch whose shape or dtype does not match the spec's input."""


def param_shapes(layer: AnyLayer) -> dict[str, Shape]:
    """The shapes of one layer's weights: HWIO conv kernels, (in, out) dense kernels, biases."""
    shapes: dict[str, Shape] = {}
    if isinstance(layer, ConvLayer):
        per_group = layer.input_shape[2] // layer.groups
        shapes["kernel"] = (*layer.size, per_group, layer.filters)
        if layer.use_bias:
            shapes["bias"] = (layer.filters,)
    elif isinstance(layer, DenseLayer):
        shapes["kernel"] = (layer.input_shape[0], layer.units)
        if layer.use_bias:
            shapes["bias"] = (layer.units,)
    return shapes


def param_count(layer: AnyLayer) -> int:
    """Number of weights in one layer (a 3x3x3 filter plus its bias is 28)."""
    total = 0
    for shape in param_shapes(layer).values():
        size = 1
        for n in shape:
            size *= n
        total += size
    return total


def flops(layer: AnyLayer) -> int:
    """Analytic FLOPs for one example: 2 x multiply-adds of conv and dense layers, 0 elsewhere."""
    if isinstance(layer, ConvLayer):
        out_h, out_w, filters = layer.output_shape
        macs_per_output = layer.size[0] * layer.size[1] * (layer.input_shape[2] // layer.groups)
        return 2 * out_h * out_w * filters * macs_per_output
    if isinstance(layer, DenseLayer):
        return 2 * layer.input_shape[0] * layer.units
    return 0


def _pair_text(pair: tuple[int, int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def settings_text(layer: AnyLayer) -> str:
    """The layer's settings in the article's words: f (size), s (stride), p (resolved pairs)."""
    parts: list[str] = []
    if isinstance(layer, (ConvLayer, PoolLayer)):
        (top, bottom), (left, right) = layer.padding
        parts += [
            f"f={_pair_text(layer.size)}",
            f"s={_pair_text(layer.stride)}",
            f"p=({top},{bottom}),({left},{right})",
        ]
    if isinstance(layer, ConvLayer):
        if layer.dilation != (1, 1):
            parts.append(f"d={_pair_text(layer.dilation)}")
        if layer.groups != 1:
            parts.append(f"groups={layer.groups}")
    if isinstance(layer, PoolLayer) and layer.type == "avg_pool":
        parts.append(f"count_include_pad={str(layer.count_include_pad).lower()}")
    if isinstance(layer, (ConvLayer, DenseLayer)):
        parts.append(layer.activation)
        if not layer.use_bias:
            parts.append("no bias")
    return " ".join(parts)


@dataclass(frozen=True)
class SummaryRow:
    """One line of the article-style table."""

    index: int
    name: str
    type: str
    input_shape: Shape
    output_shape: Shape
    settings: str
    params: int
    flops: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, shapes as lists."""
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "settings": self.settings,
            "params": self.params,
            "flops": self.flops,
        }


class Model:
    """A network built from a resolved spec: ``init(key)``, ``apply(params, x)``, ``predict``."""

    def __init__(self, spec: NetworkSpec, impl: str = "auto") -> None:
        """``impl`` chooses the layer implementations: see :func:`jaxcnn.layers.conv2d`."""
        if impl not in L.IMPLS:
            raise ValueError(f"impl must be one of {', '.join(L.IMPLS)}, got {impl!r}")
        self.spec = spec
        self.impl = impl

    @classmethod
    def from_file(cls, path: str | Path, impl: str = "auto") -> Model:
        """Load a spec file and build its model (raises ``SpecError`` on a bad spec)."""
        return cls(load_spec(path), impl)

    @property
    def input_shape(self) -> Shape:
        return self.spec.input_shape

    @property
    def output_shape(self) -> Shape:
        return self.spec.output_shape

    def init(self, key: jax.Array | int) -> Params:
        """Fresh parameters: LeCun-normal kernels (Flax's default), zero biases.

        ``key`` is a ``jax.random`` key or an int seed; the weights depend on it alone. They
        are drawn on the host with NumPy, seeded from the key's bits: compiling the same draw
        with ``jax.random`` takes XLA about 8 s on a 2-core CPU for LeNet, NumPy takes a
        millisecond. Under ``jit``, ``vmap`` or ``eval_shape`` the same draw runs as a host
        callback, so the weights are the same however ``init`` is called.
        """
        if isinstance(key, jax.core.Tracer):
            data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
            shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self._draw([0]))
            return jax.pure_callback(
                lambda words: self._draw(np.asarray(words).ravel().tolist()), shapes, data, vmap_method="sequential"
            )
        words = [int(key)] if isinstance(key, int) else np.asarray(jax.random.key_data(key)).ravel().tolist()
        # device_put, not jnp.asarray: in JAX 0.10 the latter compiles a small copy program per shape.
        return jax.device_put(self._draw(words))

    def _draw(self, words: list[int]) -> dict[str, dict[str, np.ndarray]]:
        """The parameters as NumPy arrays, from a seed given as a list of ints."""
        params = {}
        for layer in self.spec.layers:
            shapes = param_shapes(layer)
            if not shapes:
                continue
            rng = np.random.default_rng([*words, layer.index])
            weights = {"kernel": _lecun_normal(rng, shapes["kernel"])}
            if "bias" in shapes:
                weights["bias"] = np.zeros(shapes["bias"], np.float32)
            params[layer.name] = weights
        return params

    def check_input(self, x: Any) -> None:
        """Raise :class:`InputShapeError` unless ``x`` is a float batch of the spec's input shape."""
        shape = tuple(getattr(x, "shape", ()))
        expected = self.spec.input_shape
        if len(shape) != len(expected) + 1 or shape[1:] != expected:
            dims = ", ".join(str(n) for n in expected)
            raise InputShapeError(
                f"{self.spec.name} ({self.spec.source}) takes a batch of shape (batch, {dims}); got {shape}. "
                "A single image needs a batch axis: x[None]"
            )
        dtype = getattr(x, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise InputShapeError(
                f"{self.spec.name} takes floating-point input; got dtype {dtype}. "
                "Scale uint8 images to [0, 1] floats first (x.astype('float32') / 255)"
            )

    def check_params(self, params: Params) -> None:
        """Raise ``ValueError`` naming the layer when ``params`` lack a weight or have the wrong shape."""
        for layer in self.spec.layers:
            for field, shape in param_shapes(layer).items():
                value = params.get(layer.name, {}).get(field) if isinstance(params, dict) else None
                actual = tuple(getattr(value, "shape", ()))
                if value is None or actual != shape:
                    found = "nothing" if value is None else f"shape {actual}"
                    raise ValueError(
                        f"params['{layer.name}']['{field}'] should have shape {shape} for {self.spec.name}; "
                        f"found {found}"
                    )

    def _run(
        self, params: Params, x: jax.Array, *, final_activation: bool, keep: dict[str, jax.Array] | None = None
    ) -> jax.Array:
        self.check_input(x)
        self.check_params(params)
        layers = self.spec.layers
        pooled_with_previous = False
        for layer in layers:
            if pooled_with_previous:  # this max pool ran inside the convolution before it
                pooled_with_previous = False
                continue
            if keep is None and self._pools_in_one_step(layer.index):
                pool = layers[layer.index + 1]
                assert isinstance(layer, ConvLayer) and isinstance(pool, PoolLayer)
                weights = params[layer.name]
                x = L.conv2d(x, weights["kernel"], weights.get("bias"), padding=layer.padding, dilation=layer.dilation,
                             impl=self.impl, pool=pool.size, relu_before_pool=layer.activation == "relu")  # fmt: skip
                pooled_with_previous = True
                continue
            x = _apply_layer(layer, params.get(layer.name, {}), x, self.impl)
            activation = getattr(layer, "activation", "linear")
            if not (layer.index == len(layers) - 1 and activation == "softmax" and not final_activation):
                x = L.activation(activation)(x)
            if keep is not None:
                keep[layer.name] = x
        return x

    def _pools_in_one_step(self, index: int) -> bool:
        """Whether conv layer ``index`` and the tiled max pool after it run as one
        :func:`jaxcnn.cpu_layers.conv_max_pool` (the CPU fast path; see there).

        Its activation must be ReLU or none: the phase form applies ReLU after the maximum, which
        gives the same values (relu(max) = max(relu)).
        """
        layers = self.spec.layers
        if index + 1 >= len(layers) or not L.uses_fast_path(self.impl):
            return False
        conv, pool = layers[index], layers[index + 1]
        return (
            isinstance(conv, ConvLayer)
            and conv.activation in ("relu", "linear")
            and cpu_layers.fuses_with_max_pool(param_shapes(conv)["kernel"], conv.stride, conv.groups)
            and isinstance(pool, PoolLayer)
            and pool.type == "max_pool"
            and cpu_layers.tiles(pool.size, pool.stride, pool.padding)
        )

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """The network's output for a float NHWC batch, without a final softmax (logits)."""
        return self._run(params, x, final_activation=False)

    def predict(self, params: Params, x: jax.Array) -> jax.Array:
        """The network's output with every activation the spec names, the final softmax included."""
        return self._run(params, x, final_activation=True)

    def intermediates(self, params: Params, x: jax.Array) -> dict[str, jax.Array]:
        """Every layer's output (after its activation), keyed by layer name, in order: feature maps."""
        keep: dict[str, jax.Array] = {}
        self._run(params, x, final_activation=True, keep=keep)
        return keep

    def summary(self) -> list[SummaryRow]:
        """One row per layer: shapes, settings, weights and FLOPs per example."""
        return [
            SummaryRow(
                index=layer.index,
                name=layer.name,
                type=layer.type,
                input_shape=layer.input_shape,
                output_shape=layer.output_shape,
                settings=settings_text(layer),
                params=param_count(layer),
                flops=flops(layer),
            )
            for layer in self.spec.layers
        ]

    def param_count(self) -> int:
        """Total number of weights."""
        return sum(param_count(layer) for layer in self.spec.layers)


def _lecun_normal(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Normal with variance 1 / fan_in, truncated at two standard deviations (as Flax and Keras do)."""
    fan_in = math.prod(shape[:-1])  # kernel height x width x input channels, or dense inputs
    z = rng.standard_normal(shape)
    outside = np.abs(z) > 2
    while outside.any():  # redraw the ~5% beyond two standard deviations
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2
    return (z * (math.sqrt(1 / fan_in) / TRUNCATED_NORMAL_STD)).astype(np.float32)


def _apply_layer(layer: AnyLayer, weights: dict[str, jax.Array], x: jax.Array, impl: str) -> jax.Array:
    """One layer's linear part (the activation is applied by the caller)."""
    if isinstance(layer, ConvLayer):
        return L.conv2d(
            x,
            weights["kernel"],
            weights.get("bias"),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            impl=impl,
        )
    if isinstance(layer, PoolLayer):
        if layer.type == "max_pool":
            return L.max_pool(x, layer.size, layer.stride, layer.padding, impl=impl)
        return L.avg_pool(x, layer.size, layer.stride, layer.padding, count_include_pad=bool(layer.count_include_pad))
    if isinstance(layer, DenseLayer):
        return L.dense(x, weights["kernel"], weights.get("bias"))
    return L.flatten(x)
