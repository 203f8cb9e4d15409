"""Repeated blocks as one lax.scan against unrolled: the training step's compile time and img/s, interleaved.

Command:  python benchmarks/tools/scan_repeats.py [--spec specs/resnet56_cifar10.json] [--rounds 8] [--steps 3]
Smoke:    python benchmarks/tools/scan_repeats.py --smoke   (seconds)
Result:   a Markdown table: for ``Model(spec)`` (its runs of repeated copies as loops, ``jaxcnn.repeats``) and
          ``Model(spec, scan_repeats=False)``, the first step's compile seconds and the median img/s (min-max) of
          the timed epochs, which alternate between the two; figures in docs/performance.md.

Both train through ``jaxcnn.train.Trainer`` on random images with SGD, batch 128, the compilation cache off.
``--min-copies N`` scans runs of N or more copies instead of ``repeats.MIN_COPIES`` (to measure short runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import jax

from jaxcnn import repeats
from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, machine, markdown_table, random_training_data, run_script

os.environ["JAXCNN_COMPILE_CACHE"] = "off"  # both compile cold


@dataclass
class Timed:
    trainer: Trainer
    state: Any
    loops: int
    rates: list[float] = field(default_factory=list)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "resnet56_cifar10.json"))
    p.add_argument("--rounds", type=int, default=8, help="timed epochs of each (default 8)")
    p.add_argument("--steps", type=int, default=3, help="steps of 128 images per epoch (default 3)")
    p.add_argument("--min-copies", type=int, default=repeats.MIN_COPIES)
    p.add_argument("--smoke", action="store_true", help="batch 8, 1 step, 1 round")
    args = p.parse_args()
    batch, steps, rounds = (8, 1, 1) if args.smoke else (128, args.steps, args.rounds)
    spec = load_spec(args.spec)
    trainers: dict[str, Timed] = {}
    for label, scan in (("scanned", True), ("unrolled", False)):
        with patch.object(repeats, "MIN_COPIES", args.min_copies):
            model = Model(spec, scan_repeats=scan)
        images, labels = random_training_data(model, batch * steps)
        config = TrainConfig(batch_size=batch, eval_batch_size=batch, optimizer="sgd", lr=0.05, momentum=0.9)
        trainer = Trainer(model, config, Preprocess(), images, labels, images[:batch], labels[:batch])
        state = trainer.init_state()
        trainer.compile(state)
        state, _, _ = trainer.run_epoch(state, 1)  # warm-up
        trainers[label] = Timed(trainer, state, len(model._runs))
    for epoch in range(2, rounds + 2):
        for entry in trainers.values():
            started = time.perf_counter()
            entry.state, _, _ = entry.trainer.run_epoch(entry.state, epoch)
            jax.block_until_ready(entry.state)
            entry.rates.append(batch * steps / (time.perf_counter() - started))
    rows = [[label, str(t.loops), f"{t.trainer.step_compile_seconds:.2f}",
             f"{statistics.median(t.rates):,.0f} ({min(t.rates):,.0f}-{max(t.rates):,.0f})"]
            for label, t in trainers.items()]  # fmt: skip
    print(markdown_table(["form", "loops", "step compile (s)", "img/s"], rows))
    print(f"\n{spec.name}, batch {batch}, {rounds} interleaved epochs of {batch * steps} images, runs of "
          f"{args.min_copies}+ copies; {machine()}")  # fmt: skip


if __name__ == "__main__":
    run_script(main)
