"""Time to 99% on MNIST: wall time from process start to the first epoch whose test accuracy reaches it.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/time_to_accuracy.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/time_to_accuracy.py --smoke
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2); README "Speed" has the figures
Time:     about 14 s with the compilation cache off or empty, 13.5 s with a warm one (README "Speed")
Result:   seconds to 99.0% with ``specs/lenet_mnist.json``, split into imports, data load,
          compilation and epochs, plus the peak resident memory of the process.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the heavy imports: they count too

import argparse  # noqa: E402
import resource  # noqa: E402

from jaxcnn.compiling import compilation_cache_dir  # noqa: E402
from jaxcnn.data import load_dataset  # noqa: E402
from jaxcnn.runs import train_run  # noqa: E402
from jaxcnn.train import TrainConfig  # noqa: E402

from common import ROOT, run_script, smoke_subset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="offline data folder (default: $JAXCNN_DATA_DIR)")
    p.add_argument("--target", type=float, default=0.99, help="test accuracy to reach (default 0.99)")
    p.add_argument("--epochs", type=int, default=2, help="schedule length and the most epochs run (default 2)")
    p.add_argument("--lr", type=float, default=0.012, help="one-cycle peak learning rate (default 0.012)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--warmup-epochs", type=float, default=0.3,
                   help="epochs of the one-cycle rise (default 0.3; 0: a quarter of the schedule)")  # fmt: skip
    p.add_argument("--label-smoothing", type=float, default=0.1, help="default 0.1 (0: plain cross-entropy)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="standardise inputs with the training set's mean and std (default on)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="2,000 training images, 1 epoch, target 0")
    args = p.parse_args()
    imported = time.perf_counter()
    cache = compilation_cache_dir()  # run_script turned it on unless JAXCNN_COMPILE_CACHE=off
    cached = len(list(cache.iterdir())) if cache is not None and cache.is_dir() else 0
    data = load_dataset("mnist", args.data_dir)
    if args.smoke:
        data, args.epochs, args.target = smoke_subset(data), 1, 0.0
    loaded = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, lr=args.lr, schedule="onecycle", batch_size=args.batch_size,
                         warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                         seed=args.seed)  # fmt: skip
    result = train_run(ROOT / "specs" / "lenet_mnist.json", data, config, None, progress=False,
                       stop_at_accuracy=args.target, normalize=args.normalize)  # fmt: skip
    done = time.perf_counter()
    reached = result.metrics[-1]["test_accuracy"] >= args.target
    epochs = sum(m["seconds"] + m["eval_seconds"] for m in result.metrics)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{'reached' if reached else 'did NOT reach'} {100 * args.target:.1f}% test accuracy "
          f"({100 * result.metrics[-1]['test_accuracy']:.2f}%) after {len(result.metrics)} epochs")  # fmt: skip
    print(f"wall time from process start: {done - START:.1f} s = imports {imported - START:.1f} s + data "
          f"{loaded - imported:.1f} s + compilation {result.compile_seconds:.1f} s + epochs (train and test) "
          f"{epochs:.1f} s + other {done - loaded - result.compile_seconds - epochs:.1f} s; "
          f"peak resident memory {peak_mib:.0f} MiB")  # fmt: skip
    state = "off" if cache is None else f"{'warm' if cached else 'cold'}, {cached} entries before this run, in {cache}"
    print(f"compilation cache: {state}")


if __name__ == "__main__":
    run_script(main)
