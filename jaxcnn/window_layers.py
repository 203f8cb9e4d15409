"""The windowed layer types: convolution and max and average pooling, each a filter or window sliding over
the image with a size f, a stride s and a padding p, and able to show one output pixel's arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from jaxcnn import spec_checks as C
from jaxcnn.layer_base import (
    ACTIVATION,
    MAX_WIDTH,
    USE_BIAS,
    FieldInfo,
    Layer,
    Pass,
    _activation_text,
    _image_input,
    _layers,
    _pair_text,
    _ref,
    _window,
    _window_text,
)
from jaxcnn.spec_checks import IntPair, PaddingPairs, Shape, Where

if TYPE_CHECKING:
    import jax
    import numpy as np


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
