"""``jax.jit`` with the XLA options jaxcnn compiles its programs with.

On the CPU, jaxcnn turns off XLA's newer loop-fusion emitters (``xla_cpu_use_fusion_emitters``)
for its own programs, per compilation, leaving the process's XLA flags alone. Measured on a
2-core x86-64 CPU with jaxlib 0.10.2: the gradient of LeNet's first max pool (the transpose of
strided slices, which XLA writes as interior padding) took 27 us per image with those emitters
and 5 with the older ones; the whole training step about 20% less time; compiling it about half
the time (1.4 s instead of 2.8). ``experiments/benchmark.py --xla-defaults`` measures without it.
Training programs use it; evaluation and prediction keep XLA's defaults, with which LeNet's
inference ran about 10% faster (medians of 6 interleaved windows, batch 128 and 512).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
"""XLA debug options for the CPU backend (see the module docstring)."""

_use_defaults = False


def compiler_options() -> dict[str, Any]:
    """The options for the default backend: ``CPU_COMPILER_OPTIONS`` on the CPU, none elsewhere."""
    if _use_defaults or jax.default_backend() != "cpu":
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def use_xla_defaults(defaults: bool = True) -> None:
    """Compile later ``jit`` calls with XLA's own defaults (for comparison; see the benchmark)."""
    global _use_defaults
    _use_defaults = defaults


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compiler_options`.

    For whole programs only: JAX accepts compiler options on a top-level ``jit``, so the result
    must not be called inside another ``jit``, ``grad`` or ``vmap`` (JAX raises a ValueError
    saying so); jit the whole computation with it instead.
    """
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
