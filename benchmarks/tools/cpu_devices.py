"""One CPU device or the CPU split into one XLA device per core: training epochs of four networks.

Command:  python benchmarks/tools/cpu_devices.py [--rounds 3] [--devices 2] [--batch 256]
Smoke:    python benchmarks/tools/cpu_devices.py --smoke   (seconds)
Machine, time and result: docs/performance.md ("One CPU device or one per core").

The process asks XLA for ``--devices`` CPU devices before JAX starts; each network is then trained
at the same global batch on the first device alone (XLA's thread pool spreads each operation over
the cores) and data-parallel over all of them (each device takes its share of the batch). Both are
compiled first; then each round times one epoch of each in turn, so a drift of the machine's speed
touches both alike. The table gives each one's median epoch and the median ratio of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from jaxcnn.model import Model
from jaxcnn.spec import load_spec

from common import (
    RECIPE_CPU_DEVICES,
    ROOT,
    TimedRun,
    interleaved_epoch_seconds,
    machine,
    markdown_table,
    random_training_data,
    run_script,
    split_cpu,
)

NETWORKS = (  # spec, augmentation (the recipe's), images per timed epoch
    ("lenet_mnist.json", "", 16384),
    ("bn_mnist.json", "translate=2,flip", 16384),
    ("vgg_bn_cifar10.json", "translate=2,flip", 4096),
    ("resnet20_cifar10.json", "translate=4,flip", 4096),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=RECIPE_CPU_DEVICES, help="CPU devices to split into (default "
                        f"{RECIPE_CPU_DEVICES}, as the recipe scripts)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=256, help="global batch (default 256)")
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 batches each")
    args = parser.parse_args()
    split_cpu(args.devices)
    rows = []
    for spec_file, augment, count in NETWORKS:
        model = Model(load_spec(ROOT / "specs" / spec_file))
        images, labels = random_training_data(model, 2 * args.batch if args.smoke else count)
        runs = {d: TimedRun.compiled(model, args.batch, images, labels, augment, devices=d) for d in (1, args.devices)}
        seconds = interleaved_epoch_seconds(runs, 1 if args.smoke else args.rounds)
        one, split = (statistics.median(seconds[d]) for d in runs)
        ratio = statistics.median(a / b for a, b in zip(seconds[1], seconds[args.devices], strict=True))
        seen = len(images) // args.batch * args.batch
        rows.append([spec_file, augment or "(none)", f"{seen / one:,.0f}", f"{seen / split:,.0f}", f"{ratio:.3f}"])
        print(rows[-1], flush=True)
    header = ["network", "augment", "1 device img/s", f"{args.devices} devices img/s", "speed-up (median of rounds)"]
    print(f"machine: {machine()}; batch {args.batch}, {1 if args.smoke else args.rounds} rounds")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    run_script(main)
