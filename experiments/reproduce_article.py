"""The main job: the article's CNN against the earlier post's fully connected network, on real MNIST.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/reproduce_article.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/reproduce_article.py --smoke   (seconds)
Machine:  see README "Results" (2-core x86-64 CPU, no GPU), where the table below is filled in.
Result:   prints a table of model, weights, epochs, training time and test accuracy, beside the
          article's 96% (fully connected) and LeNet-5's published 99.05% (LeCun et al. 1998).

Trains ``specs/mlp_mnist.json`` and ``specs/lenet_mnist.json`` with Adam on a one-cycle
learning-rate schedule and writes both run directories, ``results.json`` and ``results.md``
under ``--out`` (default ``runs/reproduce_article``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jaxcnn.data import load_dataset
from jaxcnn.model import Model
from jaxcnn.runs import train_run
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig

from common import machine, markdown_table, parser, run_script, save_results, smoke_subset

ROOT = Path(__file__).resolve().parent.parent
MODELS = [
    # (label, spec, training, published reference)
    ("fully connected (earlier post)", "mlp_mnist.json", TrainConfig(epochs=10, lr=3e-3, schedule="onecycle"),
     "article: 96%"),
    ("LeNet-style CNN (article table)", "lenet_mnist.json", TrainConfig(epochs=5, lr=4e-3, schedule="onecycle"),
     "LeNet-5, LeCun et al. 1998: 99.05%"),
]  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0], "runs/reproduce_article").parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} already holds results; pass --overwrite to replace them or choose --out")
    started = time.perf_counter()
    data = load_dataset("mnist", args.data_dir)
    if args.smoke:
        data = smoke_subset(data)
    rows: list[list[str]] = []
    models: list[dict[str, Any]] = []
    results: dict[str, Any] = {"machine": machine(), "dataset": data.source, "models": models}
    for label, spec_file, config, reference in MODELS:
        if args.smoke:
            config = TrainConfig(**{**config.to_dict(), "epochs": 1})
        spec = load_spec(ROOT / "specs" / spec_file)
        print(f"\n== {label}: {spec_file}")
        result = train_run(spec, data, config, out / Path(spec_file).stem, overwrite=args.overwrite,
                           progress=not args.no_progress)  # fmt: skip
        final = result.metrics[-1]
        train_seconds = sum(m["seconds"] for m in result.metrics)
        weights = Model(spec).param_count()
        rows.append([label, spec_file, f"{weights:,}", str(config.epochs), f"{train_seconds:.1f}",
                     f"{100 * final['test_accuracy']:.2f}%", reference])  # fmt: skip
        models.append(
            {
                "label": label,
                "spec": spec_file,
                "weights": weights,
                "config": config.to_dict(),
                "train_seconds": train_seconds,
                "compile_seconds": result.compile_seconds,
                "final_test_accuracy": final["test_accuracy"],
                "best_test_accuracy": result.best_test_accuracy,
                "metrics": result.metrics,
            }
        )
    header = ["model", "spec", "weights", "epochs", "training time (s)", "test accuracy", "published"]
    table = markdown_table(header, rows)
    results["wall_seconds"] = time.perf_counter() - started
    save_results(out, results, table)
    print(f"\nMNIST test accuracy ({data.source}); machine: {results['machine']}\n")
    print(table)
    print(f"\nwall time {results['wall_seconds']:.1f} s (data, compilation and both trainings); runs in {out}/")


if __name__ == "__main__":
    run_script(main)
