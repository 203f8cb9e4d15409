"""jaxcnn's compiler options (applied on the CPU, switchable off, never changing a result) and its compilation cache."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_gpu_programs_get_deterministic_kernels_and_other_backends_no_options(monkeypatch):
    for backend, expected in [("gpu", compiling.GPU_COMPILER_OPTIONS), ("tpu", {})]:
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert compiling.compiler_options() == expected
    assert compiling.GPU_COMPILER_OPTIONS == {"xla_gpu_deterministic_ops": True}


def test_train_command_xla_defaults_option_compiles_training_without_jaxcnn_options(monkeypatch, tmp_path):
    import jaxcnn.runs
    from jaxcnn.cli import main

    seen = []
    monkeypatch.setattr(jaxcnn.runs, "train_run", lambda *args, **kwargs: seen.append(compiling.compiler_options()))
    command = ["train", "specs/lenet_mnist.json", "--dataset", "mnist", "--out", str(tmp_path / "run")]
    try:
        assert main([*command, "--xla-defaults"]) == 0
        assert main(command) == 0
    finally:
        compiling.use_xla_defaults(False)
    assert seen == [{}, compiling.CPU_COMPILER_OPTIONS]


def test_jit_compiles_with_the_options_and_passes_jit_arguments_through():
    def f(x, scale):
        return jnp.sin(x) * scale

    x = jnp.linspace(-3, 3, 64).reshape(4, 16)
    compiled = compiling.jit(f, static_argnums=1)
    np.testing.assert_array_equal(compiled(x, 2), jax.jit(f, static_argnums=1)(x, 2))
    lowered = compiling.jit(f, static_argnums=1).lower(x, 2)
    assert lowered.compile()(x) is not None  # the options are accepted by this jaxlib's CPU compiler


def _python(code: str, env: dict[str, str], tmp_path: Path) -> str:
    """Run ``code`` in a fresh Python (JAX's cache settings are process-wide); returns its stdout."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    full_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=full_env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# A program that compiles the same way in every process, and reports JAX's cache hits.
_COMPILE_TWICE_AS_PROCESSES = """
import jax, jax.numpy as jnp
from jaxcnn import compiling
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
compiling.CACHE_MIN_COMPILE_SECONDS = 0.0  # cache even this small program
print(compiling.enable_compilation_cache())
f = compiling.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(float(f(jnp.arange(64.0).reshape(8, 8) / 64)))
print(len(hits))
"""


@pytest.mark.slow
def test_the_cache_is_a_folder_per_cpu_kind_and_a_second_process_loads_from_it(tmp_path):
    env = {"JAXCNN_COMPILE_CACHE": str(tmp_path / "cache")}
    first = _python(_COMPILE_TWICE_AS_PROCESSES, env, tmp_path).split()
    second = _python(_COMPILE_TWICE_AS_PROCESSES, env, tmp_path).split()
    folder = Path(first[0])
    assert folder == tmp_path / "cache" / compiling.host_tag()
    assert any(folder.iterdir()), "the first process wrote no cache entry"
    assert first[1] == second[1]  # the same value from the cached program
    assert first[2] == "0" and int(second[2]) >= 1  # compiled, then loaded (its eager ops too)


@pytest.mark.slow
def test_the_cache_can_be_turned_off_and_a_users_jax_cache_folder_is_kept(tmp_path):
    code = "from jaxcnn import compiling; print(compiling.enable_compilation_cache())"
    assert _python(code, {"JAXCNN_COMPILE_CACHE": "off"}, tmp_path).strip() == "None"
    mine = str(tmp_path / "mine")
    env = {"JAXCNN_COMPILE_CACHE": str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": mine}
    assert _python(code, env, tmp_path).strip() == mine
    assert not (tmp_path / "ours").exists()


def test_a_cache_folder_that_cannot_be_made_leaves_the_cache_off_with_a_warning(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="compilation cache off: cannot create"):
        assert compiling.enable_compilation_cache(blocker / "cache") is None
    assert jax.config.values.get("jax_compilation_cache_dir") is None


def test_the_host_tag_is_stable_and_names_the_architecture():
    assert compiling.host_tag() == compiling.host_tag()
    assert compiling.host_tag().startswith(platform.machine() or "cpu")
