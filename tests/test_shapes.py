"""Every layer's predicted shape (from the spec) equals the shape it produces (from apply)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.model import Model, param_shapes
from jaxcnn.spec import SpecError, layer_fields, load_spec, parse_spec

from spec_fuzzing import random_graph


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


@pytest.mark.slow
def test_random_graphs_of_every_layer_type():
    """Random valid specs mixing every type, padding form and merge; invalid draws must be SpecErrors."""
    rng = np.random.default_rng(0)
    checked: set[str] = set()
    loaded = 0
    for _ in range(500):
        layers = random_graph(rng)
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
    assert checked == set(layer_fields())
    assert loaded >= 100
