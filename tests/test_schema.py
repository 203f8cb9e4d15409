"""specs/schema.json is what the layer registry generates (python -m jaxcnn.schema)."""

from __future__ import annotations

import json

from jaxcnn.schema import spec_schema

from conftest import SPECS_DIR


def test_committed_schema_is_the_generated_one():
    committed = json.loads((SPECS_DIR / "schema.json").read_text())
    assert committed == spec_schema(), "regenerate it: python -m jaxcnn.schema > specs/schema.json"
