"""Copies of a repeated block that differ only in their weights, run as one ``lax.scan``.

A spec's ``"repeat": N`` expands a block into N copies (``stage1.block1.conv1``, ...). Where
consecutive copies are the same layers with the same shapes and settings, the network can run
them as one loop over their stacked weights: XLA compiles the block's body once instead of N
times, so compile time stops growing with depth (Flax's ``nn.scan`` does this for Flax models).
The values are the same as the copies run one after another; only float rounding of the
stacked gradient's sums may differ.

A run is scanned when each copy reads one value from outside (the previous copy's output, of the
same shape as its own output) and no layer in it draws random numbers (dropout folds the layer's
index into its key, which differs per copy). Nothing outside a block reads the layers inside its
copies (specs cannot name them), so only each copy's output leaves the loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from jaxcnn.layer_base import Layer
from jaxcnn.spec import draws_random

_COPY_NAME = re.compile(r"^(?P<use>.+)\.block(?P<copy>\d+)\.(?P<local>[^.].*)$")
MIN_COPIES = 4
"""The fewest copies run as a loop. On the CPU, shorter runs (ResNet-20's 2 and 3) trained slower as
loops, the loop's fixed cost (stacking the weights and their gradients) unpaid, while longer ones
(ResNet-56's 8 and 9) trained faster and compiled in half the time: docs/performance.md."""
CARRY = "\0carry"
"""The local name of the value a copy reads from outside: the previous copy's output."""


@dataclass(frozen=True)
class RepeatRun:
    """Consecutive identical copies of a block: ``copies[k]`` is copy k's layers in order."""

    copies: tuple[tuple[Layer, ...], ...]
    carry_in: str
    """The name of the value the first copy reads (the layer before the run, or the input)."""

    @property
    def template(self) -> tuple[Layer, ...]:
        """The first copy's layers: what the loop's body applies, with each copy's weights."""
        return self.copies[0]

    @property
    def local_names(self) -> list[str]:
        """The template's layers' names within their copy (``conv1``, ``bn1``, ...), in order."""
        return [local_name(layer) for layer in self.template]

    @property
    def output(self) -> str:
        return self.copies[-1][-1].name

    @property
    def names(self) -> frozenset[str]:
        return frozenset(layer.name for copy in self.copies for layer in copy)

    def local_inputs(self, layer: Layer) -> tuple[str, ...]:
        """A template layer's inputs as local names within its copy (``CARRY`` for the copy's input)."""
        return _local_inputs(layer, _prefix(self.template))


def _prefix(copy: tuple[Layer, ...]) -> str:
    return copy[0].name[: len(copy[0].name) - len(local_name(copy[0]))]


def local_name(layer: Layer) -> str:
    """A copy's layer's name within its copy (``conv1`` of ``stage1.block2.conv1``)."""
    match = _COPY_NAME.match(layer.name)
    assert match is not None
    return match["local"]


def _local_inputs(layer: Layer, prefix: str) -> tuple[str, ...]:
    return tuple(name[len(prefix) :] if name.startswith(prefix) else CARRY for name in layer.inputs)


def _signature(copy: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """The copy with its positions and qualified names taken out: equal for interchangeable copies."""
    prefix = _prefix(copy)
    return tuple(replace(layer, index=0, name=local_name(layer), inputs=_local_inputs(layer, prefix)) for layer in copy)


def _outside_inputs(copy: tuple[Layer, ...]) -> set[str]:
    prefix = _prefix(copy)
    return {name for layer in copy for name in layer.inputs if not name.startswith(prefix)}


def _copies(layers: Sequence[Layer]) -> list[list[tuple[Layer, ...]]]:
    """The layers grouped into block uses with their copies in order: [[copy1, copy2, ...], ...]."""
    uses: list[list[tuple[Layer, ...]]] = []
    current: tuple[str, int] | None = None
    for layer in layers:
        match = _COPY_NAME.match(layer.name)
        key = (match["use"], int(match["copy"])) if match else None
        if key is None:
            current = None
            continue
        if current is not None and key == current:
            uses[-1][-1] = (*uses[-1][-1], layer)
        elif current is not None and key[0] == current[0] and key[1] == current[1] + 1:
            uses[-1].append((layer,))
        else:
            uses.append([(layer,)])
        current = key
    return uses


def find_runs(layers: Sequence[Layer]) -> list[RepeatRun]:
    """Every run of ``MIN_COPIES`` or more interchangeable consecutive copies in the expanded network."""
    runs = []
    for copies in _copies(layers):
        group: list[tuple[Layer, ...]] = []
        for copy in copies:
            if group and _signature(copy) == _signature(group[0]) and _outside_inputs(copy) == {group[-1][-1].name}:
                group.append(copy)
                continue
            runs.append(group)
            group = [copy]
        runs.append(group)
    return [run for run in (_run(group) for group in runs if len(group) >= MIN_COPIES) if run is not None]


def _run(group: list[tuple[Layer, ...]]) -> RepeatRun | None:
    first = group[0]
    outside = _outside_inputs(first)
    if len(outside) != 1:
        return None
    carry_in = outside.pop()
    if first[-1].output_shape != _shape_of(first, carry_in):
        return None
    if any(draws_random(layer) for copy in group for layer in copy):
        return None
    return RepeatRun(tuple(group), carry_in)


def _shape_of(copy: tuple[Layer, ...], name: str) -> Any:
    for layer in copy:
        for input_name, shape in zip(layer.inputs, layer.input_shapes or (layer.input_shape,), strict=False):
            if input_name == name:
                return shape
    return None
