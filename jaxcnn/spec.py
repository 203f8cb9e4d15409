"""JSON network specs -> validated, fully resolved, frozen dataclasses.

All checking and all normalisation happen here, once. After :func:`load_spec` returns, blocks
are expanded (their layers named ``use.layer``, ``use.blockK.layer`` when repeated), every layer
has a name, the names of the layers it reads, explicit (height, width) pairs for size, stride
and dilation, explicit ((top, bottom), (left, right)) padding, and its input and output shapes
computed over the graph with the output-size formula. Nothing downstream re-validates.

What each layer type accepts and computes lives in :mod:`jaxcnn.layer_types`; this module reads
the document around them: the top level, the graph (``inputs``, ``output``) and the blocks.
Every problem raises :class:`SpecError`, whose message names the file, the layer (its index in
its list and its name, and for a block both the use and the definition), the field, and what is
allowed, before anything is traced.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcnn import spec_checks as C
from jaxcnn.blocks import _NAME_PATTERN as _NAME_PATTERN  # the schema reads both patterns from here
from jaxcnn.blocks import _PARAM_PATTERN as _PARAM_PATTERN
from jaxcnn.blocks import BLOCK_FIELDS as BLOCK_FIELDS
from jaxcnn.blocks import BLOCK_USE_FIELDS as BLOCK_USE_FIELDS
from jaxcnn.blocks import INPUT as INPUT
from jaxcnn.blocks import LAYER_MODULES_ENV as LAYER_MODULES_ENV
from jaxcnn.blocks import MAX_LAYERS as MAX_LAYERS
from jaxcnn.blocks import MAX_REPEAT as MAX_REPEAT
from jaxcnn.blocks import _check_blocks, _check_size, _Expander, _Pending
from jaxcnn.layer_types import (
    LAYER_TYPES,
    ActivationLayer,
    AddLayer,
    AvgPoolLayer,
    BatchNormLayer,
    ConcatLayer,
    ConvLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    GlobalAvgPoolLayer,
    GlobalMaxPoolLayer,
    Layer,
    MaxPoolLayer,
    PoolLayer,
    allowed_fields,
    required_fields,
)
from jaxcnn.spec_checks import (
    ACTIVATION_NAMES,
    MAX_WINDOW,
    IntPair,
    PaddingPairs,
    Shape,
    SpecError,
    Where,
)

__all__ = [
    "ACTIVATION_NAMES",
    "FORMAT",
    "LAYER_TYPES",
    "MAX_WINDOW",
    "ActivationLayer",
    "AddLayer",
    "AnyLayer",
    "AvgPoolLayer",
    "BatchNormLayer",
    "ConcatLayer",
    "ConvLayer",
    "DenseLayer",
    "DropoutLayer",
    "FlattenLayer",
    "GlobalAvgPoolLayer",
    "GlobalMaxPoolLayer",
    "IntPair",
    "Layer",
    "MaxPoolLayer",
    "NetworkSpec",
    "PaddingPairs",
    "PoolLayer",
    "Shape",
    "SpecError",
    "layer_fields",
    "load_spec",
    "loads_spec",
    "parse_spec",
]

FORMAT = "jaxcnn.spec/1"
"""The versioned format key every spec must carry."""

AnyLayer = Layer

MAX_INPUT_SIDE = 16384
MAX_CHANNELS = 65536
TOP_LEVEL_FIELDS = {
    "format": "the format version, exactly " + repr(FORMAT),
    "name": "a short name for the network (default: the file name)",
    "description": "free text: what the network is and where it comes from",
    "input": "the input shape [height, width, channels]",
    "blocks": 'named, parameterised groups of layers, used in layers as {"block": NAME, ...}',
    "layers": "the list of layers, first to last",
    "output": "the name of the layer whose output is the network's (default: the last layer)",
}
REQUIRED_TOP_LEVEL = ("format", "input", "layers")


def layer_fields() -> dict[str, tuple[str, ...]]:
    """Every registered layer type and the fields it accepts, as the registry holds them now."""
    return {kind: allowed_fields(kind) for kind in LAYER_TYPES}


MAX_NESTING = 32
"""How deeply a spec's lists and objects may nest (a layer's padding pairs sit at depth 5)."""


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """A validated network: input shape, resolved layers (in an order where each follows its inputs),
    the name of the output layer, and where it came from."""

    name: str
    description: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    source: str
    output: str = ""
    """The name of the layer whose output is the network's (the last layer unless the spec names one)."""
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The JSON object as written (before defaults and resolution), for recording in runs."""

    def layer(self, name: str) -> Layer:
        """The layer called ``name`` (its qualified name inside blocks)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def output_layer(self) -> Layer:
        return self.layer(self.output) if self.output else self.layers[-1]

    @property
    def output_shape(self) -> Shape:
        """Shape of one example's output (without batch)."""
        return self.output_layer.output_shape if self.layers else self.input_shape

    @property
    def final_activation(self) -> str:
        """The output layer's activation ("linear" when it has none)."""
        return self.output_layer.activation if self.layers else "linear"

    @property
    def has_state(self) -> bool:
        """Whether any layer keeps state between steps (batch norm's running statistics)."""
        return any(layer.state_shapes() for layer in self.layers)

    @property
    def needs_key(self) -> bool:
        """Whether training draws random numbers inside the network (dropout)."""
        return any(draws_random(layer) for layer in self.layers)


def draws_random(layer: Layer) -> bool:
    """Whether the layer draws random numbers in training (dropout with a rate above 0)."""
    return isinstance(layer, DropoutLayer) and layer.rate > 0


def _origin_describer(by_name: dict[str, Layer]) -> Any:
    """For merge errors: which layer made a shape, and the output-size arithmetic that shrank it."""

    def origin(name: str) -> str:
        if name not in by_name:
            return " (the input)"
        layer = by_name[name]
        text = f" (from {layer.type} '{name}'"
        current: Layer | None = layer
        while current is not None:
            stride = getattr(current, "stride", None)
            if stride is not None and current.output_shape[:2] != current.input_shape[:2]:
                (lo, hi), _ = current.padding  # type: ignore[attr-defined]
                n, f, s, o = current.input_shape[0], current.size[0], stride[0], current.output_shape[0]  # type: ignore[attr-defined]
                text += (
                    f"; its height is set by {current.type} '{current.name}': "
                    f"floor((n + p_lo + p_hi - f) / s) + 1 = floor(({n} + {lo} + {hi} - {f}) / {s}) + 1 = {o}"
                )
                break
            current = by_name.get(current.inputs[0]) if current.inputs else None
        return text + ")"

    return origin


def _check_reaches_output(layers: list[Layer], pending: list[_Pending], output: str) -> None:
    """Every layer must feed the output: one that reaches nothing is a mistake (a branch not joined)."""
    needed = {output}
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    for layer, item in zip(layers, pending, strict=True):
        if layer.name not in needed:
            raise item.at.error(
                f"its output reaches nothing: no later layer reads it and it is not the network's output "
                f'({output!r}). Read it from a later layer ("inputs"), or remove it'
            )


def _input_shape(at: Where, value: Any) -> Shape:
    if not (isinstance(value, list) and len(value) == 3 and all(C.is_int(v) for v in value)):
        raise at.error(
            f"must be [height, width, channels], three integers (for example [28, 28, 1]), got {C.describe(value)}",
            "input",
        )
    height = C.int_value(at, value[0], "input", 1, MAX_INPUT_SIDE)
    width = C.int_value(at, value[1], "input", 1, MAX_INPUT_SIDE)
    channels = C.int_value(at, value[2], "input", 1, MAX_CHANNELS)
    return (height, width, channels)


def parse_spec(data: Any, source: str = "<spec>") -> NetworkSpec:
    """Validate and resolve an already-parsed JSON value (a dict) into a :class:`NetworkSpec`."""
    at = Where(source)
    depth = _nesting_depth(data)
    if depth > MAX_NESTING:
        raise at.error(
            f"nests lists and objects {depth} levels deep; a spec needs a handful and at most {MAX_NESTING} are read"
        )
    if not isinstance(data, dict):
        raise at.error(f"a spec must be a JSON object with {', '.join(REQUIRED_TOP_LEVEL)}, got {C.describe(data)}")
    C.check_keys(at, data, tuple(TOP_LEVEL_FIELDS), REQUIRED_TOP_LEVEL, "a spec")
    if data["format"] != FORMAT:
        raise at.error(
            f"must be {FORMAT!r} (the only version this jaxcnn reads), got {C.describe(data['format'])}", "format"
        )
    default_name = Path(source).stem if source != "<spec>" else "network"
    name = data.get("name", default_name)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise at.error(f"must be a string, got {C.describe(value)}", key)
    input_shape = _input_shape(at, data["input"])
    raw_layers = data["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise at.error(f"must be a non-empty list of layer objects, got {C.describe(raw_layers)}", "layers")
    blocks = _check_blocks(at, data.get("blocks", {}))
    _check_size(at, raw_layers, blocks)

    expander = _Expander(source, blocks)
    outputs = expander.expand(raw_layers, "layers", (), "", INPUT, None, ())
    output = _output_name(at, data, outputs)
    pending = expander.pending
    resolved: list[Layer] = []
    by_name: dict[str, Layer] = {}
    origin = _origin_describer(by_name)
    for index, item in enumerate(pending):
        item.at.origin = origin
        cls = LAYER_TYPES[item.kind]
        C.check_keys(item.at, item.raw, allowed_fields(item.kind), required_fields(item.kind), f"a {item.kind} layer")
        if cls.MERGES and len(item.inputs) < 2:
            raise item.at.error(f"a {item.kind} layer joins two or more layers; name them in inputs", "inputs")
        if not cls.MERGES and len(item.inputs) != 1:
            raise item.at.error(
                f"a {item.kind} layer reads one input, got {len(item.inputs)}; join branches first with add or concat",
                "inputs",
            )
        shapes = tuple(by_name[ref].output_shape if ref in by_name else input_shape for ref in item.inputs)
        common = {"index": index, "name": item.name, "type": item.kind, "inputs": item.inputs,
                  "input_shapes": shapes, "input_shape": shapes[0]}  # fmt: skip
        layer = cls.resolve(item.at, item.raw, common, item.name == output)
        resolved.append(layer)
        by_name[layer.name] = layer
    _check_reaches_output(resolved, pending, output)
    return NetworkSpec(
        name=name,
        description=description,
        input_shape=input_shape,
        layers=tuple(resolved),
        source=source,
        output=output,
        document=copy.deepcopy(data),
    )


def _output_name(at: Where, data: dict[str, Any], outputs: dict[str, str]) -> str:
    """The qualified name of the output layer: the spec's ``output`` (a top-level name) or the last layer's."""
    if "output" not in data:
        return list(outputs.values())[-1]
    word = data["output"]
    if not isinstance(word, str) or word not in outputs:
        known = list(outputs)
        hint = C.suggest(word, known) if isinstance(word, str) else ""
        listed = ", ".join(known)
        raise at.error(
            f"names {C.describe(word)}, which is no layer of the spec; its layers: {listed}.{hint}", "output"
        )
    return outputs[word]


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
