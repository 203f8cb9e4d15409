"""Integers typed by people or sent by clients, read one way everywhere: ASCII digits only, and few of them.

Python's ``int`` accepts any Unicode digit (``int('٣') == 3``), ``str.isdigit`` is true for
characters ``int`` refuses (``'²'``), and 5,000 digits make ``int`` raise (CPython's limit against
slow conversions). A flag, a query parameter or a header goes through :func:`parse_int` instead.
"""

from __future__ import annotations

import re

MAX_DIGITS = 18
"""The most digits accepted: every count, size, index or port fits, and a 64-bit integer holds it."""

_INTEGER = re.compile(rf"-?[0-9]{{1,{MAX_DIGITS}}}")


def parse_int(text: str, what: str, *, negative: bool = False) -> int:
    """``text`` as an integer: ASCII digits (a leading ``-`` only with ``negative``), at most MAX_DIGITS of
    them. Otherwise a ValueError whose message names ``what`` and shows the text (clipped)."""
    if isinstance(text, str) and _INTEGER.fullmatch(text) and (negative or not text.startswith("-")):
        return int(text)
    shown = repr(text[:20] + "..." if isinstance(text, str) and len(text) > 20 else text)
    kind = "an integer" if negative else "a whole number"
    raise ValueError(f"{what} must be {kind} written with the digits 0-9 (at most {MAX_DIGITS}), got {shown}")
