"""He et al.'s ResNet-20 recipe on CIFAR-10 (``specs/resnet20_cifar10.json``, option B shortcuts).

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/resnet20_cifar10.py              (in full: 164 epochs)
          JAXCNN_DATA_DIR=../shared/data python experiments/resnet20_cifar10.py --epochs 2   (a short CPU version)
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/resnet20_cifar10.py --smoke      (seconds)
Machine:  2-core AMD EPYC x86-64 CPU (family 25 model 17, AVX-512), no GPU (jaxlib 0.10.2); no GPU was lent to
          measure the full run
Time:     --epochs 2: 357 s in all, 333 s of it training (164-169 s an epoch, 295-305 img/s), 2026-12-06; in
          full about 8 hours on this CPU (164 epochs)
Result:   --epochs 2: 67.82% test accuracy (JPEG copy), 2026-12-06 (67.38% on 2026-11-30, before the gradient
          forms of issue 33; the paper: 91.25% after 164 epochs)

The paper's recipe (He, Zhang, Ren and Sun 2016, section 4.2): SGD with momentum 0.9, weight decay
1e-4, batch 128, learning rate 0.1, 64k iterations (164 epochs of 391 steps), 4-pixel translation
(pad 4 and crop) and horizontal flips. Two differences, both common in reproductions: the learning
rate follows a cosine decay instead of dropping by 10x at 32k and 48k iterations, and images are
normalised per channel instead of having the per-pixel mean subtracted. Offline, ../shared/data
holds a JPEG copy of CIFAR-10, so figures measured on it are "JPEG copy" figures.
"""

from __future__ import annotations

from jaxcnn.train import TrainConfig

from common import Plan, parser, run_experiment, run_script

FULL_EPOCHS = 164
"""64,000 iterations of batch 128 over CIFAR-10's 50,000 training images, as in the paper."""


def plans(epochs: int) -> list[Plan]:
    config = TrainConfig(epochs=epochs, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                         schedule="cosine", augment="translate=4,flip")  # fmt: skip
    return [Plan("ResNet-20 (He et al. 2016)", "resnet20_cifar10.json", config, "91.25% (paper, 164 epochs)",
                 normalize=True)]  # fmt: skip


def main() -> None:
    p = parser(__doc__.splitlines()[0], "runs/resnet20_cifar10")
    p.add_argument("--epochs", type=int, default=FULL_EPOCHS, help=f"epochs (default {FULL_EPOCHS}, the paper's)")
    args = p.parse_args()
    run_experiment(args, "cifar10", plans(args.epochs), "CIFAR-10 test accuracy, ResNet-20")


if __name__ == "__main__":
    run_script(main)
