"""Malformed graph and block specs: each is one SpecError naming the file, the layer (and for a
block both the use and the definition), the field and what is allowed, before anything runs.

Like ``test_spec_errors.py``, every case says whether JSON Schema can see the problem, and
``test_schema_agrees`` checks specs/schema.json rejects exactly those.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from jaxcnn.spec import parse_spec

from conftest import SPECS_DIR
from spec_fuzzing import assert_rejected

VALIDATOR = jsonschema.Draft202012Validator(json.loads((SPECS_DIR / "schema.json").read_text()))


def net(*layers: dict[str, Any], blocks: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"format": "jaxcnn.spec/1", "input": [8, 8, 4], "layers": list(layers)}
    if blocks is not None:
        spec["blocks"] = blocks
    spec.update(top)
    return spec


def conv(name: str, filters: int = 4, **extra: Any) -> dict[str, Any]:
    return {"type": "conv", "name": name, "filters": filters, "size": 3, "padding": 1, **extra}


HEAD: list[dict[str, Any]] = [{"type": "global_avg_pool", "name": "gap"}, {"type": "dense", "name": "out", "units": 2}]


def residual(**add: Any) -> dict[str, Any]:
    return net(conv("a"), conv("b"), {"type": "add", "name": "sum", "inputs": ["b", "input"], **add}, *HEAD)


BASIC: dict[str, Any] = {
    "params": {"filters": None, "stride": 1},
    "layers": [
        conv("conv1", "$filters", stride="$stride"),  # type: ignore[arg-type]
        {"type": "batch_norm", "name": "bn1"},
        {"type": "add", "name": "add", "inputs": ["bn1", "input"]},
    ],
}


def with_block(use: dict[str, Any], block: dict[str, Any] | None = None) -> dict[str, Any]:
    return net(conv("stem"), {"block": "basic", "name": "stage", **use}, *HEAD, blocks={"basic": block or BASIC})


def block_layer(index: int, **changes: Any) -> dict[str, Any]:
    block = copy.deepcopy(BASIC)
    block["layers"][index].update(changes)
    return with_block({"filters": 4}, block)


# (id, spec, fragments the message must contain, schema can detect it)
CASES: list[tuple[str, Any, list[str], bool]] = [
    (
        "unknown input name",
        net(conv("a"), conv("b", inputs="aa"), *HEAD),
        ["layers[1] (conv 'b')", "field 'inputs'", "no layer named 'aa'", "Did you mean 'a'?"],
        False,
    ),
    (
        "input from a later layer",
        net(conv("a", inputs="b"), conv("b"), *HEAD),
        ["layers[0] (conv 'a')", "field 'inputs'", "comes later (layers[1])", "cycles"],
        False,
    ),
    ("reads itself", net(conv("a", inputs="a"), *HEAD), ["layers[0] (conv 'a')", "its own output", "cycle"], False),
    ("inputs not a name", net(conv("a", inputs=3), *HEAD), ["field 'inputs'", "a layer name"], True),
    ("inputs empty list", net(conv("a", inputs=[]), *HEAD), ["field 'inputs'", "non-empty list"], True),
    ("two inputs to a conv", net(conv("a"), conv("b", inputs=["a", "input"]), *HEAD), ["reads one input"], False),
    (
        "add with one input",
        net(conv("a"), {"type": "add", "inputs": ["a"]}, *HEAD),
        ["layers[1] (add 'add1')", "two or more layers"],
        True,
    ),
    (
        "add of different channels",
        net(conv("a", 6), {"type": "add", "name": "sum", "inputs": ["a", "input"]}, *HEAD),
        [
            "layers[1] (add 'sum')",
            "field 'inputs'",
            "equal shape",
            "'a' gives 8x8x6 (from conv 'a'",
            "'input' gives 8x8x4",
        ],
        False,
    ),
    (
        "add whose branch was strided",
        net(conv("a", stride=2), {"type": "add", "name": "sum", "inputs": ["a", "input"]}, *HEAD),
        ["'a' gives 4x4x4", "its height is set by conv 'a'", "floor((8 + 1 + 1 - 3) / 2) + 1 = 4"],
        False,
    ),
    (
        "concat of different sizes",
        net(conv("a", stride=2), {"type": "concat", "name": "both", "inputs": ["a", "input"]}, *HEAD),
        ["layers[1] (concat 'both')", "heights and widths must be equal", "4x4x4", "8x8x4"],
        False,
    ),
    (
        "a branch that reaches nothing",
        net(conv("a"), conv("side", inputs="input"), conv("b", inputs="a"), *HEAD),
        ["layers[1] (conv 'side')", "reaches nothing", "'out'"],
        False,
    ),
    ("output unknown", residual() | {"output": "nope"}, ["field 'output'", "no layer of the spec"], False),
    (
        "output not last leaves layers unused",
        residual() | {"output": "gap"},
        ["layers[4] (dense 'out')", "reaches nothing", "'gap'"],
        False,
    ),
    ("name input is reserved", net(conv("input"), *HEAD), ["layers[0]", "field 'name'", "reserved"], True),
    (
        "softmax before the output",
        net(conv("a"), {"type": "activation", "activation": "softmax"}, *HEAD),
        ["layers[1] (activation 'act1')", "only on the last layer"],
        False,
    ),
    ("dropout rate 1", net(conv("a"), {"type": "dropout", "rate": 1}, *HEAD), ["field 'rate'", "[0, 1)"], True),
    ("dropout rate negative", net({"type": "dropout", "rate": -0.1}, *HEAD), ["field 'rate'", "[0, 1)"], True),
    ("dropout without rate", net({"type": "dropout"}, *HEAD), ["missing required field 'rate'"], True),
    ("dropout rate text", net({"type": "dropout", "rate": "0.5"}, *HEAD), ["field 'rate'", "a number"], True),
    ("bn momentum 1", net({"type": "batch_norm", "momentum": 1.0}, *HEAD), ["field 'momentum'", "[0, 1)"], True),
    ("bn epsilon 0", net({"type": "batch_norm", "epsilon": 0}, *HEAD), ["field 'epsilon'", "greater than 0"], True),
    ("bn scale text", net({"type": "batch_norm", "scale": "yes"}, *HEAD), ["field 'scale'", "true or false"], True),
    (
        "global pool after flatten",
        net({"type": "flatten"}, {"type": "global_avg_pool"}, {"type": "dense", "units": 2}),
        ["layers[1] (global_avg_pool 'gpool1')", "already flat"],
        False,
    ),
    (
        "activation without a function",
        net({"type": "activation"}, *HEAD),
        ["missing required field 'activation'"],
        True,
    ),
    (
        "unknown block",
        net(conv("stem"), {"block": "basci", "filters": 4}, *HEAD, blocks={"basic": BASIC}),
        ["layers[1]", "field 'block'", 'unknown block "basci"', "Did you mean 'basic'?"],
        False,
    ),
    (
        "block used as a type",
        net(conv("stem"), {"type": "basic"}, *HEAD, blocks={"basic": BASIC}),
        ['unknown layer type "basic"', "is a block"],
        True,
    ),
    (
        "missing block parameter",
        with_block({}),
        ["layers[1] (block basic 'stage')", "field 'filters'", "needs a value for its parameter 'filters'"],
        False,
    ),
    (
        "unknown block parameter",
        with_block({"filters": 4, "filtres": 4}),
        ["layers[1] (block basic 'stage')", "unknown field 'filtres'", "Did you mean 'filters'?"],
        False,
    ),
    ("repeat zero", with_block({"filters": 4, "repeat": 0}), ["field 'repeat'", "from 1 to 1000"], True),
    ("repeat text", with_block({"filters": 4, "repeat": "3"}), ["field 'repeat'", "integer"], True),
    (
        "block parameter gives a bad value",
        with_block({"filters": 0}),
        [
            "layers[1] (block basic 'stage') > blocks.basic.layers[0] (conv 'stage.conv1')",
            "field 'filters'",
            "from 1 to 65536",
        ],
        False,
    ),
    (
        "error in the second copy of a repeated block",
        with_block({"repeat": 4}, {"layers": [{"type": "conv", "filters": 4, "size": 3}]}),
        ["copy 4 of 4", "blocks.basic.layers[0] (conv 'stage.block4.conv1')", "does not fit the 2x2 input"],
        False,
    ),
    (
        "residual inside a block breaks on a stride",
        with_block({"filters": 4, "stride": 2}),
        ["blocks.basic.layers[2] (add 'stage.add')", "'stage.bn1' gives 4x4x4", "'stem' gives 8x8x4", "/ 2) + 1 = 4"],
        False,
    ),
    (
        "undeclared block parameter used",
        block_layer(0, filters="$width"),
        ["blocks.basic.layers[0]", "'$width'", "no parameter 'width'"],
        False,
    ),
    (
        "parameter outside a block",
        net(conv("a", filters="$filters"), *HEAD),  # type: ignore[arg-type]
        ["layers[0]", "only the layers of a block"],
        True,
    ),
    (
        "a name cannot be a block parameter",
        block_layer(1, name="$filters"),
        ["blocks.basic.layers[1]", "field 'name'", "letter or _"],
        True,
    ),
    (
        "block reads a later layer",
        block_layer(1, inputs="add"),
        ["blocks.basic.layers[1] (batch_norm 'stage.bn1')", "comes later"],
        False,
    ),
    (
        "recursive block",
        net(conv("stem"), {"block": "loop"}, *HEAD, blocks={"loop": {"layers": [{"block": "loop"}]}}),
        ["block 'loop' uses itself", "loop -> loop"],
        False,
    ),
    ("block without layers", with_block({"filters": 4}, {"layers": []}), ["blocks.basic", "non-empty list"], True),
    (
        "block output unknown",
        with_block({"filters": 4}, {**BASIC, "output": "nope"}),
        ["blocks.basic", "field 'output'", "none of the block's named layers"],
        False,
    ),
    (
        "block parameter named like a use field",
        with_block({"filters": 4}, {**BASIC, "params": {"repeat": 1, "filters": None}}),
        ["field 'params'", "other than block, name, repeat, inputs"],
        True,
    ),
    (
        "block named like a layer type",
        net(conv("a"), *HEAD, blocks={"conv": BASIC}),
        ["field 'blocks'", "is a layer type"],
        True,
    ),
    (
        "block use with a type too",
        net({"block": "basic", "type": "conv", "filters": 4}, *HEAD, blocks={"basic": BASIC}),
        ["field 'type'", "no type"],
        True,
    ),
    (
        "blocks not an object",
        net(conv("a"), *HEAD, blocks=[BASIC]),  # type: ignore[arg-type]
        ["field 'blocks'", "object of named blocks"],
        True,
    ),
    (
        "too many layers",
        net(
            conv("stem"),
            {"block": "basic", "filters": 4, "repeat": 1000},
            {"block": "basic", "filters": 4, "repeat": 1000},
            {"block": "basic", "filters": 4, "repeat": 1000},
            {"block": "basic", "filters": 4, "repeat": 1000},
            *HEAD,
            blocks={"basic": BASIC},
        ),
        ["more than 10000 layers"],
        False,
    ),
]


@pytest.mark.parametrize(("spec", "fragments"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_loader_rejects_with_clear_message(spec, fragments):
    assert_rejected(spec, fragments)


def test_there_are_at_least_30_graph_and_block_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("spec", "schema_detects"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_schema_agrees_with_loader(spec, schema_detects):
    assert VALIDATOR.is_valid(spec) != schema_detects


def test_valid_graph_and_block_specs_load():
    spec = parse_spec(with_block({"filters": 4, "repeat": 2}))
    names = [layer.name for layer in spec.layers]
    assert names[:4] == ["stem", "stage.block1.conv1", "stage.block1.bn1", "stage.block1.add"]
    assert spec.layer("stage.block2.add").inputs == ("stage.block2.bn1", "stage.block1.add")
    assert spec.layer("gap").inputs == ("stage.block2.add",)
    assert spec.has_state and not spec.needs_key
    both = parse_spec(net(conv("a", 6), {"type": "concat", "name": "both", "inputs": ["a", "input"]}, *HEAD))
    assert both.layer("both").output_shape == (8, 8, 10)
    VALIDATOR.validate(with_block({"filters": 4, "repeat": 2}))
