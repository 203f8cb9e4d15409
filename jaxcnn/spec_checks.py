"""The checks a spec's values go through, and the error that says where one failed.

Shared by :mod:`jaxcnn.layer_types` (each layer type's fields) and :mod:`jaxcnn.spec` (the
document, its graph and its blocks). Every check raises :class:`SpecError` through a
:class:`Where`, so the message names the file, the layer and the field, and says what is allowed.
No JAX here: specs load without it.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from jaxcnn import geometry as G
from jaxcnn.errors import JaxcnnError

Shape = tuple[int, ...]
IntPair = tuple[int, int]
PaddingPairs = tuple[IntPair, IntPair]

MAX_WINDOW = 1024  # size, stride, dilation, padding
ACTIVATION_NAMES = ("linear", "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hard_sigmoid", "hard_swish",
                    "tanh", "sigmoid", "softmax")  # fmt: skip
"""The activations a spec may name; the functions live in ``jaxcnn.layers.ACTIVATIONS``."""


class SpecError(JaxcnnError, ValueError):
    """A spec that cannot be loaded; the message says where, which field, and what is allowed.

    ``index``, ``name`` and ``layer_type`` describe the layer as written: inside a block, its place
    in the block's definition (``list`` says which list, for example ``blocks.basic.layers``) and its
    qualified name; ``trail`` lists the block uses that led there, outermost first.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "<spec>",
        index: int | None = None,
        name: str | None = None,
        layer_type: str | None = None,
        field: str | None = None,
        list_name: str = "layers",
        trail: tuple[str, ...] = (),
    ) -> None:
        self.message = message
        self.source = source
        self.index = index
        self.name = name
        self.layer_type = layer_type
        self.field = field
        self.list_name = list_name
        self.trail = trail
        super().__init__(self._render())

    def _render(self) -> str:
        where = [self.source]
        place = [clip(step, 300) for step in self.trail]
        if self.index is not None:
            layer = f"{self.list_name}[{self.index}]"
            shown = repr(clip(self.name)) if self.name else None
            described = " ".join(part for part in (self.layer_type, shown) if part)
            place.append(f"{layer} ({described})" if described else layer)
        elif self.list_name != "layers":
            place.append(self.list_name)
        if place:
            where.append(" > ".join(place))
        if self.field is not None:
            where.append(f"field '{clip(self.field)}'")
        return ": ".join([", ".join(where), self.message])


MAX_SHOWN = 80
"""The most characters of a name or key that an error message quotes (a spec may hold a 100,000-character one)."""


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` shortened for a message: its start and its end, and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 30]}...{text[-15:]} ({len(text):,} characters)"


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """ " Did you mean 'x'?" for the closest choice, or nothing."""
    if len(word) > 2 * MAX_SHOWN:  # nothing valid is that long, and difflib's time grows with the square
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class Where:
    """Where the loader is (file, list, layer, block uses), so every error carries it."""

    def __init__(self, source: str, list_name: str = "layers", trail: tuple[str, ...] = ()) -> None:
        self.origin: Callable[[str], str] = lambda name: ""
        """Where a layer's output shape came from, for merge errors (the loader sets it)."""
        self.source = source
        self.list_name = list_name
        self.trail = trail
        self.index: int | None = None
        self.name: str | None = None
        self.layer_type: str | None = None

    def at_layer(self, index: int | None, name: str | None = None, layer_type: str | None = None) -> Where:
        """A copy pointing at another layer of the same list."""
        where = Where(self.source, self.list_name, self.trail)
        where.index, where.name, where.layer_type = index, name, layer_type
        where.origin = self.origin
        return where

    def error(self, message: str, field: str | None = None) -> SpecError:
        return SpecError(
            message,
            source=self.source,
            index=self.index,
            name=self.name,
            layer_type=self.layer_type,
            field=field,
            list_name=self.list_name,
            trail=self.trail,
        )


def describe(value: Any) -> str:
    """The value as the user wrote it (JSON), shortened for an error message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    """An integer as JSON Schema sees one: 5 or 5.0, but not 5.5 and not true/false."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def int_value(at: Where, value: Any, field: str, minimum: int, maximum: int) -> int:
    """An integer (5 or 5.0) from ``minimum`` to ``maximum``."""
    if not is_int(value):
        raise at.error(f"must be an integer from {minimum} to {maximum}, got {describe(value)}", field)
    if not minimum <= value <= maximum:
        raise at.error(f"must be from {minimum} to {maximum}, got {describe(value)}", field)
    return int(value)


def pair(at: Where, value: Any, field: str, minimum: int, maximum: int) -> IntPair:
    """An int or [height, width]."""
    if is_int(value):
        n = int_value(at, value, field, minimum, maximum)
        return (n, n)
    if isinstance(value, list) and len(value) == 2 and all(is_int(v) for v in value):
        return (int_value(at, value[0], field, minimum, maximum), int_value(at, value[1], field, minimum, maximum))
    raise at.error(
        f"must be an integer or a pair [height, width] of integers from {minimum} to {maximum}, got {describe(value)}",
        field,
    )


def bool_value(at: Where, value: Any, field: str) -> bool:
    """true or false, nothing else."""
    if not isinstance(value, bool):
        raise at.error(f"must be true or false, got {describe(value)}", field)
    return value


def number(at: Where, value: Any, field: str, low: float, high: float, *, high_open: bool = False) -> float:
    """A finite JSON number in [low, high] (or [low, high) with ``high_open``)."""
    # An int is finite however long (math.isfinite(10**400) would overflow); comparing it with a float is exact.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (isinstance(value, float) and not math.isfinite(value)):
        raise at.error(f"must be a number, got {describe(value)}", field)
    if not (low <= value < high if high_open else low <= value <= high):
        interval = f"[{low:g}, {high:g})" if high_open else f"[{low:g}, {high:g}]"
        raise at.error(f"must be in {interval}, got {describe(value)}", field)
    try:
        return float(value)
    except OverflowError:
        raise at.error(f"is too large to be a number here, got {describe(value)}", field) from None


def activation(at: Where, value: Any, is_last: bool) -> str:
    """A known activation name; softmax only on the network's output layer."""
    names = list(ACTIVATION_NAMES)
    if not isinstance(value, str) or value not in ACTIVATION_NAMES:
        hint = suggest(value, names) if isinstance(value, str) else ""
        raise at.error(f"unknown activation {describe(value)}; allowed: {', '.join(names)}.{hint}", "activation")
    if value == "softmax" and not is_last:
        raise at.error(
            "softmax is allowed only on the last layer (the network's output), where it turns the network's "
            "scores into class probabilities; use relu (or another activation) here",
            "activation",
        )
    return value


def integral(value: Any) -> Any:
    """Integral floats (2.0) become ints, inside nested lists too, as JSON Schema treats them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def padding(at: Where, value: Any, size: IntPair, stride: IntPair, dilation: IntPair, hw: IntPair) -> PaddingPairs:
    """Any padding form, resolved to explicit ((top, bottom), (left, right)) pairs."""
    value = integral(value)
    if isinstance(value, str) and value not in ("valid", "same"):
        hint = suggest(value.lower(), ["valid", "same"])
        raise at.error(f"must be {G.PADDING_FORMS}; got {describe(value)}.{hint}", "padding")
    if isinstance(value, (bool, float)):
        raise at.error(f"must be {G.PADDING_FORMS}; got {describe(value)}", "padding")
    try:
        pads = G.resolve_padding(value, size, stride, dilation, hw)
    except ValueError:
        raise at.error(f"must be {G.PADDING_FORMS}, all non-negative; got {describe(value)}", "padding") from None
    if max(max(pair) for pair in pads) > MAX_WINDOW:
        raise at.error(f"must be at most {MAX_WINDOW} pixels a side, got {describe(value)}", "padding")
    return pads


def shape_text(shape: Shape) -> str:
    """(28, 28, 1) -> 28x28x1."""
    return "x".join(str(n) for n in shape)


def window_output(
    at: Where, hw: IntPair, size: IntPair, stride: IntPair, pads: PaddingPairs, dilation: IntPair, what: str
) -> IntPair:
    """Apply the output-size formula per axis, or explain with its arithmetic why it fails."""
    out = []
    for axis, axis_name in enumerate(("height", "width")):
        n, f, s, d = hw[axis], size[axis], stride[axis], dilation[axis]
        lo, hi = pads[axis]
        o = G.output_size(n, f, s, lo, hi, d)
        if o < 1:
            reach = d * (f - 1) + 1
            dilated = f" (dilation {d} makes it span {reach})" if d > 1 else ""
            raise at.error(
                f"a {shape_text(size)} {what}{dilated} does not fit the {shape_text(hw)} input: "
                f"along the {axis_name}, "
                f"floor((n + p_lo + p_hi - f) / s) + 1 = floor(({n} + {lo} + {hi} - {reach}) / {s}) + 1 = {o}, "
                "but it must be at least 1. Use a smaller size or more padding",
                "size",
            )
        out.append(o)
    return (out[0], out[1])


def check_windows_see_input(
    at: Where, hw: IntPair, size: IntPair, stride: IntPair, pads: PaddingPairs, out_hw: IntPair
) -> None:
    """Refuse pooling padding that leaves a window wholly in the padding: max pooling would output -inf
    there, and average pooling without ``count_include_pad`` 0/0. (A convolution may: its output is the bias.)"""
    for axis, axis_name in enumerate(("height", "width")):
        n, f, s, o = hw[axis], size[axis], stride[axis], out_hw[axis]
        lo, hi = pads[axis]
        last_start = (o - 1) * s - lo
        if lo >= f:
            where = f"the first window covers positions {-lo} to {f - 1 - lo}, all before the input's first pixel 0"
        elif last_start >= n:
            where = (
                f"the last window starts at (o - 1) * s - p_lo = ({o} - 1) * {s} - {lo} = {last_start}, "
                f"past the input's last pixel {n - 1}"
            )
        else:
            continue
        raise at.error(
            f"along the {axis_name}, padding ({lo}, {hi}) leaves a {f}-pixel pooling window with no input pixel: "
            f"{where}. Each side's padding must be less than the window size {f} (PyTorch allows at most half "
            "of it); use less padding or a larger window",
            "padding",
        )


def check_keys(
    at: Where, obj: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], what: str
) -> None:
    for key in obj:
        if key not in allowed:
            raise at.error(
                f"unknown field {clip(key)!r} for {what}; allowed: {', '.join(allowed)}.{suggest(key, allowed)}", key
            )
    for key in required:
        if key not in obj:
            raise at.error(f"missing required field {key!r} for {what}", key)
