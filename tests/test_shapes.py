"""Every layer's predicted shape (from the spec) equals the shape it produces (from apply)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.model import Model, param_shapes
from jaxcnn.spec import LAYER_FIELDS, SpecError, load_spec, parse_spec


def _check_shapes(model: Model, batch: int = 2) -> None:
    params = jax.eval_shape(model.init, jax.random.key(0))  # shapes only: no weights are computed
    x = jax.ShapeDtypeStruct((batch, *model.input_shape), jnp.float32)
    state = jax.eval_shape(model.init_state)
    produced = jax.eval_shape(model.intermediates, params, x, state)
    for layer in model.spec.layers:
        assert produced[layer.name].shape == (batch, *layer.output_shape), layer.name
        for field, shape in param_shapes(layer).items():
            assert params[layer.name][field].shape == shape
        for field, shape in layer.state_shapes().items():
            assert state[layer.name][field].shape == shape
    assert sum(int(np.prod(v.shape)) for leaf in params.values() for v in leaf.values()) == model.param_count()


def test_every_shipped_spec(spec_path):
    _check_shapes(Model(load_spec(spec_path)))


def _random_layer(rng: np.random.Generator, flat: bool, earlier: list[str]) -> dict:
    """One random layer; merges read the layer before and a random earlier one (so every layer reaches the end)."""
    if flat:
        kind = str(rng.choice(["dense", "dense", "dropout", "batch_norm", "activation", "add", "concat"]))
    else:
        kind = str(rng.choice(["conv", "conv", "max_pool", "avg_pool", "flatten", "batch_norm", "dropout",
                               "global_avg_pool", "global_max_pool", "activation", "add", "concat"]))  # fmt: skip
    layer: dict = {"type": kind}
    if kind in ("add", "concat"):
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
    if kind == "conv":
        layer["filters"] = 2 * int(rng.integers(1, 3))
        layer["groups"] = int(rng.choice([1, 2]))
        layer["dilation"] = int(rng.choice([1, 1, 2]))
        layer["activation"] = "relu"
    if kind == "avg_pool":
        layer["count_include_pad"] = bool(rng.integers(2))
    return layer


@pytest.mark.slow
def test_random_graphs_of_every_layer_type():
    """Random valid specs mixing every type, padding form and merge; invalid draws must be SpecErrors."""
    rng = np.random.default_rng(0)
    checked: set[str] = set()
    loaded = 0
    for _ in range(500):
        layers: list[dict] = []
        names = ["input"]
        flat = False
        for k in range(int(rng.integers(1, 7))):
            layer = _random_layer(rng, flat, names)
            layer["name"] = f"l{k}"
            flat = flat or layer["type"] in ("flatten", "global_avg_pool", "global_max_pool")
            layers.append(layer)
            names.append(layer["name"])
        spec_dict = {
            "format": "jaxcnn.spec/1",
            "input": [int(rng.integers(4, 13)), int(rng.integers(4, 13)), 2],
            "layers": layers,
        }
        try:
            spec = parse_spec(spec_dict)
        except SpecError:
            continue
        _check_shapes(Model(spec), batch=int(rng.integers(1, 4)))
        checked.update(layer.type for layer in spec.layers)
        loaded += 1
    assert checked == set(LAYER_FIELDS)
    assert loaded >= 100
