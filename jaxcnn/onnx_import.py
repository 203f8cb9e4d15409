"""An ONNX network as a jaxcnn spec, its weights and its preprocessing: what ``jaxcnn import`` writes.

ONNX computes in NCHW; jaxcnn in NHWC. Kernels go from OIHW to HWIO, and a dense layer after a flatten of an
NCHW map has its rows permuted from C, H, W order to jaxcnn's H, W, C order (the classic silent wrong answer of
layout conversion). The graph is read node by node, in its (topological) order; each operator of
:data:`OPERATORS` becomes a layer, a field of the layer before it (an activation, a bias) or nothing (Dropout,
Identity), and constant sub-graphs (initializers, Constant, shape arithmetic) are folded. Anything else is
collected, and one error lists every unsupported node, before anything is written.

A network exported by ``jaxcnn export`` comes back as it went out: its uint8 NHWC input and scaling become the
run's preprocessing, and its layers keep their names (qualified block names with ``_`` for ``.``, since an
imported spec is flat).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import JaxcnnError
from jaxcnn.spec import INPUT

MIN_OPSET = 11
"""The oldest opset read: from 11 on, Conv's and the pools' padding and Clip's bounds mean what they mean now."""

OPERATORS: dict[str, tuple[str, str]] = {
    "Conv": ("conv", "explicit pads (asymmetric too) or auto_pad, strides, dilations, group (depthwise included)"),
    "BatchNormalization": ("batch_norm", "evaluation form: scale and bias become weights, mean and var its state"),
    "Relu": ("the activation relu", "of the conv or dense layer before it, or an activation layer"),
    "LeakyRelu": ("leaky_relu", "alpha 0.01 (jax.nn's slope) only"),
    "Sigmoid": ("sigmoid", ""),
    "Tanh": ("tanh", ""),
    "Elu": ("elu", "alpha 1 only"),
    "Clip": ("relu6 (min 0, max 6) or relu (min 0, no max)", "other bounds are refused"),
    "HardSigmoid": ("hard_sigmoid", "alpha 1/6, beta 0.5 (PyTorch's Hardsigmoid) only"),
    "HardSwish": ("hard_swish", ""),
    "MaxPool": ("max_pool", "pads, strides, ceil_mode (as extra bottom/right padding); no dilations"),
    "AveragePool": ("avg_pool", "count_include_pad, ceil_mode (with count_include_pad=0 when it adds padding)"),
    "GlobalAveragePool": ("global_avg_pool", "with the Flatten after it, one layer"),
    "GlobalMaxPool": ("global_max_pool", "with the Flatten after it, one layer"),
    "ReduceMean, ReduceMax": (
        "global_avg_pool, global_max_pool",
        "over the height and width (axes 2 and 3), as torch's exporter writes adaptive_avg_pool2d(x, 1)",
    ),
    "Add": ("add", "of two layers; or the bias of a conv or dense layer without one"),
    "Sum": ("add", "of two or more layers"),
    "Concat": ("concat", "along the channels (axis 1); shape arithmetic is folded"),
    "Flatten": ("flatten", "axis 1; the next dense layer's rows are permuted from C, H, W to H, W, C order"),
    "Reshape": ("flatten", "to (batch, features), as torch's x.view(x.size(0), -1) exports it"),
    "Gemm": ("dense", "transB, alpha and beta folded into the weights; not transA"),
    "MatMul": ("dense", "with a constant right side; an Add of a constant after it is the bias"),
    "Softmax": ("softmax", "on the last layer only"),
    "Dropout": ("nothing", "the identity in evaluation"),
    "Identity": ("nothing", ""),
    "Transpose": ("nothing", "NHWC to NCHW after the input, and NCHW to NHWC before a flatten (jaxcnn export's)"),
    "Cast, Div, Mul, Sub": ("the run's preprocessing", "between a uint8 or NHWC input and the first layer"),
    "Constant, Shape, Gather, Unsqueeze, Squeeze": ("nothing", "folded: constants and shape arithmetic"),
}
"""Each ONNX operator read: what it becomes in the spec, and what is read of it (the Import page's table)."""

ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_swish"}
READ_OPS = {op.strip() for names in OPERATORS for op in names.split(",")}
"""Every op type the reader knows; another is listed as unsupported wherever it stands."""
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Constant")


class OnnxImportError(JaxcnnError):
    """An ONNX file that cannot become a jaxcnn network; the message names the file and every node at fault."""


@dataclass
class Value:
    """An ONNX tensor as the importer knows it.

    ``kind``: ``const`` (``array`` holds it), ``shape`` (shape arithmetic, folded away), ``pre`` (the image
    input on its way through the preprocessing: ``scale`` and ``shift`` per channel, ``nhwc``), ``layer``
    (the output of jaxcnn layer ``layer``: ``shape`` without the batch, in ONNX's layout, ``order`` ``nchw``,
    ``nhwc`` (transposed for a flatten) or, for vectors, ``hwc`` or ``chw`` (flattened from ``chw_shape``)),
    or ``broken`` (after a node that could not be read)."""

    kind: str
    array: Any = None
    layer: str = ""
    shape: tuple[int, ...] = ()
    order: str = ""
    chw_shape: tuple[int, ...] = ()
    scale: Any = None
    shift: Any = None
    nhwc: bool = False


@dataclass
class Imported:
    """A network read from ONNX: the spec (a JSON-ready dict), weights and state by layer name, the
    preprocessing (``mean``/``std`` on the 0-1 scale, or None), and where it came from."""

    spec: dict[str, Any]
    params: dict[str, dict[str, np.ndarray]]
    state: dict[str, dict[str, np.ndarray]]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    uint8_input: bool
    source: str
    opset: int
    producer: str
    notes: list[str] = field(default_factory=list)


def hwc_order(chw_shape: tuple[int, ...]) -> np.ndarray:
    """For each feature of jaxcnn's H, W, C flatten, its index in ONNX's C, H, W flatten."""
    c, h, w = chw_shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def torch_module_path(node: Any) -> str | None:
    """The PyTorch module a node came from, as torch's dynamo exporter records it (``layer1/0/conv1``), or None."""
    import ast

    for prop in getattr(node, "metadata_props", ()):
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [str(s) for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                return None
            return "/".join(scopes[:-1] or scopes[-1:]) or None
    return None


def layer_name(node_name: str, op_type: str, fallback: str) -> str:
    """A valid, readable layer name from an ONNX node's name: torch's ``/layer1/layer1.0/conv1/Conv`` becomes
    ``layer1_0_conv1`` (the op's own part dropped, and parents that the next part repeats), jaxcnn's
    ``stage1.block1.conv1`` becomes ``stage1_block1_conv1``; ``fallback`` when nothing is left."""
    parts = [part for part in node_name.strip("/").split("/") if part]
    if len(parts) > 1 and re.fullmatch(rf"{op_type}(_\d+)?", parts[-1]):
        parts = parts[:-1]
    parts = [part for i, part in enumerate(parts) if i + 1 == len(parts) or not parts[i + 1].startswith(part)]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(parts)).strip("_")
    if not name:
        return fallback
    if not re.match(r"[A-Za-z_]", name):
        name = f"{fallback}_{name}"
    return name[:64]


class GraphReader:
    """Reads one ONNX graph into a spec (see the module's docstring)."""

    def __init__(self, model: Any, source: str, mean: Any, std: Any, scale: float) -> None:
        from onnx import numpy_helper

        self.model, self.graph, self.source = model, model.graph, source
        self.values: dict[str, Value] = {}
        for initializer in self.graph.initializer:
            self.values[initializer.name] = Value("const", numpy_helper.to_array(initializer))
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for output in self.graph.output:
            self.consumers[output.name] = self.consumers.get(output.name, 0) + 1
        self.layers: list[dict[str, Any]] = []
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.names: set[str] = {INPUT}
        self.options = (mean, std, scale)
        self.input_shape: tuple[int, int, int] = (0, 0, 0)
        self.uint8_input = False
        self.preprocess: tuple[np.ndarray, np.ndarray] | None = None
        self.inferred: Any = model
        """The model after ONNX's shape inference (for a Reshape whose target shape is computed)."""

    # ------------------------------------------------------------------ the input

    def read_input(self) -> None:
        from onnx import TensorProto

        initialized = {i.name for i in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in initialized]
        if len(inputs) != 1:
            raise OnnxImportError(f"{self.source}: has {len(inputs)} inputs; a jaxcnn network takes one image batch")
        tensor = inputs[0]
        dims = tensor.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise OnnxImportError(f"{self.source}: input {tensor.name!r} has {len(dims)} axes; an image batch has 4")
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if any(s is None or s < 1 for s in sizes):
            shown = ", ".join(d.dim_param or str(d.dim_value) if (d.dim_param or d.HasField("dim_value")) else "?"
                              for d in dims)  # fmt: skip
            raise OnnxImportError(f"{self.source}: input {tensor.name!r} has a dynamic size ({shown}); jaxcnn needs "
                                  "a fixed image size: export with a fixed height, width and channels")  # fmt: skip
        a, b, c = (int(s) for s in sizes)  # type: ignore[arg-type]
        self.uint8_input = tensor.type.tensor_type.elem_type == TensorProto.UINT8
        to_nchw = self._transposed_to_nchw(tensor.name)
        if self.uint8_input or to_nchw:  # N x H x W x C images (jaxcnn export's uint8; tf2onnx's float)
            if not to_nchw:
                raise OnnxImportError(f"{self.source}: a uint8 input must be N x H x W x C images turned to NCHW")
            self.input_shape = (a, b, c)
            self.values[tensor.name] = Value("pre", scale=np.ones(c), shift=np.zeros(c), nhwc=True)
        else:  # float NCHW, as PyTorch exports
            self.input_shape = (b, c, a)
            self.values[tensor.name] = Value("layer", layer=INPUT, shape=(a, b, c), order="nchw")

    def _transposed_to_nchw(self, name: str) -> bool:
        """Whether the input reaches a Transpose from NHWC to NCHW through casts and scalings only (jaxcnn
        export's uint8 images, tf2onnx's float NHWC input): then it holds N x H x W x C images."""
        reached, changed = {name}, True
        while changed:
            changed = False
            for node in self.graph.node:
                if node.input and node.input[0] in reached:
                    if node.op_type == "Transpose":
                        perm = [int(v) for a in node.attribute if a.name == "perm" for v in a.ints]
                        if perm == [0, 3, 1, 2]:
                            return True
                    elif node.op_type in ("Cast", "Div", "Mul", "Sub", "Add") and node.output[0] not in reached:
                        reached.add(node.output[0])
                        changed = True
        return False

    def _network_input(self, value: Value, node: Any) -> Value:
        """The preprocessing chain ends at the NHWC -> NCHW Transpose: its scale and shift are recorded."""
        self.preprocess = (value.scale, value.shift)
        h, w, c = self.input_shape
        return Value("layer", layer=INPUT, shape=(c, h, w), order="nchw")

    # ------------------------------------------------------------------ helpers

    def const(self, name: str) -> np.ndarray | None:
        value = self.values.get(name)
        return None if value is None or value.kind != "const" else np.asarray(value.array)

    def add_layer(self, raw: dict[str, Any], node: Any, reads: list[Value], shape: tuple[int, ...], order: str,
                  params: dict[str, np.ndarray] | None = None, state: dict[str, np.ndarray] | None = None,
                  **value: Any) -> Value:  # fmt: skip
        """Append a layer named after ``node``, reading ``reads``; ``inputs`` written only where it branches."""
        name = layer_name(torch_module_path(node) or node.name, node.op_type, raw["type"])
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base[:60]}_{k}"
        self.names.add(name)
        sources = [v.layer for v in reads]
        previous = self.layers[-1]["name"] if self.layers else INPUT
        entry = {"type": raw["type"], "name": name, **{k: v for k, v in raw.items() if k != "type"}}
        if sources != [previous]:
            entry["inputs"] = sources
        self.layers.append(entry)
        if params:
            self.params[name] = params
        if state:
            self.state[name] = state
        return Value("layer", layer=name, shape=shape, order=order, **value)

    def last_layer(self, value: Value) -> dict[str, Any] | None:
        """The spec entry of the layer ``value`` comes from, when it is the newest layer (so it can still change)."""
        if value.kind == "layer" and self.layers and self.layers[-1]["name"] == value.layer:
            return self.layers[-1]
        return None

    def rename_last(self, node: Any, fallback: str) -> str:
        """Give the newest layer ``node``'s name (a Flatten after a global pool, an Add that is a bias)."""
        entry = self.layers[-1]
        wanted = layer_name(node.name, node.op_type, fallback)
        if wanted in self.names or wanted == entry["name"]:
            return str(entry["name"])
        self.names.discard(entry["name"])
        self.names.add(wanted)
        for store in (self.params, self.state):
            if entry["name"] in store:
                store[wanted] = store.pop(entry["name"])
        entry["name"] = wanted
        return wanted

    def refuse(self, node: Any, why: str) -> None:
        self.problems.append(f"{node.op_type} node {node.name or '(unnamed)'!r}: {why}")

    # ------------------------------------------------------------------ the nodes

    def read(self) -> None:
        self.read_input()
        for node in self.graph.node:
            inputs = [self.values.get(name, Value("const", None)) if name else Value("const", None)
                      for name in node.input]  # fmt: skip
            weighted = node.op_type in WEIGHTED_OPS and len(node.input) > 1
            if weighted and self.values.get(node.input[1], Value("broken")).kind != "const":
                self.refuse(node, "its weights are computed at run time; jaxcnn needs them as constants (initializers)")
                result: Value | None = Value("broken")
            elif node.op_type not in READ_OPS:
                result = None
            elif any(v.kind == "broken" for v in inputs):
                result = Value("broken")
            else:
                result = self.read_node(node, inputs)
            if result is None:
                self.unsupported.setdefault(node.op_type, []).append(node.name or "(unnamed)")
                result = Value("broken")
            for name in node.output[:1]:
                self.values[name] = result

    def read_node(self, node: Any, inputs: list[Value]) -> Value | None:  # one branch per operator
        from onnx import helper

        op = node.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x = inputs[0] if inputs else Value("const", None)
        if op in ("Identity", "Dropout"):
            return x
        if op == "Constant":
            from onnx import numpy_helper

            if "value" in attrs:
                return Value("const", numpy_helper.to_array(attrs["value"]))
            for key in ("value_float", "value_int", "value_floats", "value_ints"):
                if key in attrs:
                    return Value("const", np.asarray(attrs[key]))
            return None
        if op == "Shape":  # the batch size is unknown here: -2 stands for it
            if x.kind == "const" and x.array is not None:
                return Value("const", np.asarray(np.shape(x.array), np.int64))
            return Value("shape", np.asarray([-2, *x.shape], np.int64) if x.kind == "layer" else None)
        if op in SHAPE_OPS and all(v.kind in ("const", "shape") for v in inputs):
            return self.fold(op, attrs, inputs)
        if x.kind == "pre":
            return self.preprocessing(node, op, attrs, x, inputs)
        if op == "Conv":
            return self.conv(node, attrs, x, inputs)
        if op == "BatchNormalization":
            return self.batch_norm(node, attrs, x, inputs)
        if op in ACTIVATIONS or op in ("LeakyRelu", "Elu", "Clip", "HardSigmoid"):
            name = self.activation_name(node, op, attrs, inputs)
            return None if name is None else self.activation(node, name, x)
        if op in ("MaxPool", "AveragePool"):
            return self.pool(node, op, attrs, x)
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            if x.order != "nchw":
                return None
            kind = "global_avg_pool" if op == "GlobalAveragePool" else "global_max_pool"
            return self.add_layer({"type": kind}, node, [x], (x.shape[0], 1, 1), "pooled")
        if op in ("ReduceMean", "ReduceMax"):
            return self.reduce(node, op, attrs, x)
        if op == "Transpose":
            if x.kind == "layer" and x.order == "nchw" and list(attrs.get("perm", [])) == [0, 2, 3, 1]:
                return Value("layer", layer=x.layer, shape=x.shape, order="nhwc")
            return None
        if op in ("Flatten", "Reshape"):
            return self.flatten(node, op, attrs, x, inputs)
        if op in ("Gemm", "MatMul"):
            return self.dense(node, op, attrs, x, inputs)
        if op in ("Add", "Sum"):
            return self.add(node, op, inputs)
        if op == "Concat":
            return self.concat(node, attrs, inputs)
        if op == "Softmax":
            if x.kind != "layer" or len(x.shape) != 1 or attrs.get("axis", -1) not in (-1, 1):
                return None
            return self.activation(node, "softmax", x)
        return None

    def fold(self, op: str, attrs: dict[str, Any], inputs: list[Value]) -> Value:
        """Constants and shape arithmetic, computed with NumPy (a shape's unknown batch size stays -2); a
        ``shape`` result when a shape went in, an opaque one when something is unknown."""
        arrays = [v.array for v in inputs]
        kind = "shape" if any(v.kind == "shape" for v in inputs) else "const"
        if any(a is None for a in arrays):
            return Value("shape")
        if op == "Cast":
            from onnx import helper

            return Value(kind, np.asarray(arrays[0]).astype(helper.tensor_dtype_to_np_dtype(attrs["to"])))
        if op == "Gather":
            return Value(kind, np.take(arrays[0], arrays[1], axis=attrs.get("axis", 0)))
        if op == "Unsqueeze":
            axes = attrs.get("axes", arrays[1] if len(arrays) > 1 else [0])
            return Value(kind, np.expand_dims(arrays[0], tuple(int(a) for a in np.ravel(axes))))
        if op == "Squeeze":
            axes = attrs.get("axes", arrays[1] if len(arrays) > 1 else None)
            return Value(kind, np.squeeze(arrays[0], None if axes is None else tuple(int(a) for a in np.ravel(axes))))
        if op == "Concat":
            return Value(kind, np.concatenate([np.atleast_1d(a) for a in arrays], axis=attrs.get("axis", 0)))
        return Value("shape")

    def preprocessing(self, node: Any, op: str, attrs: dict[str, Any], x: Value, inputs: list[Value]) -> Value | None:
        """Cast, scaling and the NHWC -> NCHW transpose between the image input and the first layer."""
        if op == "Cast":
            return x
        if op == "Transpose" and list(attrs.get("perm", [])) == [0, 3, 1, 2] and x.nhwc:
            return self._network_input(x, node)
        other = self.const(node.input[1]) if len(node.input) > 1 else None
        channels = self.input_shape[2]
        if other is None or op not in ("Div", "Mul", "Sub", "Add") or other.size not in (1, channels):
            return None
        per_channel = np.broadcast_to(np.asarray(other, np.float64).reshape(-1), (channels,))
        scale, shift = x.scale, x.shift
        if op == "Div":
            scale, shift = scale / per_channel, shift / per_channel
        elif op == "Mul":
            scale, shift = scale * per_channel, shift * per_channel
        elif op == "Sub":
            shift = shift - per_channel
        else:
            shift = shift + per_channel
        return Value("pre", scale=scale, shift=shift, nhwc=x.nhwc)

    def conv(self, node: Any, attrs: dict[str, Any], x: Value, inputs: list[Value]) -> Value | None:
        if x.kind != "layer" or x.order != "nchw":
            return None
        kernel = self.const(node.input[1])
        assert kernel is not None  # read() refused computed weights
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        filters, _, kh, kw = kernel.shape
        _, h, w = x.shape
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        pads = self.pads(node, attrs, (h, w), (kh, kw), strides, dilations)
        if pads is None:
            return Value("broken")
        raw: dict[str, Any] = {"type": "conv", "filters": int(filters), "size": [int(kh), int(kw)],
                               "stride": strides, "padding": pads, "dilation": dilations}  # fmt: skip
        groups = int(attrs.get("group", 1))
        if groups != 1:
            raw["groups"] = groups
        params = {"kernel": np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), np.float32)}  # OIHW -> HWIO
        if bias is None:
            raw["use_bias"] = False
        else:
            params["bias"] = np.asarray(bias, np.float32)
        out_h = (h + pads[0][0] + pads[0][1] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
        out_w = (w + pads[1][0] + pads[1][1] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
        return self.add_layer(raw, node, [x], (int(filters), out_h, out_w), "nchw", params)

    def pads(self, node: Any, attrs: dict[str, Any], size: tuple[int, int], kernel: tuple[int, int],
             strides: list[int], dilations: list[int]) -> list[list[int]] | None:  # fmt: skip
        """``[[top, bottom], [left, right]]`` from explicit pads or ``auto_pad``."""
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            top, left, bottom, right = [*attrs.get("pads", []), 0, 0, 0, 0][:4]
            return [[int(top), int(bottom)], [int(left), int(right)]]
        if auto == "VALID":
            return [[0, 0], [0, 0]]
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            self.refuse(node, f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
            return None
        result = []
        for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, large = total // 2, total - total // 2
            result.append([small, large] if auto == "SAME_UPPER" else [large, small])
        return result

    def batch_norm(self, node: Any, attrs: dict[str, Any], x: Value, inputs: list[Value]) -> Value | None:
        if x.kind != "layer" or x.order not in ("nchw", "hwc", "chw"):
            return None
        if attrs.get("training_mode", 0):
            self.refuse(node, "is in training mode; export the network in evaluation mode (model.eval())")
            return Value("broken")
        parts = [self.const(name) for name in node.input[1:5]]
        if any(p is None for p in parts):
            self.refuse(node, "its scale, bias, mean or variance is computed at run time")
            return Value("broken")
        scale, bias, mean, var = (np.asarray(p, np.float32) for p in parts)
        if x.order == "chw":  # features flattened from C, H, W: jaxcnn holds them in H, W, C order
            order = hwc_order(x.chw_shape)
            scale, bias, mean, var = scale[order], bias[order], mean[order], var[order]
        raw = {"type": "batch_norm", "epsilon": float(attrs.get("epsilon", 1e-5))}
        return self.add_layer(raw, node, [x], x.shape, x.order, {"scale": scale, "bias": bias},
                              {"mean": mean, "var": var}, chw_shape=x.chw_shape)  # fmt: skip

    def activation_name(self, node: Any, op: str, attrs: dict[str, Any], inputs: list[Value]) -> str | None:
        """The spec's name of an activation node, or None (with the reason) when jaxcnn has no such function."""
        if op in ACTIVATIONS:
            return ACTIVATIONS[op]
        if op == "LeakyRelu" and np.isclose(attrs.get("alpha", 0.01), 0.01):
            return "leaky_relu"
        if op == "Elu" and np.isclose(attrs.get("alpha", 1.0), 1.0):
            return "elu"
        if (
            op == "HardSigmoid"
            and np.isclose(attrs.get("alpha", 0.2), 1 / 6)
            and np.isclose(attrs.get("beta", 0.5), 0.5)
        ):
            return "hard_sigmoid"
        if op == "Clip":
            low = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
            high = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
            if low is not None and float(np.ravel(low)[0]) == 0.0:
                if high is None:
                    return "relu"
                if float(np.ravel(high)[0]) == 6.0:
                    return "relu6"
        details = {k: v for k, v in attrs.items() if k in ("alpha", "beta", "min", "max")}
        self.refuse(node, f"jaxcnn has no activation with these settings {details or ''}; supported: relu, "
                    "relu6 (Clip 0..6), leaky_relu (alpha 0.01), elu (alpha 1), hard_sigmoid (alpha 1/6), "
                    "hard_swish, sigmoid, tanh")  # fmt: skip
        return None

    def activation(self, node: Any, name: str, x: Value) -> Value | None:
        """Fold the activation into the conv or dense layer that made ``x`` when nothing else reads it, unless
        the node's name says it is a layer of its own (jaxcnn export's ``LAYER.relu`` after another layer)."""
        if x.kind != "layer" or x.layer == INPUT:
            return None
        entry = self.last_layer(x)
        own = node.name.rsplit(".", 1)[0] if node.name.endswith(f".{name}") else None
        own_name = None if own is None else layer_name(own, "", "act")
        fusable = (
            entry is not None and entry["type"] in ("conv", "dense") and entry.get("activation", "linear") == "linear"
        )
        if fusable and self.consumers.get(node.input[0], 0) == 1 and own_name in (None, x.layer):
            assert entry is not None
            entry["activation"] = name
            return x
        raw = {"type": "activation", "activation": name}
        if own is not None:
            node = type(node)()
            node.name, node.op_type = own, "activation"
        return self.add_layer(raw, node, [x], x.shape, x.order, chw_shape=x.chw_shape)

    def pool(self, node: Any, op: str, attrs: dict[str, Any], x: Value) -> Value | None:
        if x.kind != "layer" or x.order != "nchw":
            return None
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            self.refuse(node, "dilated pooling is not a jaxcnn layer")
            return Value("broken")
        kh, kw = (int(k) for k in attrs["kernel_shape"])
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        c, h, w = x.shape
        pads = self.pads(node, attrs, (h, w), (kh, kw), strides, [1, 1])
        if pads is None:
            return Value("broken")
        extra = [0, 0]
        if attrs.get("ceil_mode", 0):
            for axis, (n, k, s) in enumerate(((h, kh, strides[0]), (w, kw, strides[1]))):
                padded = n + sum(pads[axis])
                out = -(-(padded - k) // s) + 1
                if (out - 1) * s >= n + pads[axis][0]:  # the last window must start inside the image (ONNX, torch)
                    out -= 1
                extra[axis] = max(0, (out - 1) * s + k - padded)
                pads[axis][1] += extra[axis]
        raw: dict[str, Any] = {"type": "max_pool" if op == "MaxPool" else "avg_pool", "size": [kh, kw],
                               "stride": strides, "padding": pads}  # fmt: skip
        if op == "AveragePool":
            include = bool(attrs.get("count_include_pad", 0))
            if include and any(extra):
                self.refuse(node, "ceil_mode with count_include_pad=1 divides by a window clipped to the padded "
                            "image, which no jaxcnn avg_pool does")  # fmt: skip
                return Value("broken")
            if any(p for pair in pads for p in pair):
                raw["count_include_pad"] = include
        out_h = (h + sum(pads[0]) - kh) // strides[0] + 1
        out_w = (w + sum(pads[1]) - kw) // strides[1] + 1
        return self.add_layer(raw, node, [x], (c, out_h, out_w), "nchw")

    def reduce(self, node: Any, op: str, attrs: dict[str, Any], x: Value) -> Value | None:
        """A mean or maximum over the height and width: a global pool (keepdims: its (C, 1, 1) form)."""
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1])
        if (
            x.kind != "layer"
            or x.order != "nchw"
            or axes is None
            or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]
        ):
            return None
        kind = "global_avg_pool" if op == "ReduceMean" else "global_max_pool"
        if attrs.get("keepdims", 1):
            return self.add_layer({"type": kind}, node, [x], (x.shape[0], 1, 1), "pooled")
        return self.add_layer({"type": kind}, node, [x], (x.shape[0],), "hwc")

    def flatten(self, node: Any, op: str, attrs: dict[str, Any], x: Value, inputs: list[Value]) -> Value | None:
        if x.kind != "layer":
            return None
        if op == "Reshape":  # a flatten: to (batch, -1) or (batch, C*H*W), the batch as -2 (computed), 0 or -1
            known = self.values.get(node.input[1])
            target = None if known is None or known.array is None else np.ravel(known.array)
            flat = target is not None and target.size == 2 and target[0] in (-2, -1, 0) and target[1] in (
                -1, int(np.prod(x.shape)))  # fmt: skip
            if (not flat and not (target is None and self.reshape_rank(node) == 2)) or len(x.shape) != 3:
                return None
        elif attrs.get("axis", 1) != 1:
            return None
        if len(x.shape) == 1:
            return x
        c, h, w = x.shape
        if x.order == "pooled":  # a global pool (already a vector here) and its flatten: one layer
            renamable = self.last_layer(x) is not None and self.consumers.get(node.input[0], 0) == 1
            name = self.rename_last(node, "gpool") if renamable else x.layer  # named after the flatten if it can be
            return Value("layer", layer=name, shape=(c,), order="hwc")
        if x.order == "nhwc" or h * w == 1 or c == 1:
            return self.add_layer({"type": "flatten"}, node, [x], (c * h * w,), "hwc")
        return self.add_layer({"type": "flatten"}, node, [x], (c * h * w,), "chw", chw_shape=(c, h, w))

    def reshape_rank(self, node: Any) -> int | None:
        """The rank of a Reshape's output, from ONNX's shape inference."""
        for info in self.inferred.graph.value_info:
            if info.name == node.output[0]:
                return len(info.type.tensor_type.shape.dim)
        return None

    def dense(self, node: Any, op: str, attrs: dict[str, Any], x: Value, inputs: list[Value]) -> Value | None:
        if x.kind != "layer" or len(x.shape) != 1 or x.order not in ("hwc", "chw"):
            return None
        weights = self.const(node.input[1])
        assert weights is not None  # read() refused computed weights
        kernel = np.asarray(weights, np.float64)
        bias = None
        if op == "Gemm":
            if attrs.get("transA", 0):
                self.refuse(node, "transA=1 is not a dense layer")
                return Value("broken")
            if attrs.get("transB", 0):
                kernel = kernel.T
            kernel = kernel * attrs.get("alpha", 1.0)
            c = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if c is not None:
                bias = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (kernel.shape[1],)) * attrs.get(
                    "beta", 1.0
                )
        if kernel.ndim != 2 or kernel.shape[0] != x.shape[0]:
            self.refuse(node, f"its weights {list(weights.shape)} do not take the {x.shape[0]} features before it")
            return Value("broken")
        if x.order == "chw":  # ONNX flattened C, H, W; jaxcnn flattens H, W, C: reorder the rows
            kernel = kernel[hwc_order(x.chw_shape)]
        raw: dict[str, Any] = {"type": "dense", "units": int(kernel.shape[1])}
        params = {"kernel": np.ascontiguousarray(kernel, np.float32)}
        if bias is None:
            raw["use_bias"] = False
        else:
            params["bias"] = np.asarray(bias, np.float32)
        return self.add_layer(raw, node, [x], (int(kernel.shape[1]),), "hwc", params)

    def add(self, node: Any, op: str, inputs: list[Value]) -> Value | None:
        layers = [v for v in inputs if v.kind == "layer"]
        constants = [v for v in inputs if v.kind == "const"]
        if len(layers) == 1 and len(constants) == 1 and op == "Add":  # a bias after a conv or a MatMul
            entry, x = self.last_layer(layers[0]), layers[0]
            bias = np.asarray(constants[0].array, np.float32).reshape(-1)
            wants = x.shape[0]
            read_once = self.consumers.get(node.input[0] if inputs[0].kind == "layer" else node.input[1], 0) == 1
            biasless = entry is not None and entry["type"] in ("conv", "dense") and entry.get("use_bias", True) is False
            if (
                entry is not None
                and biasless
                and entry.get("activation", "linear") == "linear"
                and bias.size == wants
                and read_once
            ):
                del entry["use_bias"]
                self.params[entry["name"]]["bias"] = bias
                return Value("layer", layer=self.rename_last(node, entry["type"]), shape=x.shape, order=x.order)
            return None
        if len(layers) != len(inputs) or len(layers) < 2:
            return None
        if len({(v.shape, v.order, v.chw_shape) for v in layers}) != 1:
            return None
        first = layers[0]
        return self.add_layer({"type": "add"}, node, layers, first.shape, first.order, chw_shape=first.chw_shape)

    def concat(self, node: Any, attrs: dict[str, Any], inputs: list[Value]) -> Value | None:
        if not all(v.kind == "layer" for v in inputs):
            return None
        if attrs.get("axis") not in (1, -len(inputs[0].shape)):  # the channels, or a vector's features
            return None
        orders = {v.order for v in inputs}
        if orders not in ({"nchw"}, {"hwc"}):
            return None
        channels = sum(v.shape[0] for v in inputs)
        return self.add_layer({"type": "concat"}, node, inputs, (channels, *inputs[0].shape[1:]), orders.pop())

    # ------------------------------------------------------------------ the result

    def finish(self, mean: Any, std: Any, scale: float) -> Imported:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            raise OnnxImportError(f"{self.source}: has {len(outputs)} outputs; a jaxcnn network has one")
        if self.unsupported or self.problems:
            lines = [f"{op} x{len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                     for op, names in sorted(self.unsupported.items())]  # fmt: skip
            told = "; ".join(filter(None, ["unsupported operators: " + "; ".join(lines) if lines else "",
                                           "; ".join(self.problems)]))  # fmt: skip
            raise OnnxImportError(f"{self.source}: cannot be imported, nothing was written: {told}. The operators "
                                  "jaxcnn reads are listed in docs/import.md")  # fmt: skip
        result = self.values[outputs[0].name]
        if result.kind != "layer" or result.layer == INPUT or len(result.shape) != 1:
            raise OnnxImportError(f"{self.source}: its output is not a vector of class scores computed by layers")
        if not self.layers or self.layers[-1]["name"] != result.layer:
            raise OnnxImportError(f"{self.source}: its output {outputs[0].name!r} is not its last layer's")
        h, w, c = self.input_shape
        generic = self.graph.name in ("", "main_graph", "torch_jit", "torch-jit-export")  # exporters' defaults
        spec = {"format": "jaxcnn.spec/1", "name": Path(self.source).stem if generic else self.graph.name,
                "description": f"imported from {Path(self.source).name} by jaxcnn import",
                "input": [h, w, c], "layers": self.layers}  # fmt: skip
        # Everything as x = gain * (pixel / 255) + offset per channel; jaxcnn's is x = (pixel / 255 - mean) / std.
        given_mean, given_std = (None if v is None else np.asarray(v, np.float64) for v in (mean, std))
        if self.uint8_input:
            if given_mean is not None or given_std is not None or scale != 1:
                raise OnnxImportError(f"{self.source}: takes uint8 images and scales them itself; --mean, --std "
                                      "and --scale do not apply")  # fmt: skip
            gain, offset = np.full(c, 255.0), np.zeros(c)  # the graph's input is the pixel itself
        else:  # what the user says the network was given: (pixel / 255 * scale - mean) / std
            base_mean = np.zeros(c) if given_mean is None else np.broadcast_to(given_mean, (c,))
            base_std = np.ones(c) if given_std is None else np.broadcast_to(given_std, (c,))
            gain, offset = scale / base_std, -base_mean / base_std
        if self.preprocess is not None:  # then the graph's own scaling before its first layer
            chain_gain, chain_shift = self.preprocess
            gain, offset = chain_gain * gain, chain_gain * offset + chain_shift
        if np.allclose(gain, 1.0, rtol=1e-7) and np.allclose(offset, 0.0, atol=1e-9):
            norm_mean, norm_std = None, None
        else:
            # Written as the shortest decimal of the float32 the network computes with (0.13, not 0.12999999523).
            norm_std = tuple(float(str(np.float32(v))) for v in 1 / gain)
            norm_mean = tuple(float(str(np.float32(v))) for v in -offset / gain)
        producer = f"{self.model.producer_name} {self.model.producer_version}".strip()
        opset = max((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        return Imported(spec, self.params, self.state, norm_mean, norm_std, self.uint8_input, self.source, opset,
                        producer)  # fmt: skip


def read_onnx(path: str | Path, *, mean: Any = None, std: Any = None, scale: float = 1.0) -> Imported:
    """Read an ONNX file as a jaxcnn network, or an :class:`OnnxImportError` that lists every node at fault.

    For a float input, ``mean`` and ``std`` (per channel or one value) say how the network's input was
    normalised, on the scale ``scale`` gives the pixels: 1 (pixels / 255, torchvision's convention) or 255
    (raw pixel values). A uint8 input carries its own scaling."""
    try:
        import onnx
    except ImportError:
        raise OnnxImportError("jaxcnn import needs the onnx package: pip install 'jaxcnn[export]'") from None
    from google.protobuf.message import DecodeError

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such file" if not path.exists() else f"{path}: is not a file")
    try:
        model = onnx.load(str(path))  # with its external data (torch's exporter keeps weights in FILE.data)
        onnx.checker.check_model(model)
    except OSError as err:
        raise OnnxImportError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise OnnxImportError(f"{path}: is not a whole, valid ONNX model ({first}); a truncated or damaged "
                              "file, or another format: export it again") from None  # fmt: skip
    if not model.graph.node:
        raise OnnxImportError(f"{path}: is not an ONNX model with a graph (it has no nodes)")
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    newest = onnx.defs.onnx_opset_version()
    if not opsets or not MIN_OPSET <= max(opsets) <= newest:
        found = max(opsets) if opsets else "none"
        raise OnnxImportError(f"{path}: uses opset {found}; jaxcnn reads opsets {MIN_OPSET} to {newest}. Export "
                              f"with opset_version between them, or convert it (onnx.version_converter)")  # fmt: skip
    reader = GraphReader(model, source, mean, std, scale)
    try:
        reader.inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is a help for Reshape only
        reader.inferred = model
    reader.read()
    return reader.finish(mean, std, scale)
