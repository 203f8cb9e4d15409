"""The main job: the article's CNN against the earlier post's fully connected network, on real MNIST.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/reproduce_article.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/reproduce_article.py --smoke   (seconds)
Machine:  2-core AMD EPYC x86-64 CPU, no GPU (jaxlib 0.10.2)
Time:     34 s in all (README "Results" has the measured figures)
Result:   LeNet-style CNN 99.12% test accuracy after 5 epochs; fully connected network 97.07%
          (the article's earlier post: 96%; LeNet-5, LeCun et al. 1998: 99.05%)

Trains ``specs/mlp_mnist.json`` and ``specs/lenet_mnist.json`` with Adam on a one-cycle
learning-rate schedule and writes both run directories, ``results.json`` and ``results.md``
under ``--out`` (default ``runs/reproduce_article``). Its last line goes from the article's 96% to
this library's best MNIST network (``mnist_best.py``'s figure, when that script has run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxcnn.train import TrainConfig

from common import SMOKE_NOTE, Plan, parser, run_experiment, run_script
from mnist_best import DEFAULT_OUT as BEST_OUT

PLANS = [
    Plan("fully connected (earlier post)", "mlp_mnist.json", TrainConfig(epochs=10, lr=3e-3, schedule="onecycle"),
         "article: 96%"),
    Plan("LeNet-style CNN (article table)", "lenet_mnist.json", TrainConfig(epochs=5, lr=4e-3, schedule="onecycle"),
         "LeNet-5, LeCun et al. 1998: 99.05%"),
]  # fmt: skip


def progression(results: dict[str, Any], best_results: Path) -> str:
    """One line from the article's 96% through this run's two networks to this library's best MNIST network:
    the best figure of ``best_results`` (``mnist_best.py``'s results.json) when a full run wrote one, else
    the command that measures it."""
    accuracy = {m["spec"]: 100 * m["final_test_accuracy"] for m in results["models"]}
    line = (f"the article's 96% -> its fully connected network here {accuracy['mlp_mnist.json']:.2f}% -> "
            f"its LeNet {accuracy['lenet_mnist.json']:.2f}% -> ")  # fmt: skip
    try:
        best = json.loads(best_results.read_text())
        if SMOKE_NOTE not in best["dataset"]:
            top = max(best["models"], key=lambda m: m["final_test_accuracy"])
            return (
                line + f"this library's best, {top['label']}: {100 * top['final_test_accuracy']:.2f}% ({best_results})"
            )
    except (OSError, ValueError, KeyError, TypeError):  # not written yet, or not a results file
        pass
    return line + f"this library's best: python experiments/mnist_best.py (writes {best_results.parent}/)"


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/reproduce_article").parse_args()
    results = run_experiment(args, "mnist", PLANS, "MNIST test accuracy")
    print(progression(results, Path(BEST_OUT) / "results.json"))


if __name__ == "__main__":
    run_script(main)
