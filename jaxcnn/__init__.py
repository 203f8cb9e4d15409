"""jaxcnn: convolutional networks from declarative JSON specs, as pure JAX functions.

The core import is light: ``import jaxcnn`` loads only the spec reader. ``jaxcnn.layers`` and
``jaxcnn.model`` bring in JAX when you import them (or touch ``jaxcnn.Model``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxcnn.errors import JaxcnnError
from jaxcnn.layer_types import register_layer
from jaxcnn.spec import FORMAT, NetworkSpec, SpecError, load_spec, loads_spec, parse_spec

if TYPE_CHECKING:
    from jaxcnn.export import load_exported
    from jaxcnn.model import Model
    from jaxcnn.runs import Run, load_run

__version__ = "0.1.0"
__all__ = [
    "FORMAT",
    "JaxcnnError",
    "Model",
    "NetworkSpec",
    "Run",
    "SpecError",
    "load_exported",
    "load_run",
    "load_spec",
    "loads_spec",
    "parse_spec",
    "register_layer",
]

_LAZY = {"Model": "jaxcnn.model", "Run": "jaxcnn.runs", "load_run": "jaxcnn.runs", "load_exported": "jaxcnn.export"}


def __getattr__(name: str) -> Any:
    """``jaxcnn.Model``, ``jaxcnn.Run`` and ``jaxcnn.load_run`` import JAX only when first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")
