"""The picture commands' work: article demos, a trained run's pictures, network diagrams.

Kept apart from :mod:`jaxcnn.plots` (which only draws) and :mod:`jaxcnn.cli` (which only parses).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxcnn import augment, demos, plots
from jaxcnn.config import Augmentation
from jaxcnn.data import DataError, load_dataset
from jaxcnn.metrics import confusion_matrix
from jaxcnn.model import Model
from jaxcnn.preprocess import Preprocess
from jaxcnn.runs import load_run, run_data_dir
from jaxcnn.spec import NetworkSpec


def article_demos(out: Path, digit: np.ndarray | None = None) -> dict[str, Path]:
    """Draw the article's four demos into ``out``; ``digit`` is a 28x28 grey image for the edge demo."""
    output = demos.convolve(demos.ARTICLE_IMAGE, demos.ARTICLE_FILTER)
    written = {"convolution": plots.plot_article_convolution(demos.ARTICLE_IMAGE, demos.ARTICLE_FILTER, output,
                                                              out / "convolution.png")[0]}  # fmt: skip
    image = (demos.synthetic_digit() if digit is None else digit).astype(np.float32) / 255
    response = demos.convolve(image, demos.VERTICAL_EDGE_FILTER)
    written["edge"] = plots.plot_edge(image, demos.VERTICAL_EDGE_FILTER, response, out / "edge.png")
    six = (np.arange(36, dtype=np.float32).reshape(6, 6) * 7) % 5
    cases = demos.padding_cases(six, np.ones((3, 3), np.float32))  # each output: the sum of its window
    written["padding"] = plots.plot_padding(six, cases, out / "padding.png")
    pooled, kept = demos.max_pool_with_winners(demos.POOLING_GRID)
    written["pooling"] = plots.plot_pooling(demos.POOLING_GRID, pooled, kept, out / "pooling.png")[0]
    return written


MAX_FEATURE_MAP_ROWS = 24
"""Beyond this many layers, ``show`` draws the feature maps of the top-level layers and block outputs only."""


def _layers_to_show(names: list[str]) -> set[str]:
    """Every layer, or for deep networks built from blocks the top-level layers and the last layer of each
    block use (``stage1.block2.relu2``, not its convolutions and batch norms)."""
    if len(names) <= MAX_FEATURE_MAP_ROWS:
        return set(names)
    scope = [name.rpartition(".")[0] for name in names]
    return {name for i, name in enumerate(names) if not scope[i] or i + 1 == len(names) or scope[i + 1] != scope[i]}


def run_pictures(run_dir: Path, out: Path, data_dir: str | None = None, image_index: int = 0,
                 dataset: str | None = None) -> dict[str, Path]:  # fmt: skip
    """Filters, feature maps, confusion matrix and misclassified test images of a trained run (on its own test
    set, or on ``dataset``'s)."""
    run = load_run(run_dir)
    own = run.config["dataset"]["name"]
    data = load_dataset(dataset or own, run_data_dir(run.config, data_dir) if dataset in (None, own) else data_dir)
    images = data.test_images
    if not 0 <= image_index < len(images):
        raise DataError(
            f"--image {image_index}: the {data.name} test set has {len(images):,} images; choose 0 to {len(images) - 1}"
        )
    first = run.model.spec.layers[0]
    written: dict[str, Path] = {}
    if first.name in run.params and first.type == "conv":
        kernel = np.asarray(run.params[first.name]["kernel"])
        written["filters"] = plots.plot_filters(kernel, out / "filters.png", f"{first.name}: {kernel.shape[3]} "
                                                f"filters of {kernel.shape[0]}x{kernel.shape[1]}")  # fmt: skip
    predictions = run.predict(images).argmax(axis=1)
    fitted = run.preprocess.fit(images[image_index : image_index + 1])
    maps = run.model.intermediates(run.params, run.preprocess.to_float(jax.numpy.asarray(fitted)), run.state)
    chosen = _layers_to_show(list(maps))
    shown = {k: np.asarray(v[0]) for k, v in maps.items() if k in chosen}
    written["feature_maps"] = plots.plot_feature_maps(fitted[0], shown, out / "feature_maps.png")
    counts = confusion_matrix(data.test_labels, predictions, len(run.class_names))
    written["confusion"] = plots.plot_confusion(counts, run.class_names, out / "confusion.png")[0]
    wrong = np.flatnonzero(predictions != data.test_labels)[:32]
    written["misclassified"] = plots.plot_misclassified(
        images[wrong], [run.class_names[i] for i in data.test_labels[wrong]],
        [run.class_names[i] for i in predictions[wrong]], out / "misclassified.png",
    )  # fmt: skip
    augmentation = Augmentation.parse(run.config["train"].get("augment", ""))
    if augmentation is not None:
        written["augmented"] = augmented_examples(augmentation, data.train_images[:8], data.train_labels[:8],
                                                  run.preprocess, run.class_names, int(run.config["train"]["seed"]),
                                                  out / "augmented.png")  # fmt: skip
    metrics_path = run_dir / "curves.png"
    if metrics_path.exists():
        written["curves"] = metrics_path
    return written


def augmented_examples(
    augmentation: Augmentation,
    images: np.ndarray,
    labels: np.ndarray,
    preprocess: Preprocess,
    class_names: tuple[str, ...],
    seed: int,
    path: Path,
) -> Path:
    """Training images as the network saw them in its first epoch: each original above its augmented copy."""
    fitted = preprocess.fit(images)
    _, h, w, _ = fitted.shape
    draws = augment.draw(augmentation, len(fitted), h, w, seed, 1)
    changed = np.asarray(augment.apply(augmentation, jax.numpy.asarray(fitted), draws))
    names = [class_names[int(k)] for k in labels]
    heading = f"training images: originals above, augmented ({augmentation}) below"
    return plots.plot_image_grid(np.concatenate([fitted, changed]), names + names, path, heading)


def network_diagram(spec: NetworkSpec, path: Path) -> Path:
    """The spec drawn in the article's style (PNG, or SVG when ``path`` ends in .svg)."""
    rows = [row.to_dict() for row in Model(spec).summary()]
    return plots.draw_network(rows, spec.input_shape, f"{spec.name}: {Model(spec).param_count():,} weights", path)
