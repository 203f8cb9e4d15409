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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcnn import spec_checks as C
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
MAX_REPEAT = 1000
MAX_LAYERS = 10000
"""The most layers a spec may expand to (blocks and repeats included)."""

INPUT = "input"
LAYER_MODULES_ENV = "JAXCNN_LAYER_MODULES"
"""Environment variable: modules the ``jaxcnn`` command imports first, so the layer types they register work."""
"""The name by which a layer reads the network's input (inside a block: the block's input)."""

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

BLOCK_FIELDS = {
    "description": "free text: what the block is",
    "params": 'the block\'s parameters and their defaults ({"filters": null, "stride": 1}; null: required)',
    "layers": 'the block\'s layers; "input" is the block\'s input; "$name" is a parameter\'s value',
    "output": "the name of the layer whose output is the block's (default: its last layer)",
}
BLOCK_USE_FIELDS = ("block", "name", "repeat", "inputs")
"""The fields of a block use besides the block's own parameters."""


def layer_fields() -> dict[str, tuple[str, ...]]:
    """Every registered layer type and the fields it accepts, as the registry holds them now."""
    return {kind: allowed_fields(kind) for kind in LAYER_TYPES}


MAX_NESTING = 32
"""How deeply a spec's lists and objects may nest (a layer's padding pairs sit at depth 5)."""

# Matched whole (fullmatch: ``$`` alone would match before a final newline, letting "conv1\n" beside "conv1");
# the anchors are for JSON Schema, which reads the same patterns.
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PARAM_PATTERN = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]{0,63})$")


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
        return any(isinstance(layer, DropoutLayer) and layer.rate > 0 for layer in self.layers)


@dataclass(frozen=True)
class _Pending:
    """A layer after block expansion and name resolution, before its fields are checked."""

    raw: dict[str, Any]
    kind: str
    name: str
    inputs: tuple[str, ...]
    at: Where


def _layer_type(at: Where, raw: dict[str, Any], blocks: dict[str, Any]) -> str:
    if "type" not in raw:
        hint = ' (or {"block": NAME} to use a block)' if blocks else ""
        raise at.error(f"missing required field 'type'; allowed types: {', '.join(LAYER_TYPES)}{hint}", "type")
    kind = raw["type"]
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        hint = C.suggest(kind, tuple(LAYER_TYPES)) if isinstance(kind, str) else ""
        if isinstance(kind, str) and kind in blocks:
            hint = f' {kind!r} is a block: use it as {{"block": "{kind}", ...}}'
        elif not hint:
            hint = (
                " A layer type of your own must be registered before the spec is loaded: import the module "
                f"that calls jaxcnn.register_layer (for the jaxcnn command, name it in ${LAYER_MODULES_ENV})"
            )
        raise at.error(f"unknown layer type {C.describe(kind)}; allowed: {', '.join(LAYER_TYPES)}.{hint}", "type")
    return kind


def _substitute(at: Where, value: Any, params: dict[str, Any] | None, block: str | None) -> Any:
    """Replace every "$name" string in ``value`` (nested lists and objects too) by the parameter's value."""
    if isinstance(value, str):
        match = _PARAM_PATTERN.fullmatch(value)
        if match is None:
            return value
        key = match.group(1)
        if params is None:
            raise at.error(f"{value!r} names a block parameter, but only the layers of a block can use one")
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise at.error(
                f"{value!r}: block {block!r} has no parameter {key!r} (its parameters: {known})."
                + C.suggest(key, sorted(params))
            )
        return copy.deepcopy(params[key])
    if isinstance(value, list):
        return [_substitute(at, v, params, block) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(at, v, params, block) for k, v in value.items()}
    return value


class _Expander:
    """Expands block uses into layers with qualified names and resolves every input name."""

    def __init__(self, source: str, blocks: dict[str, Any]) -> None:
        self.source = source
        self.blocks = blocks
        self.pending: list[_Pending] = []

    def expand(
        self,
        entries: list[Any],
        list_name: str,
        trail: tuple[str, ...],
        prefix: str,
        input_ref: str,
        params: dict[str, Any] | None,
        stack: tuple[str, ...],
    ) -> dict[str, str]:
        """Expand ``entries`` (one list of layers); returns each local name's output, in order."""
        block = stack[-1] if stack else None
        base = Where(self.source, list_name, trail)
        names = self._local_names(base, entries)
        local: dict[str, str] = {}
        previous = input_ref
        for index, raw in enumerate(entries):
            name = names[index]
            kind_word = raw.get("type") if raw.get("type") in LAYER_TYPES else None
            at = base.at_layer(index, prefix + name, kind_word)
            raw = _substitute(at, raw, params, block)
            inputs = self._inputs(at, raw, name, names, index, local, previous, input_ref)
            if "block" in raw:
                at.layer_type = f"block {raw['block']}" if isinstance(raw["block"], str) else "block"
                previous = self._use_block(at, raw, name, prefix, inputs, stack)
            else:
                kind = _layer_type(at, raw, self.blocks)
                self.pending.append(_Pending(raw, kind, prefix + name, inputs, at))
                if len(self.pending) > MAX_LAYERS:  # a repeat given by a block parameter, which counting cannot see
                    raise at.error(f"the spec expands to more than {MAX_LAYERS} layers; use fewer repeats")
                previous = prefix + name
            local[name] = previous
        return local

    def _local_names(self, base: Where, entries: list[Any]) -> list[str]:
        """Every entry's name (given, or the type's prefix and a count), checked and unique in the list."""
        counts: dict[str, int] = {}
        seen: dict[str, int] = {}
        names = []
        for index, raw in enumerate(entries):
            at = base.at_layer(index)
            if not isinstance(raw, dict):
                raise at.error(f'each layer must be a JSON object like {{"type": "conv", ...}}, got {C.describe(raw)}')
            if "block" in raw and "type" in raw:
                raise at.error('a block use names its block and no type: {"block": "basic", ...}', "type")
            if "block" in raw:
                stem = (
                    raw["block"] if isinstance(raw["block"], str) and _NAME_PATTERN.fullmatch(raw["block"]) else "block"
                )
                at.layer_type = f"block {stem}"
            else:
                kind = _layer_type(at, raw, self.blocks)
                at.layer_type = kind
                stem = LAYER_TYPES[kind].PREFIX
            counts[stem] = counts.get(stem, 0) + 1
            name = raw.get("name", f"{stem}{counts[stem]}")
            at.name = name if isinstance(name, str) else None
            if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
                raise at.error(
                    f"must be a letter or _ followed by up to 63 letters, digits or _, got {C.describe(name)}", "name"
                )
            if name == INPUT:
                raise at.error(
                    f"'{INPUT}' is reserved: it is how a layer reads the network's (or block's) input", "name"
                )
            if name in seen:
                raise at.error(f"the name {name!r} is already used by {base.list_name}[{seen[name]}]", "name")
            seen[name] = index
            names.append(name)
        return names

    def _inputs(
        self,
        at: Where,
        raw: dict[str, Any],
        name: str,
        names: list[str],
        index: int,
        local: dict[str, str],
        previous: str,
        input_ref: str,
    ) -> tuple[str, ...]:
        """The outputs this entry reads: its ``inputs`` resolved, or the entry before it."""
        if "inputs" not in raw:
            return (previous,)
        given = raw["inputs"]
        words = [given] if isinstance(given, str) else given
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise at.error(
                f"must be a layer name or a non-empty list of layer names, got {C.describe(given)}", "inputs"
            )
        refs = []
        for word in words:
            if word == INPUT:
                refs.append(input_ref)
            elif word in local:
                refs.append(local[word])
            elif word == name:
                raise at.error(f"the layer reads its own output ({C.clip(word)!r}), which would make a cycle", "inputs")
            elif word in names:
                later = names.index(word)
                raise at.error(
                    f"reads {C.clip(word)!r}, which comes later ({at.list_name}[{later}]); a layer reads only the "
                    "input and layers listed before it, which keeps the network free of cycles. Move it, or read an "
                    "earlier layer",
                    "inputs",
                )
            else:
                known = [INPUT, *names[:index]]
                raise at.error(
                    f"no layer named {C.clip(word)!r} comes before this one; it can read: {', '.join(known)}."
                    f"{C.suggest(word, known)}",
                    "inputs",
                )
        return tuple(refs)

    def _use_block(
        self, at: Where, raw: dict[str, Any], name: str, prefix: str, inputs: tuple[str, ...], stack: tuple[str, ...]
    ) -> str:
        """Expand one block use (all its repeats); returns the qualified name of its output."""
        block_name = raw["block"]
        if not isinstance(block_name, str) or block_name not in self.blocks:
            known = sorted(self.blocks)
            hint = C.suggest(block_name, known) if isinstance(block_name, str) else ""
            listed = ", ".join(known) if known else 'none (define them in "blocks")'
            raise at.error(f"unknown block {C.describe(block_name)}; the spec's blocks: {listed}.{hint}", "block")
        if block_name in stack:
            cycle = " -> ".join([*stack[stack.index(block_name) :], block_name])
            raise at.error(f"block {block_name!r} uses itself ({cycle}); blocks cannot be recursive", "block")
        definition = self.blocks[block_name]
        declared: dict[str, Any] = definition.get("params", {})
        C.check_keys(at, raw, (*BLOCK_USE_FIELDS, *declared), (), f"a use of block {block_name!r}")
        values = {key: raw.get(key, default) for key, default in declared.items()}
        missing = [key for key, value in values.items() if value is None]
        if missing:
            raise at.error(
                f"block {block_name!r} needs a value for its parameter {missing[0]!r} (blocks.{block_name}.params "
                "declares it without a default)",
                missing[0],
            )
        if len(inputs) != 1:
            raise at.error(f"a block reads exactly one input, got {len(inputs)}", "inputs")
        repeat = C.int_value(at, raw.get("repeat", 1), "repeat", 1, MAX_REPEAT)
        current = inputs[0]
        for copy_number in range(1, repeat + 1):
            copy_prefix = f"{prefix}{name}." + (f"block{copy_number}." if repeat > 1 else "")
            copy_text = f", copy {copy_number} of {repeat}" if repeat > 1 else ""
            trail = (*at.trail, f"{at.list_name}[{at.index}] (block {block_name} '{prefix}{name}'{copy_text})")
            local = self.expand(definition["layers"], f"blocks.{block_name}.layers", trail, copy_prefix, current,
                                values, (*stack, block_name))  # fmt: skip
            current = local[definition["output"]] if "output" in definition else list(local.values())[-1]
        # After the expansion, whose errors (a "$name" the block does not declare) are the more precise.
        read = _parameters_read(definition["layers"])
        for key in raw:
            if key in declared and key not in read:
                raise at.error(
                    f"block {block_name!r} declares the parameter {key!r}, but none of its layers reads "
                    f'"${key}", so the value given here would change nothing. Use "${key}" in a layer of '
                    f"blocks.{block_name}.layers, or leave it out here",
                    key,
                )
        return current


def _parameters_read(value: Any) -> set[str]:
    """The block parameters that ``value`` (a block's layers) reads as "$name", at any depth."""
    if isinstance(value, str):
        match = _PARAM_PATTERN.fullmatch(value)
        return {match.group(1)} if match else set()
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return set().union(*(_parameters_read(child) for child in children))


def _expanded_count(entries: list[Any], blocks: dict[str, Any], counted: dict[str, int], stack: tuple[str, ...]) -> int:
    """How many layers ``entries`` expand to, counted before anything is built or copied: a block use counts
    its repeats times its block's layers. What the expander will refuse anyway (an unknown block, a
    recursion, a bad repeat) counts as one layer here."""
    total = 0
    for raw in entries:
        name = raw.get("block") if isinstance(raw, dict) else None
        if not isinstance(name, str) or name not in blocks or name in stack:
            total += 1
            continue
        if name not in counted:
            layers = blocks[name].get("layers")
            counted[name] = _expanded_count(layers, blocks, counted, (*stack, name)) if isinstance(layers, list) else 1
        repeat = raw.get("repeat", 1)
        total += counted[name] * (int(repeat) if C.is_int(repeat) and 1 <= repeat <= MAX_REPEAT else 1)
    return total


def _check_size(at: Where, raw_layers: list[Any], blocks: dict[str, Any]) -> None:
    """Refuse a spec of more than MAX_LAYERS layers before expanding it, saying what makes it that large."""
    count = _expanded_count(raw_layers, blocks, {}, ())
    if count <= MAX_LAYERS:
        return
    if count == len(raw_layers):
        raise at.error(f"the spec has more than {MAX_LAYERS} layers: it lists {count:,}", "layers")
    raise at.error(f"the spec expands to more than {MAX_LAYERS} layers: its {len(raw_layers):,} entries make "
                   f"{count:,} (block uses times their repeats); use fewer repeats or smaller blocks",
                   "layers")  # fmt: skip


def _check_blocks(at: Where, value: Any) -> dict[str, Any]:
    """The ``blocks`` object: each a name -> {params, layers, output, description}, checked for form."""
    if not isinstance(value, dict):
        raise at.error(f'must be an object of named blocks {{"basic": {{"layers": [...]}}}}, got {C.describe(value)}',
                       "blocks")  # fmt: skip
    for name, block in value.items():
        place = Where(at.source, f"blocks.{name}")
        if not _NAME_PATTERN.fullmatch(name):
            raise at.error(f"block name {C.clip(name)!r} must be a letter or _ followed by letters, digits or _",
                           "blocks")  # fmt: skip
        if name in LAYER_TYPES:
            raise at.error(f"block name {name!r} is a layer type; choose another name", "blocks")
        if not isinstance(block, dict):
            raise place.error(f'must be an object with "layers", got {C.describe(block)}')
        C.check_keys(place, block, tuple(BLOCK_FIELDS), ("layers",), "a block")
        if not isinstance(block["layers"], list) or not block["layers"]:
            raise place.error(f"must be a non-empty list of layers, got {C.describe(block['layers'])}", "layers")
        params = block.get("params", {})
        if not isinstance(params, dict):
            raise place.error(f"must be an object of parameter names and defaults, got {C.describe(params)}", "params")
        for key in params:
            if not _NAME_PATTERN.fullmatch(key) or key in BLOCK_USE_FIELDS:
                raise place.error(
                    f"parameter {C.clip(key)!r} must be a name (letters, digits, _) other than "
                    f"{', '.join(BLOCK_USE_FIELDS)}",
                    "params",
                )
        if "output" in block:
            names = [layer.get("name") for layer in block["layers"] if isinstance(layer, dict)]
            if block["output"] not in names:
                raise place.error(
                    f"names {C.describe(block['output'])}, which is none of the block's named layers "
                    f"({', '.join(str(n) for n in names if n) or 'none is named'})",
                    "output",
                )
        if not isinstance(block.get("description", ""), str):
            raise place.error("must be a string", "description")
    return value


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
