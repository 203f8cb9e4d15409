"""``specs/schema.json``, generated from the layer registry so the two cannot drift apart.

The JSON Schema lets editors check and complete specs; the loader checks the rest (that windows
fit, that branches agree, names and blocks). Regenerate after changing a layer type with
``python -m jaxcnn.schema > specs/schema.json``; ``tests/test_schema.py`` fails until you do.

Inside a block's layers any field may be a ``"$name"`` block parameter, so each layer type has a
second, "templated" definition that allows one in place of every value.
"""

from __future__ import annotations

import json
from typing import Any

from jaxcnn import spec as S
from jaxcnn.layer_types import INPUTS_FIELD, LAYER_TYPES, MAX_WIDTH
from jaxcnn.spec_checks import ACTIVATION_NAMES, MAX_WINDOW

NAME_PATTERN = S._NAME_PATTERN.pattern
PARAM_PATTERN = S._PARAM_PATTERN.pattern


def _base_defs() -> dict[str, Any]:
    window = {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW}
    pad = {"type": "integer", "minimum": 0, "maximum": MAX_WINDOW}
    name = {"type": "string", "pattern": NAME_PATTERN, "not": {"const": S.INPUT}}
    return {
        "side": {"type": "integer", "minimum": 1, "maximum": S.MAX_INPUT_SIDE},
        "window": window,
        "width": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH},
        "pad": pad,
        "pair": {
            "description": "An integer, or [height, width].",
            "oneOf": [{"$ref": "#/$defs/window"}, {"type": "array", "items": window, "minItems": 2, "maxItems": 2}],
        },
        "padding": {
            "description": '"valid", "same", an int p (every side), [ph, pw] or [[top, bottom], [left, right]].',
            "oneOf": [
                {"enum": ["valid", "same"]},
                {"$ref": "#/$defs/pad"},
                {"type": "array", "items": {"$ref": "#/$defs/pad"}, "minItems": 2, "maxItems": 2},
                {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": "array", "items": {"$ref": "#/$defs/pad"}, "minItems": 2, "maxItems": 2},
                },
            ],
        },
        "activation": {"enum": list(ACTIVATION_NAMES)},
        "name": name,
        "layer_name": {"type": "string", "pattern": NAME_PATTERN},
        "inputs": {
            "description": INPUTS_FIELD.doc,
            "oneOf": [
                {"$ref": "#/$defs/layer_name"},
                {"type": "array", "items": {"$ref": "#/$defs/layer_name"}, "minItems": 1},
            ],
        },
        "merge_inputs": {
            "description": "the two or more layers it joins, by name",
            "type": "array",
            "items": {"$ref": "#/$defs/layer_name"},
            "minItems": 2,
        },
        "param_ref": {"description": "a block parameter's value ($name)", "type": "string", "pattern": PARAM_PATTERN},
    }


def _layer_def(kind: str, templated: bool) -> dict[str, Any]:
    cls = LAYER_TYPES[kind]
    properties: dict[str, Any] = {"type": {"const": kind}, "name": {"$ref": "#/$defs/name"}}
    for field, info in cls.FIELDS.items():
        properties[field] = dict(info.schema)
    properties["inputs"] = {"$ref": "#/$defs/merge_inputs" if cls.MERGES else "#/$defs/inputs"}
    if templated:  # any value but the type and the name may be a block parameter
        for field in list(properties)[2:]:
            properties[field] = {"anyOf": [properties[field], {"$ref": "#/$defs/param_ref"}]}
    required = ["type", *(f for f, info in cls.FIELDS.items() if info.required)]
    if cls.MERGES:
        required.append("inputs")
    return {
        "description": cls.DOC,
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _layer_union(prefix: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(LAYER_TYPES)}},
        "oneOf": [{"$ref": f"#/$defs/{prefix}{kind}"} for kind in LAYER_TYPES],
    }


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a spec (format jaxcnn.spec/1), from the registry and the loader's limits."""
    defs = _base_defs()
    defs["layer"] = _layer_union("type_")
    defs["block_layer"] = _layer_union("templated_")
    for kind in LAYER_TYPES:
        defs[f"type_{kind}"] = _layer_def(kind, templated=False)
    for kind in LAYER_TYPES:
        defs[f"templated_{kind}"] = _layer_def(kind, templated=True)
    defs["block_use"] = {
        "description": "a use of a block defined in blocks; its parameters are given as further fields",
        "type": "object",
        "required": ["block"],
        "not": {"required": ["type"]},
        "properties": {
            "block": {"$ref": "#/$defs/layer_name"},
            "name": {"$ref": "#/$defs/name"},
            "repeat": {
                "anyOf": [{"type": "integer", "minimum": 1, "maximum": S.MAX_REPEAT}, {"$ref": "#/$defs/param_ref"}]
            },
            "inputs": {"anyOf": [{"$ref": "#/$defs/inputs"}, {"$ref": "#/$defs/param_ref"}]},
        },
    }
    defs["block"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["layers"],
        "properties": {
            "description": {"type": "string", "description": S.BLOCK_FIELDS["description"]},
            "params": {
                "type": "object",
                "description": S.BLOCK_FIELDS["params"],
                "propertyNames": {"pattern": NAME_PATTERN, "not": {"enum": list(S.BLOCK_USE_FIELDS)}},
            },
            "layers": {
                "type": "array",
                "minItems": 1,
                "description": S.BLOCK_FIELDS["layers"],
                "items": {"oneOf": [{"$ref": "#/$defs/block_layer"}, {"$ref": "#/$defs/block_use"}]},
            },
            "output": {"$ref": "#/$defs/layer_name", "description": S.BLOCK_FIELDS["output"]},
        },
    }
    side = {"$ref": "#/$defs/side"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"jaxcnn network spec (format {S.FORMAT})",
        "description": (
            "A convolutional network as a list of layers (a graph where layers name their inputs), with "
            "optional reusable blocks. Generated by python -m jaxcnn.schema from the layer registry. The "
            "schema checks structure, types and ranges; the loader (jaxcnn validate) also checks what a "
            "schema cannot: that every window fits its input, that branches agree, that names and blocks "
            "exist, that softmax is last and that every layer reaches the output."
        ),
        "type": "object",
        "additionalProperties": False,
        "required": list(S.REQUIRED_TOP_LEVEL),
        "properties": {
            "format": {"const": S.FORMAT, "description": S.TOP_LEVEL_FIELDS["format"]},
            "name": {"type": "string", "description": S.TOP_LEVEL_FIELDS["name"]},
            "description": {"type": "string", "description": S.TOP_LEVEL_FIELDS["description"]},
            "input": {
                "description": S.TOP_LEVEL_FIELDS["input"],
                "type": "array",
                "prefixItems": [side, side, {"type": "integer", "minimum": 1, "maximum": S.MAX_CHANNELS}],
                "minItems": 3,
                "maxItems": 3,
            },
            "blocks": {
                "type": "object",
                "description": S.TOP_LEVEL_FIELDS["blocks"],
                "propertyNames": {"pattern": NAME_PATTERN, "not": {"enum": list(LAYER_TYPES)}},
                "additionalProperties": {"$ref": "#/$defs/block"},
            },
            "layers": {
                "type": "array",
                "minItems": 1,
                "description": S.TOP_LEVEL_FIELDS["layers"],
                "items": {"oneOf": [{"$ref": "#/$defs/layer"}, {"$ref": "#/$defs/block_use"}]},
            },
            "output": {"$ref": "#/$defs/layer_name", "description": S.TOP_LEVEL_FIELDS["output"]},
        },
        "$defs": defs,
    }


def main() -> None:
    """Print the schema (``python -m jaxcnn.schema > specs/schema.json``)."""
    print(json.dumps(spec_schema(), indent=1))


if __name__ == "__main__":
    main()
