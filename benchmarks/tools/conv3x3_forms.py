"""Where Winograd pays: a 3x3 stride-1 'same' convolution's forward pass and its training cost (forward and both
gradients) in three forms, interleaved, at the shapes of ResNet-20 and ``vgg_bn_cifar10``.

Command:  python benchmarks/tools/conv3x3_forms.py [--rounds 5] [--batch 128]
Smoke:    python benchmarks/tools/conv3x3_forms.py --smoke   (seconds)
Result:   a Markdown table, median ms over the rounds (each round times every form once, in turn), and each
          form's largest difference from lax's; figures in docs/performance.md ("Winograd").

The forms: ``lax`` (XLA's convolution and its transposes), ``cpu`` (``jaxcnn.cpu_layers.conv``, the CPU path),
``winograd`` (``jaxcnn.winograd.conv3x3``). The CPU path takes Winograd where it measures faster: nowhere, so far.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu_layers, winograd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import markdown_table, run_script

SAME = ((1, 1), (1, 1))
SHAPES = [  # (size, in channels, out channels): ResNet-20's three, then vgg_bn_cifar10's
    (32, 16, 16),
    (16, 32, 32),
    (8, 64, 64),
    (32, 32, 32),
    (16, 32, 64),
    (16, 64, 64),
    (8, 64, 128),
    (8, 128, 128),
]


def forms() -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    def lax_form(x: jax.Array, k: jax.Array) -> jax.Array:
        return cpu_layers.lax_conv(x, k, (1, 1), SAME, (1, 1), 1)

    def cpu_form(x: jax.Array, k: jax.Array) -> jax.Array:
        return cpu_layers.conv(x, k, (1, 1), SAME, (1, 1), 1)

    def winograd_form(x: jax.Array, k: jax.Array) -> jax.Array:
        return winograd.conv3x3(x, k, SAME)

    return {"lax": lax_form, "cpu": cpu_form, "winograd": winograd_form}


def seconds(fn: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="batch 2, 1 round, one shape")
    args = p.parse_args()
    if args.smoke:
        args.batch, args.rounds = 2, 1
    rng = np.random.default_rng(0)
    rows = []
    for size, cin, cout in SHAPES[2:3] if args.smoke else SHAPES:
        x = jnp.asarray(rng.standard_normal((args.batch, size, size, cin)), jnp.float32)
        k = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
        dy = jnp.asarray(rng.standard_normal((args.batch, size, size, cout)), jnp.float32)
        compiled = {}
        for name, form in forms().items():
            forward = jax.jit(form)

            def train(x: jax.Array, k: jax.Array, dy: jax.Array, form: Any = form) -> Any:
                y, vjp = jax.vjp(form, x, k)
                return y, vjp(dy)

            compiled[name] = (forward, jax.jit(train))
        results = {name: [jax.block_until_ready(f(x, k)), jax.block_until_ready(t(x, k, dy))]
                   for name, (f, t) in compiled.items()}  # fmt: skip
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in compiled}
        for _ in range(args.rounds):
            for name, (f, t) in compiled.items():
                times[name][0].append(seconds(f, x, k))
                times[name][1].append(seconds(t, x, k, dy))
        reference = jax.tree.leaves(results["lax"])
        for name in compiled:
            error = max(float(jnp.abs(a - b).max() / jnp.abs(b).max())
                        for a, b in zip(jax.tree.leaves(results[name]), reference, strict=True))  # fmt: skip
            fwd, both = (1000 * statistics.median(t) for t in times[name])
            rows.append([f"{size}x{size}x{cin} -> {cout}", name, f"{fwd:.1f}", f"{both:.1f}", f"{error:.1e}"])
        print(rows[-3:], flush=True)
    print(markdown_table(["shape", "form", "forward (ms)", "forward + both gradients (ms)", "rel. difference"], rows))
    print(f"\nbatch {args.batch}, median of {args.rounds} interleaved rounds; {jax.devices()[0].device_kind}")


if __name__ == "__main__":
    run_script(main)
