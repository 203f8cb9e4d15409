"""JSON network specs -> validated, fully resolved, frozen dataclasses.

All checking and all normalisation happen here, once. After :func:`load_spec` returns,
every layer has a name, explicit (height, width) pairs for size, stride and dilation, explicit
((top, bottom), (left, right)) padding, and its input and output shapes computed with the
output-size formula. Nothing downstream re-validates.

Every problem raises :class:`SpecError`, whose message names the file, the layer (its index in
``layers`` and its name), the field, and what is allowed, before anything is traced.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from jaxcnn import geometry as G
from jaxcnn.errors import JaxcnnError

FORMAT = "jaxcnn.spec/1"
"""The versioned format key every spec must carry."""

Shape = tuple[int, ...]
IntPair = tuple[int, int]
PaddingPairs = tuple[IntPair, IntPair]

MAX_INPUT_SIDE = 16384
MAX_CHANNELS = 65536
MAX_WIDTH = 65536  # filters, units, groups
MAX_WINDOW = 1024  # size, stride, dilation, padding

TOP_LEVEL_FIELDS = {
    "format": "the format version, exactly " + repr(FORMAT),
    "name": "a short name for the network (default: the file name)",
    "description": "free text: what the network is and where it comes from",
    "input": "the input shape [height, width, channels]",
    "layers": "the list of layers, first to last",
}
REQUIRED_TOP_LEVEL = ("format", "input", "layers")

LAYER_FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("type", "name", "filters", "size", "stride", "padding", "dilation", "groups", "activation", "use_bias"),
    "max_pool": ("type", "name", "size", "stride", "padding"),
    "avg_pool": ("type", "name", "size", "stride", "padding", "count_include_pad"),
    "flatten": ("type", "name"),
    "dense": ("type", "name", "units", "activation", "use_bias"),
}
"""The closed set of layer types and the fields each accepts."""

REQUIRED_LAYER_FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("filters", "size"),
    "max_pool": ("size",),
    "avg_pool": ("size",),
    "flatten": (),
    "dense": ("units",),
}

ACTIVATION_NAMES = ("linear", "relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softmax")
"""The activations a spec may name; the functions live in ``jaxcnn.layers.ACTIVATIONS``."""

MAX_NESTING = 32
"""How deeply a spec's lists and objects may nest (a layer's padding pairs sit at depth 5)."""

NAME_PREFIX = {"conv": "conv", "max_pool": "pool", "avg_pool": "pool", "flatten": "flatten", "dense": "dense"}
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SpecError(JaxcnnError, ValueError):
    """A spec that cannot be loaded; the message says where, which field, and what is allowed."""

    def __init__(
        self,
        message: str,
        *,
        source: str = "<spec>",
        index: int | None = None,
        name: str | None = None,
        layer_type: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.index = index
        self.name = name
        self.layer_type = layer_type
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = [self.source]
        if self.index is not None:
            layer = f"layers[{self.index}]"
            described = " ".join(part for part in (self.layer_type, repr(self.name) if self.name else None) if part)
            where.append(f"{layer} ({described})" if described else layer)
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return ": ".join([", ".join(where), self.message])


@dataclass(frozen=True, kw_only=True)
class Layer:
    """What every resolved layer has: its position, name, type and shapes (without batch)."""

    index: int
    name: str
    type: str
    input_shape: Shape
    output_shape: Shape


@dataclass(frozen=True, kw_only=True)
class ConvLayer(Layer):
    """A convolution: ``filters`` kernels of ``size`` sliding with ``stride`` over padded input."""

    filters: int
    size: IntPair
    stride: IntPair
    padding: PaddingPairs
    dilation: IntPair
    groups: int
    activation: str
    use_bias: bool


@dataclass(frozen=True, kw_only=True)
class PoolLayer(Layer):
    """Max or average pooling (``type`` is ``max_pool`` or ``avg_pool``)."""

    size: IntPair
    stride: IntPair
    padding: PaddingPairs
    count_include_pad: bool | None  # None for max pooling


@dataclass(frozen=True, kw_only=True)
class FlattenLayer(Layer):
    """Flattening H x W x C into one vector of H*W*C features."""


@dataclass(frozen=True, kw_only=True)
class DenseLayer(Layer):
    """A fully connected layer of ``units`` outputs."""

    units: int
    activation: str
    use_bias: bool


AnyLayer = Union[ConvLayer, PoolLayer, FlattenLayer, DenseLayer]


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """A validated network: input shape, resolved layers, and where it came from."""

    name: str
    description: str
    input_shape: Shape
    layers: tuple[AnyLayer, ...]
    source: str
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The JSON object as written (before defaults and resolution), for recording in runs."""

    @property
    def output_shape(self) -> Shape:
        """Shape of one example's output (without batch)."""
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def final_activation(self) -> str:
        """The last layer's activation ("linear" when it has none)."""
        last = self.layers[-1] if self.layers else None
        return getattr(last, "activation", "linear")


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class _Context:
    """Where the loader is, so every error carries file, layer and field."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.index: int | None = None
        self.name: str | None = None
        self.layer_type: str | None = None

    def error(self, message: str, field: str | None = None) -> SpecError:
        return SpecError(
            message, source=self.source, index=self.index, name=self.name, layer_type=self.layer_type, field=field
        )


def _describe(value: Any) -> str:
    """The value as the user wrote it (JSON), shortened for an error message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    """An integer as JSON Schema sees one: 5 or 5.0, but not 5.5 and not true/false."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _int(ctx: _Context, value: Any, field: str, minimum: int, maximum: int) -> int:
    if not _is_int(value):
        raise ctx.error(f"must be an integer from {minimum} to {maximum}, got {_describe(value)}", field)
    if not minimum <= value <= maximum:
        raise ctx.error(f"must be from {minimum} to {maximum}, got {_describe(value)}", field)
    return int(value)


def _pair(ctx: _Context, value: Any, field: str, minimum: int, maximum: int) -> IntPair:
    """An int or [height, width]."""
    if _is_int(value):
        n = _int(ctx, value, field, minimum, maximum)
        return (n, n)
    if isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
        return (_int(ctx, value[0], field, minimum, maximum), _int(ctx, value[1], field, minimum, maximum))
    raise ctx.error(
        f"must be an integer or a pair [height, width] of integers from {minimum} to {maximum}, got {_describe(value)}",
        field,
    )


def _bool(ctx: _Context, value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(f"must be true or false, got {_describe(value)}", field)
    return value


def _activation(ctx: _Context, value: Any, is_last: bool) -> str:
    names = list(ACTIVATION_NAMES)
    if not isinstance(value, str) or value not in ACTIVATION_NAMES:
        hint = _suggest(value, names) if isinstance(value, str) else ""
        raise ctx.error(f"unknown activation {_describe(value)}; allowed: {', '.join(names)}.{hint}", "activation")
    if value == "softmax" and not is_last:
        raise ctx.error(
            "softmax is allowed only on the last layer, where it turns the network's scores into "
            "class probabilities; use relu (or another activation) here",
            "activation",
        )
    return value


def _integral(value: Any) -> Any:
    """Integral floats (2.0) become ints, inside nested lists too, as JSON Schema treats them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _padding(ctx: _Context, value: Any, size: IntPair, stride: IntPair, dilation: IntPair, hw: IntPair) -> PaddingPairs:
    value = _integral(value)
    if isinstance(value, str) and value not in ("valid", "same"):
        hint = _suggest(value.lower(), ["valid", "same"])
        raise ctx.error(f"must be {G.PADDING_FORMS}; got {_describe(value)}.{hint}", "padding")
    if isinstance(value, (bool, float)):
        raise ctx.error(f"must be {G.PADDING_FORMS}; got {_describe(value)}", "padding")
    try:
        pads = G.resolve_padding(value, size, stride, dilation, hw)
    except ValueError:
        raise ctx.error(f"must be {G.PADDING_FORMS}, all non-negative; got {_describe(value)}", "padding") from None
    if max(max(pair) for pair in pads) > MAX_WINDOW:
        raise ctx.error(f"must be at most {MAX_WINDOW} pixels a side, got {_describe(value)}", "padding")
    return pads


def _shape_text(shape: Shape) -> str:
    return "x".join(str(n) for n in shape)


def _window_output(
    ctx: _Context, hw: IntPair, size: IntPair, stride: IntPair, pads: PaddingPairs, dilation: IntPair, what: str
) -> IntPair:
    """Apply the output-size formula per axis, or explain with its arithmetic why it fails."""
    out = []
    for axis, axis_name in enumerate(("height", "width")):
        n, f, s, d = hw[axis], size[axis], stride[axis], dilation[axis]
        lo, hi = pads[axis]
        o = G.output_size(n, f, s, lo, hi, d)
        if o < 1:
            reach = d * (f - 1) + 1
            dilated = f" (dilation {d} makes it span {reach})" if d > 1 else ""
            raise ctx.error(
                f"a {_shape_text(size)} {what}{dilated} does not fit the {_shape_text(hw)} input: "
                f"along the {axis_name}, "
                f"floor((n + p_lo + p_hi - f) / s) + 1 = floor(({n} + {lo} + {hi} - {reach}) / {s}) + 1 = {o}, "
                "but it must be at least 1. Use a smaller size or more padding",
                "size",
            )
        out.append(o)
    return (out[0], out[1])


def _check_windows_see_input(
    ctx: _Context, hw: IntPair, size: IntPair, stride: IntPair, pads: PaddingPairs, out_hw: IntPair
) -> None:
    """Refuse pooling padding that leaves a window wholly in the padding: max pooling would output -inf
    there, and average pooling without ``count_include_pad`` 0/0. (A convolution may: its output is the bias.)"""
    for axis, axis_name in enumerate(("height", "width")):
        n, f, s, o = hw[axis], size[axis], stride[axis], out_hw[axis]
        lo, hi = pads[axis]
        last_start = (o - 1) * s - lo
        if lo >= f:
            where = f"the first window covers positions {-lo} to {f - 1 - lo}, all before the input's first pixel 0"
        elif last_start >= n:
            where = (
                f"the last window starts at (o - 1) * s - p_lo = ({o} - 1) * {s} - {lo} = {last_start}, "
                f"past the input's last pixel {n - 1}"
            )
        else:
            continue
        raise ctx.error(
            f"along the {axis_name}, padding ({lo}, {hi}) leaves a {f}-pixel pooling window with no input pixel: "
            f"{where}. Each side's padding must be less than the window size {f} (PyTorch allows at most half "
            "of it); use less padding or a larger window",
            "padding",
        )


def _check_keys(
    ctx: _Context, obj: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], what: str
) -> None:
    for key in obj:
        if key not in allowed:
            raise ctx.error(
                f"unknown field {key!r} for {what}; allowed: {', '.join(allowed)}.{_suggest(key, allowed)}", key
            )
    for key in required:
        if key not in obj:
            raise ctx.error(f"missing required field {key!r} for {what}", key)


def _layer_type(ctx: _Context, raw: Any) -> str:
    if not isinstance(raw, dict):
        raise ctx.error(f'each layer must be a JSON object like {{"type": "conv", ...}}, got {_describe(raw)}')
    if "type" not in raw:
        raise ctx.error(f"missing required field 'type'; allowed types: {', '.join(LAYER_FIELDS)}", "type")
    kind = raw["type"]
    if not isinstance(kind, str) or kind not in LAYER_FIELDS:
        hint = _suggest(kind, tuple(LAYER_FIELDS)) if isinstance(kind, str) else ""
        raise ctx.error(f"unknown layer type {_describe(kind)}; allowed: {', '.join(LAYER_FIELDS)}.{hint}", "type")
    return kind


def _resolve_layer(
    ctx: _Context, raw: dict[str, Any], index: int, name: str, kind: str, shape: Shape, is_last: bool
) -> AnyLayer:
    """Validate one layer's fields against its input shape and compute its output shape."""
    _check_keys(ctx, raw, LAYER_FIELDS[kind], REQUIRED_LAYER_FIELDS[kind], f"a {kind} layer")
    common: dict[str, Any] = {"index": index, "name": name, "type": kind, "input_shape": shape}
    if kind == "dense":
        if len(shape) != 1:
            raise ctx.error(
                f"a dense layer needs a flat input, but its input is {_shape_text(shape)}; "
                'add {"type": "flatten"} before it'
            )
        units = _int(ctx, raw["units"], "units", 1, MAX_WIDTH)
        return DenseLayer(
            **common,
            output_shape=(units,),
            units=units,
            activation=_activation(ctx, raw.get("activation", "linear"), is_last),
            use_bias=_bool(ctx, raw.get("use_bias", True), "use_bias"),
        )
    if len(shape) != 3:
        raise ctx.error(
            f"a {kind} layer needs a height x width x channels input, but its input is already flat "
            f"({shape[0]} features); move it before the flatten layer"
        )
    if kind == "flatten":
        return FlattenLayer(**common, output_shape=(shape[0] * shape[1] * shape[2],))
    hw = (shape[0], shape[1])
    size = _pair(ctx, raw["size"], "size", 1, MAX_WINDOW)
    if kind == "conv":
        filters = _int(ctx, raw["filters"], "filters", 1, MAX_WIDTH)
        stride = _pair(ctx, raw.get("stride", 1), "stride", 1, MAX_WINDOW)
        dilation = _pair(ctx, raw.get("dilation", 1), "dilation", 1, MAX_WINDOW)
        groups = _int(ctx, raw.get("groups", 1), "groups", 1, MAX_WIDTH)
        if shape[2] % groups or filters % groups:
            raise ctx.error(
                f"groups={groups} must divide both the input channels ({shape[2]}) and the filters ({filters})",
                "groups",
            )
        pads = _padding(ctx, raw.get("padding", "valid"), size, stride, dilation, hw)
        out_hw = _window_output(ctx, hw, size, stride, pads, dilation, "filter")
        return ConvLayer(
            **common,
            output_shape=(*out_hw, filters),
            filters=filters,
            size=size,
            stride=stride,
            padding=pads,
            dilation=dilation,
            groups=groups,
            activation=_activation(ctx, raw.get("activation", "linear"), is_last),
            use_bias=_bool(ctx, raw.get("use_bias", True), "use_bias"),
        )
    stride = _pair(ctx, raw["stride"], "stride", 1, MAX_WINDOW) if "stride" in raw else size
    pads = _padding(ctx, raw.get("padding", "valid"), size, stride, (1, 1), hw)
    count_include_pad: bool | None = None
    if kind == "avg_pool":
        if "count_include_pad" in raw:
            count_include_pad = _bool(ctx, raw["count_include_pad"], "count_include_pad")
        elif any(p for pair in pads for p in pair):
            raise ctx.error(
                "this avg_pool is padded, so say whether padded pixels count in the average: "
                "true divides by the whole window (PyTorch, Flax), false by the pixels inside the image (Keras)",
                "count_include_pad",
            )
        else:
            count_include_pad = True
    out_hw = _window_output(ctx, hw, size, stride, pads, (1, 1), "pooling window")
    _check_windows_see_input(ctx, hw, size, stride, pads, out_hw)
    return PoolLayer(
        **common,
        output_shape=(*out_hw, shape[2]),
        size=size,
        stride=stride,
        padding=pads,
        count_include_pad=count_include_pad,
    )


def _input_shape(ctx: _Context, value: Any) -> Shape:
    if not (isinstance(value, list) and len(value) == 3 and all(_is_int(v) for v in value)):
        raise ctx.error(
            f"must be [height, width, channels], three integers (for example [28, 28, 1]), got {_describe(value)}",
            "input",
        )
    height = _int(ctx, value[0], "input", 1, MAX_INPUT_SIDE)
    width = _int(ctx, value[1], "input", 1, MAX_INPUT_SIDE)
    channels = _int(ctx, value[2], "input", 1, MAX_CHANNELS)
    return (height, width, channels)


def parse_spec(data: Any, source: str = "<spec>") -> NetworkSpec:
    """Validate and resolve an already-parsed JSON value (a dict) into a :class:`NetworkSpec`."""
    ctx = _Context(source)
    depth = _nesting_depth(data)
    if depth > MAX_NESTING:
        raise ctx.error(
            f"nests lists and objects {depth} levels deep; a spec needs a handful and at most {MAX_NESTING} are read"
        )
    if not isinstance(data, dict):
        raise ctx.error(f"a spec must be a JSON object with {', '.join(REQUIRED_TOP_LEVEL)}, got {_describe(data)}")
    _check_keys(ctx, data, tuple(TOP_LEVEL_FIELDS), REQUIRED_TOP_LEVEL, "a spec")
    if data["format"] != FORMAT:
        raise ctx.error(
            f"must be {FORMAT!r} (the only version this jaxcnn reads), got {_describe(data['format'])}", "format"
        )
    default_name = Path(source).stem if source != "<spec>" else "network"
    name = data.get("name", default_name)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise ctx.error(f"must be a string, got {_describe(value)}", key)
    input_shape = _input_shape(ctx, data["input"])
    raw_layers = data["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ctx.error(f"must be a non-empty list of layer objects, got {_describe(raw_layers)}", "layers")

    resolved: list[AnyLayer] = []
    shape = input_shape
    counts: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for index, raw in enumerate(raw_layers):
        ctx.index, ctx.name, ctx.layer_type = index, None, None
        kind = _layer_type(ctx, raw)
        ctx.layer_type = kind
        prefix = NAME_PREFIX[kind]
        counts[prefix] = counts.get(prefix, 0) + 1
        layer_name = raw.get("name", f"{prefix}{counts[prefix]}")
        if not isinstance(layer_name, str) or not _NAME_PATTERN.match(layer_name):
            raise ctx.error(
                f"must be a letter or _ followed by up to 63 letters, digits or _, got {_describe(layer_name)}", "name"
            )
        ctx.name = layer_name
        if layer_name in seen_names:
            raise ctx.error(f"the name {layer_name!r} is already used by layers[{seen_names[layer_name]}]", "name")
        seen_names[layer_name] = index
        layer = _resolve_layer(ctx, raw, index, layer_name, kind, shape, index == len(raw_layers) - 1)
        resolved.append(layer)
        shape = layer.output_shape
    return NetworkSpec(
        name=name,
        description=description,
        input_shape=input_shape,
        layers=tuple(resolved),
        source=source,
        document=copy.deepcopy(data),
    )


def _nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value``, counted without recursion (no RecursionError)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_NESTING:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(word: str) -> None:
    raise ValueError(f"{word} is not a JSON number")


def loads_spec(text: str | bytes, source: str = "<spec>") -> NetworkSpec:
    """Parse JSON text (str or UTF-8 bytes) and resolve it; every failure is a :class:`SpecError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(
                f"is not UTF-8 text (byte {text[err.start]:#04x} at offset {err.start})", source=source
            ) from None
    if not text.strip():
        raise SpecError("is empty; a spec is a JSON object with format, input and layers", source=source)
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise SpecError(
            f"is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}", source=source
        ) from None
    except (ValueError, RecursionError) as err:
        raise SpecError(f"is not valid JSON: {err}", source=source) from None
    return parse_spec(data, source)


def load_spec(path: str | Path) -> NetworkSpec:
    """Read, validate and resolve the spec file at ``path``."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file", source=source) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", source=source) from None
    except OSError as err:
        raise SpecError(f"cannot be read: {err.strerror}", source=source) from None
    return loads_spec(raw, source)
