"""Helpers of the spec tests: hypothesis strategies, random valid graphs, and the checks every accepted
or rejected spec must pass."""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from jaxcnn.layer_types import LAYER_TYPES, PROVIDERS
from jaxcnn.model import Model
from jaxcnn.spec import (
    BLOCK_FIELDS,
    BLOCK_USE_FIELDS,
    TOP_LEVEL_FIELDS,
    NetworkSpec,
    SpecError,
    layer_fields,
    parse_spec,
)

KEYS = sorted({*TOP_LEVEL_FIELDS, *(f for fields in layer_fields().values() for f in fields), *BLOCK_FIELDS,
               *BLOCK_USE_FIELDS, "kernel_size", "strides", "filters"})  # fmt: skip
WORDS = [*layer_fields(), "relu", "softmax", "valid", "same", "jaxcnn.spec/1", "", "input", "$filters", "basic", "bn1"]


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON value, biased towards the spec's own words and small, large and odd numbers."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 70), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=True), st.sampled_from(WORDS), st.text(max_size=8),
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


@st.composite
def mutated_specs(draw: st.DrawFn, bases: list[dict[str, Any]]) -> Any:
    """A shipped spec with a few random edits: keys dropped, renamed or retyped, values replaced, in the
    top level, the layers or the blocks' layers."""
    spec = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        layers = spec.get("layers") if isinstance(spec, dict) else None
        blocks = spec.get("blocks") if isinstance(spec, dict) else None
        if isinstance(blocks, dict) and blocks and draw(st.booleans()):
            block = blocks[draw(st.sampled_from(sorted(blocks)))]
            layers = block.get("layers") if isinstance(block, dict) else layers
        target: Any = spec
        if isinstance(layers, list) and layers and draw(st.booleans()):
            target = layers[draw(st.integers(0, len(layers) - 1))]
        if not isinstance(target, dict) or not target:
            break
        key = draw(st.sampled_from(sorted(target)))
        action = draw(st.sampled_from(["drop", "rename", "replace", "nest", "duplicate_layer"]))
        if action == "drop":
            del target[key]
        elif action == "rename":
            target[draw(st.sampled_from(KEYS))] = target.pop(key)
        elif action == "replace":
            target[key] = draw(json_values(max_leaves=4))
        elif action == "nest":
            target[key] = [target[key]]
        elif isinstance(layers, list) and layers:
            layers.insert(draw(st.integers(0, len(layers))), copy.deepcopy(draw(st.sampled_from(layers))))
    return spec


def check_accepted(spec: NetworkSpec, value: Any, validator: Any, shapes: bool = True) -> None:
    """An accepted spec must be schema-valid, and (when ``shapes``) its predicted shapes real."""
    errors = list(validator.iter_errors(value))
    assert not errors, f"loader accepted what the schema rejects: {errors[0].message}"
    if shapes:
        model = Model(spec)
        params = jax.eval_shape(model.init, jax.random.key(0))
        state = jax.eval_shape(model.init_state)
        produced = jax.eval_shape(
            model.intermediates, params, jax.ShapeDtypeStruct((2, *spec.input_shape), jnp.float32), state
        )
        for layer in spec.layers:
            assert produced[layer.name].shape == (2, *layer.output_shape), layer.name


def random_layer(rng: np.random.Generator, flat: bool, earlier: list[str], kinds: list[str] | None = None) -> dict:
    """One random layer of a registered type that takes this input (``kinds``: only these); merges read the layer
    before and a random earlier one (so every layer reaches the end). Built-in types get fields drawn to
    exercise them; any other registered type gets its required fields from their schemas."""
    rank = 1 if flat else 3
    choices = [k for k, cls in LAYER_TYPES.items() if rank in cls.INPUT_RANKS and (kinds is None or k in kinds)]
    kind = str(rng.choice(choices))
    layer: dict = {"type": kind}
    if LAYER_TYPES[kind].MERGES:
        layer["inputs"] = [earlier[-1], str(rng.choice(earlier))]
    elif kind == "dense":
        layer.update(units=int(rng.integers(1, 9)), activation=str(rng.choice(["relu", "tanh", "linear"])))
    elif kind == "dropout":
        layer["rate"] = float(rng.choice([0.0, 0.25, 0.5]))
    elif kind == "batch_norm":
        layer.update(momentum=float(rng.choice([0.0, 0.9])), scale=bool(rng.integers(2)), center=bool(rng.integers(2)))
    elif kind == "activation":
        layer["activation"] = str(rng.choice(["relu", "gelu", "sigmoid"]))
    elif kind in ("conv", "max_pool", "avg_pool"):
        side = int(rng.integers(1, 4))
        layer["size"] = side if rng.integers(2) else [side, int(rng.integers(1, 4))]
        if rng.integers(2):
            layer["stride"] = int(rng.integers(1, 3))
        layer["padding"] = rng.choice(np.array(["valid", "same", 1, [1, 0], [[0, 1], [2, 0]]], dtype=object))
        if isinstance(layer["padding"], (np.integer, int)):
            layer["padding"] = int(layer["padding"])
    elif kind not in BUILT_IN:
        layer.update(_from_schemas(rng, LAYER_TYPES[kind].FIELDS))
    if kind == "conv":
        layer["filters"] = 2 * int(rng.integers(1, 3))
        layer["groups"] = int(rng.choice([1, 2]))
        layer["dilation"] = int(rng.choice([1, 1, 2]))
        layer["activation"] = "relu"
    if kind == "avg_pool":
        layer["count_include_pad"] = bool(rng.integers(2))
    return layer


BUILT_IN = {kind for kind, module in PROVIDERS.items() if module.startswith("jaxcnn.")}


def _from_schemas(rng: np.random.Generator, fields: dict[str, Any]) -> dict[str, Any]:
    """Values for a layer type the fuzzer has no drawing of its own for: each field with a default, half the
    time, and each required field, from its schema (an enum's member, a number in its range, a boolean)."""
    values: dict[str, Any] = {}
    for name, info in fields.items():
        schema = info.schema
        if "default" in schema and not info.required:
            if rng.integers(2):
                values[name] = schema["default"]
        elif "enum" in schema:
            values[name] = schema["enum"][int(rng.integers(len(schema["enum"])))]
        elif schema.get("type") == "boolean":
            values[name] = bool(rng.integers(2))
        elif schema.get("type") in ("integer", "number"):
            values[name] = int(schema.get("minimum", 1)) + int(rng.integers(3))
    return values


def random_graph(rng: np.random.Generator, max_layers: int = 6, kinds: list[str] | None = None) -> list[dict]:
    """A random list of 1 to ``max_layers`` named layers of registered types (``kinds``: only these), merges
    reading earlier ones (see :func:`random_layer`)."""
    layers: list[dict] = []
    names, flat = ["input"], False
    for k in range(int(rng.integers(1, max_layers + 1))):
        layer = random_layer(rng, flat, names, kinds)
        layer["name"] = f"l{k}"
        flat = flat or layer["type"] in ("flatten", "global_avg_pool", "global_max_pool")  # what makes a vector
        layers.append(layer)
        names.append(layer["name"])
    return layers


def assert_rejected(spec: Any, fragments: list[str]) -> None:
    """``spec`` must be a SpecError whose message starts with the file and contains every fragment."""
    with pytest.raises(SpecError) as info:
        parse_spec(copy.deepcopy(spec), "bad.json")
    message = str(info.value)
    assert message.startswith("bad.json"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
