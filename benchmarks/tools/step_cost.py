"""The training step's cost by batch size: a fixed part per step and a part per image.

Command:  python benchmarks/tools/step_cost.py [--batch-sizes 8,32,64,128] [--spec specs/lenet_mnist.json]
Smoke:    python benchmarks/tools/step_cost.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2)
Time:     about 20 s
Result:   milliseconds per step and microseconds per image at each batch size (medians of
          interleaved windows), and the least-squares line ms/step = fixed + per-image x batch.
          LeNet, 2026-11-26: 1.02, 2.62, 4.47, 7.48 ms at batch 8, 32, 64, 128 (128, 82, 70 and
          58 us per image); fixed 0.82 ms per step, 53 us per image (README "Speed"). The same
          measurement on a slower spell of the machine: 170, 106, 98, 84 us; 0.91 ms + 78 us.

Each batch size gets its own Trainer (jaxcnn's real training step on random uint8 images), and
every round times one epoch of each in turn, so a drift of the machine's speed touches all alike.
The fixed part is what a small batch pays again at every step: about a hundred small XLA kernels.
The page faults (the process's minor faults during the timed epochs, per step) show memory that
the step's buffers get fresh from the operating system at every step instead of reusing it.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import sys
from pathlib import Path

import numpy as np

from jaxcnn import train
from jaxcnn.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, TimedRun, markdown_table, random_training_data, run_script


def keep_freed_memory(one_arena: bool) -> None:
    """glibc's mallopt: blocks up to 1 GiB from the heap, never trimmed (an experiment, not jaxcnn's default).

    Called before JAX starts its threads, so ``one_arena`` reaches the arenas they would create.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    settings = [(m_mmap_threshold, 2**30), (m_trim_threshold, 2**31)] + [(m_arena_max, 1)] * one_arena
    if not all(libc.mallopt(option, value) for option, value in settings):
        raise SystemExit("mallopt refused a setting")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet_mnist.json"))
    p.add_argument("--batch-sizes", default="8,32,64,128", help="comma-separated (default 8,32,64,128)")
    p.add_argument("--images", type=int, default=4096, help="images per timed epoch (default 4096)")
    p.add_argument("--rounds", type=int, default=7, help="timed epochs per batch size (default 7)")
    p.add_argument(
        "--whole",
        action="store_true",
        help="compute each batch in one call, not in micro-batches of train.MICRO_BATCH (AccumulatedStep)",
    )
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc only: raise malloc's mmap and trim thresholds (mallopt), so freed blocks stay in the "
        "process instead of going back to the operating system",
    )
    p.add_argument(
        "--one-arena",
        action="store_true",
        help="with --keep-freed-memory: one malloc arena for all threads (mallopt M_ARENA_MAX=1)",
    )
    p.add_argument("--smoke", action="store_true", help="batch sizes 4 and 8, 64 images, 1 round")
    args = p.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory(args.one_arena)
    if args.whole:
        train.MICRO_BATCH = 2**31  # micro_batch_size reads it at each Trainer's construction
    sizes = [4, 8] if args.smoke else [int(b) for b in args.batch_sizes.split(",")]
    images, rounds = (64, 1) if args.smoke else (args.images, args.rounds)
    model = Model.from_file(args.spec)
    x, y = random_training_data(model, images)
    runs = {batch: TimedRun.compiled(model, batch, x, y) for batch in sizes}
    for run in runs.values():
        run.epoch_seconds()  # warm-up
    ms_per_step: dict[int, list[float]] = {batch: [] for batch in sizes}
    faults = dict.fromkeys(sizes, 0)
    for _ in range(rounds):
        for batch, run in runs.items():
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ms_per_step[batch].append(run.epoch_seconds() / run.trainer.steps_per_epoch * 1e3)
            faults[batch] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    medians = {batch: statistics.median(times) for batch, times in ms_per_step.items()}
    per_image, fixed = np.polyfit(sizes, [medians[b] for b in sizes], 1)
    steps = {b: rounds * runs[b].trainer.steps_per_epoch for b in sizes}
    rows = [[str(b), f"{medians[b]:.2f}", f"{1e3 * medians[b] / b:.1f}", f"{faults[b] / steps[b]:,.0f}"] for b in sizes]
    print(markdown_table(["batch", "ms per step", "us per image", "page faults per step"], rows))
    print(f"\nleast squares: {fixed:.2f} ms per step + {1e3 * per_image:.1f} us per image "
          f"({model.spec.name}, medians of {rounds} interleaved epochs of {images} images)")  # fmt: skip


if __name__ == "__main__":
    run_script(main)
