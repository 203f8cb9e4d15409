"""Where a training step's time goes: each layer's forward and backward, timed alone, plain vs fast.

Command:  python benchmarks/tools/profile_ops.py [--batch 128] [--spec specs/lenet_mnist.json] [--xla-defaults]
Smoke:    python benchmarks/tools/profile_ops.py --smoke
Machine:  README "Speed" gives the figures and the machine.
Result:   a table of microseconds per image for each layer's forward, input gradient and weight
          gradient, with jaxcnn's plain lax layers and with the fast CPU paths (jaxcnn.cpu_layers), and
          the whole training step for comparison; everything compiled as jaxcnn compiles it
          (jaxcnn.compiling), or with XLA's default options given --xla-defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn.compiling import jit, use_xla_defaults
from jaxcnn.data import Preprocess
from jaxcnn.layer_types import Pass
from jaxcnn.model import Model
from jaxcnn.spec import load_spec
from jaxcnn.train import AccumulatedStep, TrainState, batch_loss, make_train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, markdown_table

ADAM = optax.adam(1e-3)


def per_image_us(fn: Callable[..., Any], args: tuple[Any, ...], batch: int, repeats: int) -> float:
    compiled = jit(fn)
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = compiled(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best / batch * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet_mnist.json"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--smoke", action="store_true", help="batch 8, 1 repeat")
    p.add_argument("--xla-defaults", action="store_true", help="compile with XLA's defaults, not jaxcnn's options")
    args = p.parse_args()
    use_xla_defaults(args.xla_defaults)
    if args.smoke:
        args.batch, args.repeats = 8, 1
    spec = load_spec(args.spec)
    rows = []
    totals = {"lax": 0.0, "fast": 0.0}
    key = jax.random.key(0)
    for layer in spec.layers:
        x = jax.random.normal(key, (args.batch, *layer.input_shape))
        cells = [layer.name, layer.type]
        for impl in ("lax", "fast"):
            model = Model(spec, impl)
            weights = model.init(key).get(layer.name, {})

            def forward(w: Any, x: Any, layer: Any = layer, impl: str = impl) -> Any:
                return layer.apply(w, {}, [x], Pass(impl=impl))[0]

            y = forward(weights, x)
            dy = jax.random.normal(key, y.shape)
            fwd = per_image_us(forward, (weights, x), args.batch, args.repeats)
            dx = per_image_us(lambda w, x, dy, f=forward: jax.vjp(lambda x_: f(w, x_), x)[1](dy), (weights, x, dy),
                              args.batch, args.repeats)  # fmt: skip
            dw = (per_image_us(lambda w, x, dy, f=forward: jax.vjp(lambda w_: f(w_, x), w)[1](dy), (weights, x, dy),
                               args.batch, args.repeats) if weights else 0.0)  # fmt: skip
            cells += [f"{fwd:.1f}", f"{dx:.1f}", f"{dw:.1f}" if weights else "-"]
            totals[impl] += fwd + dx + dw
        rows.append(cells)
    steps, in_scan = [], []
    for impl in ("lax", "fast"):
        model = Model(spec, impl)
        params = model.init(key)
        opt_state = ADAM.init(params)
        x = jax.random.uniform(key, (args.batch, *spec.input_shape))
        labels = jnp.zeros(args.batch, jnp.int32)

        def step(params: Any, opt_state: Any, x: Any, labels: Any, model: Model = model) -> Any:
            grads = jax.grad(lambda p: batch_loss(model, p, x, labels)[0])(params)
            updates, opt_state = ADAM.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        steps.append(per_image_us(step, (params, opt_state, x, labels), args.batch, args.repeats))

        def scanned(params: Any, opt_state: Any, x: Any, labels: Any, step: Any = step) -> Any:
            """The same step 8 times inside lax.scan, as an epoch in scan mode runs it."""

            def body(carry: Any, _: Any) -> Any:
                return step(*carry, x, labels), None

            return jax.lax.scan(body, (params, opt_state), None, length=8)[0]

        in_scan.append(per_image_us(scanned, (params, opt_state, x, labels), 8 * args.batch, args.repeats))
    rows.append(["sum of the above", "", "", "", f"{totals['lax']:.1f}", "", "", f"{totals['fast']:.1f}"])
    rows.append(["whole training step (Adam)", "", "", "", f"{steps[0]:.1f}", "", "", f"{steps[1]:.1f}"])
    rows.append(["the same step inside lax.scan", "", "", "", f"{in_scan[0]:.1f}", "", "", f"{in_scan[1]:.1f}"])
    header = ["layer", "type", "lax fwd", "lax dx", "lax dw", "fast fwd", "fast dx", "fast dw"]
    print(f"{spec.name}, batch {args.batch}: microseconds per image (best of 3 x {args.repeats} calls); "
          f"the first layer's dx is never computed in training\n")  # fmt: skip
    print(markdown_table(header, rows))
    whole, micro = micro_batch_step_times(spec, 4 * args.batch, args.batch, args.repeats)
    print(f"\nfast training step at batch {4 * args.batch}: {whole:.1f} us per image as one compiled step "
          f"(jaxcnn.train.make_train_step), {micro:.1f} as 4 gradient calls of {args.batch} and one update "
          f"(jaxcnn.train.AccumulatedStep, what Trainer runs on the CPU); ratio {whole / micro:.2f}")  # fmt: skip


def micro_batch_step_times(spec: Any, batch: int, micro_batch: int, repeats: int) -> tuple[float, float]:
    """us per image of the real training step on ``batch`` images, whole and in micro-batches."""
    model = Model(spec, "fast")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, *spec.input_shape), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    perm = jnp.arange(batch, dtype=jnp.int32)
    steps: list[Callable[..., Any]] = [jit(make_train_step(model, ADAM, Preprocess(), batch), donate_argnums=0),
             AccumulatedStep(model, ADAM, Preprocess(), batch, micro_batch)]  # fmt: skip
    states = []
    for step in steps:
        params = model.init(0)
        states.append(step(TrainState(params, ADAM.init(params)), images, labels, perm, jnp.int32(0))[0])  # compile
    best = [float("inf")] * 2
    for _ in range(3):  # interleaved, so both see the same machine
        for k, step in enumerate(steps):
            start = time.perf_counter()
            for _ in range(repeats):
                states[k], _ = step(states[k], images, labels, perm, jnp.int32(0))
            jax.block_until_ready(states[k])
            best[k] = min(best[k], (time.perf_counter() - start) / repeats / batch * 1e6)
    return best[0], best[1]


if __name__ == "__main__":
    main()
