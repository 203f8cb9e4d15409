"""Explanations on real networks: how fast the explorer answers, whether the maps find what matters (deletion),
whether they depend on the trained weights (randomisation), and the pictures for docs/explain.md.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/explain_benchmark.py
Smoke:    JAXCNN_DATA_DIR=../shared/data python experiments/explain_benchmark.py --smoke   (small subsets, 1 epoch)

Trains the LeNet table twice (``specs/lenet_mnist.json`` on MNIST, ``specs/article_lenet.json`` on CIFAR-10),
three epochs each, into OUT (reused when already there), then measures on 200 test images of each:

- latency: the explorer's ``why`` answer per method for one image (warm, median of 20 images; the first
  call, which compiles, apart), the same through the HTTP server as the page asks for it, and a conv1 filter
  picture (first call and warm);
- deletion: the mean fall of the true class's probability when the 10% most salient pixels are blacked out,
  against 10% at random (jaxcnn.saliency_checks.deletion);
- randomisation: the mean Spearman rank correlation between each map from the trained weights and from
  weights randomised cascading from the top (Adebayo et al. 2018), for each method, and for the gradient's
  absolute value too (the form many tools draw).

Writes OUT/results.json and results.md, and draws docs/images/explain_methods.png (a digit and a CIFAR image
under each method) and docs/images/explain_randomization.png (the cascade for the gradient and Grad-CAM).
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn import explain
from jaxcnn.config import TrainConfig
from jaxcnn.data import Dataset, load_dataset
from jaxcnn.explanations import enlarged, overlay
from jaxcnn.explore_server import ExploreServer
from jaxcnn.explorer import Explorer, encode_pixels
from jaxcnn.plots import _pyplot, save
from jaxcnn.runs import Run, load_run, train_run
from jaxcnn.saliency_checks import deletion, rank_correlations
from jaxcnn.spec import load_spec

from common import ROOT, machine, markdown_table, parser, run_script, save_results, smoke_subset

IMAGES = 200
LATENCY_IMAGES = 20
NAMES = {"gradient": "gradient", "smoothgrad": "SmoothGrad", "integrated-gradients": "integrated gradients (64)",
         "grad-cam": "Grad-CAM", "occlusion": "occlusion"}  # fmt: skip


def trained(out: Path, spec_file: str, dataset: str, data: Dataset, epochs: int) -> Run:
    """The run of ``spec_file`` on ``data`` in ``out``, trained now unless it is already there."""
    run_dir = out / f"{Path(spec_file).stem}_{dataset}"
    if not (run_dir / "config.json").exists():
        config = TrainConfig(epochs=epochs, batch_size=128, lr=3e-3)
        train_run(load_spec(ROOT / "specs" / spec_file), data, config, run_dir, pad=True, progress=False)
    return load_run(run_dir)


def latencies(run_dir: Path, images: np.ndarray) -> dict[str, dict[str, float]]:
    """Milliseconds per answer: the explorer's ``why`` for each method (first call, warm median over the images,
    and the HTTP round trip the page makes), and a conv1 filter picture."""
    explorer = Explorer(run_dir)
    results: dict[str, dict[str, float]] = {}
    with ExploreServer(explorer) as server:
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        for method in explain.METHODS:
            started = time.perf_counter()
            explorer.why(images[0], method)
            first = 1000 * (time.perf_counter() - started)
            warm = []
            for image in images[1 : LATENCY_IMAGES + 1]:
                started = time.perf_counter()
                explorer.why(image, method)
                warm.append(1000 * (time.perf_counter() - started))
            http = []
            for image in images[1 : LATENCY_IMAGES + 1]:
                body = json.dumps({"pixels": encode_pixels(image), "method": method}).encode()
                request = urllib.request.Request(server.url + "api/why", body, {"Content-Type": "application/json"})
                started = time.perf_counter()
                with urllib.request.urlopen(request) as response:
                    response.read()
                http.append(1000 * (time.perf_counter() - started))
            results[method] = {"first_ms": first, "warm_ms": statistics.median(warm),
                               "http_ms": statistics.median(http)}  # fmt: skip
        first_layer = explorer.model.spec.layers[0].name
        started = time.perf_counter()
        explorer.unit_picture(first_layer, 0)
        first = 1000 * (time.perf_counter() - started)
        started = time.perf_counter()
        explorer.unit_picture(first_layer, 1)
        results["conv1 filter picture"] = {"first_ms": first, "warm_ms": 1000 * (time.perf_counter() - started)}
        server.shutdown()
    return results


def sanity_figures(run: Run, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Deletion and cascading-randomisation figures of every method on these test images."""
    explainer = explain.Explainer(run.model)
    x = run.network_input(images)
    weighted = [layer.name for layer in run.model.spec.layers if layer.name in run.params][::-1]
    cascade = [explain.randomize_top_layers(run.model, run.params, k, key=1)[0] for k in range(1, len(weighted) + 1)]
    figures: dict[str, Any] = {"randomized_from_the_top": weighted}
    for method in explain.METHODS:
        maps = explainer.heatmap(run.params, run.state, x, method, labels)
        figures[method] = {"deletion": vars(deletion(run, images, labels, maps, fraction=0.1)),
                           "spearman": [float(rank_correlations(maps, explainer.heatmap(p, run.state, x, method,
                                                                                        labels)).mean())
                                        for p in cascade]}  # fmt: skip
    grads = np.abs(np.asarray(explain.gradient(run.model, run.params, run.state, x, labels))).sum(-1)
    figures["|gradient|"] = {"spearman": [float(rank_correlations(grads, np.abs(np.asarray(explain.gradient(
        run.model, p, run.state, x, labels))).sum(-1)).mean()) for p in cascade]}  # fmt: skip
    return figures


def methods_figure(examples: list[tuple[str, Run, np.ndarray, int]], path: Path) -> Path:
    """Each example image (a row) beside its map by each method, for its true class."""
    plt = _pyplot()
    columns = 1 + len(explain.METHODS)
    fig, axes = plt.subplots(len(examples), columns, figsize=(2.0 * columns, 2.2 * len(examples)), squeeze=False)
    for row, (title, run, image, label) in zip(axes, examples, strict=True):
        explainer = explain.Explainer(run.model)
        shown = run.fitted(image[None])[0]
        row[0].imshow(enlarged(np.repeat(shown, 3, -1) if shown.shape[-1] == 1 else shown))
        row[0].set_title(f"{title}: {run.class_names[label]}", fontsize=8)
        for ax, method in zip(row[1:], explain.METHODS, strict=True):
            heat = explainer.heatmap(run.params, run.state, run.network_input(image[None]), method, [label])[0]
            ax.imshow(enlarged(overlay(shown, heat)))
            ax.set_title(NAMES[method], fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("why the network says what it says: orange counts for the class, purple against it", fontsize=9)
    return save(fig, path)


def randomization_figure(run: Run, image: np.ndarray, label: int, path: Path) -> Path:
    """The gradient and Grad-CAM of one image as the weights are randomised from the top layer down."""
    plt = _pyplot()
    explainer = explain.Explainer(run.model)
    weighted = [layer.name for layer in run.model.spec.layers if layer.name in run.params][::-1]
    x, shown = run.network_input(image[None]), run.fitted(image[None])[0]
    fig, axes = plt.subplots(2, len(weighted) + 1, figsize=(1.9 * (len(weighted) + 1), 4.4), squeeze=False)
    for r, method in enumerate(("gradient", "grad-cam")):
        for k in range(len(weighted) + 1):
            params = explain.randomize_top_layers(run.model, run.params, k, key=1)[0]
            axes[r, k].imshow(enlarged(overlay(shown, explainer.heatmap(params, run.state, x, method, [label])[0])))
            axes[r, k].set_title("trained" if k == 0 else f"random to {weighted[k - 1]}", fontsize=8)
            axes[r, k].axis("off")
        axes[r, 0].text(-0.15, 0.5, NAMES[method], transform=axes[r, 0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=9)  # fmt: skip
    fig.suptitle("cascading randomisation (Adebayo et al. 2018): a map worth reading changes", fontsize=9)
    return save(fig, path)


def main() -> None:
    p = parser("Explanation latency, deletion and randomisation figures, and docs pictures.", "runs/explain")
    args = p.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine()}
    examples = []
    rows = []
    for dataset, spec_file in (("mnist", "lenet_mnist.json"), ("cifar10", "article_lenet.json")):
        data = load_dataset(dataset, args.data_dir)
        if args.smoke:
            data = smoke_subset(data)
        run = trained(out, spec_file, dataset, data, 1 if args.smoke else 3)
        images, labels = data.test_images[:IMAGES], data.test_labels[:IMAGES]
        accuracy = float((run.predict(data.test_images).argmax(1) == data.test_labels).mean())
        entry: dict[str, Any] = {"run": str(run.run_dir), "test_accuracy": accuracy}
        if dataset == "mnist":
            entry["latency"] = latencies(run.run_dir, images[: LATENCY_IMAGES + 1])
        entry["figures"] = sanity_figures(run, images, labels)
        results[dataset] = entry
        examples.append((dataset, run, images[0], int(labels[0])))
        for method in explain.METHODS:
            figures = entry["figures"][method]
            d = figures["deletion"]
            rows.append([dataset, NAMES[method], f"{d['before']:.3f}", f"{d['salient']:.3f}", f"{d['random']:.3f}",
                         " / ".join(f"{s:.2f}" for s in figures["spearman"])])  # fmt: skip
        rows.append([dataset, "abs(gradient)", "", "", "",
                     " / ".join(f"{s:.2f}" for s in entry["figures"]["|gradient|"]["spearman"])])  # fmt: skip
    images_dir = ROOT / "docs" / "images"
    if not args.smoke:
        methods_figure(examples, images_dir / "explain_methods.png")
        randomization_figure(examples[0][1], examples[0][2], examples[0][3], images_dir / "explain_randomization.png")
    latency = results["mnist"]["latency"]
    latency_rows = [[NAMES.get(k, k), f"{v['first_ms']:.0f}", f"{v['warm_ms']:.1f}",
                     f"{v['http_ms']:.1f}" if "http_ms" in v else ""] for k, v in latency.items()]  # fmt: skip
    cascade = {d: " / ".join(results[d]["figures"]["randomized_from_the_top"]) for d in ("mnist", "cifar10")}
    table = "\n\n".join([
        f"Machine: {results['machine']}. Runs: LeNet on MNIST ({100 * results['mnist']['test_accuracy']:.2f}%), "
        f"the article's LeNet on CIFAR-10 JPEG copy ({100 * results['cifar10']['test_accuracy']:.2f}%).",
        "Latency on MNIST LeNet (ms; first call compiles):",
        markdown_table(["answer", "first", "warm (median)", "through HTTP (median)"], latency_rows),
        f"Deletion of 10% of the pixels and Spearman correlation with the trained map as layers are randomised "
        f"from the top ({IMAGES} test images; cascade MNIST {cascade['mnist']}, CIFAR-10 {cascade['cifar10']}):",
        markdown_table(["data", "method", "p(true)", "fall: 10% most salient", "fall: 10% at random",
                        "Spearman, top layer random ... all random"], rows),
    ])  # fmt: skip
    results["seconds"] = time.perf_counter() - started
    save_results(out, results, table)
    print(table)
    print(f"\n{results['seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    run_script(main)
