"""PNG (or SVG) pictures: learning curves, the article's demos, what a trained network learned, diagrams.

All drawing uses matplotlib's non-interactive Agg backend (no screen needed) and writes through a
temporary file and a rename. Functions that annotate numbers return the texts they drew, so
tests can check that the numbers in a picture are the ones the code computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import JaxcnnError
from jaxcnn.files import written_whole
from jaxcnn.layer_types import LAYER_TYPES


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    # Names come from specs and data sets: draw "$" as a dollar sign, never as math text that may not parse.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


class PictureError(JaxcnnError):
    """A picture that cannot be written where it was asked for."""


def save(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically and close it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SVG keeps its words as text (searchable, selectable), not as drawn outlines.
        with _pyplot().rc_context({"svg.fonttype": "none"}), written_whole(path) as temporary:
            fig.savefig(temporary, dpi=dpi, bbox_inches="tight")
    except OSError as err:
        raise PictureError(
            f"{err.filename or path}: cannot write the picture ({err.strerror}); give --out a writable folder"
        ) from None
    finally:
        _pyplot().close(fig)
    return path


def plot_curves(metrics: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and test, side by side."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("test", "-s")):
        loss_ax.plot(epochs, [m[f"{split}_loss"] for m in metrics], style, label=split)
        acc_ax.plot(epochs, [100 * m[f"{split}_accuracy"] for m in metrics], style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save(fig, path)


def grid(ax: Any, values: np.ndarray, title: str, *, marks: np.ndarray | None = None,
         box: tuple[int, int, int, int] | None = None, cmap: str = "Blues") -> list[str]:  # fmt: skip
    """A matrix as coloured cells with its numbers written in; ``marks`` rings cells, ``box`` outlines
    (row, col, height, width). Returns the numbers as drawn, row by row."""
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    outline = [patheffects.withStroke(linewidth=3, foreground="white")]  # readable on any cell colour
    values = np.asarray(values)
    ax.imshow(values, cmap=cmap, vmin=min(values.min(), 0), vmax=max(values.max(), 1))
    texts = []
    for (r, c), v in np.ndenumerate(values):
        text = f"{v:g}"
        texts.append(text)
        ax.text(c, r, text, ha="center", va="center", fontsize=11, color="black", path_effects=outline,
                fontweight="bold" if marks is not None and marks[r, c] else "normal")  # fmt: skip
        if marks is not None and marks[r, c]:
            ax.add_patch(Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, fill=False, edgecolor="red", linewidth=2))
    if box is not None:
        r, c, h, w = box
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="orange", linewidth=3))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return texts


def plot_article_convolution(
    image: np.ndarray, kernel: np.ndarray, output: np.ndarray, path: Path
) -> tuple[Path, list[str]]:
    """The filter over the image's top-left window, the filter, and the output grid."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    f = kernel.shape[0]
    grid(axes[0], image, f"image {image.shape[0]}x{image.shape[1]} (window at top-left)", box=(0, 0, f, f))
    grid(axes[1], kernel, f"filter {f}x{f}", cmap="Oranges")
    top_left = np.zeros(output.shape, bool)
    top_left[0, 0] = True
    texts = grid(axes[2], output, f"output {output.shape[0]}x{output.shape[1]}: top-left = {output[0, 0]:g}",
                 marks=top_left, cmap="Greens")  # fmt: skip
    fig.suptitle("slide the filter, multiply and add: each output cell is one window position")
    return save(fig, path), texts


def plot_edge(image: np.ndarray, kernel: np.ndarray, response: np.ndarray, path: Path) -> Path:
    """An image, an edge filter and the filter's response (bright where the edge is)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"input {image.shape[0]}x{image.shape[1]}")
    grid(axes[1], kernel, "vertical edge filter", cmap="RdBu")
    shown = axes[2].imshow(response, cmap="RdBu_r", vmin=-np.abs(response).max(), vmax=np.abs(response).max())
    axes[2].set_title(f"response {response.shape[0]}x{response.shape[1]} (valid)")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in (axes[0], axes[2]):
        ax.set_xticks([])
        ax.set_yticks([])
    return save(fig, path)


def plot_padding(image: np.ndarray, cases: Sequence[Any], path: Path) -> Path:
    """The same image and filter with valid and same padding, at stride 1 and 2, with the output sizes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cases) + 1, figsize=(4 * (len(cases) + 1), 4))
    grid(axes[0], image, f"input {image.shape[0]}x{image.shape[1]}")
    for ax, case in zip(axes[1:], cases, strict=True):
        h, w = case.output.shape
        grid(ax, case.output, f"{case.padding}, stride {case.stride}: {h}x{w}", cmap="Greens")
    fig.suptitle("output size = floor((n + p_top + p_bottom - f) / s) + 1, with a 3x3 filter of ones (window sums)")
    return save(fig, path)


def plot_pooling(values: np.ndarray, pooled: np.ndarray, kept: np.ndarray, path: Path) -> tuple[Path, list[str]]:
    """Max pooling f=2, s=2: the input with the kept maxima ringed, and the pooled output."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    grid(axes[0], values, f"input {values.shape[0]}x{values.shape[1]} (kept values ringed)", marks=kept)
    texts = grid(axes[1], pooled, f"max pool f=2 s=2: {pooled.shape[0]}x{pooled.shape[1]}", cmap="Greens")
    return save(fig, path), texts


def plot_filters(kernel: np.ndarray, path: Path, title: str) -> Path:
    """First-layer filters (HWIO) as a grid: one column per filter, one row per input channel."""
    plt = _pyplot()
    channels, filters = kernel.shape[2], kernel.shape[3]
    fig, axes = plt.subplots(channels, filters, figsize=(1.2 * filters + 1, 1.3 * channels + 0.8), squeeze=False)
    limit = float(np.abs(kernel).max()) or 1.0
    for c in range(channels):
        for o in range(filters):
            ax = axes[c, o]
            ax.imshow(kernel[:, :, c, o], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_title(f"filter {o}", fontsize=9)
            if o == 0:
                ax.set_ylabel("RGB"[c] if channels == 3 else f"channel {c}", fontsize=9)
    fig.suptitle(f"{title} (red positive, blue negative)")
    return save(fig, path)


def plot_feature_maps(image: np.ndarray, maps: dict[str, np.ndarray], path: Path, max_channels: int = 16) -> Path:
    """The input and each conv and pool layer's output channels for one image (H x W x C maps)."""
    plt = _pyplot()
    spatial = {name: m for name, m in maps.items() if m.ndim == 3}
    columns = min(max_channels, max(m.shape[-1] for m in spatial.values()))
    fig, axes = plt.subplots(len(spatial) + 1, columns, figsize=(1.3 * columns, 1.4 * (len(spatial) + 1)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
    axes[0, 0].set_title("input", fontsize=9)
    for row, (name, m) in enumerate(spatial.items(), start=1):
        for c in range(min(columns, m.shape[-1])):
            axes[row, c].imshow(m[:, :, c], cmap="viridis")
            axes[row, c].set_title(f"{name}[{c}]" if c == 0 else f"[{c}]", fontsize=8)
    fig.suptitle("feature maps: what each filter responds to in this image")
    return save(fig, path)


def plot_confusion(counts: np.ndarray, class_names: Sequence[str], path: Path) -> tuple[Path, list[str]]:
    """The confusion matrix: rows are true classes, columns predicted ones."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.6 * k + 3, 0.6 * k + 2))
    texts = grid(ax, counts, "confusion matrix (rows: true, columns: predicted)", cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    return save(fig, path), texts


def plot_image_grid(
    images: np.ndarray, titles: Sequence[str], path: Path, heading: str, *, columns: int = 8, color: str = "black"
) -> Path:
    """uint8 images in a grid, ``columns`` to a row, each with its title."""
    plt = _pyplot()
    n = max(len(images), 1)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=8, color=color)
    fig.suptitle(heading)
    return save(fig, path)


def plot_unit(picture: np.ndarray, top: np.ndarray | None, titles: Sequence[str], heading: str, path: Path) -> Path:
    """What a unit looks for: its picture (uint8 H x W x C) beside the images that excite it most (uint8, in a
    grid of three columns, each with its title), when there are any."""
    plt = _pyplot()
    shown = [] if top is None else list(top)
    rows = max(1, -(-len(shown) // 3))
    fig = plt.figure(figsize=(3.2 + (3.4 if shown else 0), 3.4 if rows <= 3 else 1.1 * rows + 0.4))
    grid = fig.add_gridspec(rows, 4 if shown else 1, width_ratios=[3, 1, 1, 1] if shown else [1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(picture.squeeze(), cmap="gray" if picture.shape[-1] == 1 else None, vmin=0, vmax=255)
    ax.set_title("its picture", fontsize=9)
    ax.axis("off")
    for i, (image, title) in enumerate(zip(shown, titles, strict=True)):
        ax = fig.add_subplot(grid[i // 3, 1 + i % 3])
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(heading + (" (right: the test images that excite it most)" if shown else ""), fontsize=9)
    return save(fig, path)


def plot_misclassified(images: np.ndarray, truths: Sequence[str], predictions: Sequence[str], path: Path) -> Path:
    """A grid of test images the network got wrong, each titled 'true -> predicted'."""
    titles = [f"{truth} -> {predicted}" for truth, predicted in zip(truths, predictions, strict=True)]
    return plot_image_grid(images, titles, path, "misclassified test images (true -> predicted)", color="red")


DRAW_PER_ROW = 12
"""Stages per row of ``draw_network``: deeper networks wrap onto further rows."""


def draw_network(layers: Sequence[dict[str, Any]], input_shape: Sequence[int], title: str, path: Path) -> Path:
    """The network as the article draws it: a block per layer sized by its shape, labelled with it.

    ``layers`` are summary rows (name, type, output_shape, settings, and inputs where a layer does
    not read the one before: those are written under it). Deep networks wrap every DRAW_PER_ROW layers.
    """
    plt = _pyplot()
    from matplotlib.patches import Polygon, Rectangle

    stages = [{"name": "input", "type": "input", "output_shape": list(input_shape), "settings": ""}, *layers]
    rows = -(-len(stages) // DRAW_PER_ROW)
    per_row = min(len(stages), DRAW_PER_ROW)
    fig, ax = plt.subplots(figsize=(2.1 * per_row, 4.8 * rows))
    largest = max(max(s["output_shape"][:2]) if len(s["output_shape"]) == 3 else 1 for s in stages)
    colours = {"input": "#dddddd", "conv": "#9ecae1", "max_pool": "#fdd0a2", "avg_pool": "#fdd0a2",
               "flatten": "#c7e9c0", "dense": "#bcbddc", "batch_norm": "#fee391", "add": "#fc9272",
               "concat": "#fc9272", "global_avg_pool": "#fdd0a2", "global_max_pool": "#fdd0a2"}  # fmt: skip
    for i, stage in enumerate(stages):
        shape = stage["output_shape"]
        x0 = (i % DRAW_PER_ROW) * 2.0
        y0 = -(i // DRAW_PER_ROW) * 6.0
        colour = colours.get(stage["type"], "#eeeeee")
        if len(shape) == 3:
            side = 0.4 + 2.4 * shape[0] / largest
            depth = 0.15 + 0.6 * min(shape[2], 64) / 64
            ax.add_patch(Rectangle((x0, y0), side * 0.5, side, facecolor=colour, edgecolor="black"))
            top = [
                (x0, y0 + side),
                (x0 + depth, y0 + side + depth),
                (x0 + side * 0.5 + depth, y0 + side + depth),
                (x0 + side * 0.5, y0 + side),
            ]
            right = [(x0 + side * 0.5, y0), (x0 + side * 0.5 + depth, y0 + depth),
                     (x0 + side * 0.5 + depth, y0 + side + depth), (x0 + side * 0.5, y0 + side)]  # fmt: skip
            ax.add_patch(Polygon(top, facecolor=colour, edgecolor="black"))
            ax.add_patch(Polygon(right, facecolor=colour, edgecolor="black"))
            label = "x".join(str(n) for n in shape)
        else:
            height = 0.4 + 2.4 * min(shape[0], 2000) / 2000
            ax.add_patch(Rectangle((x0 + 0.2, y0), 0.25, height, facecolor=colour, edgecolor="black"))
            label = str(shape[0])
        ax.text(x0 + 0.5, y0 - 0.35, label, ha="center", va="top", fontsize=10, fontweight="bold")
        ax.text(x0 + 0.5, y0 - 0.75, stage["name"].replace(".", ".\n"), ha="center", va="top", fontsize=8)
        settings = stage.get("settings", "").replace(" p=", "\np=").replace(" relu", "\nrelu").replace(" + ", " +\n")
        if stage.get("inputs") and not LAYER_TYPES[stage["type"]].MERGES:  # a merge's settings name its inputs
            settings = "from " + ", ".join(stage["inputs"]) + "\n" + settings
        ax.text(x0 + 0.5, y0 - 1.6, settings, ha="center", va="top", fontsize=6.5, color="#444444")
    ax.set_xlim(-0.5, 2.0 * per_row)
    ax.set_ylim(-2.6 - 6.0 * (rows - 1), 3.6)
    ax.axis("off")
    ax.set_title(title)
    return save(fig, path)
