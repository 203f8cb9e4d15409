"""Training throughput with extra XLA options, each against jaxcnn's own, in interleaved rounds.

Command:  python benchmarks/tools/xla_options.py xla_cpu_use_xnnpack=true xla_cpu_use_onednn=true [--rounds 12]
Smoke:    python benchmarks/tools/xla_options.py xla_cpu_use_xnnpack=true --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2); README "Speed" has the figures
Time:     about 1 minute per option at the defaults
Result:   for jaxcnn's options ("jaxcnn") and for each variant (jaxcnn's options plus one NAME=VALUE):
          compile seconds, median img/s (min-max) over the rounds, and the median over rounds of
          the variant's img/s divided by jaxcnn's in the same round. An option this jaxlib does not
          know is reported as rejected.

Each variant gets its own Trainer (jaxcnn's real training step on random uint8 images, compiled
with ``jaxcnn.compiling.CPU_COMPILER_OPTIONS`` plus the option), and every round times one epoch
of each in turn, so a drift of the machine's speed touches all alike; the paired ratio is the
figure to read on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from jaxcnn import compiling
from jaxcnn.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, TimedRun, markdown_table, random_training_data, run_script

# Every variant compiles cold, jaxcnn's own too, so the compile column compares like with like.
os.environ["JAXCNN_COMPILE_CACHE"] = "off"


def parse_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE true/false, an integer or a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"error: {text!r}: give each option as NAME=VALUE, e.g. xla_cpu_use_xnnpack=true")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    try:
        return name, int(value)
    except ValueError:
        return name, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("options", nargs="+", metavar="NAME=VALUE", help="XLA debug options, one variant each")
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet_mnist.json"))
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--images", type=int, default=8192, help="images per timed epoch (default 8192)")
    p.add_argument("--rounds", type=int, default=12, help="timed epochs per variant (default 12)")
    p.add_argument("--smoke", action="store_true", help="batch 8, 64 images, 1 round")
    args = p.parse_args()
    batch, images, rounds = (8, 64, 1) if args.smoke else (args.batch_size, args.images, args.rounds)
    model = Model.from_file(args.spec)
    x, y = random_training_data(model, images)
    own = dict(compiling.CPU_COMPILER_OPTIONS)
    variants: dict[str, dict[str, Any]] = {"jaxcnn": {}}
    variants |= {f"+ {name}={value}": {name: value} for name, value in map(parse_option, args.options)}
    runs: dict[str, TimedRun] = {}
    rejected: list[list[str]] = []
    try:
        for label, extra in variants.items():
            compiling.CPU_COMPILER_OPTIONS.clear()
            compiling.CPU_COMPILER_OPTIONS.update({**own, **extra})  # read when each Trainer is built
            try:
                run = TimedRun.compiled(model, batch, x, y)
            except Exception as err:  # XLA's INVALID_ARGUMENT for an option this jaxlib lacks
                rejected.append([label, "-", "-", "-", "rejected: " + str(err).splitlines()[0][:100]])
                continue
            run.epoch_seconds()  # warm-up
            runs[label] = run
    finally:
        compiling.CPU_COMPILER_OPTIONS.clear()
        compiling.CPU_COMPILER_OPTIONS.update(own)
    rows: list[list[str]] = []
    rates: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            rates[label].append(images / run.epoch_seconds())
    for label, r in rates.items():
        paired = statistics.median(a / b for a, b in zip(r, rates["jaxcnn"], strict=True))
        rows.append([label, f"{runs[label].compile_seconds:.2f}",
                     f"{statistics.median(r):,.0f} ({min(r):,.0f}-{max(r):,.0f})", f"{paired:.3f}", ""])  # fmt: skip
    print(markdown_table(["variant", "compile (s)", "img/s", "vs jaxcnn (paired median)", "note"], rows + rejected))
    print(f"\n{model.spec.name}, batch {batch}, {rounds} interleaved rounds of {images} images; "
          f"jaxcnn's options: {own}")  # fmt: skip


if __name__ == "__main__":
    run_script(main)
