"""Training throughput through ``train_run`` (LeNet and ResNet-20 on random images, batch 128): the median
images per second of the epochs after the first, as one JSON line. Run it from two checkouts in turn to
compare commits (interleaved rounds; these machines are noisy).

Command:  python benchmarks/tools/train_throughput.py [CHECKOUT]   (CHECKOUT: a source tree, default this one;
          run with PYTHONPATH=CHECKOUT so its jaxcnn is the one imported)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

from jaxcnn.model import Model  # noqa: E402
from jaxcnn.runs import train_run  # noqa: E402
from jaxcnn.spec import load_spec  # noqa: E402
from jaxcnn.train import TrainConfig  # noqa: E402

from common import random_dataset  # noqa: E402

RUNS: tuple[tuple[str, int, int, dict[str, Any]], ...] = (
    ("lenet_mnist.json", 8192, 4, {}),
    ("resnet20_cifar10.json", 1024, 3, {"optimizer": "sgd", "lr": 0.1}),
)


def main() -> None:
    figures = {}
    for spec_file, count, epochs, settings in RUNS:
        spec = load_spec(ROOT / "specs" / spec_file)
        data = random_dataset(Model(spec), count, 256)
        config = TrainConfig(epochs=epochs, batch_size=128, **settings)
        result = train_run(spec, data, config, None, progress=False, verbose=False)
        figures[spec_file] = float(np.median([m["images_per_second"] for m in result.metrics[1:]]))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
