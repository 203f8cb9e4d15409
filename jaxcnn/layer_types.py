"""The layer registry: each layer type of the spec language, defined once.

A layer type is one frozen dataclass here. Its class attributes say what a spec may write
(``FIELDS``, each with its JSON Schema and help text), its ``resolve`` checks those fields
against the input shapes and computes the output shape, and its methods give the parameter and
state shapes, the initial values, the FLOPs, the settings text of ``jaxcnn summary`` and
``draw``, how it applies, its ONNX form, and for windowed types how one output pixel is computed
(``explain``, shown by ``jaxcnn explore``). :mod:`jaxcnn.spec`, :mod:`jaxcnn.model`, the summary, the diagram
and ``specs/schema.json`` (:mod:`jaxcnn.schema`) are all driven by :data:`LAYER_TYPES`, so adding
a layer type is one new class plus its tests. :func:`register_layer` enters a class in the registry,
for the built-in types below and for a user's own (``jaxcnn.register_layer``).

Importing this module imports neither JAX nor NumPy: ``apply`` imports :mod:`jaxcnn.layers` and the
initialisers import NumPy when first called, so specs load without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from jaxcnn import spec_checks as C
from jaxcnn.layer_base import (
    ACTIVATION,
    INPUTS_FIELD,
    LAYER_TYPES,
    MAX_WIDTH,
    PROVIDERS,
    TRUNCATED_NORMAL_STD,
    USE_BIAS,
    FieldInfo,
    Layer,
    Pass,
    RegistryError,
    _activation_text,
    _image_input,
    _layers,
    _ref,
    allowed_fields,
    lecun_normal,
    register_layer,
    required_fields,
    unregister_layer,
)
from jaxcnn.spec_checks import Shape, Where
from jaxcnn.window_layers import POOL_FIELDS, AvgPoolLayer, ConvLayer, MaxPoolLayer, PoolLayer

if TYPE_CHECKING:
    import jax
    import numpy as np

__all__ = [
    "INPUTS_FIELD", "LAYER_TYPES", "MAX_WIDTH", "POOL_FIELDS", "PROVIDERS", "TRUNCATED_NORMAL_STD",
    "ActivationLayer", "AddLayer", "AvgPoolLayer", "BatchNormLayer", "ConcatLayer", "ConvLayer", "DenseLayer",
    "DropoutLayer", "FieldInfo", "FlattenLayer", "GlobalAvgPoolLayer", "GlobalMaxPoolLayer", "GlobalPoolLayer",
    "Layer", "MaxPoolLayer", "MergeLayer", "Pass", "PoolLayer", "RegistryError", "allowed_fields", "lecun_normal",
    "register_layer", "required_fields", "unregister_layer",
]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class GlobalPoolLayer(Layer):
    """Pooling over the whole height and width: H x W x C -> C (``global_avg_pool``, ``global_max_pool``)."""

    PREFIX = "gpool"
    INPUT_RANKS = (3,)
    FIELDS: ClassVar[dict[str, FieldInfo]] = {}

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shape = _image_input(at, cls.TYPE, common["input_shape"])
        return cls(**common, output_shape=(shape[2],))

    ONNX_OP: ClassVar[str] = ""

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        return getattr(_layers(), self.TYPE)(inputs[0]), {}  # jaxcnn.layers.global_avg_pool or global_max_pool

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        pooled = graph.node(self.ONNX_OP, inputs, f"{self.name}.pool")  # N x C x 1 x 1
        return graph.node("Flatten", [pooled], self.name, axis=1)


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPoolLayer(GlobalPoolLayer):
    TYPE = "global_avg_pool"
    DOC = "the mean of each channel over the whole image: H x W x C -> C"
    ONNX_OP = "GlobalAveragePool"


@dataclass(frozen=True, kw_only=True)
class GlobalMaxPoolLayer(GlobalPoolLayer):
    TYPE = "global_max_pool"
    DOC = "the largest value of each channel over the whole image: H x W x C -> C"
    ONNX_OP = "GlobalMaxPool"


@dataclass(frozen=True, kw_only=True)
class FlattenLayer(Layer):
    """Flattening H x W x C into one vector of H*W*C features."""

    TYPE = "flatten"
    PREFIX = "flatten"
    INPUT_RANKS = (3,)
    DOC = "H x W x C -> one vector of H*W*C features (row-major HWC order)"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {}

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shape = _image_input(at, cls.TYPE, common["input_shape"])
        return cls(**common, output_shape=(shape[0] * shape[1] * shape[2],))

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        return _layers().flatten(inputs[0]), {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        nhwc = graph.node("Transpose", inputs, f"{self.name}.to_nhwc", perm=[0, 2, 3, 1])  # flatten in H, W, C order
        return graph.node("Flatten", [nhwc], self.name, axis=1)


@dataclass(frozen=True, kw_only=True)
class DenseLayer(Layer):
    """A fully connected layer of ``units`` outputs."""

    TYPE = "dense"
    PREFIX = "dense"
    INPUT_RANKS = (1,)
    DOC = "a fully connected layer"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "units": FieldInfo(_ref("width"), "number of outputs", required=True),
        "activation": ACTIVATION,
        "use_bias": USE_BIAS,
    }

    units: int
    activation: str
    use_bias: bool

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shape = common["input_shape"]
        if len(shape) != 1:
            raise at.error(
                f"a dense layer needs a flat input, but its input is {C.shape_text(shape)}; "
                'add {"type": "flatten"} (or a global_avg_pool) before it'
            )
        units = C.int_value(at, raw["units"], "units", 1, MAX_WIDTH)
        return cls(
            **common,
            output_shape=(units,),
            units=units,
            activation=C.activation(at, cls.field_value(raw, "activation"), is_output),
            use_bias=C.bool_value(at, cls.field_value(raw, "use_bias"), "use_bias"),
        )

    def param_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"kernel": (self.input_shape[0], self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def flops(self) -> int:
        return 2 * self.input_shape[0] * self.units

    def settings_text(self) -> str:
        return " ".join(_activation_text(self.activation, self.use_bias))

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        return _layers().dense(inputs[0], weights["kernel"], weights.get("bias")), {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        kernel = graph.constant(f"{self.name}.kernel", weights["kernel"])
        if "bias" not in weights:
            return graph.node("MatMul", [inputs[0], kernel], self.name)
        product = graph.node("MatMul", [inputs[0], kernel], f"{self.name}.matmul")
        return graph.node("Add", [product, graph.constant(f"{self.name}.bias", weights["bias"])], self.name)


@dataclass(frozen=True, kw_only=True)
class ActivationLayer(Layer):
    """A standalone activation (for pre-activation blocks: batch_norm -> relu -> conv)."""

    TYPE = "activation"
    PREFIX = "act"
    DOC = "an activation function on its own"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "activation": FieldInfo(_ref("activation"), "the function: " + ", ".join(C.ACTIVATION_NAMES), True)
    }

    activation: str

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        act = C.activation(at, raw["activation"], is_output)
        return cls(**common, output_shape=common["input_shape"], activation=act)

    def settings_text(self) -> str:
        return self.activation

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        return inputs[0], {}  # the model applies every layer's activation

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        return inputs[0]  # the exporter applies every layer's activation


@dataclass(frozen=True, kw_only=True)
class BatchNormLayer(Layer):
    """Batch normalisation over every axis but the channels (or features).

    Training normalises with the batch's mean and (biased) variance and moves the running
    statistics towards them: ``running = momentum * running + (1 - momentum) * batch``, as Flax
    and Keras do. Evaluation normalises with the running statistics. Statistics are computed
    and kept in float32 whatever the compute dtype.
    """

    TYPE = "batch_norm"
    PREFIX = "bn"
    DOC = "batch normalisation, with running statistics as state"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "momentum": FieldInfo(
            {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.9},
            "running = momentum x running + (1 - momentum) x batch; in [0, 1) (PyTorch's momentum 0.1 is 0.9 here)",
        ),
        "epsilon": FieldInfo(
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1e-5}, "added to the variance"
        ),
        "scale": FieldInfo({"type": "boolean", "default": True}, "learn a per-channel scale (gamma)"),
        "center": FieldInfo({"type": "boolean", "default": True}, "learn a per-channel offset (beta)"),
    }

    momentum: float
    epsilon: float
    scale: bool
    center: bool

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        epsilon = C.number(at, cls.field_value(raw, "epsilon"), "epsilon", 0, 1)
        if epsilon <= 0:
            raise at.error(f"must be greater than 0 (it keeps the division finite), got {epsilon!r}", "epsilon")
        return cls(
            **common,
            output_shape=common["input_shape"],
            momentum=C.number(at, cls.field_value(raw, "momentum"), "momentum", 0, 1, high_open=True),
            epsilon=epsilon,
            scale=C.bool_value(at, cls.field_value(raw, "scale"), "scale"),
            center=C.bool_value(at, cls.field_value(raw, "center"), "center"),
        )

    @property
    def channels(self) -> int:
        return self.input_shape[-1]

    def param_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        if self.scale:
            shapes["scale"] = (self.channels,)
        if self.center:
            shapes["bias"] = (self.channels,)
        return shapes

    def state_shapes(self) -> dict[str, Shape]:
        return {"mean": (self.channels,), "var": (self.channels,)}

    def init_state(self) -> dict[str, np.ndarray]:
        import numpy as np

        return {"mean": np.zeros(self.channels, np.float32), "var": np.ones(self.channels, np.float32)}

    def settings_text(self) -> str:
        parts = [f"momentum={self.momentum:g}", f"eps={self.epsilon:g}"]
        parts += [] if self.scale else ["no scale"]
        parts += [] if self.center else ["no center"]
        return " ".join(parts)

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        layers = _layers()
        x = inputs[0]
        if mode.training:
            mean, var = layers.batch_moments(x)
            m = self.momentum
            new_state = {"mean": m * state["mean"] + (1 - m) * mean, "var": m * state["var"] + (1 - m) * var}
        else:
            mean, var, new_state = state["mean"], state["var"], state
        y = layers.batch_norm(x, mean, var, weights.get("scale"), weights.get("bias"), self.epsilon)
        return y, new_state

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        ones, zeros = [1.0] * self.channels, [0.0] * self.channels  # float32 initializers either way
        operands = [inputs[0]] + [
            graph.constant(f"{self.name}.{key}", value)
            for key, value in (("scale", weights.get("scale", ones)), ("bias", weights.get("bias", zeros)),
                               ("mean", state["mean"]), ("var", state["var"]))
        ]  # fmt: skip
        return graph.node("BatchNormalization", operands, self.name, epsilon=self.epsilon)  # evaluation form


@dataclass(frozen=True, kw_only=True)
class DropoutLayer(Layer):
    """Dropout: in training each value is zeroed with probability ``rate`` and the rest scaled by
    1 / (1 - rate) (inverted dropout), so evaluation is the identity."""

    TYPE = "dropout"
    PREFIX = "dropout"
    DOC = "zeroes values at random in training (rate = probability of dropping)"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "rate": FieldInfo(
            {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "the probability of dropping each value, in [0, 1)",
            required=True,
        )
    }

    rate: float

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        rate = C.number(at, raw["rate"], "rate", 0, 1, high_open=True)
        return cls(**common, output_shape=common["input_shape"], rate=rate)

    def settings_text(self) -> str:
        return f"rate={self.rate:g}"

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        if not mode.training or self.rate == 0:
            return inputs[0], {}
        if mode.key is None:
            raise ValueError(f"dropout layer {self.name!r} needs a random key in training (key=...)")
        import jax

        return _layers().dropout(inputs[0], self.rate, jax.random.fold_in(mode.key, self.index)), {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        return inputs[0]  # the identity in evaluation


@dataclass(frozen=True, kw_only=True)
class MergeLayer(Layer):
    """A layer that reads two or more layers (``add``, ``concat``)."""

    MERGES = True
    FIELDS: ClassVar[dict[str, FieldInfo]] = {}

    def settings_text(self) -> str:
        return self.JOIN.join(self.inputs)

    JOIN: ClassVar[str] = ", "


@dataclass(frozen=True, kw_only=True)
class AddLayer(MergeLayer):
    """The element-wise sum of its inputs (a residual connection); their shapes must be equal."""

    TYPE = "add"
    PREFIX = "add"
    DOC = "the element-wise sum of two or more layers of equal shape (a residual connection)"
    JOIN = " + "

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shapes = common["input_shapes"]
        if any(shape != shapes[0] for shape in shapes):
            raise at.error("needs inputs of equal shape: " + _branches(at, common["inputs"], shapes), "inputs")
        return cls(**common, output_shape=shapes[0])

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total, {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        return graph.node("Sum", inputs, self.name)


@dataclass(frozen=True, kw_only=True)
class ConcatLayer(MergeLayer):
    """Its inputs side by side along the channels (features when flat); other axes must be equal."""

    TYPE = "concat"
    PREFIX = "concat"
    DOC = "two or more layers joined along the channels (heights and widths must be equal)"
    JOIN = " | "

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shapes = common["input_shapes"]
        if any(len(shape) != len(shapes[0]) or shape[:-1] != shapes[0][:-1] for shape in shapes):
            raise at.error(
                "joins along the channels, so the heights and widths must be equal: "
                + _branches(at, common["inputs"], shapes),
                "inputs",
            )
        return cls(**common, output_shape=(*shapes[0][:-1], sum(shape[-1] for shape in shapes)))

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        import jax.numpy as jnp

        return jnp.concatenate(inputs, axis=-1), {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        return graph.node("Concat", inputs, self.name, axis=1)  # channels (NCHW) or features


def _branches(at: Where, names: tuple[str, ...], shapes: tuple[Shape, ...]) -> str:
    """Each input's name, shape and (from the loader) the layer and arithmetic that made that shape."""
    return "; ".join(f"'{n}' gives {C.shape_text(s)}{at.origin(n)}" for n, s in zip(names, shapes, strict=True))


for _builtin in (ConvLayer, MaxPoolLayer, AvgPoolLayer, FlattenLayer, DenseLayer, BatchNormLayer, DropoutLayer,
                 GlobalAvgPoolLayer, GlobalMaxPoolLayer, ActivationLayer, AddLayer, ConcatLayer):  # fmt: skip
    register_layer(_builtin)
