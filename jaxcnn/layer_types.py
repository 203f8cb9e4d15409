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

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from jaxcnn import spec_checks as C
from jaxcnn.errors import JaxcnnError
from jaxcnn.spec_checks import IntPair, PaddingPairs, Shape, Where

if TYPE_CHECKING:
    import jax
    import numpy as np

MAX_WIDTH = 65536  # filters, units, groups
TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of a standard normal truncated to [-2, 2], which LeCun-normal divides by."""


@dataclass(frozen=True)
class FieldInfo:
    """One field a layer type accepts: its JSON Schema (with any default) and what it means."""

    schema: dict[str, Any]
    doc: str
    required: bool = False


def _ref(name: str, **extra: Any) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", **extra}


INPUTS_FIELD = FieldInfo(
    _ref("inputs"),
    "the layer(s) it reads, by name (\"input\" is the network's or block's input); default: the layer before it",
)


@dataclass(frozen=True)
class Pass:
    """How one forward pass runs: training or evaluation, its random key, and the layer implementations."""

    training: bool = False
    key: Any = None
    impl: str = "auto"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """What every resolved layer has: its position, name, type, inputs and shapes (without batch).

    ``index`` is the layer's place in the expanded network (blocks expanded), ``name`` its
    qualified name (``stage2.block1.conv1`` inside blocks), ``inputs`` the names of the layers it
    reads (``"input"`` for the network's input) and ``input_shapes`` their shapes;
    ``input_shape`` is the first of them.
    """

    TYPE: ClassVar[str] = ""
    """The word a spec's ``type`` names the layer type by."""
    PREFIX: ClassVar[str] = ""
    """The start of the default names of its layers (``conv`` gives ``conv1``, ``conv2``, ...)."""
    DOC: ClassVar[str] = ""
    """What the layer type does, in a line (summary docs, the schema)."""
    FIELDS: ClassVar[dict[str, FieldInfo]] = {}
    """The fields a spec may give it besides ``type``, ``name`` and ``inputs``, each with its schema and default."""
    MERGES: ClassVar[bool] = False
    """Whether the layer reads two or more inputs (add, concat) rather than exactly one."""
    INPUT_RANKS: ClassVar[tuple[int, ...]] = (1, 3)
    """The inputs it takes: 3 for H x W x C images, 1 for flat vectors."""

    index: int
    name: str
    type: str
    input_shape: Shape
    output_shape: Shape
    inputs: tuple[str, ...] = ("input",)
    input_shapes: tuple[Shape, ...] = ()
    activation: str = "linear"
    """The activation the model applies to the layer's output (types with an ``activation`` field set it)."""

    @classmethod
    def field_value(cls, raw: dict[str, Any], name: str) -> Any:
        """The spec's value of field ``name``, or its default as FIELDS states it (the one place it is written)."""
        return raw[name] if name in raw else cls.FIELDS[name].schema["default"]

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        """Check ``raw``'s fields against ``common["input_shapes"]`` and build the resolved layer."""
        raise NotImplementedError

    def param_shapes(self) -> dict[str, Shape]:
        """The shapes of the layer's trainable weights, by name (empty for most types)."""
        return {}

    def state_shapes(self) -> dict[str, Shape]:
        """The shapes of the layer's non-trained state (batch norm's running statistics)."""
        return {}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Initial weights: LeCun-normal kernels (Flax's default), zero biases, unit scales."""
        import numpy as np

        weights = {}
        for name, shape in self.param_shapes().items():
            if name == "kernel":
                weights[name] = lecun_normal(rng, shape)
            elif name == "scale":
                weights[name] = np.ones(shape, np.float32)
            else:
                weights[name] = np.zeros(shape, np.float32)
        return weights

    def init_state(self) -> dict[str, np.ndarray]:
        """The state before training (empty for stateless types)."""
        return {}

    def flops(self) -> int:
        """FLOPs for one example: 2 x multiply-adds (only conv and dense have any)."""
        return 0

    def settings_text(self) -> str:
        """The layer's settings in the article's words, for ``summary`` and ``draw``."""
        return ""

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        """The layer's output (before its activation) and its new state."""
        raise NotImplementedError

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        """Add the layer's evaluation form (before its activation) to an ONNX graph
        (:class:`jaxcnn.export.OnnxGraph`, NCHW inside); returns its output's name."""
        raise NotImplementedError(f"{self.type} layers cannot be exported to ONNX")

    def explain(self, weights: Any, x: np.ndarray, row: int, col: int, channel: int) -> dict[str, Any] | None:
        """How output pixel (row, col, channel) comes from the layer's input ``x`` (H x W x C, one image):
        the window it reads and the arithmetic, JSON-ready, for ``jaxcnn explore``. None where a type
        has no window to show."""
        return None


def _window(
    x: np.ndarray,
    row: int,
    col: int,
    size: IntPair,
    stride: IntPair,
    padding: PaddingPairs,
    dilation: IntPair,
    fill: float,
) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
    """The input window (f x f x C, float64) an output pixel reads; padded taps hold ``fill``. Also the
    input rows and columns of the taps (negative or past the edge: padding) and which taps are inside."""
    import numpy as np

    rows = [row * stride[0] - padding[0][0] + i * dilation[0] for i in range(size[0])]
    cols = [col * stride[1] - padding[1][0] + j * dilation[1] for j in range(size[1])]
    inside = np.array([[0 <= r < x.shape[0] and 0 <= c < x.shape[1] for c in cols] for r in rows])
    window = np.full((size[0], size[1], x.shape[2]), fill, np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if inside[i, j]:
                window[i, j] = x[r, c]
    return window, rows, cols, inside


def lecun_normal(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Normal with variance 1 / fan_in, truncated at two standard deviations (as Flax and Keras do)."""
    import numpy as np

    fan_in = math.prod(shape[:-1])  # kernel height x width x input channels, or dense inputs
    z = rng.standard_normal(shape)
    outside = np.abs(z) > 2
    while outside.any():  # redraw the ~5% beyond two standard deviations
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2
    return (z * (math.sqrt(1 / fan_in) / TRUNCATED_NORMAL_STD)).astype(np.float32)


def _pair_text(pair: IntPair) -> str:
    return f"{pair[0]}x{pair[1]}"


def _window_text(size: IntPair, stride: IntPair, padding: PaddingPairs) -> list[str]:
    (top, bottom), (left, right) = padding
    return [f"f={_pair_text(size)}", f"s={_pair_text(stride)}", f"p=({top},{bottom}),({left},{right})"]


def _image_input(at: Where, kind: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise at.error(
            f"a {kind} layer needs a height x width x channels input, but its input is already flat "
            f"({shape[0]} features); move it before the flatten layer"
        )
    return shape


def _activation_text(activation: str, use_bias: bool | None) -> list[str]:
    return [activation] + (["no bias"] if use_bias is False else [])


def _layers() -> Any:
    from jaxcnn import layers

    return layers


ACTIVATION = FieldInfo(_ref("activation", default="linear"), "applied to the output: " + ", ".join(C.ACTIVATION_NAMES))
USE_BIAS = FieldInfo({"type": "boolean", "default": True}, "add a learned bias (false before a batch_norm)")


@dataclass(frozen=True, kw_only=True)
class ConvLayer(Layer):
    """A convolution: ``filters`` kernels of ``size`` sliding with ``stride`` over padded input."""

    TYPE = "conv"
    PREFIX = "conv"
    INPUT_RANKS = (3,)
    DOC = "a 2-D convolution (cross-correlation) with learned filters"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "filters": FieldInfo(_ref("width"), "number of filters (output channels)", required=True),
        "size": FieldInfo(_ref("pair"), "filter size f: an int or [height, width]", required=True),
        "stride": FieldInfo(_ref("pair", default=1), "step s between window positions"),
        "padding": FieldInfo(_ref("padding", default="valid"), "padding p: valid, same, an int or explicit pairs"),
        "dilation": FieldInfo(_ref("pair", default=1), "spacing between the filter's taps"),
        "groups": FieldInfo(_ref("width", default=1), "split channels into groups (must divide both)"),
        "activation": ACTIVATION,
        "use_bias": USE_BIAS,
    }

    filters: int
    size: IntPair
    stride: IntPair
    padding: PaddingPairs
    dilation: IntPair
    groups: int
    activation: str
    use_bias: bool

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shape = _image_input(at, cls.TYPE, common["input_shape"])
        hw = (shape[0], shape[1])
        size = C.pair(at, raw["size"], "size", 1, C.MAX_WINDOW)
        filters = C.int_value(at, raw["filters"], "filters", 1, MAX_WIDTH)
        stride = C.pair(at, cls.field_value(raw, "stride"), "stride", 1, C.MAX_WINDOW)
        dilation = C.pair(at, cls.field_value(raw, "dilation"), "dilation", 1, C.MAX_WINDOW)
        groups = C.int_value(at, cls.field_value(raw, "groups"), "groups", 1, MAX_WIDTH)
        if shape[2] % groups or filters % groups:
            raise at.error(
                f"groups={groups} must divide both the input channels ({shape[2]}) and the filters ({filters})",
                "groups",
            )
        pads = C.padding(at, cls.field_value(raw, "padding"), size, stride, dilation, hw)
        out_hw = C.window_output(at, hw, size, stride, pads, dilation, "filter")
        return cls(
            **common,
            output_shape=(*out_hw, filters),
            filters=filters,
            size=size,
            stride=stride,
            padding=pads,
            dilation=dilation,
            groups=groups,
            activation=C.activation(at, cls.field_value(raw, "activation"), is_output),
            use_bias=C.bool_value(at, cls.field_value(raw, "use_bias"), "use_bias"),
        )

    def param_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"kernel": (*self.size, self.input_shape[2] // self.groups, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def flops(self) -> int:
        out_h, out_w, filters = self.output_shape
        return 2 * out_h * out_w * filters * self.size[0] * self.size[1] * (self.input_shape[2] // self.groups)

    def settings_text(self) -> str:
        parts = _window_text(self.size, self.stride, self.padding)
        if self.dilation != (1, 1):
            parts.append(f"d={_pair_text(self.dilation)}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        return " ".join(parts + _activation_text(self.activation, self.use_bias))

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        y = _layers().conv2d(inputs[0], weights["kernel"], weights.get("bias"), stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups,
                             impl=mode.impl)  # fmt: skip
        return y, {}

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        kernel = graph.constant(f"{self.name}.kernel", weights["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        operands = [inputs[0], kernel]
        if "bias" in weights:
            operands.append(graph.constant(f"{self.name}.bias", weights["bias"]))
        (top, bottom), (left, right) = self.padding
        window = {"kernel_shape": list(self.size), "strides": list(self.stride), "pads": [top, left, bottom, right]}
        return graph.node("Conv", operands, self.name, dilations=list(self.dilation), group=self.groups, **window)

    def explain(self, weights: Any, x: np.ndarray, row: int, col: int, channel: int) -> dict[str, Any] | None:
        """The window under the filter, the filter, their products, sum, bias and activation."""
        import numpy as np

        per_group = self.input_shape[2] // self.groups
        first = channel // (self.filters // self.groups) * per_group
        window, rows, cols, inside = _window(x[:, :, first : first + per_group], row, col, self.size, self.stride,
                                             self.padding, self.dilation, 0.0)  # fmt: skip
        kernel = np.asarray(weights["kernel"], np.float64)[:, :, :, channel]
        products = window * kernel
        total = float(products.sum())
        bias = float(weights["bias"][channel]) if self.use_bias else 0.0
        act = _layers().activation(self.activation)
        output = float(np.asarray(act(np.float32(total + bias)))) if self.activation != "softmax" else None
        return {"kind": "conv", "rows": rows, "cols": cols, "inside": inside.tolist(),
                "input_channels": list(range(first, first + per_group)), "window": window.tolist(),
                "kernel": kernel.tolist(), "products": products.tolist(), "sum": total, "bias": bias,
                "pre_activation": total + bias, "activation": self.activation, "output": output}  # fmt: skip


POOL_FIELDS = {
    "size": FieldInfo(_ref("pair"), "window size f: an int or [height, width]", required=True),
    "stride": FieldInfo(_ref("pair"), "step s between windows; defaults to the window size"),
    "padding": FieldInfo(_ref("padding", default="valid"), "padding p: valid, same, an int or explicit pairs"),
}


@dataclass(frozen=True, kw_only=True)
class PoolLayer(Layer):
    """Max or average pooling (``type`` is ``max_pool`` or ``avg_pool``)."""

    PREFIX = "pool"
    INPUT_RANKS = (3,)

    size: IntPair
    stride: IntPair
    padding: PaddingPairs
    count_include_pad: bool | None  # None for max pooling

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        shape = _image_input(at, cls.TYPE, common["input_shape"])
        hw = (shape[0], shape[1])
        size = C.pair(at, raw["size"], "size", 1, C.MAX_WINDOW)
        stride = C.pair(at, raw["stride"], "stride", 1, C.MAX_WINDOW) if "stride" in raw else size
        pads = C.padding(at, cls.field_value(raw, "padding"), size, stride, (1, 1), hw)
        count_include_pad = cls._count_include_pad(at, raw, pads)
        out_hw = C.window_output(at, hw, size, stride, pads, (1, 1), "pooling window")
        C.check_windows_see_input(at, hw, size, stride, pads, out_hw)
        return cls(**common, output_shape=(*out_hw, shape[2]), size=size, stride=stride, padding=pads,
                   count_include_pad=count_include_pad)  # fmt: skip

    @classmethod
    def _count_include_pad(cls, at: Where, raw: dict[str, Any], pads: PaddingPairs) -> bool | None:
        return None

    def explain(self, weights: Any, x: np.ndarray, row: int, col: int, channel: int) -> dict[str, Any] | None:
        """The window on the input channel and what pooling keeps of it: the largest value or the mean."""
        import numpy as np

        is_max = self.count_include_pad is None
        fill = -np.inf if is_max else 0.0
        window, rows, cols, inside = _window(x[:, :, channel : channel + 1], row, col, self.size, self.stride,
                                             self.padding, (1, 1), fill)  # fmt: skip
        values = window[:, :, 0]
        result: dict[str, Any] = {"kind": self.TYPE, "rows": rows, "cols": cols, "inside": inside.tolist(),
                                  "input_channels": [channel],
                                  "window": [[float(v) if ok else None for v, ok in zip(vs, oks, strict=True)]
                                             for vs, oks in zip(values, inside, strict=True)]}  # fmt: skip
        if is_max:
            kept = np.unravel_index(int(np.argmax(values)), values.shape)
            result.update(kept=[int(kept[0]), int(kept[1])], output=float(values[kept]))
        else:
            count = values.size if self.count_include_pad else int(inside.sum())
            result.update(sum=float(values.sum()), count=count, output=float(values.sum()) / count)
        return result

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        (top, bottom), (left, right) = self.padding
        window = {"kernel_shape": list(self.size), "strides": list(self.stride), "pads": [top, left, bottom, right]}
        if self.count_include_pad is None:
            return graph.node("MaxPool", inputs, self.name, **window)
        return graph.node("AveragePool", inputs, self.name, count_include_pad=int(self.count_include_pad), **window)

    def settings_text(self) -> str:
        parts = _window_text(self.size, self.stride, self.padding)
        if self.count_include_pad is not None:
            parts.append(f"count_include_pad={str(self.count_include_pad).lower()}")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class MaxPoolLayer(PoolLayer):
    """Max pooling: each output is the largest value in its window (padding counts as -inf)."""

    TYPE = "max_pool"
    DOC = "max pooling: the largest value of each window"
    FIELDS: ClassVar[dict[str, FieldInfo]] = POOL_FIELDS

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        return _layers().max_pool(inputs[0], self.size, self.stride, self.padding, impl=mode.impl), {}


@dataclass(frozen=True, kw_only=True)
class AvgPoolLayer(PoolLayer):
    """Average pooling; ``count_include_pad`` says whether padded pixels count in the average."""

    TYPE = "avg_pool"
    DOC = "average pooling: the mean of each window"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        **POOL_FIELDS,
        "count_include_pad": FieldInfo(
            {"type": "boolean", "description": "Required when the layer is padded."},
            "whether padded pixels count in the average (required when padded)",
        ),
    }

    @classmethod
    def _count_include_pad(cls, at: Where, raw: dict[str, Any], pads: PaddingPairs) -> bool | None:
        if "count_include_pad" in raw:
            return C.bool_value(at, raw["count_include_pad"], "count_include_pad")
        if any(p for pair in pads for p in pair):
            raise at.error(
                "this avg_pool is padded, so say whether padded pixels count in the average: "
                "true divides by the whole window (PyTorch, Flax), false by the pixels inside the image (Keras)",
                "count_include_pad",
            )
        return True

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        y = _layers().avg_pool(inputs[0], self.size, self.stride, self.padding,
                               count_include_pad=bool(self.count_include_pad))  # fmt: skip
        return y, {}


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


LAYER_TYPES: dict[str, type[Layer]] = {}
"""Every layer type a spec may use, by its ``type`` word, in the order they were registered (the docs' order)."""

PROVIDERS: dict[str, str] = {}
"""The module that registered each layer type (``jaxcnn.layer_types`` for the built-in ones)."""

_TYPE_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")

L = TypeVar("L", bound=type[Layer])


class RegistryError(JaxcnnError, TypeError):
    """A layer type that cannot be registered; the message says what it lacks."""


def register_layer(cls: L) -> L:
    """Register a layer type so that specs can use it: ``@jaxcnn.register_layer`` above a frozen, keyword-only
    dataclass that subclasses :class:`Layer` and sets ``TYPE``, ``PREFIX``, ``DOC`` and ``FIELDS`` and
    defines ``resolve`` and ``apply`` (and, as needed, ``param_shapes``, ``state_shapes``, ``flops``,
    ``settings_text``, ``to_onnx``). Loading, validation, the schema, summaries, diagrams, training, the
    explorer and export then know it. Returns the class, so it works as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)) or cls is Layer:
        raise RegistryError(f"register_layer takes a subclass of jaxcnn.layer_types.Layer, got {cls!r}")
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(cls.TYPE, str) or not _TYPE_WORD.fullmatch(cls.TYPE):
        raise RegistryError(f"{where}: TYPE must be a lower-case word (letters, digits, _), got {cls.TYPE!r}")
    known = LAYER_TYPES.get(cls.TYPE)
    if known is not None and f"{known.__module__}.{known.__qualname__}" != where:
        raise RegistryError(f"{where}: the layer type {cls.TYPE!r} is already registered by "
                            f"{known.__module__}.{known.__qualname__}; choose another TYPE")  # fmt: skip
    if not isinstance(cls.PREFIX, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", cls.PREFIX):
        raise RegistryError(f"{where}: PREFIX must be a name (letters, digits, _), got {cls.PREFIX!r}")
    reserved = {"type", "name", "inputs"} & set(cls.FIELDS)
    if reserved or not all(isinstance(info, FieldInfo) for info in cls.FIELDS.values()):
        raise RegistryError(f"{where}: FIELDS maps field names other than type, name and inputs to FieldInfo")
    if cls.resolve.__func__ is Layer.resolve.__func__ or cls.apply is Layer.apply:  # type: ignore[attr-defined]
        raise RegistryError(f"{where}: a layer type defines resolve (check the spec's fields, build the layer) "
                            "and apply (compute its output)")  # fmt: skip
    LAYER_TYPES[cls.TYPE] = cls
    PROVIDERS[cls.TYPE] = cls.__module__
    return cls


def unregister_layer(kind: str) -> None:
    """Forget a registered layer type (for tests that register one of their own)."""
    LAYER_TYPES.pop(kind, None)
    PROVIDERS.pop(kind, None)


for _builtin in (ConvLayer, MaxPoolLayer, AvgPoolLayer, FlattenLayer, DenseLayer, BatchNormLayer, DropoutLayer,
                 GlobalAvgPoolLayer, GlobalMaxPoolLayer, ActivationLayer, AddLayer, ConcatLayer):  # fmt: skip
    register_layer(_builtin)


def allowed_fields(kind: str) -> tuple[str, ...]:
    """The fields a layer of type ``kind`` accepts, in the order error messages list them."""
    return ("type", "name", *LAYER_TYPES[kind].FIELDS, "inputs")


def required_fields(kind: str) -> tuple[str, ...]:
    return tuple(name for name, info in LAYER_TYPES[kind].FIELDS.items() if info.required)
