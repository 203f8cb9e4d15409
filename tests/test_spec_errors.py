"""Malformed specs: each must raise SpecError with a message that names the place and the fix.

Every case also records whether JSON Schema can see the problem. ``test_schema_agrees`` then
checks that specs/schema.json rejects exactly the structural ones and accepts the rest, which
only the loader's shape arithmetic and ordering rules can catch.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jaxcnn.spec import SpecError, load_spec, loads_spec, parse_spec

from conftest import NETWORK_SPECS, SPECS_DIR
from spec_fuzzing import assert_rejected

SCHEMA = json.loads((SPECS_DIR / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def base() -> dict[str, Any]:
    return json.loads((SPECS_DIR / "article_lenet.json").read_text())


def with_layer(index: int, **changes: Any) -> dict[str, Any]:
    spec = base()
    spec["layers"][index].update(changes)
    return spec


def without(index: int, key: str) -> dict[str, Any]:
    spec = base()
    del spec["layers"][index][key]
    return spec


def top(**changes: Any) -> dict[str, Any]:
    spec = base()
    spec.update(changes)
    return spec


def tiny(*layer_list: dict[str, Any], input_shape: list[int] | None = None) -> dict[str, Any]:
    return {"format": "jaxcnn.spec/1", "input": input_shape or [4, 4, 1], "layers": list(layer_list)}


# (id, spec, fragments the message must contain, schema can detect it)
CASES: list[tuple[str, Any, list[str], bool]] = [
    ("not an object", [1, 2], ["must be a JSON object"], True),
    ("missing format", {k: v for k, v in base().items() if k != "format"}, ["missing required field 'format'"], True),
    ("wrong format", top(format="jaxcnn.spec/2"), ["field 'format'", "'jaxcnn.spec/1'"], True),
    ("unknown top-level key", top(layer=[]), ["unknown field 'layer'", "Did you mean 'layers'?"], True),
    ("name not a string", top(name=3), ["field 'name'", "must be a string"], True),
    ("input rank 2", top(input=[32, 32]), ["field 'input'", "[height, width, channels]"], True),
    ("input rank 4", top(input=[1, 32, 32, 3]), ["field 'input'", "three integers"], True),
    ("input zero", top(input=[0, 32, 3]), ["field 'input'", "from 1 to"], True),
    ("input float", top(input=[32.5, 32, 3]), ["field 'input'"], True),
    ("huge input", top(input=[10**9, 32, 3]), ["field 'input'", "from 1 to 16384"], True),
    ("layers empty", top(layers=[]), ["field 'layers'", "non-empty list"], True),
    ("layers not a list", top(layers={"type": "conv"}), ["field 'layers'"], True),
    ("layer not an object", top(layers=["conv"]), ["layers[0]", "JSON object"], True),
    ("missing type", without(0, "type"), ["layers[0]", "field 'type'", "missing"], True),
    (
        "misspelt type",
        with_layer(1, type="maxpool"),
        ["layers[1]", "unknown layer type", "Did you mean 'max_pool'?"],
        True,
    ),
    ("type not a string", with_layer(1, type=2), ["layers[1]", "unknown layer type 2"], True),
    (
        "unknown key",
        with_layer(0, filtres=8),
        ["layers[0] (conv 'conv1')", "field 'filtres'", "Did you mean 'filters'?"],
        True,
    ),
    (
        "kernel_size alias",
        with_layer(0, kernel_size=5),
        ["field 'kernel_size'", "allowed: type, name, filters, size"],
        True,
    ),
    ("missing filters", without(0, "filters"), ["layers[0]", "missing required field 'filters'"], True),
    ("missing units", without(5, "units"), ["layers[5] (dense 'dense1')", "field 'units'"], True),
    ("negative stride", with_layer(0, stride=-1), ["layers[0] (conv 'conv1')", "field 'stride'", "from 1 to"], True),
    ("zero filters", with_layer(0, filters=0), ["field 'filters'", "from 1 to 65536"], True),
    ("fractional filters", with_layer(0, filters=8.5), ["field 'filters'", "8.5"], True),
    ("bool filters", with_layer(0, filters=True), ["field 'filters'", "true"], True),
    ("string size", with_layer(0, size="5"), ["field 'size'", '"5"'], True),
    ("size triple", with_layer(0, size=[5, 5, 5]), ["field 'size'", "pair [height, width]"], True),
    ("huge filters", with_layer(0, filters=10**12), ["field 'filters'", "from 1 to 65536"], True),
    ("padding word", with_layer(0, padding="full"), ["field 'padding'", '"valid", "same"'], True),
    ("padding upper case", with_layer(0, padding="SAME"), ["field 'padding'", "Did you mean 'same'?"], True),
    ("negative padding", with_layer(0, padding=-1), ["field 'padding'", "non-negative"], True),
    ("padding nesting", with_layer(0, padding=[[1, 2, 3], [0, 0]]), ["field 'padding'"], True),
    ("unknown activation", with_layer(0, activation="rleu"), ["field 'activation'", "Did you mean 'relu'?"], True),
    ("use_bias not bool", with_layer(0, use_bias="yes"), ["field 'use_bias'", "true or false"], True),
    ("bad layer name", with_layer(0, name="conv 1"), ["field 'name'", "letter or _"], True),
    (
        "unknown pool key",
        with_layer(1, count_include_pad=True),
        ["layers[1] (max_pool 'pool1')", "count_include_pad"],
        True,
    ),
    # Only the loader can see these: they depend on shapes, order or the whole list.
    (
        "window larger than input",
        tiny({"type": "conv", "filters": 2, "size": 5}),
        [
            "layers[0] (conv 'conv1')",
            "field 'size'",
            "a 5x5 filter does not fit the 4x4 input",
            "floor((4 + 0 + 0 - 5) / 1) + 1 = 0",
        ],
        False,
    ),
    (
        "pool too large late in the net",
        with_layer(3, size=11),
        [
            "layers[3] (max_pool 'pool2')",
            "11x11 pooling window does not fit the 10x10 input",
            "floor((10 + 0 + 0 - 11) / 2) + 1 = 0",
        ],
        False,
    ),
    (
        "dilation too wide",
        tiny({"type": "conv", "filters": 1, "size": 3, "dilation": 2}),
        ["dilation 2 makes it span 5", "does not fit"],
        False,
    ),
    (
        "dense before flatten",
        tiny({"type": "dense", "units": 3}),
        ["layers[0] (dense 'dense1')", "needs a flat input", "4x4x1", 'add {"type": "flatten"}'],
        False,
    ),
    (
        "conv after flatten",
        tiny({"type": "flatten"}, {"type": "conv", "filters": 1, "size": 1}),
        ["layers[1] (conv 'conv1')", "already flat", "16 features"],
        False,
    ),
    (
        "flatten twice",
        tiny({"type": "flatten"}, {"type": "flatten"}),
        ["layers[1] (flatten 'flatten2')", "already flat"],
        False,
    ),
    (
        "softmax not last",
        with_layer(5, activation="softmax"),
        ["layers[5] (dense 'dense1')", "field 'activation'", "only on the last layer"],
        False,
    ),
    ("duplicate names", with_layer(2, name="conv1"), ["layers[2]", "field 'name'", "already used by layers[0]"], False),
    (
        "groups do not divide",
        tiny({"type": "conv", "filters": 3, "size": 1, "groups": 2}, input_shape=[4, 4, 2]),
        ["field 'groups'", "must divide both the input channels (2) and the filters (3)"],
        False,
    ),
    (
        "padded avg_pool without count_include_pad",
        tiny({"type": "avg_pool", "size": 2, "padding": 1}),
        ["layers[0] (avg_pool 'pool1')", "field 'count_include_pad'", "PyTorch", "Keras"],
        False,
    ),
    (
        "max_pool window wholly in the padding",
        tiny({"type": "max_pool", "size": 1, "padding": 1}),
        ["layers[0] (max_pool 'pool1')", "field 'padding'", "no input pixel", "positions -1 to -1"],
        False,
    ),
    (
        "avg_pool last window past the input",
        tiny({"type": "avg_pool", "size": 2, "padding": [[0, 3], [0, 0]], "count_include_pad": False}),
        ["field 'padding'", "along the height", "(o - 1) * s - p_lo = (3 - 1) * 2 - 0 = 4", "past the input's last"],
        False,
    ),
    (
        "pool padding as large as the window on the width",
        tiny({"type": "avg_pool", "size": [1, 2], "padding": [[0, 0], [2, 0]], "count_include_pad": True}),
        ["along the width", "padding (2, 0)", "less than the window size 2"],
        False,
    ),
]


@pytest.mark.parametrize(("spec", "fragments"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_loader_rejects_with_clear_message(spec, fragments):
    assert_rejected(spec, fragments)


def test_there_are_at_least_30_malformed_cases():
    assert len(CASES) + len(TEXT_CASES) >= 30


@pytest.mark.parametrize(("spec", "schema_detects"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_schema_agrees_with_loader(spec, schema_detects):
    schema_valid = VALIDATOR.is_valid(spec)
    assert schema_valid != schema_detects


@pytest.mark.parametrize("path", NETWORK_SPECS, ids=[p.stem for p in NETWORK_SPECS])
def test_schema_and_loader_accept_every_shipped_spec(path: Path):
    load_spec(path)
    VALIDATOR.validate(json.loads(path.read_text()))


VALID_VARIANTS = [
    tiny({"type": "conv", "filters": 2, "size": [3, 1], "stride": [1, 2], "padding": [[1, 0], [0, 2]], "dilation": 1}),
    tiny({"type": "conv", "filters": 2, "size": 3, "padding": [1, 1], "use_bias": False, "activation": "gelu"}),
    tiny({"type": "avg_pool", "size": 2, "padding": "same", "count_include_pad": False}),
    tiny({"type": "max_pool", "size": 3, "stride": 1, "padding": "same", "name": "my_pool"}),
    tiny({"type": "conv", "filters": 2.0, "size": 3.0}),  # integral floats are integers in JSON Schema too
    tiny({"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}),
]


@pytest.mark.parametrize("spec", VALID_VARIANTS)
def test_schema_and_loader_accept_valid_variants(spec):
    parse_spec(copy.deepcopy(spec))
    VALIDATOR.validate(spec)


TEXT_CASES: list[tuple[str, bytes, str]] = [
    ("empty file", b"", "is empty"),
    ("whitespace only", b"  \n", "is empty"),
    ("bad JSON", b'{"format": "jaxcnn.spec/1",', "is not valid JSON"),
    ("trailing comma", b'{"format": "jaxcnn.spec/1", "input": [1,1,1], "layers": [],}', "line 1"),
    ("not UTF-8", b'{"name": "\xff"}', "is not UTF-8"),
    ("NaN", b'{"format": "jaxcnn.spec/1", "input": [NaN, 1, 1], "layers": []}', "NaN is not a JSON number"),
    ("duplicate key", b'{"format": "jaxcnn.spec/1", "format": "x"}', "appears twice"),
    ("deep nesting", b"[" * 100000 + b"]" * 100000, "not valid JSON"),
]


@pytest.mark.parametrize(("text", "fragment"), [(c[1], c[2]) for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_bad_text_is_a_spec_error(text, fragment, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.json")
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)


def test_error_fields_are_available_to_programs():
    with pytest.raises(SpecError) as info:
        loads_spec(json.dumps(with_layer(0, stride=0)), "x.json")
    err = info.value
    assert (err.source, err.index, err.name, err.layer_type, err.field) == ("x.json", 0, "conv1", "conv", "stride")


# ---------------------------------------------------------------- issue 27: names, block parameters, size, numbers

CONV = {"type": "conv", "filters": "$filters", "size": 3, "padding": "same", "activation": "relu"}
BLOCK = {"params": {"filters": None, "stride": 1}, "layers": [CONV]}


def with_block_use(use: dict[str, Any], block: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"format": "jaxcnn.spec/1", "input": [8, 8, 1], "blocks": {"basic": block or BLOCK},
            "layers": [{"block": "basic", "name": "stage", **use}, {"type": "flatten"},
                       {"type": "dense", "units": 2}]}  # fmt: skip


def test_a_block_parameter_no_layer_reads_is_refused_where_it_is_given():
    """Issue 27 (7): before, `stride: 2` was accepted and changed nothing."""
    parse_spec(with_block_use({"filters": 4}))  # declared, unread and not given: nothing to refuse
    with pytest.raises(SpecError) as caught:
        parse_spec(with_block_use({"filters": 4, "stride": 2}), "net.json")
    message = str(caught.value)
    for fragment in ("net.json, layers[0] (block basic 'stage'), field 'stride'", "declares the parameter 'stride'",
                     'none of its layers reads "$stride"', "would change nothing"):  # fmt: skip
        assert fragment in message, message
    nested = {"params": {"filters": None, "stride": 1},
              "layers": [{"block": "inner", "width": "$filters", "step": "$stride"}]}  # fmt: skip
    inner = {"params": {"width": None, "step": 1},
             "layers": [{"type": "conv", "filters": "$width", "size": 3, "stride": "$step"}]}  # fmt: skip
    spec = with_block_use({"filters": 4, "stride": 2}, nested)
    spec["blocks"]["inner"] = inner
    assert parse_spec(spec).layers[0].stride == (2, 2)  # type: ignore[attr-defined]  # read through an inner block's use: not refused


@pytest.mark.parametrize("where", ["layer name", "block name", "block use name", "parameter name", "output"])
def test_a_name_ending_in_a_newline_is_refused(where):
    """Issue 27 (8): the name pattern's `$` matched before a final newline, so "conv1\\n" stood beside "conv1"."""
    spec = with_block_use({"filters": 4})
    if where == "layer name":
        spec["layers"][1]["name"] = "flat\n"
    elif where == "block name":
        spec["blocks"] = {"basic\n": BLOCK}
        spec["layers"][0]["block"] = "basic\n"
    elif where == "block use name":
        spec["layers"][0]["name"] = "stage\n"
    elif where == "parameter name":
        spec["blocks"]["basic"] = {**BLOCK, "params": {"filters": None, "stride\n": 1}}
    else:
        spec["layers"][0]["filters"] = "$filters\n"  # not a parameter reference: a plain (bad) value
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_an_oversized_expansion_is_refused_before_anything_is_built(monkeypatch):
    """Issue 27 (12): a large block-parameter default was copied into every expanded layer before the
    10,000-layer error (50 s and 1.6 GB for a 129 KB spec; MemoryError at 690 KB)."""
    from jaxcnn import spec as S

    big = {"params": {"filters": None, "stride": 1, "pad": [[1, 1]] * 2000},
           "layers": [{"type": "conv", "filters": "$filters", "size": 3, "padding": "same"},
                      {"type": "activation", "activation": "relu"}] * 3}  # fmt: skip
    spec = with_block_use({"filters": 4, "repeat": 1000}, big)
    spec["layers"][1:1] = [{"block": "basic", "filters": 4, "repeat": 1000}]
    monkeypatch.setattr(S._Expander, "expand", lambda *a: pytest.fail("the expansion started"))
    with pytest.raises(SpecError, match=r"expands to more than 10000 layers: its 4 entries make 12,002 \(block uses"):
        parse_spec(spec, "big.json")
    plain = {"format": "jaxcnn.spec/1", "input": [4, 4, 1], "layers": [{"type": "flatten"}] * 10001}
    with pytest.raises(SpecError) as caught:
        parse_spec(plain)
    assert "more than 10000 layers: it lists 10,001" in str(caught.value) and "repeat" not in str(caught.value)


def test_a_huge_integer_is_an_error_and_validate_goes_on(tmp_path, capsys):
    """Issue 27 (13): a 401-digit epsilon raised OverflowError and stopped validate before the next file."""
    from jaxcnn import cli

    spec = tiny({"type": "conv", "filters": 2, "size": 3}, {"type": "batch_norm", "epsilon": 10**400},
                {"type": "flatten"}, {"type": "dense", "units": 2})  # fmt: skip
    (tmp_path / "huge.json").write_text(json.dumps(spec))
    (tmp_path / "fine.json").write_text(json.dumps(base()))
    assert cli.main(["validate", str(tmp_path / "huge.json"), str(tmp_path / "fine.json")]) == 1
    out, err = capsys.readouterr()
    assert "field 'epsilon': must be in [0, 1], got 1000000" in err and "Traceback" not in err
    assert out.startswith(f"ok: {tmp_path / 'fine.json'}")


def test_long_names_are_clipped_in_messages_keeping_both_ends():
    """Issue 27 (17): a 100,000-character layer name made a 100 KB error line."""
    name = "start_" + "x" * 100_000 + "_end"
    for spec in (tiny({"type": "flatten", "name": name}, {"type": "dense", "units": 2}),
                 tiny({"type": "flatten"}, {"type": "dense", "units": 2, "inputs": name}),
                 tiny({"type": "flatten", name: 1}, {"type": "dense", "units": 2})):  # fmt: skip
        with pytest.raises(SpecError) as caught:
            parse_spec(spec)
        message = str(caught.value)
        assert len(message) < 600 and "start_xxx" in message and "x_end" in message, message[:1000]
        assert "(100,010 characters)" in message
