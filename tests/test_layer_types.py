"""The layer registry from outside: a layer type registered by a user's own module (tests/custom_layer.py) is
known to every part of jaxcnn, and the registry refuses what it cannot use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import jaxcnn
from jaxcnn.layer_types import LAYER_TYPES, FieldInfo, Layer, RegistryError, unregister_layer
from jaxcnn.spec import SpecError, parse_spec

from conftest import ROOT
from datasets import quadrant_dataset

TESTS = Path(__file__).resolve().parent
SPEC = {"format": "jaxcnn.spec/1", "name": "custom", "input": [8, 8, 1],
        "layers": [{"type": "conv", "filters": 4, "size": 3, "padding": "same", "activation": "relu"},
                   {"type": "channel_scale", "offset": 0.5}, {"type": "max_pool", "size": 2},
                   {"type": "flatten"}, {"type": "dense", "units": 4, "activation": "softmax"}]}  # fmt: skip


@pytest.fixture
def custom() -> Iterator[type[Layer]]:
    """The outside layer type, registered for one test and forgotten after it (other tests see the built-ins)."""
    import importlib

    sys.modules.pop("custom_layer", None)
    module = importlib.import_module("custom_layer")
    yield module.ChannelScaleLayer
    unregister_layer("channel_scale")
    sys.modules.pop("custom_layer", None)


def jaxcnn_command(*args: str, modules: str = "custom_layer") -> subprocess.CompletedProcess:
    env = {**os.environ, "JAXCNN_LAYER_MODULES": modules, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "jaxcnn", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env)  # fmt: skip


def test_an_unregistered_type_says_how_to_register_it():
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC, "custom.json")
    message = str(caught.value)
    assert 'unknown layer type "channel_scale"' in message and "jaxcnn.register_layer" in message
    assert "JAXCNN_LAYER_MODULES" in message


@pytest.mark.slow
def test_an_outside_type_is_known_everywhere(custom, tmp_path):
    from jaxcnn.explorer import Explorer
    from jaxcnn.export import ExportError, export_onnx
    from jaxcnn.model import Model
    from jaxcnn.runs import train_run
    from jaxcnn.schema import spec_schema
    from jaxcnn.train import TrainConfig

    from spec_fuzzing import random_graph

    spec = parse_spec(SPEC, "custom.json")
    assert spec.layers[1].type == "channel_scale" and spec.layers[1].name == "cscale1"
    assert "channel_scale" in spec_schema()["$defs"]["layer"]["properties"]["type"]["enum"]
    row = Model(spec).summary()[1]
    assert row.settings == "offset=0.5" and row.params == 4
    rng = np.random.default_rng(0)
    drawn = {layer["type"] for _ in range(300) for layer in random_graph(rng)}
    assert "channel_scale" in drawn  # the fuzzer draws it
    result = train_run(spec, quadrant_dataset(256, 64), TrainConfig(epochs=2, batch_size=32, lr=1e-2),
                       tmp_path / "run", progress=False, verbose=False)  # fmt: skip
    assert result.metrics[-1]["test_accuracy"] > 0.5  # it trains (chance: 0.25)
    assert not np.allclose(np.asarray(result.params["cscale1"]["scale"]), 1.0)  # its own weight too
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layer_modules"] == {"channel_scale": "custom_layer"}
    network = Explorer(tmp_path / "run").network()
    assert [row["type"] for row in network["layers"]][1] == "channel_scale"
    with pytest.raises(ExportError, match=r"layer 1 \(channel_scale 'cscale1'\): channel_scale layers cannot be"):
        export_onnx(jaxcnn.load_run(tmp_path / "run"), tmp_path / "net.onnx")
    assert not (tmp_path / "net.onnx").exists()

    (tmp_path / "custom.json").write_text(json.dumps(SPEC))
    for command in (["validate"], ["summary"], ["draw", "--out", str(tmp_path / "net.png")]):
        ran = jaxcnn_command(*command[:1], str(tmp_path / "custom.json"), *command[1:])
        assert ran.returncode == 0, ran.stderr
    assert "channel_scale" in jaxcnn_command("summary", str(tmp_path / "custom.json")).stdout
    assert (tmp_path / "net.png").stat().st_size > 1000
    unregistered = jaxcnn_command("evaluate", str(tmp_path / "run"), modules="")
    assert unregistered.returncode == 1
    assert "uses the layer type 'channel_scale', which the module 'custom_layer' registers" in unregistered.stderr
    missing = jaxcnn_command("validate", str(tmp_path / "custom.json"), modules="no_such_module")
    assert missing.returncode == 1 and "JAXCNN_LAYER_MODULES names 'no_such_module'" in missing.stderr


def test_the_registry_refuses_what_it_cannot_use(custom):
    def layer_class(**attributes: Any) -> type[Layer]:
        @dataclass(frozen=True, kw_only=True)
        class Made(Layer):
            TYPE = "made"
            PREFIX = "made"
            FIELDS: ClassVar[dict[str, FieldInfo]] = {}

            @classmethod
            def resolve(cls, at: Any, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
                return cls(**common, output_shape=common["input_shape"])

            def apply(self, weights: Any, state: Any, inputs: list[Any], run: Any) -> tuple[Any, Any]:
                return inputs[0], {}

        for name, value in attributes.items():
            setattr(Made, name, value)
        return Made

    cases: list[tuple[dict[str, Any], str]] = [({"TYPE": "Made Up"}, "TYPE must be a lower-case word"),
                                 ({"TYPE": "conv"}, "'conv' is already registered by jaxcnn.window_layers.ConvLayer"),
                                 ({"PREFIX": "a-b"}, "PREFIX must be a name"),
                                 ({"FIELDS": {"name": FieldInfo({}, "")}}, "other than type, name and inputs"),
                                 ({"apply": Layer.apply}, "defines resolve")]  # fmt: skip
    for attributes, fragment in cases:
        with pytest.raises(RegistryError, match=fragment):
            jaxcnn.register_layer(layer_class(**attributes))
    with pytest.raises(RegistryError, match=r"a subclass of jaxcnn\.layer_types\.Layer"):
        jaxcnn.register_layer(dict)  # type: ignore[type-var]
    assert "made" not in LAYER_TYPES and LAYER_TYPES["channel_scale"] is custom
