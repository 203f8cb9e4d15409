"""Blocks and names: a spec's ``blocks`` checked, each block use expanded into layers with qualified
names (``use.layer``, ``use.blockK.layer`` when repeated), ``$name`` parameters substituted, and the
names each layer reads resolved. The size of the expansion is counted before anything is built.
Every problem is a :class:`jaxcnn.spec_checks.SpecError` naming the use and the definition."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from jaxcnn import spec_checks as C
from jaxcnn.layer_types import LAYER_TYPES
from jaxcnn.spec_checks import Where

MAX_REPEAT = 1000
MAX_LAYERS = 10000
"""The most layers a spec may expand to (blocks and repeats included)."""

INPUT = "input"
"""The name by which a layer reads the network's input (inside a block: the block's input)."""
LAYER_MODULES_ENV = "JAXCNN_LAYER_MODULES"
"""Environment variable: modules the ``jaxcnn`` command imports first, so the layer types they register work."""

BLOCK_FIELDS = {
    "description": "free text: what the block is",
    "params": 'the block\'s parameters and their defaults ({"filters": null, "stride": 1}; null: required)',
    "layers": 'the block\'s layers; "input" is the block\'s input; "$name" is a parameter\'s value',
    "output": "the name of the layer whose output is the block's (default: its last layer)",
}
BLOCK_USE_FIELDS = ("block", "name", "repeat", "inputs")
"""The fields of a block use besides the block's own parameters."""


# Matched whole (fullmatch: ``$`` alone would match before a final newline, letting "conv1\n" beside "conv1");
# the anchors are for JSON Schema, which reads the same patterns.
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PARAM_PATTERN = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]{0,63})$")


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
