"""The sha256 of the weights that fixed, seeded training runs end with: run it at two commits to show that a
change left training bit for bit the same (or to see that it did not).

Command:  python benchmarks/tools/weights_sha256.py [--out DIR]   (about a minute on 2 CPU cores)

Runs through ``train_run`` on the same random images (seed 0): LeNet (``lenet_mnist.json``) for two
epochs, the batch-norm and dropout CNN (``bn_mnist.json``) for two epochs, ResNet-20 for two steps, and
LeNet with augmentation, test-time augmentation and micro-batches, and with the ``lax.scan`` loop.
With ``--out``, each run also writes its run folder there (metrics, checkpoints), exercising the writer.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jax
import numpy as np

from jaxcnn.model import Model
from jaxcnn.runs import train_run
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from common import random_dataset  # noqa: E402

RUNS = {
    "lenet_mnist": ("lenet_mnist.json", 512, TrainConfig(epochs=2, batch_size=64, lr=3e-3)),
    "bn_mnist": ("bn_mnist.json", 256, TrainConfig(epochs=2, batch_size=64, lr=3e-3, optimizer="adamw")),
    "resnet20_two_steps": ("resnet20_cifar10.json", 64, TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.1)),
    "lenet_augment_tta_microbatch": (
        "lenet_mnist.json",
        512,
        TrainConfig(epochs=1, batch_size=256, augment="translate=2,flip", tta=True),
    ),
    "lenet_scan_loop": ("lenet_mnist.json", 512, TrainConfig(epochs=1, batch_size=64, loop="scan")),
}


def weights_sha256(params: dict) -> str:
    """sha256 over every array of ``params`` in a fixed order (its path, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda item: str(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write each run's folder under this folder")
    args = parser.parse_args()
    for name, (spec_file, count, config) in RUNS.items():
        spec = load_spec(ROOT / "specs" / spec_file)
        data = random_dataset(Model(spec), count, 64)
        out = Path(args.out) / name if args.out else None
        result = train_run(spec, data, config, out, progress=False, verbose=False)
        print(f"{name}: {weights_sha256(result.params)}  (state {weights_sha256(result.model_state)})")


if __name__ == "__main__":
    main()
