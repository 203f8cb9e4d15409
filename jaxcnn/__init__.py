"""jaxcnn: convolutional networks from declarative JSON specs, as pure JAX functions.

The core import is light: ``import jaxcnn`` loads only the spec reader. ``jaxcnn.layers`` and
``jaxcnn.model`` bring in JAX when you import them (or touch ``jaxcnn.Model``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxcnn.spec import FORMAT, NetworkSpec, SpecError, load_spec, loads_spec, parse_spec

if TYPE_CHECKING:
    from jaxcnn.model import Model

__version__ = "0.1.0"
__all__ = ["FORMAT", "Model", "NetworkSpec", "SpecError", "load_spec", "loads_spec", "parse_spec"]


def __getattr__(name: str) -> Any:
    if name == "Model":
        from jaxcnn.model import Model

        return Model
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")
