"""The article's LeNet-style network on Fashion-MNIST (10 kinds of clothing, 28x28 grey).

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2)
Time:     about 49 s in all, 43 s of it training (README "Results")
Result:   90.50% test accuracy after 10 epochs with ``specs/lenet_mnist.json`` unchanged (target 90%)
"""

from __future__ import annotations

from jaxcnn.train import TrainConfig

from common import Plan, parser, run_experiment, run_script

PLANS = [
    Plan("LeNet-style CNN (article table)", "lenet_mnist.json", TrainConfig(epochs=10, lr=3e-3, schedule="onecycle"),
         "target: 90%"),
]  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/fashion_mnist").parse_args()
    run_experiment(args, "fashion_mnist", PLANS, "Fashion-MNIST test accuracy")


if __name__ == "__main__":
    run_script(main)
