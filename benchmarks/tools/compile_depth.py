"""How the first compilation of a training step grows with the number of layers.

Command:  python benchmarks/tools/compile_depth.py --depths 10 50 100 200
Smoke:    python benchmarks/tools/compile_depth.py --depths 2 4   (seconds)
Machine, time and result: docs/performance.md ("Compile time and depth").

Each network is N conv layers (3x3, same padding, 8 filters, relu) on 16x16x1 inputs, then
flatten and a dense layer of 10. The training step and the evaluation are compiled once each
(``Trainer.compile``; the library never turns the compilation cache on by itself) and the
seconds are printed as a table.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig, Trainer


def deep_spec(depth: int) -> dict[str, object]:
    conv = {"type": "conv", "filters": 8, "size": 3, "padding": "same", "activation": "relu"}
    layers = [dict(conv) for _ in range(depth)] + [{"type": "flatten"}, {"type": "dense", "units": 10}]
    return {"format": "jaxcnn.spec/1", "name": f"deep{depth}", "input": [16, 16, 1], "layers": layers}


def compile_seconds(depth: int) -> tuple[float, float]:
    """(training step, training step and evaluation) compile seconds for a network of ``depth`` conv layers."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 16, 16, 1)).astype(np.uint8)
    labels = rng.integers(0, 10, 256).astype(np.int32)
    model = Model(parse_spec(deep_spec(depth), f"deep{depth}.json"))
    trainer = Trainer(model, TrainConfig(batch_size=32), Preprocess(), images, labels, images[:64], labels[:64])
    total = trainer.compile(trainer.init_state())
    return trainer.step_compile_seconds, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 50, 100, 200])
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores")
    print("| conv layers | step compile (s) | step + evaluation (s) | s per layer |")
    print("| ---: | ---: | ---: | ---: |")
    for depth in args.depths:
        step, total = compile_seconds(depth)
        print(f"| {depth} | {step:.2f} | {total:.2f} | {total / depth:.3f} |", flush=True)


if __name__ == "__main__":
    main()
