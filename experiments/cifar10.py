"""The article's RGB LeNet-style table (``specs/article_lenet.json``, 32x32x3) on CIFAR-10.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/cifar10.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/cifar10.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2)
Time:     about 145 s in all, 122 s of it training (README "Results")
Result:   66.68% test accuracy (JPEG copy) after 15 epochs. Offline, ../shared/data holds only a
          JPEG copy of CIFAR-10 (quality 75); the printed data source says so, and any accuracy
          measured on it is a "JPEG copy" figure.

Images are normalised per channel (training-set mean and std), as is usual for CIFAR-10.
"""

from __future__ import annotations

from jaxcnn.train import TrainConfig

from common import Plan, parser, run_experiment, run_script

PLANS = [
    Plan("LeNet-style CNN (article table, RGB)", "article_lenet.json",
         TrainConfig(epochs=15, lr=3e-3, schedule="onecycle", weight_decay=0.0), "no published figure",
         normalize=True),
]  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/cifar10").parse_args()
    run_experiment(args, "cifar10", PLANS, "CIFAR-10 test accuracy")


if __name__ == "__main__":
    run_script(main)
