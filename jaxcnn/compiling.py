"""``jax.jit`` with the XLA options jaxcnn compiles its programs with.

On the CPU, jaxcnn's training programs are compiled with XLA's older loop emitters
(``xla_cpu_use_fusion_emitters=False``, per compilation, leaving the process's XLA flags alone),
because the newer ones run the pools' strided-slice gradients as slow scalar loops; evaluation and
prediction keep XLA's defaults, which ran inference faster. On a GPU, training programs ask for
XLA's deterministic kernels (``GPU_COMPILER_OPTIONS``) so the same seed gives the same run.
``experiments/benchmark.py --xla-defaults`` measures without these options (figures:
``docs/performance.md``).

:func:`enable_compilation_cache` turns on JAX's persistent compilation cache, so a second run of
the same network skips XLA's code generation. jaxcnn's command line and experiment scripts call
it; the library alone never changes JAX's process-wide settings.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
"""XLA debug options for the CPU backend (see the module docstring)."""

GPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_gpu_deterministic_ops": True}
"""XLA debug options for GPUs: only kernels whose results are the same from run to run, so that
the same seed gives the same run bit for bit there too, as it does on the CPU. Without it, two
training runs of a small network with the same seed on an H100 differed in the 7th digit (README
"Devices" has the cost in speed)."""

_use_defaults = False


def compiler_options() -> dict[str, Any]:
    """The options for the default backend: ``CPU_COMPILER_OPTIONS`` on the CPU,
    ``GPU_COMPILER_OPTIONS`` on a GPU, none elsewhere."""
    if _use_defaults:
        return {}
    backend = jax.default_backend()
    if backend == "cpu":
        return dict(CPU_COMPILER_OPTIONS)
    if backend in ("gpu", "cuda", "rocm"):
        return dict(GPU_COMPILER_OPTIONS)
    return {}


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


COMPILE_CACHE_ENV = "JAXCNN_COMPILE_CACHE"
"""Environment variable: a folder for the compilation cache, or ``off`` to compile afresh every run."""

CACHE_MIN_COMPILE_SECONDS = 0.1
"""Programs that compiled faster than this are not written to the cache (small eager ops)."""

CACHE_MAX_BYTES = 512 * 2**20
"""The cache folder's size limit; JAX deletes the least recently used entries beyond it."""

_OFF = ("off", "0", "false", "no", "none")


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/jaxcnn/xla``, or ``~/.cache/jaxcnn/xla`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxcnn" / "xla"


def host_tag() -> str:
    """A short name for this kind of host CPU: its architecture, model and instruction-set flags.

    XLA compiles CPU code for the features of the CPU it runs on, and JAX's cache key does not
    record them, so a cache folder shared between different machines (a home directory on a
    cluster) could hand one CPU code it cannot run. Each kind of CPU gets its own subfolder.
    """
    facts = [platform.machine(), platform.processor()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features", "CPU part")):
                facts.append(line)
                if line.startswith(("flags", "Features")):
                    break  # the first processor's entry describes them all
    except OSError:
        pass
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(repr(facts).encode()).hexdigest()[:12]}"


def compilation_cache_dir() -> Path | None:
    """The folder JAX's persistent compilation cache uses in this process, or None when it is off."""
    folder = jax.config.values.get("jax_compilation_cache_dir")
    return Path(folder) if folder else None


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns the folder, or None when it is off.

    ``directory`` (default: ``$JAXCNN_COMPILE_CACHE``, else :func:`default_cache_root`) gets one
    subfolder per kind of host CPU (:func:`host_tag`). ``JAXCNN_COMPILE_CACHE=off`` turns the cache
    off; a cache folder the user already gave JAX (``JAX_COMPILATION_CACHE_DIR``) is kept as it
    is. A folder that cannot be created leaves the cache off, with a warning: compiling afresh is
    slower, never wrong. Programs that compile in under ``CACHE_MIN_COMPILE_SECONDS`` are not
    stored, and the folder is kept under ``CACHE_MAX_BYTES``.
    """
    setting = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if directory is None and setting.lower() in _OFF:
        return None
    users_folder = compilation_cache_dir()
    if users_folder is not None:
        return users_folder
    import warnings

    try:
        root = Path(directory) if directory is not None else Path(setting) if setting else default_cache_root()
    except RuntimeError as err:  # no home folder to put it in
        warnings.warn(f"compilation cache off: {err}; set {COMPILE_CACHE_ENV}=DIR to keep one", stacklevel=2)
        return None
    folder = root.expanduser() / host_tag()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as err:
        warnings.warn(f"compilation cache off: cannot create {folder} ({err})", stacklevel=2)
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
