"""Memory estimates, so a network too large for the machine is refused before anything is allocated."""

from __future__ import annotations

import os
from dataclasses import dataclass

from jaxcnn.errors import JaxcnnError
from jaxcnn.model import param_count
from jaxcnn.spec import NetworkSpec

FLOAT_BYTES = 4
OPTIMIZER_COPIES = 4  # parameters, gradients, and Adam's two moments


class OutOfMemoryError(JaxcnnError):
    """The estimated memory of a network or run exceeds what the machine has."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to train ``spec`` with a given batch (a lower bound: XLA adds workspace)."""

    parameters: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.data


def estimate(spec: NetworkSpec, batch_size: int, data_bytes: int = 0, *, training: bool = True) -> MemoryEstimate:
    """Parameters with gradients and optimizer state, plus every layer's activations (and, when
    ``training``, their gradients) for ``batch_size`` images."""
    params = sum(param_count(layer) for layer in spec.layers) * FLOAT_BYTES * OPTIMIZER_COPIES
    per_example = sum(element_count(layer.output_shape) for layer in spec.layers) + element_count(spec.input_shape)
    copies = 2 if training else 1  # training keeps forward values for the backward pass, and their gradients
    activations = copies * per_example * batch_size * FLOAT_BYTES
    return MemoryEstimate(params, activations, data_bytes)


def machine_bytes() -> int | None:
    """Physical memory of this machine, when the OS says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(
    spec: NetworkSpec,
    batch_size: int,
    data_bytes: int = 0,
    available: int | None = None,
    *,
    training: bool = True,
    flag: str = "--batch-size",
) -> MemoryEstimate:
    """Raise OutOfMemoryError, with the estimate and the ``flag`` that lowers it, when training (or,
    with ``training=False``, evaluating) ``batch_size`` images at a time would need more than ``available`` bytes."""
    needed = estimate(spec, batch_size, data_bytes, training=training)
    limit = machine_bytes() if available is None else available
    if limit is not None and needed.total > limit:
        what = "training" if training else "evaluating"
        raise OutOfMemoryError(
            f"{spec.source}: {what} {spec.name} with batch {batch_size} needs at least {_gib(needed.total)} "
            f"(parameters, gradients and optimizer state {_gib(needed.parameters)}, activations "
            f"{_gib(needed.activations)}, data {_gib(needed.data)}) but this machine has {_gib(limit)}. "
            f"Use a smaller {flag}, fewer filters/units, or smaller images"
        )
    return needed


def element_count(shape: tuple[int, ...]) -> int:
    """Elements in an array of ``shape`` (Python ints: no overflow)."""
    total = 1
    for n in shape:
        total *= n
    return total


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"
