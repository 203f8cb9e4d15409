"""Spec fuzzing with hypothesis: whatever the input, the loader raises SpecError or returns a spec
that JSON Schema accepts and whose predicted shapes are the shapes the model produces.

``experiments/fuzz_specs.py`` runs the same properties over many more cases.
"""

from __future__ import annotations

import contextlib
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxcnn.spec import SpecError, loads_spec, parse_spec

from conftest import NETWORK_SPECS, SPECS_DIR
from spec_fuzzing import check_accepted, json_values, mutated_specs

VALIDATOR = jsonschema.Draft202012Validator(json.loads((SPECS_DIR / "schema.json").read_text()))
# ResNet-56 is ResNet-20 with longer repeats: left out, as tracing its 200 layers per example is slow.
BASES = [json.loads(p.read_text()) for p in NETWORK_SPECS if p.stem != "resnet56_cifar10"]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values())
def test_random_json_values(value):
    try:
        spec = parse_spec(value, "fuzz.json")
    except SpecError:
        return
    check_accepted(spec, value, VALIDATOR, shapes=False)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs(BASES))
def test_mutated_specs(value):
    try:
        spec = parse_spec(value, "fuzz.json")
    except SpecError as err:
        assert str(err).startswith("fuzz.json")
        return
    check_accepted(spec, value, VALIDATOR, shapes=True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(raw):
    with contextlib.suppress(SpecError):
        loads_spec(raw, "fuzz.json")
