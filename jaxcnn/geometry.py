"""Window arithmetic in plain Python: padding forms and the output-size formula.

Shared by :mod:`jaxcnn.layers` (at trace time) and :mod:`jaxcnn.spec` (at load time, without
importing JAX). Padding is written the article's way and normalised once by
:func:`resolve_padding`:

- ``"valid"``: no padding; the window only visits positions where it fits.
- ``"same"``: output size = ceil(n / s); the extra pixel, when the total is odd, goes on the
  high side (bottom/right), as TensorFlow and XLA do.
- an int ``p``: p pixels on every side.
- ``(ph, pw)``: ph pixels top and bottom, pw left and right.
- ``((top, bottom), (left, right))``: explicit pairs, asymmetric allowed.

The output size along one axis is ``floor((n + p_lo + p_hi - d * (f - 1) - 1) / s) + 1``; with
dilation ``d = 1`` this is the article's ``(n + 2p - f) / s + 1``. The article calls the ``+ 1``
"adding our bias"; it actually counts the window's first position. The fraction counts how
many further steps of ``s`` fit after that first position: a window that fits exactly once
(``n + 2p = f``) gives one output, not zero.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Union

IntPair = tuple[int, int]
PaddingPairs = tuple[IntPair, IntPair]
PaddingLike = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

PADDING_FORMS = (
    '"valid", "same", an int p (p on every side), [ph, pw] (per axis, both sides) or [[top, bottom], [left, right]]'
)


def is_int(value: object) -> bool:
    """True for Python and NumPy integers, but not for bools (``True`` is not a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_pair(value: int | Sequence[int], what: str, minimum: int = 1) -> IntPair:
    """Normalise an int or a pair of ints (height, width) to a tuple, checking the minimum.

    Raises ``ValueError`` quoting the bad value, so callers never see an XLA error instead.
    """
    if is_int(value):
        pair = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{what} must be an int or a pair [height, width] of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value!r}")
    return pair


def output_size(n: int, size: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1) -> int:
    """Output length along one axis: floor((n + p_lo + p_hi - d*(f-1) - 1) / s) + 1.

    Returns a value < 1 when the (dilated) window does not fit the padded input; callers
    decide how to report that.
    """
    effective = dilation * (size - 1) + 1
    return (n + pad_lo + pad_hi - effective) // stride + 1


def same_padding(n: int, size: int, stride: int, dilation: int) -> IntPair:
    """The (lo, hi) padding that makes the output ceil(n / s) long, extra pixel on the high side."""
    effective = dilation * (size - 1) + 1
    out = -(-n // stride)
    total = max((out - 1) * stride + effective - n, 0)
    return (total // 2, total - total // 2)


def resolve_padding(
    padding: PaddingLike,
    size: IntPair,
    stride: IntPair,
    dilation: IntPair = (1, 1),
    input_hw: IntPair | None = None,
) -> PaddingPairs:
    """Turn any accepted padding form into explicit ((top, bottom), (left, right)) pairs.

    ``input_hw`` is needed only for ``"same"``. Raises ``ValueError`` that lists every accepted
    form when the value is none of them.
    """
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return ((0, 0), (0, 0))
        if word == "same":
            if input_hw is None:
                raise ValueError('padding "same" needs the input height and width')
            return (
                same_padding(input_hw[0], size[0], stride[0], dilation[0]),
                same_padding(input_hw[1], size[1], stride[1], dilation[1]),
            )
        raise ValueError(f"padding must be {PADDING_FORMS}; got the string {padding!r}")
    if is_int(padding):
        p = int(padding)  # type: ignore[arg-type]
        pairs: PaddingPairs = ((p, p), (p, p))
    elif isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(is_int(v) for v in padding):
            ph, pw = (int(v) for v in padding)  # type: ignore[arg-type]
            pairs = ((ph, ph), (pw, pw))
        elif all(isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(x) for x in v) for v in padding):
            (t, b), (left, r) = ((int(x) for x in v) for v in padding)  # type: ignore[union-attr]
            pairs = ((t, b), (left, r))
        else:
            raise ValueError(f"padding must be {PADDING_FORMS}; got {padding!r}")
    else:
        raise ValueError(f"padding must be {PADDING_FORMS}; got {padding!r}")
    if min(min(pair) for pair in pairs) < 0:
        raise ValueError(f"padding must not be negative; got {padding!r}")
    return pairs
