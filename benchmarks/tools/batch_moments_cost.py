"""Training throughput with batch norm's statistics in one shifted pass (jaxcnn's) against the unshifted
E[x^2] - E[x]^2 (Flax's, and jaxcnn's before), interleaved in one process.

Command:  python benchmarks/tools/batch_moments_cost.py SPEC ROUNDS   (for example resnet20_cifar10.json 10)
Machine:  docs/performance.md, "Batch statistics in one shifted pass", gives the figures and the machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import layers as L
from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from common import random_training_data  # noqa: E402

SHIFTED = L.batch_moments


def unshifted(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x32, axis=axes)
    return mean, jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)


def main() -> None:
    spec, rounds = sys.argv[1], int(sys.argv[2])
    batch, steps = 128, 6
    trainers = {}
    for name, moments in (("unshifted", unshifted), ("shifted", SHIFTED)):
        L.batch_moments = moments  # type: ignore[assignment]  # read when the step is traced, just below
        model = Model(load_spec(ROOT / "specs" / spec))
        images, labels = random_training_data(model, batch * steps)
        config = TrainConfig(batch_size=batch, eval_batch_size=batch, optimizer="sgd", lr=0.1)
        trainer = Trainer(model, config, Preprocess(), images, labels, images[:batch], labels[:batch])
        state = trainer.init_state()
        trainer.compile(state)
        state, _, _ = trainer.run_epoch(state, 1)
        trainers[name] = [trainer, jax.block_until_ready(state)]
    L.batch_moments = SHIFTED
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for round_ in range(rounds):
        for name, pair in trainers.items():
            started = time.perf_counter()
            pair[1], _, _ = pair[0].run_epoch(pair[1], round_ + 2)
            jax.block_until_ready(pair[1])
            seconds[name].append(time.perf_counter() - started)
    for name, times in seconds.items():
        print(f"{spec} {name}: {batch * steps / np.median(times):.1f} img/s")
    print(
        f"{spec} shifted / unshifted throughput: {np.median(seconds['unshifted']) / np.median(seconds['shifted']):.3f}"
    )


if __name__ == "__main__":
    main()
