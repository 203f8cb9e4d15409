"""Fashion-MNIST (10 kinds of clothing, 28x28 grey): the article's LeNet-style network, and a recipe for 93.5%.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/fashion_mnist.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2), split into 2 XLA devices (see below)
Time:     1205 s in all; training 36 s (LeNet) and 1070 s (the batch-norm CNN: 27 s an epoch), 2026-11-30
Result:   LeNet 90.51% after 10 epochs with ``specs/lenet_mnist.json`` unchanged (target 90%);
          ``specs/bn_mnist.json`` 93.50% after 40 epochs (goal: 93.5% in at most 20 minutes of training)

The second recipe: AdamW (weight decay 0.05, kept off biases and batch-norm scales), batch 256, a
one-cycle learning rate peaking at 4e-3, label smoothing 0.1, 2-pixel translations and horizontal
flips (clothes may be mirrored; digits may not), and flip test-time augmentation. On a CPU the
script splits the CPU into ``RECIPE_CPU_DEVICES`` XLA devices (``common.py``) and trains
data-parallel over them, which made the batch-norm CNN's epochs 9% faster on the 2-core machine
(``benchmarks/tools/cpu_devices.py``); a device count already in ``XLA_FLAGS`` wins.
"""

from __future__ import annotations

from jaxcnn.train import TrainConfig

from common import Plan, parser, run_experiment, run_script, split_cpu

PLANS = [
    Plan("LeNet-style CNN (article table)", "lenet_mnist.json", TrainConfig(epochs=10, lr=3e-3, schedule="onecycle"),
         "target: 90%"),
    Plan("CNN with batch norm and dropout", "bn_mnist.json",
         TrainConfig(epochs=40, batch_size=256, optimizer="adamw", lr=4e-3, weight_decay=0.05, decay_biases=False,
                     schedule="onecycle", augment="translate=2,flip", label_smoothing=0.1, tta=True),
         "VGG16 in Fashion-MNIST's benchmark: 93.5%"),
]  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/fashion_mnist").parse_args()
    split_cpu()
    run_experiment(args, "fashion_mnist", PLANS, "Fashion-MNIST test accuracy")


if __name__ == "__main__":
    run_script(main)
