"""A layer type defined outside jaxcnn, as a user would write one (the registry's own test uses it).

``channel_scale`` multiplies each channel by a learned factor and adds a fixed ``offset``: one field with a
default, one parameter, no state, and no ONNX form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jaxcnn
from jaxcnn import spec_checks as C
from jaxcnn.layer_types import FieldInfo, Layer, Pass


@jaxcnn.register_layer
@dataclass(frozen=True, kw_only=True)
class ChannelScaleLayer(Layer):
    """Each channel times a learned factor, plus a fixed offset."""

    TYPE = "channel_scale"
    PREFIX = "cscale"
    DOC = "each channel times a learned factor, plus a fixed offset"
    FIELDS: ClassVar[dict[str, FieldInfo]] = {
        "offset": FieldInfo({"type": "number", "default": 0.0}, "added after the scaling"),
    }

    offset: float

    @classmethod
    def resolve(cls, at: C.Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        offset = C.number(at, cls.field_value(raw, "offset"), "offset", -1e6, 1e6)
        return cls(**common, output_shape=common["input_shape"], offset=offset)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"scale": (self.input_shape[-1],)}

    def settings_text(self) -> str:
        return f"offset={self.offset:g}"

    def apply(self, weights: Any, state: Any, inputs: list[Any], mode: Pass) -> tuple[Any, Any]:
        return inputs[0] * weights["scale"] + self.offset, {}
