"""A resolved spec -> a ``Model``: pure ``init`` and ``apply`` functions, plus summary rows.

Parameters are a plain dict keyed by layer name (``{"conv1": {"kernel": ..., "bias": ...}}``);
only layers with weights (conv, dense, batch_norm) appear in it. State (batch norm's running
statistics) is a second dict of the same form, kept apart from the parameters as Flax and Haiku
do: it is not trained, and it is empty for most networks. ``apply`` returns logits: a final
softmax in the spec is left to :meth:`Model.predict`, so training can use a numerically stable
softmax cross-entropy on the logits. How each layer type computes lives in
:mod:`jaxcnn.layer_types`; this module runs them over the spec's graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu_layers, repeats
from jaxcnn import layers as L
from jaxcnn.errors import JaxcnnError
from jaxcnn.layer_types import Layer, Pass
from jaxcnn.spec import INPUT, ConvLayer, NetworkSpec, PoolLayer, Shape, load_spec

Params = dict[str, dict[str, jax.Array]]
State = dict[str, dict[str, jax.Array]]
"""Per-layer non-trained arrays (batch norm's ``mean`` and ``var``); ``{}`` for stateless networks."""


class InputShapeError(JaxcnnError, ValueError):
    """An input batch whose shape or dtype does not match the spec's input."""


def mirror_views(fn: Any, images: Any) -> jax.Array:
    """``fn`` of a batch of NHWC images and of the same images mirrored left-right, stacked (2, ...): the two
    views test-time augmentation averages (``--tta``), in evaluation, ``predict`` and export alike."""
    return jnp.stack([fn(images), fn(images[:, :, ::-1, :])])


def check_uint8_images(images: Any, where: str, input_shape: Shape, data_shape: Shape | None = None) -> Any:
    """``images`` as a NumPy uint8 batch (N, H, W, C) of ``input_shape`` (or ``data_shape``, the training data's,
    which the run pads or converts), else an InputShapeError: what a trained network's ``predict`` takes,
    whether from the run or from an exported file."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputShapeError(f"predict takes uint8 images (0-255); got dtype {images.dtype}")
    shapes = {tuple(input_shape), *([tuple(data_shape)] if data_shape is not None else [])}
    if images.ndim != 4 or images.shape[1:] not in shapes:
        also = f" (or the training data's {'x'.join(map(str, data_shape))})" if data_shape is not None else ""
        raise InputShapeError(f"{where}: predict takes a batch of uint8 images of shape "
                              f"(N, {', '.join(map(str, input_shape))}){also}; got {images.shape}")  # fmt: skip
    return images


def param_shapes(layer: Layer) -> dict[str, Shape]:
    """The shapes of one layer's weights: HWIO conv kernels, (in, out) dense kernels, biases, scales."""
    return layer.param_shapes()


def param_count(layer: Layer) -> int:
    """Number of weights in one layer (a 3x3x3 filter plus its bias is 28)."""
    return sum(math.prod(shape) for shape in layer.param_shapes().values())


def flops(layer: Layer) -> int:
    """Analytic FLOPs for one example: 2 x multiply-adds of conv and dense layers, 0 elsewhere."""
    return layer.flops()


def settings_text(layer: Layer) -> str:
    """The layer's settings in the article's words: f (size), s (stride), p (resolved pairs)."""
    return layer.settings_text()


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
    inputs: tuple[str, ...] | None = None
    """The layers read, when not just the one before (graph specs); None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, shapes as lists; ``inputs`` only where the layer does not read the one before."""
        extra = {} if self.inputs is None else {"inputs": list(self.inputs)}
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "settings": self.settings,
            "params": self.params,
            "flops": self.flops,
            **extra,
        }


class StateError(JaxcnnError, ValueError):
    """A network with batch-norm state called without its state (or with the wrong one)."""


class Model:
    """A network built from a resolved spec: ``init(key)``, ``apply(params, x)``, ``predict``.

    For networks with state (batch norm): ``init_state()`` gives the running statistics before
    training, ``apply_with_state(params, state, x, training=..., key=...)`` returns the output and
    the new state, and ``apply``/``predict``/``intermediates`` take ``state=`` for evaluation.
    Training with dropout needs a random ``key``.
    """

    def __init__(self, spec: NetworkSpec, impl: str = "auto", scan_repeats: bool = True) -> None:
        """``impl`` chooses the layer implementations: see :func:`jaxcnn.layers.conv2d`.
        ``scan_repeats`` runs interchangeable copies of a repeated block as one ``lax.scan`` in
        training (:mod:`jaxcnn.repeats`: same values, a compile time that grows less with depth)."""
        if impl not in L.IMPLS:
            raise ValueError(f"impl must be one of {', '.join(L.IMPLS)}, got {impl!r}")
        self.spec = spec
        self.impl = impl
        self._output = spec.output_layer.name
        self._readers: dict[str, list[str]] = {}
        for layer in spec.layers:
            for name in layer.inputs:
                self._readers.setdefault(name, []).append(layer.name)
        runs = repeats.find_runs(spec.layers) if scan_repeats else []
        self._runs = {run.template[0].index: run for run in runs}

    @classmethod
    def from_file(cls, path: str | Path, impl: str = "auto", scan_repeats: bool = True) -> Model:
        """Load a spec file and build its model (raises ``SpecError`` on a bad spec)."""
        return cls(load_spec(path), impl, scan_repeats)

    @property
    def input_shape(self) -> Shape:
        return self.spec.input_shape

    @property
    def output_shape(self) -> Shape:
        return self.spec.output_shape

    def init(self, key: jax.Array | int) -> Params:
        """Fresh parameters: LeCun-normal kernels (Flax's default), zero biases, unit batch-norm scales.

        ``key`` is a ``jax.random`` key or an int seed; the weights depend on it alone. They
        are drawn on the host with NumPy, seeded from the key's bits and the layer's index: compiling
        the same draw with ``jax.random`` takes XLA about 8 s on a 2-core CPU for LeNet, NumPy takes a
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
            if layer.param_shapes():
                params[layer.name] = layer.init_params(np.random.default_rng([*words, layer.index]))
        return params

    def init_state(self) -> State:
        """The state before training: running means 0 and variances 1 for each batch norm; ``{}`` if none."""
        return jax.device_put({layer.name: layer.init_state() for layer in self.spec.layers if layer.state_shapes()})

    def init_with_state(self, key: jax.Array | int) -> tuple[Params, State]:
        """``(init(key), init_state())``: everything a new network needs."""
        return self.init(key), self.init_state()

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
        _check_tree(params, "params", {layer.name: layer.param_shapes() for layer in self.spec.layers},
                    self.spec.name, ValueError)  # fmt: skip

    def check_state(self, state: State | None) -> State:
        """The state to use; raises :class:`StateError` when a stateful network has none or the wrong one."""
        if not self.spec.has_state:
            return {}
        if state is None:
            raise StateError(
                f"{self.spec.name} keeps batch-norm statistics, so it needs its state: pass state= "
                "(Model.init_state() for a new network, Run.state for a trained one)"
            )
        _check_tree(state, "state", {layer.name: layer.state_shapes() for layer in self.spec.layers},
                    self.spec.name, StateError)  # fmt: skip
        return state

    def _forward(
        self,
        params: Params,
        state: State | None,
        x: jax.Array,
        *,
        mode: Pass,
        final_activation: bool,
        keep: dict[str, jax.Array] | None = None,
        offsets: dict[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, State]:
        self.check_input(x)
        self.check_params(params)
        state = self.check_state(state)
        layers = self.spec.layers
        output = self._output
        values: dict[str, jax.Array] = {INPUT: x}
        new_state: State = {}
        done: set[str] = set()  # layers already run: a max pool inside the convolution before it, a loop's copies
        for layer in layers:
            if layer.name in done:
                continue
            # Training only: the loop is there for the training step's compile time; evaluation compiles
            # quickly unrolled and measured faster so (docs/performance.md).
            run = self._runs.get(layer.index) if mode.training and keep is None and offsets is None else None
            if run is not None:
                values[run.output] = self._scan_run(run, params, state, values[run.carry_in], mode, new_state)
                done |= run.names
                continue
            inputs = [values[name] for name in layer.inputs]
            if keep is None and offsets is None and self._pools_in_one_step(layer.index):
                pool = layers[layer.index + 1]
                assert isinstance(layer, ConvLayer) and isinstance(pool, PoolLayer)
                weights = params[layer.name]
                values[pool.name] = L.conv2d(inputs[0], weights["kernel"], weights.get("bias"), padding=layer.padding,
                                             dilation=layer.dilation, impl=self.impl, pool=pool.size,
                                             relu_before_pool=layer.activation == "relu")  # fmt: skip
                done.add(pool.name)
                continue
            y, layer_state = layer.apply(params.get(layer.name, {}), state.get(layer.name, {}), inputs, mode)
            if layer_state:
                new_state[layer.name] = layer_state
            activation = layer.activation
            if not (layer.name == output and activation == "softmax" and not final_activation):
                y = L.activation(activation)(y)
            if offsets is not None and layer.name in offsets:
                y = y + offsets[layer.name]
            values[layer.name] = y
            if keep is not None:
                keep[layer.name] = y
        return values[output], new_state

    def _scan_run(
        self, run: repeats.RepeatRun, params: Params, state: State, carry: jax.Array, mode: Pass, new_state: State
    ) -> jax.Array:
        """The copies of ``run`` applied in turn to ``carry`` as one ``lax.scan`` over their stacked
        weights and state; each copy's new state is put into ``new_state`` under its own name."""

        locals_ = run.local_names

        def stacked(tree: Params | State) -> dict[str, Any]:
            """{local name: that layer's leaves of every copy stacked on a new first axis}."""
            return {
                local: jax.tree.map(lambda *leaves: jnp.stack(leaves), *(tree[copy[i].name] for copy in run.copies))
                for i, local in enumerate(locals_)
                if run.template[i].name in tree
            }

        def body(value: jax.Array, weights: tuple[dict[str, Any], dict[str, Any]]) -> tuple[jax.Array, dict[str, Any]]:
            layer_params, layer_state = weights
            local_values = {repeats.CARRY: value}
            states = {}
            for layer, local in zip(run.template, locals_, strict=True):
                inputs = [local_values[name] for name in run.local_inputs(layer)]
                y, layer_new_state = layer.apply(layer_params.get(local, {}), layer_state.get(local, {}), inputs, mode)
                if layer_new_state:
                    states[local] = layer_new_state
                local_values[local] = L.activation(layer.activation)(y)
            return local_values[locals_[-1]], states

        carry, states = jax.lax.scan(body, carry, (stacked(params), stacked(state)))
        for local, stacked_state in states.items():
            i = locals_.index(local)
            for k, copy in enumerate(run.copies):
                new_state[copy[i].name] = jax.tree.map(lambda leaf, k=k: leaf[k], stacked_state)
        return carry

    def _pools_in_one_step(self, index: int) -> bool:
        """Whether conv layer ``index`` and the tiled max pool after it run as one
        :func:`jaxcnn.cpu_layers.conv_max_pool` (the CPU fast path; see there).

        The pool must be the convolution's only reader. Its activation must be ReLU or none: the
        phase form applies ReLU after the maximum, which gives the same values (relu(max) = max(relu)).
        """
        layers = self.spec.layers
        if index + 1 >= len(layers) or not L.uses_fast_path(self.impl):
            return False
        conv, pool = layers[index], layers[index + 1]
        return (
            isinstance(conv, ConvLayer)
            and conv.activation in ("relu", "linear")
            and cpu_layers.fuses_with_max_pool(conv.param_shapes()["kernel"], conv.stride, conv.groups)
            and isinstance(pool, PoolLayer)
            and pool.type == "max_pool"
            and pool.inputs == (conv.name,)
            and self._readers.get(conv.name) == [pool.name]
            and conv.name != self._output
            and cpu_layers.tiles(pool.size, pool.stride, pool.padding)
        )

    def apply_with_state(
        self, params: Params, state: State | None, x: jax.Array, *, training: bool, key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        """The logits and the new state. ``training`` uses batch statistics (and updates the running ones)
        and dropout, which needs ``key`` (each dropout layer folds in its index); evaluation does neither
        and returns the state unchanged."""
        return self._forward(params, state, x, mode=Pass(training, key, self.impl), final_activation=False)

    def apply(self, params: Params, x: jax.Array, state: State | None = None) -> jax.Array:
        """The network's output for a float NHWC batch in evaluation, without a final softmax (logits)."""
        return self._forward(params, state, x, mode=Pass(impl=self.impl), final_activation=False)[0]

    def predict(self, params: Params, x: jax.Array, state: State | None = None) -> jax.Array:
        """The network's output with every activation the spec names, the final softmax included."""
        return self._forward(params, state, x, mode=Pass(impl=self.impl), final_activation=True)[0]

    def intermediates(self, params: Params, x: jax.Array, state: State | None = None) -> dict[str, jax.Array]:
        """Every layer's output (after its activation), keyed by layer name, in order: feature maps."""
        keep: dict[str, jax.Array] = {}
        self._forward(params, state, x, mode=Pass(impl=self.impl), final_activation=True, keep=keep)
        return keep

    def logits_and_outputs(
        self, params: Params, x: jax.Array, state: State | None = None, offsets: dict[str, jax.Array] | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Evaluation logits and every layer's output, with ``offsets[name]`` added to those layers' outputs
        (after their activation). The derivative with respect to an offset, at zero, is the derivative with
        respect to that layer's output: what Grad-CAM weighs feature maps by (:mod:`jaxcnn.explain`)."""
        keep: dict[str, jax.Array] = {}
        logits, _ = self._forward(params, state, x, mode=Pass(impl=self.impl), final_activation=False, keep=keep,
                                  offsets=offsets)  # fmt: skip
        return logits, keep

    def summary(self) -> list[SummaryRow]:
        """One row per layer: shapes, settings, weights and FLOPs per example (and inputs, in graphs)."""
        rows = []
        previous = INPUT
        for layer in self.spec.layers:
            rows.append(
                SummaryRow(
                    index=layer.index,
                    name=layer.name,
                    type=layer.type,
                    input_shape=layer.input_shape,
                    output_shape=layer.output_shape,
                    settings=layer.settings_text(),
                    params=param_count(layer),
                    flops=layer.flops(),
                    inputs=None if layer.inputs == (previous,) else layer.inputs,
                )
            )
            previous = layer.name
        return rows

    def param_count(self) -> int:
        """Total number of weights."""
        return sum(param_count(layer) for layer in self.spec.layers)


def _check_tree(
    tree: Any, what: str, expected: dict[str, dict[str, Shape]], network: str, error: type[Exception]
) -> None:
    """Raise ``error`` naming the first layer and array of ``tree`` that is missing or mis-shaped."""
    for layer_name, shapes in expected.items():
        for field, shape in shapes.items():
            value = tree.get(layer_name, {}).get(field) if isinstance(tree, dict) else None
            actual = tuple(getattr(value, "shape", ()))
            if value is None or actual != shape:
                found = "nothing" if value is None else f"shape {actual}"
                raise error(f"{what}['{layer_name}']['{field}'] should have shape {shape} for {network}; found {found}")
