"""The input gradient of a convolution in each form jaxcnn.cpu_layers can take, timed on several shapes.

Command:  python benchmarks/tools/input_gradient_forms.py [--batch 128] [--rounds 11]
Smoke:    python benchmarks/tools/input_gradient_forms.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2); jaxcnn/cpu_layers.py
          (``input_gradient_form``) quotes the figures it chose its rule from
Time:     about 90 s
Result:   a table of microseconds per image for the transposes of ``column_stacked_conv`` and
          ``row_stacked_conv`` and for XLA's own transposed convolution, medians (and minima) of
          interleaved rounds, and the form ``cpu_layers.input_gradient_form`` picks for each shape.

Each form is compiled as jaxcnn compiles its training steps (``jaxcnn.compiling.jit``) and timed
in turn within each round, so a drift of the machine's speed touches all three alike.
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

from jaxcnn import cpu_layers
from jaxcnn.compiling import jit

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import markdown_table

# (height, width, input channels, filter size, output channels, stride, padding, what)
SHAPES = [
    (14, 14, 8, 5, 16, 1, 0, "LeNet's conv2"),
    (14, 14, 8, 3, 16, 1, 1, ""),
    (14, 14, 16, 3, 16, 1, 1, ""),
    (12, 12, 8, 5, 16, 1, 2, ""),
    (10, 10, 16, 5, 32, 1, 0, ""),
    (8, 8, 32, 3, 64, 1, 1, ""),
    (8, 8, 64, 3, 128, 1, 1, ""),
    (16, 16, 16, 3, 32, 1, 1, ""),
    (16, 16, 32, 3, 64, 1, 1, ""),
    (32, 32, 16, 3, 32, 1, 1, ""),
    (37, 37, 10, 5, 20, 2, 0, "the worked example's conv2"),
]

FORMS: dict[str, Callable[..., jax.Array]] = {
    "column": cpu_layers.column_stacked_conv,
    "row": cpu_layers.row_stacked_conv,
    "lax": lambda x, k, s, p, d: cpu_layers.lax_conv(x, k, s, p, d, 1),
}


def time_forms(batch: int, shape: tuple[Any, ...], rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per image of each form's input gradient, one figure per round."""
    h, w, cin, size, cout, stride, pad, _ = shape
    strides, pads, dilation = (stride, stride), ((pad, pad), (pad, pad)), (1, 1)
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, h, w, cin))
    kernel = jax.random.normal(keys[1], (size, size, cin, cout))
    dy = jax.random.normal(keys[2], cpu_layers.lax_conv(x, kernel, strides, pads, dilation, 1).shape)
    compiled = {}
    for name, form in FORMS.items():

        def input_gradient(kernel: jax.Array, dy: jax.Array, form: Callable[..., jax.Array] = form) -> jax.Array:
            return jax.vjp(lambda x_: form(x_, kernel, strides, pads, dilation), x)[1](dy)[0]

        compiled[name] = jit(input_gradient)
        jax.block_until_ready(compiled[name](kernel, dy))
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    for _ in range(rounds):
        for name, fn in compiled.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(kernel, dy)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / calls / batch * 1e6)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=11, help="interleaved timing rounds per shape")
    p.add_argument("--calls", type=int, default=8, help="calls per form per round")
    p.add_argument("--smoke", action="store_true", help="batch 4, 1 round of 1 call, two shapes")
    args = p.parse_args()
    shapes = SHAPES
    if args.smoke:
        args.batch, args.rounds, args.calls, shapes = 4, 1, 1, SHAPES[:1] + SHAPES[-1:]
    rows = []
    for shape in shapes:
        h, w, cin, size, cout, stride, pad, what = shape
        times = time_forms(args.batch, shape, args.rounds, args.calls)
        chosen = cpu_layers.input_gradient_form((args.batch, h, w, cin), (size, size, cin, cout), (stride, stride),
                                          ((pad, pad), (pad, pad)), (1, 1))  # fmt: skip
        cells = [f"{statistics.median(t):.1f} ({min(t):.1f})" for t in times.values()]
        name = f"{h}x{w}x{cin} -> {cout}, {size}x{size}, stride {stride}, pad {pad}"
        rows.append([name + (f" ({what})" if what else ""), *cells, chosen])
        print(f"{name}: " + ", ".join(f"{f} {c}" for f, c in zip(FORMS, cells, strict=True)), flush=True)
    print(f"\nInput gradient, microseconds per image at batch {args.batch}: median (min) of {args.rounds} "
          f"interleaved rounds of {args.calls} calls\n")  # fmt: skip
    print(markdown_table(["shape", "column form", "row form", "XLA's transpose", "chosen"], rows))


if __name__ == "__main__":
    main()
