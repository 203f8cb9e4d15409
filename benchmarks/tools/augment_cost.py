"""What augmentation costs an epoch: LeNet's training epoch with each augmentation against none.

Command:  python benchmarks/tools/augment_cost.py [--rounds 7] [--images 16384]
Smoke:    python benchmarks/tools/augment_cost.py --smoke   (seconds)
Machine, time and result: docs/performance.md ("What augmentation costs").

Every variant is compiled once; then each round times one epoch of every variant in turn (so a
drift of the machine's speed touches all alike), on random 28x28x1 images at batch 128. The table
gives each variant's median epoch and its median ratio to the plain epoch of the same round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from jaxcnn.model import Model
from jaxcnn.spec import load_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, TimedRun, interleaved_epoch_seconds, machine, markdown_table, random_training_data

VARIANTS = ("", "translate=2", "translate=2,erase=8", "flip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=16384)
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 512 images")
    args = parser.parse_args()
    rounds, count = (2, 512) if args.smoke else (args.rounds, args.images)
    model = Model(load_spec(ROOT / "specs" / "lenet_mnist.json"))
    images, labels = random_training_data(model, count)
    runs = {v: TimedRun.compiled(model, 128, images, labels, v) for v in VARIANTS}
    seconds = interleaved_epoch_seconds(runs, rounds)
    rows = []
    for variant in VARIANTS:
        ratios = [s / plain for s, plain in zip(seconds[variant], seconds[""], strict=True)]
        median = statistics.median(seconds[variant])
        rows.append(
            [variant or "(none)", f"{median:.3f}", f"{count / median:,.0f}", f"{statistics.median(ratios):.3f}"]
        )
    print(f"machine: {machine()}; {rounds} rounds of one epoch of {count:,} images each, batch 128")
    print(markdown_table(["augment", "epoch (s)", "img/s", "epoch / plain epoch (median of rounds)"], rows))


if __name__ == "__main__":
    main()
