"""Fashion-MNIST (10 kinds of clothing, 28x28 grey): the article's LeNet-style network, and a recipe for 93.5%.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2)
Time:     1372 s in all; training 33 s (LeNet) and 1206 s (the batch-norm CNN: 30 s an epoch), 2026-11-30
Result:   LeNet 90.69% after 10 epochs with ``specs/lenet_mnist.json`` unchanged (target 90%);
          ``specs/bn_mnist.json`` 93.55% after 40 epochs (goal 93.5% in 20 minutes of training: the
          accuracy is reached, the time is 6 s over; with 38 epochs, 93.48% in 1195 s: just under both)

The second recipe: AdamW (weight decay 0.05, kept off biases and batch-norm scales), a one-cycle
learning rate peaking at 3e-3, label smoothing 0.1, 2-pixel translations and horizontal flips
(clothes may be mirrored; digits may not), and flip test-time augmentation.
"""

from __future__ import annotations

from jaxcnn.train import TrainConfig

from common import Plan, parser, run_experiment, run_script

PLANS = [
    Plan("LeNet-style CNN (article table)", "lenet_mnist.json", TrainConfig(epochs=10, lr=3e-3, schedule="onecycle"),
         "target: 90%"),
    Plan("CNN with batch norm and dropout", "bn_mnist.json",
         TrainConfig(epochs=40, optimizer="adamw", lr=3e-3, weight_decay=0.05, decay_biases=False, schedule="onecycle",
                     augment="translate=2,flip", label_smoothing=0.1, tta=True),
         "VGG16 in Fashion-MNIST's benchmark: 93.5%"),
]  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/fashion_mnist").parse_args()
    run_experiment(args, "fashion_mnist", PLANS, "Fashion-MNIST test accuracy")


if __name__ == "__main__":
    run_script(main)
