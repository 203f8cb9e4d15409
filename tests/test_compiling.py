"""jaxcnn's compiler options: applied on the CPU, switchable off, never changing a result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import compiling


def test_cpu_programs_get_jaxcnn_options_until_defaults_are_asked_for():
    assert jax.default_backend() == "cpu"
    assert compiling.compiler_options() == compiling.CPU_COMPILER_OPTIONS
    compiling.compiler_options()["xla_cpu_use_fusion_emitters"] = True  # a copy: the module's stays
    assert compiling.CPU_COMPILER_OPTIONS == {"xla_cpu_use_fusion_emitters": False}
    try:
        compiling.use_xla_defaults()
        assert compiling.compiler_options() == {}
    finally:
        compiling.use_xla_defaults(False)
    assert compiling.compiler_options() == compiling.CPU_COMPILER_OPTIONS


def test_jit_compiles_with_the_options_and_passes_jit_arguments_through():
    def f(x, scale):
        return jnp.sin(x) * scale

    x = jnp.linspace(-3, 3, 64).reshape(4, 16)
    compiled = compiling.jit(f, static_argnums=1)
    np.testing.assert_array_equal(compiled(x, 2), jax.jit(f, static_argnums=1)(x, 2))
    lowered = compiling.jit(f, static_argnums=1).lower(x, 2)
    assert lowered.compile()(x) is not None  # the options are accepted by this jaxlib's CPU compiler
